//! Row-interleaved ("packed") layout of 32-element block weights, repacked once at load for the
//! AVX-512 VNNI kernels, with its scalar reference.
//!
//! In GGUF a weight row is a run of blocks, so an integer dot product leaves the partial sums of
//! one row spread over the lanes of a register and each block needs its own conversion and scaling
//! of that register. Here [`GROUP_ROWS`] rows are interleaved four bytes at a time: 64 bytes hold
//! four consecutive weights of each of 16 rows, so one `vpdpbusd` with four broadcast activation
//! bytes advances 16 row sums at once, and a block's scaling is one multiply-add for 16 rows.
//!
//! A matrix becomes `ceil(rows / 16)` groups (missing rows of the last group are zero); a group of
//! `nb` blocks is `nb` quant sections followed by `nb` scale sections. Quant section of block `b`,
//! with `u[i][e]` the unsigned weight `e` (0..32) of row `i` (0..16) and steps `s` of four weights:
//! - Q4_0/Q4_1: 4 chunks of 64 bytes; byte `64m + 4i + j` holds `u[i][4m+j]` in its low nibble and
//!   `u[i][16+4m+j]` in its high nibble (exactly GGUF's byte `4m+j` of row `i`'s block).
//! - Q5_0/Q5_1: the same 256 bytes of nibbles, then 8 little-endian u64 masks: bit `4i + j` of
//!   mask `s` is the fifth bit (16) of `u[i][4s+j]`.
//! - Q8_0: 8 chunks of 64 bytes; byte `64s + 4i + j` is `u[i][4s+j] = q ^ 0x80 = q + 128`.
//!
//! Scale section of block `b`: the 16 rows' f16 scales `d`, then for Q4_1/Q5_1 their f16 minimums
//! `m`. Weight `e` of row `i` is `d * u + c` with `c = m`, or `c = -offset * d` for the formats
//! with a fixed offset ([`offset`]: 8, 16 or 128). Sizes equal GGUF's, so packing in place of the
//! mmapped copy costs no memory.
//!
//! Plain Rust that rustc 1.63 accepts, no `unsafe`, like [`super::int8`] (hence no
//! `is_multiple_of` / `div_ceil`), so that an aarch64 test program can mount it too.
#![allow(clippy::manual_is_multiple_of, clippy::manual_div_ceil)]

use super::int8::{f16_to_f32, Q8Row, WeightFormat, QK8};

/// Rows interleaved in one group: one i32 lane each in a 512-bit register.
pub const GROUP_ROWS: usize = 16;

/// Whether `f` has a packed layout.
pub fn packable(f: WeightFormat) -> bool {
    matches!(
        f,
        WeightFormat::Q4_0
            | WeightFormat::Q4_1
            | WeightFormat::Q5_0
            | WeightFormat::Q5_1
            | WeightFormat::Q8_0
    )
}

/// Bytes of one block's quant section in a group.
pub fn quant_bytes(f: WeightFormat) -> usize {
    match f {
        WeightFormat::Q4_0 | WeightFormat::Q4_1 => 256,
        WeightFormat::Q5_0 | WeightFormat::Q5_1 => 320,
        _ => 512,
    }
}

/// Whether `f` stores a minimum per block (otherwise a fixed offset).
pub fn has_min(f: WeightFormat) -> bool {
    matches!(f, WeightFormat::Q4_1 | WeightFormat::Q5_1)
}

/// Bytes of one block's scale section in a group.
pub fn scale_bytes(f: WeightFormat) -> usize {
    if has_min(f) {
        4 * GROUP_ROWS
    } else {
        2 * GROUP_ROWS
    }
}

/// Bytes of one group of rows of `nb` blocks.
pub fn group_bytes(f: WeightFormat, nb: usize) -> usize {
    nb * (quant_bytes(f) + scale_bytes(f))
}

/// The fixed offset subtracted from the unsigned weights of formats without a minimum.
pub fn offset(f: WeightFormat) -> f32 {
    match f {
        WeightFormat::Q4_0 => 8.0,
        WeightFormat::Q5_0 => 16.0,
        WeightFormat::Q8_0 => 128.0,
        _ => 0.0,
    }
}

/// Byte offsets of the scale (and minimum) fields and the quants inside one GGUF block.
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

/// Packs up to 16 GGUF rows (`src`, `row_bytes` each, whole rows) of format `f` into one group
/// (`dst`, [`group_bytes`] long). Rows past the end of `src` are packed as zeros.
///
/// Panics if `f` is not [`packable`] or the lengths disagree.
pub fn pack_group(f: WeightFormat, src: &[u8], row_bytes: usize, dst: &mut [u8]) {
    let bb = f.block_bytes();
    let nb = row_bytes / bb;
    assert!(
        packable(f) && nb * bb == row_bytes && src.len() % row_bytes.max(1) == 0,
        "pack_group: {f:?} rows of {row_bytes} bytes"
    );
    assert!(
        src.len() / row_bytes.max(1) <= GROUP_ROWS && dst.len() == group_bytes(f, nb),
        "pack_group: sizes"
    );
    let (qb, sb) = (quant_bytes(f), scale_bytes(f));
    let (d_at, m_at, qs_at) = fields(f);
    for v in dst.iter_mut() {
        *v = 0;
    }
    let (quants, scales) = dst.split_at_mut(nb * qb);
    for (i, row) in src.chunks_exact(row_bytes.max(1)).enumerate() {
        for b in 0..nb {
            let blk = &row[b * bb..(b + 1) * bb];
            let q = &mut quants[b * qb..(b + 1) * qb];
            match f {
                WeightFormat::Q8_0 => {
                    for s in 0..8 {
                        for j in 0..4 {
                            q[64 * s + 4 * i + j] = blk[qs_at + 4 * s + j] ^ 0x80;
                        }
                    }
                }
                _ => {
                    for m in 0..4 {
                        q[64 * m + 4 * i..64 * m + 4 * i + 4]
                            .copy_from_slice(&blk[qs_at + 4 * m..qs_at + 4 * m + 4]);
                    }
                    if matches!(f, WeightFormat::Q5_0 | WeightFormat::Q5_1) {
                        let at = qh_at(f);
                        let qh =
                            u32::from_le_bytes([blk[at], blk[at + 1], blk[at + 2], blk[at + 3]]);
                        for s in 0..8 {
                            for j in 0..4 {
                                if (qh >> (4 * s + j)) & 1 == 1 {
                                    let bit = 4 * i + j;
                                    q[256 + 8 * s + bit / 8] |= 1 << (bit % 8);
                                }
                            }
                        }
                    }
                }
            }
            let sc = &mut scales[b * sb..(b + 1) * sb];
            sc[2 * i..2 * i + 2].copy_from_slice(&blk[d_at..d_at + 2]);
            if let Some(m) = m_at {
                sc[32 + 2 * i..32 + 2 * i + 2].copy_from_slice(&blk[m..m + 2]);
            }
        }
    }
}

/// Packs a whole matrix of `n_rows` GGUF rows (`src`, `row_bytes` each) into its
/// `ceil(n_rows / 16)` groups, returned as one buffer.
pub fn pack_matrix(f: WeightFormat, src: &[u8], row_bytes: usize, n_rows: usize) -> Vec<u8> {
    let nb = row_bytes / f.block_bytes();
    let gb = group_bytes(f, nb);
    let mut out = vec![0u8; (n_rows + GROUP_ROWS - 1) / GROUP_ROWS * gb];
    for (g, dst) in out.chunks_exact_mut(gb.max(1)).enumerate() {
        let r0 = g * GROUP_ROWS;
        let r1 = n_rows.min(r0 + GROUP_ROWS);
        pack_group(f, &src[r0 * row_bytes..r1 * row_bytes], row_bytes, dst);
    }
    out
}

/// The unsigned weights `u[i][e]` and the f32 `(d, c)` of row `i`, block `b` of a packed group.
fn block_of(f: WeightFormat, group: &[u8], nb: usize, i: usize, b: usize) -> ([u8; 32], f32, f32) {
    let (qb, sb) = (quant_bytes(f), scale_bytes(f));
    let q = &group[b * qb..(b + 1) * qb];
    let mut u = [0u8; 32];
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
    let sc = &group[nb * qb + b * sb..nb * qb + (b + 1) * sb];
    let d = f16_to_f32(u16::from_le_bytes([sc[2 * i], sc[2 * i + 1]]));
    let c = if has_min(f) {
        f16_to_f32(u16::from_le_bytes([sc[32 + 2 * i], sc[33 + 2 * i]]))
    } else {
        -offset(f) * d
    };
    (u, d, c)
}

/// Scalar reference of the packed kernels: the dots of the 16 rows of one packed group (`nb`
/// blocks) with activation row `x`; padding rows give 0.
///
/// Panics if the group or `x` is shorter than `nb` blocks.
pub fn dot_group(f: WeightFormat, group: &[u8], nb: usize, x: &Q8Row) -> [f32; GROUP_ROWS] {
    let mut out = [0f32; GROUP_ROWS];
    for (i, o) in out.iter_mut().enumerate() {
        let mut sum = 0f32;
        for b in 0..nb {
            let (u, d, c) = block_of(f, group, nb, i, b);
            let isum: i32 = u
                .iter()
                .zip(&x.qs[b * QK8..(b + 1) * QK8])
                .map(|(&w, &a)| w as i32 * a as i32)
                .sum();
            sum += d * (x.d[b] * isum as f32) + c * x.s[b];
        }
        *o = sum;
    }
    out
}

/// Rebuilds GGUF block `b` of row `i` from a packed group (the inverse of [`pack_group`]), for
/// tests: `blk` is one block of format `f`.
pub fn unpack_block(f: WeightFormat, group: &[u8], nb: usize, i: usize, b: usize, blk: &mut [u8]) {
    let (u, _, _) = block_of(f, group, nb, i, b);
    let (qb, sb) = (quant_bytes(f), scale_bytes(f));
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
        let (d_at, m_at, _) = fields(f);
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
                let mut g = vec![0xAA; group_bytes(f, nb)];
                pack_group(f, &src, nb * bb, &mut g);
                let mut blk = vec![0u8; bb];
                for i in 0..rows {
                    for b in 0..nb {
                        unpack_block(f, &g, nb, i, b, &mut blk);
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
        for f in FORMATS {
            let (rows, nb) = (13, 5);
            let bb = f.block_bytes();
            let src = random_rows(f, rows, nb, &mut seed);
            let mut g = vec![0; group_bytes(f, nb)];
            pack_group(f, &src, nb * bb, &mut g);
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
            let got = dot_group(f, &g, nb, &xr);
            for i in 0..GROUP_ROWS {
                let want = if i < rows {
                    dot_row(f, &src[i * nb * bb..(i + 1) * nb * bb], &xr)
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
