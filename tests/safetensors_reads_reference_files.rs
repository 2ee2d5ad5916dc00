//! The safetensors reader returns exactly the tensors the reference writers stored.
//!
//! Fixtures come from `tests/fixtures/safetensors/gen_safetensors_fixtures.py`: single files
//! written by the `safetensors` package, a three-shard checkpoint with its index written by
//! `huggingface_hub.save_torch_state_dict`, and per directory an `expected.json` holding every
//! tensor's dtype, shape and element bit patterns as torch held them before saving.

use std::path::{Path, PathBuf};

use edgellm::loader::safetensors::{read_header, SafetensorsModel};
use edgellm::tensor::DType;
use edgellm::Error;

fn fixture(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/safetensors")
        .join(sub)
}

/// Element bit patterns of a tensor's little-endian bytes.
fn bits_of(dtype: DType, bytes: &[u8]) -> Vec<u64> {
    match dtype {
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u64)
            .collect(),
        DType::F16 | DType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as u64)
            .collect(),
        other => panic!("unexpected dtype {other:?}"),
    }
}

fn check_against_expected(model: &SafetensorsModel, dir: &Path) {
    let text = std::fs::read_to_string(dir.join("expected.json")).unwrap();
    let expected: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(model.weights.len(), expected.len(), "tensor count");
    for (name, want) in &expected {
        let t = model.weights.get(name).unwrap();
        assert_eq!(
            t.dtype.name(),
            want["dtype"].as_str().unwrap(),
            "{name} dtype"
        );
        let shape: Vec<usize> = want["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(t.shape, shape, "{name} shape");
        let bits: Vec<u64> = want["bits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap())
            .collect();
        assert_eq!(bits_of(t.dtype, t.bytes()), bits, "{name} values");
    }
}

#[test]
fn single_file_values_match_what_was_written() {
    let dir = fixture("single");
    let model = SafetensorsModel::open_dir(&dir).unwrap();
    check_against_expected(&model, &dir);
    assert_eq!(model.metadata.get("format").map(String::as_str), Some("pt"));
    assert_eq!(
        model.metadata.get("note").map(String::as_str),
        Some("edgellm fixture")
    );
    assert_eq!(model.files, vec![dir.join("model.safetensors")]);
}

#[test]
fn sharded_checkpoint_values_match_what_was_written() {
    let dir = fixture("sharded");
    let model = SafetensorsModel::open_dir(&dir).unwrap();
    assert_eq!(model.files.len(), 3, "three shards");
    check_against_expected(&model, &dir);
}

#[test]
fn read_header_lists_tensors_in_data_order() {
    let path = fixture("single/model.safetensors");
    let h = read_header(&path).unwrap();
    let file_len = std::fs::metadata(&path).unwrap().len() as usize;
    assert_eq!(h.tensors.len(), 10);
    assert!(h
        .tensors
        .windows(2)
        .all(|w| w[0].offset + w[0].len <= w[1].offset));
    assert_eq!(h.tensors.first().unwrap().offset, h.data_start);
    assert_eq!(
        h.tensors.iter().map(|t| t.offset + t.len).max(),
        Some(file_len)
    );
}

#[test]
fn unsupported_dtype_is_named() {
    match SafetensorsModel::open_dir(&fixture("unsupported")) {
        Err(Error::Unsupported(msg)) => {
            assert!(msg.contains("I64") && msg.contains("position_ids"), "{msg}")
        }
        Err(e) => panic!("expected Unsupported, got {e}"),
        Ok(_) => panic!("an I64 tensor was accepted"),
    }
}

#[test]
fn directory_without_checkpoint_is_not_found() {
    let dir = fixture("");
    assert!(matches!(
        SafetensorsModel::open_dir(&dir),
        Err(Error::NotFound(_))
    ));
}

/// The tiny random Hugging Face models another helper generated (one of them sharded), when that
/// worktree is present: every tensor the index or header names loads, and the embedding shape
/// agrees with config.json.
#[test]
fn tiny_hf_models_load_when_present() {
    let root = Path::new("/work/wt-fixtures/tests/fixtures/tiny");
    if !root.is_dir() {
        eprintln!("skipping: {} not present", root.display());
        return;
    }
    let mut seen = 0;
    for entry in std::fs::read_dir(root).unwrap() {
        let hf = entry.unwrap().path().join("hf");
        if !hf.join("config.json").is_file() {
            continue;
        }
        let model =
            SafetensorsModel::open_dir(&hf).unwrap_or_else(|e| panic!("{}: {e}", hf.display()));
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(hf.join("config.json")).unwrap())
                .unwrap();
        let embed = model.weights.get("model.embed_tokens.weight").unwrap();
        assert_eq!(
            embed.shape,
            vec![
                config["vocab_size"].as_u64().unwrap() as usize,
                config["hidden_size"].as_u64().unwrap() as usize
            ],
            "{}",
            hf.display()
        );
        let layers = config["num_hidden_layers"].as_u64().unwrap() as usize;
        let q = model
            .weights
            .iter()
            .filter(|t| t.name.ends_with("self_attn.q_proj.weight"))
            .count();
        assert_eq!(q, layers, "{}", hf.display());
        let index = hf.join("model.safetensors.index.json");
        if index.is_file() {
            let idx: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&index).unwrap()).unwrap();
            let map = idx["weight_map"].as_object().unwrap();
            assert_eq!(map.len(), model.weights.len());
            assert!(model.files.len() >= 2);
        }
        seen += 1;
    }
    assert!(seen > 0, "no tiny models found under {}", root.display());
}
