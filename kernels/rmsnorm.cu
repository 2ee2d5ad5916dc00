// RMSNorm fused with the residual add that precedes it in every transformer block:
//
//     x[r] += residual[r]                      (skipped when residual is null)
//     out[r] = x[r] * rsqrt(mean(x[r]^2) + eps) * (w + w_offset)
//
// w_offset is 0 for Llama-style norms and 1 for Gemma, whose checkpoints store w - 1. One block
// per row (a row may also be one head, for per-head Q/K norms: then rows = tokens * heads and
// cols = head_dim); threads stride over the columns, so any cols works with any block size.
// The row is read twice (sum of squares, then scale) rather than cached in registers: at the
// model widths we serve (576..4096 columns) the second read hits L2/L1, and a register cache
// sized for the widest row would spill or cap occupancy on narrow ones.
//
// Launch: grid = rows, block = a multiple of 32 up to 1024 (256 is a good default), no dynamic
// shared memory. out may equal x (in place): each element is read and written by one thread.
#include "common.cuh"

extern "C" __global__ void rmsnorm_f32(float* x, const float* __restrict__ residual,
                                       const float* __restrict__ w, float* out,
                                       unsigned cols, float eps, float w_offset) {
    const size_t base = (size_t)blockIdx.x * cols;
    float* xr = x + base;
    float* outr = out + base;

    float sum_sq = 0.0f;
    if (residual != nullptr) {
        const float* rr = residual + base;
        for (unsigned c = threadIdx.x; c < cols; c += blockDim.x) {
            const float v = xr[c] + rr[c];
            xr[c] = v;
            sum_sq += v * v;
        }
    } else {
        for (unsigned c = threadIdx.x; c < cols; c += blockDim.x) {
            const float v = xr[c];
            sum_sq += v * v;
        }
    }
    const float scale = rsqrtf(block_sum(sum_sq) / (float)cols + eps);
    for (unsigned c = threadIdx.x; c < cols; c += blockDim.x) {
        outr[c] = xr[c] * scale * (w[c] + w_offset);
    }
}
