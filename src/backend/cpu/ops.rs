//! Element-wise reference kernels of the CPU backend (activations, norm, RoPE). They run on
//! rows of a few hundred to a few thousand values, where the compiler's vectorization is enough.

use crate::model::config::RopeStyle;

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
    fn rms_norm_of_constant_row_is_weight() {
        let mut x = [3.0f32; 4];
        rms_norm_row(&mut x, &[1.0, 2.0, 3.0, 4.0], 0.0);
        assert_eq!(x, [1.0, 2.0, 3.0, 4.0]);
    }
}
