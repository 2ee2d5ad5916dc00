//! Perplexity with llama.cpp's rules (tools/perplexity/perplexity.cpp), so that a quantized model
//! run by us and by llama.cpp can be compared on the same file.
//!
//! The text is tokenized once (with BOS when the vocabulary adds one) and cut into non-overlapping
//! chunks of `n_ctx` tokens; a trailing partial chunk is dropped. Each chunk is evaluated from an
//! empty KV cache with its first token replaced by BOS (when the vocabulary adds BOS), and only the
//! predictions made from the second half of the window are scored: positions `n_ctx/2 ..
//! n_ctx-2` predict tokens `n_ctx/2+1 .. n_ctx-1`, so every scored token sees at least `n_ctx/2`
//! tokens of context. PPL is `exp(mean NLL)`; the `±` is the standard error of the mean NLL
//! carried through the exponential (`ppl * stderr`), as llama.cpp prints it.
//!
//! The strided mode mirrors llama.cpp's `--ppl-stride`: windows of `n_ctx` tokens start every
//! `stride` tokens and the last `stride` predictions of each window are scored. llama.cpp
//! substitutes BOS there only after the window has been decoded, so the window is evaluated with
//! its original first token; we do the same to stay comparable.

use crate::error::{Error, Result};

/// How to cut a token stream into evaluation windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PerplexityParams {
    /// Window (context) length in tokens.
    pub n_ctx: usize,
    /// `None` (or `Some(0)`): non-overlapping windows, second half scored; `Some(s)`: llama.cpp's
    /// strided mode, a window every `s` tokens with its last `s` predictions scored.
    pub stride: Option<usize>,
    /// Evaluate at most this many windows (`None`: all).
    pub max_chunks: Option<usize>,
}

impl Default for PerplexityParams {
    fn default() -> Self {
        PerplexityParams {
            n_ctx: 512,
            stride: None,
            max_chunks: None,
        }
    }
}

/// One evaluation window: which tokens go in and which predictions count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkPlan {
    /// Index of the window's first token in the whole token stream.
    pub start: usize,
    /// Number of tokens in the window.
    pub len: usize,
    /// First window position whose logits are scored (it predicts the token after it).
    pub first_scored: usize,
    /// Whether the window's first token is replaced by BOS before evaluation.
    pub bos_at_start: bool,
}

impl ChunkPlan {
    /// Number of predictions scored in this window.
    pub fn n_scored(&self) -> usize {
        self.len - 1 - self.first_scored
    }
}

/// The result of a perplexity run.
#[derive(Clone, Debug, PartialEq)]
pub struct PerplexityResult {
    /// `exp(mean NLL)` over all scored tokens.
    pub ppl: f64,
    /// Standard error of `ppl` (llama.cpp's `+/-` value).
    pub ppl_error: f64,
    /// Mean negative log-likelihood in nats.
    pub mean_nll: f64,
    /// Number of windows evaluated.
    pub n_chunks: usize,
    /// Number of tokens scored.
    pub n_scored: usize,
    /// Number of tokens in the whole text.
    pub n_tokens: usize,
    /// Running perplexity after each window (llama.cpp's `[i]ppl` progress values).
    pub running_ppl: Vec<f64>,
}

/// Something that returns logits for every position of a token window, evaluated from an empty
/// cache (a model, or a table in tests).
pub trait LogitsSource {
    /// Logits of every position of `tokens`: `tokens.len()` rows of vocabulary size.
    fn window_logits(&mut self, tokens: &[u32]) -> Result<Vec<Vec<f32>>>;
}

impl<F> LogitsSource for F
where
    F: FnMut(&[u32]) -> Result<Vec<Vec<f32>>>,
{
    fn window_logits(&mut self, tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
        self(tokens)
    }
}

/// Cuts `n_tokens` tokens into evaluation windows by llama.cpp's rules; `add_bos` says whether the
/// vocabulary adds BOS (and so whether windows start with it).
pub fn plan_chunks(
    n_tokens: usize,
    add_bos: bool,
    params: &PerplexityParams,
) -> Result<Vec<ChunkPlan>> {
    let n_ctx = params.n_ctx;
    if n_ctx < 4 {
        return Err(Error::InvalidArgument(format!(
            "perplexity context must be at least 4 tokens, got {n_ctx}"
        )));
    }
    // llama.cpp refuses texts shorter than two windows in both modes.
    if n_tokens < 2 * n_ctx {
        return Err(Error::InvalidArgument(format!(
            "the text tokenizes to {n_tokens} tokens; perplexity with a context of {n_ctx} needs at least {}",
            2 * n_ctx
        )));
    }
    let limit = params.max_chunks.unwrap_or(usize::MAX);
    let plans: Vec<ChunkPlan> = match params.stride.filter(|&s| s > 0) {
        None => {
            let first = n_ctx / 2;
            (0..n_tokens / n_ctx)
                .take(limit)
                .map(|i| ChunkPlan {
                    start: i * n_ctx,
                    len: n_ctx,
                    first_scored: first,
                    bos_at_start: add_bos,
                })
                .collect()
        }
        Some(stride) => {
            if stride >= n_ctx {
                return Err(Error::InvalidArgument(format!(
                    "perplexity stride {stride} must be smaller than the context {n_ctx}"
                )));
            }
            let n_chunks = (n_tokens - n_ctx).div_ceil(stride);
            (0..n_chunks)
                .take(limit)
                .map(|i| ChunkPlan {
                    start: i * stride,
                    len: n_ctx,
                    first_scored: n_ctx - stride - 1,
                    bos_at_start: false,
                })
                .collect()
        }
    };
    Ok(plans)
}

/// Negative log-likelihood (nats) of `target` under the softmax of `logits`, with llama.cpp's
/// numerics: max-subtracted `f32` exponentials summed in `f64`.
pub fn token_nll(logits: &[f32], target: u32) -> Result<f64> {
    let t = target as usize;
    let Some(&logit) = logits.get(t) else {
        return Err(Error::InvalidArgument(format!(
            "token {target} is outside the {} logits",
            logits.len()
        )));
    };
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return Err(Error::Internal(format!(
            "logits are not finite (max {max})"
        )));
    }
    let sum_exp: f64 = logits.iter().map(|&l| f64::from((l - max).exp())).sum();
    Ok(f64::from(max) - f64::from(logit) + sum_exp.ln())
}

/// Computes the perplexity of `tokens` (the whole text, already tokenized with BOS when the
/// vocabulary adds one). `bos` is the BOS id when the vocabulary adds BOS, else `None`.
/// `progress` is called after each window with (windows done, windows total, running PPL).
pub fn perplexity(
    tokens: &[u32],
    bos: Option<u32>,
    params: &PerplexityParams,
    source: &mut dyn LogitsSource,
    progress: &mut dyn FnMut(usize, usize, f64),
) -> Result<PerplexityResult> {
    let plans = plan_chunks(tokens.len(), bos.is_some(), params)?;
    let mut nll_sum = 0.0f64;
    let mut nll2_sum = 0.0f64;
    let mut count = 0usize;
    let mut running = Vec::with_capacity(plans.len());
    let mut window = Vec::with_capacity(params.n_ctx);
    for (i, plan) in plans.iter().enumerate() {
        window.clear();
        window.extend_from_slice(&tokens[plan.start..plan.start + plan.len]);
        if let (true, Some(b)) = (plan.bos_at_start, bos) {
            window[0] = b;
        }
        let logits = source.window_logits(&window)?;
        if logits.len() != plan.len {
            return Err(Error::Internal(format!(
                "logits source returned {} rows for a window of {} tokens",
                logits.len(),
                plan.len
            )));
        }
        // Targets are the text's own tokens: the BOS substitution changes only the input.
        for pos in plan.first_scored..plan.len - 1 {
            let v = token_nll(&logits[pos], tokens[plan.start + pos + 1])?;
            nll_sum += v;
            nll2_sum += v * v;
            count += 1;
        }
        let ppl = (nll_sum / count as f64).exp();
        running.push(ppl);
        progress(i + 1, plans.len(), ppl);
    }
    let mean = nll_sum / count as f64;
    let ppl = mean.exp();
    let var = nll2_sum / count as f64 - mean * mean;
    let ppl_error = if var > 0.0 && count > 1 {
        (var / (count - 1) as f64).sqrt() * ppl
    } else {
        0.0
    };
    Ok(PerplexityResult {
        ppl,
        ppl_error,
        mean_nll: mean,
        n_chunks: plans.len(),
        n_scored: count,
        n_tokens: tokens.len(),
        running_ppl: running,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact to f64 rounding: the test logits are small and their exponentials exact enough.
    const NLL_TOL: f64 = 1e-6;

    #[test]
    fn nll_of_uniform_logits_is_log_vocab() {
        let logits = vec![3.5f32; 8];
        let v = token_nll(&logits, 5).unwrap();
        assert!((v - 8f64.ln()).abs() < NLL_TOL, "{v}");
    }

    #[test]
    fn nll_matches_closed_form_softmax() {
        // softmax([ln 1, ln 2, ln 3, ln 4]) = [0.1, 0.2, 0.3, 0.4]
        let logits: Vec<f32> = [1.0f64, 2.0, 3.0, 4.0]
            .iter()
            .map(|p| p.ln() as f32)
            .collect();
        for (t, p) in [0.1f64, 0.2, 0.3, 0.4].iter().enumerate() {
            let v = token_nll(&logits, t as u32).unwrap();
            assert!(
                (v + p.ln()).abs() < NLL_TOL,
                "token {t}: {v} vs {}",
                -p.ln()
            );
        }
    }

    #[test]
    fn nll_rejects_out_of_range_target() {
        assert!(token_nll(&[0.0, 1.0], 2).is_err());
    }

    #[test]
    fn non_overlapping_plan_follows_llama_cpp() {
        let p = PerplexityParams {
            n_ctx: 8,
            stride: None,
            max_chunks: None,
        };
        let plans = plan_chunks(30, true, &p).unwrap();
        // 30 / 8 = 3 whole windows, the tail of 6 tokens is dropped.
        assert_eq!(plans.len(), 3);
        assert_eq!(
            plans[2],
            ChunkPlan {
                start: 16,
                len: 8,
                first_scored: 4,
                bos_at_start: true
            }
        );
        assert_eq!(plans[0].n_scored(), 3);
        assert!(
            plan_chunks(15, true, &p).is_err(),
            "fewer than 2*n_ctx tokens must be refused"
        );
        let limited = plan_chunks(
            30,
            false,
            &PerplexityParams {
                max_chunks: Some(2),
                ..p
            },
        )
        .unwrap();
        assert_eq!(limited.len(), 2);
        assert!(!limited[0].bos_at_start);
    }

    #[test]
    fn strided_plan_follows_llama_cpp() {
        let p = PerplexityParams {
            n_ctx: 8,
            stride: Some(3),
            max_chunks: None,
        };
        let plans = plan_chunks(20, true, &p).unwrap();
        // ceil((20 - 8) / 3) = 4 windows starting at 0, 3, 6, 9; each scores its last 3 predictions.
        assert_eq!(plans.len(), 4);
        assert_eq!(
            plans[3],
            ChunkPlan {
                start: 9,
                len: 8,
                first_scored: 4,
                bos_at_start: false
            }
        );
        assert_eq!(plans[3].n_scored(), 3);
        assert!(plan_chunks(
            20,
            true,
            &PerplexityParams {
                stride: Some(8),
                ..p
            }
        )
        .is_err());
    }

    /// A fake model whose next-token distribution is fixed: softmax(ln w) = w / sum(w), so the
    /// NLL of every scored token is known in closed form.
    #[test]
    fn perplexity_of_known_distribution() {
        let weights = [1.0f64, 2.0, 3.0, 4.0];
        let row: Vec<f32> = weights.iter().map(|w| w.ln() as f32).collect();
        let tokens: Vec<u32> = (0..20u32).map(|i| (i * 7 + 1) % 4).collect();
        let mut seen = Vec::new();
        let mut source = |w: &[u32]| -> Result<Vec<Vec<f32>>> {
            seen.push(w.to_vec());
            Ok(vec![row.clone(); w.len()])
        };
        let params = PerplexityParams {
            n_ctx: 6,
            stride: None,
            max_chunks: None,
        };
        let r = perplexity(&tokens, Some(9), &params, &mut source, &mut |_, _, _| {}).unwrap();
        // Windows 0..6, 6..12, 12..18; positions 3 and 4 scored, predicting window tokens 4 and 5.
        let mut expect = Vec::new();
        for start in [0usize, 6, 12] {
            for j in 4..6 {
                expect.push(-(weights[tokens[start + j] as usize] / 10.0).ln());
            }
        }
        let mean = expect.iter().sum::<f64>() / expect.len() as f64;
        assert_eq!(r.n_chunks, 3);
        assert_eq!(r.n_scored, 6);
        assert!((r.mean_nll - mean).abs() < NLL_TOL);
        assert!((r.ppl - mean.exp()).abs() < NLL_TOL * mean.exp());
        let var = expect.iter().map(|v| v * v).sum::<f64>() / 6.0 - mean * mean;
        assert!((r.ppl_error - (var / 5.0).sqrt() * mean.exp()).abs() < 1e-6);
        // Every window was evaluated with BOS in place of its first token, the rest unchanged.
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[1][0], 9);
        assert_eq!(&seen[1][1..], &tokens[7..12]);
        assert_eq!(r.running_ppl.len(), 3);
    }

    #[test]
    fn perplexity_rejects_short_logits() {
        let tokens = vec![0u32; 16];
        let mut source =
            |w: &[u32]| -> Result<Vec<Vec<f32>>> { Ok(vec![vec![0.0; 2]; w.len() - 1]) };
        let params = PerplexityParams {
            n_ctx: 8,
            ..Default::default()
        };
        assert!(perplexity(&tokens, None, &params, &mut source, &mut |_, _, _| {}).is_err());
    }
}
