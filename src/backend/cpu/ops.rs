//! Element-wise reference kernels of the CPU backend (activations, norm, RoPE). They run on
//! rows of a few hundred to a few thousand values, where the compiler's vectorization is enough.

use crate::model::config::RopeStyle;

/// `e^x` without branches or library calls, so that loops over it vectorize: Cody-Waite range
/// reduction `x = n ln2 + r` with |r| <= ln2/2, a degree-6 Taylor polynomial for `e^r` (truncation
/// error below 2e-7 relative, about two f32 ulps), and `2^n` built in the exponent bits. Inputs
/// are clamped to the finite range of f32 results.
#[inline(always)]
pub fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer (ties to even).
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    f32::from_bits(((n as i32 + 127) as u32) << 23) * p
}

/// SiLU: `x * sigmoid(x)`.
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp_approx(-x))
}

/// GELU with the tanh approximation (PyTorch's `gelu(approximate="tanh")`), written through the
/// identity `(1 + tanh(u)) / 2 = 1 / (1 + e^(-2u))` so that it needs only `exp`.
#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let u = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
    x / (1.0 + exp_approx(-2.0 * u))
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

/// [`rope_row`] applied to every `head_dim`-wide head of `row`, each angle's sine and cosine
/// computed once for all heads (the same values, so the same results).
pub fn rope_heads(row: &mut [f32], head_dim: usize, pos: usize, inv_freq: &[f32], style: RopeStyle) {
    const CHUNK: usize = 64;
    let half = inv_freq.len();
    let mut sc = [(0f32, 0f32); CHUNK];
    for (c, freqs) in inv_freq.chunks(CHUNK).enumerate() {
        for (t, &f) in sc.iter_mut().zip(freqs) {
            *t = (pos as f32 * f).sin_cos();
        }
        for head in row.chunks_exact_mut(head_dim) {
            for (k, &(sin, cos)) in sc[..freqs.len()].iter().enumerate() {
                let i = c * CHUNK + k;
                let (a, b) = match style {
                    RopeStyle::Adjacent => (2 * i, 2 * i + 1),
                    RopeStyle::Neox => (i, i + half),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * cos - x1 * sin;
                head[b] = x1 * cos + x0 * sin;
            }
        }
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
    fn rope_heads_equals_rope_row_per_head() {
        let inv: Vec<f32> = (0..70).map(|i| 10000f32.powf(-(i as f32) / 70.0)).collect();
        for style in [RopeStyle::Adjacent, RopeStyle::Neox] {
            let x: Vec<f32> = (0..3 * 140).map(|i| (i as f32 * 0.37).sin()).collect();
            let mut want = x.clone();
            want.chunks_exact_mut(140).for_each(|h| rope_row(h, 77, &inv, style));
            let mut got = x;
            rope_heads(&mut got, 140, 77, &inv, style);
            assert_eq!(got, want);
        }
    }

    #[test]
    fn exp_approx_is_within_a_few_ulps_of_libm() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, b) = (exp_approx(x), x.exp());
            assert!((a - b).abs() <= 4e-7 * b, "exp({x}): {a} vs {b}");
            x += 0.013;
        }
    }

    #[test]
    fn activations_match_their_textbook_forms() {
        for i in -2000..2000 {
            let x = i as f32 * 0.01;
            let silu_ref = x / (1.0 + (-x).exp());
            let u = 0.797_884_6f32 * (x + 0.044_715 * x * x * x);
            let gelu_ref = 0.5 * x * (1.0 + u.tanh());
            assert!((silu(x) - silu_ref).abs() <= 1e-6 * (1.0 + silu_ref.abs()), "silu({x})");
            assert!((gelu_tanh(x) - gelu_ref).abs() <= 1e-6 * (1.0 + gelu_ref.abs()), "gelu({x})");
        }
    }

    #[test]
    fn rms_norm_of_constant_row_is_weight() {
        let mut x = [3.0f32; 4];
        rms_norm_row(&mut x, &[1.0, 2.0, 3.0, 4.0], 0.0);
        assert_eq!(x, [1.0, 2.0, 3.0, 4.0]);
    }
}
