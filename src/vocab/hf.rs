//! Loads a Hugging Face tokenizer directory: `tokenizer.json` is the pipeline itself; the side
//! files name BOS/EOS and the extra end-of-generation ids.

use std::path::Path;

use serde_json::Value;
use tokenizers::Tokenizer;

use super::{merges, tok_err, Pipeline, TokenSpelling, Vocab};
use crate::error::{Error, Result};

/// Reads `dir/name` as JSON, `None` when the file does not exist.
pub(crate) fn read_json(dir: &Path, name: &str) -> Result<Option<Value>> {
    let path = dir.join(name);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::format(&path, format!("invalid JSON: {e}")))
}

/// A special-token entry of tokenizer_config.json: a string or an AddedToken object.
pub(crate) fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// Ids in a generation_config.json field that is a number or a list of numbers.
fn id_list(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .into_iter()
            .collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64())
            .filter_map(|x| u32::try_from(x).ok())
            .collect(),
        _ => Vec::new(),
    }
}

/// Parses the text of a `tokenizer.json` (read from `path`, named in errors).
///
/// The text is parsed to a JSON value first and the tokenizer built from that value: `tokenizers`
/// 0.23 panics on a syntax error inside `"decoder"` when it reads text directly, and its BPE
/// builder panics on a merge whose result is not a token, so merges are checked before building.
fn parse_tokenizer(text: &str, path: &Path) -> Result<Tokenizer> {
    let doc: Value = serde_json::from_str(text).map_err(|e| {
        Error::format(
            path,
            format!("not a valid tokenizer.json: invalid JSON: {e}"),
        )
    })?;
    merges::check_tokenizer_json(&doc)
        .map_err(|e| Error::format(path, format!("not a valid tokenizer.json: BPE {e}")))?;
    serde_json::from_value(doc)
        .map_err(|e| Error::format(path, format!("not a valid tokenizer.json: {e}")))
}

/// Builds a [`Vocab`] from a Hugging Face model directory.
pub(crate) fn build(dir: &Path) -> Result<Vocab> {
    let path = dir.join("tokenizer.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let tokenizer = parse_tokenizer(&text, &path)?;
    let config = read_json(dir, "tokenizer_config.json")?.unwrap_or(Value::Null);
    let special_map = read_json(dir, "special_tokens_map.json")?.unwrap_or(Value::Null);
    let generation = read_json(dir, "generation_config.json")?.unwrap_or(Value::Null);

    let named =
        |key: &str| token_text(config.get(key)).or_else(|| token_text(special_map.get(key)));
    let bos_text = named("bos_token");
    let eos_text = named("eos_token");
    let bos = bos_text
        .as_deref()
        .and_then(|t| tokenizer.token_to_id(t))
        .or_else(|| id_list(generation.get("bos_token_id")).first().copied());

    // BOS/EOS insertion is the post-processor of tokenizer.json alone: transformers (5.x) drops
    // tokenizer_config.json's add_bos_token/add_eos_token whenever tokenizer.json exists.

    let mut eos: Vec<u32> = eos_text
        .as_deref()
        .and_then(|t| tokenizer.token_to_id(t))
        .into_iter()
        .collect();
    eos.extend(id_list(generation.get("eos_token_id")));

    let decoder = serde_json::to_string(&tokenizer.get_decoder()).map_err(tok_err)?;
    let spelling = if decoder.contains("\"ByteLevel\"") {
        TokenSpelling::ByteLevel
    } else {
        TokenSpelling::SentencePiece
    };
    Vocab::assemble(Pipeline::Hf(Box::new(tokenizer)), spelling, bos, &eos)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tokenizers 0.23 panics (`expect("Helper")`) when it parses this text directly.
    #[test]
    fn syntax_error_inside_decoder_is_a_format_error() {
        let text = r#"{"model": {"type": "WordLevel", "vocab": {"a": 0}, "unk_token": "a"},
                       "decoder": {"type": "ByteLevel", "x": [1, }}"#;
        let err = parse_tokenizer(text, Path::new("dir/tokenizer.json")).unwrap_err();
        assert!(
            matches!(&err, Error::ModelFormat { file, msg } if file == "tokenizer.json" && msg.contains("invalid JSON")),
            "{err}"
        );
    }

    /// tokenizers 0.23's BPE builder panics on this merge, whose result "ab" is longer than
    /// every token.
    #[test]
    fn merge_result_missing_from_vocab_is_a_format_error() {
        let text = r#"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]}}"#;
        let err = parse_tokenizer(text, Path::new("tokenizer.json")).unwrap_err();
        assert!(
            matches!(&err, Error::ModelFormat { msg, .. } if msg.contains("\"ab\"")),
            "{err}"
        );
        let ok = r#"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b"]]}}"#;
        let tok = parse_tokenizer(ok, Path::new("tokenizer.json")).unwrap();
        assert_eq!(tok.encode("ab", false).unwrap().get_ids(), &[2]);
    }
}
