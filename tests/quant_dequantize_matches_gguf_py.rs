//! Our dequantizers against the `gguf` Python package (the reference reader kept with
//! llama.cpp): synthetic blocks of every type, and real tensors of the two default models, must
//! decode bit for bit to the same float32 values. Goldens: tests/fixtures/gen_quant_golden.py.

mod common;

use edgellm::loader::gguf::GgufFile;
use edgellm::quant::{dequantize_row, dot_row};
use edgellm::tensor::DType;
use sha2::{Digest, Sha256};

fn dtype_named(name: &str) -> DType {
    (0..64u32)
        .filter_map(DType::from_ggml)
        .find(|d| d.name() == name)
        .unwrap_or_else(|| panic!("unknown type {name}"))
}

fn sha_hex(values: &[f32]) -> String {
    let mut h = Sha256::new();
    for v in values {
        h.update(v.to_le_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn golden() -> serde_json::Value {
    let p = common::fixtures().join("quant/golden.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn synthetic_blocks_of_every_type_decode_bit_exact() {
    let g = golden();
    let cases = g["synthetic"].as_array().unwrap();
    assert!(cases.len() >= 11, "expected every supported type");
    for c in cases {
        let dtype = dtype_named(c["type"].as_str().unwrap());
        let dir = common::fixtures().join("quant");
        let src = std::fs::read(dir.join(c["blocks_file"].as_str().unwrap())).unwrap();
        let want = common::read_f32(&dir.join(c["expected_file"].as_str().unwrap()));
        let n = c["n_elements"].as_u64().unwrap() as usize;
        assert_eq!(want.len(), n);
        let mut got = vec![0f32; n];
        dequantize_row(dtype, &src, &mut got).unwrap();
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "{}: element {i}: {a} vs {b}", dtype.name());
        }
        assert_eq!(sha_hex(&got), c["sha256"].as_str().unwrap());
        // The fused dot product must agree with dequantize-then-dot to rounding.
        let x: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
        let reference: f64 = want.iter().zip(&x).map(|(a, b)| *a as f64 * *b as f64).sum();
        let scale: f64 = want.iter().zip(&x).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum();
        let d = dot_row(dtype, &src, &x) as f64;
        if !reference.is_finite() {
            continue; // float fixtures hold inf/NaN bit patterns on purpose
        }
        assert!((d - reference).abs() <= 1e-5 * scale.max(1.0), "{}: dot {d} vs {reference}", dtype.name());
    }
}

#[test]
fn real_model_tensors_decode_bit_exact() {
    let g = golden();
    let recs = g["real_models"].as_array().unwrap();
    assert!(!recs.is_empty());
    let mut open: std::collections::HashMap<String, GgufFile> = Default::default();
    for r in recs {
        let file = r["file"].as_str().unwrap().to_string();
        let gg = open
            .entry(file.clone())
            .or_insert_with(|| GgufFile::open(&common::real_model(&file)).unwrap());
        let name = r["tensor"].as_str().unwrap();
        let t = gg.weights.get(name).unwrap();
        assert_eq!(t.dtype.name(), r["type"].as_str().unwrap(), "{name}");
        let shape: Vec<usize> = r["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert_eq!(t.shape, shape, "{name}");
        let mut out = vec![0f32; t.n_elements()];
        dequantize_row(t.dtype, t.bytes(), &mut out).unwrap();
        assert_eq!(sha_hex(&out), r["sha256"].as_str().unwrap(), "{file}: {name}");
    }
}
