//! Repetition, presence and frequency penalties over the token history the caller passes (its
//! window: prompt plus generated tokens, or the last N of them).
//!
//! The repetition penalty follows Hugging Face and llama.cpp (Keskar et al., CTRL): a seen token's
//! positive logit is divided by the penalty and a negative one multiplied, once however often it
//! occurred. Presence and frequency penalties follow OpenAI: subtract `presence` once and
//! `frequency` per occurrence. Applied in that order, as llama.cpp's penalties sampler does.

use crate::sampling::candidates::Candidates;

/// Penalty strengths; 1, 0 and 0 are neutral.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Penalties {
    /// Divides positive and multiplies negative logits of seen tokens; 1 disables.
    pub repetition: f32,
    /// Subtracted once from the logit of every seen token; 0 disables.
    pub presence: f32,
    /// Subtracted from a seen token's logit once per occurrence; 0 disables.
    pub frequency: f32,
}

impl Penalties {
    /// True when applying these penalties changes nothing.
    pub fn is_neutral(&self) -> bool {
        self.repetition == 1.0 && self.presence == 0.0 && self.frequency == 0.0
    }

    /// The penalized value of a logit whose token occurred `count` (> 0) times.
    pub fn penalize(&self, logit: f32, count: u32) -> f32 {
        let l = if logit < 0.0 {
            logit * self.repetition
        } else {
            logit / self.repetition
        };
        // Grouped as llama.cpp groups it, so results agree bit for bit.
        l - (count as f32 * self.frequency + self.presence)
    }

    /// Penalizes every candidate that occurs in `history`. `counts` and `sorted` are scratch.
    pub fn apply(
        &self,
        cands: &mut Candidates,
        history: &[u32],
        counts: &mut Vec<(u32, u32)>,
        sorted: &mut Vec<u32>,
    ) {
        if self.is_neutral() || history.is_empty() {
            return;
        }
        count_tokens(history, sorted, counts);
        cands.update(counts, |l, &c| self.penalize(l, c));
    }
}

/// Fills `counts` with `(token, occurrences)` for the tokens of `history`, sorted by token id.
pub fn count_tokens(history: &[u32], sorted: &mut Vec<u32>, counts: &mut Vec<(u32, u32)>) {
    sorted.clear();
    sorted.extend_from_slice(history);
    sorted.sort_unstable();
    counts.clear();
    for &t in sorted.iter() {
        match counts.last_mut() {
            Some((id, c)) if *id == t => *c += 1,
            _ => counts.push((t, 1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_sorted_and_complete() {
        let (mut s, mut c) = (Vec::new(), Vec::new());
        count_tokens(&[5, 1, 5, 9, 5, 1], &mut s, &mut c);
        assert_eq!(c, vec![(1, 2), (5, 3), (9, 1)]);
    }

    #[test]
    fn repetition_divides_positive_and_multiplies_negative() {
        let p = Penalties {
            repetition: 2.0,
            presence: 0.0,
            frequency: 0.0,
        };
        assert_eq!(p.penalize(3.0, 4), 1.5);
        assert_eq!(p.penalize(-3.0, 1), -6.0);
        let q = Penalties {
            repetition: 1.0,
            presence: 0.5,
            frequency: 0.25,
        };
        assert_eq!(q.penalize(1.0, 3), 1.0 - (0.75 + 0.5));
    }
}
