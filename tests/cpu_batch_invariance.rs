//! Continuous batching runs a sequence's rows in products with other sequences' rows, so a row's
//! result must not depend on which other rows share the call: a greedy request must give the
//! same tokens alone and in any batch. These tests check that bitwise, for every weight format
//! and kernel set, and for the exact (f32) path.

mod common;

use common::{random_int8_weights, Rng};
use edgellm::backend::cpu::CpuBackend;
use edgellm::backend::Backend;
use edgellm::ffi::simd::KernelSet;
use edgellm::quant::int8::WeightFormat;
use edgellm::tensor::{DType, TensorRef};

const FORMATS: [(WeightFormat, DType); 8] = [
    (WeightFormat::Q4_0, DType::Q4_0),
    (WeightFormat::Q4_1, DType::Q4_1),
    (WeightFormat::Q5_0, DType::Q5_0),
    (WeightFormat::Q5_1, DType::Q5_1),
    (WeightFormat::Q8_0, DType::Q8_0),
    (WeightFormat::Q4K, DType::Q4K),
    (WeightFormat::Q5K, DType::Q5K),
    (WeightFormat::Q6K, DType::Q6K),
];

/// Products of `n` rows at once equal the same rows one at a time, bit for bit.
fn check_rows_independent(b: &CpuBackend, w: &TensorRef, rng: &mut Rng, label: &str) {
    let m = b.matrix(w).unwrap();
    let (rows, cols) = (w.n_rows(), w.row_len());
    for n in [2usize, 3, 9, 70] {
        let mut x = b.act(n, cols).unwrap();
        x.data.iter_mut().for_each(|v| *v = rng.uniform());
        let mut all = b.act(n, rows).unwrap();
        b.matmul(&x, &m, &mut all).unwrap();
        for t in 0..n {
            let mut one = b.act(1, cols).unwrap();
            one.data.copy_from_slice(&x.data[t * cols..(t + 1) * cols]);
            let mut o = b.act(1, rows).unwrap();
            b.matmul(&one, &m, &mut o).unwrap();
            let got = &all.data[t * rows..(t + 1) * rows];
            let diff = got.iter().zip(&o.data).position(|(a, b)| a.to_bits() != b.to_bits());
            assert!(diff.is_none(), "{label}: {n} rows, row {t} col {:?}: batched {} alone {}", diff, got[diff.unwrap()], o.data[diff.unwrap()]);
        }
    }
}

#[test]
fn int8_products_do_not_depend_on_the_batch() {
    let mut rng = Rng(77);
    for k in KernelSet::all_available() {
        let b = CpuBackend::with_kernels(2, false, k).unwrap();
        for (f, dt) in FORMATS {
            let (rows, cols) = (80, 512);
            let w = TensorRef::from_owned("w", dt, vec![rows, cols], random_int8_weights(f, rows, cols, &mut rng)).unwrap();
            check_rows_independent(&b, &w, &mut rng, &format!("{} {:?}", k.name(), f));
        }
    }
}

#[test]
fn exact_products_do_not_depend_on_the_batch() {
    let mut rng = Rng(78);
    let b = CpuBackend::with_kernels(2, true, KernelSet::all_available()[0]).unwrap();
    let (rows, cols) = (40, 96);
    let vals: Vec<f32> = (0..rows * cols).map(|_| rng.uniform()).collect();
    let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    let w = TensorRef::from_owned("w", DType::F32, vec![rows, cols], bytes).unwrap();
    check_rows_independent(&b, &w, &mut rng, "exact f32");
    let (f, dt) = FORMATS[4];
    let w = TensorRef::from_owned("w", dt, vec![rows, 512], random_int8_weights(f, rows, 512, &mut rng)).unwrap();
    check_rows_independent(&b, &w, &mut rng, "exact q8_0");
}

/// Prompt rows' attention does not depend on how the prompt is chunked (the f32 GEMM's edge
/// elements use the tiles' arithmetic), with and without a sliding window, in paged blocks that
/// are not in order.
#[test]
fn prompt_attention_does_not_depend_on_chunking() {
    use edgellm::backend::{AttentionShape, AttnSeq};
    use edgellm::kv_cache::BLOCK_TOKENS;
    let mut rng = Rng(79);
    for k in KernelSet::all_available() {
        for window in [None, Some(23)] {
            let b = CpuBackend::with_kernels(2, false, k).unwrap();
            let (heads, kv_heads, hd, n): (usize, usize, usize, usize) = (4, 2, 64, 61);
            let s = AttentionShape { n_heads: heads, n_kv_heads: kv_heads, head_dim: hd, scale: 0.125, window, softcap: None };
            let blocks: Vec<u32> = (0..n.div_ceil(BLOCK_TOKENS) as u32).rev().map(|x| x + 1).collect();
            let mut kv = b.kv(1, kv_heads * hd, (blocks.len() + 2) * BLOCK_TOKENS).unwrap();
            let slots: Vec<usize> = (0..n).map(|p| edgellm::kv_cache::slot(&blocks, p)).collect();
            let mut kk = b.act(n, kv_heads * hd).unwrap();
            let mut vv = b.act(n, kv_heads * hd).unwrap();
            kk.data.iter_mut().chain(vv.data.iter_mut()).for_each(|x| *x = rng.uniform());
            b.kv_store(&mut kv, 0, &slots, &kk, &vv).unwrap();
            let mut q = b.act(n, heads * hd).unwrap();
            q.data.iter_mut().for_each(|x| *x = rng.uniform());
            let run = |cuts: &[usize]| {
                let mut out = b.act(n, heads * hd).unwrap();
                let mut start = 0;
                for &end in cuts.iter().chain(std::iter::once(&n)) {
                    let mut qc = b.act(end - start, heads * hd).unwrap();
                    qc.data.copy_from_slice(&q.data[start * heads * hd..end * heads * hd]);
                    let mut oc = b.act(end - start, heads * hd).unwrap();
                    let seq = AttnSeq { rows: 0..end - start, pos0: start, blocks: &blocks, prompt: true };
                    b.attention(&qc, &kv, 0, &[seq], s, &mut oc).unwrap();
                    out.data[start * heads * hd..end * heads * hd].copy_from_slice(&oc.data);
                    start = end;
                }
                out.data
            };
            let whole = run(&[]);
            for cuts in [vec![1], vec![7, 8, 30], vec![33, 60]] {
                let got = run(&cuts);
                let diff = got.iter().zip(&whole).position(|(a, b)| a.to_bits() != b.to_bits());
                assert!(diff.is_none(), "{} window {window:?} cuts {cuts:?}: element {diff:?} differs", k.name());
            }
        }
    }
}
