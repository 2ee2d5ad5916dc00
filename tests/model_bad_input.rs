//! Bad models and bad requests are errors, never panics: a missing file, a folder without
//! config.json, wrong magic, an unknown architecture, a tensor past the end, truncated GGUFs, a GGUF with a missing
//! tensor or a wrong tensor shape, an HF directory whose config.json lacks a key or whose shard is
//! missing, a prompt longer than the context, and token ids outside the vocabulary.
//!
//! The broken files are made here from the committed tiny fixtures by editing bytes, and every
//! test first loads the unmodified copy, so a loader that rejects everything cannot pass.

mod common;

use std::path::{Path, PathBuf};

use edgellm::error::Error;
use edgellm::runtime::{BackendKind, GenerationRequest, PromptInput, Runtime, RuntimeParams};

fn params(context_length: usize) -> RuntimeParams {
    RuntimeParams { threads: 2, context_length, max_batch: 1, backend: BackendKind::Cpu, ..Default::default() }
}

/// A fresh scratch folder for one test.
fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("model_bad_input").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tiny_gguf() -> Vec<u8> {
    std::fs::read(common::fixtures().join("tiny/llama/model.gguf")).unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Asserts that loading `path` fails with a message that names the file and every `words`.
fn assert_load_fails(path: &Path, named: &str, words: &[&str]) -> Error {
    let err = match Runtime::create(path, &params(64)) {
        Ok(_) => panic!("{} loaded although it is broken", path.display()),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(msg.contains(named), "error for {} does not name {named}: {msg}", path.display());
    for w in words {
        assert!(msg.contains(w), "error for {} does not mention {w}: {msg}", path.display());
    }
    assert!(!matches!(err, Error::Internal(_)), "broken input reported as an internal error: {msg}");
    err
}

fn assert_loads(path: &Path) -> Runtime {
    Runtime::create(path, &params(64)).unwrap_or_else(|e| panic!("control copy {} must load: {e}", path.display()))
}

/// Offset of the only occurrence of `needle` in `hay`.
fn find_once(hay: &[u8], needle: &[u8]) -> usize {
    let hits: Vec<usize> = hay.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle).map(|(i, _)| i).collect();
    assert_eq!(hits.len(), 1, "{} occurs {} times", String::from_utf8_lossy(needle), hits.len());
    hits[0]
}

#[test]
fn truncated_gguf_is_a_format_error_naming_the_file() {
    let dir = scratch("truncated");
    let bytes = tiny_gguf();
    assert_loads(&write(&dir, "intact.gguf", &bytes));
    // Inside the tensor-info table: just after one tensor's name.
    let info = find_once(&bytes, b"blk.1.attn_q.weight") + 19;
    let cuts = [0, 3, 4, 12, 20, 100, 1000, info, info + 6, bytes.len() / 2, bytes.len() - 1];
    for cut in cuts {
        let name = format!("truncated-at-{cut}.gguf");
        let path = write(&dir, &name, &bytes[..cut]);
        let err = assert_load_fails(&path, &name, &[]);
        assert!(
            matches!(err, Error::ModelFormat { .. } | Error::Io { .. }),
            "truncated at {cut}: expected a format or I/O error, got {err:?}"
        );
    }
}

#[test]
fn gguf_missing_a_tensor_is_rejected_naming_it() {
    let dir = scratch("missing_tensor");
    let mut bytes = tiny_gguf();
    assert_loads(&write(&dir, "intact.gguf", &bytes));
    let at = find_once(&bytes, b"blk.1.ffn_up.weight");
    // Same length, so every offset stays valid: the file is well-formed but lacks ffn_up of layer 1.
    bytes[at..at + 19].copy_from_slice(b"blk.1.ffn_zz.weight");
    let err = assert_load_fails(&write(&dir, "missing-ffn-up.gguf", &bytes), "missing-ffn-up.gguf", &["blk.1.ffn_up.weight"]);
    assert!(matches!(err, Error::ModelFormat { .. }), "expected ModelFormat, got {err:?}");
}

#[test]
fn gguf_with_a_wrong_tensor_shape_is_rejected_naming_it() {
    let dir = scratch("wrong_shape");
    let mut bytes = tiny_gguf();
    assert_loads(&write(&dir, "intact.gguf", &bytes));
    // Tensor info: u64 name length, name, u32 n_dims, u64 dims[n_dims], u32 type, u64 offset.
    let name = b"blk.0.attn_k.weight";
    let at = find_once(&bytes, name) + name.len();
    let n_dims = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    assert_eq!(n_dims, 2);
    let d0 = at + 4;
    let d1 = at + 12;
    let ne0 = u64::from_le_bytes(bytes[d0..d0 + 8].try_into().unwrap());
    let ne1 = u64::from_le_bytes(bytes[d1..d1 + 8].try_into().unwrap());
    assert_eq!((ne0, ne1), (64, 32), "tiny llama attn_k is [hidden 64, kv_heads 2 * head_dim 16]");
    // Swapped: same byte size, so only a check against the hyperparameters can catch it.
    bytes[d0..d0 + 8].copy_from_slice(&ne1.to_le_bytes());
    bytes[d1..d1 + 8].copy_from_slice(&ne0.to_le_bytes());
    let err = assert_load_fails(&write(&dir, "swapped-attn-k.gguf", &bytes), "swapped-attn-k.gguf", &["blk.0.attn_k.weight"]);
    assert!(matches!(err, Error::ModelFormat { .. }), "expected ModelFormat, got {err:?}");
}

/// Copies a committed HF directory into a scratch folder.
fn copy_hf(case: &str, dir: &Path) -> PathBuf {
    let src = common::fixtures().join("tiny").join(case).join("hf");
    let dst = dir.join(format!("{case}-hf"));
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    dst
}

#[test]
fn hf_config_missing_a_key_is_rejected_naming_file_and_key() {
    let dir = scratch("hf_missing_key");
    assert_loads(&copy_hf("llama", &dir.join("intact")));
    for key in ["hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"] {
        let hf = copy_hf("llama", &dir.join(key));
        let cfg_path = hf.join("config.json");
        let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
        assert!(cfg.as_object_mut().unwrap().remove(key).is_some(), "fixture config has {key}");
        std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
        let err = assert_load_fails(&hf, "config.json", &[key]);
        assert!(matches!(err, Error::ModelFormat { .. }), "{key}: expected ModelFormat, got {err:?}");
    }
}

#[test]
fn hf_dir_with_a_missing_shard_is_rejected_naming_it() {
    let dir = scratch("hf_missing_shard");
    assert_loads(&copy_hf("mistral", &dir.join("intact")));
    let hf = copy_hf("mistral", &dir.join("broken"));
    let shard = "model-00002-of-00002.safetensors";
    std::fs::remove_file(hf.join(shard)).unwrap();
    assert_load_fails(&hf, shard, &[]);
}

fn request(ids: Vec<u32>, n: usize) -> GenerationRequest {
    GenerationRequest {
        prompts: vec![PromptInput::TokenIds(ids)],
        apply_chat_template: false,
        max_generate_length: n,
        ignore_eos: true,
        ..GenerationRequest::default()
    }
}

#[test]
fn prompt_longer_than_the_context_is_context_overflow() {
    let rt = Runtime::create(&common::fixtures().join("tiny/llama/model.gguf"), &params(16)).expect("tiny llama loads");
    let fits: Vec<u32> = (10..26).collect(); // 16 ids: exactly the context
    assert_eq!(rt.logits(&fits, false).expect("a prompt filling the context is fine").len(), 1);
    let long: Vec<u32> = (10..27).collect(); // 17 ids
    match rt.logits(&long, true) {
        Err(Error::ContextOverflow(_)) => {}
        other => panic!("logits on 17 ids with a 16-token context: expected ContextOverflow, got {other:?}"),
    }
    match rt.handle_request(&request(long, 4), None) {
        Err(Error::ContextOverflow(_)) => {}
        other => panic!("generating from 17 ids with a 16-token context: expected ContextOverflow, got {other:?}"),
    }
    // The runtime stays usable after refusing.
    assert_eq!(rt.logits(&fits[..4], false).unwrap()[0].len(), 400);
}

#[test]
fn token_ids_outside_the_vocabulary_are_invalid_arguments() {
    let rt = Runtime::create(&common::fixtures().join("tiny/llama/model.gguf"), &params(64)).expect("tiny llama loads");
    assert_eq!(rt.logits(&[1, 399], false).expect("399 is the last valid id")[0].len(), 400);
    for bad in [400u32, 401, u32::MAX] {
        match rt.logits(&[1, bad], false) {
            Err(Error::InvalidArgument(m)) => assert!(m.contains(&bad.to_string()), "message should name id {bad}: {m}"),
            other => panic!("logits with id {bad}: expected InvalidArgument, got {other:?}"),
        }
        match rt.handle_request(&request(vec![1, bad], 2), None) {
            Err(Error::InvalidArgument(_)) => {}
            other => panic!("generating from id {bad}: expected InvalidArgument, got {other:?}"),
        }
    }
    assert!(rt.detokenize(&[400]).is_err(), "detokenizing an out-of-range id is an error");
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let p = scratch("missing").join("no-such-model.gguf");
    assert!(matches!(assert_load_fails(&p, "no-such-model.gguf", &[]), Error::Io { .. }));
}

#[test]
fn directory_without_config_json_is_rejected_naming_it() {
    let d = scratch("no_config");
    write(&d, "model.safetensors", b"not used");
    assert_load_fails(&d, "config.json", &[]);
}

#[test]
fn wrong_magic_is_a_format_error() {
    let d = scratch("magic");
    let mut bytes = tiny_gguf();
    bytes[..4].copy_from_slice(b"GGUX");
    let p = write(&d, "model.gguf", &bytes);
    assert!(matches!(assert_load_fails(&p, "model.gguf", &["magic"]), Error::ModelFormat { .. }));
}

#[test]
fn tensor_extending_past_the_end_is_rejected_naming_it() {
    let d = scratch("past_end");
    let bytes = tiny_gguf();
    assert_loads(&write(&d, "control.gguf", &bytes));
    // Drop the last 4 bytes of the data section: the last tensor now ends past the file's end.
    let p = write(&d, "model.gguf", &bytes[..bytes.len() - 4]);
    assert_load_fails(&p, "model.gguf", &["past the end"]);
}

#[test]
fn unknown_architecture_is_unsupported_naming_it() {
    let d = scratch("arch");
    let mut bytes = tiny_gguf();
    assert_loads(&write(&d, "control.gguf", &bytes));
    // The value of general.architecture follows its key, a u32 type tag and a u64 length.
    let key = b"general.architecture";
    let at = find_once(&bytes, key) + key.len() + 4 + 8;
    assert_eq!(&bytes[at..at + 5], b"llama");
    bytes[at..at + 5].copy_from_slice(b"bloom");
    let p = write(&d, "model.gguf", &bytes);
    assert!(matches!(assert_load_fails(&p, "model.gguf", &["bloom"]), Error::Unsupported(_)));
}
