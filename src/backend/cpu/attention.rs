//! Causal attention over the CPU KV cache, scores in f32 with the maximum subtracted before `exp`,
//! keys and values read as f32 or f16 rows by the float kernels. Decode runs one task per
//! (query row, head); prefill one per (block of query rows, head), so each key and value row is
//! converted once per block.

use std::cell::RefCell;

use super::kv::{KvRows, LayerKv};
use crate::backend::AttentionShape;
use crate::ffi::pool::{Pool, Split};
use crate::ffi::simd::{float, KernelSet};

/// Query rows one prefill task takes for one head: each key and value row is converted to f32
/// once and then used by all of them.
const QUERIES_PER_TASK: usize = 16;

thread_local! {
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static ROW: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Row `j` of `rows` (offset `at`, `hd` wide) as f32 in `buf`.
fn row_f32<'a>(k: KernelSet, rows: &'a KvRows, at: usize, hd: usize, buf: &'a mut [f32]) -> &'a [f32] {
    match rows {
        KvRows::F32(r) => &r[at..at + hd],
        KvRows::F16(r) => {
            float::f16_to_f32(k, &r[at..at + hd], buf);
            buf
        }
    }
}

/// First key position query position `p` may see.
fn first_key(p: usize, window: Option<usize>) -> usize {
    match window {
        Some(w) => (p + 1).saturating_sub(w),
        None => 0,
    }
}

/// Prefill attention: tasks of (block of query rows, head); scores of the block against every
/// key it may see, softmax per row, then the values.
fn attention_blocked(pool: &Pool, k: KernelSet, q: &[f32], kv: LayerKv<'_>, positions: &[usize], s: AttentionShape, out: &mut [f32]) {
    let hd = s.head_dim;
    let qd = s.n_heads * hd;
    let group = s.n_heads / s.n_kv_heads;
    let LayerKv { keys, values, kv_dim } = kv;
    let n = positions.len();
    pool.tiles_mut(out, qd, Split { len: n, chunk: QUERIES_PER_TASK }, Split { len: qd, chunk: hd }, |tile| {
        let h = tile.cols.start / hd;
        let off = (h / group) * hd;
        let rows = tile.rows.clone();
        let lo = rows.clone().map(|t| first_key(positions[t], s.window)).min().unwrap_or(0);
        let hi = rows.clone().map(|t| positions[t]).max().unwrap_or(0);
        let span = hi + 1 - lo;
        SCORES.with(|sc| {
            ROW.with(|rb| {
                let mut scores = sc.borrow_mut();
                let mut buf = rb.borrow_mut();
                scores.clear();
                scores.resize(rows.len() * span, f32::NEG_INFINITY);
                buf.resize(hd, 0.0);
                for j in lo..=hi {
                    let kj = row_f32(k, keys, j * kv_dim + off, hd, &mut buf);
                    for (i, t) in rows.clone().enumerate() {
                        let p = positions[t];
                        if j > p || j < first_key(p, s.window) {
                            continue;
                        }
                        let qh = &q[t * qd + h * hd..t * qd + (h + 1) * hd];
                        let mut v = float::dot_f32(k, qh, kj) * s.scale;
                        if let Some(cap) = s.softcap {
                            v = (v / cap).tanh() * cap;
                        }
                        scores[i * span + (j - lo)] = v;
                    }
                }
                for row in scores.chunks_exact_mut(span) {
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0f32;
                    for v in row.iter_mut() {
                        *v = (*v - max).exp();
                        sum += *v;
                    }
                    let inv = 1.0 / sum;
                    row.iter_mut().for_each(|v| *v *= inv);
                }
                for t in rows.clone() {
                    tile.row_mut(t).fill(0.0);
                }
                for j in lo..=hi {
                    let vj = row_f32(k, values, j * kv_dim + off, hd, &mut buf);
                    for (i, t) in rows.clone().enumerate() {
                        let w = scores[i * span + (j - lo)];
                        if w > 0.0 {
                            float::axpy_f32(k, tile.row_mut(t), w, vj);
                        }
                    }
                }
            })
        })
    });
}

/// Attention of the query rows `q` (at `positions`) over `layer` of `kv` into `out` (shapes
/// checked by the caller).
pub fn attention(pool: &Pool, k: KernelSet, q: &[f32], kv: LayerKv<'_>, positions: &[usize], s: AttentionShape, out: &mut [f32]) {
    if positions.len() > 1 {
        return attention_blocked(pool, k, q, kv, positions, s, out);
    }
    let hd = s.head_dim;
    let group = s.n_heads / s.n_kv_heads;
    let LayerKv { keys, values, kv_dim } = kv;
    pool.chunks_mut(out, hd, |idx, o| {
        let (t, h) = (idx / s.n_heads, idx % s.n_heads);
        let p = positions[t];
        let first = first_key(p, s.window);
        let qh = &q[idx * hd..(idx + 1) * hd];
        let off = (h / group) * hd;
        SCORES.with(|sc| {
            let mut scores = sc.borrow_mut();
            scores.clear();
            let mut max = f32::NEG_INFINITY;
            for j in first..=p {
                let at = j * kv_dim + off;
                let mut v = match keys {
                    KvRows::F32(kk) => float::dot_f32(k, qh, &kk[at..at + hd]),
                    KvRows::F16(kk) => float::dot_f16(k, qh, &kk[at..at + hd]),
                } * s.scale;
                if let Some(cap) = s.softcap {
                    v = (v / cap).tanh() * cap;
                }
                max = max.max(v);
                scores.push(v);
            }
            let mut sum = 0f32;
            for v in scores.iter_mut() {
                *v = (*v - max).exp();
                sum += *v;
            }
            let inv = 1.0 / sum;
            o.fill(0.0);
            for (j, &w) in (first..=p).zip(scores.iter()) {
                let at = j * kv_dim + off;
                match values {
                    KvRows::F32(vv) => float::axpy_f32(k, o, w * inv, &vv[at..at + hd]),
                    KvRows::F16(vv) => float::axpy_f16(k, o, w * inv, &vv[at..at + hd]),
                }
            }
        })
    });
}
