//! Speed of the int8 CPU kernels per kernel set, single thread, on the shapes of the models we
//! ship (SmolLM2-135M Q4_1 layers and Q8_0 LM head, Gemma 3 270M's Q5_0/Q8_0 layers and LM head).
//! Ignored by default: timing says nothing about correctness (that is
//! `cpu_kernels_match_reference`). Run with
//! `cargo test --release --test cpu_kernels_speed -- --ignored --nocapture`.

mod common;

use common::{random_acts, random_int8_weights, Rng};
use edgellm::ffi::simd::{self, KernelSet};
use edgellm::quant::int8::{Q8Acts, WeightFormat};
use std::time::Instant;

/// Best time in seconds of `reps` runs of `f` after one warm-up run.
fn best_of(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

#[test]
#[ignore]
fn matvec_bandwidth() {
    let mut rng = Rng(7);
    let cases = [
        (WeightFormat::Q4_1, 1536, 576, "SmolLM2 ffn_up (in L2)"),
        (WeightFormat::Q4_1, 576, 1536, "SmolLM2 ffn_down (in L2)"),
        (WeightFormat::Q5_0, 2048, 640, "Gemma ffn (in L2)"),
        (WeightFormat::Q4_0, 1536, 576, "Q4_0 (in L2)"),
        (WeightFormat::Q5_1, 1536, 576, "Q5_1 (in L2)"),
        (WeightFormat::Q8_0, 1024, 576, "Q8_0 (in L2)"),
        (WeightFormat::Q8_0, 49152, 576, "SmolLM2 LM head (L3-sized)"),
        (WeightFormat::Q8_0, 262144, 640, "Gemma LM head (DRAM)"),
    ];
    for (f, rows, cols, what) in cases {
        let w = random_int8_weights(f, rows, cols, &mut rng);
        let x = random_acts(1, cols, &mut rng);
        let mut out = vec![0f32; rows];
        for k in KernelSet::all_available() {
            let reps = if k == KernelSet::Scalar { 2 } else { 40 };
            let s = best_of(reps, || simd::dot_rows(k, f, &w, &x.row(0), &mut out));
            println!(
                "matvec {f:?} {rows}x{cols} [{what}] {:>6}: {:7.2} GB/s ({:.3} ms)",
                k.name(),
                w.len() as f64 / s / 1e9,
                s * 1e3
            );
        }
    }
}

#[test]
#[ignore]
fn gemm_throughput() {
    let mut rng = Rng(11);
    let cases = [
        (WeightFormat::Q4_1, 1536, 576, 128),
        (WeightFormat::Q8_0, 1536, 576, 128),
        (WeightFormat::Q5_0, 2048, 640, 128),
        (WeightFormat::Q4_1, 256, 576, 256),
    ];
    for (f, rows, cols, tokens) in cases {
        let w = random_int8_weights(f, rows, cols, &mut rng);
        let x = random_acts(tokens, cols, &mut rng);
        let mut out = vec![0f32; rows * tokens];
        for k in KernelSet::all_available() {
            let reps = if k == KernelSet::Scalar { 1 } else { 20 };
            let s = best_of(reps, || simd::gemm(k, f, &w, rows, &x, &mut out, rows));
            let macs = (rows * cols * tokens) as f64;
            println!(
                "gemm {f:?} {rows}x{cols} x {tokens} tokens {:>6}: {:7.2} GMAC/s ({:.3} ms)",
                k.name(),
                macs / s / 1e9,
                s * 1e3
            );
        }
    }
}

/// Row layout (best set) against the packed layout of `edgellm::quant::packed`, matrix-vector
/// and 64-token products on the model shapes.
#[test]
#[ignore]
fn packed_layout_speed() {
    let mut rng = Rng(5);
    for k in KernelSet::all_available().into_iter().filter(|k| *k != KernelSet::Scalar) {
        packed_layout_speed_with(k, &mut rng);
    }
}

fn packed_layout_speed_with(k: KernelSet, rng: &mut Rng) {
    let cases = [
        (WeightFormat::Q4_1, 1536, 576),
        (WeightFormat::Q4_1, 576, 1536),
        (WeightFormat::Q5_0, 2048, 640),
        (WeightFormat::Q8_0, 1024, 576),
        (WeightFormat::Q4K, 640, 1024),
        (WeightFormat::Q6K, 640, 2048),
        (WeightFormat::Q8_0, 49152, 576),
        (WeightFormat::Q8_0, 262144, 640),
    ];
    for (f, rows, cols) in cases {
        let w = random_int8_weights(f, rows, cols, rng);
        let p = edgellm::quant::packed::pack_matrix(f, &w, w.len() / rows, rows);
        let x = random_acts(1, cols, rng);
        let mut out = vec![0f32; rows];
        let reps = if rows > 10000 { 10 } else { 200 };
        let a = best_of(reps, || simd::dot_rows(k, f, &w, &x.row(0), &mut out));
        let b = best_of(reps, || simd::packed_gemm(k, f, &p, rows, &x, &mut out, rows));
        println!("{:>6} matvec {f:?} {rows}x{cols}: rows {:7.2} GB/s, packed {:7.2} GB/s ({:.2}x)", k.name(), w.len() as f64 / a / 1e9, w.len() as f64 / b / 1e9, a / b);
        if rows > 10000 {
            continue;
        }
        let tokens = 64;
        let xs = random_acts(tokens, cols, rng);
        let mut out = vec![0f32; rows * tokens];
        let a = best_of(20, || simd::gemm(k, f, &w, rows, &xs, &mut out, rows));
        let b = best_of(20, || simd::packed_gemm(k, f, &p, rows, &xs, &mut out, rows));
        let macs = (rows * cols * tokens) as f64;
        println!("{:>6} gemm   {f:?} {rows}x{cols} x {tokens}: rows {:7.2} GMAC/s, packed {:7.2} GMAC/s ({:.2}x)", k.name(), macs / a / 1e9, macs / b / 1e9, a / b);
    }
}

#[test]
#[ignore]
fn quantize_throughput() {
    let mut rng = Rng(3);
    let (tokens, cols) = (256, 1536);
    let x: Vec<f32> = (0..tokens * cols).map(|_| rng.uniform()).collect();
    let mut a = Q8Acts::default();
    for k in KernelSet::all_available() {
        let s = best_of(5, || simd::quantize_rows(k, &x, tokens, cols, &mut a));
        println!(
            "quantize {tokens}x{cols} {:>6}: {:7.2} GB/s of f32 input",
            k.name(),
            (x.len() * 4) as f64 / s / 1e9
        );
    }
}

/// The Gemma 3 LM head (262144 x 640 Q8_0, 178 MB) through the CPU backend on 2 threads, as
/// decode runs it: read bandwidth reached, to compare with `edgellm bench --membw -t 2`.
#[test]
#[ignore]
fn lm_head_two_threads() {
    use edgellm::backend::{cpu::CpuBackend, Backend};
    let mut rng = Rng(9);
    let (rows, cols) = (262144, 640);
    let w = random_int8_weights(WeightFormat::Q8_0, rows, cols, &mut rng);
    let bytes = w.len();
    let t = edgellm::tensor::TensorRef::from_owned("output.weight", edgellm::tensor::DType::Q8_0, vec![rows, cols], w).unwrap();
    let b = CpuBackend::new(2, false).unwrap();
    let m = b.matrix(&t).unwrap();
    let mut x = b.act(1, cols).unwrap();
    x.data.iter_mut().for_each(|v| *v = rng.uniform());
    let mut out = b.act(1, rows).unwrap();
    let s = best_of(20, || b.matmul(&x, &m, &mut out).unwrap());
    println!("LM head {rows}x{cols} Q8_0, 2 threads: {:.2} ms, {:.1} GB/s", s * 1e3, bytes as f64 / s / 1e9);
}

/// Gemma 3 270M's 18 layers of decode products (Q/K/V, output, gate/up, down, in the model's
/// formats) through the CPU backend on 2 threads, back to back as decode runs them but with no
/// other op between: the read bandwidth the products alone reach.
#[test]
#[ignore]
fn gemma_layer_products_two_threads() {
    use edgellm::backend::{cpu::CpuBackend, Backend};
    use edgellm::tensor::{DType, TensorRef};
    let mut rng = Rng(13);
    let b = CpuBackend::new(2, false).unwrap();
    let shapes = [
        (WeightFormat::Q5_0, DType::Q5_0, 1024, 640),
        (WeightFormat::Q5_0, DType::Q5_0, 256, 640),
        (WeightFormat::Q8_0, DType::Q8_0, 256, 640),
        (WeightFormat::Q4K, DType::Q4K, 640, 1024),
        (WeightFormat::Q5_0, DType::Q5_0, 2048, 640),
        (WeightFormat::Q5_0, DType::Q5_0, 2048, 640),
        (WeightFormat::Q6K, DType::Q6K, 640, 2048),
    ];
    let mut layers = Vec::new();
    let mut bytes = 0;
    for l in 0..18 {
        let ms: Vec<_> = shapes
            .iter()
            .map(|&(f, dt, rows, cols)| {
                let w = random_int8_weights(f, rows, cols, &mut rng);
                bytes += w.len();
                b.matrix(&TensorRef::from_owned(&format!("l{l}"), dt, vec![rows, cols], w).unwrap()).unwrap()
            })
            .collect();
        layers.push(ms);
    }
    let mut x640 = b.act(1, 640).unwrap();
    x640.data.iter_mut().for_each(|v| *v = rng.uniform());
    let mut x1024 = b.act(1, 1024).unwrap();
    x1024.data.iter_mut().for_each(|v| *v = rng.uniform());
    let mut x2048 = b.act(1, 2048).unwrap();
    x2048.data.iter_mut().for_each(|v| *v = rng.uniform());
    let (mut q, mut k, mut v) = (b.act(1, 1024).unwrap(), b.act(1, 256).unwrap(), b.act(1, 256).unwrap());
    let (mut g, mut u, mut o) = (b.act(1, 2048).unwrap(), b.act(1, 2048).unwrap(), b.act(1, 640).unwrap());
    let s = best_of(20, || {
        for m in &layers {
            b.matmul_many(&x640, &[&m[0], &m[1], &m[2]], &mut [&mut q, &mut k, &mut v]).unwrap();
            b.matmul(&x1024, &m[3], &mut o).unwrap();
            b.matmul_many(&x640, &[&m[4], &m[5]], &mut [&mut g, &mut u]).unwrap();
            b.matmul(&x2048, &m[6], &mut o).unwrap();
        }
    });
    println!("18 Gemma layers' products, 2 threads: {:.3} ms, {:.1} GB/s ({:.1} MB)", s * 1e3, bytes as f64 / s / 1e9, bytes as f64 / 1e6);
}

/// Packing speed (`quant::packed::pack_matrix`, one thread) per format: the load-time cost of
/// the packed layout.
#[test]
#[ignore]
fn packing_throughput() {
    let mut rng = Rng(17);
    for (f, rows, cols) in [(WeightFormat::Q8_0, 16384, 640), (WeightFormat::Q5_0, 4096, 640), (WeightFormat::Q4_1, 4096, 576), (WeightFormat::Q4K, 2048, 1024), (WeightFormat::Q6K, 2048, 2048)] {
        let w = random_int8_weights(f, rows, cols, &mut rng);
        let mut out = Vec::new();
        let s = best_of(5, || out = edgellm::quant::packed::pack_matrix(f, &w, w.len() / rows, rows));
        println!("pack {f:?} {rows}x{cols}: {:.2} GB/s", w.len() as f64 / s / 1e9);
    }
}
