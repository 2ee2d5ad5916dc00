//! Causal attention over the paged CPU KV cache, scores in f32 with the maximum subtracted before
//! `exp`, keys and values read as f32 or f16 rows by the float kernels, a KV block at a time.
//! Generated rows (decode) run one task per (query row, head), all sequences of a batch in one
//! pool step; prompt rows (prefill) one task per (block of query rows, head) of a sequence, so
//! each key and value row is converted once per block. Which of the two paths a row takes depends
//! only on whether it is a prompt row, and each path computes a row the same way whatever else
//! shares the call, so batching and prefix reuse never change a sequence's results.

use std::cell::RefCell;
use std::ops::Range;

use super::kv::{KvRows, LayerKv};
use super::ops::exp_approx;
use crate::backend::{AttentionShape, AttnSeq};
use crate::kv_cache::{slot, BLOCK_TOKENS};
use crate::ffi::pool::{Pool, Split};
use crate::ffi::simd::{float, KernelSet};

/// Lanes of the softmax's partial maxima and sums (one AVX-512 register of f32).
const LANES: usize = 16;

/// Most dimensions of the transposed keys one conversion task fills (the largest divisor of the
/// head size up to this, so no task straddles two heads).
const DIMS_PER_TASK: usize = 32;

/// Key rows of values one conversion task fills.
const KEYS_PER_TASK: usize = 64;

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

/// Turns raw query-key dot products into attention weights in place: scale, soft cap, weight 0
/// outside `visible` (a causal or sliding window is one contiguous range of keys), then a softmax
/// with the maximum subtracted before `exp`. Loops run over the visible range only and keep
/// lane-wise partial sums, so they vectorize.
fn softmax_scores(row: &mut [f32], s: AttentionShape, visible: Range<usize>) {
    let (a, b) = (visible.start.min(row.len()), visible.end.min(row.len()));
    let (head, rest) = row.split_at_mut(a);
    let (vis, tail) = rest.split_at_mut(b - a);
    head.fill(0.0);
    tail.fill(0.0);
    match s.softcap {
        Some(cap) => vis.iter_mut().for_each(|v| *v = (*v * s.scale / cap).tanh() * cap),
        None => vis.iter_mut().for_each(|v| *v *= s.scale),
    }
    let mut maxes = [f32::NEG_INFINITY; LANES];
    let mut chunks = vis.chunks_exact(LANES);
    for c in &mut chunks {
        for (m, &v) in maxes.iter_mut().zip(c) {
            *m = if v > *m { v } else { *m };
        }
    }
    let max = chunks.remainder().iter().chain(&maxes).fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    let mut sums = [0f32; LANES];
    let mut chunks = vis.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (acc, v) in sums.iter_mut().zip(c) {
            *v = exp_approx(*v - max);
            *acc += *v;
        }
    }
    let mut sum: f32 = sums.iter().sum();
    for v in chunks.into_remainder() {
        *v = exp_approx(*v - max);
        sum += *v;
    }
    let inv = 1.0 / sum;
    vis.iter_mut().for_each(|v| *v *= inv);
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
fn attention_blocked(pool: &Pool, k: KernelSet, q: &[f32], kv: LayerKv<'_>, seq: &AttnSeq<'_>, s: AttentionShape, out: &mut [f32]) {
    let blocks = seq.blocks;
    let positions: Vec<usize> = (seq.pos0..seq.pos0 + seq.rows.len()).collect();
    let positions = &positions[..];
    let hd = s.head_dim;
    let qd = s.n_heads * hd;
    let group = s.n_heads / s.n_kv_heads;
    let LayerKv { keys, values, kv_dim } = kv;
    let n = positions.len();
    let lo_all = positions.iter().map(|&p| first_key(p, s.window)).min().unwrap_or(0);
    let hi_all = positions.iter().copied().max().unwrap_or(0);
    let span_all = hi_all + 1 - lo_all;
    // Keys transposed, [kv head][hd x span_all], then values, [kv head][span_all x hd].
    let per_head = 2 * hd * span_all;
    KV_F32.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.resize(s.n_kv_heads * per_head, 0.0);
        // Split by dimension rows of K^T and by key rows of V (not by head: Gemma 3 has one KV
        // head, and a per-head split left one thread idle).
        let (kts, vals_all) = buf.split_at_mut(s.n_kv_heads * hd * span_all);
        let dims_per_task = (1..=DIMS_PER_TASK.min(hd)).rev().find(|d| hd.is_multiple_of(*d)).unwrap_or(1);
        pool.chunks_mut(kts, span_all * dims_per_task, |c, part| {
            let d0 = c * dims_per_task;
            let (kvh, d0) = (d0 / hd, d0 % hd);
            let off = kvh * hd + d0;
            let dims = part.len() / span_all;
            ROW.with(|row| {
                let mut row = row.borrow_mut();
                row.resize(dims, 0.0);
                for j in lo_all..=hi_all {
                    let kj = row_f32(k, keys, slot(blocks, j) * kv_dim + off, dims, &mut row);
                    for (d, &v) in kj.iter().enumerate() {
                        part[d * span_all + (j - lo_all)] = v;
                    }
                }
            })
        });
        pool.chunks_mut(vals_all, hd * KEYS_PER_TASK, |c, part| {
            let r0 = c * KEYS_PER_TASK;
            for (i, dst) in part.chunks_exact_mut(hd).enumerate() {
                let (kvh, j) = ((r0 + i) / span_all, (r0 + i) % span_all + lo_all);
                let at = slot(blocks, j) * kv_dim + kvh * hd;
                match values {
                    KvRows::F32(r) => dst.copy_from_slice(&r[at..at + hd]),
                    KvRows::F16(r) => float::f16_to_f32(k, &r[at..at + hd], dst),
                }
            }
        });
        let (kts, vals_all) = buf.split_at(s.n_kv_heads * hd * span_all);
        pool.tiles_mut(out, qd, Split { len: n, chunk: QUERIES_PER_TASK }, Split { len: qd, chunk: hd }, |tile| {
            let h = tile.cols.start / hd;
            let kvh = h / group;
            let kt = &kts[kvh * hd * span_all..(kvh + 1) * hd * span_all];
            let vals = &vals_all[kvh * hd * span_all..(kvh + 1) * hd * span_all];
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
                    softmax_scores(row, s, first.saturating_sub(lo)..p + 1 - lo);
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

/// Attention of the query rows `q` over layer `kv` into `out`, each sequence of `seqs` over its
/// own blocks (shapes checked by the caller).
pub fn attention(pool: &Pool, k: KernelSet, q: &[f32], kv: LayerKv<'_>, seqs: &[AttnSeq<'_>], s: AttentionShape, out: &mut [f32]) {
    let qd = s.n_heads * s.head_dim;
    let mut i = 0;
    while i < seqs.len() {
        if seqs[i].prompt {
            let r = seqs[i].rows.clone();
            attention_blocked(pool, k, &q[r.start * qd..r.end * qd], kv, &seqs[i], s, &mut out[r.start * qd..r.end * qd]);
            i += 1;
            continue;
        }
        // A run of sequences whose rows are generated and adjacent: one pool step for all.
        let mut j = i;
        let mut rows = Vec::new();
        while j < seqs.len() && !seqs[j].prompt && seqs[j].rows.start == seqs[i].rows.start + rows.len() {
            for (t, _) in seqs[j].rows.clone().enumerate() {
                rows.push((seqs[j].pos0 + t, seqs[j].blocks));
            }
            j += 1;
        }
        let r0 = seqs[i].rows.start;
        let r1 = r0 + rows.len();
        attention_decode(pool, k, &q[r0 * qd..r1 * qd], kv, &rows, s, &mut out[r0 * qd..r1 * qd]);
        i = j;
    }
}

/// Decode attention: row `t` of `q` sits at position `rows[t].0` of the sequence whose block
/// table is `rows[t].1`; one task per (row, head).
fn attention_decode(pool: &Pool, k: KernelSet, q: &[f32], kv: LayerKv<'_>, rows: &[(usize, &[u32])], s: AttentionShape, out: &mut [f32]) {
    let hd = s.head_dim;
    let group = s.n_heads / s.n_kv_heads;
    let LayerKv { keys, values, kv_dim } = kv;
    pool.chunks_mut(out, hd, |idx, o| {
        let (t, h) = (idx / s.n_heads, idx % s.n_heads);
        let (p, blocks) = rows[t];
        let first = first_key(p, s.window);
        let qh = &q[idx * hd..(idx + 1) * hd];
        let off = (h / group) * hd;
        // Runs of keys that share a block: `(first key, count, offset of the first row)`.
        let runs = || {
            let mut j = first;
            std::iter::from_fn(move || {
                if j > p {
                    return None;
                }
                let n = (BLOCK_TOKENS - j % BLOCK_TOKENS).min(p + 1 - j);
                let run = (j - first, n, slot(blocks, j) * kv_dim + off);
                j += n;
                Some(run)
            })
        };
        SCORES.with(|sc| {
            let mut scores = sc.borrow_mut();
            let n_keys = p + 1 - first;
            scores.clear();
            scores.resize(n_keys, 0.0);
            for (at_score, n, at) in runs() {
                let dst = &mut scores[at_score..at_score + n];
                match keys {
                    KvRows::F32(kk) => {
                        for (i, v) in dst.iter_mut().enumerate() {
                            let a = at + i * kv_dim;
                            *v = float::dot_f32(k, qh, &kk[a..a + hd]);
                        }
                    }
                    KvRows::F16(kk) => float::dot_f16_rows(k, qh, &kk[at..], kv_dim, dst),
                }
            }
            softmax_scores(&mut scores, s, 0..n_keys);
            o.fill(0.0);
            for (at_score, n, at) in runs() {
                let w = &scores[at_score..at_score + n];
                match values {
                    KvRows::F32(vv) => {
                        for (i, &wi) in w.iter().enumerate() {
                            let a = at + i * kv_dim;
                            float::axpy_f32(k, o, wi, &vv[a..a + hd]);
                        }
                    }
                    KvRows::F16(vv) => float::weighted_sum_f16_add(k, w, &vv[at..], kv_dim, o),
                }
            }
        })
    });
}
