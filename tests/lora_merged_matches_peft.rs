//! The loaded adapters, folded into the tiny Llama's weights with `lora::merge_into` and run
//! through the model's own forward pass, reproduce PEFT's logits: adapter `a` at scale 1 and
//! 0.5, rsLoRA adapter `b`, and every row of PEFT's mixed-adapter batch, from the Hugging Face
//! directory and from the GGUF file (whose Q/K rows, and so the adapter's B rows, are permuted
//! for adjacent-pair RoPE).
//!
//! This proves the loader and the update's meaning (scaling, scale, layout) end to end before
//! the batched forward applies adapters unmerged; that forward must match the same goldens.
//! Oracle: tests/fixtures/lora/golden.json from tests/fixtures/gen_lora.py (peft, transformers
//! float32; a second route, weights merged by hand in float64, agrees to ~7e-6).

mod common;

use std::path::Path;

use edgellm::backend::cpu::CpuBackend;
use edgellm::lora::{merge_into, LoraAdapter};
use edgellm::model::{open_source, LogitRows, Model, ModelSource};
use edgellm::tensor::{DType, TensorRef, WeightMap};
use serde_json::Value;

/// Allowed max |ours - PEFT| on logits of magnitude up to ~10: the 1e-3 acceptance
/// bound, two orders of magnitude above the oracle's float32-vs-float64 noise (~7e-6, recorded
/// in golden.json) and far below the effect of any adapter (>= 2.9, also recorded there).
const LOGIT_TOL: f32 = 1e-3;

fn golden() -> Value {
    let p = common::fixtures().join("lora/golden.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// The weights of `src` with `(adapter, scale)` merged into every adapted projection.
fn merged_weights(map: &WeightMap, adapter: Option<(&LoraAdapter, f32)>) -> WeightMap {
    let mut out = WeightMap::new(map.source.clone());
    let mut replaced = std::collections::HashMap::new();
    if let Some((ad, scale)) = adapter {
        for (layer, module, pair) in ad.pairs() {
            let name = module.weight_name(layer);
            let t = map.get(&name).unwrap();
            let mut w = vec![0f32; t.n_elements()];
            edgellm::quant::dequantize_row(t.dtype, t.bytes(), &mut w).unwrap();
            merge_into(pair, &mut w, scale).unwrap();
            let bytes = w.iter().flat_map(|v| v.to_le_bytes()).collect();
            replaced.insert(
                name.clone(),
                TensorRef::from_owned(&name, DType::F32, t.shape.clone(), bytes).unwrap(),
            );
        }
        assert_eq!(replaced.len(), ad.pairs().count());
    }
    for t in map.iter() {
        out.insert(replaced.remove(&t.name).unwrap_or_else(|| t.clone()))
            .unwrap();
    }
    out
}

/// Logits at every position of `ids` from the model at `path` with an adapter merged.
fn logits(path: &Path, adapter_dir: Option<&Path>, scale: f32, ids: &[u32]) -> Vec<f32> {
    let (mut source, cfg) = open_source(path).unwrap();
    let ad = adapter_dir.map(|d| LoraAdapter::load(d, &cfg).unwrap());
    let weights = match &mut source {
        ModelSource::Gguf(g) => &mut g.weights,
        ModelSource::HfDir { weights, .. } => weights,
    };
    *weights = merged_weights(weights, ad.as_ref().map(|a| (a, scale)));
    let model = Model::load(CpuBackend::new(2, true).unwrap(), &source, cfg).unwrap();
    let mut kv = model.new_kv(ids.len()).unwrap();
    model
        .forward(&mut kv, ids, 0, LogitRows::All)
        .unwrap()
        .concat()
}

fn compare(what: &str, got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}");
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst <= LOGIT_TOL, "{what}: max |ours - PEFT| = {worst}");
    worst
}

#[test]
fn merged_adapters_reproduce_peft_logits() {
    let g = golden();
    let dir = common::fixtures().join("lora");
    let ids = common::json_ids(&g["prompt_ids"]);
    for model in ["tiny/llama/hf", "tiny/llama/model.gguf"] {
        let path = common::fixtures().join(model);
        for case in g["cases"].as_array().unwrap() {
            let want = common::read_f32(&dir.join(case["file"].as_str().unwrap()));
            let adapter = case["adapter"].as_str().map(|a| dir.join(a));
            let scale = case["scale"].as_f64().unwrap() as f32;
            let got = logits(&path, adapter.as_deref(), scale, &ids);
            let worst = compare(&format!("{model} {}", case["name"]), &got, &want);
            if let Some(moved) = g["max_abs_diff_vs_base"][case["name"].as_str().unwrap()].as_f64()
            {
                // The adapter must matter far more than the tolerance, or the test proves nothing.
                assert!(
                    moved as f32 > 100.0 * LOGIT_TOL,
                    "{}: adapter moves logits by only {moved}",
                    case["name"]
                );
            }
            eprintln!("{model} {}: max |ours - PEFT| = {worst:.2e}", case["name"]);
        }
    }
}

#[test]
fn mixed_batch_rows_reproduce_peft_logits() {
    let g = golden();
    let dir = common::fixtures().join("lora");
    let batch = &g["batch"];
    let all = common::read_f32(&dir.join(batch["file"].as_str().unwrap()));
    let rows = batch["rows"].as_array().unwrap();
    let per_row = all.len() / rows.len();
    for model in ["tiny/llama/hf", "tiny/llama/model.gguf"] {
        let path = common::fixtures().join(model);
        for (i, row) in rows.iter().enumerate() {
            let ids = common::json_ids(&row["prompt_ids"]);
            let adapter = row["adapter"].as_str().map(|a| dir.join(a));
            let got = logits(
                &path,
                adapter.as_deref(),
                row["scale"].as_f64().unwrap() as f32,
                &ids,
            );
            compare(
                &format!("{model} batch row {i}"),
                &got,
                &all[i * per_row..(i + 1) * per_row],
            );
        }
    }
}
