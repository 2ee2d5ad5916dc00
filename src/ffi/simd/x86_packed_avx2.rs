//! AVX2 kernels over the row-interleaved layout of [`crate::quant::packed`]: the same layout as
//! the AVX-512 kernels (`x86_packed`), read as two halves of 8 rows (one i32 lane per row in a
//! 256-bit register). Without `vpdpbusd` each four-byte step is `vpmaddubsw` (pairs of products
//! into i16) then `vpmaddwd` with ones (into i32); weights of at most 6 bits let two steps share
//! one i16 sum before widening. Q8_0's unsigned weights (`q + 128`) would saturate `vpmaddubsw`,
//! so they are turned back into signed bytes and multiplied with the sign trick (|w| times x with
//! w's sign), which also drops the offset term. AVX2 has 16 vector registers: a block is done half
//! by half, 4 tokens at a time.

use super::int8::{Q8Acts, Q8Row, WeightFormat, QK8};
use super::x86_packed::PREFETCH_BYTES;
use crate::quant::packed::code::{Q4K, Q4_0, Q4_1, Q5_0, Q5_1, Q6K, Q8_0};
use crate::quant::packed::{self, format_of, GROUP_ROWS};
use std::arch::x86_64::*;

/// Tokens per matrix-product tile.
const TOKENS: usize = 4;

/// Rows per half-group register.
const HALF: usize = GROUP_ROWS / 2;

/// One 32-weight block of 8 rows (a half group), as `x86_packed::Block` with 256-bit registers;
/// Q8_0 weights are signed bytes here and `c` is zero for it.
#[derive(Clone, Copy)]
struct HalfBlock {
    w: [__m256i; 8],
    d0: __m256,
    d1: __m256,
    c: __m256,
}

/// 0x10 in byte `k` where bit `k` of `m` is set.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn fifth_bits(m: u32) -> __m256i {
    let spread = _mm256_setr_epi64x(
        0,
        0x0101_0101_0101_0101,
        0x0202_0202_0202_0202,
        0x0303_0303_0303_0303,
    );
    let v = _mm256_shuffle_epi8(_mm256_set1_epi32(m as i32), spread);
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    _mm256_and_si256(
        _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit),
        _mm256_set1_epi8(0x10),
    )
}

/// Half `h` (bytes `32h..32h+32`) of the 64-byte chunk at `p`.
///
/// # Safety
/// `p` must be readable for 64 bytes and `h < 2`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn half_chunk(p: *const u8, h: usize) -> __m256i {
    // SAFETY: bytes 32h..32h+32 of the caller's 64.
    unsafe { _mm256_loadu_si256(p.add(32 * h) as *const __m256i) }
}

/// The 8 bytes of half `h` of the 16-byte run at `sc + at`, in the low half of a register.
///
/// # Safety
/// `sc + at` must be readable for 16 bytes and `h < 2`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn half_bytes(sc: *const u8, at: usize, h: usize) -> __m128i {
    // SAFETY: bytes 8h..8h+8 of the caller's 16.
    unsafe { _mm_loadl_epi64(sc.add(at + HALF * h) as *const __m128i) }
}

/// Loads half `h` (rows `8h..8h+8`) of 32-weight block `b` of the packed group at `g`.
///
/// # Safety
/// `g` must be readable for `packed::group_bytes(F, cols)` bytes, `b < cols / 32`, `h < 2`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn load_half<const F: u8>(
    g: *const u8,
    cols: usize,
    b: usize,
    h: usize,
    prefetch: bool,
) -> HalfBlock {
    let f = format_of(F);
    let (qb, sb) = (packed::quant_bytes(f), packed::scale_bytes(f));
    let per_unit = f.block_elems() / QK8;
    let (unit, sub) = (b / per_unit, b % per_unit);
    let low = _mm256_set1_epi8(0x0F);
    let zero = _mm256_setzero_si256();
    let mut w = [zero; 8];
    // SAFETY (block): as `x86_packed::load_block`; each 64-byte chunk is read as its half
    // `32h..32h+32`, each f16 run of 16 rows as its 8 values from `8h`, each byte run of 16 rows
    // as its 8 bytes from `8h`. Loads are unaligned; prefetches never fault.
    unsafe {
        let q = g.add(unit * qb);
        let sc = g.add(cols / f.block_elems() * qb + unit * sb);
        if prefetch && h == 0 {
            // Every line of this block's quants, a few blocks ahead: with one prefetch per block
            // (as the AVX-512 tile, which keeps more loads in flight) DRAM streams ran at 20 GB/s.
            for line in 0..qb / 64 {
                _mm_prefetch::<_MM_HINT_T0>(q.wrapping_add(PREFETCH_BYTES + 64 * line) as *const i8);
            }
            // The scale section is a second stream: the same number of blocks ahead.
            _mm_prefetch::<_MM_HINT_T0>(sc.wrapping_add(PREFETCH_BYTES / qb * sb) as *const i8);
        }
        match F {
            Q8_0 => {
                for (s, ws) in w.iter_mut().enumerate() {
                    *ws = _mm256_xor_si256(
                        half_chunk(q.add(64 * s), h),
                        _mm256_set1_epi8(0x80u8 as i8),
                    );
                }
            }
            Q4K => {
                let chunks = q.add(512 * (sub / 2));
                for (s, ws) in w.iter_mut().enumerate() {
                    let v = half_chunk(chunks.add(64 * s), h);
                    *ws = if sub % 2 == 0 {
                        _mm256_and_si256(v, low)
                    } else {
                        _mm256_and_si256(_mm256_srli_epi16::<4>(v), low)
                    };
                }
            }
            _ => {
                let q = if F == Q6K { q.add(384 * sub) } else { q };
                for m in 0..4 {
                    let v = half_chunk(q.add(64 * m), h);
                    w[m] = _mm256_and_si256(v, low);
                    w[m + 4] = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low);
                }
                if F == Q5_0 || F == Q5_1 {
                    for (s, ws) in w.iter_mut().enumerate() {
                        let m = (q.add(256 + 8 * s + 4 * h) as *const u32).read_unaligned();
                        *ws = _mm256_or_si256(*ws, fifth_bits(m));
                    }
                }
                if F == Q6K {
                    let top = _mm256_set1_epi8(0x30);
                    for hh in 0..2 {
                        let v = half_chunk(q.add(256 + 64 * hh), h);
                        let parts = [
                            _mm256_slli_epi16::<4>(v),
                            _mm256_slli_epi16::<2>(v),
                            v,
                            _mm256_srli_epi16::<2>(v),
                        ];
                        for (k, p) in parts.iter().enumerate() {
                            w[4 * hh + k] =
                                _mm256_or_si256(w[4 * hh + k], _mm256_and_si256(*p, top));
                        }
                    }
                }
            }
        }
        let d = _mm256_cvtph_ps(_mm_loadu_si128(sc.add(16 * h) as *const __m128i));
        match F {
            Q4K => {
                let dmin = _mm256_cvtph_ps(_mm_loadu_si128(sc.add(32 + 16 * h) as *const __m128i));
                let s = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(half_bytes(sc, 64 + 16 * sub, h)));
                let m = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(half_bytes(sc, 192 + 16 * sub, h)));
                let ds = _mm256_mul_ps(d, s);
                HalfBlock {
                    w,
                    d0: ds,
                    d1: ds,
                    c: _mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(dmin, m)),
                }
            }
            Q6K => {
                let s0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(half_bytes(
                    sc,
                    32 + 16 * (2 * sub),
                    h,
                )));
                let s1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(half_bytes(
                    sc,
                    32 + 16 * (2 * sub + 1),
                    h,
                )));
                HalfBlock {
                    w,
                    d0: _mm256_mul_ps(d, s0),
                    d1: _mm256_mul_ps(d, s1),
                    c: _mm256_setzero_ps(),
                }
            }
            Q4_1 | Q5_1 => HalfBlock {
                w,
                d0: d,
                d1: d,
                c: _mm256_cvtph_ps(_mm_loadu_si128(sc.add(32 + 16 * h) as *const __m128i)),
            },
            Q8_0 => HalfBlock {
                w,
                d0: d,
                d1: d,
                c: _mm256_setzero_ps(),
            },
            _ => HalfBlock {
                w,
                d0: d,
                d1: d,
                c: _mm256_mul_ps(d, _mm256_set1_ps(-packed::offset(f))),
            },
        }
    }
}

/// Integer sums of steps `s0..s0+4` of a half block against the broadcast activation steps `x`:
/// one i32 per row.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn four_steps<const F: u8>(w: &[__m256i; 8], x: &[__m256i; 8], s0: usize) -> __m256i {
    let ones = _mm256_set1_epi16(1);
    if F == Q8_0 {
        let mut acc = _mm256_setzero_si256();
        for s in s0..s0 + 4 {
            let p =
                _mm256_maddubs_epi16(_mm256_sign_epi8(w[s], w[s]), _mm256_sign_epi8(x[s], w[s]));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones));
        }
        acc
    } else {
        // Weights < 64: two steps' i16 pair sums stay below 2 * 2 * 63 * 127 < 32768.
        let a = _mm256_add_epi16(
            _mm256_maddubs_epi16(w[s0], x[s0]),
            _mm256_maddubs_epi16(w[s0 + 1], x[s0 + 1]),
        );
        let b = _mm256_add_epi16(
            _mm256_maddubs_epi16(w[s0 + 2], x[s0 + 2]),
            _mm256_maddubs_epi16(w[s0 + 3], x[s0 + 3]),
        );
        _mm256_add_epi32(_mm256_madd_epi16(a, ones), _mm256_madd_epi16(b, ones))
    }
}

/// Dots of one packed group (at `g`, `cols` columns) with `T` activation rows: `result[h][t]`
/// holds rows `8h..8h+8` against token `t`.
///
/// # Safety
/// `g` must be readable for `packed::group_bytes(F, cols)` bytes and every `x[t]` must hold
/// `cols` values (`qs`, `d`, `s`, `bsums` sized accordingly).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile<const F: u8, const T: usize>(
    g: *const u8,
    cols: usize,
    x: &[Q8Row; T],
) -> [[__m256; T]; 2] {
    let mut acc = [[_mm256_setzero_ps(); T]; 2];
    for b in 0..cols / QK8 {
        for (h, acc_h) in acc.iter_mut().enumerate() {
            // SAFETY: b < cols / 32 and h < 2, inside the caller's group.
            let blk = unsafe { load_half::<F>(g, cols, b, h, T == 1) };
            for (t, acc_t) in acc_h.iter_mut().enumerate() {
                let mut xb = [_mm256_setzero_si256(); 8];
                for (s, v) in xb.iter_mut().enumerate() {
                    // SAFETY: block b < cols / 32 of token t's quants: 32 bytes at b * 32.
                    *v = _mm256_set1_epi32(unsafe {
                        (x[t].qs.as_ptr().add(b * QK8 + 4 * s) as *const i32).read_unaligned()
                    });
                }
                let mut lo = four_steps::<F>(&blk.w, &xb, 0);
                let mut hi = four_steps::<F>(&blk.w, &xb, 4);
                let da = _mm256_set1_ps(x[t].d[b]);
                if F == Q6K {
                    lo = _mm256_sub_epi32(lo, _mm256_set1_epi32(32 * x[t].bsums[2 * b] as i32));
                    hi = _mm256_sub_epi32(hi, _mm256_set1_epi32(32 * x[t].bsums[2 * b + 1] as i32));
                    *acc_t =
                        _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), _mm256_mul_ps(blk.d0, da), *acc_t);
                    *acc_t =
                        _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi), _mm256_mul_ps(blk.d1, da), *acc_t);
                } else {
                    let sum = _mm256_cvtepi32_ps(_mm256_add_epi32(lo, hi));
                    *acc_t = _mm256_fmadd_ps(sum, _mm256_mul_ps(blk.d0, da), *acc_t);
                    if F != Q8_0 {
                        *acc_t = _mm256_fmadd_ps(blk.c, _mm256_set1_ps(x[t].s[b]), *acc_t);
                    }
                }
            }
        }
    }
    acc
}

/// Writes the first `out.len()` (at most 16) of a group's two halves of row results to `out`.
#[target_feature(enable = "avx2")]
#[inline]
fn store_rows(v: [__m256; 2], out: &mut [f32]) {
    let mut tmp = [0f32; GROUP_ROWS];
    // SAFETY: `tmp` holds 16 floats: two stores of 8.
    unsafe {
        _mm256_storeu_ps(tmp.as_mut_ptr(), v[0]);
        _mm256_storeu_ps(tmp.as_mut_ptr().add(HALF), v[1]);
    }
    let n = out.len().min(GROUP_ROWS);
    out[..n].copy_from_slice(&tmp[..n]);
}

/// Group `g` against tokens `t0..t0 + T`, stored into `out`.
///
/// # Safety
/// As [`tile`] for the group at `groups[g * gb..]`, with tokens `t0..t0 + T` of `xs`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
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
    let mut x = [xs.row(t0); T];
    for (i, xi) in x.iter_mut().enumerate() {
        *xi = xs.row(t0 + i);
    }
    // SAFETY: the caller guarantees group g and tokens t0..t0+T.
    let res = unsafe { tile::<F, T>(groups.as_ptr().add(g * gb), xs.cols, &x) };
    let (r0, r1) = (g * GROUP_ROWS, n_rows.min((g + 1) * GROUP_ROWS));
    for (t, (lo, hi)) in res[0].iter().zip(&res[1]).enumerate() {
        let o = (t0 + t) * ldo;
        store_rows([*lo, *hi], &mut out[o + r0..o + r1]);
    }
}

/// Packed matrix product ([`super::PackedGemmFn`]) for format `F` with AVX2.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; the lengths are checked here.
#[target_feature(enable = "avx2,fma,f16c")]
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
    for g in 0..ng {
        let mut t = 0;
        // SAFETY (all calls): group g < ng and tokens t..t+T <= xs.rows, checked above.
        unsafe {
            while xs.rows - t >= TOKENS {
                gemm_tokens::<F, TOKENS>(groups, gb, g, n_rows, xs, t, out, ldo);
                t += TOKENS;
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

/// The AVX2 packed matrix-product kernel for `f`, if it has a packed layout.
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
