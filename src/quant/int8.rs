//! Integer dot products of quantized weight rows with int8-quantized activations: the scalar
//! reference of the fast CPU path. Activations are quantized once per matrix product into
//! 32-element blocks (one f32 scale each, like ggml's Q8_1), every weight block is then multiplied
//! with them in integers and scaled once per block, which is what the SIMD kernels in
//! `crate::ffi::simd` do with VNNI, AVX2 or NEON dot-product instructions.
//!
//! This file is deliberately plain Rust that rustc 1.63 accepts, with no crate dependencies and no
//! `unsafe`: the aarch64 test program (tests/neon) includes it by path, so that the NEON kernels
//! are checked under qemu against this very source.

/// Elements per activation block.
pub const QK8: usize = 32;

/// Elements per k-quant super-block.
pub const QKK: usize = 256;

/// Weight formats the integer path handles, with their GGUF block layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightFormat {
    /// 32 weights `d * (q - 8)`, 4-bit `q`: f16 d, 16 bytes of nibbles (18 bytes).
    Q4_0,
    /// 32 weights `d * q + m`, 4-bit `q`: f16 d, f16 m, 16 bytes of nibbles (20 bytes).
    Q4_1,
    /// 32 weights `d * (q - 16)`, 5-bit `q`: f16 d, u32 fifth bits, 16 bytes of nibbles (22 bytes).
    Q5_0,
    /// 32 weights `d * q + m`, 5-bit `q`: f16 d, f16 m, u32 fifth bits, nibbles (24 bytes).
    Q5_1,
    /// 32 weights `d * q`, signed 8-bit `q`: f16 d, 32 bytes (34 bytes).
    Q8_0,
    /// 256 weights in 8 sub-blocks of 32, `d*sc*q - dmin*m`, 4-bit `q` (144 bytes).
    Q4K,
    /// As Q4_K with a fifth bit per weight (176 bytes).
    Q5K,
    /// 256 weights `d * sc * (q - 32)`, 6-bit `q`, 16 signed 8-bit scales (210 bytes).
    Q6K,
}

impl WeightFormat {
    /// Weights per block.
    pub fn block_elems(self) -> usize {
        match self {
            WeightFormat::Q4K | WeightFormat::Q5K | WeightFormat::Q6K => QKK,
            _ => QK8,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            WeightFormat::Q4_0 => 18,
            WeightFormat::Q4_1 => 20,
            WeightFormat::Q5_0 => 22,
            WeightFormat::Q5_1 => 24,
            WeightFormat::Q8_0 => 34,
            WeightFormat::Q4K => 144,
            WeightFormat::Q5K => 176,
            WeightFormat::Q6K => 210,
        }
    }
}

/// Borrowed activations of one row quantized by [`quantize_row`]: element `i` is
/// `qs[i] * d[i / 32]`.
#[derive(Clone, Copy, Debug)]
pub struct Q8Row<'a> {
    /// Quants, `n` of them.
    pub qs: &'a [i8],
    /// Scale of each 32-element block.
    pub d: &'a [f32],
    /// `d[b] * (sum of the block's quants)`, for weight formats with an offset or minimum.
    pub s: &'a [f32],
    /// Sum of each 16 consecutive quants, for formats whose scales change every 16 weights.
    pub bsums: &'a [i16],
}

/// Converts IEEE half-precision bits to f32 exactly (subnormals, infinities and NaN included).
#[inline]
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h >> 10) & 0x1F) as u32;
    let man = (h & 0x3FF) as u32;
    let bits = if exp == 0 {
        if man == 0 {
            sign
        } else {
            // Subnormal: value is man * 2^-24, exactly representable as an f32.
            let v = man as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -v } else { v };
        }
    } else if exp == 31 {
        sign | 0x7F80_0000 | (man << 13)
    } else {
        sign | ((exp + 112) << 23) | (man << 13)
    };
    f32::from_bits(bits)
}

#[inline(always)]
fn f16_at(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// Quantizes `x` (a whole number of 32-element blocks) to int8 with one scale per block:
/// `d = max|x| / 127`, `q = round(x / d)` (half away from zero). Output slices must hold
/// `n`, `n / 32`, `n / 32` and `n / 16` values.
pub fn quantize_row(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32], bsums: &mut [i16]) {
    for (b, xb) in x.chunks_exact(QK8).enumerate() {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let db = amax / 127.0;
        let id = if db > 0.0 { 1.0 / db } else { 0.0 };
        let mut sum = 0i32;
        for (h, half) in xb.chunks_exact(16).enumerate() {
            let mut hs = 0i32;
            for (i, &v) in half.iter().enumerate() {
                let q = (v * id).round() as i32;
                qs[b * QK8 + h * 16 + i] = q as i8;
                hs += q;
            }
            bsums[b * 2 + h] = hs as i16;
            sum += hs;
        }
        d[b] = db;
        s[b] = db * sum as f32;
    }
}

/// Dot product of one weight row (`w`, whole blocks of `fmt`) with quantized activations `x` of
/// the same length, by the reference arithmetic every SIMD kernel must reproduce up to float
/// rounding: an exact integer dot per 32 weights, then `scale_w * d_x * idot` (plus the minimum
/// or offset term through `s`).
pub fn dot_row(fmt: WeightFormat, w: &[u8], x: &Q8Row) -> f32 {
    match fmt {
        WeightFormat::Q4_0 => dot_q4_0(w, x),
        WeightFormat::Q4_1 => dot_q4_1(w, x),
        WeightFormat::Q5_0 => dot_q5_0(w, x),
        WeightFormat::Q5_1 => dot_q5_1(w, x),
        WeightFormat::Q8_0 => dot_q8_0(w, x),
        WeightFormat::Q4K => dot_q4k(w, x),
        WeightFormat::Q5K => dot_q5k(w, x),
        WeightFormat::Q6K => dot_q6k(w, x),
    }
}

/// Integer dot of 32 weights with the activation quants of block `b`.
#[inline(always)]
fn idot32(v: &[i32; 32], x: &Q8Row, b: usize) -> i32 {
    let q = &x.qs[b * QK8..b * QK8 + QK8];
    let mut acc = 0i32;
    for i in 0..QK8 {
        acc += v[i] * q[i] as i32;
    }
    acc
}

/// Unpacks the 32 four-bit values of a Q4_0/Q4_1 block: low nibbles first, then high nibbles.
#[inline(always)]
fn nibbles(qs: &[u8], v: &mut [i32; 32]) {
    for j in 0..16 {
        v[j] = (qs[j] & 0x0F) as i32;
        v[j + 16] = (qs[j] >> 4) as i32;
    }
}

/// Adds the fifth bits of a Q5_0/Q5_1 block (`qh` little-endian, bit `j` for element `j`).
#[inline(always)]
fn fifth_bits(qh: u32, v: &mut [i32; 32]) {
    for (j, e) in v.iter_mut().enumerate() {
        *e |= (((qh >> j) & 1) << 4) as i32;
    }
}

/// Q4_0 · q8.
pub fn dot_q4_0(w: &[u8], x: &Q8Row) -> f32 {
    let mut sum = 0f32;
    let mut v = [0i32; 32];
    for (b, blk) in w.chunks_exact(18).enumerate() {
        let d = f16_at(blk, 0);
        nibbles(&blk[2..18], &mut v);
        let i = idot32(&v, x, b);
        // Offset -8 folded out of the integer dot: sum d*(q-8)*xq*dx = d*(dx*i) - 8*d*s.
        sum += d * (x.d[b] * i as f32) - 8.0 * d * x.s[b];
    }
    sum
}

/// Q4_1 · q8.
pub fn dot_q4_1(w: &[u8], x: &Q8Row) -> f32 {
    let mut sum = 0f32;
    let mut v = [0i32; 32];
    for (b, blk) in w.chunks_exact(20).enumerate() {
        let (d, m) = (f16_at(blk, 0), f16_at(blk, 2));
        nibbles(&blk[4..20], &mut v);
        let i = idot32(&v, x, b);
        sum += d * (x.d[b] * i as f32) + m * x.s[b];
    }
    sum
}

/// Q5_0 · q8.
pub fn dot_q5_0(w: &[u8], x: &Q8Row) -> f32 {
    let mut sum = 0f32;
    let mut v = [0i32; 32];
    for (b, blk) in w.chunks_exact(22).enumerate() {
        let d = f16_at(blk, 0);
        let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
        nibbles(&blk[6..22], &mut v);
        fifth_bits(qh, &mut v);
        let i = idot32(&v, x, b);
        sum += d * (x.d[b] * i as f32) - 16.0 * d * x.s[b];
    }
    sum
}

/// Q5_1 · q8.
pub fn dot_q5_1(w: &[u8], x: &Q8Row) -> f32 {
    let mut sum = 0f32;
    let mut v = [0i32; 32];
    for (b, blk) in w.chunks_exact(24).enumerate() {
        let (d, m) = (f16_at(blk, 0), f16_at(blk, 2));
        let qh = u32::from_le_bytes([blk[4], blk[5], blk[6], blk[7]]);
        nibbles(&blk[8..24], &mut v);
        fifth_bits(qh, &mut v);
        let i = idot32(&v, x, b);
        sum += d * (x.d[b] * i as f32) + m * x.s[b];
    }
    sum
}

/// Q8_0 · q8.
pub fn dot_q8_0(w: &[u8], x: &Q8Row) -> f32 {
    let mut sum = 0f32;
    let mut v = [0i32; 32];
    for (b, blk) in w.chunks_exact(34).enumerate() {
        let d = f16_at(blk, 0);
        for (e, &q) in v.iter_mut().zip(&blk[2..34]) {
            *e = q as i8 as i32;
        }
        let i = idot32(&v, x, b);
        sum += d * (x.d[b] * i as f32);
    }
    sum
}

/// Unpacks the 6-bit scale and minimum of sub-block `j` (0..8) from Q4_K/Q5_K's 12 packed bytes.
#[inline(always)]
pub fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        ((s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    }
}

/// Shared body of Q4_K and Q5_K: `qh` is `Some` for Q5_K.
#[inline(always)]
fn dot_k4_k5(blk: &[u8], qs: &[u8], qh: Option<&[u8]>, x: &Q8Row, b0: usize) -> f32 {
    let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
    let scales = &blk[4..16];
    let mut sum = 0f32;
    let mut v = [0i32; 32];
    for sub in 0..8 {
        let (sc, m) = scale_min_k4(sub, scales);
        let q = &qs[(sub / 2) * 32..(sub / 2) * 32 + 32];
        let shift = if sub % 2 == 0 { 0 } else { 4 };
        for l in 0..32 {
            v[l] = ((q[l] >> shift) & 0x0F) as i32;
            if let Some(h) = qh {
                v[l] |= (((h[l] >> sub) & 1) << 4) as i32;
            }
        }
        let b = b0 + sub;
        let i = idot32(&v, x, b);
        sum += d * sc as f32 * (x.d[b] * i as f32) - dmin * m as f32 * x.s[b];
    }
    sum
}

/// Q4_K · q8.
pub fn dot_q4k(w: &[u8], x: &Q8Row) -> f32 {
    let mut sum = 0f32;
    for (k, blk) in w.chunks_exact(144).enumerate() {
        sum += dot_k4_k5(blk, &blk[16..144], None, x, k * 8);
    }
    sum
}

/// Q5_K · q8.
pub fn dot_q5k(w: &[u8], x: &Q8Row) -> f32 {
    let mut sum = 0f32;
    for (k, blk) in w.chunks_exact(176).enumerate() {
        sum += dot_k4_k5(blk, &blk[48..176], Some(&blk[16..48]), x, k * 8);
    }
    sum
}

/// Q6_K · q8: each 32-element activation block meets two 16-weight groups with their own scale.
pub fn dot_q6k(w: &[u8], x: &Q8Row) -> f32 {
    let mut sum = 0f32;
    for (k, blk) in w.chunks_exact(210).enumerate() {
        let (ql_all, qh_all, sc) = (&blk[0..128], &blk[128..192], &blk[192..208]);
        let d = f16_at(blk, 208);
        for quarter in 0..8 {
            // Quarter `quarter` of the super-block = elements 32*quarter.. of half `quarter / 4`.
            let (half, part) = (quarter / 4, quarter % 4);
            let ql = &ql_all[half * 64..half * 64 + 64];
            let qh = &qh_all[half * 32..half * 32 + 32];
            let b = k * 8 + quarter;
            let xq = &x.qs[b * QK8..b * QK8 + QK8];
            let mut group_sums = [0i32; 2];
            for l in 0..32 {
                let low = match part {
                    0 => ql[l] & 0x0F,
                    1 => ql[l + 32] & 0x0F,
                    2 => ql[l] >> 4,
                    _ => ql[l + 32] >> 4,
                };
                let q = (low | (((qh[l] >> (2 * part)) & 3) << 4)) as i32 - 32;
                group_sums[l / 16] += q * xq[l] as i32;
            }
            let s0 = sc[half * 8 + part * 2] as i8 as i32;
            let s1 = sc[half * 8 + part * 2 + 1] as i8 as i32;
            sum += d * (x.d[b] * (s0 * group_sums[0] + s1 * group_sums[1]) as f32);
        }
    }
    sum
}

/// Scalar matrix-vector product: `out[r] = dot_row(f, row r of w, x)` for `out.len()` rows of
/// `row_bytes` bytes each.
pub fn dot_rows(f: WeightFormat, w: &[u8], row_bytes: usize, x: &Q8Row, out: &mut [f32]) {
    for (o, row) in out.iter_mut().zip(w.chunks_exact(row_bytes)) {
        *o = dot_row(f, row, x);
    }
}

/// Scalar matrix product: `out[t * ldo + r] = dot_row(f, row r of w, row t of xs)` for
/// `r < n_rows`, `t < xs.rows`.
pub fn gemm(f: WeightFormat, w: &[u8], row_bytes: usize, n_rows: usize, xs: &Q8Acts, out: &mut [f32], ldo: usize) {
    for t in 0..xs.rows {
        let x = xs.row(t);
        for (r, row) in w.chunks_exact(row_bytes).take(n_rows).enumerate() {
            out[t * ldo + r] = dot_row(f, row, &x);
        }
    }
}

/// Owned int8 activations of `rows` rows of `cols` elements (`cols` a multiple of 32), quantized
/// row by row with [`quantize_row`]; reused across matrix products to avoid allocation.
#[derive(Clone, Debug, Default)]
pub struct Q8Acts {
    /// Rows held.
    pub rows: usize,
    /// Elements per row.
    pub cols: usize,
    /// Quants, row-major.
    pub qs: Vec<i8>,
    /// Block scales, row-major.
    pub d: Vec<f32>,
    /// Block sums times scale, row-major.
    pub s: Vec<f32>,
    /// Sums of 16 quants, row-major.
    pub bsums: Vec<i16>,
}

impl Q8Acts {
    /// Resizes for `rows x cols` (contents unspecified until quantized into).
    pub fn reshape(&mut self, rows: usize, cols: usize) {
        self.rows = rows;
        self.cols = cols;
        self.qs.resize(rows * cols, 0);
        self.d.resize(rows * cols / QK8, 0.0);
        self.s.resize(rows * cols / QK8, 0.0);
        self.bsums.resize(rows * cols / 16, 0);
    }

    /// Row `i` as a borrowed [`Q8Row`].
    pub fn row(&self, i: usize) -> Q8Row<'_> {
        let (c, b) = (self.cols, self.cols / QK8);
        Q8Row {
            qs: &self.qs[i * c..(i + 1) * c],
            d: &self.d[i * b..(i + 1) * b],
            s: &self.s[i * b..(i + 1) * b],
            bsums: &self.bsums[i * 2 * b..(i + 1) * 2 * b],
        }
    }

    /// Mutable parts of row `i`: quants, scales, scaled sums, 16-sums.
    pub fn row_parts_mut(&mut self, i: usize) -> (&mut [i8], &mut [f32], &mut [f32], &mut [i16]) {
        let (c, b) = (self.cols, self.cols / QK8);
        (
            &mut self.qs[i * c..(i + 1) * c],
            &mut self.d[i * b..(i + 1) * b],
            &mut self.s[i * b..(i + 1) * b],
            &mut self.bsums[i * 2 * b..(i + 1) * 2 * b],
        )
    }
}

#[cfg(test)]
#[path = "int8_tests.rs"]
mod tests;
