//! Fuzzing entry points, one per loader of untrusted model files. The cargo-fuzz targets in
//! `fuzz/` and the replay test `tests/fuzz_corpus_replay.rs` both call these, so the corpus a
//! fuzzer grows is replayed by plain `cargo test` on stable Rust.
//!
//! Each entry feeds the bytes to the real parser and then to whatever the crate builds from a
//! parsed file (model config, vocabulary, chat template, tensor rows), because those stages read
//! the same untrusted values. Errors are the expected outcome for bad input; a panic, an abort or
//! a hang is the bug being hunted. Each entry returns whether the parser accepted the input, so
//! that tests can check their seeds reach past the first error.

use std::path::{Path, PathBuf};

use crate::loader::gguf::GgufFile;
use crate::loader::safetensors::SafetensorsModel;
use crate::model::config::ModelConfig;
use crate::runtime::Message;
use crate::tensor::WeightMap;
use crate::vocab::{ChatTemplate, Vocab};

/// Rows dequantized per fuzzed file: enough to touch every tensor type, bounded so one input
/// with thousands of tensors cannot make an iteration slow.
const MAX_TENSORS_TOUCHED: usize = 16;
/// Longest row dequantized; longer rows only get their length checked.
const MAX_ROW_ELEMS: usize = 1 << 16;

/// Parses a GGUF image, then builds its model config, vocabulary and chat template.
pub fn gguf(data: &[u8]) -> bool {
    let Ok(file) = GgufFile::from_bytes("fuzz.gguf", data.to_vec()) else {
        return false;
    };
    let _ = file.architecture();
    let _ = ModelConfig::from_gguf(&file.metadata, &file.path);
    touch_tensors(&file.weights);
    if let Ok(vocab) = Vocab::from_gguf(&file.metadata) {
        exercise_vocab(&vocab);
        if let Ok(Some(template)) = ChatTemplate::from_gguf(&file.metadata, &vocab) {
            let _ = template.render(&sample_messages(), true);
        }
    }
    true
}

/// Parses a single safetensors file (header and tensor table) and reads a row of each tensor.
pub fn safetensors_header(data: &[u8]) -> bool {
    let accepted =
        crate::loader::safetensors::parse_header(Path::new("fuzz.safetensors"), data).is_ok();
    if let Ok(model) = SafetensorsModel::from_bytes("fuzz.safetensors", data.to_vec()) {
        touch_tensors(&model.weights);
    }
    accepted
}

/// Parses a Hugging Face `config.json` and derives the model hyperparameters from it.
pub fn hf_config(data: &[u8]) -> bool {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) else {
        return false;
    };
    ModelConfig::from_hf(&json, Path::new("fuzz/config.json")).is_ok()
}

/// Builds a vocabulary from a Hugging Face `tokenizer.json` and encodes and decodes with it.
///
/// `Vocab` only has a directory constructor today, so the bytes are written to a private
/// scratch directory first (one per thread, removed afterwards).
pub fn tokenizer_json(data: &[u8]) -> bool {
    let dir = ScratchDir(scratch_dir());
    if std::fs::create_dir_all(&dir.0).is_err()
        || std::fs::write(dir.0.join("tokenizer.json"), data).is_err()
    {
        return false;
    }
    match Vocab::from_hf_dir(&dir.0) {
        Ok(vocab) => {
            exercise_vocab(&vocab);
            true
        }
        Err(_) => false,
    }
}

/// Removes the scratch directory when dropped, also when the parser panics.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A scratch directory unique to this process and thread, in memory where Linux offers it: a
/// write under a disk-backed /tmp costs milliseconds, a thousand times the parse being tested.
fn scratch_dir() -> PathBuf {
    let thread = format!("{:?}", std::thread::current().id());
    let thread: String = thread.chars().filter(char::is_ascii_alphanumeric).collect();
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    base.join(format!("edgellm-fuzz-{}-{thread}", std::process::id()))
}

/// Dequantizes the first row of a few tensors, which reads the fuzzed bytes through the quant code.
fn touch_tensors(weights: &WeightMap) {
    // Sorted so that which tensors are touched does not depend on hash order.
    let mut tensors: Vec<_> = weights.iter().collect();
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    for t in tensors.into_iter().take(MAX_TENSORS_TOUCHED) {
        if t.n_rows() == 0 || t.row_len() > MAX_ROW_ELEMS {
            continue;
        }
        let mut out = vec![0f32; t.row_len()];
        let _ = crate::quant::dequantize_row(t.dtype, t.row(0), &mut out);
    }
}

/// Encodes text that mixes words, digits, bytes and special-token spellings, then decodes every
/// id it got and a sweep of low ids, all the ways the runtime does.
fn exercise_vocab(vocab: &Vocab) {
    let text = "Hello wörld 12345 <|im_start|>user\n\t<s></s><bos> 🦀 \u{2581}x";
    let mut ids = vocab.encode(text, true).unwrap_or_default();
    ids.extend(0..vocab.n_tokens().min(64) as u32);
    ids.extend(vocab.eos_ids());
    ids.extend(vocab.bos_id());
    let _ = vocab.decode(&ids, false);
    let _ = vocab.decode(&ids, true);
    let mut stream = vocab.stream_decoder(false);
    for &id in &ids {
        let _ = vocab.token_bytes(id);
        let _ = vocab.token_str(id);
        let _ = vocab.is_special(id);
        let _ = stream.push(id);
    }
    let _ = stream.finish();
}

/// A short conversation for rendering fuzzed chat templates.
fn sample_messages() -> Vec<Message> {
    ["system", "user", "assistant", "user"]
        .iter()
        .map(|role| Message {
            role: role.to_string(),
            content: format!("a {role} turn"),
        })
        .collect()
}
