//! Token sampling: a chain of stages, composable like llama.cpp's sampler chain, that turns one
//! step's logits into a token, plus [`StopMatcher`] for stop strings in streamed text.
//!
//! The default chain built from [`SamplingParams`] is: logit bias → penalties → temperature →
//! top-k → top-p → min-p → random draw, the order Hugging Face transformers applies its
//! processors and warpers in (llama.cpp moves temperature last; with temperature first, top-p
//! and min-p see the distribution that is actually sampled, as OpenAI-style servers do).
//! Temperature 0 or top-k 1 replaces the filters and the draw by argmax (ties to the lowest id).
//! Each request owns a seeded [`Rng`], so a seed reproduces a generation exactly.

pub mod candidates;
pub mod penalties;
pub mod rng;
pub mod stop;

pub use candidates::{Candidates, TokenLogit};
pub use penalties::Penalties;
pub use rng::Rng;
pub use stop::{StopMatcher, StopOutcome};

use crate::error::{Error, Result};
use crate::runtime::SamplingParams;

/// One step of a sampler chain.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stage {
    /// Adds the biases set with [`Sampler::set_logit_bias`].
    LogitBias,
    /// Repetition, presence and frequency penalties over the history.
    Penalties(Penalties),
    /// Divides logits by the temperature (> 0).
    Temperature(f32),
    /// Keeps the k most likely tokens (and ties with the k-th); 0 disables.
    TopK(u32),
    /// Keeps the smallest set of most likely tokens whose mass reaches p, in (0, 1].
    TopP(f32),
    /// Drops tokens below min-p times the top probability, in [0, 1].
    MinP(f32),
}

impl Stage {
    fn validate(&self) -> Result<()> {
        let bad = |what: &str, v: f32| {
            Err(Error::InvalidArgument(format!(
                "{what} must be {}, got {v}",
                range_of(what)
            )))
        };
        match *self {
            Stage::LogitBias | Stage::TopK(_) => Ok(()),
            Stage::Penalties(p) => {
                if !(p.repetition.is_finite() && p.repetition > 0.0) {
                    return bad("repetition_penalty", p.repetition);
                }
                if !p.presence.is_finite() {
                    return bad("presence_penalty", p.presence);
                }
                if !p.frequency.is_finite() {
                    return bad("frequency_penalty", p.frequency);
                }
                Ok(())
            }
            Stage::Temperature(t) if !(t.is_finite() && t > 0.0) => bad("temperature", t),
            Stage::TopP(p) if !(p > 0.0 && p <= 1.0) => bad("top_p", p),
            Stage::MinP(p) if !(0.0..=1.0).contains(&p) => bad("min_p", p),
            _ => Ok(()),
        }
    }
}

fn range_of(what: &str) -> &'static str {
    match what {
        "temperature" => "finite and > 0 in a temperature stage (>= 0 in sampling parameters)",
        "top_p" => "in (0, 1]",
        "min_p" => "in [0, 1]",
        "repetition_penalty" => "finite and > 0",
        _ => "finite",
    }
}

/// How a chain picks the token from what its stages leave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// The largest logit; ties go to the lowest id.
    Greedy,
    /// A draw from the softmax of the remaining logits.
    Random,
}

/// A sampler chain with its random stream and scratch buffers; one per request (or sequence).
pub struct Sampler {
    stages: Vec<Stage>,
    pick: Pick,
    rng: Rng,
    bias: Vec<(u32, f32)>,
    list: Vec<TokenLogit>,
    weights: Vec<f32>,
    counts: Vec<(u32, u32)>,
    sorted_history: Vec<u32>,
}

impl Sampler {
    /// Builds the default chain for `params`, rejecting out-of-range or non-finite values.
    pub fn new(params: &SamplingParams) -> Result<Sampler> {
        let t = params.temperature;
        if !(t.is_finite() && t >= 0.0) {
            return Err(Error::InvalidArgument(format!(
                "temperature must be finite and >= 0, got {t}"
            )));
        }
        let penalties = Penalties {
            repetition: params.repetition_penalty,
            presence: params.presence_penalty,
            frequency: params.frequency_penalty,
        };
        // Validate every parameter even where the greedy chain will not use it, so a bad request
        // fails the same way whatever its temperature.
        for s in [
            Stage::Penalties(penalties),
            Stage::TopP(params.top_p),
            Stage::MinP(params.min_p),
        ] {
            s.validate()?;
        }
        let mut stages = vec![Stage::LogitBias];
        if !penalties.is_neutral() {
            stages.push(Stage::Penalties(penalties));
        }
        if t == 0.0 || params.top_k == 1 {
            return Self::with_stages(stages, Pick::Greedy, params.seed);
        }
        if t != 1.0 {
            stages.push(Stage::Temperature(t));
        }
        if params.top_k > 0 {
            stages.push(Stage::TopK(params.top_k));
        }
        if params.top_p < 1.0 {
            stages.push(Stage::TopP(params.top_p));
        }
        if params.min_p > 0.0 {
            stages.push(Stage::MinP(params.min_p));
        }
        Self::with_stages(stages, Pick::Random, params.seed)
    }

    /// Builds a custom chain: `stages` applied in order, then `pick`, with a stream seeded by `seed`.
    pub fn with_stages(stages: Vec<Stage>, pick: Pick, seed: u64) -> Result<Sampler> {
        for s in &stages {
            s.validate()?;
        }
        Ok(Sampler {
            stages,
            pick,
            rng: Rng::new(seed),
            bias: Vec::new(),
            list: Vec::new(),
            weights: Vec::new(),
            counts: Vec::new(),
            sorted_history: Vec::new(),
        })
    }

    /// The chain's stages, in order.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// How the chain picks its token.
    pub fn pick(&self) -> Pick {
        self.pick
    }

    /// Sets additive logit biases (OpenAI `logit_bias`); a token listed twice gets the sum.
    /// `-inf` bans a token; NaN and `+inf` are refused. Ids past the vocabulary are ignored.
    pub fn set_logit_bias(&mut self, bias: Vec<(u32, f32)>) -> Result<()> {
        if let Some((id, b)) = bias.iter().find(|(_, b)| b.is_nan() || *b == f32::INFINITY) {
            return Err(Error::InvalidArgument(format!(
                "logit bias of token {id} must be finite or -inf, got {b}"
            )));
        }
        let mut bias = bias;
        bias.sort_by_key(|e| e.0);
        let mut merged: Vec<(u32, f32)> = Vec::with_capacity(bias.len());
        for (id, b) in bias {
            match merged.last_mut() {
                Some((last, sum)) if *last == id => *sum += b,
                _ => merged.push((id, b)),
            }
        }
        self.bias = merged;
        Ok(())
    }

    /// Picks the next token from `logits` (one per vocabulary entry; modified in place as
    /// scratch) given the token `history` the penalties look at. An empty vocabulary yields 0.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let mut list = std::mem::take(&mut self.list);
        let mut cands = Candidates::new(logits, &mut list);
        self.run_stages(&mut cands, history);
        let token = match self.pick {
            Pick::Greedy => cands.argmax(),
            Pick::Random => cands.draw(&mut self.rng, &mut self.weights),
        };
        self.list = list;
        token
    }

    /// Runs the stages without picking and returns the surviving tokens with their final logits
    /// (in no particular order); what `sample` would draw from.
    pub fn candidates(&mut self, logits: &mut [f32], history: &[u32]) -> Vec<TokenLogit> {
        let mut list = std::mem::take(&mut self.list);
        let mut cands = Candidates::new(logits, &mut list);
        self.run_stages(&mut cands, history);
        let out = cands.as_list().to_vec();
        self.list = list;
        out
    }

    fn run_stages(&mut self, cands: &mut Candidates, history: &[u32]) {
        for stage in &self.stages {
            match *stage {
                Stage::LogitBias => cands.update(&self.bias, |l, b| l + b),
                Stage::Penalties(p) => {
                    p.apply(cands, history, &mut self.counts, &mut self.sorted_history)
                }
                Stage::Temperature(t) => cands.divide(t),
                Stage::TopK(k) => cands.top_k(k as usize),
                Stage::TopP(p) => cands.top_p(p),
                Stage::MinP(p) => cands.min_p(p),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> SamplingParams {
        SamplingParams::default()
    }

    #[test]
    fn default_params_are_greedy() {
        let s = Sampler::new(&params()).unwrap();
        assert_eq!(s.pick(), Pick::Greedy);
        assert_eq!(s.stages(), &[Stage::LogitBias]);
    }

    #[test]
    fn chain_follows_the_documented_order() {
        let p = SamplingParams {
            temperature: 0.7,
            top_k: 40,
            top_p: 0.9,
            min_p: 0.05,
            repetition_penalty: 1.1,
            ..params()
        };
        let s = Sampler::new(&p).unwrap();
        let kinds: Vec<&str> = s
            .stages()
            .iter()
            .map(|s| match s {
                Stage::LogitBias => "bias",
                Stage::Penalties(_) => "pen",
                Stage::Temperature(_) => "temp",
                Stage::TopK(_) => "k",
                Stage::TopP(_) => "p",
                Stage::MinP(_) => "minp",
            })
            .collect();
        assert_eq!(kinds, ["bias", "pen", "temp", "k", "p", "minp"]);
        assert_eq!(s.pick(), Pick::Random);
    }

    #[test]
    fn bias_can_ban_and_force() {
        let mut s = Sampler::new(&params()).unwrap();
        s.set_logit_bias(vec![(0, f32::NEG_INFINITY), (2, 5.0), (2, 1.0), (99, 3.0)])
            .unwrap();
        assert_eq!(s.sample(&mut [10.0, 1.0, 0.0], &[]), 2);
        assert!(s.set_logit_bias(vec![(1, f32::NAN)]).is_err());
        assert!(s.set_logit_bias(vec![(1, f32::INFINITY)]).is_err());
    }

    #[test]
    fn tiny_temperature_overflowing_to_infinity_still_picks_the_top_token() {
        let p = SamplingParams {
            temperature: 1e-38,
            top_p: 0.9,
            min_p: 0.1,
            ..params()
        };
        let mut s = Sampler::new(&p).unwrap();
        // 4 / 1e-38 overflows to +inf while the others stay finite.
        assert_eq!(s.sample(&mut [0.1, 4.0, -2.0, 0.2], &[]), 1);
    }

    #[test]
    fn empty_vocabulary_yields_zero() {
        let mut s = Sampler::new(&SamplingParams {
            temperature: 1.0,
            top_p: 0.5,
            ..params()
        })
        .unwrap();
        assert_eq!(s.sample(&mut [], &[3]), 0);
    }
}
