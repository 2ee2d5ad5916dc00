//! Text ⇄ token ids for one model: the tokenizer (`Vocab`), a streaming detokenizer that only
//! releases complete UTF-8 (`StreamDecoder`), and chat templates (`ChatTemplate`).
//!
//! Both sources of a vocabulary, a Hugging Face `tokenizer.json` and a GGUF file's embedded
//! vocabulary, end up as a `tokenizers` pipeline: the HF file is loaded as is, and the GGUF
//! vocabulary is rebuilt into the same pipeline (normalizer, pre-tokenizer, BPE, decoder) that
//! transformers builds from it, so token ids match HF exactly. The GGUF pipeline's BPE model is our
//! own compact one (`bpe.rs`), which loads a 262k-token vocabulary several times faster and in a
//! fraction of the memory. On top of that `Vocab` keeps what the runtime needs fast: each token's
//! raw bytes, which ids are special, and every end-of-generation id.

mod bpe;
mod bytes;
mod gguf;
mod hf;
mod merges;
mod stream;
mod template;
mod template_fns;

pub use stream::StreamDecoder;
pub use template::ChatTemplate;

use std::collections::HashSet;

use tokenizers::{DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper};
use tokenizers::{Tokenizer, TokenizerImpl};

use crate::error::{Error, Result};
use crate::loader::metadata::Metadata;

/// Token strings that end a turn in the common chat formats; any of them present in a vocabulary
/// as a special token counts as end of generation, whatever the file names as its EOS.
const END_OF_TURN_TOKENS: &[&str] = &[
    "<|im_end|>",
    "<end_of_turn>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<|end|>",
];

/// No vocabulary may have ids at or past this (real ones stay below 2^18).
const MAX_TOKEN_IDS: usize = 1 << 24;

/// How many ids a vocabulary of `counted` tokens may span: added tokens may leave gaps (padded
/// embedding tables), but an id far past the token count would only size the id tables.
fn max_token_ids(counted: usize) -> usize {
    counted
        .saturating_mul(2)
        .saturating_add(1024)
        .min(MAX_TOKEN_IDS)
}

/// How a vocabulary spells bytes in its token strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenSpelling {
    /// GPT-2 byte-level BPE: every byte is written as one printable character.
    ByteLevel,
    /// SentencePiece style: `▁` stands for a space and `<0xNN>` tokens carry single bytes.
    SentencePiece,
}

/// The pipeline a GGUF vocabulary is rebuilt into: `tokenizers`' stages around our BPE model.
pub(crate) type GgufTokenizer = TokenizerImpl<
    bpe::RankedBpe,
    NormalizerWrapper,
    PreTokenizerWrapper,
    PostProcessorWrapper,
    DecoderWrapper,
>;

/// The tokenizer pipeline behind a [`Vocab`].
pub(crate) enum Pipeline {
    /// A Hugging Face `tokenizer.json`, as `tokenizers` loads it.
    Hf(Box<Tokenizer>),
    /// A GGUF vocabulary.
    Gguf(Box<GgufTokenizer>),
}

/// Runs `$body` with `$t` bound to whichever pipeline `$p` holds (the two share method names).
macro_rules! with_pipeline {
    ($p:expr, $t:ident => $body:expr) => {
        match $p {
            Pipeline::Hf($t) => $body,
            Pipeline::Gguf($t) => $body,
        }
    };
}

/// A model's tokenizer: encodes text to ids and decodes ids back, exactly as Hugging Face does.
pub struct Vocab {
    tokenizer: Pipeline,
    spelling: TokenSpelling,
    /// Raw bytes of every token, concatenated; token `i` is `piece_bytes[piece_ends[i-1]..piece_ends[i]]`.
    piece_bytes: Vec<u8>,
    piece_ends: Vec<u32>,
    special: Vec<bool>,
    bos: Option<u32>,
    add_bos: bool,
    eos: Vec<u32>,
}

impl std::fmt::Debug for Vocab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vocab")
            .field("n_tokens", &self.n_tokens())
            .field("spelling", &self.spelling)
            .field("bos", &self.bos)
            .field("add_bos", &self.add_bos)
            .field("eos", &self.eos)
            .finish()
    }
}

/// Maps a `tokenizers` error into ours.
pub(crate) fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

impl Vocab {
    /// Builds the tokenizer a GGUF file describes (`tokenizer.ggml.*` metadata).
    pub fn from_gguf(meta: &Metadata) -> Result<Vocab> {
        gguf::build(meta)
    }

    /// Builds the tokenizer of a Hugging Face model directory (`tokenizer.json` plus
    /// `tokenizer_config.json`, `special_tokens_map.json` and `generation_config.json` when present).
    pub fn from_hf_dir(dir: &std::path::Path) -> Result<Vocab> {
        hf::build(dir)
    }

    /// Finishes a vocabulary: computes token bytes and special flags, and collects EOS ids from
    /// `eos_candidates` (ids named by the model files) plus the well-known end-of-turn tokens.
    fn assemble(
        tokenizer: Pipeline,
        spelling: TokenSpelling,
        bos: Option<u32>,
        eos_candidates: &[u32],
    ) -> Result<Vocab> {
        let added = with_pipeline!(&tokenizer, t => t.get_added_tokens_decoder());
        // A tokenizer.json may number added tokens past the end of the model's vocabulary, but
        // the tables below have one entry per id up to the largest, so that id is bounded.
        let counted = with_pipeline!(&tokenizer, t => t.get_vocab_size(true));
        let limit = max_token_ids(counted);
        if let Some((&id, tok)) = added.iter().max_by_key(|(&id, _)| id) {
            if id as usize >= limit {
                return Err(Error::Tokenizer(format!(
                    "added token {:?} has id {id}, far past the {counted} tokens of the \
                     vocabulary (ids must stay below {limit})",
                    tok.content
                )));
            }
        }
        let past_added = added.keys().map(|&id| id as usize + 1).max().unwrap_or(0);
        let n = counted.max(past_added);
        let mut special = vec![false; n];
        for (&id, tok) in &added {
            if tok.special && (id as usize) < n {
                special[id as usize] = true;
            }
        }
        let unicode_to_byte = bytes::unicode_to_byte();
        let mut piece_bytes = Vec::with_capacity(n * 6);
        let mut piece_ends = Vec::with_capacity(n);
        for id in 0..n as u32 {
            if let Some(tok) = added.get(&id) {
                piece_bytes.extend_from_slice(tok.content.as_bytes());
            } else {
                let model_token = match &tokenizer {
                    Pipeline::Hf(t) => t.id_to_token(id).map(std::borrow::Cow::Owned),
                    // Borrowed from the token table: no string per id. The same as
                    // `id_to_token`, since added tokens were handled above.
                    Pipeline::Gguf(t) => t
                        .get_model()
                        .tokens()
                        .token(id)
                        .map(std::borrow::Cow::Borrowed),
                };
                if let Some(s) = model_token {
                    match spelling {
                        TokenSpelling::ByteLevel => {
                            bytes::byte_level_bytes(&s, &unicode_to_byte, &mut piece_bytes)
                        }
                        TokenSpelling::SentencePiece => {
                            bytes::sentencepiece_bytes(&s, &mut piece_bytes)
                        }
                    }
                }
            }
            let end = u32::try_from(piece_bytes.len())
                .map_err(|_| Error::Tokenizer("vocabulary text exceeds 4 GiB".into()))?;
            piece_ends.push(end);
        }
        let mut eos = Vec::new();
        let mut seen = HashSet::new();
        for &id in eos_candidates {
            if (id as usize) < n && seen.insert(id) {
                eos.push(id);
            }
        }
        for name in END_OF_TURN_TOKENS {
            if let Some(id) = with_pipeline!(&tokenizer, t => t.token_to_id(name)) {
                if special.get(id as usize) == Some(&true) && seen.insert(id) {
                    eos.push(id);
                }
            }
        }
        let bos = bos.filter(|&b| (b as usize) < n);
        let mut v = Vocab {
            tokenizer,
            spelling,
            piece_bytes,
            piece_ends,
            special,
            bos,
            add_bos: false,
            eos,
        };
        // Whether BOS is added is whatever the post-processor does, so ask it rather than a flag.
        if let Some(b) = v.bos {
            v.add_bos = v.encode("", true)?.first() == Some(&b);
        }
        Ok(v)
    }

    /// Encodes `text`; `add_special` adds BOS/EOS as the model's tokenizer does. Special-token text
    /// such as `<|im_start|>` is always parsed as that special token.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc = with_pipeline!(&self.tokenizer, t => t.encode_fast(text, add_special))
            .map_err(tok_err)?;
        Ok(enc.get_ids().to_vec())
    }

    /// Decodes ids to text as HF `decode` does; `skip_special` drops special tokens.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.check_ids(ids)?;
        with_pipeline!(&self.tokenizer, t => t.decode(ids, skip_special)).map_err(tok_err)
    }

    /// Fails with `InvalidArgument` naming the first id outside the vocabulary.
    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        match ids.iter().find(|&&id| id as usize >= self.n_tokens()) {
            Some(bad) => Err(Error::InvalidArgument(format!(
                "token id {bad} is out of range (vocabulary has {} tokens)",
                self.n_tokens()
            ))),
            None => Ok(()),
        }
    }

    /// Raw bytes token `id` stands for (special tokens give their text), or `None` when out of range.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        let i = id as usize;
        let end = *self.piece_ends.get(i)? as usize;
        let start = if i == 0 {
            0
        } else {
            self.piece_ends[i - 1] as usize
        };
        Some(&self.piece_bytes[start..end])
    }

    /// Number of token ids, added tokens included.
    pub fn n_tokens(&self) -> usize {
        self.piece_ends.len()
    }

    /// The beginning-of-sequence id, if the model has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// Whether `encode(text, true)` puts BOS in front.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Every id that ends generation (EOS, EOT and the end-of-turn tokens the vocabulary has).
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos
    }

    /// Whether `id` is a special (control) token; false for out-of-range ids.
    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    /// The id of a token written as the vocabulary spells it (e.g. `<|im_end|>`, `Ġthe`, `▁the`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        with_pipeline!(&self.tokenizer, t => t.token_to_id(token))
    }

    /// The token string of `id` as the vocabulary spells it.
    pub fn token_str(&self, id: u32) -> Option<String> {
        with_pipeline!(&self.tokenizer, t => t.id_to_token(id))
    }

    /// How this vocabulary spells bytes inside token strings.
    pub fn spelling(&self) -> TokenSpelling {
        self.spelling
    }

    /// A streaming detokenizer over this vocabulary.
    pub fn stream_decoder(&self, skip_special: bool) -> StreamDecoder<'_> {
        StreamDecoder::new(self, skip_special)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The runtime shares one vocabulary and template between request threads.
    #[test]
    fn vocab_and_template_are_shareable_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Vocab>();
        shareable::<ChatTemplate>();
        shareable::<StreamDecoder<'static>>();
    }

    fn assemble_json(text: &str) -> Result<Vocab> {
        let tokenizer: Tokenizer = text.parse().expect("valid tokenizer.json");
        Vocab::assemble(
            Pipeline::Hf(Box::new(tokenizer)),
            TokenSpelling::ByteLevel,
            None,
            &[],
        )
    }

    /// The fuzz corpus's reproducer: an added token with id 2^32 - 2, for which tables sized by
    /// the largest id would take tens of gigabytes.
    #[test]
    fn added_token_id_far_past_the_vocabulary_is_refused() {
        let text = include_str!(
            "../../tests/fixtures/fuzz_corpus/tokenizer_json/bad_added_token_id_huge_in_model.json"
        );
        let err = assemble_json(text).unwrap_err();
        assert!(
            matches!(&err, Error::Tokenizer(m) if m.contains("4294967294") && m.contains("<|im_end|>")),
            "{err}"
        );
    }

    /// A modest gap before an added token (the model's vocabulary skips ids) is still accepted.
    #[test]
    fn added_token_ids_with_a_small_gap_are_accepted() {
        let text = r#"{"added_tokens": [{"id": 1000, "content": "<x>", "special": true,
            "single_word": false, "lstrip": false, "rstrip": false, "normalized": false}],
            "model": {"type": "WordLevel", "vocab": {"a": 0, "b": 1, "<x>": 1000}, "unk_token": "a"}}"#;
        let v = assemble_json(text).unwrap();
        assert_eq!(v.n_tokens(), 1001);
        assert!(v.is_special(1000));
        assert_eq!(v.token_bytes(1000), Some(&b"<x>"[..]));
    }
}
