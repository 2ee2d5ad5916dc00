//! Scalar reference kernels of the CPU backend. The rayon splits live here too, so that the
//! `Backend` impl only checks shapes.

use rayon::prelude::*;

use crate::backend::AttentionShape;
use crate::model::config::RopeStyle;
use crate::quant::{dot_row, dot_rows_multi};
use crate::tensor::TensorRef;

/// Output rows one rayon task computes in a matmul (keeps tasks big enough to amortise).
const MATMUL_ROWS_PER_TASK: usize = 16;

/// SiLU: `x * sigmoid(x)`.
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// GELU with the tanh approximation (PyTorch's `gelu(approximate="tanh")`).
#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)).tanh())
}

/// RMSNorm of one segment in place: `x * w / sqrt(mean(x²) + eps)`, mean accumulated in f64.
pub fn rms_norm_row(x: &mut [f32], w: &[f32], eps: f32) {
    let ss: f64 = x.iter().map(|v| (*v as f64) * (*v as f64)).sum();
    let inv = 1.0 / ((ss / x.len() as f64) as f32 + eps).sqrt();
    x.iter_mut().zip(w).for_each(|(v, w)| *v = *v * inv * w);
}

/// Rotates one head by position `pos`; `inv_freq` has one frequency per rotated pair (dimensions
/// beyond `2 * inv_freq.len()` pass through unrotated).
pub fn rope_row(head: &mut [f32], pos: usize, inv_freq: &[f32], style: RopeStyle) {
    let half = inv_freq.len();
    for (i, &f) in inv_freq.iter().enumerate() {
        let angle = pos as f32 * f;
        let (sin, cos) = angle.sin_cos();
        let (a, b) = match style {
            RopeStyle::Adjacent => (2 * i, 2 * i + 1),
            RopeStyle::Neox => (i, i + half),
        };
        let (x0, x1) = (head[a], head[b]);
        head[a] = x0 * cos - x1 * sin;
        head[b] = x1 * cos + x0 * sin;
    }
}

/// `out[n, rows] = x[n, cols] · wᵀ`, split over output rows.
pub fn matmul(x: &[f32], n: usize, w: &TensorRef, out: &mut [f32]) {
    let (rows, cols) = (w.n_rows(), w.row_len());
    if n == 1 {
        out.par_chunks_mut(MATMUL_ROWS_PER_TASK).enumerate().for_each(|(c, o)| {
            for (j, v) in o.iter_mut().enumerate() {
                *v = dot_row(w.dtype, w.row(c * MATMUL_ROWS_PER_TASK + j), x);
            }
        });
        return;
    }
    // Several tokens: expand each weight row once and dot it with every token, producing the
    // transpose, then transpose back.
    let mut out_t = vec![0f32; rows * n];
    out_t.par_chunks_mut(n * MATMUL_ROWS_PER_TASK).enumerate().for_each_init(
        || vec![0f32; cols],
        |scratch, (c, block)| {
            for (j, o) in block.chunks_exact_mut(n).enumerate() {
                dot_rows_multi(w.dtype, w.row(c * MATMUL_ROWS_PER_TASK + j), x, scratch, o);
            }
        },
    );
    out.par_chunks_mut(rows).enumerate().for_each(|(t, o)| {
        for (r, v) in o.iter_mut().enumerate() {
            *v = out_t[r * n + t];
        }
    });
}

/// Causal attention: every (query row, head) pair in parallel, softmax in f32 with the maximum
/// subtracted, keys and values read from the per-layer stores `k` and `v` (`kv_dim` per token).
pub fn attention(q: &[f32], k: &[f32], v: &[f32], kv_dim: usize, positions: &[usize], s: AttentionShape, out: &mut [f32]) {
    let hd = s.head_dim;
    let group = s.n_heads / s.n_kv_heads;
    out.par_chunks_mut(hd).enumerate().for_each_init(Vec::new, |scores: &mut Vec<f32>, (idx, o)| {
        let (t, h) = (idx / s.n_heads, idx % s.n_heads);
        let p = positions[t];
        let first = match s.window {
            Some(w) => (p + 1).saturating_sub(w),
            None => 0,
        };
        let qh = &q[idx * hd..(idx + 1) * hd];
        let kv_off = (h / group) * hd;
        scores.clear();
        let mut max = f32::NEG_INFINITY;
        for j in first..=p {
            let kj = &k[j * kv_dim + kv_off..j * kv_dim + kv_off + hd];
            let mut sc = crate::quant::dot_f32(qh, kj) * s.scale;
            if let Some(cap) = s.softcap {
                sc = (sc / cap).tanh() * cap;
            }
            max = max.max(sc);
            scores.push(sc);
        }
        let mut sum = 0f32;
        for sc in scores.iter_mut() {
            *sc = (*sc - max).exp();
            sum += *sc;
        }
        let inv = 1.0 / sum;
        o.fill(0.0);
        for (j, &w) in (first..=p).zip(scores.iter()) {
            let vj = &v[j * kv_dim + kv_off..j * kv_dim + kv_off + hd];
            let w = w * inv;
            o.iter_mut().zip(vj).for_each(|(o, v)| *o += w * v);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjacent_and_neox_rope_agree_after_permuting_pairs() {
        let inv = [1.0f32, 0.1];
        let x = [1.0f32, 2.0, 3.0, 4.0];
        // Neox pairs (0,2) and (1,3); adjacent pairs (0,1) and (2,3).
        let mut neox = x;
        rope_row(&mut neox, 3, &inv, RopeStyle::Neox);
        let mut adj = [x[0], x[2], x[1], x[3]];
        rope_row(&mut adj, 3, &inv, RopeStyle::Adjacent);
        assert_eq!([adj[0], adj[2], adj[1], adj[3]], neox);
    }

    #[test]
    fn attention_with_one_key_returns_its_value() {
        let s = AttentionShape { n_heads: 2, n_kv_heads: 1, head_dim: 2, scale: 1.0, window: None, softcap: None };
        let mut out = vec![0.0; 4];
        attention(&[1.0, 0.0, 0.0, 1.0], &[5.0, 5.0], &[7.0, -1.0], 2, &[0], s, &mut out);
        assert_eq!(out, vec![7.0, -1.0, 7.0, -1.0]);
    }

    #[test]
    fn rms_norm_of_constant_row_is_weight() {
        let mut x = [3.0f32; 4];
        rms_norm_row(&mut x, &[1.0, 2.0, 3.0, 4.0], 0.0);
        assert_eq!(x, [1.0, 2.0, 3.0, 4.0]);
    }
}
