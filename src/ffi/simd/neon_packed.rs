//! aarch64 kernels over the row-interleaved layout of [`super::packed`], built on the by-element
//! form of `SDOT` (`dotprod`): 16 bytes hold four consecutive weights of each of 4 rows, and
//! `sdot v.4s, w.16b, x.4b[k]` multiplies them with four activation bytes taken from lane `k` of
//! the activation register, advancing 4 row sums at once. A 32-weight block is then 8 `SDOT`s per
//! 4 rows, with the activation block loaded once as two registers, and one scaling per 4 rows, in
//! place of the row layout's per-row pairwise folds. A group of 16 rows is done quarter by quarter.
//!
//! Weights of at most 6 bits are used as signed bytes as they are (they are below 64); Q8_0's
//! `q + 128` is turned back into `q` with one exclusive-or, which also drops its offset term.
//! CPUs without `dotprod` keep the GGUF row layout and `neon.rs`'s plain kernels (the backend only
//! packs where [`gemm_fn`] is offered).
//!
//! Builds with rustc 1.63 and no crates (tests/neon mounts it), hence `SDOT` and the half-to-single
//! conversion in `asm!`, one function per lane index.

use super::int8::{Q8Acts, Q8Row, WeightFormat, QK8};
use super::packed::code::{Q4K, Q4_0, Q4_1, Q5_0, Q5_1, Q6K, Q8_0};
use super::packed::{self, format_of, GROUP_ROWS};
use super::PackedGemmFn;
use std::arch::aarch64::*;
use std::arch::asm;

/// Rows per register (a quarter of a group).
const QUARTER: usize = 4;

/// Tokens per matrix-product tile.
const TOKENS: usize = 4;

/// Defines `acc + SDOT(w, lane L of x)`: lane `i` gains the dot of bytes `4i..4i+4` of `w` with
/// bytes `4L..4L+4` of `x`.
macro_rules! sdot_lane {
    ($name:ident, $template:literal) => {
        #[inline]
        #[target_feature(enable = "dotprod")]
        unsafe fn $name(acc: int32x4_t, w: int8x16_t, x: int8x16_t) -> int32x4_t {
            let mut r = acc;
            // SAFETY: `SDOT` only reads and writes the named vector registers; these kernels are
            // only offered after `is_aarch64_feature_detected!("dotprod")`.
            unsafe {
                asm!($template, r = inout(vreg) r, a = in(vreg) w, b = in(vreg) x, options(pure, nomem, nostack));
            }
            r
        }
    };
}
sdot_lane!(sdot_l0, "sdot {r:v}.4s, {a:v}.16b, {b:v}.4b[0]");
sdot_lane!(sdot_l1, "sdot {r:v}.4s, {a:v}.16b, {b:v}.4b[1]");
sdot_lane!(sdot_l2, "sdot {r:v}.4s, {a:v}.16b, {b:v}.4b[2]");
sdot_lane!(sdot_l3, "sdot {r:v}.4s, {a:v}.16b, {b:v}.4b[3]");

/// Four f16 values at `p` widened to f32 exactly.
///
/// # Safety
/// `p` must be readable for 8 bytes.
#[inline(always)]
unsafe fn f16x4(p: *const u8) -> float32x4_t {
    // SAFETY: the caller guarantees 8 readable bytes.
    let v = unsafe { vld1_u16(p as *const u16) };
    let out: float32x4_t;
    // SAFETY: `FCVTL` (base AArch64 SIMD) only reads and writes the named vector registers.
    unsafe {
        asm!("fcvtl {o:v}.4s, {i:v}.4h", i = in(vreg) v, o = lateout(vreg) out, options(pure, nomem, nostack));
    }
    out
}

/// Four bytes at `p` as f32 (`signed`: as i8, else as u8).
///
/// # Safety
/// `p` must be readable for 4 bytes.
#[inline(always)]
unsafe fn bytes4(p: *const u8, signed: bool) -> float32x4_t {
    // SAFETY: the caller guarantees 4 readable bytes.
    let b = unsafe { [*p, *p.add(1), *p.add(2), *p.add(3)] };
    let v: [f32; 4] = if signed {
        [
            b[0] as i8 as f32,
            b[1] as i8 as f32,
            b[2] as i8 as f32,
            b[3] as i8 as f32,
        ]
    } else {
        [b[0] as f32, b[1] as f32, b[2] as f32, b[3] as f32]
    };
    // SAFETY: `v` holds 4 f32.
    unsafe { vld1q_f32(v.as_ptr()) }
}

/// 0x10 in byte `k` where bit `k` of `m` is set.
#[inline(always)]
unsafe fn fifth_bits(m: u16) -> uint8x16_t {
    let bits: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    // SAFETY: `bits` holds 16 bytes.
    let sel = unsafe { vld1q_u8(bits.as_ptr()) };
    let v = vcombine_u8(vdup_n_u8(m as u8), vdup_n_u8((m >> 8) as u8));
    vandq_u8(vtstq_u8(v, sel), vdupq_n_u8(0x10))
}

/// One 32-weight block of 4 rows: `w[s]` holds weights `4s..4s+4` of each row as signed bytes,
/// `d0`/`d1` scale the sums of steps 0-3 / 4-7, `c` multiplies the activation block's `s`.
#[derive(Clone, Copy)]
struct QuarterBlock {
    w: [int8x16_t; 8],
    d0: float32x4_t,
    d1: float32x4_t,
    c: float32x4_t,
}

/// Loads quarter `qr` (rows `4qr..4qr+4`) of 32-weight block `b` of the packed group at `g`.
///
/// # Safety
/// `g` must be readable for `packed::group_bytes(F, cols)` bytes, `b < cols / 32`, `qr < 4`.
#[inline(always)]
unsafe fn load_quarter<const F: u8>(
    g: *const u8,
    cols: usize,
    b: usize,
    qr: usize,
) -> QuarterBlock {
    let f = format_of(F);
    let (qb, sb) = (packed::quant_bytes(f), packed::scale_bytes(f));
    let per_unit = f.block_elems() / QK8;
    let (unit, sub) = (b / per_unit, b % per_unit);
    let low = vdupq_n_u8(0x0F);
    let mut w = [vdupq_n_s8(0); 8];
    // SAFETY (block): offsets as documented in `quant::packed`; each 64-byte chunk is read as its
    // quarter `16qr..16qr+16`, each f16 run of 16 rows as its 4 values from `4qr`, each byte run
    // of 16 rows as its 4 bytes from `4qr`: all inside the unit's sections.
    unsafe {
        let q = g.add(unit * qb);
        let sc = g.add(cols / f.block_elems() * qb + unit * sb);
        let at = 16 * qr;
        if F == Q8_0 {
            for s in 0..8 {
                w[s] =
                    vreinterpretq_s8_u8(veorq_u8(vld1q_u8(q.add(64 * s + at)), vdupq_n_u8(0x80)));
            }
        } else if F == Q4K {
            let chunks = q.add(512 * (sub / 2));
            for s in 0..8 {
                let v = vld1q_u8(chunks.add(64 * s + at));
                w[s] = vreinterpretq_s8_u8(if sub % 2 == 0 {
                    vandq_u8(v, low)
                } else {
                    vshrq_n_u8::<4>(v)
                });
            }
        } else {
            let q = if F == Q6K { q.add(384 * sub) } else { q };
            let mut u = [vdupq_n_u8(0); 8];
            for m in 0..4 {
                let v = vld1q_u8(q.add(64 * m + at));
                u[m] = vandq_u8(v, low);
                u[m + 4] = vshrq_n_u8::<4>(v);
            }
            if F == Q5_0 || F == Q5_1 {
                for s in 0..8 {
                    let m = (q.add(256 + 8 * s + 2 * qr) as *const u16).read_unaligned();
                    u[s] = vorrq_u8(u[s], fifth_bits(m));
                }
            }
            if F == Q6K {
                let top = vdupq_n_u8(0x30);
                for hh in 0..2 {
                    let v = vld1q_u8(q.add(256 + 64 * hh + at));
                    let parts = [
                        vshlq_n_u8::<4>(v),
                        vshlq_n_u8::<2>(v),
                        v,
                        vshrq_n_u8::<2>(v),
                    ];
                    for k in 0..4 {
                        u[4 * hh + k] = vorrq_u8(u[4 * hh + k], vandq_u8(parts[k], top));
                    }
                }
            }
            for s in 0..8 {
                w[s] = vreinterpretq_s8_u8(u[s]);
            }
        }
        let d = f16x4(sc.add(8 * qr));
        let zero = vdupq_n_f32(0.0);
        match F {
            Q4K => {
                let dmin = f16x4(sc.add(32 + 8 * qr));
                let ds = vmulq_f32(d, bytes4(sc.add(64 + 16 * sub + 4 * qr), false));
                let c = vnegq_f32(vmulq_f32(
                    dmin,
                    bytes4(sc.add(192 + 16 * sub + 4 * qr), false),
                ));
                QuarterBlock {
                    w,
                    d0: ds,
                    d1: ds,
                    c,
                }
            }
            Q6K => {
                let d0 = vmulq_f32(d, bytes4(sc.add(32 + 16 * (2 * sub) + 4 * qr), true));
                let d1 = vmulq_f32(d, bytes4(sc.add(32 + 16 * (2 * sub + 1) + 4 * qr), true));
                QuarterBlock { w, d0, d1, c: zero }
            }
            Q4_1 | Q5_1 => QuarterBlock {
                w,
                d0: d,
                d1: d,
                c: f16x4(sc.add(32 + 8 * qr)),
            },
            Q8_0 => QuarterBlock {
                w,
                d0: d,
                d1: d,
                c: zero,
            },
            _ => QuarterBlock {
                w,
                d0: d,
                d1: d,
                c: vmulq_n_f32(d, -packed::offset(f)),
            },
        }
    }
}

/// Dots of one packed group (at `g`, `cols` columns) with `T` activation rows: `result[qr][t]`
/// holds rows `4qr..4qr+4` against token `t`.
///
/// # Safety
/// The CPU must have `dotprod`; `g` must be readable for `packed::group_bytes(F, cols)` bytes and
/// every `x[t]` must hold `cols` values (`qs`, `d`, `s`, `bsums` sized accordingly).
#[target_feature(enable = "neon,dotprod")]
unsafe fn tile<const F: u8, const T: usize>(
    g: *const u8,
    cols: usize,
    x: &[Q8Row; T],
) -> [[float32x4_t; T]; 4] {
    let mut acc = [[vdupq_n_f32(0.0); T]; 4];
    let zero = vdupq_n_s32(0);
    for b in 0..cols / QK8 {
        for qr in 0..4 {
            // SAFETY: b < cols / 32 and qr < 4, inside the caller's group.
            let blk = unsafe { load_quarter::<F>(g, cols, b, qr) };
            for t in 0..T {
                // SAFETY: block b < cols / 32 of token t's quants: 32 bytes at b * 32.
                let (xa, xb) = unsafe {
                    let p = x[t].qs.as_ptr().add(b * QK8);
                    (vld1q_s8(p), vld1q_s8(p.add(16)))
                };
                // SAFETY: `dotprod` is enabled for this function.
                let (mut lo, mut hi) = unsafe {
                    let w = &blk.w;
                    let lo = sdot_l3(
                        sdot_l2(sdot_l1(sdot_l0(zero, w[0], xa), w[1], xa), w[2], xa),
                        w[3],
                        xa,
                    );
                    let hi = sdot_l3(
                        sdot_l2(sdot_l1(sdot_l0(zero, w[4], xb), w[5], xb), w[6], xb),
                        w[7],
                        xb,
                    );
                    (lo, hi)
                };
                let da = vdupq_n_f32(x[t].d[b]);
                if F == Q6K {
                    lo = vsubq_s32(lo, vdupq_n_s32(32 * x[t].bsums[2 * b] as i32));
                    hi = vsubq_s32(hi, vdupq_n_s32(32 * x[t].bsums[2 * b + 1] as i32));
                    acc[qr][t] = vfmaq_f32(acc[qr][t], vcvtq_f32_s32(lo), vmulq_f32(blk.d0, da));
                    acc[qr][t] = vfmaq_f32(acc[qr][t], vcvtq_f32_s32(hi), vmulq_f32(blk.d1, da));
                } else {
                    let sum = vcvtq_f32_s32(vaddq_s32(lo, hi));
                    acc[qr][t] = vfmaq_f32(acc[qr][t], sum, vmulq_f32(blk.d0, da));
                    if F != Q8_0 {
                        acc[qr][t] = vfmaq_f32(acc[qr][t], blk.c, vdupq_n_f32(x[t].s[b]));
                    }
                }
            }
        }
    }
    acc
}

/// Group `g` against tokens `t0..t0 + T`, stored into `out`.
///
/// # Safety
/// As [`tile`] for the group at `groups[g * gb..]`, with tokens `t0..t0 + T` of `xs`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "neon,dotprod")]
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
    let r0 = g * GROUP_ROWS;
    let r1 = n_rows.min(r0 + GROUP_ROWS);
    for t in 0..T {
        let mut tmp = [0f32; GROUP_ROWS];
        for (qr, v) in res.iter().enumerate() {
            // SAFETY: `tmp` holds 16 floats; quarter qr fills 4qr..4qr+4.
            unsafe { vst1q_f32(tmp.as_mut_ptr().add(QUARTER * qr), v[t]) };
        }
        let o = (t0 + t) * ldo;
        out[o + r0..o + r1].copy_from_slice(&tmp[..r1 - r0]);
    }
}

/// Packed matrix product ([`PackedGemmFn`]) for format `F`.
///
/// # Safety
/// The CPU must have `dotprod`; the lengths are checked here.
#[target_feature(enable = "neon,dotprod")]
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
    let ng = (n_rows + GROUP_ROWS - 1) / GROUP_ROWS;
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

/// The packed matrix-product kernel for `f` (the caller checks `dotprod` first), if `f` has a
/// packed layout.
pub fn gemm_fn(f: WeightFormat) -> Option<PackedGemmFn> {
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
