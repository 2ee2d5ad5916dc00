//! Every SIMD kernel set this machine has (AVX2, AVX-512 VNNI, NEON), forced in turn, against the
//! scalar integer reference in `edgellm::quant::int8`, on awkward sizes: row counts that are not
//! multiples of any unroll factor, one block and many blocks (whole groups of 8 scale blocks and
//! partial ones after them), one token and odd token counts.

mod common;

use common::{quantized, random_int8_weights, Rng};
use edgellm::ffi::simd::{self, KernelSet};
use edgellm::quant::int8::{self, Q8Acts, WeightFormat};

/// Kernels reorder the f32 additions of per-block products (each exact in integers before
/// scaling), so they may differ from the reference by a few f32 roundings per block: relative to
/// Σ|block products| that stays under 1e-5.
const REL_TOL: f32 = 1e-5;

const ALL: [WeightFormat; 8] = [
    WeightFormat::Q4_0,
    WeightFormat::Q4_1,
    WeightFormat::Q5_0,
    WeightFormat::Q5_1,
    WeightFormat::Q8_0,
    WeightFormat::Q4K,
    WeightFormat::Q5K,
    WeightFormat::Q6K,
];

/// Σ|w·x| of one row pair through the scalar reference on absolute values is awkward; bound it by
/// the dequantized magnitudes instead.
fn magnitude(f: WeightFormat, w_row: &[u8], x: &[f32]) -> f32 {
    let dt = match f {
        WeightFormat::Q4_0 => edgellm::tensor::DType::Q4_0,
        WeightFormat::Q4_1 => edgellm::tensor::DType::Q4_1,
        WeightFormat::Q5_0 => edgellm::tensor::DType::Q5_0,
        WeightFormat::Q5_1 => edgellm::tensor::DType::Q5_1,
        WeightFormat::Q8_0 => edgellm::tensor::DType::Q8_0,
        WeightFormat::Q4K => edgellm::tensor::DType::Q4K,
        WeightFormat::Q5K => edgellm::tensor::DType::Q5K,
        WeightFormat::Q6K => edgellm::tensor::DType::Q6K,
    };
    let mut wf = vec![0f32; x.len()];
    edgellm::quant::dequantize_row(dt, w_row, &mut wf).unwrap();
    wf.iter().zip(x).map(|(a, b)| (a * b).abs()).sum::<f32>() + 1e-6
}

fn forced_sets() -> Vec<KernelSet> {
    let sets: Vec<KernelSet> = KernelSet::all_available()
        .into_iter()
        .filter(|k| *k != KernelSet::Scalar)
        .collect();
    if sets.is_empty() {
        eprintln!("no SIMD kernel set on this machine: only the scalar reference is checked");
    }
    sets
}

#[test]
fn matvec_kernels_match_scalar_reference() {
    let mut rng = Rng(0xC0FFEE);
    for k in forced_sets() {
        for f in ALL {
            for (rows, blocks) in [(1usize, 1usize), (3, 2), (7, 3), (17, 5), (33, 9), (64, 20), (6, 16), (45, 18)] {
                let cols = blocks * f.block_elems();
                let w = random_int8_weights(f, rows, cols, &mut rng);
                let x: Vec<f32> = (0..cols).map(|_| rng.uniform() * 2.0).collect();
                let xq = quantized(&x, 1, cols);
                let mut want = vec![0f32; rows];
                let mut got = vec![0f32; rows];
                simd::dot_rows(KernelSet::Scalar, f, &w, &xq.row(0), &mut want);
                simd::dot_rows(k, f, &w, &xq.row(0), &mut got);
                let rb = w.len() / rows;
                for r in 0..rows {
                    let tol = REL_TOL * magnitude(f, &w[r * rb..(r + 1) * rb], &x);
                    assert!(
                        (got[r] - want[r]).abs() <= tol,
                        "{k:?} {f:?} {rows}x{cols} row {r}: {} vs {}",
                        got[r],
                        want[r]
                    );
                }
            }
        }
    }
}

#[test]
fn gemm_kernels_match_scalar_reference() {
    let mut rng = Rng(0xBEEF);
    for k in forced_sets() {
        for f in ALL {
            for (rows, blocks, tokens) in [(1usize, 1usize, 1usize), (5, 2, 3), (19, 3, 7), (37, 4, 13), (64, 8, 32), (23, 18, 9), (6, 11, 5)] {
                let cols = blocks * f.block_elems();
                let w = random_int8_weights(f, rows, cols, &mut rng);
                let x: Vec<f32> = (0..tokens * cols).map(|_| rng.uniform()).collect();
                let xq = quantized(&x, tokens, cols);
                let ldo = rows + 3;
                let mut want = vec![f32::NAN; tokens * ldo];
                let mut got = vec![f32::NAN; tokens * ldo];
                simd::gemm(KernelSet::Scalar, f, &w, rows, &xq, &mut want, ldo);
                simd::gemm(k, f, &w, rows, &xq, &mut got, ldo);
                let rb = w.len() / rows;
                for t in 0..tokens {
                    for r in 0..rows {
                        let tol = REL_TOL
                            * magnitude(f, &w[r * rb..(r + 1) * rb], &x[t * cols..(t + 1) * cols]);
                        let (g, e) = (got[t * ldo + r], want[t * ldo + r]);
                        assert!(
                            (g - e).abs() <= tol,
                            "{k:?} {f:?} {rows}x{cols}, {tokens} tokens, [{t},{r}]: {g} vs {e}"
                        );
                    }
                    for pad in rows..ldo.min(got.len() - t * ldo) {
                        assert!(
                            got[t * ldo + pad].is_nan(),
                            "{k:?} {f:?} wrote past row {rows} (ldo {ldo})"
                        );
                    }
                }
            }
        }
    }
}

/// Extreme quants, where 16-bit intermediate sums could saturate: every weight byte 0x80, 0xFF or
/// 0x7F (Q8_0 -128, -1 or 127; nibbles 0/8, 15 or 15/7; fifth bits all or mostly set) against
/// activations all at +127 or alternating ±127.
#[test]
fn kernels_match_scalar_reference_on_extreme_quants() {
    for k in forced_sets() {
        for f in ALL {
            let (rows, blocks, tokens) = (9usize, 10usize, 5usize);
            let cols = blocks * f.block_elems();
            let mut rng = Rng(17);
            for fill in [0x80u8, 0xFF, 0x7F] {
                let mut w = random_int8_weights(f, rows, cols, &mut rng);
                let scale_fields: &[usize] = match f {
                    WeightFormat::Q4_0 | WeightFormat::Q5_0 | WeightFormat::Q8_0 => &[0, 1],
                    WeightFormat::Q4_1
                    | WeightFormat::Q5_1
                    | WeightFormat::Q4K
                    | WeightFormat::Q5K => &[0, 1, 2, 3],
                    WeightFormat::Q6K => &[208, 209],
                };
                for blk in w.chunks_exact_mut(f.block_bytes()) {
                    for (i, b) in blk.iter_mut().enumerate() {
                        if !scale_fields.contains(&i) {
                            *b = fill;
                        }
                    }
                }
                for alternate in [false, true] {
                    let x: Vec<f32> = (0..tokens * cols)
                        .map(|i| if alternate && i % 2 == 1 { -1.0 } else { 1.0 })
                        .collect();
                    let xq = quantized(&x, tokens, cols);
                    let mut want = vec![0f32; tokens * rows];
                    let mut got = vec![0f32; tokens * rows];
                    simd::gemm(KernelSet::Scalar, f, &w, rows, &xq, &mut want, rows);
                    simd::gemm(k, f, &w, rows, &xq, &mut got, rows);
                    let mut mv = vec![0f32; rows];
                    simd::dot_rows(k, f, &w, &xq.row(0), &mut mv);
                    let rb = w.len() / rows;
                    for t in 0..tokens {
                        for r in 0..rows {
                            let tol = REL_TOL
                                * magnitude(
                                    f,
                                    &w[r * rb..(r + 1) * rb],
                                    &x[t * cols..(t + 1) * cols],
                                );
                            let (g, e) = (got[t * rows + r], want[t * rows + r]);
                            assert!((g - e).abs() <= tol, "{k:?} {f:?} fill {fill:#x} alternate {alternate} gemm [{t},{r}]: {g} vs {e}");
                            if t == 0 {
                                assert!((mv[r] - e).abs() <= tol, "{k:?} {f:?} fill {fill:#x} alternate {alternate} matvec {r}: {} vs {e}", mv[r]);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn quantize_kernels_match_scalar_reference() {
    let mut rng = Rng(99);
    for k in forced_sets() {
        for cols in [32usize, 96, 576, 640] {
            let mut x: Vec<f32> = (0..3 * cols).map(|_| rng.uniform() * 4.0).collect();
            x[..32].fill(0.0); // an all-zero block must give d = 0 and zero quants
            let mut want = Q8Acts::default();
            let mut got = Q8Acts::default();
            simd::quantize_rows(KernelSet::Scalar, &x, 3, cols, &mut want);
            simd::quantize_rows(k, &x, 3, cols, &mut got);
            for b in 0..want.d.len() {
                assert!(
                    (got.d[b] - want.d[b]).abs() <= want.d[b] * 1e-6,
                    "{k:?} scale {b}"
                );
            }
            for (i, (&g, &e)) in got.qs.iter().zip(&want.qs).enumerate() {
                // Ties at exactly .5 may round either way (half-to-even vs half-away).
                let v = x[i] / want.d[i / 32].max(f32::MIN_POSITIVE);
                let tie = (v.abs().fract() - 0.5).abs() < 1e-3;
                assert!(
                    g == e || (tie && (g as i32 - e as i32).abs() == 1),
                    "{k:?} quant {i}: {g} vs {e} (x/d = {v})"
                );
            }
            for (h, &bs) in got.bsums.iter().enumerate() {
                let sum: i32 = got.qs[h * 16..h * 16 + 16].iter().map(|&q| q as i32).sum();
                assert_eq!(bs as i32, sum, "{k:?} bsum {h}");
            }
            for b in 0..got.s.len() {
                let sum: i32 = got.qs[b * 32..b * 32 + 32].iter().map(|&q| q as i32).sum();
                assert!(
                    (got.s[b] - got.d[b] * sum as f32).abs() <= got.d[b].abs() * 1e-3 + 1e-7,
                    "{k:?} s {b}"
                );
            }
        }
    }
}

#[test]
fn reference_dot_rows_equal_single_dots() {
    let mut rng = Rng(5);
    for f in ALL {
        let cols = 2 * f.block_elems();
        let w = random_int8_weights(f, 3, cols, &mut rng);
        let x: Vec<f32> = (0..cols).map(|_| rng.uniform()).collect();
        let xq = quantized(&x, 1, cols);
        let mut out = vec![0f32; 3];
        int8::dot_rows(f, &w, w.len() / 3, &xq.row(0), &mut out);
        assert_eq!(out[2], int8::dot_row(f, &w[2 * w.len() / 3..], &xq.row(0)));
    }
}

/// The packed (row-interleaved) layout's kernels, where the set has them, against the scalar
/// reference on the GGUF rows they were packed from: partial last groups, one and two groups per
/// matrix-vector step, every token-tile tail (8, 4, 2, 1).
#[test]
fn packed_kernels_match_scalar_reference() {
    use edgellm::quant::packed;
    let mut rng = Rng(0xFACADE);
    for k in KernelSet::all_available() {
        for f in ALL.into_iter().filter(|f| packed::packable(*f)) {
            for (rows, blocks, tokens) in [(1usize, 1usize, 1usize), (15, 2, 3), (16, 3, 1), (17, 5, 15), (33, 9, 1), (48, 18, 8), (70, 20, 13), (64, 2, 2)] {
                let cols = blocks * f.block_elems();
                let w = random_int8_weights(f, rows, cols, &mut rng);
                let rb = w.len() / rows;
                let p = packed::pack_matrix(f, &w, rb, rows);
                let x: Vec<f32> = (0..tokens * cols).map(|_| rng.uniform() * 2.0).collect();
                let xq = quantized(&x, tokens, cols);
                let ldo = rows + 3;
                let mut want = vec![0f32; tokens * ldo];
                let mut got = vec![f32::NAN; tokens * ldo];
                int8::gemm(f, &w, rb, rows, &xq, &mut want, ldo);
                simd::packed_gemm(k, f, &p, rows, &xq, &mut got, ldo);
                for t in 0..tokens {
                    for r in 0..rows {
                        let tol = REL_TOL * magnitude(f, &w[r * rb..(r + 1) * rb], &x[t * cols..(t + 1) * cols]);
                        let (g, e) = (got[t * ldo + r], want[t * ldo + r]);
                        assert!((g - e).abs() <= tol, "{k:?} {f:?} {rows}x{cols} x{tokens} token {t} row {r}: {g} vs {e}");
                    }
                    assert!(got[t * ldo + rows..t * ldo + ldo].iter().all(|v| v.is_nan()), "{k:?} {f:?}: wrote past the rows");
                }
            }
        }
    }
}
