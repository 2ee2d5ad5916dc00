// Helpers shared by the kernels in this directory. Kept inside the subset that
// kernels/emu/cuda_emu.hpp emulates on the CPU (threadIdx/blockIdx/blockDim, __syncthreads,
// __shfl_xor_sync over full warps, static __shared__ arrays), so every kernel built on them can be
// tested without a GPU.
#pragma once

#define EDGELLM_WARP 32
#define EDGELLM_FULL_MASK 0xffffffffu

// Sum over the 32 lanes of a warp, returned to every lane (butterfly: log2(32) = 5 shuffles).
// All 32 lanes must be active: launchers use block sizes that are multiples of 32.
static __device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int offset = EDGELLM_WARP / 2; offset > 0; offset >>= 1) {
        v += __shfl_xor_sync(EDGELLM_FULL_MASK, v, offset);
    }
    return v;
}

// Sum over the whole block, returned to every thread: warp sums into shared memory (at most
// 1024 / 32 = 32 of them), then every warp reduces those partials itself, which saves a second
// barrier for broadcasting. blockDim.x must be a multiple of 32, at most 1024, and every thread
// of the block must call it. The trailing barrier lets a caller reduce again right away.
static __device__ __forceinline__ float block_sum(float v) {
    __shared__ float partial[EDGELLM_WARP];
    const unsigned lane = threadIdx.x % EDGELLM_WARP;
    const unsigned warp = threadIdx.x / EDGELLM_WARP;
    const unsigned n_warps = blockDim.x / EDGELLM_WARP;
    v = warp_sum(v);
    if (lane == 0) {
        partial[warp] = v;
    }
    __syncthreads();
    v = lane < n_warps ? partial[lane] : 0.0f;
    v = warp_sum(v);
    __syncthreads();
    return v;
}
