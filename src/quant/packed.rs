//! Row-interleaved ("packed") layout of quantized weights, repacked once at load for the AVX-512
//! VNNI kernels, with its scalar reference.
//!
//! In GGUF a weight row is a run of blocks, so an integer dot product leaves the partial sums of
//! one row spread over the lanes of a register and each block needs its own conversion and scaling
//! of that register. Here [`GROUP_ROWS`] rows are interleaved four bytes at a time: 64 bytes hold
//! four consecutive weights of each of 16 rows, so one `vpdpbusd` with four broadcast activation
//! bytes advances 16 row sums at once, and a block's scaling is one multiply-add for 16 rows.
//!
//! A matrix becomes `ceil(rows / 16)` groups (missing rows of the last group are zero). A group is
//! one quant section per GGUF block ("unit": 32 weights, or a 256-weight k-quant super-block),
//! then one scale section per unit. Quant section of a 32-weight block, with `u[i][e]` the unsigned
//! weight `e` (0..32) of row `i` (0..16) and steps `s` of four weights:
//! - Q4_0/Q4_1: 4 chunks of 64 bytes; byte `64m + 4i + j` holds `u[i][4m+j]` in its low nibble and
//!   `u[i][16+4m+j]` in its high nibble (exactly GGUF's byte `4m+j` of row `i`'s block).
//! - Q5_0/Q5_1: the same 256 bytes of nibbles, then 8 little-endian u64 masks: bit `4i + j` of
//!   mask `s` is the fifth bit (16) of `u[i][4s+j]`.
//! - Q8_0: 8 chunks of 64 bytes; byte `64s + 4i + j` is `u[i][4s+j] = q ^ 0x80 = q + 128`.
//!
//! - Q4_K (per super-block): 32 chunks of 64 bytes, byte `64k + 4i + j` = GGUF `qs[4k+j]` of row
//!   `i`; 32-weight sub-block `2c` is the low nibbles of chunks `8c..8c+8`, sub-block `2c+1` their
//!   high nibbles.
//! - Q6_K (per super-block): 8 sections of 384 bytes, one per 32-weight sub-block, each the nibble
//!   layout above (low four bits) followed by 2 chunks of 64 bytes of high bits: bits `2k, 2k+1` of
//!   byte `256 + 64h + 4i + j` are bits 4-5 of `u[i][4(4h+k) + j]`.
//!
//! Scale sections: the 16 rows' f16 `d`, then for Q4_1/Q5_1 their f16 minimums `m`. Weight `e` of
//! row `i` is `d * u + c` with `c = m`, or `c = -offset * d` for the formats with a fixed offset
//! ([`offset`]: 8, 16 or 128). Q4_K: f16 `d[16]`, f16 `dmin[16]`, u8 `sc[8][16]`, u8 `m[8][16]`
//! (sub-block, row), weight `d*sc*u - dmin*m`. Q6_K: f16 `d[16]`, i8 `sc[16][16]` (16-weight
//! sub-block, row), weight `d*sc*(u - 32)`. Sizes equal GGUF's except Q4_K (+2.8%: its 6-bit
//! scales are stored as bytes), so packing in place of the mmapped copy costs no memory.
//!
//! Plain Rust that rustc 1.63 accepts, no `unsafe`, like [`super::int8`] (hence no
//! `is_multiple_of` / `div_ceil`), so that an aarch64 test program can mount it too.
#![allow(clippy::manual_is_multiple_of, clippy::manual_div_ceil)]

use super::int8::{f16_to_f32, scale_min_k4, Q8Acts, Q8Row, WeightFormat, QK8};

/// Rows interleaved in one group: one i32 lane each in a 512-bit register.
pub const GROUP_ROWS: usize = 16;

/// Codes of the packable formats, for the kernels' const generic parameters.
pub mod code {
    /// Q4_0.
    pub const Q4_0: u8 = 0;
    /// Q4_1.
    pub const Q4_1: u8 = 1;
    /// Q5_0.
    pub const Q5_0: u8 = 2;
    /// Q5_1.
    pub const Q5_1: u8 = 3;
    /// Q8_0.
    pub const Q8_0: u8 = 4;
    /// Q4_K.
    pub const Q4K: u8 = 5;
    /// Q6_K.
    pub const Q6K: u8 = 6;
}

/// The format of a [`code`].
pub const fn format_of(c: u8) -> WeightFormat {
    match c {
        code::Q4_0 => WeightFormat::Q4_0,
        code::Q4_1 => WeightFormat::Q4_1,
        code::Q5_0 => WeightFormat::Q5_0,
        code::Q5_1 => WeightFormat::Q5_1,
        code::Q4K => WeightFormat::Q4K,
        code::Q6K => WeightFormat::Q6K,
        _ => WeightFormat::Q8_0,
    }
}

/// Whether a packed product of `n_rows` rows in `groups_len` bytes of groups (format `f`) with
/// the activations `xs` into `out_len` values of stride `ldo` has every length it reads and
/// writes in range: what a kernel checks before reading through raw pointers.
pub fn gemm_fits(
    f: WeightFormat,
    groups_len: usize,
    n_rows: usize,
    xs: &Q8Acts,
    out_len: usize,
    ldo: usize,
) -> bool {
    let nb = xs.cols / QK8;
    let ng = (n_rows + GROUP_ROWS - 1) / GROUP_ROWS;
    xs.cols % f.block_elems() == 0
        && groups_len >= ng * group_bytes(f, xs.cols)
        && xs.qs.len() >= xs.rows * xs.cols
        && xs.d.len() >= xs.rows * nb
        && xs.s.len() >= xs.rows * nb
        && xs.bsums.len() >= xs.rows * 2 * nb
        && ldo >= n_rows
        && (xs.rows == 0 || out_len >= (xs.rows - 1) * ldo + n_rows)
}

/// Whether `f` has a packed layout.
pub fn packable(f: WeightFormat) -> bool {
    !matches!(f, WeightFormat::Q5K)
}

/// Bytes of one unit's quant section in a group.
pub fn quant_bytes(f: WeightFormat) -> usize {
    match f {
        WeightFormat::Q4_0 | WeightFormat::Q4_1 => 256,
        WeightFormat::Q5_0 | WeightFormat::Q5_1 => 320,
        WeightFormat::Q4K => 2048,
        WeightFormat::Q6K => 3072,
        _ => 512,
    }
}

/// Whether `f` stores a minimum per block (otherwise a fixed offset).
pub fn has_min(f: WeightFormat) -> bool {
    matches!(f, WeightFormat::Q4_1 | WeightFormat::Q5_1)
}

/// Bytes of one unit's scale section in a group.
pub fn scale_bytes(f: WeightFormat) -> usize {
    match f {
        WeightFormat::Q4_1 | WeightFormat::Q5_1 => 4 * GROUP_ROWS,
        WeightFormat::Q4K => 4 * GROUP_ROWS + 16 * GROUP_ROWS,
        WeightFormat::Q6K => 2 * GROUP_ROWS + 16 * GROUP_ROWS,
        _ => 2 * GROUP_ROWS,
    }
}

/// Bytes of one group of 16 rows of `cols` weights (a whole number of units).
pub fn group_bytes(f: WeightFormat, cols: usize) -> usize {
    cols / f.block_elems() * (quant_bytes(f) + scale_bytes(f))
}

/// The fixed offset subtracted from the unsigned weights of formats without a minimum.
pub fn offset(f: WeightFormat) -> f32 {
    match f {
        WeightFormat::Q4_0 => 8.0,
        WeightFormat::Q5_0 => 16.0,
        WeightFormat::Q8_0 => 128.0,
        WeightFormat::Q6K => 32.0,
        _ => 0.0,
    }
}

/// Byte offsets of the scale (and minimum) fields and the quants inside one 32-weight GGUF block.
fn fields(f: WeightFormat) -> (usize, Option<usize>, usize) {
    match f {
        WeightFormat::Q4_0 => (0, None, 2),
        WeightFormat::Q4_1 => (0, Some(2), 4),
        WeightFormat::Q5_0 => (0, None, 6),
        WeightFormat::Q5_1 => (0, Some(2), 8),
        _ => (0, None, 2),
    }
}

/// Byte offset of the fifth-bit word in a Q5 block.
fn qh_at(f: WeightFormat) -> usize {
    if f == WeightFormat::Q5_0 {
        2
    } else {
        4
    }
}

/// The 256 unsigned 6-bit weights of a Q6_K super-block, in element order.
fn q6k_weights(blk: &[u8]) -> [u8; 256] {
    let mut u = [0u8; 256];
    for half in 0..2 {
        let ql = &blk[half * 64..half * 64 + 64];
        let qh = &blk[128 + half * 32..128 + half * 32 + 32];
        for l in 0..32 {
            let e = half * 128 + l;
            u[e] = (ql[l] & 0x0F) | ((qh[l] & 3) << 4);
            u[e + 32] = (ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4);
            u[e + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
            u[e + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
        }
    }
    u
}

/// Writes row `i` of one GGUF unit `blk` into its quant section `q` and scale section `sc`.
fn pack_unit(f: WeightFormat, blk: &[u8], i: usize, q: &mut [u8], sc: &mut [u8]) {
    match f {
        WeightFormat::Q4K => {
            for k in 0..32 {
                q[64 * k + 4 * i..64 * k + 4 * i + 4]
                    .copy_from_slice(&blk[16 + 4 * k..16 + 4 * k + 4]);
            }
            sc[2 * i..2 * i + 2].copy_from_slice(&blk[0..2]);
            sc[32 + 2 * i..34 + 2 * i].copy_from_slice(&blk[2..4]);
            for j in 0..8 {
                let (s, m) = scale_min_k4(j, &blk[4..16]);
                sc[64 + 16 * j + i] = s;
                sc[192 + 16 * j + i] = m;
            }
        }
        WeightFormat::Q6K => {
            let u = q6k_weights(blk);
            for b in 0..8 {
                let ub = &u[32 * b..32 * b + 32];
                let qb = &mut q[384 * b..384 * (b + 1)];
                for m in 0..4 {
                    for j in 0..4 {
                        qb[64 * m + 4 * i + j] =
                            (ub[4 * m + j] & 0x0F) | (ub[16 + 4 * m + j] & 0x0F) << 4;
                    }
                }
                for h in 0..2 {
                    for j in 0..4 {
                        let mut v = 0u8;
                        for k in 0..4 {
                            v |= (ub[4 * (4 * h + k) + j] >> 4) << (2 * k);
                        }
                        qb[256 + 64 * h + 4 * i + j] = v;
                    }
                }
            }
            sc[2 * i..2 * i + 2].copy_from_slice(&blk[208..210]);
            for j in 0..16 {
                sc[32 + 16 * j + i] = blk[192 + j];
            }
        }
        WeightFormat::Q8_0 => {
            for s in 0..8 {
                let v = u32::from_le_bytes([
                    blk[2 + 4 * s],
                    blk[3 + 4 * s],
                    blk[4 + 4 * s],
                    blk[5 + 4 * s],
                ]);
                q[64 * s + 4 * i..64 * s + 4 * i + 4]
                    .copy_from_slice(&(v ^ 0x8080_8080).to_le_bytes());
            }
            sc[2 * i..2 * i + 2].copy_from_slice(&blk[0..2]);
        }
        _ => {
            let (d_at, m_at, qs_at) = fields(f);
            for m in 0..4 {
                q[64 * m + 4 * i..64 * m + 4 * i + 4]
                    .copy_from_slice(&blk[qs_at + 4 * m..qs_at + 4 * m + 4]);
            }
            if matches!(f, WeightFormat::Q5_0 | WeightFormat::Q5_1) {
                let at = qh_at(f);
                let qh = u32::from_le_bytes([blk[at], blk[at + 1], blk[at + 2], blk[at + 3]]);
                // Bits 4s..4s+4 of qh are the fifth bits of step s: they go to bits 4i..4i+4
                // of mask s, i.e. one nibble of its byte i / 2.
                for s in 0..8 {
                    q[256 + 8 * s + i / 2] |= (((qh >> (4 * s)) & 0x0F) as u8) << (4 * (i % 2));
                }
            }
            sc[2 * i..2 * i + 2].copy_from_slice(&blk[d_at..d_at + 2]);
            if let Some(m) = m_at {
                sc[32 + 2 * i..32 + 2 * i + 2].copy_from_slice(&blk[m..m + 2]);
            }
        }
    }
}

/// Packs up to 16 GGUF rows (`src`, `row_bytes` each, whole rows) of format `f` into one group
/// (`dst`, [`group_bytes`] long). Rows past the end of `src` are packed as zeros.
///
/// Panics if `f` is not [`packable`] or the lengths disagree.
pub fn pack_group(f: WeightFormat, src: &[u8], row_bytes: usize, dst: &mut [u8]) {
    let bb = f.block_bytes();
    let nu = row_bytes / bb;
    assert!(
        packable(f) && nu * bb == row_bytes && src.len() % row_bytes.max(1) == 0,
        "pack_group: {f:?} rows of {row_bytes} bytes"
    );
    assert!(
        src.len() / row_bytes.max(1) <= GROUP_ROWS
            && dst.len() == group_bytes(f, nu * f.block_elems()),
        "pack_group: sizes"
    );
    let (qb, sb) = (quant_bytes(f), scale_bytes(f));
    for v in dst.iter_mut() {
        *v = 0;
    }
    let (quants, scales) = dst.split_at_mut(nu * qb);
    for (i, row) in src.chunks_exact(row_bytes.max(1)).enumerate() {
        for u in 0..nu {
            pack_unit(
                f,
                &row[u * bb..(u + 1) * bb],
                i,
                &mut quants[u * qb..(u + 1) * qb],
                &mut scales[u * sb..(u + 1) * sb],
            );
        }
    }
}

/// Packs a whole matrix of `n_rows` GGUF rows (`src`, `row_bytes` each) into its
/// `ceil(n_rows / 16)` groups, returned as one buffer.
pub fn pack_matrix(f: WeightFormat, src: &[u8], row_bytes: usize, n_rows: usize) -> Vec<u8> {
    let cols = row_bytes / f.block_bytes() * f.block_elems();
    let gb = group_bytes(f, cols);
    let mut out = vec![0u8; (n_rows + GROUP_ROWS - 1) / GROUP_ROWS * gb];
    for (g, dst) in out.chunks_exact_mut(gb.max(1)).enumerate() {
        let r0 = g * GROUP_ROWS;
        let r1 = n_rows.min(r0 + GROUP_ROWS);
        pack_group(f, &src[r0 * row_bytes..r1 * row_bytes], row_bytes, dst);
    }
    out
}

/// One 32-weight block of one row as the packed layout stores it: unsigned weights, the scale
/// of each 16-weight half, and the additive term per unit weight of each half (weight `e` is
/// `d[e / 16] * u[e] + c[e / 16]`).
struct RowBlock {
    u: [u8; 32],
    d: [f32; 2],
    c: [f32; 2],
}

/// Block `b` (32-weight, counted over the row) of row `i` of a packed group of `cols` columns.
fn block_of(f: WeightFormat, group: &[u8], cols: usize, i: usize, b: usize) -> RowBlock {
    let (qb, sb) = (quant_bytes(f), scale_bytes(f));
    let per_unit = f.block_elems() / QK8;
    let (unit, sub) = (b / per_unit, b % per_unit);
    let q = &group[unit * qb..(unit + 1) * qb];
    let sc = &group[cols / f.block_elems() * qb + unit * sb..][..sb];
    let f16 = |at: usize| f16_to_f32(u16::from_le_bytes([sc[at], sc[at + 1]]));
    let mut u = [0u8; 32];
    match f {
        WeightFormat::Q4K => {
            for (e, v) in u.iter_mut().enumerate() {
                let byte = q[64 * (8 * (sub / 2) + e / 4) + 4 * i + e % 4];
                *v = if sub % 2 == 0 { byte & 0x0F } else { byte >> 4 };
            }
            let d = f16(2 * i) * sc[64 + 16 * sub + i] as f32;
            let c = -f16(32 + 2 * i) * sc[192 + 16 * sub + i] as f32;
            return RowBlock {
                u,
                d: [d, d],
                c: [c, c],
            };
        }
        WeightFormat::Q6K => {
            let qs = &q[384 * sub..384 * (sub + 1)];
            for (e, v) in u.iter_mut().enumerate() {
                let (s, j) = (e / 4, e % 4);
                let byte = qs[64 * (s % 4) + 4 * i + j];
                let nib = if s < 4 { byte & 0x0F } else { byte >> 4 };
                let hi = (qs[256 + 64 * (s / 4) + 4 * i + j] >> (2 * (s % 4))) & 3;
                *v = nib | hi << 4;
            }
            let d = f16(2 * i);
            let d0 = d * (sc[32 + 16 * (2 * sub) + i] as i8) as f32;
            let d1 = d * (sc[32 + 16 * (2 * sub + 1) + i] as i8) as f32;
            return RowBlock {
                u,
                d: [d0, d1],
                c: [-32.0 * d0, -32.0 * d1],
            };
        }
        _ => {}
    }
    for s in 0..8 {
        for j in 0..4 {
            let e = 4 * s + j;
            u[e] = match f {
                WeightFormat::Q8_0 => q[64 * s + 4 * i + j],
                _ => {
                    let byte = q[64 * (s % 4) + 4 * i + j];
                    let nib = if s < 4 { byte & 0x0F } else { byte >> 4 };
                    let bit = 4 * i + j;
                    let fifth = match f {
                        WeightFormat::Q5_0 | WeightFormat::Q5_1 => {
                            (q[256 + 8 * s + bit / 8] >> (bit % 8)) & 1
                        }
                        _ => 0,
                    };
                    nib | fifth << 4
                }
            };
        }
    }
    let d = f16(2 * i);
    let c = if has_min(f) {
        f16(32 + 2 * i)
    } else {
        -offset(f) * d
    };
    RowBlock {
        u,
        d: [d, d],
        c: [c, c],
    }
}

/// Scalar reference of the packed kernels: the dots of the 16 rows of one packed group (`cols`
/// columns) with activation row `x`; padding rows give 0.
///
/// Panics if the group or `x` is shorter than `cols`.
pub fn dot_group(f: WeightFormat, group: &[u8], cols: usize, x: &Q8Row) -> [f32; GROUP_ROWS] {
    let mut out = [0f32; GROUP_ROWS];
    for (i, o) in out.iter_mut().enumerate() {
        let mut sum = 0f32;
        for b in 0..cols / QK8 {
            let blk = block_of(f, group, cols, i, b);
            let xq = &x.qs[b * QK8..(b + 1) * QK8];
            for h in 0..2 {
                let (w, a) = (&blk.u[16 * h..16 * h + 16], &xq[16 * h..16 * h + 16]);
                let dot: i32 = w.iter().zip(a).map(|(&w, &a)| w as i32 * a as i32).sum();
                let xsum: i32 = a.iter().map(|&a| a as i32).sum();
                sum += x.d[b] * (blk.d[h] * dot as f32 + blk.c[h] * xsum as f32);
            }
        }
        *o = sum;
    }
    out
}

/// Scalar reference of a packed matrix product: `out[t * ldo + r]` for the `n_rows` rows held by
/// `groups` (format `f`, `xs.cols` columns) and every token of `xs`.
///
/// Panics if the lengths disagree.
pub fn gemm_reference(
    f: WeightFormat,
    groups: &[u8],
    n_rows: usize,
    xs: &Q8Acts,
    out: &mut [f32],
    ldo: usize,
) {
    let gb = group_bytes(f, xs.cols);
    for t in 0..xs.rows {
        let x = xs.row(t);
        for (g, group) in groups.chunks_exact(gb.max(1)).enumerate() {
            let res = dot_group(f, group, xs.cols, &x);
            let r0 = g * GROUP_ROWS;
            let r1 = n_rows.min(r0 + GROUP_ROWS);
            out[t * ldo + r0..t * ldo + r1].copy_from_slice(&res[..r1 - r0]);
        }
    }
}

/// Rebuilds 32-weight GGUF block `b` of row `i` from a packed group of a 32-weight format (the
/// inverse of [`pack_group`]), for tests: `blk` is one block of format `f`.
pub fn unpack_block(
    f: WeightFormat,
    group: &[u8],
    cols: usize,
    i: usize,
    b: usize,
    blk: &mut [u8],
) {
    let u = block_of(f, group, cols, i, b).u;
    let (qb, sb) = (quant_bytes(f), scale_bytes(f));
    let nb = cols / QK8;
    let sc = &group[nb * qb + b * sb..nb * qb + (b + 1) * sb];
    let (d_at, m_at, qs_at) = fields(f);
    blk[d_at..d_at + 2].copy_from_slice(&sc[2 * i..2 * i + 2]);
    if let Some(m) = m_at {
        blk[m..m + 2].copy_from_slice(&sc[32 + 2 * i..34 + 2 * i]);
    }
    match f {
        WeightFormat::Q8_0 => {
            for e in 0..QK8 {
                blk[qs_at + e] = u[e] ^ 0x80;
            }
        }
        _ => {
            let mut qh = 0u32;
            for e in 0..16 {
                blk[qs_at + e] = (u[e] & 0x0F) | (u[e + 16] & 0x0F) << 4;
            }
            for (e, &v) in u.iter().enumerate() {
                qh |= ((v >> 4) as u32 & 1) << e;
            }
            if matches!(f, WeightFormat::Q5_0 | WeightFormat::Q5_1) {
                let at = qh_at(f);
                blk[at..at + 4].copy_from_slice(&qh.to_le_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::int8::{dot_row, quantize_row};

    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *seed >> 33
    }

    /// Random bytes with sane f16 scale fields (so sums stay finite).
    fn random_rows(f: WeightFormat, rows: usize, nb: usize, seed: &mut u64) -> Vec<u8> {
        let bb = f.block_bytes();
        let mut w: Vec<u8> = (0..rows * nb * bb).map(|_| lcg(seed) as u8).collect();
        let (d_at, m_at, _) = match f {
            WeightFormat::Q4K => (0, Some(2), 0),
            WeightFormat::Q6K => (208, None, 0),
            _ => fields(f),
        };
        for blk in w.chunks_exact_mut(bb) {
            let d = half::f16::from_f32(0.001 + (lcg(seed) % 1000) as f32 * 1e-5)
                .to_bits()
                .to_le_bytes();
            blk[d_at..d_at + 2].copy_from_slice(&d);
            if let Some(m) = m_at {
                let v = half::f16::from_f32(-0.01 * (lcg(seed) % 100) as f32 * 1e-2)
                    .to_bits()
                    .to_le_bytes();
                blk[m..m + 2].copy_from_slice(&v);
            }
        }
        w
    }

    const FORMATS: [WeightFormat; 5] = [
        WeightFormat::Q4_0,
        WeightFormat::Q4_1,
        WeightFormat::Q5_0,
        WeightFormat::Q5_1,
        WeightFormat::Q8_0,
    ];

    #[test]
    fn packing_round_trips_every_block() {
        let mut seed = 7;
        for f in FORMATS {
            for (rows, nb) in [(16, 3), (5, 1), (1, 2)] {
                let bb = f.block_bytes();
                let src = random_rows(f, rows, nb, &mut seed);
                let mut g = vec![0xAA; group_bytes(f, nb * QK8)];
                pack_group(f, &src, nb * bb, &mut g);
                let mut blk = vec![0u8; bb];
                for i in 0..rows {
                    for b in 0..nb {
                        unpack_block(f, &g, nb * QK8, i, b, &mut blk);
                        assert_eq!(
                            &blk[..],
                            &src[(i * nb + b) * bb..(i * nb + b + 1) * bb],
                            "{f:?} row {i} block {b}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn packed_dots_match_the_row_reference() {
        let mut seed = 11;
        for f in FORMATS
            .into_iter()
            .chain([WeightFormat::Q4K, WeightFormat::Q6K])
        {
            let (rows, units) = (13, 3);
            let bb = f.block_bytes();
            let src = random_rows(f, rows, units, &mut seed);
            let cols = units * f.block_elems();
            let nb = cols / QK8;
            let mut g = vec![0; group_bytes(f, cols)];
            pack_group(f, &src, units * bb, &mut g);
            let x: Vec<f32> = (0..nb * QK8)
                .map(|_| (lcg(&mut seed) % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            let (mut qs, mut d, mut s, mut bs) = (
                vec![0i8; nb * QK8],
                vec![0f32; nb],
                vec![0f32; nb],
                vec![0i16; 2 * nb],
            );
            quantize_row(&x, &mut qs, &mut d, &mut s, &mut bs);
            let xr = Q8Row {
                qs: &qs,
                d: &d,
                s: &s,
                bsums: &bs,
            };
            let got = dot_group(f, &g, cols, &xr);
            for i in 0..GROUP_ROWS {
                let want = if i < rows {
                    dot_row(f, &src[i * units * bb..(i + 1) * units * bb], &xr)
                } else {
                    0.0
                };
                assert!(
                    (got[i] - want).abs() <= 1e-4 * (1.0 + want.abs()),
                    "{f:?} row {i}: {} vs {want}",
                    got[i]
                );
            }
        }
    }
}
