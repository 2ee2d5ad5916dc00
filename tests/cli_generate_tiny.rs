//! `edgellm generate`, `tokenize`, `detokenize` and `logits` end to end on the tiny random-weight
//! llama fixture (tests/fixtures/tiny/llama, produced by tests/fixtures/gen_models.py): the
//! greedy continuation printed by the binary must be the transformers oracle's, the streamed text
//! must equal the JSON text, and the other commands must agree with the generation.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

/// Greedy steps are compared while the oracle's top1 - top2 margin stays above this: below it,
/// float32 summation order alone could flip the choice (same rule as the model tests).
const MARGIN_FLOAT: f64 = 1e-2;

fn edgellm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgellm"))
        .args(args)
        .output()
        .expect("run edgellm")
}

#[track_caller]
fn ok_stdout(args: &[&str]) -> String {
    let o = edgellm(args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("utf-8 stdout")
}

fn model() -> (PathBuf, Value) {
    let dir = common::fixtures().join("tiny/llama");
    let golden: Value =
        serde_json::from_slice(&std::fs::read(dir.join("golden.json")).expect("tiny llama golden"))
            .expect("golden json");
    (dir.join("model.gguf"), golden)
}

fn csv(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

#[test]
fn greedy_generation_matches_transformers() {
    let (model, golden) = model();
    let prompt = common::json_ids(&golden["prompt_ids"]);
    let greedy = common::json_ids(&golden["greedy"]);
    let margins: Vec<f64> = golden["greedy_margins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_f64().unwrap())
        .collect();
    let n = greedy.len().to_string();
    let m = model.to_str().unwrap();
    let p = csv(&prompt);
    let base = [
        "generate",
        "--model",
        m,
        "--prompt-ids",
        &p,
        "--max-tokens",
        &n,
        "--ignore-eos",
        "--threads",
        "2",
    ];

    let out: Value = serde_json::from_str(&ok_stdout(&[&base[..], &["--json"]].concat()))
        .expect("--json output");
    let got = common::json_ids(&out["output_ids"]);
    assert_eq!(out["token_ids"], out["output_ids"]);
    assert!(out["ttft_ms"].as_f64().unwrap() > 0.0 && out["decode_tokens_per_s"].as_f64().is_some());
    assert_eq!(common::json_ids(&out["prompt_ids"]), prompt);
    assert_eq!(got.len(), greedy.len(), "{out}");
    assert_eq!(out["finish_reason"], "length");
    let decided = margins.iter().take_while(|&&m| m > MARGIN_FLOAT).count();
    assert!(decided >= 8, "golden margins too small to test anything");
    assert_eq!(
        got[..decided],
        greedy[..decided],
        "greedy tokens differ from transformers"
    );

    // Streaming prints the same text (plus a final newline) and a summary line on stderr.
    let o = edgellm(&base);
    assert_eq!(o.status.code(), Some(0));
    let streamed = String::from_utf8(o.stdout).unwrap();
    assert_eq!(streamed.strip_suffix('\n'), out["text"].as_str());
    let summary = String::from_utf8_lossy(&o.stderr);
    assert!(
        summary.contains(&format!("prompt tokens: {}", prompt.len())),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("generated tokens: {}", greedy.len())),
        "{summary}"
    );
    assert!(
        summary.contains("TTFT") && summary.contains("tok/s"),
        "{summary}"
    );

    // detokenize of the generated ids prints the generated text.
    let mut args = vec!["detokenize", "--model", m];
    let words: Vec<String> = got.iter().map(u32::to_string).collect();
    args.extend(words.iter().map(String::as_str));
    assert_eq!(ok_stdout(&args).strip_suffix('\n'), out["text"].as_str());

    // logits of prompt + the first generated tokens: the argmax of the last row is the next token.
    let k = decided.min(4);
    let ctx = csv(&[&prompt[..], &got[..k]].concat());
    let top = ok_stdout(&["logits", "--model", m, "--prompt-ids", &ctx, "--top", "1"]);
    // Format: `pos N (token T): id:logit ...`; with --top 1 the last word is the argmax.
    let first = top
        .split_whitespace()
        .last()
        .expect("pos N (token T): id:logit");
    assert_eq!(
        first.split(':').next().unwrap(),
        got[k].to_string(),
        "{top}"
    );
    // The JSON form: {"positions":[{"top":[{"id":..,"logit":..}]}]}, every position with
    // --all-positions.
    let j: Value = serde_json::from_str(&ok_stdout(&[
        "logits", "--model", m, "--prompt-ids", &ctx, "--top", "3", "--all-positions", "--json",
    ]))
    .unwrap();
    let positions = j["positions"].as_array().unwrap();
    assert_eq!(positions.len(), prompt.len() + k);
    let last_top = positions.last().unwrap()["top"].as_array().unwrap();
    assert_eq!(last_top.len(), 3);
    assert_eq!(last_top[0]["id"].as_u64().unwrap() as u32, got[k]);
    assert!(last_top[0]["logit"].as_f64().unwrap() >= last_top[1]["logit"].as_f64().unwrap());
}

#[test]
fn tokenize_and_detokenize_round_trip() {
    let (model, _) = model();
    let m = model.to_str().unwrap();
    let text = "Hello world, hello tiny model.";
    let line = ok_stdout(&["tokenize", "--model", m, "--no-special", text]);
    let ids: Vec<&str> = line.split_whitespace().collect();
    assert!(!ids.is_empty());
    let mut args = vec!["detokenize", "--model", m];
    args.extend(ids.iter().copied());
    assert_eq!(ok_stdout(&args), format!("{text}\n"));
    let pieces = ok_stdout(&["tokenize", "--model", m, "--no-special", "--pieces", text]);
    assert_eq!(pieces.lines().count(), ids.len());
    // --text with --json gives {"ids": [...]}, the same ids.
    let j: Value = serde_json::from_str(&ok_stdout(&["tokenize", "--model", m, "--text", text, "--json"])).unwrap();
    let json_ids: Vec<String> = j["ids"].as_array().unwrap().iter().map(|v| v.to_string()).collect();
    assert_eq!(json_ids, ids);
    // --chat tokenizes the templated user turn.
    let chat: Value =
        serde_json::from_str(&ok_stdout(&["tokenize", "--model", m, "--text", text, "--chat", "--json"])).unwrap();
    assert!(chat["ids"].as_array().unwrap().len() > ids.len());
}
