//! AVX-512 VNNI kernels over the row-interleaved layout of [`crate::quant::packed`].
//!
//! A 512-bit register holds four consecutive weights of each of 16 rows, so `vpdpbusd` against
//! four activation bytes broadcast to every lane advances 16 row sums at once; eight such steps
//! finish a 32-weight block, after which one conversion and two multiply-adds apply the block's
//! scales to all 16 rows. Per 512 multiply-accumulates that is 8 integer dots, 8 broadcast loads
//! and 4 float operations, against 16 dots and 16 conversions and multiply-adds for the GGUF row
//! layout (`x86_q32`). Tiles: matrix-vector products take two groups (32 rows) per step, which
//! keeps two independent chains in flight; matrix products take one group against 8 tokens, so each
//! unpacked block serves all of them.

use super::int8::{Q8Acts, Q8Row, WeightFormat, QK8};
use crate::quant::packed::code::{Q4K, Q4_0, Q4_1, Q5_0, Q5_1, Q6K, Q8_0};
use crate::quant::packed::{self, format_of, GROUP_ROWS};
use std::arch::x86_64::*;

/// Tokens per matrix-product tile.
const TOKENS: usize = 8;

/// How far ahead the matrix-vector tile prefetches a group's stream.
pub(super) const PREFETCH_BYTES: usize = 4096;

/// One 32-weight block of 16 rows, ready for the dots: `w[s]` holds weights `4s..4s+4` of every
/// row as unsigned bytes; `d0`/`d1` scale the integer sums of steps 0-3 / 4-7 (equal except for
/// Q6_K's 16-weight scales); `c` is the per-row term multiplied by the activation block's `s`
/// (minimum, or offset times scale; Q6_K subtracts its offset in integers instead).
#[derive(Clone, Copy)]
struct Block {
    w: [__m512i; 8],
    d0: __m512,
    d1: __m512,
    c: __m512,
}

/// Loads 32-weight block `b` (counted over the row) of the packed group at `g` (`cols` columns).
///
/// # Safety
/// `g` must be readable for `packed::group_bytes(F, cols)` bytes and `b < cols / 32`.
#[allow(clippy::incompatible_msrv)] // AVX-512 intrinsics: stable since 1.89
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn load_block<const F: u8>(g: *const u8, cols: usize, b: usize, prefetch: bool) -> Block {
    let f = format_of(F);
    let (qb, sb) = (packed::quant_bytes(f), packed::scale_bytes(f));
    let per_unit = f.block_elems() / QK8;
    let (unit, sub) = (b / per_unit, b % per_unit);
    let low = _mm512_set1_epi8(0x0F);
    let zero = _mm512_setzero_si512();
    let mut w = [zero; 8];
    // SAFETY (block): unit < cols / block_elems: its quant section (qb bytes at unit * qb) and
    // scale section (sb bytes after all quant sections) lie inside the group; every offset below
    // plus its read width stays inside those sections (layout in `crate::quant::packed`). Loads
    // are unaligned; prefetches never fault.
    unsafe {
        let q = g.add(unit * qb);
        let sc = g.add(cols / f.block_elems() * qb + unit * sb);
        if prefetch {
            let mut off = 0;
            while off < qb / per_unit {
                _mm_prefetch::<_MM_HINT_T0>(q.wrapping_add(PREFETCH_BYTES + sub * (qb / per_unit) + off) as *const i8);
                off += 64;
            }
        }
        match F {
            Q8_0 => {
                for (s, ws) in w.iter_mut().enumerate() {
                    *ws = _mm512_loadu_si512(q.add(64 * s) as *const __m512i);
                }
            }
            Q4K => {
                let chunks = q.add(512 * (sub / 2));
                for (s, ws) in w.iter_mut().enumerate() {
                    let v = _mm512_loadu_si512(chunks.add(64 * s) as *const __m512i);
                    *ws = if sub % 2 == 0 {
                        _mm512_and_si512(v, low)
                    } else {
                        _mm512_and_si512(_mm512_srli_epi16::<4>(v), low)
                    };
                }
            }
            _ => {
                let q = if F == Q6K { q.add(384 * sub) } else { q };
                for m in 0..4 {
                    let v = _mm512_loadu_si512(q.add(64 * m) as *const __m512i);
                    w[m] = _mm512_and_si512(v, low);
                    w[m + 4] = _mm512_and_si512(_mm512_srli_epi16::<4>(v), low);
                }
                if F == Q5_0 || F == Q5_1 {
                    let fifth = _mm512_set1_epi8(0x10);
                    for (s, ws) in w.iter_mut().enumerate() {
                        let k = (q.add(256 + 8 * s) as *const u64).read_unaligned();
                        *ws = _mm512_mask_add_epi8(*ws, k, *ws, fifth);
                    }
                }
                if F == Q6K {
                    // Bits 4-5: the two high bits of step 4h+k sit at bits 2k of chunk h; shift
                    // them to 4-5 and merge (ternary logic: w | (v & 0x30)).
                    let top = _mm512_set1_epi8(0x30);
                    for h in 0..2 {
                        let v = _mm512_loadu_si512(q.add(256 + 64 * h) as *const __m512i);
                        let parts = [
                            _mm512_slli_epi16::<4>(v),
                            _mm512_slli_epi16::<2>(v),
                            v,
                            _mm512_srli_epi16::<2>(v),
                        ];
                        for (k, p) in parts.iter().enumerate() {
                            w[4 * h + k] = _mm512_ternarylogic_epi32::<0xF8>(w[4 * h + k], *p, top);
                        }
                    }
                }
            }
        }
        let d = _mm512_cvtph_ps(_mm256_loadu_si256(sc as *const __m256i));
        match F {
            Q4K => {
                let dmin = _mm512_cvtph_ps(_mm256_loadu_si256(sc.add(32) as *const __m256i));
                let s = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(
                    sc.add(64 + 16 * sub) as *const __m128i,
                )));
                let m = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(
                    sc.add(192 + 16 * sub) as *const __m128i,
                )));
                let ds = _mm512_mul_ps(d, s);
                Block {
                    w,
                    d0: ds,
                    d1: ds,
                    c: _mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(dmin, m)),
                }
            }
            Q6K => {
                let s0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
                    sc.add(32 + 16 * (2 * sub)) as *const __m128i,
                )));
                let s1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
                    sc.add(32 + 16 * (2 * sub + 1)) as *const __m128i,
                )));
                Block {
                    w,
                    d0: _mm512_mul_ps(d, s0),
                    d1: _mm512_mul_ps(d, s1),
                    c: _mm512_setzero_ps(),
                }
            }
            Q4_1 | Q5_1 => Block {
                w,
                d0: d,
                d1: d,
                c: _mm512_cvtph_ps(_mm256_loadu_si256(sc.add(32) as *const __m256i)),
            },
            _ => Block {
                w,
                d0: d,
                d1: d,
                c: _mm512_mul_ps(d, _mm512_set1_ps(-packed::offset(f))),
            },
        }
    }
}

/// Dots of `G` consecutive packed groups (from `g0`, `gb` bytes apart, `cols` columns each) with
/// `T` activation rows: `result[g][t]` holds the 16 rows of group `g` against token `t`.
///
/// # Safety
/// `g0` must be readable for `G * gb` bytes with `gb >= packed::group_bytes(F, cols)`, and every
/// `x[t]` must hold `cols` values (`qs`, `d`, `s`, `bsums` sized accordingly).
#[allow(clippy::incompatible_msrv)] // AVX-512 intrinsics: stable since 1.89
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile<const F: u8, const G: usize, const T: usize>(
    g0: *const u8,
    gb: usize,
    cols: usize,
    x: &[Q8Row; T],
    prefetch: bool,
) -> [[__m512; T]; G] {
    let zero = _mm512_setzero_si512();
    let mut acc = [[_mm512_setzero_ps(); T]; G];
    for b in 0..cols / QK8 {
        // Plain loops, not `array::from_fn`: a closure does not inherit `target_feature`, so the
        // loads would not inline (measured: 30% slower decode).
        let empty = Block {
            w: [zero; 8],
            d0: _mm512_setzero_ps(),
            d1: _mm512_setzero_ps(),
            c: _mm512_setzero_ps(),
        };
        let mut blocks = [empty; G];
        for (g, blk) in blocks.iter_mut().enumerate() {
            // SAFETY: group g < G lies at g0 + g * gb; b < cols / 32.
            *blk = unsafe { load_block::<F>(g0.add(g * gb), cols, b, prefetch) };
        }
        for t in 0..T {
            let mut xb = [zero; 8];
            for (s, v) in xb.iter_mut().enumerate() {
                // SAFETY: block b < cols / 32 of token t's quants: 32 bytes at b * 32, read as 8 i32.
                *v = _mm512_set1_epi32(unsafe {
                    (x[t].qs.as_ptr().add(b * QK8 + 4 * s) as *const i32).read_unaligned()
                });
            }
            let da = _mm512_set1_ps(x[t].d[b]);
            for (g, blk) in blocks.iter().enumerate() {
                let mut lo = _mm512_dpbusd_epi32(zero, blk.w[0], xb[0]);
                let mut hi = _mm512_dpbusd_epi32(zero, blk.w[4], xb[4]);
                for s in 1..4 {
                    lo = _mm512_dpbusd_epi32(lo, blk.w[s], xb[s]);
                    hi = _mm512_dpbusd_epi32(hi, blk.w[s + 4], xb[s + 4]);
                }
                if F == Q6K {
                    // Offset 32 per weight, out of each 16-weight half in integers.
                    lo = _mm512_sub_epi32(lo, _mm512_set1_epi32(32 * x[t].bsums[2 * b] as i32));
                    hi = _mm512_sub_epi32(hi, _mm512_set1_epi32(32 * x[t].bsums[2 * b + 1] as i32));
                    acc[g][t] = _mm512_fmadd_ps(
                        _mm512_cvtepi32_ps(lo),
                        _mm512_mul_ps(blk.d0, da),
                        acc[g][t],
                    );
                    acc[g][t] = _mm512_fmadd_ps(
                        _mm512_cvtepi32_ps(hi),
                        _mm512_mul_ps(blk.d1, da),
                        acc[g][t],
                    );
                } else {
                    let sum = _mm512_cvtepi32_ps(_mm512_add_epi32(lo, hi));
                    acc[g][t] = _mm512_fmadd_ps(sum, _mm512_mul_ps(blk.d0, da), acc[g][t]);
                    acc[g][t] = _mm512_fmadd_ps(blk.c, _mm512_set1_ps(x[t].s[b]), acc[g][t]);
                }
            }
        }
    }
    acc
}

/// Writes the first `n` of 16 row results to `out`.
#[allow(clippy::incompatible_msrv)]
#[target_feature(enable = "avx512f")]
#[inline]
fn store_rows(v: __m512, out: &mut [f32]) {
    let mut tmp = [0f32; GROUP_ROWS];
    // SAFETY: `tmp` holds 16 floats.
    unsafe { _mm512_storeu_ps(tmp.as_mut_ptr(), v) };
    let n = out.len().min(GROUP_ROWS);
    out[..n].copy_from_slice(&tmp[..n]);
}

/// Group `g`'s `T`-token tile from token `t0`, stored into `out`.
///
/// # Safety
/// As [`tile`] for one group at `groups[g * gb..]`, with tokens `t0..t0 + T` of `xs`.
#[allow(clippy::incompatible_msrv, clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn gemm_tokens<const F: u8, const T: usize>(
    groups: &[u8],
    gb: usize,
    g: usize,
    n_rows: usize,
    xs: &Q8Acts,
    t0: usize,
    out: &mut [f32],
    ldo: usize,
) {
    let x: [Q8Row; T] = std::array::from_fn(|i| xs.row(t0 + i));
    // SAFETY: the caller guarantees group g and tokens t0..t0+T.
    // A few tokens (a decode batch) stream each weight once, as matrix-vector does: prefetch.
    let prefetch = xs.rows <= TOKENS;
    let res = unsafe { tile::<F, 1, T>(groups.as_ptr().add(g * gb), gb, xs.cols, &x, prefetch) };
    let (r0, r1) = (g * GROUP_ROWS, n_rows.min((g + 1) * GROUP_ROWS));
    for (i, v) in res[0].iter().enumerate() {
        let o = (t0 + i) * ldo;
        store_rows(*v, &mut out[o + r0..o + r1]);
    }
}

/// Packed matrix product ([`super::PackedGemmFn`]) for format `F`: `out[t * ldo + r]` for the
/// `n_rows` rows held by `groups` and every token of `xs`.
///
/// # Safety
/// The CPU must have AVX-512 VNNI; the safe wrapper checks the lengths (checked again here).
#[allow(clippy::incompatible_msrv)]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn gemm<const F: u8>(
    groups: &[u8],
    n_rows: usize,
    xs: &Q8Acts,
    out: &mut [f32],
    ldo: usize,
) {
    let f = format_of(F);
    let cols = xs.cols;
    let gb = packed::group_bytes(f, cols);
    let ng = n_rows.div_ceil(GROUP_ROWS);
    if !packed::gemm_fits(f, groups.len(), n_rows, xs, out.len(), ldo) {
        return packed::gemm_reference(f, groups, n_rows, xs, out, ldo);
    }
    if xs.rows == 1 {
        let x = [xs.row(0)];
        let mut g = 0;
        while g < ng {
            let (r0, r1) = (g * GROUP_ROWS, n_rows.min((g + 2) * GROUP_ROWS));
            if ng - g >= 2 {
                // SAFETY: groups g, g+1 < ng lie inside `groups` (checked above).
                let res = unsafe { tile::<F, 2, 1>(groups.as_ptr().add(g * gb), gb, cols, &x, true) };
                store_rows(res[0][0], &mut out[r0..r0 + GROUP_ROWS]);
                store_rows(res[1][0], &mut out[r0 + GROUP_ROWS..r1]);
                g += 2;
            } else {
                // SAFETY: group g < ng.
                let res = unsafe { tile::<F, 1, 1>(groups.as_ptr().add(g * gb), gb, cols, &x, true) };
                store_rows(res[0][0], &mut out[r0..r1]);
                g += 1;
            }
        }
        return;
    }
    for g in 0..ng {
        let mut t = 0;
        // SAFETY (all calls): group g < ng and tokens t..t+T < xs.rows, checked above.
        unsafe {
            while xs.rows - t >= TOKENS {
                gemm_tokens::<F, TOKENS>(groups, gb, g, n_rows, xs, t, out, ldo);
                t += TOKENS;
            }
            if xs.rows - t >= 4 {
                gemm_tokens::<F, 4>(groups, gb, g, n_rows, xs, t, out, ldo);
                t += 4;
            }
            if xs.rows - t >= 2 {
                gemm_tokens::<F, 2>(groups, gb, g, n_rows, xs, t, out, ldo);
                t += 2;
            }
            if xs.rows - t >= 1 {
                gemm_tokens::<F, 1>(groups, gb, g, n_rows, xs, t, out, ldo);
            }
        }
    }
}

/// The packed matrix-product kernel for `f`, if it has a packed layout.
pub fn gemm_fn(f: WeightFormat) -> Option<super::PackedGemmFn> {
    Some(match f {
        WeightFormat::Q4_0 => gemm::<Q4_0>,
        WeightFormat::Q4_1 => gemm::<Q4_1>,
        WeightFormat::Q5_0 => gemm::<Q5_0>,
        WeightFormat::Q5_1 => gemm::<Q5_1>,
        WeightFormat::Q8_0 => gemm::<Q8_0>,
        WeightFormat::Q4K => gemm::<Q4K>,
        WeightFormat::Q6K => gemm::<Q6K>,
        _ => return None,
    })
}
