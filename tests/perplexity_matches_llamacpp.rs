//! `edgellm perplexity` on the two default models must match llama.cpp's perplexity on the same
//! GGUF files and text within `PPL_TOL_REL`. Golden: tests/fixtures/perplexity/golden.json, made
//! by scripts/perplexity_vs_llamacpp.py with llama-cpp-python (same chunking, BOS and scoring
//! rules as llama.cpp's llama-perplexity tool) on tests/fixtures/text/ppl.txt.
//!
//! Tolerance: llama.cpp quantizes activations to 8 bits for its quantized matmuls and sums in a
//! different order, so logits differ by ~1e-2 and NLLs by ~1e-3 relative per token; a mistake in
//! the model (a wrong norm, RoPE or scale) moves perplexity by tens of percent, and a mistake in
//! chunking or BOS handling by several percent. 1% separates the two.

mod common;

use std::process::Command;

use serde_json::Value;

/// Allowed |ours / llama.cpp - 1| for perplexity.
const PPL_TOL_REL: f64 = 0.01;

fn golden() -> Value {
    let p = common::fixtures().join("perplexity/golden.json");
    serde_json::from_slice(&std::fs::read(&p).expect("perplexity golden")).expect("golden json")
}

fn check(model_file: &str, n_ctx: u64) {
    let g = golden();
    let cases = g["models"][model_file]
        .as_array()
        .unwrap_or_else(|| panic!("no golden for {model_file}"));
    let want = cases
        .iter()
        .find(|c| c["n_ctx"] == n_ctx)
        .unwrap_or_else(|| panic!("no n_ctx {n_ctx}"));
    let model = common::real_model(model_file);
    let text = common::fixtures().join("text/ppl.txt");
    let o = Command::new(env!("CARGO_BIN_EXE_edgellm"))
        .args([
            "perplexity",
            "--model",
            model.to_str().unwrap(),
            "--file",
            text.to_str().unwrap(),
        ])
        .args(["--ctx", &n_ctx.to_string(), "--json"])
        .output()
        .expect("run edgellm");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let got: Value = serde_json::from_slice(&o.stdout).expect("perplexity --json");
    // Same tokens, same windows, same number of scored predictions as llama.cpp.
    for key in ["n_tokens", "add_bos", "chunks", "scored"] {
        assert_eq!(got[key], want[key], "{model_file} n_ctx {n_ctx}: {key}");
    }
    let (ours, theirs) = (got["ppl"].as_f64().unwrap(), want["ppl"].as_f64().unwrap());
    let rel = ours / theirs - 1.0;
    eprintln!(
        "{model_file} n_ctx {n_ctx}: edgellm {ours:.4} llama.cpp {theirs:.4} ({:+.3}%)",
        100.0 * rel
    );
    assert!(
        rel.abs() < PPL_TOL_REL,
        "{model_file} n_ctx {n_ctx}: PPL {ours} vs llama.cpp {theirs}"
    );
}

#[test]
fn smollm2_ctx128() {
    check("SmolLM2-135M-Instruct.Q4_1.gguf", 128);
}

#[test]
fn smollm2_ctx512() {
    check("SmolLM2-135M-Instruct.Q4_1.gguf", 512);
}

#[test]
fn gemma3_ctx128() {
    check("gemma-3-270m-q4_k_m.gguf", 128);
}

#[test]
fn gemma3_ctx512() {
    check("gemma-3-270m-q4_k_m.gguf", 512);
}
