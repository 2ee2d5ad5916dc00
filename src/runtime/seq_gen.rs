//! What happens to one sequence between forward passes: sample the next token from its logits,
//! detokenize it, check end-of-generation, stop strings, limits and cancellation, and say what
//! to stream. The scheduler owns one of these per running sequence.

use std::time::Instant;

use super::request::{FinishReason, GenerationOutput, TokenLogprobs};
use super::scheduler::SeqRequest;
use crate::error::Result;
use crate::sampling::{Sampler, StopMatcher};
use crate::vocab::{StreamDecoder, Vocab};

/// The result of feeding one row of logits to a sequence.
#[derive(Debug)]
pub(crate) enum Step {
    /// A token was generated: stream `text` (possibly empty) and feed `token` next.
    Next { token: u32, text: String },
    /// Generation ended; `text` (possibly empty) is the last piece to stream, after `token` if
    /// one was generated in this step.
    Finished { token: Option<u32>, text: String },
}

/// Generation state of one sequence.
pub(crate) struct SeqGen<'v> {
    sampler: Sampler,
    stops: StopMatcher,
    decoder: StreamDecoder<'v>,
    vocab: &'v Vocab,
    history: Vec<u32>,
    /// The output so far (finish reason final once [`Step::Finished`] was returned).
    pub out: GenerationOutput,
    first_token_at: Option<Instant>,
}

impl<'v> SeqGen<'v> {
    /// Starts generating after `req.prompt`.
    pub fn new(req: &SeqRequest, vocab: &'v Vocab) -> Result<SeqGen<'v>> {
        Ok(SeqGen {
            sampler: Sampler::new(&req.sampling)?,
            stops: StopMatcher::new(&req.stop),
            decoder: vocab.stream_decoder(true),
            vocab,
            history: req.prompt.clone(),
            out: GenerationOutput {
                text: String::new(),
                token_ids: Vec::new(),
                prompt_ids: req.prompt.clone(),
                finish_reason: FinishReason::Length,
                ttft_ms: 0.0,
                decode_tokens_per_s: 0.0,
                cached_prompt_tokens: 0,
                logprobs: Vec::new(),
            },
            first_token_at: None,
        })
    }

    /// Consumes the logits of the sequence's last position; `fed` is how many positions it holds
    /// (prompt plus generated tokens already run through the model), `context` its limit.
    pub fn on_logits(&mut self, req: &SeqRequest, logits: &mut [f32], fed: usize, context: usize) -> Result<Step> {
        if self.out.token_ids.len() >= req.max_generate_length {
            return self.finish(FinishReason::Length, None);
        }
        if req.stopped() {
            return self.finish(FinishReason::Cancelled, None);
        }
        // Log-probabilities come from the model's own distribution, before sampling alters it.
        let top = (req.logprobs > 0).then(|| log_softmax_top(logits, req.logprobs));
        let token = self.sampler.sample(logits, &self.history);
        if self.first_token_at.is_none() {
            self.first_token_at = Some(Instant::now());
            self.out.ttft_ms = req.started.elapsed().as_secs_f64() * 1e3;
        }
        if !req.ignore_eos && self.vocab.eos_ids().contains(&token) {
            return self.finish(FinishReason::Eos, None);
        }
        if let Some((lse, top, raw)) = top {
            let logprob = raw.get(token as usize).map_or(f32::NEG_INFINITY, |&v| (v as f64 - lse) as f32);
            self.out.logprobs.push(TokenLogprobs { token, logprob, top });
        }
        self.out.token_ids.push(token);
        self.history.push(token);
        let piece = self.decoder.push(token)?;
        let step = self.stops.push(&piece);
        self.out.text.push_str(&step.emit);
        if step.stop.is_some() {
            self.out.finish_reason = FinishReason::Stop;
            self.set_speed();
            return Ok(Step::Finished { token: Some(token), text: step.emit });
        }
        if fed >= context || self.out.token_ids.len() >= req.max_generate_length {
            let mut text = step.emit;
            if let Step::Finished { text: tail, .. } = self.finish(FinishReason::Length, None)? {
                text.push_str(&tail);
            }
            return Ok(Step::Finished { token: Some(token), text });
        }
        Ok(Step::Next { token, text: step.emit })
    }

    /// Ends generation with `reason`, flushing the text the detokenizer and the stop matcher
    /// still hold (which can itself complete a stop string).
    pub fn finish(&mut self, reason: FinishReason, token: Option<u32>) -> Result<Step> {
        self.out.finish_reason = reason;
        let last = self.stops.push(&self.decoder.finish()?);
        let mut tail = last.emit;
        if last.stop.is_some() {
            self.out.finish_reason = FinishReason::Stop;
        } else {
            tail.push_str(&self.stops.finish());
        }
        self.out.text.push_str(&tail);
        self.set_speed();
        Ok(Step::Finished { token, text: tail })
    }

    fn set_speed(&mut self) {
        if let Some(t) = self.first_token_at {
            let n = self.out.token_ids.len().saturating_sub(1);
            let secs = t.elapsed().as_secs_f64();
            self.out.decode_tokens_per_s = if n > 0 && secs > 0.0 { n as f64 / secs } else { 0.0 };
        }
    }
}

/// Log-sum-exp of `logits`, the `n` largest as (id, log-probability) pairs, and a copy of the
/// raw logits (the sampler changes them in place).
fn log_softmax_top(logits: &[f32], n: usize) -> (f64, Vec<(u32, f32)>, Vec<f32>) {
    let max = logits.iter().copied().filter(|v| !v.is_nan()).fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = if max.is_finite() { max + logits.iter().map(|&v| (v as f64 - max).exp()).filter(|e| !e.is_nan()).sum::<f64>().ln() } else { max };
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(n + 1);
    for (i, &v) in logits.iter().enumerate() {
        if v.is_nan() || (top.len() == n && v <= top[n - 1].1) {
            continue;
        }
        let at = top.partition_point(|&(_, t)| t >= v);
        top.insert(at, (i as u32, v));
        top.truncate(n);
    }
    let top = top.into_iter().map(|(i, v)| (i, (v as f64 - lse) as f32)).collect();
    (lse, top, logits.to_vec())
}
