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

/// A small xorshift generator: deterministic and dependency-free, for the kernel tests.
pub struct Rng(pub u64);

impl Rng {
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// `rows x cols` random weights in format `f`, every f16 scale field a modest finite value
/// (random bytes would give NaN/Inf scales).
pub fn random_int8_weights(f: edgellm::quant::int8::WeightFormat, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    use edgellm::quant::int8::WeightFormat;
    let n = rows * cols / f.block_elems() * f.block_bytes();
    let mut w: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
    let fields: &[usize] = match f {
        WeightFormat::Q4_0 | WeightFormat::Q5_0 | WeightFormat::Q8_0 => &[0],
        WeightFormat::Q4_1 | WeightFormat::Q5_1 | WeightFormat::Q4K | WeightFormat::Q5K => &[0, 2],
        WeightFormat::Q6K => &[208],
    };
    for blk in w.chunks_exact_mut(f.block_bytes()) {
        for &o in fields {
            blk[o..o + 2].copy_from_slice(&half::f16::from_f32(rng.uniform() * 0.05).to_le_bytes());
        }
    }
    w
}

/// `x` (`rows x cols`) quantized by the scalar reference.
pub fn quantized(x: &[f32], rows: usize, cols: usize) -> edgellm::quant::int8::Q8Acts {
    let mut a = edgellm::quant::int8::Q8Acts::default();
    edgellm::ffi::simd::quantize_rows(edgellm::ffi::simd::KernelSet::Scalar, x, rows, cols, &mut a);
    a
}

/// `tokens x cols` random activations in [-1, 1), quantized by the scalar reference.
pub fn random_acts(tokens: usize, cols: usize, rng: &mut Rng) -> edgellm::quant::int8::Q8Acts {
    let x: Vec<f32> = (0..tokens * cols).map(|_| rng.uniform()).collect();
    quantized(&x, tokens, cols)
}
