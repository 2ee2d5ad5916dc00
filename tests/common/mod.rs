//! Helpers shared by the integration tests: fixture paths and the cache of real models.
#![allow(dead_code)]

use std::path::PathBuf;

/// The committed fixtures folder.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Folder holding the fetched real models: `$EDGELLM_MODEL_DIR` or `~/.cache/edgellm/models`.
pub fn model_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("EDGELLM_MODEL_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache/edgellm/models")
}

/// Path of a fetched real model; panics with the fetch command when it is missing, so a test
/// that needs it fails loudly instead of passing vacuously.
pub fn real_model(file: &str) -> PathBuf {
    let p = model_dir().join(file);
    assert!(p.is_file(), "{} is missing: run scripts/fetch_models.sh first", p.display());
    p
}

/// Reads a little-endian f32 file.
pub fn read_f32(path: &std::path::Path) -> Vec<f32> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(b.len() % 4, 0, "{} is not whole f32s", path.display());
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// A JSON array of token ids.
pub fn json_ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().expect("array of ids").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

/// A JSON array of `{"role", "content"}` chat messages.
pub fn json_messages(v: &serde_json::Value) -> Vec<edgellm::runtime::Message> {
    v.as_array()
        .expect("array of messages")
        .iter()
        .map(|m| edgellm::runtime::Message {
            role: m["role"].as_str().expect("role").into(),
            content: m["content"].as_str().expect("content").into(),
        })
        .collect()
}

/// A sampling case's `logit_bias` as (token, bias) pairs; the string "-inf" bans a token.
pub fn json_logit_bias(p: &serde_json::Value) -> Vec<(u32, f32)> {
    p.get("logit_bias").and_then(|b| b.as_array()).map_or_else(Vec::new, |b| {
        b.iter()
            .map(|e| {
                let v = if e[1].as_str() == Some("-inf") { f32::NEG_INFINITY } else { e[1].as_f64().unwrap() as f32 };
                (e[0].as_u64().unwrap() as u32, v)
            })
            .collect()
    })
}

/// A JSON array of numbers as f32.
pub fn json_f32s(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().expect("array of numbers").iter().map(|x| x.as_f64().expect("number") as f32).collect()
}

/// Streams `ids` through a `StreamDecoder` (with and without special tokens) and asserts that no
/// piece holds a replacement character the whole decode lacks and that the pieces add up to
/// `decode(ids)`.
pub fn assert_streams_like_decode(vocab: &edgellm::vocab::Vocab, ids: &[u32], text: &str) {
    for skip in [false, true] {
        let mut dec = vocab.stream_decoder(skip);
        let mut streamed = String::new();
        let whole = vocab.decode(ids, skip).unwrap();
        for &id in ids {
            let piece = dec.push(id).unwrap();
            assert!(whole.contains('\u{fffd}') || !piece.contains('\u{fffd}'), "{text:?}: piece {piece:?}");
            streamed.push_str(&piece);
        }
        streamed.push_str(&dec.finish().unwrap());
        assert_eq!(streamed, whole, "streamed {text:?} skip={skip}");
    }
}
