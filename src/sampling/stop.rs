//! Stop strings in streamed text. Generated text arrives piece by piece (whole UTF-8 characters);
//! [`StopMatcher`] releases what is safe to show and holds back any tail that could still grow
//! into a stop string, so a stream never shows part of a stop string, and it cuts the text just
//! before the first stop string to complete.
//!
//! "First to complete" means the match that ends earliest (and of those, the one that starts
//! earliest). That is the only rule a streaming reader can follow — once a stop string has been
//! seen it must stop, even if a longer one that started earlier might have completed later — and
//! it makes the result independent of how the text was split into pieces.

/// What one [`StopMatcher::push`] releases.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StopOutcome {
    /// Text that may be shown now.
    pub emit: String,
    /// Index (into the stop list) of the stop string that completed; generation should end.
    pub stop: Option<usize>,
}

/// Watches streamed text for stop strings.
#[derive(Clone, Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Text received but not yet released.
    held: String,
    stopped: Option<usize>,
    longest: usize,
}

impl StopMatcher {
    /// A matcher for `stops`; empty strings are ignored.
    pub fn new(stops: &[String]) -> StopMatcher {
        let stops: Vec<String> = stops.to_vec();
        let longest = stops.iter().map(String::len).max().unwrap_or(0);
        StopMatcher {
            stops,
            held: String::new(),
            stopped: None,
            longest,
        }
    }

    /// Feeds the next piece of generated text. After a stop has completed, further pieces are
    /// swallowed and the same stop index is reported again.
    pub fn push(&mut self, piece: &str) -> StopOutcome {
        if let Some(i) = self.stopped {
            return StopOutcome {
                emit: String::new(),
                stop: Some(i),
            };
        }
        self.held.push_str(piece);
        if let Some((start, idx)) = self.first_complete() {
            self.stopped = Some(idx);
            let emit = self.held[..start].to_string();
            self.held.clear();
            return StopOutcome {
                emit,
                stop: Some(idx),
            };
        }
        let keep_from = self.partial_start();
        let emit = self.held[..keep_from].to_string();
        self.held.drain(..keep_from);
        StopOutcome { emit, stop: None }
    }

    /// Ends the stream without a stop: returns (and clears) the text still held back.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Text currently held back because it could begin a stop string.
    pub fn held(&self) -> &str {
        &self.held
    }

    /// Index of the stop string that completed, if any.
    pub fn stopped(&self) -> Option<usize> {
        self.stopped
    }

    /// Start and stop index of the match that ends first (ties: starts first).
    fn first_complete(&self) -> Option<(usize, usize)> {
        let mut best: Option<(usize, usize, usize)> = None; // (end, start, index)
        for (i, s) in self.stops.iter().enumerate() {
            if s.is_empty() {
                continue;
            }
            if let Some(start) = self.held.find(s.as_str()) {
                let cand = (start + s.len(), start, i);
                if best.is_none_or(|b| (cand.0, cand.1) < (b.0, b.1)) {
                    best = Some(cand);
                }
            }
        }
        best.map(|(_, start, i)| (start, i))
    }

    /// Where the longest suffix of `held` that is a proper prefix of some stop string begins
    /// (`held.len()` when there is none). Only character boundaries can start a match.
    fn partial_start(&self) -> usize {
        let from = self
            .held
            .len()
            .saturating_sub(self.longest.saturating_sub(1));
        self.held
            .char_indices()
            .map(|(i, _)| i)
            .filter(|&i| i >= from)
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops
                    .iter()
                    .any(|s| s.len() > tail.len() && s.starts_with(tail))
            })
            .unwrap_or(self.held.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(stops: &[&str]) -> StopMatcher {
        StopMatcher::new(&stops.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn no_stops_passes_text_through() {
        let mut s = m(&[]);
        assert_eq!(
            s.push("abc"),
            StopOutcome {
                emit: "abc".into(),
                stop: None
            }
        );
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn empty_stop_strings_are_ignored() {
        let mut s = m(&["", "x"]);
        assert_eq!(s.push("ab").emit, "ab");
    }
}
