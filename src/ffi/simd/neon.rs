//! aarch64 NEON kernels for the integer path: the activation quantizer, and matrix-vector and
//! matrix-matrix products for all eight weight formats of [`int8::WeightFormat`], each in two
//! variants: one built on the `SDOT` int8 dot-product instruction (the `dotprod` extension, which
//! Jetson Orin's Cortex-A78AE and most ARMv8.2+ cores have) and a plain-NEON fallback that
//! widens with `SMULL` and pairwise-accumulates with `SADALP`. Both compute, per 32 weights, the
//! exact integer dot of [`int8::dot_row`] and scale it the same way, so they differ from the
//! reference only by the order of f32 additions.
//!
//! Shape of the work: a tile is 4 weight rows x `NT` activation rows (1 for the matrix-vector
//! product, 4 for the matrix product). Each weight block of the 4 rows is unpacked once into
//! int8 registers and reused for every activation row of the tile; the four per-row integer dots
//! are folded with two pairwise adds into one vector whose lanes are the 4 rows, so the scales of
//! 4 rows are applied with one multiply and the result is stored as 4 consecutive outputs. Row and
//! token counts that are not multiples of 4 repeat the last row or token and store only the
//! valid lanes, so there is no separate tail code to get wrong.
//!
//! This file must build with rustc 1.63 and no crates (the aarch64 test program in tests/neon
//! mounts it beside `int8.rs` and `kinds.rs`), which is why `SDOT` and the half-to-single
//! conversion are written as inline `asm!` rather than intrinsics.

use super::int8::{self, Q8Acts, Q8Row, WeightFormat, QK8};
use super::{DotRowsFn, GemmFn, KernelSet, QuantizeFn};
use std::arch::aarch64::*;
use std::arch::asm;
use std::ptr;

/// The integer dot-product instruction a kernel is built on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dot {
    /// Plain NEON: `SMULL` into 16-bit products, `SADALP` into 32-bit sums (every ARMv8-A core).
    Plain,
    /// `SDOT` (ARMv8.2 `dotprod` extension): four 4-byte dot products per instruction.
    Sdot,
}

impl Dot {
    /// Whether this CPU can run kernels built on this instruction.
    pub fn available(self) -> bool {
        match self {
            Dot::Plain => true,
            Dot::Sdot => std::arch::is_aarch64_feature_detected!("dotprod"),
        }
    }

    /// The fastest variant this CPU can run.
    pub fn best() -> Dot {
        if Dot::Sdot.available() {
            Dot::Sdot
        } else {
            Dot::Plain
        }
    }
}

/// The matrix-vector kernel of set `k` for `f` (`None` unless `k` is [`KernelSet::Neon`]).
pub fn dot_rows_fn(k: KernelSet, f: WeightFormat) -> Option<DotRowsFn> {
    if k == KernelSet::Neon {
        Some(dot_rows_kernel(Dot::best(), f))
    } else {
        None
    }
}

/// The matrix-matrix kernel of set `k` for `f` (`None` unless `k` is [`KernelSet::Neon`]).
pub fn gemm_fn(k: KernelSet, f: WeightFormat) -> Option<GemmFn> {
    if k == KernelSet::Neon {
        Some(gemm_kernel(Dot::best(), f))
    } else {
        None
    }
}

/// The activation quantizer of set `k` (`None` unless `k` is [`KernelSet::Neon`]).
pub fn quantize_fn(k: KernelSet) -> Option<QuantizeFn> {
    if k == KernelSet::Neon {
        Some(quantize_row)
    } else {
        None
    }
}

/// Picks the instantiation of a generic kernel for a weight format.
macro_rules! by_format {
    ($f:expr, $kernel:ident) => {
        match $f {
            WeightFormat::Q4_0 => $kernel::<Q40>,
            WeightFormat::Q4_1 => $kernel::<Q41>,
            WeightFormat::Q5_0 => $kernel::<Q50>,
            WeightFormat::Q5_1 => $kernel::<Q51>,
            WeightFormat::Q8_0 => $kernel::<Q80>,
            WeightFormat::Q4K => $kernel::<K4>,
            WeightFormat::Q5K => $kernel::<K5>,
            WeightFormat::Q6K => $kernel::<K6>,
        }
    };
}

/// The matrix-vector kernel for `f` built on `dot`; the caller must check `dot.available()`
/// before calling it (tests use this to run both variants explicitly).
pub fn dot_rows_kernel(dot: Dot, f: WeightFormat) -> DotRowsFn {
    match dot {
        Dot::Plain => by_format!(f, dot_rows_plain),
        Dot::Sdot => by_format!(f, dot_rows_sdot),
    }
}

/// The matrix-matrix kernel for `f` built on `dot`; the caller must check `dot.available()`.
pub fn gemm_kernel(dot: Dot, f: WeightFormat) -> GemmFn {
    match dot {
        Dot::Plain => by_format!(f, gemm_plain),
        Dot::Sdot => by_format!(f, gemm_sdot),
    }
}

/// One 32-weight sub-block unpacked to signed bytes, with its integer scales.
#[derive(Clone, Copy)]
struct Sub {
    /// Weights 0..16.
    w0: int8x16_t,
    /// Weights 16..32.
    w1: int8x16_t,
    /// Integer scale of the sub-block (of weights 0..16 for Q6_K); 1 where the format has none.
    sc0: i32,
    /// Integer scale of weights 16..32 (Q6_K only).
    sc1: i32,
    /// Integer minimum of the sub-block (Q4_K/Q5_K only).
    mn: i32,
}

/// How a weight format scales its integer dots.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scaling {
    /// `d * idot`: signed quants, one f16 scale per block.
    Plain,
    /// `d * idot + m * s`: unsigned quants with an f16 offset per block (Q4_1, Q5_1).
    Offset,
    /// `d * sc * idot - dmin * mn * s`: 6-bit scale and minimum per 32 weights (Q4_K, Q5_K).
    ScaleMin,
    /// `d * (sc0 * idot(0..16) + sc1 * idot(16..32))`: int8 scale per 16 weights (Q6_K).
    HalfScales,
}

/// A weight block layout as the kernels see it: a block of `SUBS` sub-blocks of 32 weights.
trait Format {
    /// Bytes per block.
    const BYTES: usize;
    /// 32-weight sub-blocks per block.
    const SUBS: usize;
    /// How integer dots are scaled.
    const SCALING: Scaling;
    /// The format, for the reference fallback.
    const FORMAT: WeightFormat;
    /// f16 bits of the block's scale and of its offset or minimum (0 when it has none).
    ///
    /// # Safety
    /// `p` must point at `BYTES` readable bytes.
    unsafe fn header(p: *const u8) -> (u16, u16);
    /// Unpacks sub-block `j < SUBS` of the block at `p`.
    ///
    /// # Safety
    /// `p` must point at `BYTES` readable bytes.
    unsafe fn sub(p: *const u8, j: usize) -> Sub;
}

/// Reads a little-endian u16 at `p`.
#[inline(always)]
unsafe fn rd16(p: *const u8) -> u16 {
    // SAFETY: the caller guarantees two readable bytes at `p`; no alignment is needed.
    u16::from_le_bytes(unsafe { ptr::read_unaligned(p as *const [u8; 2]) })
}

/// A sub-block with weights only (formats without integer scales).
#[inline(always)]
fn plain_sub(w0: int8x16_t, w1: int8x16_t) -> Sub {
    Sub {
        w0,
        w1,
        sc0: 1,
        sc1: 1,
        mn: 0,
    }
}

/// Low and high nibbles of 16 bytes: elements 0..16 and 16..32 of a Q4/Q5 block.
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> (uint8x16_t, uint8x16_t) {
    // SAFETY: the caller guarantees 16 readable bytes at `p`.
    let q = unsafe { vld1q_u8(p) };
    (vandq_u8(q, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(q))
}

/// Bit `i % 8` of every byte lane `i`: tests one bit of a broadcast byte per lane.
static BIT_OF_LANE: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];

/// The fifth bits of a Q5_0/Q5_1 block (`qh` little-endian, bit `j` for element `j`) as 0x10
/// in the lanes of elements 0..16 and 16..32.
#[inline(always)]
unsafe fn fifth_bits(qh: *const u8) -> (uint8x16_t, uint8x16_t) {
    // SAFETY: the caller guarantees 4 readable bytes at `qh`; BIT_OF_LANE holds 16 bytes.
    let (h, lanes) = unsafe {
        (
            ptr::read_unaligned(qh as *const [u8; 4]),
            vld1q_u8(BIT_OF_LANE.as_ptr()),
        )
    };
    let lo = vcombine_u8(vdup_n_u8(h[0]), vdup_n_u8(h[1]));
    let hi = vcombine_u8(vdup_n_u8(h[2]), vdup_n_u8(h[3]));
    let bit = vdupq_n_u8(0x10);
    (
        vandq_u8(vtstq_u8(lo, lanes), bit),
        vandq_u8(vtstq_u8(hi, lanes), bit),
    )
}

/// Q4_0: f16 d, 16 bytes of nibbles; weights `q - 8`.
struct Q40;
impl Format for Q40 {
    const BYTES: usize = 18;
    const SUBS: usize = 1;
    const SCALING: Scaling = Scaling::Plain;
    const FORMAT: WeightFormat = WeightFormat::Q4_0;
    #[inline(always)]
    unsafe fn header(p: *const u8) -> (u16, u16) {
        (rd16(p), 0)
    }
    #[inline(always)]
    unsafe fn sub(p: *const u8, _j: usize) -> Sub {
        let (lo, hi) = nibbles(p.add(2));
        let eight = vdupq_n_s8(8);
        plain_sub(
            vsubq_s8(vreinterpretq_s8_u8(lo), eight),
            vsubq_s8(vreinterpretq_s8_u8(hi), eight),
        )
    }
}

/// Q4_1: f16 d, f16 m, 16 bytes of nibbles; weights `q` plus offset.
struct Q41;
impl Format for Q41 {
    const BYTES: usize = 20;
    const SUBS: usize = 1;
    const SCALING: Scaling = Scaling::Offset;
    const FORMAT: WeightFormat = WeightFormat::Q4_1;
    #[inline(always)]
    unsafe fn header(p: *const u8) -> (u16, u16) {
        (rd16(p), rd16(p.add(2)))
    }
    #[inline(always)]
    unsafe fn sub(p: *const u8, _j: usize) -> Sub {
        let (lo, hi) = nibbles(p.add(4));
        plain_sub(vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi))
    }
}

/// Q5_0: f16 d, u32 fifth bits, 16 bytes of nibbles; weights `q - 16`.
struct Q50;
impl Format for Q50 {
    const BYTES: usize = 22;
    const SUBS: usize = 1;
    const SCALING: Scaling = Scaling::Plain;
    const FORMAT: WeightFormat = WeightFormat::Q5_0;
    #[inline(always)]
    unsafe fn header(p: *const u8) -> (u16, u16) {
        (rd16(p), 0)
    }
    #[inline(always)]
    unsafe fn sub(p: *const u8, _j: usize) -> Sub {
        let (lo, hi) = nibbles(p.add(6));
        let (h0, h1) = fifth_bits(p.add(2));
        let sixteen = vdupq_n_s8(16);
        let w0 = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(lo, h0)), sixteen);
        let w1 = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(hi, h1)), sixteen);
        plain_sub(w0, w1)
    }
}

/// Q5_1: f16 d, f16 m, u32 fifth bits, 16 bytes of nibbles; weights `q` plus offset.
struct Q51;
impl Format for Q51 {
    const BYTES: usize = 24;
    const SUBS: usize = 1;
    const SCALING: Scaling = Scaling::Offset;
    const FORMAT: WeightFormat = WeightFormat::Q5_1;
    #[inline(always)]
    unsafe fn header(p: *const u8) -> (u16, u16) {
        (rd16(p), rd16(p.add(2)))
    }
    #[inline(always)]
    unsafe fn sub(p: *const u8, _j: usize) -> Sub {
        let (lo, hi) = nibbles(p.add(8));
        let (h0, h1) = fifth_bits(p.add(4));
        plain_sub(
            vreinterpretq_s8_u8(vorrq_u8(lo, h0)),
            vreinterpretq_s8_u8(vorrq_u8(hi, h1)),
        )
    }
}

/// Q8_0: f16 d, 32 signed bytes.
struct Q80;
impl Format for Q80 {
    const BYTES: usize = 34;
    const SUBS: usize = 1;
    const SCALING: Scaling = Scaling::Plain;
    const FORMAT: WeightFormat = WeightFormat::Q8_0;
    #[inline(always)]
    unsafe fn header(p: *const u8) -> (u16, u16) {
        (rd16(p), 0)
    }
    #[inline(always)]
    unsafe fn sub(p: *const u8, _j: usize) -> Sub {
        // SAFETY: the block holds 34 bytes; the quants are bytes 2..34.
        let (w0, w1) = unsafe {
            (
                vld1q_s8(p.add(2) as *const i8),
                vld1q_s8(p.add(18) as *const i8),
            )
        };
        plain_sub(w0, w1)
    }
}

/// The 6-bit scale and minimum of sub-block `j` of a Q4_K/Q5_K block at `p`.
#[inline(always)]
unsafe fn k4_scale_min(p: *const u8, j: usize) -> (i32, i32) {
    // SAFETY: the caller guarantees the block's 12 scale bytes at 4..16 are readable.
    let scales = unsafe { ptr::read_unaligned(p.add(4) as *const [u8; 12]) };
    let (sc, m) = int8::scale_min_k4(j, &scales);
    (sc as i32, m as i32)
}

/// The 4-bit quants of sub-block `j` of a Q4_K/Q5_K block whose nibbles start at `qs`: sub-blocks
/// `2i` and `2i + 1` share 32 bytes, as their low and high nibbles.
#[inline(always)]
unsafe fn k4_nibbles(qs: *const u8, j: usize) -> (uint8x16_t, uint8x16_t) {
    // SAFETY: the caller guarantees 128 readable bytes of nibbles at `qs`; j < 8.
    let (a, b) = unsafe {
        (
            vld1q_u8(qs.add(j / 2 * 32)),
            vld1q_u8(qs.add(j / 2 * 32 + 16)),
        )
    };
    if j % 2 == 0 {
        let m = vdupq_n_u8(0x0F);
        (vandq_u8(a, m), vandq_u8(b, m))
    } else {
        (vshrq_n_u8::<4>(a), vshrq_n_u8::<4>(b))
    }
}

/// Q4_K: f16 d, f16 dmin, 12 bytes of packed 6-bit scales and minimums, 128 bytes of nibbles.
struct K4;
impl Format for K4 {
    const BYTES: usize = 144;
    const SUBS: usize = 8;
    const SCALING: Scaling = Scaling::ScaleMin;
    const FORMAT: WeightFormat = WeightFormat::Q4K;
    #[inline(always)]
    unsafe fn header(p: *const u8) -> (u16, u16) {
        (rd16(p), rd16(p.add(2)))
    }
    #[inline(always)]
    unsafe fn sub(p: *const u8, j: usize) -> Sub {
        let (lo, hi) = k4_nibbles(p.add(16), j);
        let (sc, mn) = k4_scale_min(p, j);
        Sub {
            w0: vreinterpretq_s8_u8(lo),
            w1: vreinterpretq_s8_u8(hi),
            sc0: sc,
            sc1: sc,
            mn,
        }
    }
}

/// Q5_K: as Q4_K with 32 bytes of fifth bits (bit `j` of byte `l` for element `l` of sub-block
/// `j`) before the nibbles.
struct K5;
impl Format for K5 {
    const BYTES: usize = 176;
    const SUBS: usize = 8;
    const SCALING: Scaling = Scaling::ScaleMin;
    const FORMAT: WeightFormat = WeightFormat::Q5K;
    #[inline(always)]
    unsafe fn header(p: *const u8) -> (u16, u16) {
        (rd16(p), rd16(p.add(2)))
    }
    #[inline(always)]
    unsafe fn sub(p: *const u8, j: usize) -> Sub {
        let (lo, hi) = k4_nibbles(p.add(48), j);
        // SAFETY: the block holds 176 bytes; the fifth bits are bytes 16..48.
        let (h0, h1) = unsafe { (vld1q_u8(p.add(16)), vld1q_u8(p.add(32))) };
        let (bit, five) = (vdupq_n_u8(1 << j), vdupq_n_u8(0x10));
        let w0 = vorrq_u8(lo, vandq_u8(vtstq_u8(h0, bit), five));
        let w1 = vorrq_u8(hi, vandq_u8(vtstq_u8(h1, bit), five));
        let (sc, mn) = k4_scale_min(p, j);
        Sub {
            w0: vreinterpretq_s8_u8(w0),
            w1: vreinterpretq_s8_u8(w1),
            sc0: sc,
            sc1: sc,
            mn,
        }
    }
}

/// Q6_K: 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 int8 scales, f16 d.
/// Sub-block `j` is part `j % 4` of half `j / 4`: its low nibbles are the low (parts 0, 1) or
/// high (parts 2, 3) nibbles of bytes `32 * (part % 2)..` of the half's 64, its high bits are bits
/// `2 * part` of the half's 32 bytes of pairs.
struct K6;
impl Format for K6 {
    const BYTES: usize = 210;
    const SUBS: usize = 8;
    const SCALING: Scaling = Scaling::HalfScales;
    const FORMAT: WeightFormat = WeightFormat::Q6K;
    #[inline(always)]
    unsafe fn header(p: *const u8) -> (u16, u16) {
        (rd16(p.add(208)), 0)
    }
    #[inline(always)]
    unsafe fn sub(p: *const u8, j: usize) -> Sub {
        let (half, part) = (j / 4, j % 4);
        let ql = p.add(half * 64 + (part % 2) * 32);
        let qh = p.add(128 + half * 32);
        // SAFETY: the block holds 210 bytes: ql + 32 <= 128, qh + 32 <= 192, scales at 192..208.
        let (l0, l1, h0, h1, sc) = unsafe {
            (
                vld1q_u8(ql),
                vld1q_u8(ql.add(16)),
                vld1q_u8(qh),
                vld1q_u8(qh.add(16)),
                ptr::read_unaligned(p.add(192 + half * 8 + part * 2) as *const [u8; 2]),
            )
        };
        let (l0, l1) = if part < 2 {
            let m = vdupq_n_u8(0x0F);
            (vandq_u8(l0, m), vandq_u8(l1, m))
        } else {
            (vshrq_n_u8::<4>(l0), vshrq_n_u8::<4>(l1))
        };
        // Bits 2*part..2*part+2 of each pair byte moved to bits 4..6 (a negative shift is right).
        let (shift, mask) = (vdupq_n_s8(4 - 2 * part as i8), vdupq_n_u8(0x30));
        let q0 = vorrq_u8(l0, vandq_u8(vshlq_u8(h0, shift), mask));
        let q1 = vorrq_u8(l1, vandq_u8(vshlq_u8(h1, shift), mask));
        let off = vdupq_n_s8(32);
        Sub {
            w0: vsubq_s8(vreinterpretq_s8_u8(q0), off),
            w1: vsubq_s8(vreinterpretq_s8_u8(q1), off),
            sc0: sc[0] as i8 as i32,
            sc1: sc[1] as i8 as i32,
            mn: 0,
        }
    }
}

/// `acc + SDOT(a, b)`: lane `i` gains the dot of bytes `4i..4i+4` of `a` and `b`.
#[inline]
#[target_feature(enable = "dotprod")]
unsafe fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut r = acc;
    // SAFETY: `SDOT` only reads and writes the named vector registers; this function is only
    // reached through kernels chosen after `is_aarch64_feature_detected!("dotprod")`.
    unsafe {
        asm!("sdot {r:v}.4s, {a:v}.16b, {b:v}.16b", r = inout(vreg) r, a = in(vreg) a, b = in(vreg) b, options(pure, nomem, nostack));
    }
    r
}

/// `acc` plus the dot of the 16 bytes of `a` and `b`, spread over the 4 lanes.
#[inline(always)]
unsafe fn idot<const SDOT: bool>(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    if SDOT {
        sdot(acc, a, b)
    } else {
        // |int8 * int8| <= 128 * 128 fits in i16; SADALP widens each pair sum to i32.
        let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
        let hi = vmull_high_s8(a, b);
        vpadalq_s16(vpadalq_s16(acc, lo), hi)
    }
}

/// Lane `r` = the sum of the lanes of `a[r]`.
#[inline(always)]
unsafe fn sum_lanes4(a: [int32x4_t; 4]) -> int32x4_t {
    vpaddq_s32(vpaddq_s32(a[0], a[1]), vpaddq_s32(a[2], a[3]))
}

/// Four f16 values (bits) widened to f32 exactly.
#[inline(always)]
unsafe fn f16x4(h: [u16; 4]) -> float32x4_t {
    // SAFETY: `h` holds 4 u16.
    let v = unsafe { vld1_u16(h.as_ptr()) };
    let out: float32x4_t;
    // SAFETY: `FCVTL` (base AArch64 SIMD) only reads and writes the named vector registers.
    unsafe {
        asm!("fcvtl {o:v}.4s, {i:v}.4h", i = in(vreg) v, o = lateout(vreg) out, options(pure, nomem, nostack));
    }
    out
}

/// Four i32 values as a vector.
#[inline(always)]
unsafe fn i32x4(v: [i32; 4]) -> int32x4_t {
    // SAFETY: `v` holds 4 i32.
    unsafe { vld1q_s32(v.as_ptr()) }
}

/// One sub-block of 4 weight rows, unpacked, with its per-row scales as vectors (lane = row).
struct Unpacked {
    /// The sub-block of each row.
    s: [Sub; 4],
    /// Integer scales (of weights 0..16 for Q6_K).
    sc0: int32x4_t,
    /// Integer scales of weights 16..32 (Q6_K).
    sc1: int32x4_t,
    /// Float block scales `d`.
    d: float32x4_t,
    /// Coefficients of the activation sums `s`: `m`, `-dmin * mn`, or 0.
    mins: float32x4_t,
}

/// Adds one activation sub-block (quants at `xq`, scale `dx`, scaled sum `sx`) times the 4 rows
/// of `u` to `acc` (scaled integer dots) and `accm` (offset or minimum terms); lane = row.
#[inline(always)]
unsafe fn step<F: Format, const SDOT: bool>(
    acc: &mut float32x4_t,
    accm: &mut float32x4_t,
    u: &Unpacked,
    xq: *const i8,
    dx: f32,
    sx: f32,
) {
    let zero = vdupq_n_s32(0);
    let s = &u.s;
    // SAFETY: the caller guarantees 32 readable quants at `xq`.
    let (x0, x1) = unsafe { (vld1q_s8(xq), vld1q_s8(xq.add(16))) };
    let tot = if F::SCALING == Scaling::HalfScales {
        let lo = sum_lanes4([
            idot::<SDOT>(zero, s[0].w0, x0),
            idot::<SDOT>(zero, s[1].w0, x0),
            idot::<SDOT>(zero, s[2].w0, x0),
            idot::<SDOT>(zero, s[3].w0, x0),
        ]);
        let hi = sum_lanes4([
            idot::<SDOT>(zero, s[0].w1, x1),
            idot::<SDOT>(zero, s[1].w1, x1),
            idot::<SDOT>(zero, s[2].w1, x1),
            idot::<SDOT>(zero, s[3].w1, x1),
        ]);
        vmlaq_s32(vmulq_s32(lo, u.sc0), hi, u.sc1)
    } else {
        let tot = sum_lanes4([
            idot::<SDOT>(idot::<SDOT>(zero, s[0].w0, x0), s[0].w1, x1),
            idot::<SDOT>(idot::<SDOT>(zero, s[1].w0, x0), s[1].w1, x1),
            idot::<SDOT>(idot::<SDOT>(zero, s[2].w0, x0), s[2].w1, x1),
            idot::<SDOT>(idot::<SDOT>(zero, s[3].w0, x0), s[3].w1, x1),
        ]);
        if F::SCALING == Scaling::ScaleMin {
            vmulq_s32(tot, u.sc0)
        } else {
            tot
        }
    };
    *acc = vfmaq_f32(*acc, vcvtq_f32_s32(tot), vmulq_n_f32(u.d, dx));
    if F::SCALING == Scaling::Offset || F::SCALING == Scaling::ScaleMin {
        *accm = vfmaq_f32(*accm, u.mins, vdupq_n_f32(sx));
    }
}

/// Dot products of 4 weight rows (`rows`, each `nblk` blocks of `F`) with `NT` activation rows
/// (`xq` quants, `xd` scales, `xs` scaled sums, each `nblk * F::SUBS` blocks of 32): lane `r` of
/// element `t` of the result is row `r` times activation row `t`.
#[inline(always)]
unsafe fn tile<F: Format, const SDOT: bool, const NT: usize>(
    rows: [*const u8; 4],
    nblk: usize,
    xq: [*const i8; NT],
    xd: [*const f32; NT],
    xs: [*const f32; NT],
) -> [float32x4_t; NT] {
    // Offset/minimum terms go to their own accumulators, so that each block's two FMAs into one
    // register do not form a dependency chain twice as long as the loop body needs.
    let mut acc = [vdupq_n_f32(0.0); NT];
    let mut accm = [vdupq_n_f32(0.0); NT];
    for k in 0..nblk {
        let p = [
            rows[0].add(k * F::BYTES),
            rows[1].add(k * F::BYTES),
            rows[2].add(k * F::BYTES),
            rows[3].add(k * F::BYTES),
        ];
        let h = [
            F::header(p[0]),
            F::header(p[1]),
            F::header(p[2]),
            F::header(p[3]),
        ];
        let d = f16x4([h[0].0, h[1].0, h[2].0, h[3].0]);
        let m = match F::SCALING {
            Scaling::Offset => f16x4([h[0].1, h[1].1, h[2].1, h[3].1]),
            Scaling::ScaleMin => vnegq_f32(f16x4([h[0].1, h[1].1, h[2].1, h[3].1])),
            _ => vdupq_n_f32(0.0),
        };
        for j in 0..F::SUBS {
            let s = [
                F::sub(p[0], j),
                F::sub(p[1], j),
                F::sub(p[2], j),
                F::sub(p[3], j),
            ];
            let mins = match F::SCALING {
                Scaling::ScaleMin => vmulq_f32(
                    m,
                    vcvtq_f32_s32(i32x4([s[0].mn, s[1].mn, s[2].mn, s[3].mn])),
                ),
                _ => m,
            };
            let u = Unpacked {
                sc0: i32x4([s[0].sc0, s[1].sc0, s[2].sc0, s[3].sc0]),
                sc1: i32x4([s[0].sc1, s[1].sc1, s[2].sc1, s[3].sc1]),
                s,
                d,
                mins,
            };
            let b = k * F::SUBS + j;
            // SAFETY (for each token `t`): activation row `t` holds `nblk * F::SUBS` blocks of 32
            // quants, scales and sums (checked by the kernels before calling), and `b` is below.
            macro_rules! token {
                ($t:expr) => {{
                    // `% NT` keeps the index provably in range in every instantiation.
                    let t = $t % NT;
                    let (dx, sx) = unsafe { (*xd[t].add(b), *xs[t].add(b)) };
                    step::<F, SDOT>(&mut acc[t], &mut accm[t], &u, xq[t].add(b * QK8), dx, sx);
                }};
            }
            if NT == 4 {
                // Spelled out so that the accumulators live in registers, not in a stack array.
                token!(0);
                token!(1);
                token!(2);
                token!(3);
            } else {
                for t in 0..NT {
                    token!(t);
                }
            }
        }
    }
    for (a, m) in acc.iter_mut().zip(&accm) {
        *a = vaddq_f32(*a, *m);
    }
    acc
}

/// Pointers to 4 consecutive weight rows from `r0`, repeating the last of `n` rows past the end.
#[inline(always)]
unsafe fn row_ptrs(w: *const u8, row_bytes: usize, r0: usize, n: usize) -> [*const u8; 4] {
    let mut p = [w; 4];
    for (i, pi) in p.iter_mut().enumerate() {
        *pi = w.add((r0 + i).min(n - 1) * row_bytes);
    }
    p
}

/// Stores the lanes of `v` that are below `n` to `out[0..n]` (`n <= 4`).
#[inline(always)]
unsafe fn store_lanes(v: float32x4_t, out: *mut f32, n: usize) {
    if n >= 4 {
        // SAFETY: the caller guarantees `n` writable floats at `out`.
        unsafe { vst1q_f32(out, v) };
    } else {
        let mut tmp = [0f32; 4];
        // SAFETY: `tmp` holds 4 floats; the caller guarantees `n` writable floats at `out`.
        unsafe {
            vst1q_f32(tmp.as_mut_ptr(), v);
            ptr::copy_nonoverlapping(tmp.as_ptr(), out, n);
        }
    }
}

/// Whether `row_bytes` is whole blocks of `F` matching an activation row of `cols` quants, and
/// how many blocks that is.
#[inline(always)]
fn blocks_of<F: Format>(row_bytes: usize, cols: usize) -> Option<usize> {
    let nblk = row_bytes / F::BYTES;
    if nblk * F::BYTES == row_bytes && nblk * F::SUBS * QK8 == cols {
        Some(nblk)
    } else {
        None
    }
}

/// Matrix-vector body shared by both dot-product variants.
#[inline(always)]
unsafe fn dot_rows_body<F: Format, const SDOT: bool>(
    w: &[u8],
    row_bytes: usize,
    x: &Q8Row,
    out: &mut [f32],
) {
    let n = out.len();
    let nblk = match blocks_of::<F>(row_bytes, x.qs.len()) {
        Some(nb)
            if n > 0
                && w.len() >= n * row_bytes
                && x.d.len() * QK8 >= x.qs.len()
                && x.s.len() * QK8 >= x.qs.len() =>
        {
            nb
        }
        // Inconsistent lengths (the safe wrapper rules them out): the bounds-checked reference.
        _ => return int8::dot_rows(F::FORMAT, w, row_bytes, x, out),
    };
    for r0 in (0..n).step_by(4) {
        let rows = row_ptrs(w.as_ptr(), row_bytes, r0, n);
        let acc = tile::<F, SDOT, 1>(rows, nblk, [x.qs.as_ptr()], [x.d.as_ptr()], [x.s.as_ptr()]);
        store_lanes(acc[0], out.as_mut_ptr().add(r0), (n - r0).min(4));
    }
}

/// Matrix-matrix body shared by both dot-product variants: 4x4 tiles, row tiles outermost so
/// that 4 weight rows stay in L1 while every activation row streams past them.
#[inline(always)]
unsafe fn gemm_body<F: Format, const SDOT: bool>(
    w: &[u8],
    row_bytes: usize,
    n_rows: usize,
    xs: &Q8Acts,
    out: &mut [f32],
    ldo: usize,
) {
    let (nt, cols) = (xs.rows, xs.cols);
    if n_rows == 0 || nt == 0 {
        return;
    }
    let nb32 = cols / QK8;
    let ok = blocks_of::<F>(row_bytes, cols).is_some()
        && w.len() >= n_rows * row_bytes
        && ldo >= n_rows
        && out.len() >= (nt - 1) * ldo + n_rows
        && xs.qs.len() >= nt * cols
        && xs.d.len() >= nt * nb32
        && xs.s.len() >= nt * nb32;
    if !ok {
        // Inconsistent lengths (the safe wrapper rules them out): the bounds-checked reference.
        return int8::gemm(F::FORMAT, w, row_bytes, n_rows, xs, out, ldo);
    }
    let nblk = row_bytes / F::BYTES;
    for r0 in (0..n_rows).step_by(4) {
        let rows = row_ptrs(w.as_ptr(), row_bytes, r0, n_rows);
        let nr = (n_rows - r0).min(4);
        for t0 in (0..nt).step_by(4) {
            let (mut xq, mut xd, mut xsum) = ([ptr::null(); 4], [ptr::null(); 4], [ptr::null(); 4]);
            for i in 0..4 {
                // Tokens past the end repeat the last one (their results are not stored).
                let t = (t0 + i).min(nt - 1);
                xq[i] = xs.qs.as_ptr().add(t * cols);
                xd[i] = xs.d.as_ptr().add(t * nb32);
                xsum[i] = xs.s.as_ptr().add(t * nb32);
            }
            let acc = tile::<F, SDOT, 4>(rows, nblk, xq, xd, xsum);
            for (i, v) in acc.iter().enumerate().take(nt - t0) {
                store_lanes(*v, out.as_mut_ptr().add((t0 + i) * ldo + r0), nr);
            }
        }
    }
}

/// Matrix-vector kernel, plain NEON.
#[target_feature(enable = "neon")]
unsafe fn dot_rows_plain<F: Format>(w: &[u8], row_bytes: usize, x: &Q8Row, out: &mut [f32]) {
    dot_rows_body::<F, false>(w, row_bytes, x, out)
}

/// Matrix-vector kernel, `SDOT`.
#[target_feature(enable = "neon,dotprod")]
unsafe fn dot_rows_sdot<F: Format>(w: &[u8], row_bytes: usize, x: &Q8Row, out: &mut [f32]) {
    dot_rows_body::<F, true>(w, row_bytes, x, out)
}

/// Matrix-matrix kernel, plain NEON.
#[target_feature(enable = "neon")]
unsafe fn gemm_plain<F: Format>(
    w: &[u8],
    row_bytes: usize,
    n_rows: usize,
    xs: &Q8Acts,
    out: &mut [f32],
    ldo: usize,
) {
    gemm_body::<F, false>(w, row_bytes, n_rows, xs, out, ldo)
}

/// Matrix-matrix kernel, `SDOT`.
#[target_feature(enable = "neon,dotprod")]
unsafe fn gemm_sdot<F: Format>(
    w: &[u8],
    row_bytes: usize,
    n_rows: usize,
    xs: &Q8Acts,
    out: &mut [f32],
    ldo: usize,
) {
    gemm_body::<F, true>(w, row_bytes, n_rows, xs, out, ldo)
}

/// [`int8::quantize_row`] in NEON, with the same results: the same f32 scale and reciprocal, and
/// `FCVTAS` rounds half away from zero as `f32::round` does.
#[target_feature(enable = "neon")]
unsafe fn quantize_row(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32], bsums: &mut [i16]) {
    let nb = x.len() / QK8;
    if qs.len() < nb * QK8 || d.len() < nb || s.len() < nb || bsums.len() < 2 * nb {
        // Inconsistent lengths (the safe wrapper rules them out): the bounds-checked reference.
        return int8::quantize_row(x, qs, d, s, bsums);
    }
    for b in 0..nb {
        let p = x.as_ptr().add(b * QK8);
        let mut v = [vdupq_n_f32(0.0); 8];
        for (i, vi) in v.iter_mut().enumerate() {
            // SAFETY: block `b < nb` of `x` holds 32 floats.
            *vi = unsafe { vld1q_f32(p.add(4 * i)) };
        }
        // maxNum ignores NaN, as the reference's f32::max fold does.
        let mut m = vabsq_f32(v[0]);
        for vi in &v[1..] {
            m = vmaxnmq_f32(m, vabsq_f32(*vi));
        }
        let db = vmaxnmvq_f32(m) / 127.0;
        let id = if db > 0.0 { 1.0 / db } else { 0.0 };
        let mut q = [vdupq_n_s32(0); 8];
        for (qi, vi) in q.iter_mut().zip(&v) {
            *qi = vcvtaq_s32_f32(vmulq_n_f32(*vi, id));
        }
        let lo = vcombine_s8(
            vqmovn_s16(vcombine_s16(vqmovn_s32(q[0]), vqmovn_s32(q[1]))),
            vqmovn_s16(vcombine_s16(vqmovn_s32(q[2]), vqmovn_s32(q[3]))),
        );
        let hi = vcombine_s8(
            vqmovn_s16(vcombine_s16(vqmovn_s32(q[4]), vqmovn_s32(q[5]))),
            vqmovn_s16(vcombine_s16(vqmovn_s32(q[6]), vqmovn_s32(q[7]))),
        );
        // SAFETY: `qs` holds `nb * 32` quants (checked above).
        unsafe {
            vst1q_s8(qs.as_mut_ptr().add(b * QK8), lo);
            vst1q_s8(qs.as_mut_ptr().add(b * QK8 + 16), hi);
        }
        let s0 = vaddvq_s32(vaddq_s32(vaddq_s32(q[0], q[1]), vaddq_s32(q[2], q[3])));
        let s1 = vaddvq_s32(vaddq_s32(vaddq_s32(q[4], q[5]), vaddq_s32(q[6], q[7])));
        bsums[2 * b] = s0 as i16;
        bsums[2 * b + 1] = s1 as i16;
        d[b] = db;
        s[b] = db * (s0 + s1) as f32;
    }
}
