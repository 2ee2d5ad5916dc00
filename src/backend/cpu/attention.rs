//! Causal attention over the CPU KV cache: one task per (query row, head), scores in f32 with the
//! maximum subtracted before `exp`, keys and values read as f32 or f16 rows by the float kernels.

use std::cell::RefCell;

use super::kv::{CpuKv, KvRows};
use crate::backend::AttentionShape;
use crate::ffi::pool::Pool;
use crate::ffi::simd::{float, KernelSet};

thread_local! {
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Attention of the query rows `q` (at `positions`) over `layer` of `kv` into `out` (shapes
/// checked by the caller).
pub fn attention(pool: &Pool, k: KernelSet, q: &[f32], kv: &CpuKv, layer: usize, positions: &[usize], s: AttentionShape, out: &mut [f32]) {
    let hd = s.head_dim;
    let group = s.n_heads / s.n_kv_heads;
    let kv_dim = kv.kv_dim;
    let (keys, values) = (&kv.k[layer], &kv.v[layer]);
    pool.chunks_mut(out, hd, |idx, o| {
        let (t, h) = (idx / s.n_heads, idx % s.n_heads);
        let p = positions[t];
        let first = match s.window {
            Some(w) => (p + 1).saturating_sub(w),
            None => 0,
        };
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
