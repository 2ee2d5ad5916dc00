//! `edgellm perplexity` on the two default models must match llama.cpp's perplexity on the same
//! GGUF files and text, and the float32 oracle even more closely. Goldens:
//! tests/fixtures/perplexity/golden.json, made by scripts/perplexity_vs_llamacpp.py --hf on
//! tests/fixtures/text/ppl.txt: llama.cpp through llama-cpp-python with the llama-perplexity
//! tool's chunking, BOS and scoring rules, and transformers in float32 on the dequantized GGUF
//! with the same tokens and windows.
//!
//! Tolerances. Our exact path (`--math exact`: quantized weights, float32 activations and KV
//! cache) is the same arithmetic as the transformers oracle up to summation order, so the two
//! agree to `F32_TOL_REL`. Our fast path (`--math fast`, the default: int8 activations, f16 KV
//! cache) must stay within `FAST_TOL_REL` of the exact path (issue 3's accuracy bound). llama.cpp rounds activations to 8 bits before its quantized matmuls, which moves
//! its perplexity by a model-dependent amount that the golden records as the gap between the two
//! oracles (0.07-0.75% on SmolLM2 Q4_1, 0.4-1.3% on Gemma 3 Q4_K_M); against llama.cpp we allow
//! `PPL_TOL_REL` on top of that measured gap. A mistake in chunking or BOS handling moves
//! perplexity by several percent, a mistake in the model by tens of percent.

mod common;

use std::process::Command;

use serde_json::Value;

/// Allowed |ours / llama.cpp - 1| beyond the measured gap between llama.cpp and float32.
const PPL_TOL_REL: f64 = 0.01;
/// Allowed |ours / transformers-float32 - 1|: float32 summation order over ~1.5k tokens.
const F32_TOL_REL: f64 = 1e-3;

/// Allowed |fast / exact - 1|: the cost of int8 activations and an f16 KV cache.
const FAST_TOL_REL: f64 = 0.01;

fn golden() -> Value {
    let p = common::fixtures().join("perplexity/golden.json");
    serde_json::from_slice(&std::fs::read(&p).expect("perplexity golden")).expect("golden json")
}

/// Runs `edgellm perplexity --json` with `--math math`.
fn perplexity(model_file: &str, n_ctx: u64, math: &str) -> Value {
    let model = common::real_model(model_file);
    let text = common::fixtures().join("text/ppl.txt");
    let o = Command::new(env!("CARGO_BIN_EXE_edgellm"))
        .args(["perplexity", "--model", model.to_str().unwrap(), "--file", text.to_str().unwrap()])
        .args(["--ctx", &n_ctx.to_string(), "--json", "--math", math])
        .output()
        .expect("run edgellm");
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("perplexity --json")
}

fn check(model_file: &str, n_ctx: u64) {
    let g = golden();
    let cases = g["models"][model_file].as_array().unwrap_or_else(|| panic!("no golden for {model_file}"));
    let want = cases.iter().find(|c| c["n_ctx"] == n_ctx).unwrap_or_else(|| panic!("no n_ctx {n_ctx}"));
    let got = perplexity(model_file, n_ctx, "exact");
    let fast = perplexity(model_file, n_ctx, "fast");
    // Same tokens, same windows, same number of scored predictions as llama.cpp.
    for key in ["n_tokens", "add_bos", "chunks", "scored"] {
        assert_eq!(got[key], want[key], "{model_file} n_ctx {n_ctx}: {key}");
        assert_eq!(fast[key], want[key], "{model_file} n_ctx {n_ctx}: fast path {key}");
    }
    let ours = got["ppl"].as_f64().unwrap();
    let llama = want["ppl"].as_f64().unwrap();
    let f32 = want["hf_float32"]["ppl"]
        .as_f64()
        .expect("golden lacks hf_float32 (run the script with --hf)");
    let gap = (f32 / llama - 1.0).abs();
    let (rel_llama, rel_f32) = (ours / llama - 1.0, ours / f32 - 1.0);
    eprintln!(
        "{model_file} n_ctx {n_ctx}: edgellm {ours:.4}, llama.cpp {llama:.4} ({:+.3}%), float32 {f32:.4} ({:+.4}%)",
        100.0 * rel_llama,
        100.0 * rel_f32
    );
    let fast_ppl = fast["ppl"].as_f64().unwrap();
    let rel_fast = fast_ppl / ours - 1.0;
    eprintln!(
        "{model_file} n_ctx {n_ctx}: fast path {fast_ppl:.4} ({:+.3}% vs exact, {:+.3}% vs llama.cpp)",
        100.0 * rel_fast,
        100.0 * (fast_ppl / llama - 1.0)
    );
    assert!(rel_fast.abs() < FAST_TOL_REL, "{model_file} n_ctx {n_ctx}: fast-path PPL {fast_ppl} vs exact {ours}");
    assert!(
        (fast_ppl / llama - 1.0).abs() < PPL_TOL_REL + gap,
        "{model_file} n_ctx {n_ctx}: fast-path PPL {fast_ppl} vs llama.cpp {llama} (oracle gap {gap:.4})"
    );
    assert!(
        rel_f32.abs() < F32_TOL_REL,
        "{model_file} n_ctx {n_ctx}: PPL {ours} vs float32 oracle {f32}"
    );
    assert!(
        rel_llama.abs() < PPL_TOL_REL + gap,
        "{model_file} n_ctx {n_ctx}: PPL {ours} vs llama.cpp {llama} (oracle gap {gap:.4})"
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
