//! Causal attention over the CPU KV cache, scores in f32 with the maximum subtracted before `exp`,
//! keys and values read as f32 or f16 rows by the float kernels. Decode runs one task per
//! (query row, head); prefill one per (block of query rows, head), so each key and value row is
//! converted once per block.

use std::cell::RefCell;

use super::kv::{KvRows, LayerKv};
use super::ops::exp_approx;
use crate::backend::AttentionShape;
use crate::ffi::pool::{Pool, Split};
use crate::ffi::simd::{float, KernelSet};

/// Query rows one prefill task takes for one head: each key and value row is converted to f32
/// once and then used by all of them.
const QUERIES_PER_TASK: usize = 16;

/// Per-thread buffers of a prefill task.
#[derive(Default)]
struct Scratch {
    scores: Vec<f32>,
    out: Vec<f32>,
}

thread_local! {
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
    /// The calling thread's f32 copy of the keys (transposed) and values a prefill sees.
    static KV_F32: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
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

/// Turns raw query-key dot products into attention weights in place: scale, soft cap, `-inf` where
/// `visible(j)` is false, then a softmax with the maximum subtracted before `exp`.
fn softmax_scores(row: &mut [f32], s: AttentionShape, visible: impl Fn(usize) -> bool) {
    let mut max = f32::NEG_INFINITY;
    for (j, v) in row.iter_mut().enumerate() {
        if !visible(j) {
            *v = f32::NEG_INFINITY;
            continue;
        }
        *v *= s.scale;
        if let Some(cap) = s.softcap {
            *v = (*v / cap).tanh() * cap;
        }
        max = max.max(*v);
    }
    let mut sum = 0f32;
    for v in row.iter_mut() {
        *v = exp_approx(*v - max);
        sum += *v;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// First key position query position `p` may see.
fn first_key(p: usize, window: Option<usize>) -> usize {
    match window {
        Some(w) => (p + 1).saturating_sub(w),
        None => 0,
    }
}

/// Prefill attention: the keys and values every query may see are converted to f32 once per
/// call (keys transposed), then tasks of (block of query rows, head) compute their scores and
/// weighted values as two register-tiled products (`float::gemm_f32`).
fn attention_blocked(pool: &Pool, k: KernelSet, q: &[f32], kv: LayerKv<'_>, positions: &[usize], s: AttentionShape, out: &mut [f32]) {
    let hd = s.head_dim;
    let qd = s.n_heads * hd;
    let group = s.n_heads / s.n_kv_heads;
    let LayerKv { keys, values, kv_dim } = kv;
    let n = positions.len();
    let lo_all = positions.iter().map(|&p| first_key(p, s.window)).min().unwrap_or(0);
    let hi_all = positions.iter().copied().max().unwrap_or(0);
    let span_all = hi_all + 1 - lo_all;
    // Per kv head: keys transposed [hd x span_all], then values [span_all x hd].
    let per_head = 2 * hd * span_all;
    KV_F32.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.resize(s.n_kv_heads * per_head, 0.0);
        pool.chunks_mut(&mut buf, per_head, |kvh, part| {
            let (kt, vals) = part.split_at_mut(hd * span_all);
            let off = kvh * hd;
            ROW.with(|row| {
                let mut row = row.borrow_mut();
                row.resize(hd, 0.0);
                for j in lo_all..=hi_all {
                    let kj = row_f32(k, keys, j * kv_dim + off, hd, &mut row);
                    for (d, &v) in kj.iter().enumerate() {
                        kt[d * span_all + (j - lo_all)] = v;
                    }
                    let vj = row_f32(k, values, j * kv_dim + off, hd, &mut row);
                    vals[(j - lo_all) * hd..(j - lo_all + 1) * hd].copy_from_slice(vj);
                }
            })
        });
        let buf = &*buf;
        pool.tiles_mut(out, qd, Split { len: n, chunk: QUERIES_PER_TASK }, Split { len: qd, chunk: hd }, |tile| {
            let h = tile.cols.start / hd;
            let head = &buf[(h / group) * per_head..(h / group + 1) * per_head];
            let (kt, vals) = head.split_at(hd * span_all);
            let rows = tile.rows.clone();
            let m = rows.len();
            let lo = rows.clone().map(|t| first_key(positions[t], s.window)).min().unwrap_or(0);
            let hi = rows.clone().map(|t| positions[t]).max().unwrap_or(0);
            let span = hi + 1 - lo;
            SCRATCH.with(|sc| {
                let mut sc = sc.borrow_mut();
                let Scratch { scores, out: obuf } = &mut *sc;
                scores.clear();
                scores.resize(m * span, 0.0);
                let a = &q[rows.start * qd + h * hd..];
                let g = float::GemmShape { m, n: span, k: hd, lda: qd, ldb: span_all, ldc: span };
                float::gemm_f32(k, g, a, &kt[lo - lo_all..], scores);
                for (i, t) in rows.clone().enumerate() {
                    let p = positions[t];
                    let first = first_key(p, s.window);
                    let row = &mut scores[i * span..(i + 1) * span];
                    softmax_scores(row, s, |jj| (first..=p).contains(&(lo + jj)));
                }
                obuf.clear();
                obuf.resize(m * hd, 0.0);
                let g = float::GemmShape { m, n: hd, k: span, lda: span, ldb: hd, ldc: hd };
                float::gemm_f32(k, g, scores, &vals[(lo - lo_all) * hd..], obuf);
                for (i, t) in rows.clone().enumerate() {
                    tile.row_mut(t).copy_from_slice(&obuf[i * hd..(i + 1) * hd]);
                }
            })
        });
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
            let n_keys = p + 1 - first;
            scores.clear();
            scores.resize(n_keys, 0.0);
            let at0 = first * kv_dim + off;
            match keys {
                KvRows::F32(kk) => {
                    for (j, v) in scores.iter_mut().enumerate() {
                        let at = at0 + j * kv_dim;
                        *v = float::dot_f32(k, qh, &kk[at..at + hd]);
                    }
                }
                KvRows::F16(kk) => float::dot_f16_rows(k, qh, &kk[at0..], kv_dim, &mut scores),
            }
            softmax_scores(&mut scores, s, |_| true);
            match values {
                KvRows::F32(vv) => {
                    o.fill(0.0);
                    for (j, &w) in scores.iter().enumerate() {
                        let at = at0 + j * kv_dim;
                        float::axpy_f32(k, o, w, &vv[at..at + hd]);
                    }
                }
                KvRows::F16(vv) => float::weighted_sum_f16(k, &scores, &vv[at0..], kv_dim, o),
            }
        })
    });
}
