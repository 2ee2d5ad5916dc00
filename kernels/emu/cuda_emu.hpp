// CPU emulation of the CUDA subset our kernels use, so that a kernel's .cu source compiles as
// C++17 and runs on the CPU in CI, where there is no GPU. Include this header, then the .cu file.
//
// Model: the blocks of a grid run one after another; the threads of a block run as real
// std::threads, so __syncthreads is a real barrier and a kernel that forgets one races (build the
// test with -fsanitize=thread to have those races reported). Warps are groups of 32 consecutive
// linear thread ids, as on the hardware; shuffles exchange values through a per-warp slot array
// between two warp barriers, so every lane sees the others' values from the same step.
//
// Supported: threadIdx/blockIdx/blockDim/gridDim; __global__/__device__/__forceinline__;
// static __shared__ arrays (one block runs at a time, so a function-local static is exactly
// "one copy per block"); __syncthreads; __syncwarp; __shfl_sync, __shfl_xor_sync,
// __shfl_down_sync, __shfl_up_sync on 32-bit or 64-bit values with the full mask; a few float
// intrinsics. Not supported (the launch aborts or the code does not compile): partial warps
// (block sizes that are not a multiple of 32), masks other than all lanes, a shuffle after a lane
// of the warp has returned, `extern __shared__` dynamic shared memory, atomics, cooperative
// groups, tensor-core mma, cp.async. Rule violations abort with a message naming the rule,
// rather than reproduce undefined behaviour; a barrier nobody completes within
// EMU_DEADLOCK_SECONDS aborts as a deadlock.
#pragma once

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)
// __restrict__ is already a GCC/Clang keyword.

#ifndef EMU_DEADLOCK_SECONDS
#define EMU_DEADLOCK_SECONDS 30
#endif

struct uint3 {
    unsigned x, y, z;
};

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

namespace cuda_emu {

constexpr unsigned kWarp = 32;
constexpr unsigned kMaxThreads = 1024;

[[noreturn]] inline void fail(const char* what) {
    std::fprintf(stderr, "cuda_emu: %s\n", what);
    std::fflush(stderr);
    std::abort();
}

// A reusable barrier for a fixed set of threads, from which a thread that returns drops out
// (like C++20 std::barrier::arrive_and_drop), matching the hardware, where exited threads no
// longer count towards __syncthreads.
class Barrier {
public:
    explicit Barrier(unsigned n) : expected_(n) {}

    void wait(const char* what) {
        std::unique_lock<std::mutex> lock(m_);
        const uint64_t gen = gen_;
        if (++arrived_ == expected_) {
            release();
            return;
        }
        const auto limit = std::chrono::seconds(EMU_DEADLOCK_SECONDS);
        if (!cv_.wait_for(lock, limit, [&] { return gen_ != gen; })) {
            fail(what);
        }
    }

    void drop() {
        std::lock_guard<std::mutex> lock(m_);
        --expected_;
        if (arrived_ > 0 && arrived_ == expected_) {
            release();
        }
    }

private:
    void release() {
        arrived_ = 0;
        ++gen_;
        cv_.notify_all();
    }

    std::mutex m_;
    std::condition_variable cv_;
    unsigned expected_;
    unsigned arrived_ = 0;
    uint64_t gen_ = 0;
};

// One warp: its barrier, its exchange slots, and how many of its lanes have not returned.
struct Warp {
    Barrier bar{kWarp};
    uint64_t slots[kWarp] = {};
    std::mutex m;
    unsigned live = kWarp;
};

// State of the block being run.
struct Block {
    explicit Block(unsigned n) : bar(n), warps(n / kWarp) {
        for (auto& w : warps) {
            w = std::make_unique<Warp>();
        }
    }
    Barrier bar;
    std::vector<std::unique_ptr<Warp>> warps;
};

inline thread_local Block* tl_block = nullptr;
inline thread_local unsigned tl_tid = 0;

// Shuffle core: every lane publishes `v`, then reads the slot of `src_of(lane)` (its own when
// the source falls outside its `width`-lane segment, as the hardware does).
template <typename T, typename F>
T shuffle(unsigned mask, T v, int width, F src_of) {
    static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8, "shuffle of a type wider than 64 bits");
    if (mask != 0xffffffffu) {
        fail("shuffle with a mask other than 0xffffffff is not emulated");
    }
    if (width <= 0 || width > static_cast<int>(kWarp) || (width & (width - 1)) != 0) {
        fail("shuffle width must be a power of two up to 32");
    }
    Warp& w = *tl_block->warps[tl_tid / kWarp];
    {
        std::lock_guard<std::mutex> lock(w.m);
        if (w.live != kWarp) {
            fail("shuffle after a lane of the warp returned (undefined on the GPU)");
        }
    }
    const int lane = static_cast<int>(tl_tid % kWarp);
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    w.slots[lane] = bits;
    w.bar.wait("deadlock in a warp shuffle: not every lane of the warp reached it");
    {
        // A lane that returned instead of shuffling released the barrier by dropping out.
        std::lock_guard<std::mutex> lock(w.m);
        if (w.live != kWarp) {
            fail("shuffle after a lane of the warp returned (undefined on the GPU)");
        }
    }
    int src = src_of(lane);
    if (src < 0 || src / width != lane / width) {
        src = lane;
    }
    bits = w.slots[src];
    w.bar.wait("deadlock in a warp shuffle: not every lane of the warp reached it");
    T out;
    std::memcpy(&out, &bits, sizeof(T));
    return out;
}

// Runs `kernel(args...)` over `grid` x `block` threads: blocks in order, each block's threads
// concurrently.
template <typename... KArgs, typename... Args>
void launch(dim3 grid, dim3 block, void (*kernel)(KArgs...), Args... args) {
    const unsigned n = block.x * block.y * block.z;
    if (n == 0 || n > kMaxThreads) {
        fail("block size must be 1..1024 threads");
    }
    if (n % kWarp != 0) {
        fail("block size must be a multiple of 32 (partial warps are not emulated)");
    }
    for (unsigned bz = 0; bz < grid.z; ++bz) {
        for (unsigned by = 0; by < grid.y; ++by) {
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                Block ctx(n);
                std::vector<std::thread> threads;
                threads.reserve(n);
                for (unsigned t = 0; t < n; ++t) {
                    threads.emplace_back([&, t] {
                        tl_block = &ctx;
                        tl_tid = t;
                        threadIdx = uint3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
                        blockIdx = uint3{bx, by, bz};
                        blockDim = block;
                        gridDim = grid;
                        kernel(args...);
                        Warp& w = *ctx.warps[t / kWarp];
                        {
                            std::lock_guard<std::mutex> lock(w.m);
                            --w.live;
                        }
                        w.bar.drop();
                        ctx.bar.drop();
                    });
                }
                for (auto& th : threads) {
                    th.join();
                }
            }
        }
    }
}

}  // namespace cuda_emu

inline void __syncthreads() {
    cuda_emu::tl_block->bar.wait("deadlock in __syncthreads: a thread of the block never reached it");
}

inline void __syncwarp(unsigned mask = 0xffffffffu) {
    cuda_emu::shuffle(mask, 0u, 32, [](int lane) { return lane; });
}

template <typename T>
T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
    return cuda_emu::shuffle(mask, v, width, [&](int lane) { return (lane / width) * width + src_lane % width; });
}

template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    return cuda_emu::shuffle(mask, v, width, [&](int lane) { return lane ^ lane_mask; });
}

template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return cuda_emu::shuffle(mask, v, width, [&](int lane) { return lane + static_cast<int>(delta); });
}

template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return cuda_emu::shuffle(mask, v, width, [&](int lane) { return lane - static_cast<int>(delta); });
}

// Float intrinsics: exact versions of the GPU's approximate ones (the GPU's rsqrtf is within
// 2 ulp, __expf within 2 + 1.5|x| ulp, so kernel tests need tolerances that cover those anyway).
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
