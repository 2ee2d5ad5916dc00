// Runs kernels/rmsnorm.cu on the CPU through cuda_emu.hpp and compares it with a scalar
// reference in double precision on random rows of awkward sizes. Also checks the emulator itself:
// shuffles permute lanes as the hardware does, and a launch that breaks a rule aborts.
// Build and run: kernels/emu/run.sh (exit status 0 = all cases pass).
#include "cuda_emu.hpp"

#include "../rmsnorm.cu"

#include <cfloat>
#include <random>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
    if (!ok) {
        std::fprintf(stderr, "FAIL: %s\n", what.c_str());
        ++failures;
    }
}

struct Case {
    unsigned rows, cols, block;
    bool residual;
    float w_offset;  // 0: Llama-style weight, 1: Gemma's stored (w - 1)
    bool in_place;   // out == x
    float magnitude; // spread of the inputs, to cover tiny and large rows
};

// The kernel's contract, computed plainly: x' = x + r in f32 (one rounding, as the kernel does),
// then the norm in double.
void reference(const Case& c, std::vector<float>& x, const std::vector<float>& r, const std::vector<float>& w,
               float eps, std::vector<double>& out) {
    for (unsigned row = 0; row < c.rows; ++row) {
        double ss = 0.0;
        for (unsigned i = 0; i < c.cols; ++i) {
            float& v = x[row * c.cols + i];
            if (c.residual) {
                v = v + r[row * c.cols + i];
            }
            ss += static_cast<double>(v) * v;
        }
        const double scale = 1.0 / std::sqrt(ss / c.cols + eps);
        for (unsigned i = 0; i < c.cols; ++i) {
            out[row * c.cols + i] = x[row * c.cols + i] * scale * (static_cast<double>(w[i]) + c.w_offset);
        }
    }
}

void run_case(const Case& c, std::mt19937& rng) {
    const float eps = 1e-6f;
    const size_t n = static_cast<size_t>(c.rows) * c.cols;
    std::uniform_real_distribution<float> dist(-c.magnitude, c.magnitude);
    std::uniform_real_distribution<float> wdist(-1.5f, 1.5f);
    std::vector<float> x(n), r(n), w(c.cols), out(n, NAN);
    for (auto& v : x) v = dist(rng);
    for (auto& v : r) v = dist(rng);
    for (auto& v : w) v = wdist(rng);

    std::vector<float> want_x = x;
    std::vector<double> want(n);
    reference(c, want_x, r, w, eps, want);

    float* dst = c.in_place ? x.data() : out.data();
    cuda_emu::launch(dim3(c.rows), dim3(c.block), rmsnorm_f32, x.data(), c.residual ? r.data() : nullptr,
                     static_cast<const float*>(w.data()), dst, c.cols, eps, c.w_offset);
    const std::vector<float>& got = c.in_place ? x : out;

    // Error budget, in units of FLT_EPSILON relative to the element: each thread sums
    // ceil(cols/block) squares sequentially and the two 32-way shuffle trees add 5 + 5 levels
    // (each step at most one rounding of the running sum), then the division by cols, + eps,
    // the (exact here) rsqrt and the three products round once each: ~ceil(cols/block) + 10 + 5,
    // halved by the square root for the sum's share. We allow the unhalved figure.
    const double tol = (static_cast<double>((c.cols + c.block - 1) / c.block) + 15.0) * FLT_EPSILON;
    double worst = 0.0;
    for (size_t i = 0; i < n; ++i) {
        const double err = std::fabs(got[i] - want[i]) / std::max(std::fabs(want[i]), 1e-30);
        if (!(err <= worst)) worst = err;  // NaN propagates into `worst`
    }
    char name[160];
    std::snprintf(name, sizeof name, "rows=%u cols=%u block=%u residual=%d w_offset=%g in_place=%d magnitude=%g",
                  c.rows, c.cols, c.block, c.residual, c.w_offset, c.in_place, c.magnitude);
    check(worst <= tol, std::string(name) + ": relative error " + std::to_string(worst) + " > " + std::to_string(tol));
    if (c.residual && !c.in_place) {
        // x must hold exactly x + residual afterwards: the next block's residual stream.
        check(std::memcmp(x.data(), want_x.data(), n * sizeof(float)) == 0, std::string(name) + ": x != x + residual");
    }
    std::printf("ok   %-90s max rel err %.2e (budget %.2e)\n", name, worst, tol);
}

// Emulator self-check: out[t] = t ^ 5 through __shfl_xor_sync, and a down-shift that keeps its
// own value past the end of a 16-lane segment.
void shuffle_probe(unsigned* xor_out, unsigned* down_out) {
    const unsigned t = threadIdx.x;
    xor_out[t] = __shfl_xor_sync(0xffffffffu, t, 5);
    down_out[t] = __shfl_down_sync(0xffffffffu, t, 3, 16);
}

void check_shuffles() {
    std::vector<unsigned> x(64), d(64);
    cuda_emu::launch(dim3(1), dim3(64), shuffle_probe, x.data(), d.data());
    for (unsigned t = 0; t < 64; ++t) {
        check(x[t] == (t ^ 5u), "xor shuffle lane " + std::to_string(t));
        const unsigned want = (t % 16) + 3 < 16 ? t + 3 : t;
        check(d[t] == want, "down shuffle lane " + std::to_string(t));
    }
    std::printf("ok   emulator shuffles (xor, down with width 16)\n");
}

// Lane 0 returns early while the others shuffle: undefined on the GPU, so the emulator must abort.
void early_exit_then_shuffle(float* out) {
    if (threadIdx.x == 0) return;
    out[threadIdx.x] = warp_sum(1.0f);
}

// Forks, runs `body` in the child and expects it to abort.
template <typename F>
void expect_abort(const char* what, F body) {
    std::fflush(stdout);
    const pid_t pid = fork();
    if (pid == 0) {
        std::freopen("/dev/null", "w", stderr);
        body();
        std::_Exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    check(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, std::string("emulator did not abort on ") + what);
    std::printf("ok   emulator aborts on %s\n", what);
}

}  // namespace

int main() {
    std::mt19937 rng(20261125);
    check_shuffles();
    const Case cases[] = {
        {3, 1, 32, false, 0.0f, false, 1.0f},     // fewer columns than lanes
        {2, 31, 32, true, 0.0f, false, 2.0f},     // one short of a warp
        {4, 33, 64, true, 1.0f, false, 1.0f},     // one past a warp, Gemma offset
        {3, 576, 256, true, 0.0f, false, 3.0f},   // SmolLM2-135M hidden size
        {2, 640, 128, false, 1.0f, true, 1.0f},   // Gemma 3 270M hidden size, in place
        {5, 64, 32, false, 0.0f, true, 4.0f},     // a head (per-head Q/K norm), in place
        {2, 1000, 96, true, 0.0f, false, 1e-3f},  // block of 3 warps, tiny values
        {1, 2049, 1024, true, 1.0f, false, 1e3f}, // full block, large values
        {1, 4099, 256, true, 0.0f, false, 1.0f},  // many columns per thread
    };
    for (const Case& c : cases) run_case(c, rng);

    std::vector<float> buf(64);
    expect_abort("a block of 48 threads (partial warp)", [&] {
        cuda_emu::launch(dim3(1), dim3(48), rmsnorm_f32, buf.data(), static_cast<const float*>(nullptr),
                         static_cast<const float*>(buf.data()), buf.data(), 48u, 1e-6f, 0.0f);
    });
    expect_abort("a shuffle after a lane returned", [&] {
        cuda_emu::launch(dim3(1), dim3(32), early_exit_then_shuffle, buf.data());
    });

    if (failures != 0) {
        std::fprintf(stderr, "%d failure(s)\n", failures);
        return 1;
    }
    std::printf("all rmsnorm emulation cases pass\n");
    return 0;
}
