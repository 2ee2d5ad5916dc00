//! Quantized weight formats: dequantization and dot products of one weight row with f32
//! activations. This is the scalar reference path, written so that the compiler vectorizes it:
//! each block is expanded into a stack buffer with exactly the arithmetic ggml uses (so
//! [`dequantize_row`] matches the `gguf` Python package bit for bit), then multiplied into eight
//! independent f32 accumulators. [`dot_row`] is the decode matvec inner loop; [`dot_rows_multi`]
//! serves prefill by expanding a row once for many activation rows. SIMD variants chosen at run
//! time will sit beside these and be tested against them.

pub mod blocks;
pub mod int8;
pub mod packed;

pub use blocks::{
    BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0,
    QuantBlock, QK, QK_K,
};

use crate::error::{Error, Result};
use crate::tensor::DType;

/// Independent accumulators in the dot loops: eight f32 lanes fill one AVX register (two SSE or
/// NEON registers) and hide the latency of dependent adds.
const LANES: usize = 8;

/// Elements of a plain-float row expanded per step in [`dot_row`], matching a quant block's size.
const FLOAT_CHUNK: usize = 32;

/// Converts IEEE half-precision bits to f32 (exact: every f16 is an f32).
#[inline]
pub fn f16_to_f32(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

/// Converts bfloat16 bits to f32 (exact: bf16 is the top half of an f32).
#[inline]
pub fn bf16_to_f32(bits: u16) -> f32 {
    half::bf16::from_bits(bits).to_f32()
}

/// Dequantizes one row (or any whole number of blocks) of `dtype` from `src` into `dst`; errors
/// unless `dst.len()` is whole blocks and `src.len() == dtype.bytes_for(dst.len())`.
pub fn dequantize_row(dtype: DType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    let need = dtype.bytes_for(dst.len()).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "dequantize {}: {} elements is not a whole number of {}-element blocks",
            dtype.name(),
            dst.len(),
            dtype.block_elems()
        ))
    })?;
    if src.len() != need {
        return Err(Error::InvalidArgument(format!(
            "dequantize {}: {} elements need {need} bytes, got {}",
            dtype.name(),
            dst.len(),
            src.len()
        )));
    }
    dequantize_trusted(dtype, src, dst);
    Ok(())
}

/// Dequantizes with lengths already checked (or trusted).
fn dequantize_trusted(dtype: DType, src: &[u8], dst: &mut [f32]) {
    match dtype {
        DType::F32 => {
            for (o, b) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        DType::F16 => {
            for (o, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *o = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
            }
        }
        DType::BF16 => {
            for (o, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *o = bf16_to_f32(u16::from_le_bytes([b[0], b[1]]));
            }
        }
        DType::Q4_0 => dequant_blocks::<BlockQ4_0, QK>(src, dst),
        DType::Q4_1 => dequant_blocks::<BlockQ4_1, QK>(src, dst),
        DType::Q5_0 => dequant_blocks::<BlockQ5_0, QK>(src, dst),
        DType::Q5_1 => dequant_blocks::<BlockQ5_1, QK>(src, dst),
        DType::Q8_0 => dequant_blocks::<BlockQ8_0, QK>(src, dst),
        DType::Q4K => dequant_blocks::<BlockQ4K, QK_K>(src, dst),
        DType::Q5K => dequant_blocks::<BlockQ5K, QK_K>(src, dst),
        DType::Q6K => dequant_blocks::<BlockQ6K, QK_K>(src, dst),
    }
}

fn dequant_blocks<B: QuantBlock<N>, const N: usize>(src: &[u8], dst: &mut [f32]) {
    let mut buf = [0f32; N];
    for (b, out) in src.chunks_exact(B::BYTES).zip(dst.chunks_exact_mut(N)) {
        B::read(b).dequantize(&mut buf);
        out.copy_from_slice(&buf);
    }
}

/// Dot product of one weight row of `dtype` (`w_row`, whole blocks) with `x` in f32: equal to
/// dequantizing the row and taking an f32 dot product, up to the order of the additions.
///
/// Lengths are trusted (checked only in debug builds): `w_row.len()` must be
/// `dtype.bytes_for(x.len())`.
pub fn dot_row(dtype: DType, w_row: &[u8], x: &[f32]) -> f32 {
    debug_assert_eq!(Some(w_row.len()), dtype.bytes_for(x.len()), "dot_row {}", dtype.name());
    match dtype {
        DType::F32 => dot_float::<4>(w_row, x, f32::from_le_bytes),
        DType::F16 => dot_float::<2>(w_row, x, |b| f16_to_f32(u16::from_le_bytes(b))),
        DType::BF16 => dot_float::<2>(w_row, x, |b| bf16_to_f32(u16::from_le_bytes(b))),
        DType::Q4_0 => dot_blocks::<BlockQ4_0, QK>(w_row, x),
        DType::Q4_1 => dot_blocks::<BlockQ4_1, QK>(w_row, x),
        DType::Q5_0 => dot_blocks::<BlockQ5_0, QK>(w_row, x),
        DType::Q5_1 => dot_blocks::<BlockQ5_1, QK>(w_row, x),
        DType::Q8_0 => dot_blocks::<BlockQ8_0, QK>(w_row, x),
        DType::Q4K => dot_blocks::<BlockQ4K, QK_K>(w_row, x),
        DType::Q5K => dot_blocks::<BlockQ5K, QK_K>(w_row, x),
        DType::Q6K => dot_blocks::<BlockQ6K, QK_K>(w_row, x),
    }
}

/// Dot products of one weight row with several activation rows, expanding the weights once:
/// `out[r] = dot(w_row, xs[r * k..(r + 1) * k])` where `k = scratch.len()` is the row length and
/// `xs` is row-major `[out.len(), k]`; `scratch` is caller-owned so that a matmul reuses it.
///
/// Same semantics as [`dot_row`]; lengths are trusted (checked only in debug builds).
pub fn dot_rows_multi(dtype: DType, w_row: &[u8], xs: &[f32], scratch: &mut [f32], out: &mut [f32]) {
    let k = scratch.len();
    debug_assert_eq!(Some(w_row.len()), dtype.bytes_for(k), "dot_rows_multi {}", dtype.name());
    debug_assert_eq!(xs.len(), k * out.len(), "dot_rows_multi activations");
    if k == 0 {
        out.fill(0.0);
        return;
    }
    dequantize_trusted(dtype, w_row, scratch);
    for (o, x) in out.iter_mut().zip(xs.chunks_exact(k)) {
        *o = dot_f32(scratch, x);
    }
}

/// Dot product of two equally long f32 slices with eight-lane accumulation.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; LANES];
    let n = a.len().min(b.len()) / LANES * LANES;
    accumulate(&mut acc, &a[..n], &b[..n]);
    let mut tail = 0f32;
    for (x, y) in a[n..].iter().zip(&b[n..]) {
        tail += x * y;
    }
    hsum(&acc) + tail
}

/// Adds `w[i] * x[i]` into lane `i % LANES`; both lengths are multiples of [`LANES`].
#[inline(always)]
fn accumulate(acc: &mut [f32; LANES], w: &[f32], x: &[f32]) {
    for (wc, xc) in w.chunks_exact(LANES).zip(x.chunks_exact(LANES)) {
        for i in 0..LANES {
            acc[i] += wc[i] * xc[i];
        }
    }
}

#[inline(always)]
fn hsum(acc: &[f32; LANES]) -> f32 {
    let s4 = [acc[0] + acc[4], acc[1] + acc[5], acc[2] + acc[6], acc[3] + acc[7]];
    (s4[0] + s4[2]) + (s4[1] + s4[3])
}

#[inline(always)]
fn dot_blocks<B: QuantBlock<N>, const N: usize>(w: &[u8], x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut buf = [0f32; N];
    for (b, xb) in w.chunks_exact(B::BYTES).zip(x.chunks_exact(N)) {
        B::read(b).dequantize(&mut buf);
        accumulate(&mut acc, &buf, xb);
    }
    hsum(&acc)
}

#[inline(always)]
fn dot_float<const EB: usize>(w: &[u8], x: &[f32], conv: impl Fn([u8; EB]) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut buf = [0f32; FLOAT_CHUNK];
    let wc = w.chunks_exact(EB * FLOAT_CHUNK);
    let xc = x.chunks_exact(FLOAT_CHUNK);
    let (w_tail, x_tail) = (wc.remainder(), xc.remainder());
    for (wb, xb) in wc.zip(xc) {
        for (o, e) in buf.iter_mut().zip(wb.chunks_exact(EB)) {
            let mut a = [0u8; EB];
            a.copy_from_slice(e);
            *o = conv(a);
        }
        accumulate(&mut acc, &buf, xb);
    }
    let mut tail = 0f32;
    for (e, &xv) in w_tail.chunks_exact(EB).zip(x_tail) {
        let mut a = [0u8; EB];
        a.copy_from_slice(e);
        tail += conv(a) * xv;
    }
    hsum(&acc) + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reassociating an n-term f32 sum changes it by at most about n·ε·Σ|wᵢxᵢ| (the classic
    /// recursive-summation bound), so a dot product that only reorders adds must lie within it.
    const REASSOC_TOL_PER_TERM: f32 = f32::EPSILON;

    const ALL: [DType; 11] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q8_0,
        DType::Q4K,
        DType::Q5K,
        DType::Q6K,
    ];

    /// A small xorshift generator: deterministic and dependency-free.
    struct Rng(u64);
    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn uniform(&mut self) -> f32 {
            (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        }
    }

    /// Byte offsets of the f16 scale fields inside one block.
    fn f16_fields(dtype: DType) -> &'static [usize] {
        match dtype {
            DType::Q4_0 | DType::Q5_0 | DType::Q8_0 => &[0],
            DType::Q4_1 | DType::Q5_1 | DType::Q4K | DType::Q5K => &[0, 2],
            DType::Q6K => &[208],
            DType::F32 | DType::F16 | DType::BF16 => &[],
        }
    }

    /// Random bytes for `n` elements, with every float field a finite value of modest size.
    fn random_row(dtype: DType, n: usize, rng: &mut Rng) -> Vec<u8> {
        let mut v: Vec<u8> = (0..dtype.bytes_for(n).unwrap()).map(|_| rng.next_u64() as u8).collect();
        match dtype {
            DType::F32 => {
                for c in v.chunks_exact_mut(4) {
                    c.copy_from_slice(&rng.uniform().to_le_bytes());
                }
            }
            DType::F16 => {
                for c in v.chunks_exact_mut(2) {
                    c.copy_from_slice(&half::f16::from_f32(rng.uniform()).to_le_bytes());
                }
            }
            DType::BF16 => {
                for c in v.chunks_exact_mut(2) {
                    c.copy_from_slice(&half::bf16::from_f32(rng.uniform()).to_le_bytes());
                }
            }
            _ => {
                for blk in v.chunks_exact_mut(dtype.block_bytes()) {
                    for &off in f16_fields(dtype) {
                        let s = half::f16::from_f32(rng.uniform() * 0.05);
                        blk[off..off + 2].copy_from_slice(&s.to_le_bytes());
                    }
                }
            }
        }
        v
    }

    fn check_dot(dtype: DType, n: usize, seed: u64) {
        let mut rng = Rng(seed);
        let w = random_row(dtype, n, &mut rng);
        let x: Vec<f32> = (0..n).map(|_| rng.uniform()).collect();
        let mut deq = vec![0f32; n];
        dequantize_row(dtype, &w, &mut deq).unwrap();
        let naive: f32 = deq.iter().zip(&x).map(|(a, b)| a * b).sum();
        let abs: f32 = deq.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum();
        let tol = n as f32 * REASSOC_TOL_PER_TERM * abs;
        let got = dot_row(dtype, &w, &x);
        assert!((got - naive).abs() <= tol, "{} n={n}: dot_row {got} vs naive {naive} (tol {tol})", dtype.name());

        let rows = 3;
        let xs: Vec<f32> = (0..rows * n).map(|_| rng.uniform()).collect();
        let mut scratch = vec![0f32; n];
        let mut out = vec![0f32; rows];
        dot_rows_multi(dtype, &w, &xs, &mut scratch, &mut out);
        for (r, &o) in out.iter().enumerate() {
            let single = dot_row(dtype, &w, &xs[r * n..(r + 1) * n]);
            let abs: f32 = deq.iter().zip(&xs[r * n..]).map(|(a, b)| (a * b).abs()).sum();
            let tol = n as f32 * REASSOC_TOL_PER_TERM * abs;
            assert!((o - single).abs() <= tol, "{} n={n} row {r}: multi {o} vs single {single}", dtype.name());
        }
    }

    #[test]
    fn dot_row_matches_dequantize_then_dot_on_awkward_sizes() {
        for (i, &dt) in ALL.iter().enumerate() {
            for blocks in [1usize, 3, 7] {
                // Plain floats have 1-element blocks; give them lengths that leave a ragged tail.
                let n = if dt.block_elems() == 1 { blocks * 37 } else { blocks * dt.block_elems() };
                check_dot(dt, n, 0x9E37_79B9_7F4A_7C15 ^ (i as u64 * 1000 + blocks as u64));
            }
        }
    }

    #[test]
    fn block_struct_sizes_match_dtype_table() {
        use std::mem::size_of;
        assert_eq!(size_of::<BlockQ4_0>(), DType::Q4_0.block_bytes());
        assert_eq!(size_of::<BlockQ4_1>(), DType::Q4_1.block_bytes());
        assert_eq!(size_of::<BlockQ5_0>(), DType::Q5_0.block_bytes());
        assert_eq!(size_of::<BlockQ5_1>(), DType::Q5_1.block_bytes());
        assert_eq!(size_of::<BlockQ8_0>(), DType::Q8_0.block_bytes());
        assert_eq!(size_of::<BlockQ4K>(), DType::Q4K.block_bytes());
        assert_eq!(size_of::<BlockQ5K>(), DType::Q5K.block_bytes());
        assert_eq!(size_of::<BlockQ6K>(), DType::Q6K.block_bytes());
        assert_eq!(<BlockQ6K as QuantBlock<QK_K>>::BYTES, DType::Q6K.block_bytes());
    }

    #[test]
    fn dequantize_row_rejects_wrong_lengths() {
        let mut dst = vec![0f32; 32];
        assert!(dequantize_row(DType::Q4_0, &[0u8; 17], &mut dst).is_err());
        let mut dst = vec![0f32; 31];
        assert!(dequantize_row(DType::Q4_0, &[0u8; 18], &mut dst).is_err());
        let mut dst = vec![0f32; 32];
        assert!(dequantize_row(DType::Q4_0, &[0u8; 18], &mut dst).is_ok());
    }

    #[test]
    fn q8k_quantize_round_trips_within_half_a_step() {
        let mut rng = Rng(7);
        let mut x = [0f32; QK_K];
        x.iter_mut().for_each(|v| *v = rng.uniform());
        let b = BlockQ8K::quantize(&x);
        let mut y = [0f32; QK_K];
        b.dequantize(&mut y);
        for (a, c) in x.iter().zip(&y) {
            assert!((a - c).abs() <= b.d.abs() * 0.5 + 1e-6);
        }
        assert_eq!(b.bsums[0], b.qs[..16].iter().map(|&q| q as i16).sum::<i16>());
    }
}
