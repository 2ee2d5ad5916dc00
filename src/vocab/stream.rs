//! Streaming detokenizer: ids arrive one at a time, text leaves only once it is complete UTF-8,
//! and the pieces add up to exactly what `Vocab::decode` gives for the whole sequence.
//!
//! Decoding a single token is not enough: a character can span several byte tokens, and some
//! decoders treat the first token of a sequence specially (SentencePiece's leading-space strip).
//! So each step decodes a short window of recent ids and releases the part of its text not yet
//! released, minus any trailing U+FFFD: a replacement character at the very end may be the start
//! of a character whose remaining bytes are still to come, while text before it can no longer
//! change. Once everything in the window is released the window shrinks to the ids of the chunk
//! just released, which stay as context: they start on a character boundary (byte-fallback
//! decoders turn a whole run of byte tokens into U+FFFDs if it starts mid-character) and decide,
//! e.g., whether the next piece's leading space is stripped.

use super::Vocab;
use crate::error::Result;

/// Ids held before the window is cut even though its tail is still incomplete; no character
/// spans that many tokens, so only a run of broken bytes can get here, and it is released as is.
const MAX_PENDING: usize = 16;

/// Incremental detokenizer over one [`Vocab`]; one per generated sequence.
pub struct StreamDecoder<'v> {
    vocab: &'v Vocab,
    skip_special: bool,
    /// Recent ids: the last released chunk as context, then the ids whose text is not all out yet.
    window: Vec<u32>,
    /// Where in `window` the ids not yet fully released begin.
    pending: usize,
    /// Bytes of `decode(window)` already released.
    released: usize,
}

impl<'v> StreamDecoder<'v> {
    /// A decoder with nothing pushed yet; `skip_special` drops special tokens from the text.
    pub fn new(vocab: &'v Vocab, skip_special: bool) -> Self {
        StreamDecoder {
            vocab,
            skip_special,
            window: Vec::new(),
            pending: 0,
            released: 0,
        }
    }

    /// Adds one id and returns the text it completes (possibly empty while a character is split).
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.vocab.check_ids(&[id])?;
        self.window.push(id);
        let text = self.vocab.decode(&self.window, self.skip_special)?;
        let stable = if self.window.len() - self.pending > MAX_PENDING {
            text.len()
        } else {
            text.trim_end_matches('\u{fffd}').len()
        };
        // The released text is a prefix of this decode for every decoder HF ships; if some
        // decoder rewrote it, hold output rather than emit text twice.
        let fresh = match text.get(self.released..stable) {
            Some(s) if stable > self.released => s.to_string(),
            _ => String::new(),
        };
        self.released = self.released.max(stable);
        if stable == text.len() {
            self.window.drain(..self.pending);
            self.pending = self.window.len();
            self.released = self.vocab.decode(&self.window, self.skip_special)?.len();
        }
        Ok(fresh)
    }

    /// Releases whatever is still held; bytes that never formed a character become U+FFFD.
    pub fn finish(&mut self) -> Result<String> {
        let text = self.vocab.decode(&self.window, self.skip_special)?;
        let rest = text.get(self.released..).unwrap_or("").to_string();
        self.window.clear();
        self.pending = 0;
        self.released = 0;
        Ok(rest)
    }
}
