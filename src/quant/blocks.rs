//! The ggml block formats as `#[repr(C)]` structs, each read from its little-endian bytes and
//! dequantized exactly as ggml (and the `gguf` Python package) do, operation for operation, so that
//! results agree bit for bit. The structs document the layout; the hot loops read them field by
//! field from byte slices, which keeps the crate free of `unsafe` outside the C boundary.

use half::f16;

/// One quantized block type: its byte size, how to read it, and how to expand it to `N` floats.
pub trait QuantBlock<const N: usize>: Sized {
    /// Bytes one block occupies in a model file.
    const BYTES: usize;
    /// Reads a block from exactly [`Self::BYTES`] little-endian bytes.
    fn read(b: &[u8]) -> Self;
    /// Writes the block's `N` values into `out` with ggml's arithmetic, in ggml's element order.
    fn dequantize(&self, out: &mut [f32; N]);
}

/// Elements in one block of the 32-element ("legacy") formats.
pub const QK: usize = 32;
/// Elements in one super-block of the k-quant formats.
pub const QK_K: usize = 256;

fn f16_at(b: &[u8], at: usize) -> f16 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn bytes_at<const M: usize>(b: &[u8], at: usize) -> [u8; M] {
    let mut a = [0u8; M];
    a.copy_from_slice(&b[at..at + M]);
    a
}

fn i8s_at<const M: usize>(b: &[u8], at: usize) -> [i8; M] {
    let mut a = [0i8; M];
    for (o, &v) in a.iter_mut().zip(&b[at..at + M]) {
        *o = v as i8;
    }
    a
}

/// Q4_0: 32 weights `d * (q - 8)` with 4-bit `q`; element `j` is the low nibble of `qs[j]` and
/// element `j + 16` its high nibble.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ4_0 {
    /// Scale.
    pub d: f16,
    /// Packed 4-bit quants.
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);

impl QuantBlock<QK> for BlockQ4_0 {
    const BYTES: usize = 18;
    #[inline(always)]
    fn read(b: &[u8]) -> Self {
        BlockQ4_0 { d: f16_at(b, 0), qs: bytes_at(b, 2) }
    }
    #[inline(always)]
    fn dequantize(&self, out: &mut [f32; QK]) {
        let d = self.d.to_f32();
        let (lo, hi) = out.split_at_mut(QK / 2);
        for ((l, h), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(&self.qs) {
            *l = ((q & 0x0F) as i32 - 8) as f32 * d;
            *h = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

/// Q4_1: 32 weights `d * q + m` with 4-bit `q`, nibble order as in [`BlockQ4_0`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ4_1 {
    /// Scale.
    pub d: f16,
    /// Minimum (offset added after scaling).
    pub m: f16,
    /// Packed 4-bit quants.
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);

impl QuantBlock<QK> for BlockQ4_1 {
    const BYTES: usize = 20;
    #[inline(always)]
    fn read(b: &[u8]) -> Self {
        BlockQ4_1 { d: f16_at(b, 0), m: f16_at(b, 2), qs: bytes_at(b, 4) }
    }
    #[inline(always)]
    fn dequantize(&self, out: &mut [f32; QK]) {
        let d = self.d.to_f32();
        let m = self.m.to_f32();
        let (lo, hi) = out.split_at_mut(QK / 2);
        for ((l, h), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(&self.qs) {
            *l = (q & 0x0F) as f32 * d + m;
            *h = (q >> 4) as f32 * d + m;
        }
    }
}

/// Q5_0: 32 weights `d * (q - 16)` with 5-bit `q`: low four bits as in [`BlockQ4_0`], fifth bit of
/// element `j` is bit `j` of the little-endian `u32` in `qh`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ5_0 {
    /// Scale.
    pub d: f16,
    /// Fifth bits, one per element (a little-endian `u32` stored as bytes to keep the size 22).
    pub qh: [u8; 4],
    /// Packed low 4 bits.
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);

impl QuantBlock<QK> for BlockQ5_0 {
    const BYTES: usize = 22;
    #[inline(always)]
    fn read(b: &[u8]) -> Self {
        BlockQ5_0 { d: f16_at(b, 0), qh: bytes_at(b, 2), qs: bytes_at(b, 6) }
    }
    #[inline(always)]
    fn dequantize(&self, out: &mut [f32; QK]) {
        let d = self.d.to_f32();
        let qh = u32::from_le_bytes(self.qh);
        for j in 0..QK / 2 {
            let q = self.qs[j];
            let h0 = ((qh >> j) & 1) as i32;
            let h1 = ((qh >> (j + 16)) & 1) as i32;
            out[j] = (((q & 0x0F) as i32 | (h0 << 4)) - 16) as f32 * d;
            out[j + 16] = (((q >> 4) as i32 | (h1 << 4)) - 16) as f32 * d;
        }
    }
}

/// Q5_1: 32 weights `d * q + m` with 5-bit `q`, bit layout as in [`BlockQ5_0`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ5_1 {
    /// Scale.
    pub d: f16,
    /// Minimum.
    pub m: f16,
    /// Fifth bits (little-endian `u32` as bytes).
    pub qh: [u8; 4],
    /// Packed low 4 bits.
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);

impl QuantBlock<QK> for BlockQ5_1 {
    const BYTES: usize = 24;
    #[inline(always)]
    fn read(b: &[u8]) -> Self {
        BlockQ5_1 { d: f16_at(b, 0), m: f16_at(b, 2), qh: bytes_at(b, 4), qs: bytes_at(b, 8) }
    }
    #[inline(always)]
    fn dequantize(&self, out: &mut [f32; QK]) {
        let d = self.d.to_f32();
        let m = self.m.to_f32();
        let qh = u32::from_le_bytes(self.qh);
        for j in 0..QK / 2 {
            let q = self.qs[j];
            let h0 = (qh >> j) & 1;
            let h1 = (qh >> (j + 16)) & 1;
            out[j] = ((q & 0x0F) as u32 | (h0 << 4)) as f32 * d + m;
            out[j + 16] = ((q >> 4) as u32 | (h1 << 4)) as f32 * d + m;
        }
    }
}

/// Q8_0: 32 weights `d * q` with signed 8-bit `q`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8_0 {
    /// Scale.
    pub d: f16,
    /// Quants.
    pub qs: [i8; QK],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

impl QuantBlock<QK> for BlockQ8_0 {
    const BYTES: usize = 34;
    #[inline(always)]
    fn read(b: &[u8]) -> Self {
        BlockQ8_0 { d: f16_at(b, 0), qs: i8s_at(b, 2) }
    }
    #[inline(always)]
    fn dequantize(&self, out: &mut [f32; QK]) {
        let d = self.d.to_f32();
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = q as f32 * d;
        }
    }
}

/// Unpacks the 6-bit scale and minimum of sub-block `j` (0..8) from the 12 packed bytes shared by
/// Q4_K and Q5_K: sub-blocks 0..4 keep their six bits in bytes `j` and `j + 4`; sub-blocks 4..8 take
/// their low four bits from byte `j + 4` and their top two from the spare high bits of 0..8.
#[inline(always)]
fn scale_min_k4(j: usize, s: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        ((s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    }
}

/// Q4_K: 256 weights in eight sub-blocks of 32, weight `d*sc * q - dmin*m` with 4-bit `q` and 6-bit
/// per-sub-block `sc`, `m`; each 64-element group uses 32 bytes of `qs`, low nibbles first.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ4K {
    /// Super-block scale of the sub-block scales.
    pub d: f16,
    /// Super-block scale of the sub-block minimums.
    pub dmin: f16,
    /// Eight 6-bit scales and eight 6-bit minimums, packed.
    pub scales: [u8; 12],
    /// Packed 4-bit quants.
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);

impl QuantBlock<QK_K> for BlockQ4K {
    const BYTES: usize = 144;
    #[inline(always)]
    fn read(b: &[u8]) -> Self {
        BlockQ4K { d: f16_at(b, 0), dmin: f16_at(b, 2), scales: bytes_at(b, 4), qs: bytes_at(b, 16) }
    }
    #[inline(always)]
    fn dequantize(&self, out: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        let dmin = self.dmin.to_f32();
        for (g, (o, q)) in out.chunks_exact_mut(64).zip(self.qs.chunks_exact(32)).enumerate() {
            let (sc1, m1) = scale_min_k4(2 * g, &self.scales);
            let (sc2, m2) = scale_min_k4(2 * g + 1, &self.scales);
            let (d1, dm1) = (d * sc1 as f32, dmin * m1 as f32);
            let (d2, dm2) = (d * sc2 as f32, dmin * m2 as f32);
            let (lo, hi) = o.split_at_mut(32);
            for ((l, h), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(q) {
                *l = d1 * (q & 0x0F) as f32 - dm1;
                *h = d2 * (q >> 4) as f32 - dm2;
            }
        }
    }
}

/// Q5_K: as [`BlockQ4K`] with a fifth bit per weight: bit `s` of `qh[l]` belongs to element `l` of
/// sub-block `s`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ5K {
    /// Super-block scale of the sub-block scales.
    pub d: f16,
    /// Super-block scale of the sub-block minimums.
    pub dmin: f16,
    /// Eight 6-bit scales and eight 6-bit minimums, packed as in Q4_K.
    pub scales: [u8; 12],
    /// Fifth bits.
    pub qh: [u8; QK_K / 8],
    /// Packed low 4 bits.
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 176);

impl QuantBlock<QK_K> for BlockQ5K {
    const BYTES: usize = 176;
    #[inline(always)]
    fn read(b: &[u8]) -> Self {
        BlockQ5K {
            d: f16_at(b, 0),
            dmin: f16_at(b, 2),
            scales: bytes_at(b, 4),
            qh: bytes_at(b, 16),
            qs: bytes_at(b, 48),
        }
    }
    #[inline(always)]
    fn dequantize(&self, out: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        let dmin = self.dmin.to_f32();
        for (g, (o, q)) in out.chunks_exact_mut(64).zip(self.qs.chunks_exact(32)).enumerate() {
            let (sc1, m1) = scale_min_k4(2 * g, &self.scales);
            let (sc2, m2) = scale_min_k4(2 * g + 1, &self.scales);
            let (d1, dm1) = (d * sc1 as f32, dmin * m1 as f32);
            let (d2, dm2) = (d * sc2 as f32, dmin * m2 as f32);
            let (lo, hi) = o.split_at_mut(32);
            for (((l, h), &q), &qh) in lo.iter_mut().zip(hi.iter_mut()).zip(q).zip(&self.qh) {
                let b1 = ((qh >> (2 * g)) & 1) << 4;
                let b2 = ((qh >> (2 * g + 1)) & 1) << 4;
                *l = d1 * ((q & 0x0F) | b1) as f32 - dm1;
                *h = d2 * ((q >> 4) | b2) as f32 - dm2;
            }
        }
    }
}

/// Q6_K: 256 weights `d * scales[e / 16] * (q - 32)` with 6-bit `q`: per 128-element half, the low
/// nibbles of `ql[0..64]` then their high nibbles, with two bits each from `qh[0..32]` at shifts
/// 0, 2, 4, 6 for the four 32-element quarters.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ6K {
    /// Low 4 bits.
    pub ql: [u8; QK_K / 2],
    /// High 2 bits.
    pub qh: [u8; QK_K / 4],
    /// Signed 8-bit scale of each 16-element group.
    pub scales: [i8; QK_K / 16],
    /// Super-block scale.
    pub d: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);

impl QuantBlock<QK_K> for BlockQ6K {
    const BYTES: usize = 210;
    #[inline(always)]
    fn read(b: &[u8]) -> Self {
        BlockQ6K { ql: bytes_at(b, 0), qh: bytes_at(b, 128), scales: i8s_at(b, 192), d: f16_at(b, 208) }
    }
    #[inline(always)]
    fn dequantize(&self, out: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        let mut ds = [0f32; QK_K / 16];
        for (o, &s) in ds.iter_mut().zip(&self.scales) {
            *o = d * s as f32;
        }
        for half in 0..2 {
            let ql = &self.ql[half * 64..half * 64 + 64];
            let qh = &self.qh[half * 32..half * 32 + 32];
            let o = &mut out[half * 128..half * 128 + 128];
            let ds = &ds[half * 8..half * 8 + 8];
            for l in 0..32 {
                let h = qh[l];
                let q1 = ((ql[l] & 0x0F) | ((h & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0x0F) | (((h >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((h >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((h >> 6) & 3) << 4)) as i32 - 32;
                // Group of 16 for element e is e / 16; l / 16 picks the first or second of a quarter.
                let g = l / 16;
                o[l] = ds[g] * q1 as f32;
                o[l + 32] = ds[2 + g] * q2 as f32;
                o[l + 64] = ds[4 + g] * q3 as f32;
                o[l + 96] = ds[6 + g] * q4 as f32;
            }
        }
    }
}

/// Q8_K: the activation block a future integer dot product quantizes `x` into (256 signed 8-bit
/// values, an f32 scale, and sums of each 16 quants that k-quant minimum terms need).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8K {
    /// Scale.
    pub d: f32,
    /// Quants.
    pub qs: [i8; QK_K],
    /// Sum of each 16 consecutive quants.
    pub bsums: [i16; QK_K / 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 292);

impl QuantBlock<QK_K> for BlockQ8K {
    const BYTES: usize = 292;
    #[inline(always)]
    fn read(b: &[u8]) -> Self {
        let mut bsums = [0i16; QK_K / 16];
        for (i, o) in bsums.iter_mut().enumerate() {
            *o = i16::from_le_bytes([b[260 + 2 * i], b[261 + 2 * i]]);
        }
        BlockQ8K { d: f32::from_le_bytes(bytes_at(b, 0)), qs: i8s_at(b, 4), bsums }
    }
    #[inline(always)]
    fn dequantize(&self, out: &mut [f32; QK_K]) {
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = self.d * q as f32;
        }
    }
}

impl BlockQ8K {
    /// Quantizes 256 activations with ggml's rule (scale = -max|x|/127 by the signed extreme,
    /// round to nearest) into a block whose `bsums` are filled.
    pub fn quantize(x: &[f32; QK_K]) -> Self {
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in x {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        let mut blk = BlockQ8K { d: 0.0, qs: [0; QK_K], bsums: [0; QK_K / 16] };
        if amax == 0.0 {
            return blk;
        }
        let iscale = -127.0 / max;
        for (q, &v) in blk.qs.iter_mut().zip(x) {
            *q = (iscale * v).round().min(127.0) as i8;
        }
        for (s, qs) in blk.bsums.iter_mut().zip(blk.qs.chunks_exact(16)) {
            *s = qs.iter().map(|&q| q as i16).sum();
        }
        blk.d = 1.0 / iscale;
        blk
    }
}
