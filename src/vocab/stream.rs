//! Streaming detokenizer: ids arrive one at a time, text leaves only once it is complete UTF-8,
//! and the pieces add up to exactly what `Vocab::decode` gives for the whole sequence.
//!
//! Decoding a single token is not enough: a character can span several byte tokens, and some
//! decoders treat the first token of a sequence specially (SentencePiece's leading-space strip).
//! So each step decodes a short window twice, with and without the new ids, and releases the
//! difference, the approach of HF text-generation-inference. The window starts at the last
//! point where released text ended on a whole character, so the work per token stays small.

use super::Vocab;
use crate::error::Result;

/// Incremental detokenizer over one [`Vocab`]; one per generated sequence.
pub struct StreamDecoder<'v> {
    vocab: &'v Vocab,
    skip_special: bool,
    /// Ids from the start of the current window.
    window: Vec<u32>,
    /// How many ids of `window` have already been released as text.
    read: usize,
}

impl<'v> StreamDecoder<'v> {
    /// A decoder with nothing pushed yet; `skip_special` drops special tokens from the text.
    pub fn new(vocab: &'v Vocab, skip_special: bool) -> Self {
        StreamDecoder { vocab, skip_special, window: Vec::new(), read: 0 }
    }

    /// Adds one id and returns the text it completes (possibly empty while a character is split).
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.vocab.check_ids(&[id])?;
        self.window.push(id);
        let before = self.vocab.decode(&self.window[..self.read], self.skip_special)?;
        let now = self.vocab.decode(&self.window, self.skip_special)?;
        // A trailing U+FFFD means the last character is still missing bytes: wait for more.
        if now.len() <= before.len() || now.ends_with('\u{fffd}') || !now.starts_with(&before) {
            return Ok(String::new());
        }
        let fresh = now[before.len()..].to_string();
        // Keep the last released id as context for the next window (it decides, e.g., whether
        // the next piece's leading space is stripped), drop everything before it.
        let keep_from = self.window.len() - 1;
        self.window.drain(..keep_from);
        self.read = self.window.len();
        Ok(fresh)
    }

    /// Releases whatever is still held; bytes that never formed a character become U+FFFD.
    pub fn finish(&mut self) -> Result<String> {
        let before = self.vocab.decode(&self.window[..self.read], self.skip_special)?;
        let now = self.vocab.decode(&self.window, self.skip_special)?;
        self.window.clear();
        self.read = 0;
        Ok(match now.strip_prefix(before.as_str()) {
            Some(rest) => rest.to_string(),
            None => String::new(),
        })
    }
}
