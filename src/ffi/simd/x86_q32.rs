//! x86-64 kernels for the 32-element block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) and the
//! activation quantizer, in AVX2 and AVX-512 VNNI variants.
//!
//! Both sets share one body (the `kernel_set!` macro below) and differ only in the integer dot of
//! 32 unsigned weight bytes with 32 signed activation bytes: `vpdpbusd` with AVX-512 VNNI (256-bit
//! VL form: a 32-weight block fills one ymm exactly), `vpmaddubsw` + `vpmaddwd` with AVX2. Weights
//! are unpacked to unsigned bytes (nibbles 0..15, five-bit values 0..31); the format's offset
//! (-8, -16) or minimum enters once per block through the activation term `s`, as in the scalar
//! reference. Q8_0 weights are signed: VNNI stores them as `q ^ 0x80 = q + 128` and subtracts
//! `128 * Σx` in integers (exact, computed once per token and block and shared by the tile's rows);
//! AVX2 cannot (255 * 127 * 2 saturates `vpmaddubsw`), so it uses ggml's sign trick instead.
//!
//! One tile routine serves both the matrix-vector and the matrix-matrix kernel: `RT` weight rows
//! times `TT` tokens, each weight block unpacked once per tile and met by every token. Block scales
//! are handled 8 blocks at a time: one gather fetches the f16 scale (and minimum) of 8 blocks of a
//! row, F16C converts them, and the products with the 8 activation scales are kept on the stack, so
//! the per-block work is the integer dot, one conversion and one fused multiply-add per row and
//! token; the minimum/offset term is one multiply-add per 8 blocks. Each accumulator is a vector of
//! 8 partial sums, added up once at the end of the row.
//!
//! The AVX-512 matrix-vector kernel uses [`wide_tile`] instead: two blocks per 512-bit `vpdpbusd`,
//! 10-20% faster from cache on Zen 5. For the matrix-matrix kernel the extra scale permute it needs
//! per row, token and block pair made it slower (58-63 vs 66-76 GMAC/s), so there both sets use the
//! 256-bit tile. Matrix-vector kernels also prefetch weights [`PREFETCH_BYTES`] ahead, which took
//! the Q8_0 LM head from 17 to 36 GB/s out of L3.

use super::int8::{self, Q8Acts, Q8Row, WeightFormat, QK8};
use super::{DotRowsFn, GemmFn, KernelSet, QuantizeFn};
use std::arch::x86_64::*;

/// Format codes used as const generic parameters.
const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q5_0: u8 = 2;
const Q5_1: u8 = 3;
const Q8_0: u8 = 4;

/// How far ahead of the block being read the matrix-vector kernels prefetch weights. The rows of
/// a kernel call are contiguous, so this lands in the rows of a later tile; at ~30 GB/s and ~100 ns
/// of DRAM latency about 3 KiB are in flight, and measured on Zen 5 8 KiB beat 2.5 KiB clearly.
const PREFETCH_BYTES: usize = 8192;

/// The [`WeightFormat`] of a format code.
const fn format_of(f: u8) -> WeightFormat {
    match f {
        Q4_0 => WeightFormat::Q4_0,
        Q4_1 => WeightFormat::Q4_1,
        Q5_0 => WeightFormat::Q5_0,
        Q5_1 => WeightFormat::Q5_1,
        _ => WeightFormat::Q8_0,
    }
}

/// Bytes per block of a format code.
const fn block_bytes(f: u8) -> usize {
    match f {
        Q4_0 => 18,
        Q4_1 => 20,
        Q5_0 => 22,
        Q5_1 => 24,
        _ => 34,
    }
}

/// Whether a row of `row_bytes` bytes holds exactly the `nb` blocks of `x`, with every part of `x`
/// sized for `nb` blocks: the kernels read through raw pointers only after this holds.
fn row_fits(f: u8, row_bytes: usize, x: &Q8Row) -> bool {
    let nb = x.qs.len() / QK8;
    x.qs.len() == nb * QK8 && row_bytes == nb * block_bytes(f) && x.d.len() == nb && x.s.len() == nb
}

/// Whether `w`, `xs` and `out` are consistent for a `n_rows`-row product (as the safe wrapper in
/// `super` checks); the kernels fall back to the scalar reference otherwise.
fn gemm_fits(
    f: u8,
    w: &[u8],
    row_bytes: usize,
    n_rows: usize,
    xs: &Q8Acts,
    out: &[f32],
    ldo: usize,
) -> bool {
    let nb = xs.cols / QK8;
    xs.cols == nb * QK8
        && row_bytes == nb * block_bytes(f)
        && w.len() >= n_rows * row_bytes
        && xs.qs.len() >= xs.rows * xs.cols
        && xs.d.len() >= xs.rows * nb
        && xs.s.len() >= xs.rows * nb
        && xs.bsums.len() >= xs.rows * nb * 2
        && ldo >= n_rows
        && (xs.rows == 0 || out.len() >= (xs.rows - 1) * ldo + n_rows)
}

/// Generates one kernel set: `$feat` its target features, `$vnni` whether it has `vpdpbusd`,
/// `$idot` the integer dot (i32 lanes `acc + Σ u*x` over groups of 4 bytes), `$mvtile` the tile
/// routine of the matrix-vector kernel with `$mv` rows per tile, `$gtile` that of the
/// matrix-matrix kernel with `$rt` x `$tt` tiles (`$rt5` rows for Q5_0/Q5_1) (`tile` below, or [`wide_tile`]).
macro_rules! kernel_set {
    ($(#[$attr:meta])* $name:ident, $feat:literal, $vnni:literal, |$acc:ident, $u:ident, $x:ident| $idot:block, $mvtile:ident, $mv:literal, $gtile:ident, $rt:literal, $rt5:literal, $tt:literal) => {
        $(#[$attr])*
        mod $name {
            use super::*;

            /// Whether this set multiplies bytes with `vpdpbusd` (no saturation, no i16 step).
            const VNNI: bool = $vnni;
            /// Weight rows per matrix-vector tile: enough independent rows to keep several weight
            /// streams in flight, few enough to stay in registers.
            const MV_ROWS: usize = $mv;
            /// Weight rows per matrix-matrix tile.
            const RT: usize = $rt;
            /// Weight rows per matrix-matrix tile for Q5_0/Q5_1, whose fifth-bit expansion
            /// holds three more constants in registers (with AVX2, 2 rows spilled: 21 vs 40 GMAC/s).
            const RT5: usize = $rt5;
            /// Tokens per matrix-matrix tile.
            const TT: usize = $tt;

            /// `acc + Σ u*x` in i32 lanes, each lane summing 4 unsigned-by-signed byte products.
            #[target_feature(enable = $feat)]
            #[inline]
            fn idot($acc: __m256i, $u: __m256i, $x: __m256i) -> __m256i $idot

            /// Sum of the 8 lanes.
            #[target_feature(enable = $feat)]
            #[inline]
            fn hsum_ps(v: __m256) -> f32 {
                let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
            }

            /// Sum of the 8 integer lanes.
            #[target_feature(enable = $feat)]
            #[inline]
            fn hsum_epi32(v: __m256i) -> i32 {
                let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
                let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
                _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32::<0b01>(s)))
            }

            /// The 32 nibbles of 16 bytes as bytes 0..15: low nibbles first, then high nibbles.
            ///
            /// # Safety
            /// `p` must be readable for 16 bytes.
            #[target_feature(enable = $feat)]
            #[inline]
            unsafe fn nibbles(p: *const u8) -> __m256i {
                // SAFETY: the caller guarantees 16 readable bytes; unaligned load.
                let q = unsafe { _mm_loadu_si128(p as *const __m128i) };
                _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16::<4>(q), q), _mm256_set1_epi8(0x0F))
            }

            /// 0x10 in byte `j` where bit `j` of `qh` is set (the fifth bits of Q5_0/Q5_1).
            #[target_feature(enable = $feat)]
            #[inline]
            fn fifth_bits(qh: u32) -> __m256i {
                // Byte j takes byte j/8 of qh, then tests bit j%8 of it.
                let spread = _mm256_setr_epi64x(0, 0x0101_0101_0101_0101, 0x0202_0202_0202_0202, 0x0303_0303_0303_0303);
                let v = _mm256_shuffle_epi8(_mm256_set1_epi32(qh as i32), spread);
                let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
                let set = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
                _mm256_and_si256(set, _mm256_set1_epi8(0x10))
            }

            /// The 32 weights of the block at `p` as unsigned bytes (Q8_0: raw signed bytes with
            /// AVX2, `q ^ 0x80` with VNNI).
            ///
            /// # Safety
            /// `p` must be readable for one whole block of format `F`.
            #[target_feature(enable = $feat)]
            #[inline]
            unsafe fn unpack<const F: u8>(p: *const u8) -> __m256i {
                // SAFETY (all arms): every offset plus its read width stays inside the block, whose
                // bytes the caller guarantees readable; loads are unaligned.
                unsafe {
                    match F {
                        Q4_0 => nibbles(p.add(2)),
                        Q4_1 => nibbles(p.add(4)),
                        Q5_0 => _mm256_or_si256(nibbles(p.add(6)), fifth_bits((p.add(2) as *const u32).read_unaligned())),
                        Q5_1 => _mm256_or_si256(nibbles(p.add(8)), fifth_bits((p.add(4) as *const u32).read_unaligned())),
                        _ => {
                            let q = _mm256_loadu_si256(p.add(2) as *const __m256i);
                            if VNNI {
                                _mm256_xor_si256(q, _mm256_set1_epi8(0x80u8 as i8))
                            } else {
                                q
                            }
                        }
                    }
                }
            }

            /// The f16 fields at byte 0 (scale) and byte 2 (minimum, where the format has one) of
            /// the 8 blocks whose 4-byte heads `g` holds, as f32 vectors.
            #[target_feature(enable = $feat)]
            #[inline]
            fn heads_to_f32(g: __m256i) -> (__m256, __m256) {
                let lo = _mm256_and_si256(g, _mm256_set1_epi32(0xFFFF));
                let hi = _mm256_srli_epi32::<16>(g);
                // packus interleaves by 128-bit lane: [lo0-3, hi0-3 | lo4-7, hi4-7] -> reorder qwords.
                let p = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi32(lo, hi));
                (_mm256_cvtph_ps(_mm256_castsi256_si128(p)), _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(p)))
            }

            /// Dots of `RTN` consecutive weight rows (from `w`, `row_bytes` apart, `nb` blocks of
            /// format `F` each) with `TTN` activation rows: `result[r][t]`.
            ///
            /// # Safety
            /// `w` must be readable for `RTN * row_bytes` bytes, `row_bytes >= nb * block_bytes(F)`,
            /// and every `x[t]` must hold `nb` blocks (`qs`, `d`, `s` sized accordingly).
            #[target_feature(enable = $feat)]
            unsafe fn tile<const F: u8, const RTN: usize, const TTN: usize>(w: *const u8, row_bytes: usize, nb: usize, x: &[Q8Row; TTN]) -> [[f32; TTN]; RTN] {
                let bb = block_bytes(F);
                let zero_i = _mm256_setzero_si256();
                let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                let head_offsets = _mm256_mullo_epi32(lane, _mm256_set1_epi32(bb as i32));
                let mut acc = [[_mm256_setzero_ps(); TTN]; RTN];
                let mut prod = [[[0f32; 8]; TTN]; RTN];
                let mut b0 = 0;
                while b0 < nb {
                    let cnt = (nb - b0).min(8);
                    let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(cnt as i32), lane);
                    let mut dx = [_mm256_setzero_ps(); TTN];
                    let mut sx = [_mm256_setzero_ps(); TTN];
                    for t in 0..TTN {
                        // SAFETY: lanes >= cnt are masked off and not read; lanes < cnt index
                        // blocks b0..b0+cnt <= nb of `d` and `s`, which hold nb values.
                        unsafe {
                            dx[t] = _mm256_maskload_ps(x[t].d.as_ptr().add(b0), mask);
                            sx[t] = _mm256_maskload_ps(x[t].s.as_ptr().add(b0), mask);
                        }
                    }
                    for r in 0..RTN {
                        // SAFETY: the gather reads 4 bytes at the start of blocks b0..b0+cnt of row
                        // r (masked lanes are not read); each block is >= 18 bytes inside the row.
                        let g = unsafe {
                            let base = w.add(r * row_bytes + b0 * bb) as *const i32;
                            if cnt == 8 {
                                _mm256_i32gather_epi32::<1>(base, head_offsets)
                            } else {
                                _mm256_mask_i32gather_epi32::<1>(zero_i, base, head_offsets, mask)
                            }
                        };
                        let (dw, mw) = heads_to_f32(g);
                        // Minimum (Q4_1/Q5_1) or folded offset (Q4_0: -8 d, Q5_0: -16 d) per block,
                        // multiplied by `s` of the same block; the lanes are summed at the end.
                        let c = match F {
                            Q4_1 | Q5_1 => mw,
                            Q4_0 => _mm256_mul_ps(dw, _mm256_set1_ps(-8.0)),
                            Q5_0 => _mm256_mul_ps(dw, _mm256_set1_ps(-16.0)),
                            _ => _mm256_setzero_ps(),
                        };
                        for t in 0..TTN {
                            let p = _mm256_mul_ps(dw, dx[t]);
                            // SAFETY: `prod[r][t]` is an 8-float array.
                            unsafe { _mm256_storeu_ps(prod[r][t].as_mut_ptr(), p) };
                            if F != Q8_0 {
                                acc[r][t] = _mm256_fmadd_ps(c, sx[t], acc[r][t]);
                            }
                        }
                    }
                    for j in 0..cnt {
                        let b = b0 + j;
                        let mut u = [zero_i; RTN];
                        let mut raw = [zero_i; RTN];
                        for r in 0..RTN {
                            if TTN == 1 {
                                // Matrix-vector: stream weights from further ahead so that DRAM
                                // latency overlaps this tile's work. A prefetch never faults; past
                                // the last row it is simply wasted.
                                _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(r * row_bytes + b * bb + PREFETCH_BYTES) as *const i8);
                            }
                            // SAFETY: block b < nb of row r lies inside the caller's weight bytes.
                            let v = unsafe { unpack::<F>(w.add(r * row_bytes + b * bb)) };
                            if F == Q8_0 && !VNNI {
                                raw[r] = v;
                                u[r] = _mm256_sign_epi8(v, v);
                            } else {
                                u[r] = v;
                            }
                        }
                        for t in 0..TTN {
                            // SAFETY: block b < nb of token t's quants (nb * 32 bytes).
                            let xv = unsafe { _mm256_loadu_si256(x[t].qs.as_ptr().add(b * QK8) as *const __m256i) };
                            let base = if F == Q8_0 && VNNI {
                                // -128 * Σx spread over lanes: undoes the +128 of the stored weights.
                                _mm256_sub_epi32(zero_i, idot(zero_i, _mm256_set1_epi8(0x80u8 as i8), xv))
                            } else {
                                zero_i
                            };
                            for r in 0..RTN {
                                let lanes = if F == Q8_0 && !VNNI { idot(zero_i, u[r], _mm256_sign_epi8(xv, raw[r])) } else { idot(base, u[r], xv) };
                                let scale = _mm256_set1_ps(prod[r][t][j]);
                                acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lanes), scale, acc[r][t]);
                            }
                        }
                    }
                    b0 += cnt;
                }
                let mut res = [[0f32; TTN]; RTN];
                for r in 0..RTN {
                    for t in 0..TTN {
                        res[r][t] = hsum_ps(acc[r][t]);
                    }
                }
                res
            }

            /// Matrix-vector kernel ([`DotRowsFn`]) for format `F`.
            ///
            /// # Safety
            /// The CPU must have this set's features (lengths are checked here).
            #[target_feature(enable = $feat)]
            unsafe fn dot_rows<const F: u8>(w: &[u8], row_bytes: usize, x: &Q8Row, out: &mut [f32]) {
                if !row_fits(F, row_bytes, x) || w.len() < out.len() * row_bytes {
                    return int8::dot_rows(format_of(F), w, row_bytes, x, out);
                }
                let nb = x.qs.len() / QK8;
                let xs = [*x];
                let mut r = 0;
                while r < out.len() {
                    if out.len() - r >= MV_ROWS {
                        // SAFETY: rows r..r+MV_ROWS lie inside `w` (checked above).
                        let res = unsafe { $mvtile::<F, MV_ROWS, 1>(w.as_ptr().add(r * row_bytes), row_bytes, nb, &xs) };
                        for (o, v) in out[r..r + MV_ROWS].iter_mut().zip(res) {
                            *o = v[0];
                        }
                        r += MV_ROWS;
                    } else if out.len() - r >= 2 {
                        // SAFETY: rows r..r+2 lie inside `w`.
                        let res = unsafe { $mvtile::<F, 2, 1>(w.as_ptr().add(r * row_bytes), row_bytes, nb, &xs) };
                        out[r] = res[0][0];
                        out[r + 1] = res[1][0];
                        r += 2;
                    } else {
                        // SAFETY: row r lies inside `w`.
                        out[r] = unsafe { $mvtile::<F, 1, 1>(w.as_ptr().add(r * row_bytes), row_bytes, nb, &xs) }[0][0];
                        r += 1;
                    }
                }
            }

            /// Every token of `xs` against `RTN` weight rows starting at row `r0`, written to `out`.
            ///
            /// # Safety
            /// As [`tile`], with `gemm_fits` holding and `r0 + RTN <= n_rows`.
            #[target_feature(enable = $feat)]
            unsafe fn gemm_rows<const F: u8, const RTN: usize>(w: &[u8], row_bytes: usize, r0: usize, xs: &Q8Acts, out: &mut [f32], ldo: usize) {
                let nb = xs.cols / QK8;
                let wp = w[r0 * row_bytes..].as_ptr();
                let mut t = 0;
                while t < xs.rows {
                    if xs.rows - t >= TT {
                        let x: [Q8Row; TT] = std::array::from_fn(|i| xs.row(t + i));
                        // SAFETY: rows r0..r0+RTN lie inside `w`; each activation row holds nb blocks.
                        let res = unsafe { $gtile::<F, RTN, TT>(wp, row_bytes, nb, &x) };
                        for (k, rr) in res.iter().enumerate() {
                            for (i, v) in rr.iter().enumerate() {
                                out[(t + i) * ldo + r0 + k] = *v;
                            }
                        }
                        t += TT;
                    } else {
                        // SAFETY: as above, one token.
                        let res = unsafe { $gtile::<F, RTN, 1>(wp, row_bytes, nb, &[xs.row(t)]) };
                        for (k, rr) in res.iter().enumerate() {
                            out[t * ldo + r0 + k] = rr[0];
                        }
                        t += 1;
                    }
                }
            }

            /// Matrix-matrix kernel ([`GemmFn`]) for format `F`.
            ///
            /// # Safety
            /// The CPU must have this set's features (lengths are checked here).
            #[target_feature(enable = $feat)]
            unsafe fn gemm<const F: u8>(w: &[u8], row_bytes: usize, n_rows: usize, xs: &Q8Acts, out: &mut [f32], ldo: usize) {
                if !gemm_fits(F, w, row_bytes, n_rows, xs, out, ldo) {
                    return int8::gemm(format_of(F), w, row_bytes, n_rows, xs, out, ldo);
                }
                let mut r = 0;
                while r < n_rows {
                    // SAFETY: `gemm_fits` holds and each call stays below n_rows.
                    unsafe {
                        if (F == Q5_0 || F == Q5_1) && RT5 != RT && n_rows - r >= RT5 {
                            gemm_rows::<F, RT5>(w, row_bytes, r, xs, out, ldo);
                            r += RT5;
                        } else if n_rows - r >= RT {
                            gemm_rows::<F, RT>(w, row_bytes, r, xs, out, ldo);
                            r += RT;
                        } else if n_rows - r >= 2 {
                            gemm_rows::<F, 2>(w, row_bytes, r, xs, out, ldo);
                            r += 2;
                        } else {
                            gemm_rows::<F, 1>(w, row_bytes, r, xs, out, ldo);
                            r += 1;
                        }
                    }
                }
            }

            /// Activation quantizer ([`QuantizeFn`]): [`int8::quantize_row`] with the same rounding
            /// (half away from zero), 32 values per step.
            ///
            /// # Safety
            /// The CPU must have this set's features (lengths are checked here).
            #[target_feature(enable = $feat)]
            unsafe fn quantize(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32], bsums: &mut [i16]) {
                let nb = x.len() / QK8;
                if x.len() != nb * QK8 || qs.len() < nb * QK8 || d.len() < nb || s.len() < nb || bsums.len() < 2 * nb {
                    return int8::quantize_row(x, qs, d, s, bsums);
                }
                let sign = _mm256_set1_ps(-0.0);
                let half = _mm256_set1_ps(0.5);
                let one = _mm256_set1_ps(1.0);
                let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
                for b in 0..nb {
                    let mut v = [_mm256_setzero_ps(); 4];
                    for (k, vk) in v.iter_mut().enumerate() {
                        // SAFETY: block b < nb: elements b*32..b*32+32 of x exist.
                        *vk = unsafe { _mm256_loadu_ps(x.as_ptr().add(b * QK8 + 8 * k)) };
                    }
                    let a01 = _mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1]));
                    let a23 = _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3]));
                    let a = _mm256_max_ps(a01, a23);
                    let m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
                    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
                    let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
                    let db = amax / 127.0;
                    let id = _mm256_set1_ps(if db > 0.0 { 1.0 / db } else { 0.0 });
                    let mut q = [_mm256_setzero_si256(); 4];
                    for k in 0..4 {
                        // Round half away from zero exactly: truncate, then step by one where the
                        // (exact) fraction is at least one half.
                        let p = _mm256_mul_ps(v[k], id);
                        let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(p);
                        let f = _mm256_andnot_ps(sign, _mm256_sub_ps(p, t));
                        let step = _mm256_and_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(f, half), _mm256_or_ps(one, _mm256_and_ps(sign, p)));
                        q[k] = _mm256_cvttps_epi32(_mm256_add_ps(t, step));
                    }
                    let packed = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
                    let packed = _mm256_permutevar8x32_epi32(packed, order);
                    // SAFETY: qs holds nb * 32 bytes (checked above).
                    unsafe { _mm256_storeu_si256(qs.as_mut_ptr().add(b * QK8) as *mut __m256i, packed) };
                    let h0 = hsum_epi32(_mm256_add_epi32(q[0], q[1]));
                    let h1 = hsum_epi32(_mm256_add_epi32(q[2], q[3]));
                    bsums[2 * b] = h0 as i16;
                    bsums[2 * b + 1] = h1 as i16;
                    d[b] = db;
                    s[b] = db * (h0 + h1) as f32;
                }
            }

            /// This set's matrix-vector kernel for `f`.
            pub(super) fn dot_fn(f: WeightFormat) -> Option<DotRowsFn> {
                Some(match f {
                    WeightFormat::Q4_0 => dot_rows::<Q4_0>,
                    WeightFormat::Q4_1 => dot_rows::<Q4_1>,
                    WeightFormat::Q5_0 => dot_rows::<Q5_0>,
                    WeightFormat::Q5_1 => dot_rows::<Q5_1>,
                    WeightFormat::Q8_0 => dot_rows::<Q8_0>,
                    _ => return None,
                })
            }

            /// This set's matrix-matrix kernel for `f`.
            pub(super) fn gemm_fn(f: WeightFormat) -> Option<GemmFn> {
                Some(match f {
                    WeightFormat::Q4_0 => gemm::<Q4_0>,
                    WeightFormat::Q4_1 => gemm::<Q4_1>,
                    WeightFormat::Q5_0 => gemm::<Q5_0>,
                    WeightFormat::Q5_1 => gemm::<Q5_1>,
                    WeightFormat::Q8_0 => gemm::<Q8_0>,
                    _ => return None,
                })
            }

            /// This set's activation quantizer.
            pub(super) fn quantize_fn() -> QuantizeFn {
                quantize
            }
        }
    };
}

/// The 32 weights of blocks `p` and `q` (`q` absent unless `TWO`) as unsigned bytes in one zmm,
/// laid out as [`wide_tile`] documents.
///
/// # Safety
/// `p` (and `q` when `TWO`) must be readable for one whole block of format `F`.
#[allow(clippy::incompatible_msrv)] // AVX-512 intrinsics: stable since 1.89, we build with 1.95
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn wide_unpack<const F: u8, const TWO: bool>(p: *const u8, q: *const u8) -> __m512i {
    let qs_at = match F {
        Q4_0 => 2,
        Q4_1 => 4,
        Q5_0 => 6,
        Q5_1 => 8,
        _ => 2,
    };
    // SAFETY (whole body): every offset plus its read width stays inside block `p` or `q`, which
    // the caller guarantees readable; `q` is only touched when `TWO`. Loads are unaligned.
    unsafe {
        if F == Q8_0 {
            let lo = _mm512_castsi256_si512(_mm256_loadu_si256(p.add(qs_at) as *const __m256i));
            let w = if TWO {
                _mm512_inserti64x4::<1>(lo, _mm256_loadu_si256(q.add(qs_at) as *const __m256i))
            } else {
                _mm512_zextsi256_si512(_mm512_castsi512_si256(lo))
            };
            return _mm512_xor_si512(w, _mm512_set1_epi8(0x80u8 as i8));
        }
        let a = _mm256_zextsi128_si256(_mm_loadu_si128(p.add(qs_at) as *const __m128i));
        let v = if TWO {
            _mm256_inserti128_si256::<1>(a, _mm_loadu_si128(q.add(qs_at) as *const __m128i))
        } else {
            a
        };
        let w = _mm512_and_si512(
            _mm512_inserti64x4::<1>(_mm512_castsi256_si512(v), _mm256_srli_epi16::<4>(v)),
            _mm512_set1_epi8(0x0F),
        );
        if F == Q5_0 || F == Q5_1 {
            let qh_at = if F == Q5_0 { 2 } else { 4 };
            let hp = (p.add(qh_at) as *const u32).read_unaligned() as u64;
            let hq = if TWO {
                (q.add(qh_at) as *const u32).read_unaligned() as u64
            } else {
                0
            };
            // Fifth bits in the zmm's element order: p 0..15, q 0..15, p 16..31, q 16..31.
            let k = (hp & 0xFFFF) | (hq & 0xFFFF) << 16 | (hp >> 16) << 32 | (hq >> 16) << 48;
            return _mm512_mask_add_epi8(w, k, w, _mm512_set1_epi8(0x10));
        }
        w
    }
}

/// The AVX-512 matrix-vector tile: as the 256-bit `tile` of the kernel sets (same contract, same
/// results up to float rounding), but two blocks per 512-bit `vpdpbusd`, which halves the integer
/// and float work per block. Nibble formats unpack blocks b and b+1 as [b low | b+1 low | b high | b+1 high]
/// nibbles (16 bytes each), so the activations of the pair are reordered to match (one lane
/// shuffle per token, shared by the rows); Q8_0 keeps both in memory order. Each 128-bit lane of
/// the i32 result then belongs to one block, and a lane permute spreads the two block scales.
///
/// # Safety
/// As the kernel sets' `tile`: `w` readable for `RTN * row_bytes` bytes, rows of `nb` blocks of
/// format `F`, every `x[t]` holding `nb` blocks.
#[allow(clippy::incompatible_msrv)] // AVX-512 intrinsics: stable since 1.89, we build with 1.95
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn wide_tile<const F: u8, const RTN: usize, const TTN: usize>(
    w: *const u8,
    row_bytes: usize,
    nb: usize,
    x: &[Q8Row; TTN],
) -> [[f32; TTN]; RTN] {
    let bb = block_bytes(F);
    let zero_i = _mm512_setzero_si512();
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let head_offsets = _mm256_mullo_epi32(lane, _mm256_set1_epi32(bb as i32));
    // Which of the pair's two scales each i32 lane takes.
    let pair_lanes = if F == Q8_0 {
        _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1)
    } else {
        _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1)
    };
    let mut acc = [[_mm512_setzero_ps(); TTN]; RTN];
    let mut prod = [[[0f32; 8]; TTN]; RTN];
    let mut b0 = 0;
    while b0 < nb {
        let cnt = (nb - b0).min(8);
        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(cnt as i32), lane);
        let mut dx = [_mm256_setzero_ps(); TTN];
        let mut sx = [_mm256_setzero_ps(); TTN];
        for t in 0..TTN {
            // SAFETY: lanes >= cnt are masked off and not read; lanes < cnt index blocks
            // b0..b0+cnt <= nb of `d` and `s`, which hold nb values.
            unsafe {
                dx[t] = _mm256_maskload_ps(x[t].d.as_ptr().add(b0), mask);
                sx[t] = _mm256_maskload_ps(x[t].s.as_ptr().add(b0), mask);
            }
        }
        for r in 0..RTN {
            // SAFETY: the gather reads 4 bytes at the start of blocks b0..b0+cnt of row r (masked
            // lanes are not read); each block is >= 18 bytes inside the row.
            let g = unsafe {
                let base = w.add(r * row_bytes + b0 * bb) as *const i32;
                if cnt == 8 {
                    _mm256_i32gather_epi32::<1>(base, head_offsets)
                } else {
                    _mm256_mask_i32gather_epi32::<1>(
                        _mm256_setzero_si256(),
                        base,
                        head_offsets,
                        mask,
                    )
                }
            };
            let lo = _mm256_and_si256(g, _mm256_set1_epi32(0xFFFF));
            let hi = _mm256_srli_epi32::<16>(g);
            let p = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi32(lo, hi));
            let dw = _mm256_cvtph_ps(_mm256_castsi256_si128(p));
            let c = match F {
                Q4_1 | Q5_1 => _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(p)),
                Q4_0 => _mm256_mul_ps(dw, _mm256_set1_ps(-8.0)),
                Q5_0 => _mm256_mul_ps(dw, _mm256_set1_ps(-16.0)),
                _ => _mm256_setzero_ps(),
            };
            for t in 0..TTN {
                // SAFETY: `prod[r][t]` is an 8-float array.
                unsafe { _mm256_storeu_ps(prod[r][t].as_mut_ptr(), _mm256_mul_ps(dw, dx[t])) };
                if F != Q8_0 {
                    acc[r][t] = _mm512_fmadd_ps(
                        _mm512_zextps256_ps512(c),
                        _mm512_zextps256_ps512(sx[t]),
                        acc[r][t],
                    );
                }
            }
        }
        let mut j = 0;
        while j < cnt {
            let two = j + 1 < cnt;
            let b = b0 + j;
            let mut u = [zero_i; RTN];
            for (r, ur) in u.iter_mut().enumerate() {
                let p = w.wrapping_add(r * row_bytes + b * bb);
                if TTN == 1 {
                    // Matrix-vector: prefetch ahead (see PREFETCH_BYTES); never faults.
                    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_BYTES) as *const i8);
                }
                // SAFETY: blocks b (and b+1 when `two`, b+1 < nb) of row r lie inside the weights.
                *ur = unsafe {
                    if two {
                        wide_unpack::<F, true>(p, p.add(bb))
                    } else {
                        wide_unpack::<F, false>(p, p)
                    }
                };
            }
            let idx = _mm512_add_epi32(pair_lanes, _mm512_set1_epi32(j as i32));
            for t in 0..TTN {
                // SAFETY: blocks b (and b+1 when `two`) of token t's quants exist.
                let xv = unsafe {
                    let xp = x[t].qs.as_ptr().add(b * QK8);
                    if two {
                        _mm512_loadu_si512(xp as *const __m512i)
                    } else {
                        _mm512_zextsi256_si512(_mm256_loadu_si256(xp as *const __m256i))
                    }
                };
                let base = if F == Q8_0 {
                    // -128 * Σx per lane group: undoes the +128 of the stored weights.
                    _mm512_sub_epi32(
                        zero_i,
                        _mm512_dpbusd_epi32(zero_i, _mm512_set1_epi8(0x80u8 as i8), xv),
                    )
                } else {
                    zero_i
                };
                let xv = if F == Q8_0 {
                    xv
                } else {
                    _mm512_shuffle_i64x2::<0b11_01_10_00>(xv, xv)
                };
                for r in 0..RTN {
                    let lanes = _mm512_dpbusd_epi32(base, u[r], xv);
                    // SAFETY: `prod[r][t]` is an 8-float array; only its lanes are selected.
                    let p8 = unsafe { _mm256_loadu_ps(prod[r][t].as_ptr()) };
                    let scale = _mm512_permutexvar_ps(idx, _mm512_castps256_ps512(p8));
                    acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(lanes), scale, acc[r][t]);
                }
            }
            j += 2;
        }
        b0 += cnt;
    }
    let mut res = [[0f32; TTN]; RTN];
    for r in 0..RTN {
        for t in 0..TTN {
            res[r][t] = _mm512_reduce_add_ps(acc[r][t]);
        }
    }
    res
}

kernel_set!(
    avx2,
    "avx2,fma,f16c",
    false,
    |acc, u, x| {
        _mm256_add_epi32(
            acc,
            _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1)),
        )
    },
    tile,
    4,
    tile,
    2,
    3,
    4
);

kernel_set!(
    // AVX-512 intrinsics and target features are stable since Rust 1.89; the crate builds with
    // 1.95 (Cargo.toml's rust-version predates them).
    #[allow(clippy::incompatible_msrv)]
    avx512,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    true,
    |acc, u, x| { _mm256_dpbusd_epi32(acc, u, x) },
    wide_tile,
    4,
    tile,
    4,
    4,
    6
);

/// The matrix-vector kernel of `k` for `f`, if this file has one.
pub fn dot_rows_fn(k: KernelSet, f: WeightFormat) -> Option<DotRowsFn> {
    match k {
        KernelSet::Avx2 => avx2::dot_fn(f),
        KernelSet::Avx512 => avx512::dot_fn(f),
        _ => None,
    }
}

/// The matrix-matrix kernel of `k` for `f`, if this file has one.
pub fn gemm_fn(k: KernelSet, f: WeightFormat) -> Option<GemmFn> {
    match k {
        KernelSet::Avx2 => avx2::gemm_fn(f),
        KernelSet::Avx512 => avx512::gemm_fn(f),
        _ => None,
    }
}

/// The activation quantizer of `k`, if this file has one.
pub fn quantize_fn(k: KernelSet) -> Option<QuantizeFn> {
    match k {
        KernelSet::Avx2 => Some(avx2::quantize_fn()),
        KernelSet::Avx512 => Some(avx512::quantize_fn()),
        _ => None,
    }
}
