//! x86-64 kernels for the k-quant formats (Q4_K, Q5_K, Q6_K), in AVX2 and AVX-512 VNNI variants.
//!
//! Every kernel walks one 256-weight super-block at a time and first unpacks its weights into
//! unsigned bytes in the order of the activation quants (Q6_K keeps `q` unsigned, so that VNNI's
//! unsigned-by-signed `vpdpbusd` applies; its `-32` is folded out through the activations'
//! 16-sums). A 4-byte integer lane of the dot product then always lies inside one weight scale
//! group (32 weights for Q4_K/Q5_K, 16 for Q6_K) and inside one 32-element activation block, so
//! the exact integer lane sums are scaled in f32 by `weight group scale * activation scale` and
//! accumulated. One vector FMA per super-block subtracts the minimum/offset terms,
//! `Σ_g cw[g] * bsums[g] * d_x(g)` over the 16 groups of 16 weights, with `cw = dmin * m` for
//! Q4_K/Q5_K and `32 * d * sc` for Q6_K.
//!
//! A tile of `R` weight rows × `T` tokens reuses each unpacked weight chunk for `T` tokens and
//! each activation load for `R` rows: the matrix-vector kernels run 4 × 1 tiles (a super-block of
//! four rows in flight keeps several DRAM streams busy), the matrix kernels 4 × 4 (AVX-512, 32
//! vector registers) or 2 × 4 (AVX2, 16), with narrower tiles for the edges. With one token the
//! activation scales are folded into the row scales once per super-block, which leaves per 64
//! weights: unpack (2-4 ops), `vpdpbusd`, convert, permute the scale, FMA.
//!
//! Each super-block step also prefetches the matching slice of the *next* row tile: four row
//! streams are more than the hardware prefetchers follow far enough ahead: without it the
//! out-of-cache matrix-vector speed on Zen 5 was about a quarter (AVX2) to a half (AVX-512) of
//! the in-cache speed, with it about the same.
//! `tests/cpu_kquant_speed.rs` measures GB/s and GMAC/s per set.

use super::int8::{Q8Acts, Q8Row, WeightFormat, QKK};
use super::{DotRowsFn, GemmFn, KernelSet};

/// Format tags for the const-generic kernels.
const Q4K: u8 = 0;
const Q5K: u8 = 1;
const Q6K: u8 = 2;

/// The matrix-vector kernel of `k` for `f`, if this file has one.
pub fn dot_rows_fn(k: KernelSet, f: WeightFormat) -> Option<DotRowsFn> {
    let g: DotRowsFn = match (k, f) {
        (KernelSet::Avx512, WeightFormat::Q4K) => avx512::dot_rows::<Q4K, 144>,
        (KernelSet::Avx512, WeightFormat::Q5K) => avx512::dot_rows::<Q5K, 176>,
        (KernelSet::Avx512, WeightFormat::Q6K) => avx512::dot_rows::<Q6K, 210>,
        (KernelSet::Avx2, WeightFormat::Q4K) => avx2::dot_rows::<Q4K, 144>,
        (KernelSet::Avx2, WeightFormat::Q5K) => avx2::dot_rows::<Q5K, 176>,
        (KernelSet::Avx2, WeightFormat::Q6K) => avx2::dot_rows::<Q6K, 210>,
        _ => return None,
    };
    Some(g)
}

/// The matrix-matrix kernel of `k` for `f`, if this file has one.
pub fn gemm_fn(k: KernelSet, f: WeightFormat) -> Option<GemmFn> {
    let g: GemmFn = match (k, f) {
        (KernelSet::Avx512, WeightFormat::Q4K) => avx512::gemm::<Q4K, 144>,
        (KernelSet::Avx512, WeightFormat::Q5K) => avx512::gemm::<Q5K, 176>,
        (KernelSet::Avx512, WeightFormat::Q6K) => avx512::gemm::<Q6K, 210>,
        (KernelSet::Avx2, WeightFormat::Q4K) => avx2::gemm::<Q4K, 144>,
        (KernelSet::Avx2, WeightFormat::Q5K) => avx2::gemm::<Q5K, 176>,
        (KernelSet::Avx2, WeightFormat::Q6K) => avx2::gemm::<Q6K, 210>,
        _ => return None,
    };
    Some(g)
}

/// Q4_K/Q5_K's eight 6-bit scales and eight 6-bit minimums, one per byte (sub-block 0 lowest),
/// from their 12 packed bytes: the layout of `int8::scale_min_k4`, done on 32-bit words.
#[inline(always)]
fn k4_scales_mins(s: &[u8]) -> (u64, u64) {
    let a = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    let b = u32::from_le_bytes([s[4], s[5], s[6], s[7]]);
    let c = u32::from_le_bytes([s[8], s[9], s[10], s[11]]);
    let sc_hi = (c & 0x0F0F_0F0F) | (((a >> 6) & 0x0303_0303) << 4);
    let m_hi = ((c >> 4) & 0x0F0F_0F0F) | (((b >> 6) & 0x0303_0303) << 4);
    let sc = (a & 0x3F3F_3F3F) as u64 | ((sc_hi as u64) << 32);
    let m = (b & 0x3F3F_3F3F) as u64 | ((m_hi as u64) << 32);
    (sc, m)
}

/// Weight rows `r0..r0 + R` of `row_bytes` bytes each.
#[inline(always)]
fn rows_at<const R: usize>(w: &[u8], row_bytes: usize, r0: usize) -> [&[u8]; R] {
    core::array::from_fn(|i| &w[(r0 + i) * row_bytes..(r0 + i + 1) * row_bytes])
}

/// Requests the cache lines of `ahead[from..from + len]` (clipped to `ahead`): the matrix-vector
/// kernels fetch the next tile's rows while they compute on this one, one super-block column per
/// step, since the hardware prefetchers follow a few row streams only so far ahead.
#[inline(always)]
fn prefetch(ahead: &[u8], from: usize, len: usize) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    let end = (from + len).min(ahead.len());
    let mut at = from;
    while at < end {
        // SAFETY: a prefetch is only a hint and never faults; `at < ahead.len()`, so the pointer
        // stays inside `ahead` and is never dereferenced.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.as_ptr().wrapping_add(at).cast()) };
        at += 64;
    }
}

/// The bytes of the `R` rows after rows `r0..r0 + R` (empty past the end of `w`).
#[inline(always)]
fn next_rows<const R: usize>(w: &[u8], row_bytes: usize, r0: usize) -> &[u8] {
    let from = ((r0 + R) * row_bytes).min(w.len());
    let to = ((r0 + 2 * R) * row_bytes).min(w.len());
    &w[from..to]
}

/// The row-tiling drivers shared by both sets, expanded inside each set's module so that they
/// call that module's `tile` and carry its `target_feature` list: `dot_rows` (4-row tiles, then
/// single rows) and `gemm` (`$gr`-row x 4-token tiles with narrower edges).
macro_rules! tile_drivers {
    ($feat:literal, $gr:literal) => {
        /// Matrix-vector kernel (`DotRowsFn`) for format `FMT` with `BB`-byte blocks.
        ///
        /// # Safety
        /// The CPU must have the features named in `target_feature`; lengths as `DotRowsFn` says.
        #[target_feature(enable = $feat)]
        pub unsafe fn dot_rows<const FMT: u8, const BB: usize>(
            w: &[u8],
            row_bytes: usize,
            x: &Q8Row,
            out: &mut [f32],
        ) {
            let xs = [*x];
            let n = out.len();
            let mut r = 0;
            while r + 4 <= n {
                let v = tile::<FMT, BB, 4, 1>(
                    &rows_at::<4>(w, row_bytes, r),
                    super::next_rows::<4>(w, row_bytes, r),
                    &xs,
                );
                for i in 0..4 {
                    out[r + i] = v[i][0];
                }
                r += 4;
            }
            while r < n {
                out[r] = tile::<FMT, BB, 1, 1>(
                    &rows_at::<1>(w, row_bytes, r),
                    super::next_rows::<1>(w, row_bytes, r),
                    &xs,
                )[0][0];
                r += 1;
            }
        }

        /// One `R` × `T` tile of the matrix product, stored at `out[(t0 + t) * ldo + r0 + r]`.
        #[inline]
        #[target_feature(enable = $feat)]
        #[allow(clippy::too_many_arguments)]
        fn run<const FMT: u8, const BB: usize, const R: usize, const T: usize>(
            w: &[u8],
            row_bytes: usize,
            r0: usize,
            xs: &Q8Acts,
            t0: usize,
            out: &mut [f32],
            ldo: usize,
        ) {
            let x: [Q8Row; T] = core::array::from_fn(|t| xs.row(t0 + t));
            // The first token tile of a row group fetches the next group's rows; later ones find
            // this group's rows in L1 already.
            let ahead = if t0 == 0 {
                super::next_rows::<R>(w, row_bytes, r0)
            } else {
                &[]
            };
            let v = tile::<FMT, BB, R, T>(&rows_at::<R>(w, row_bytes, r0), ahead, &x);
            for (r, vr) in v.iter().enumerate() {
                for (t, &e) in vr.iter().enumerate() {
                    out[(t0 + t) * ldo + r0 + r] = e;
                }
            }
        }

        /// Matrix-matrix kernel (`GemmFn`) for format `FMT` with `BB`-byte blocks: `$gr` × 4 tiles
        /// (4 on AVX-512, 2 in AVX2's 16 registers), rows outermost so that a tile's weights stay in
        /// L1 while the tokens stream past.
        ///
        /// # Safety
        /// As [`dot_rows`]; lengths as `GemmFn` says.
        #[target_feature(enable = $feat)]
        pub unsafe fn gemm<const FMT: u8, const BB: usize>(
            w: &[u8],
            row_bytes: usize,
            n_rows: usize,
            xs: &Q8Acts,
            out: &mut [f32],
            ldo: usize,
        ) {
            let mut r = 0;
            while r < n_rows {
                let full = n_rows - r >= $gr;
                let mut t = 0;
                while t < xs.rows {
                    match (full, xs.rows - t >= 4) {
                        (true, true) => run::<FMT, BB, $gr, 4>(w, row_bytes, r, xs, t, out, ldo),
                        (true, false) => run::<FMT, BB, $gr, 1>(w, row_bytes, r, xs, t, out, ldo),
                        (false, true) => run::<FMT, BB, 1, 4>(w, row_bytes, r, xs, t, out, ldo),
                        (false, false) => run::<FMT, BB, 1, 1>(w, row_bytes, r, xs, t, out, ldo),
                    }
                    t += if xs.rows - t >= 4 { 4 } else { 1 };
                }
                r += if full { $gr } else { 1 };
            }
        }
    };
}

/// AVX-512 (F, BW, VL, VNNI) kernels: 64 weights (two Q4_K sub-blocks, four Q6_K groups) per
/// `vpdpbusd`.
// The AVX-512 intrinsics are stable since Rust 1.89 (safe `#[target_feature]` functions since
// 1.86), above the crate's declared `rust-version` of 1.80: this file needs 1.89.
#[clippy::msrv = "1.89"]
mod avx512 {
    use super::{rows_at, Q8Acts, Q8Row, Q5K, Q6K, QKK};
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn ld512(s: &[u8]) -> __m512i {
        assert!(s.len() >= 64);
        // SAFETY: 64 readable bytes (asserted); unaligned loads are allowed.
        unsafe { _mm512_loadu_si512(s.as_ptr().cast()) }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn ld512_i8(s: &[i8]) -> __m512i {
        assert!(s.len() >= 64);
        // SAFETY: 64 readable bytes (asserted); unaligned loads are allowed.
        unsafe { _mm512_loadu_si512(s.as_ptr().cast()) }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn ld256_i8(s: &[i8]) -> __m256i {
        assert!(s.len() >= 32);
        // SAFETY: 32 readable bytes (asserted); unaligned loads are allowed.
        unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn ld256(s: &[u8]) -> __m256i {
        assert!(s.len() >= 32);
        // SAFETY: 32 readable bytes (asserted); unaligned loads are allowed.
        unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn ld128(s: &[u8]) -> __m128i {
        assert!(s.len() >= 16);
        // SAFETY: 16 readable bytes (asserted); unaligned loads are allowed.
        unsafe { _mm_loadu_si128(s.as_ptr().cast()) }
    }

    /// The 8 activation block scales of a super-block, in the low half of a 512-bit vector.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn ld_dx(s: &[f32]) -> __m512 {
        assert!(s.len() >= 8);
        // SAFETY: 8 readable floats (asserted); unaligned loads are allowed.
        _mm512_castps256_ps512(unsafe { _mm256_loadu_ps(s.as_ptr()) })
    }

    /// The 16 activation 16-sums of a super-block, as floats.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn ld_bsums(s: &[i16]) -> __m512 {
        assert!(s.len() >= 16);
        // SAFETY: 16 readable i16 (asserted); unaligned loads are allowed.
        let v = unsafe { _mm256_loadu_si256(s.as_ptr().cast()) };
        _mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(v))
    }

    /// Lane indices `base + lane / div` for a permute.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn lane_idx(base: i32, shift: u32) -> __m512i {
        let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        _mm512_add_epi32(
            _mm512_set1_epi32(base),
            _mm512_srlv_epi32(lane, _mm512_set1_epi32(shift as i32)),
        )
    }

    /// The per-row scale vector of a super-block: lanes 0-7 `d * sc`, lanes 8-15 `dmin * m`
    /// (Q4_K/Q5_K), or the 16 group scales `d * sc` (Q6_K).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn decode<const FMT: u8>(blk: &[u8]) -> __m512 {
        if FMT == Q6K {
            let dbits = u16::from_le_bytes([blk[208], blk[209]]);
            let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(dbits as i32)));
            let sc = _mm512_cvtepi8_epi32(ld128(&blk[192..208]));
            _mm512_mul_ps(_mm512_cvtepi32_ps(sc), _mm512_set1_ps(d))
        } else {
            let (sc, m) = super::k4_scales_mins(&blk[4..16]);
            let v = _mm512_cvtepu8_epi32(_mm_set_epi64x(m as i64, sc as i64));
            let dbits = u32::from_le_bytes([blk[0], blk[1], blk[2], blk[3]]);
            let dd = _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi32_si128(dbits as i32)));
            let ddv = _mm512_permutexvar_ps(lane_idx(0, 3), dd);
            _mm512_mul_ps(_mm512_cvtepi32_ps(v), ddv)
        }
    }

    /// Weights `64 j .. 64 j + 64` of a super-block as unsigned bytes in activation order.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn unpack<const FMT: u8>(blk: &[u8], j: usize) -> __m512i {
        let m4 = _mm512_set1_epi8(0x0F);
        if FMT == Q6K {
            // Elements 128 h.. use ql[64 h..64 h + 64] (low nibbles for the first 64, high for the
            // next) and qh[32 h..32 h + 32] (bit pairs 0, 1, 2, 3 for the four 32-runs).
            let h = j / 2;
            let ql = ld512(&blk[64 * h..64 * h + 64]);
            let qh = ld256(&blk[128 + 32 * h..160 + 32 * h]);
            let qhz =
                _mm512_inserti64x4::<1>(_mm512_castsi256_si512(qh), _mm256_srli_epi16::<2>(qh));
            let m30 = _mm512_set1_epi8(0x30);
            if j.is_multiple_of(2) {
                let lo = _mm512_and_si512(ql, m4);
                _mm512_or_si512(lo, _mm512_and_si512(_mm512_slli_epi16::<4>(qhz), m30))
            } else {
                let lo = _mm512_and_si512(_mm512_srli_epi16::<4>(ql), m4);
                _mm512_or_si512(lo, _mm512_and_si512(qhz, m30))
            }
        } else {
            // qs[64 h..64 h + 64] holds sub-blocks 4 h, 4 h + 2 in its low nibbles and 4 h + 1,
            // 4 h + 3 in its high ones: one load and two operations per 64 weights, with the
            // activations loaded in the same order (`chunk_subs`).
            let off = if FMT == Q5K { 48 } else { 16 };
            let h = j / 2;
            let q = ld512(&blk[off + 64 * h..off + 64 * h + 64]);
            let z = if j.is_multiple_of(2) {
                _mm512_and_si512(q, m4)
            } else {
                _mm512_and_si512(_mm512_srli_epi16::<4>(q), m4)
            };
            if FMT == Q5K {
                // Fifth bit of element l of sub-block s is bit s of qh[l].
                let (a, b) = chunk_subs::<FMT>(j);
                let hz = _mm512_broadcast_i64x4(ld256(&blk[16..48]));
                let b0 = _mm256_set1_epi8((1u8 << a) as i8);
                let b1 = _mm256_set1_epi8((1u8 << b) as i8);
                let k = _mm512_test_epi8_mask(
                    hz,
                    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(b0), b1),
                );
                _mm512_mask_add_epi8(z, k, z, _mm512_set1_epi8(16))
            } else {
                z
            }
        }
    }

    /// The two 32-weight sub-blocks (activation blocks) in the low and high half of chunk `j`.
    #[inline(always)]
    fn chunk_subs<const FMT: u8>(j: usize) -> (usize, usize) {
        if FMT == Q6K {
            (2 * j, 2 * j + 1)
        } else {
            (4 * (j / 2) + j % 2, 4 * (j / 2) + j % 2 + 2)
        }
    }

    /// Permute indices `a` in lanes 0-7, `b` in lanes 8-15.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn pair_idx(a: usize, b: usize) -> __m512i {
        _mm512_mask_blend_epi32(
            0xFF00,
            _mm512_set1_epi32(a as i32),
            _mm512_set1_epi32(b as i32),
        )
    }

    /// The activation quants of sub-blocks `a` and `b` of the super-block at `qs[0..256]`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn ld_x(qs: &[i8], a: usize, b: usize) -> __m512i {
        if b == a + 1 {
            ld512_i8(&qs[32 * a..32 * a + 64])
        } else {
            let lo = ld256_i8(&qs[32 * a..32 * a + 32]);
            _mm512_inserti64x4::<1>(
                _mm512_castsi256_si512(lo),
                ld256_i8(&qs[32 * b..32 * b + 32]),
            )
        }
    }

    /// Dot products of `R` weight rows with `T` activation rows: `[r][t]`, prefetching `ahead`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn tile<const FMT: u8, const BB: usize, const R: usize, const T: usize>(
        rows: &[&[u8]; R],
        ahead: &[u8],
        xs: &[Q8Row; T],
    ) -> [[f32; T]; R] {
        let nsb = xs[0].qs.len() / QKK;
        let mut acc = [[_mm512_setzero_ps(); T]; R];
        // Lane l of chunk j belongs to sub-block `chunk_subs(j)[l / 8]` (32 weights, one
        // activation block) and to Q6_K group 4 j + l / 4; correction lane g (16 weights) to
        // sub-block g / 2.
        let sub_idx: [__m512i; 4] = core::array::from_fn(|j| {
            let (a, b) = chunk_subs::<FMT>(j);
            pair_idx(a, b)
        });
        let grp_idx = [
            lane_idx(0, 2),
            lane_idx(4, 2),
            lane_idx(8, 2),
            lane_idx(12, 2),
        ];
        let half_idx = lane_idx(0, 1);
        let min_idx = lane_idx(8, 1);
        for k in 0..nsb {
            super::prefetch(ahead, k * R * BB, R * BB);
            let mut blks: [&[u8]; R] = [&[]; R];
            for r in 0..R {
                blks[r] = &rows[r][k * BB..k * BB + BB];
            }
            let mut p = [_mm512_setzero_ps(); R];
            let mut cw = [_mm512_setzero_ps(); R];
            for r in 0..R {
                p[r] = decode::<FMT>(blks[r]);
                cw[r] = if FMT == Q6K {
                    p[r]
                } else {
                    _mm512_permutexvar_ps(min_idx, p[r])
                };
            }
            // With one token, each row's group scales are multiplied by the token's block
            // scales once per super-block (`pd`) and then only permuted per chunk; with several,
            // weight and token scales are permuted separately and multiplied per pair.
            let mut pd = [_mm512_setzero_ps(); R];
            for t in 0..T {
                let dx = ld_dx(&xs[t].d[8 * k..8 * k + 8]);
                let dx_pairs = _mm512_permutexvar_ps(half_idx, dx);
                let mut cx = _mm512_mul_ps(ld_bsums(&xs[t].bsums[16 * k..16 * k + 16]), dx_pairs);
                if FMT == Q6K {
                    cx = _mm512_mul_ps(cx, _mm512_set1_ps(32.0));
                }
                for r in 0..R {
                    acc[r][t] = _mm512_fnmadd_ps(cw[r], cx, acc[r][t]);
                    if T == 1 {
                        pd[r] = _mm512_mul_ps(p[r], if FMT == Q6K { dx_pairs } else { dx });
                    }
                }
            }
            for j in 0..4 {
                let w_idx = if FMT == Q6K { grp_idx[j] } else { sub_idx[j] };
                let mut w = [_mm512_setzero_si512(); R];
                let mut ws = [_mm512_setzero_ps(); R];
                for r in 0..R {
                    w[r] = unpack::<FMT>(blks[r], j);
                    ws[r] = _mm512_permutexvar_ps(w_idx, if T == 1 { pd[r] } else { p[r] });
                }
                for t in 0..T {
                    let (a, b) = chunk_subs::<FMT>(j);
                    let xq = ld_x(&xs[t].qs[k * QKK..k * QKK + QKK], a, b);
                    let xsc = if T == 1 {
                        _mm512_set1_ps(1.0)
                    } else {
                        _mm512_permutexvar_ps(sub_idx[j], ld_dx(&xs[t].d[8 * k..8 * k + 8]))
                    };
                    for r in 0..R {
                        let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[r], xq);
                        let scale = if T == 1 {
                            ws[r]
                        } else {
                            _mm512_mul_ps(ws[r], xsc)
                        };
                        acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc[r][t]);
                    }
                }
            }
        }
        let mut out = [[0f32; T]; R];
        for r in 0..R {
            for t in 0..T {
                out[r][t] = _mm512_reduce_add_ps(acc[r][t]);
            }
        }
        out
    }

    tile_drivers!("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c", 4);
}

/// AVX2 (+ FMA, F16C) kernels without VNNI: `vpmaddubsw` then `vpmaddwd` per 32 weights.
/// Overflow-free: a `vpmaddubsw` pair sum is at most 2 * 63 * 127 < 2^15 (Q6_K's largest `q`).
#[clippy::msrv = "1.89"]
mod avx2 {
    use super::{rows_at, Q8Acts, Q8Row, Q5K, Q6K, QKK};
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn ld256(s: &[u8]) -> __m256i {
        assert!(s.len() >= 32);
        // SAFETY: 32 readable bytes (asserted); unaligned loads are allowed.
        unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn ld256_i8(s: &[i8]) -> __m256i {
        assert!(s.len() >= 32);
        // SAFETY: 32 readable bytes (asserted); unaligned loads are allowed.
        unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn ld128(s: &[u8]) -> __m128i {
        assert!(s.len() >= 16);
        // SAFETY: 16 readable bytes (asserted); unaligned loads are allowed.
        unsafe { _mm_loadu_si128(s.as_ptr().cast()) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn ld8f(s: &[f32]) -> __m256 {
        assert!(s.len() >= 8);
        // SAFETY: 8 readable floats (asserted); unaligned loads are allowed.
        unsafe { _mm256_loadu_ps(s.as_ptr()) }
    }

    /// The per-row scale vectors of a super-block: (`d * sc`, `dmin * m`) for Q4_K/Q5_K, the 16
    /// group scales `d * sc` in two halves for Q6_K.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn decode<const FMT: u8>(blk: &[u8]) -> (__m256, __m256) {
        if FMT == Q6K {
            let dbits = u16::from_le_bytes([blk[208], blk[209]]);
            let d = _mm256_set1_ps(_mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(dbits as i32))));
            let sc = ld128(&blk[192..208]);
            let lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc));
            let hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128::<8>(sc)));
            (_mm256_mul_ps(lo, d), _mm256_mul_ps(hi, d))
        } else {
            let (sc, m) = super::k4_scales_mins(&blk[4..16]);
            let v = _mm_set_epi64x(m as i64, sc as i64);
            let dbits = u32::from_le_bytes([blk[0], blk[1], blk[2], blk[3]]);
            let dd = _mm_cvtph_ps(_mm_cvtsi32_si128(dbits as i32));
            let d = _mm256_broadcastss_ps(dd);
            let dmin = _mm256_broadcastss_ps(_mm_movehdup_ps(dd));
            let scf = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
            let mf = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128::<8>(v)));
            (_mm256_mul_ps(scf, d), _mm256_mul_ps(mf, dmin))
        }
    }

    /// Weights `32 s .. 32 s + 32` of a super-block (sub-block / activation block `s`) as
    /// unsigned bytes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn unpack<const FMT: u8>(blk: &[u8], s: usize) -> __m256i {
        let m4 = _mm256_set1_epi8(0x0F);
        if FMT == Q6K {
            // Run `part` of half `h`: low nibbles of ql[64 h + 32 (part % 2)..] (high nibbles for
            // parts 2, 3), high bits are bit pair `part` of qh[32 h..].
            let (h, part) = (s / 4, s % 4);
            let at = 64 * h + 32 * (part % 2);
            let ql = ld256(&blk[at..at + 32]);
            let lo = _mm256_and_si256(
                _mm256_srl_epi16(ql, _mm_cvtsi32_si128(4 * (part / 2) as i32)),
                m4,
            );
            let qh = ld256(&blk[128 + 32 * h..160 + 32 * h]);
            // Move bit pair `part` to bits 4-5 of each byte without shifting any out of a 16-bit lane.
            let hi = if part < 2 {
                _mm256_srl_epi16(
                    _mm256_slli_epi16::<4>(qh),
                    _mm_cvtsi32_si128(2 * part as i32),
                )
            } else {
                _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * part as i32 - 4))
            };
            _mm256_or_si256(lo, _mm256_and_si256(hi, _mm256_set1_epi8(0x30)))
        } else {
            let off = if FMT == Q5K { 48 } else { 16 };
            let at = off + 32 * (s / 2);
            let q = ld256(&blk[at..at + 32]);
            let lo = _mm256_and_si256(
                _mm256_srl_epi16(q, _mm_cvtsi32_si128(4 * (s % 2) as i32)),
                m4,
            );
            if FMT == Q5K {
                let bit = _mm256_set1_epi8((1u8 << s) as i8);
                let set = _mm256_cmpeq_epi8(_mm256_and_si256(ld256(&blk[16..48]), bit), bit);
                _mm256_or_si256(lo, _mm256_and_si256(set, _mm256_set1_epi8(16)))
            } else {
                lo
            }
        }
    }

    /// Dot products of `R` weight rows with `T` activation rows: `[r][t]`, prefetching `ahead`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn tile<const FMT: u8, const BB: usize, const R: usize, const T: usize>(
        rows: &[&[u8]; R],
        ahead: &[u8],
        xs: &[Q8Row; T],
    ) -> [[f32; T]; R] {
        let nsb = xs[0].qs.len() / QKK;
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_ps(); T]; R];
        // Correction lane g (16 weights) belongs to activation block g / 2.
        let pairs_lo = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
        let pairs_hi = _mm256_setr_epi32(4, 4, 5, 5, 6, 6, 7, 7);
        for k in 0..nsb {
            super::prefetch(ahead, k * R * BB, R * BB);
            let mut blks: [&[u8]; R] = [&[]; R];
            for r in 0..R {
                blks[r] = &rows[r][k * BB..k * BB + BB];
            }
            let mut p = [(_mm256_setzero_ps(), _mm256_setzero_ps()); R];
            for r in 0..R {
                p[r] = decode::<FMT>(blks[r]);
            }
            for t in 0..T {
                let dx = ld8f(&xs[t].d[8 * k..8 * k + 8]);
                let bs = &xs[t].bsums[16 * k..16 * k + 16];
                // SAFETY: `bs` holds 16 i16 = 32 bytes; unaligned loads are allowed.
                let bsv = unsafe { _mm256_loadu_si256(bs.as_ptr().cast()) };
                let bs_lo = _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_castsi256_si128(bsv)));
                let bs_hi =
                    _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_extracti128_si256::<1>(bsv)));
                let dx_lo = _mm256_permutevar8x32_ps(dx, pairs_lo);
                let dx_hi = _mm256_permutevar8x32_ps(dx, pairs_hi);
                let mut cx_lo = _mm256_mul_ps(bs_lo, dx_lo);
                let mut cx_hi = _mm256_mul_ps(bs_hi, dx_hi);
                if FMT == Q6K {
                    cx_lo = _mm256_mul_ps(cx_lo, _mm256_set1_ps(32.0));
                    cx_hi = _mm256_mul_ps(cx_hi, _mm256_set1_ps(32.0));
                }
                for r in 0..R {
                    let (cw_lo, cw_hi) = if FMT == Q6K {
                        p[r]
                    } else {
                        (
                            _mm256_permutevar8x32_ps(p[r].1, pairs_lo),
                            _mm256_permutevar8x32_ps(p[r].1, pairs_hi),
                        )
                    };
                    acc[r][t] = _mm256_fnmadd_ps(cw_lo, cx_lo, acc[r][t]);
                    acc[r][t] = _mm256_fnmadd_ps(cw_hi, cx_hi, acc[r][t]);
                    // One token: fold its block scales into the row's scales once (as AVX-512).
                    if T == 1 {
                        p[r] = if FMT == Q6K {
                            (_mm256_mul_ps(p[r].0, dx_lo), _mm256_mul_ps(p[r].1, dx_hi))
                        } else {
                            (_mm256_mul_ps(p[r].0, dx), p[r].1)
                        };
                    }
                }
            }
            for s in 0..8 {
                let mut w = [_mm256_setzero_si256(); R];
                let mut ws = [_mm256_setzero_ps(); R];
                // Q6_K lanes 0-3 are group 2 s, lanes 4-7 group 2 s + 1 (of 16 in p.0, p.1).
                let g = 2 * (s % 4) as i32;
                let grp = _mm256_setr_epi32(g, g, g, g, g + 1, g + 1, g + 1, g + 1);
                for r in 0..R {
                    w[r] = unpack::<FMT>(blks[r], s);
                    ws[r] = if FMT == Q6K {
                        _mm256_permutevar8x32_ps(if s < 4 { p[r].0 } else { p[r].1 }, grp)
                    } else {
                        _mm256_permutevar8x32_ps(p[r].0, _mm256_set1_epi32(s as i32))
                    };
                }
                for t in 0..T {
                    let base = k * QKK + 32 * s;
                    let xq = ld256_i8(&xs[t].qs[base..base + 32]);
                    let xsc = _mm256_set1_ps(xs[t].d[8 * k + s]);
                    for r in 0..R {
                        let dot = _mm256_madd_epi16(_mm256_maddubs_epi16(w[r], xq), ones);
                        let scale = if T == 1 {
                            ws[r]
                        } else {
                            _mm256_mul_ps(ws[r], xsc)
                        };
                        acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc[r][t]);
                    }
                }
            }
        }
        let mut out = [[0f32; T]; R];
        for r in 0..R {
            for t in 0..T {
                let v = acc[r][t];
                let q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
                let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
                let q = _mm_add_ss(q, _mm_movehdup_ps(q));
                out[r][t] = _mm_cvtss_f32(q);
            }
        }
        out
    }

    tile_drivers!("avx2,fma,f16c", 2);
}
