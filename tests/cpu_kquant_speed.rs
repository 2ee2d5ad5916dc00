//! Single-thread speed of the k-quant integer kernels (Q4_K, Q5_K, Q6_K) for every kernel set this
//! machine has: matrix-vector products in GB/s of weights streamed (decode is bound by memory, so
//! this is the number that matters), matrix products over 128 tokens in GMAC/s (prefill is bound
//! by compute). Ignored by default; run with
//! `cargo test --release --test cpu_kquant_speed -- --ignored --nocapture`.
//! Correctness is `cpu_kernels_match_reference`'s job; this file only checks that every set
//! agrees with the scalar result on the timed shapes, so that it never times a broken kernel.

mod common;

use common::{random_acts, random_int8_weights, Rng};
use edgellm::ffi::simd::{self, KernelSet};
use edgellm::quant::int8::WeightFormat;
use std::time::{Duration, Instant};

/// Each measurement repeats its call for at least this long.
const MIN_TIME: Duration = Duration::from_millis(300);

/// Nanoseconds this thread has run on a CPU (Linux `schedstat`), so that time other processes
/// take from this machine's shared cores is not counted; wall time where that is unavailable.
fn cpu_ns(wall: Instant) -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
        })
        .unwrap_or_else(|| wall.elapsed().as_nanos() as f64)
}

/// Seconds per call of `f` as (wall time, CPU time): each the best mean over batches of about
/// 20 ms, after one warm-up call.
fn time(mut f: impl FnMut()) -> (f64, f64) {
    f();
    let origin = Instant::now();
    let (mut wall, mut cpu) = (f64::INFINITY, f64::INFINITY);
    while origin.elapsed() < MIN_TIME {
        let batch = Instant::now();
        let c0 = cpu_ns(origin);
        let mut n = 0u32;
        while batch.elapsed() < Duration::from_millis(20) {
            f();
            n += 1;
        }
        wall = wall.min(batch.elapsed().as_secs_f64() / n as f64);
        cpu = cpu.min((cpu_ns(origin) - c0) * 1e-9 / n as f64);
    }
    (wall, cpu)
}

fn agree(k: KernelSet, what: &str, got: &[f32], want: &[f32]) {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())) + 1e-6;
    for (i, (g, e)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - e).abs() <= 1e-4 * scale,
            "{k:?} {what} [{i}]: {g} vs {e}"
        );
    }
}

#[test]
#[ignore = "timing; run by hand with --release --ignored --nocapture"]
fn kquant_matvec_gb_per_s() {
    let mut rng = Rng(0x5EED);
    let shapes = [
        (WeightFormat::Q4K, 640, 1024, "Gemma 3 attn_output"),
        (WeightFormat::Q6K, 640, 2048, "Gemma 3 ffn_down"),
        (WeightFormat::Q5K, 640, 2048, ""),
        (WeightFormat::Q4K, 8192, 2048, "in L3"),
        (WeightFormat::Q6K, 8192, 2048, "in L3"),
        (WeightFormat::Q4K, 32768, 2048, "out of cache"),
        (WeightFormat::Q5K, 32768, 2048, "out of cache"),
        (WeightFormat::Q6K, 32768, 2048, "out of cache"),
    ];
    for (f, rows, cols, note) in shapes {
        let w = random_int8_weights(f, rows, cols, &mut rng);
        let x = random_acts(1, cols, &mut rng);
        let mut want = vec![0f32; rows];
        simd::dot_rows(KernelSet::Scalar, f, &w, &x.row(0), &mut want);
        for k in KernelSet::all_available() {
            let mut out = vec![0f32; rows];
            let (wall, cpu) = time(|| simd::dot_rows(k, f, &w, &x.row(0), &mut out));
            agree(k, "matvec", &out, &want);
            let mb = w.len() as f64 / 1e6;
            println!(
                "matvec {f:?} {rows}x{cols} ({mb:.1} MB{}{note}) {:>7}: {:7.2} GB/s wall, {:7.2} GB/s CPU time",
                if note.is_empty() { "" } else { ", " },
                k.name(),
                w.len() as f64 / wall / 1e9,
                w.len() as f64 / cpu / 1e9
            );
        }
    }
}

#[test]
#[ignore = "timing; run by hand with --release --ignored --nocapture"]
fn kquant_gemm_gmac_per_s() {
    let mut rng = Rng(0xFEED);
    let tokens = 128;
    let shapes = [
        (WeightFormat::Q4K, 640, 1024),
        (WeightFormat::Q6K, 640, 2048),
        (WeightFormat::Q5K, 640, 2048),
        (WeightFormat::Q4K, 2048, 1024),
    ];
    for (f, rows, cols) in shapes {
        let w = random_int8_weights(f, rows, cols, &mut rng);
        let x = random_acts(tokens, cols, &mut rng);
        let mut want = vec![0f32; tokens * rows];
        simd::gemm(KernelSet::Scalar, f, &w, rows, &x, &mut want, rows);
        for k in KernelSet::all_available() {
            let mut out = vec![0f32; tokens * rows];
            let (wall, cpu) = time(|| simd::gemm(k, f, &w, rows, &x, &mut out, rows));
            agree(k, "gemm", &out, &want);
            let macs = (rows * cols * tokens) as f64;
            println!(
                "gemm {f:?} {rows}x{cols} x {tokens} tokens {:>7}: {:7.2} GMAC/s wall, {:7.2} GMAC/s CPU time",
                k.name(),
                macs / wall / 1e9,
                macs / cpu / 1e9
            );
        }
    }
}
