//! Rebuilds a GGUF file's embedded vocabulary (`tokenizer.ggml.*`) into the tokenizer pipeline
//! Hugging Face builds for it: byte-level BPE for `gpt2`, SentencePiece-style BPE with byte
//! fallback for `llama` (Gemma's variant included).
//!
//! The pre-tokenizer of a byte-level vocabulary is named by `tokenizer.ggml.pre`; an unknown name
//! is refused rather than guessed, since a wrong split rule silently changes token ids.

use std::borrow::Cow;

use rayon::prelude::*;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::normalizers::replace::Replace;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use super::bpe::{self, Fallback, MergeMap, RankedBpe, TokenTable};
use super::{bytes, merges, tok_err, GgufTokenizer, Pipeline, TokenSpelling, Vocab};
use crate::error::{Error, Result};
use crate::loader::metadata::Metadata;

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;

/// Llama 3's split rule (also used by the other `llama-bpe`-style vocabularies).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 2's split rule: Llama 3's with single digits.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The `tokenizer.ggml.pre` values this module knows, for error messages.
const KNOWN_PRE: &str = "default, gpt2, smollm, llama3, llama-v3, llama-bpe, dbrx, smaug-bpe, falcon3, qwen2, deepseek-r1-qwen";

/// Builds a [`Vocab`] from GGUF metadata.
pub(crate) fn build(meta: &Metadata) -> Result<Vocab> {
    let model = meta.str("tokenizer.ggml.model")?;
    let tokens = meta
        .str_array_opt("tokenizer.ggml.tokens")?
        .ok_or_else(|| Error::format(&meta.source, "missing metadata key tokenizer.ggml.tokens"))?;
    if tokens.is_empty() || tokens.len() > u32::MAX as usize {
        return Err(Error::format(
            &meta.source,
            format!("tokenizer.ggml.tokens has {} entries", tokens.len()),
        ));
    }
    let types = meta.i64_array_opt("tokenizer.ggml.token_type")?;
    if let Some(t) = &types {
        if t.len() != tokens.len() {
            return Err(Error::format(
                &meta.source,
                format!(
                    "tokenizer.ggml.token_type has {} entries for {} tokens",
                    t.len(),
                    tokens.len()
                ),
            ));
        }
    }
    let types = types.unwrap_or_else(|| vec![1; tokens.len()]);
    let id_key = |key: &str| -> Result<Option<u32>> {
        Ok(meta
            .u64_opt(key)?
            .and_then(|v| u32::try_from(v).ok())
            .filter(|&v| (v as usize) < tokens.len()))
    };
    let ids = SpecialIds {
        bos: id_key("tokenizer.ggml.bos_token_id")?,
        eos: id_key("tokenizer.ggml.eos_token_id")?,
        unk: id_key("tokenizer.ggml.unknown_token_id")?,
        pad: id_key("tokenizer.ggml.padding_token_id")?,
    };
    let (mut tokenizer, spelling, add_bos_default) = match model {
        "gpt2" => (
            byte_level(meta, &tokens, &types, &ids)?,
            TokenSpelling::ByteLevel,
            false,
        ),
        "llama" => (
            sentencepiece(meta, &tokens, &ids)?,
            TokenSpelling::SentencePiece,
            true,
        ),
        other => {
            return Err(Error::Unsupported(format!(
                "{}: tokenizer.ggml.model {other:?} is not supported (known: gpt2, llama)",
                meta.source.display()
            )))
        }
    };
    let add_bos = meta
        .bool_opt("tokenizer.ggml.add_bos_token")?
        .unwrap_or(add_bos_default);
    let add_eos = meta
        .bool_opt("tokenizer.ggml.add_eos_token")?
        .unwrap_or(false);
    let bos_str = ids.bos.map(|i| tokens[i as usize]);
    let eos_str = ids.eos.map(|i| tokens[i as usize]);
    tokenizer.with_post_processor(Some(post_processor(
        if add_bos { ids.bos.zip(bos_str) } else { None },
        if add_eos { ids.eos.zip(eos_str) } else { None },
    )?));

    let mut eos = Vec::new();
    for key in [
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.eot_token_id",
        "tokenizer.ggml.eom_token_id",
    ] {
        eos.extend(id_key(key)?);
    }
    Vocab::assemble(Pipeline::Gguf(Box::new(tokenizer)), spelling, ids.bos, &eos)
}

/// The special token ids a GGUF names.
struct SpecialIds {
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
}

/// GPT-2 style byte-level BPE with the file's merges.
fn byte_level(
    meta: &Metadata,
    tokens: &[&str],
    types: &[i64],
    ids: &SpecialIds,
) -> Result<GgufTokenizer> {
    let table = bytes::byte_to_unicode();
    let alphabet = bytes::unicode_to_byte();
    let in_alphabet = |t: &str| t.chars().all(|c| alphabet.get(c).is_some());
    // A token written outside the byte alphabet (llama.cpp stores some added tokens as plain
    // UTF-8) is respelled through the table, as transformers does.
    let spelled: Vec<Cow<str>> = tokens
        .iter()
        .map(|t| {
            if in_alphabet(t) {
                Cow::Borrowed(*t)
            } else {
                Cow::Owned(t.bytes().map(|b| table[b as usize]).collect())
            }
        })
        .collect();
    let vocab = token_table(meta, &spelled)?;
    drop(spelled);
    let merges = meta
        .str_array_opt("tokenizer.ggml.merges")?
        .ok_or_else(|| Error::format(&meta.source, "missing metadata key tokenizer.ggml.merges"))?;
    let pairs = merges
        .iter()
        .map(|m| {
            let mut parts = m.split(' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), None) => Ok((a, b)),
                _ => Err(Error::format(
                    &meta.source,
                    format!("tokenizer.ggml.merges entry {m:?} is not two tokens"),
                )),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let merges = file_merges(meta, &vocab, &pairs)?;
    let bpe = RankedBpe::new(
        vocab,
        merges,
        Fallback {
            byte_tokens: false,
            unk: None,
        },
    );
    let mut tokenizer = GgufTokenizer::new(bpe);
    let pre = meta.str_opt("tokenizer.ggml.pre")?.unwrap_or("default");
    tokenizer.with_pre_tokenizer(Some(byte_level_pre_tokenizer(pre).ok_or_else(|| {
        Error::Unsupported(format!(
            "{}: tokenizer.ggml.pre {pre:?} is not a known pre-tokenizer (known: {KNOWN_PRE})",
            meta.source.display()
        ))
    })??));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));

    // Control tokens are special; user-defined ones are plain added tokens (matched whole in
    // text). A control token outside the byte alphabet is a mislabel and stays an ordinary token.
    // The named special tokens (BOS, EOS, UNK, PAD) are special too, whatever their type says.
    let named = [ids.bos, ids.eos, ids.unk, ids.pad]
        .into_iter()
        .flatten()
        .map(|i| tokens[i as usize]);
    let control: Vec<AddedToken> = named
        .chain(
            tokens
                .iter()
                .zip(types)
                .filter(|(_, &ty)| ty == TYPE_CONTROL)
                .map(|(t, _)| *t),
        )
        .filter(|t| in_alphabet(t))
        .map(|t| AddedToken::from(t, true).normalized(false))
        .collect();
    tokenizer.add_special_tokens(control).map_err(tok_err)?;
    let user: Vec<AddedToken> = tokens
        .iter()
        .zip(types)
        .filter(|(t, &ty)| ty == TYPE_USER_DEFINED && tokenizer.token_to_id(t).is_some())
        .map(|(t, _)| AddedToken::from(*t, false).normalized(false))
        .collect();
    tokenizer.add_tokens(user).map_err(tok_err)?;
    Ok(tokenizer)
}

/// Indexes the token strings, refusing a vocabulary whose text does not fit 32-bit offsets.
fn token_table<S: AsRef<str>>(meta: &Metadata, tokens: &[S]) -> Result<TokenTable> {
    TokenTable::new(tokens)
        .ok_or_else(|| Error::format(&meta.source, "tokenizer.ggml.tokens exceeds 4 GiB of text"))
}

/// Ranks the file's merges by position (a repeated pair keeps its last rank, as in the dict
/// `tokenizers` builds). A merge whose pieces or result are not tokens is refused, naming it.
fn file_merges(meta: &Metadata, vocab: &TokenTable, pairs: &[(&str, &str)]) -> Result<MergeMap> {
    let mut map = bpe::merge_map(pairs.len());
    let mut merged = String::new();
    for (rank, &(a, b)) in pairs.iter().enumerate() {
        merged.clear();
        merged.push_str(a);
        merged.push_str(b);
        let (Some(ai), Some(bi), Some(mi)) = (vocab.id(a), vocab.id(b), vocab.id(&merged)) else {
            let err = merges::check(|t| vocab.id(t).is_some(), pairs.iter().copied(), 0)
                .err()
                .unwrap_or_else(|| format!("merge {rank} ({a:?} {b:?}) is not valid"));
            return Err(Error::format(
                &meta.source,
                format!("tokenizer.ggml.merges {err}"),
            ));
        };
        map.insert((ai, bi), (rank as u32, mi));
    }
    Ok(map)
}

/// The pre-tokenizer for a `tokenizer.ggml.pre` value, `None` if unknown.
fn byte_level_pre_tokenizer(pre: &str) -> Option<Result<PreTokenizerWrapper>> {
    let split = |re: &str| -> Result<PreTokenizerWrapper> {
        let split = Split::new(
            SplitPattern::Regex(re.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(tok_err)?;
        Ok(PreSequence::new(vec![
            split.into(),
            ByteLevel::new(false, true, false).into(),
        ])
        .into())
    };
    Some(match pre {
        "default" | "gpt2" => Ok(ByteLevel::new(false, true, true).into()),
        // SmolLM's own tokenizer.json (and llama.cpp) split every digit before the GPT-2 rule.
        "smollm" => Ok(PreSequence::new(vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ])
        .into()),
        "llama3" | "llama-v3" | "llama-bpe" | "dbrx" | "smaug-bpe" | "falcon3" => {
            split(LLAMA3_SPLIT)
        }
        "qwen2" | "deepseek-r1-qwen" => split(QWEN2_SPLIT),
        _ => return None,
    })
}

/// SentencePiece-style BPE with byte fallback. GGUF stores no merges for these, so they are
/// rebuilt from the vocabulary the way transformers does (see [`generate_merges`]).
fn sentencepiece(meta: &Metadata, tokens: &[&str], ids: &SpecialIds) -> Result<GgufTokenizer> {
    let arch = meta.str_opt("general.architecture")?.unwrap_or("");
    let gemma = matches!(arch, "gemma" | "gemma2" | "gemma3");
    // Gemma files store runs of spaces as real spaces; the tokenizer looks them up as `▁`s.
    let spelled: Vec<Cow<str>> = tokens
        .iter()
        .map(|t| {
            if gemma && t.contains(' ') && t.trim().is_empty() {
                Cow::Owned("\u{2581}".repeat(t.chars().count()))
            } else {
                Cow::Borrowed(*t)
            }
        })
        .collect();
    let vocab = token_table(meta, &spelled)?;
    let merges = match meta.str_array_opt("tokenizer.ggml.merges")? {
        Some(m) => {
            let pairs = m
                .iter()
                .map(|m| {
                    m.split_once(' ').ok_or_else(|| {
                        Error::format(
                            &meta.source,
                            format!("tokenizer.ggml.merges entry {m:?} is not two tokens"),
                        )
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            file_merges(meta, &vocab, &pairs)?
        }
        None => {
            // Gemma's scores do not follow its merge order, the file order does; elsewhere the
            // score is the rank.
            let scores: Vec<f64> = if gemma {
                (0..spelled.len()).map(|i| -(i as f64)).collect()
            } else {
                let s = meta
                    .f64_array_opt("tokenizer.ggml.scores")?
                    .ok_or_else(|| {
                        Error::format(&meta.source, "missing metadata key tokenizer.ggml.scores")
                    })?;
                if s.len() != spelled.len() {
                    return Err(Error::format(
                        &meta.source,
                        format!(
                            "tokenizer.ggml.scores has {} entries for {} tokens",
                            s.len(),
                            spelled.len()
                        ),
                    ));
                }
                s
            };
            generate_merges(&vocab, &scores)
        }
    };
    let unk = if gemma {
        Some(
            ids.unk
                .map(|i| tokens[i as usize])
                .unwrap_or("<unk>")
                .to_string(),
        )
    } else {
        None
    };
    let bpe = RankedBpe::new(
        vocab,
        merges,
        Fallback {
            byte_tokens: true,
            unk,
        },
    );
    let mut tokenizer = GgufTokenizer::new(bpe);
    let mut decoders: Vec<DecoderWrapper> = vec![
        Replace::new("\u{2581}", " ").map_err(tok_err)?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if gemma {
        tokenizer
            .with_normalizer(Some(Replace::new(" ", "\u{2581}").map_err(tok_err)?))
            .map_err(tok_err)?;
        let split = Split::new(
            SplitPattern::String(" ".into()),
            SplitDelimiterBehavior::MergedWithPrevious,
            false,
        )
        .map_err(tok_err)?;
        tokenizer.with_pre_tokenizer(Some(split));
    } else {
        let prefix = meta
            .bool_opt("tokenizer.ggml.add_space_prefix")?
            .unwrap_or(true);
        let scheme = if prefix {
            PrependScheme::First
        } else {
            PrependScheme::Never
        };
        tokenizer.with_pre_tokenizer(Some(Metaspace::new('\u{2581}', scheme, false)));
        if prefix {
            decoders.push(Strip::new(' ', 1, 0).into());
        }
    }
    tokenizer.with_decoder(Some(DecoderSequence::new(decoders)));

    let types = meta
        .i64_array_opt("tokenizer.ggml.token_type")?
        .unwrap_or_default();
    let mut special: Vec<AddedToken> = [ids.bos, ids.eos, ids.unk, ids.pad]
        .into_iter()
        .flatten()
        .map(|i| AddedToken::from(spelled[i as usize].to_string(), true).normalized(false))
        .collect();
    special.extend(
        spelled
            .iter()
            .zip(&types)
            .filter(|(_, &ty)| ty == TYPE_CONTROL)
            .map(|(t, _)| AddedToken::from(t.to_string(), true).normalized(false)),
    );
    tokenizer.add_special_tokens(special).map_err(tok_err)?;
    let user: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(t, &ty)| ty == TYPE_USER_DEFINED && tokenizer.token_to_id(t).is_some())
        .map(|(t, _)| AddedToken::from(*t, false).normalized(false))
        .collect();
    tokenizer.add_tokens(user).map_err(tok_err)?;
    Ok(tokenizer)
}

/// Merges implied by a vocabulary: every way of cutting a token into two tokens, best token
/// first (higher score), ties broken by longer left piece, then longer right piece, then by the
/// ids of the pieces. This is transformers' `generate_merges`, so ids match its tokenizer; a pair
/// listed twice keeps its last rank, as in the dict `tokenizers` builds from the list.
fn generate_merges(vocab: &TokenTable, scores: &[f64]) -> MergeMap {
    /// One cut, 32 bytes: a Gemma vocabulary has half a million of them.
    struct Cut {
        score: f64,
        l: u32,
        r: u32,
        /// Id the concatenation maps to (the token itself, or its last repeat).
        merged: u32,
        len_l: u32,
        len_r: u32,
        /// Position in token order, the final tie-break (keeps the sort stable without the
        /// extra buffer a stable parallel sort allocates).
        order: u32,
    }
    // Each token's cuts are independent, so they are found in parallel; rayon's collect keeps
    // token order, which the sort below uses as its last tie-break.
    let mut cuts: Vec<Cut> = (0..vocab.len() as u32)
        .into_par_iter()
        .flat_map_iter(|id| {
            let token = vocab.get(id).unwrap_or_default();
            let score = scores.get(id as usize).copied().unwrap_or(0.0);
            let n_chars = token.chars().count();
            let merged = vocab.id(token).unwrap_or(id);
            // Token text is below 4 GiB in all (TokenTable checks), so counts fit in u32.
            let count = |n: usize| n as u32;
            let mut local: Vec<Cut> = Vec::new();
            // Left pieces are prefixes, so their keys are built up in one pass over the token.
            let mut h = bpe::FNV_OFFSET;
            let mut hashed = 0;
            for (k, (at, _)) in token.char_indices().enumerate().skip(1) {
                h = bpe::fnv(h, &token.as_bytes()[hashed..at]);
                hashed = at;
                let (l, r) = token.split_at(at);
                let Some(li) = vocab.id_keyed(l, bpe::key_from(h, l.len())) else {
                    continue;
                };
                let Some(ri) = vocab.id(r) else {
                    continue;
                };
                local.push(Cut {
                    score,
                    l: li,
                    r: ri,
                    merged,
                    len_l: count(k),
                    len_r: count(n_chars - k),
                    order: 0,
                });
            }
            local.sort_by_key(|m| (m.l, m.r));
            local
        })
        .collect();
    for (i, c) in cuts.iter_mut().enumerate() {
        // Fewer cuts than bytes of token text, which is below 4 GiB.
        c.order = i as u32;
    }
    // Descending on (score, len_l, len_r), ties in token order: Python's stable
    // sorted(..., reverse=True).
    cuts.par_sort_unstable_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.len_l.cmp(&a.len_l))
            .then(b.len_r.cmp(&a.len_r))
            .then(a.order.cmp(&b.order))
    });
    let mut map = bpe::merge_map(cuts.len());
    for (rank, c) in cuts.iter().enumerate() {
        map.insert((c.l, c.r), (rank as u32, c.merged));
    }
    map
}

/// A post-processor that adds `bos` in front and `eos` behind, when given.
fn post_processor(
    bos: Option<(u32, &str)>,
    eos: Option<(u32, &str)>,
) -> Result<TemplateProcessing> {
    let mut single = Vec::new();
    let mut pair = Vec::new();
    let mut specials = Vec::new();
    if let Some((id, s)) = bos {
        single.push(format!("{s}:0"));
        specials.push((s.to_string(), id));
    }
    single.push("$A:0".to_string());
    if let Some((id, s)) = eos {
        single.push(format!("{s}:0"));
        specials.push((s.to_string(), id));
    }
    pair.extend(single.iter().cloned());
    if let Some((_, s)) = bos {
        pair.push(format!("{s}:1"));
    }
    pair.push("$B:1".to_string());
    if let Some((_, s)) = eos {
        pair.push(format!("{s}:1"));
    }
    TemplateProcessing::builder()
        .try_single(single)
        .map_err(tok_err)?
        .try_pair(pair)
        .map_err(tok_err)?
        .special_tokens(specials)
        .build()
        .map_err(tok_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_merges_rank_better_tokens_first() {
        let tokens = ["a", "b", "c", "ab", "abc", "bc"];
        let vocab = TokenTable::new(&tokens).unwrap();
        let scores = [0.0, 0.0, 0.0, -1.0, -2.0, -3.0];
        let m = generate_merges(&vocab, &scores);
        let mut m: Vec<(u32, &str, &str, &str)> = m
            .iter()
            .map(|(&(l, r), &(rank, merged))| {
                (
                    rank,
                    tokens[l as usize],
                    tokens[r as usize],
                    tokens[merged as usize],
                )
            })
            .collect();
        m.sort();
        // "ab" (best score) first; "abc" splits as ab+c (longer left piece first) then a+bc; "bc" last.
        assert_eq!(
            m,
            vec![
                (0, "a", "b", "ab"),
                (1, "ab", "c", "abc"),
                (2, "a", "bc", "abc"),
                (3, "b", "c", "bc")
            ]
        );
    }

    /// The fuzz corpus's reproducer: merges "a b" with no "ab" token, on which tokenizers 0.23's
    /// BPE builder panics.
    #[test]
    fn merge_result_missing_from_vocab_is_a_format_error() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/fuzz_corpus/gguf/bad_vocab_merge_result_missing.gguf");
        let file = crate::loader::gguf::GgufFile::open(&path).expect("reproducer parses");
        let err = build(&file.metadata).unwrap_err();
        assert!(
            matches!(&err, Error::ModelFormat { msg, .. }
                if msg.contains("merge 0 (\"a\" \"b\")") && msg.contains("\"ab\"")),
            "{err}"
        );
    }

    #[test]
    fn unknown_pre_tokenizer_is_refused() {
        assert!(byte_level_pre_tokenizer("no-such-pre").is_none());
        assert!(byte_level_pre_tokenizer("llama3").is_some_and(|r| r.is_ok()));
    }
}
