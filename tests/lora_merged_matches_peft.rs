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
use edgellm::kv_cache::BLOCK_TOKENS;
use edgellm::lora::{merge_into, LoraAdapter};
use edgellm::model::adapters::{BackendLora, LoraRef};
use edgellm::model::{open_source, LogitRows, Model, ModelSource, SeqInput};
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
    let n_blocks = ids.len().div_ceil(BLOCK_TOKENS);
    let mut kv = model.new_kv(n_blocks).unwrap();
    let blocks: Vec<u32> = (0..n_blocks as u32).collect();
    let seq = SeqInput { ids, pos0: 0, blocks: &blocks, prompt: true, logits: LogitRows::All, lora: None };
    model.forward(&mut kv, &[seq]).unwrap().remove(0).concat()
}

/// Logits of every row of a mixed batch, in one forward pass with the adapters unmerged.
fn batch_logits(path: &Path, rows: &[(Vec<u32>, Option<std::path::PathBuf>, f32)]) -> Vec<Vec<f32>> {
    let (source, cfg) = open_source(path).unwrap();
    let adapters: Vec<Option<BackendLora<CpuBackend>>> = Vec::new();
    let model = Model::load(CpuBackend::new(2, true).unwrap(), &source, cfg.clone()).unwrap();
    let mut adapters = adapters;
    for (_, dir, _) in rows {
        adapters.push(dir.as_ref().map(|d| BackendLora::place(&model.backend, &LoraAdapter::load(d, &cfg).unwrap(), cfg.n_layers).unwrap()));
    }
    let per = rows.iter().map(|r| r.0.len().div_ceil(BLOCK_TOKENS)).max().unwrap();
    let mut kv = model.new_kv(per * rows.len()).unwrap();
    let tables: Vec<Vec<u32>> = (0..rows.len()).map(|i| ((i * per) as u32..((i + 1) * per) as u32).collect()).collect();
    let seqs: Vec<SeqInput<'_>> = rows
        .iter()
        .zip(&tables)
        .zip(&adapters)
        .map(|(((ids, _, scale), blocks), ad)| SeqInput {
            ids,
            pos0: 0,
            blocks,
            prompt: true,
            logits: LogitRows::All,
            lora: ad.as_ref().map(|a| LoraRef { adapter: a, scale: *scale }),
        })
        .collect();
    model.forward(&mut kv, &seqs).unwrap().into_iter().map(|r| r.concat()).collect()
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

/// The check: adapters applied unmerged in the batched forward, one pass mixing adapter
/// `a`, no adapter and adapter `b` (PEFT's mixed batch), and `a` alone at scales 1 and 0.5.
#[test]
fn unmerged_adapters_in_one_batch_reproduce_peft_logits() {
    let g = golden();
    let dir = common::fixtures().join("lora");
    let batch = &g["batch"];
    let all = common::read_f32(&dir.join(batch["file"].as_str().unwrap()));
    let rows: Vec<(Vec<u32>, Option<std::path::PathBuf>, f32)> = batch["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (common::json_ids(&r["prompt_ids"]), r["adapter"].as_str().map(|a| dir.join(a)), r["scale"].as_f64().unwrap() as f32))
        .collect();
    let per_row = all.len() / rows.len();
    for model in ["tiny/llama/hf", "tiny/llama/model.gguf"] {
        let path = common::fixtures().join(model);
        let got = batch_logits(&path, &rows);
        for (i, r) in got.iter().enumerate() {
            let worst = compare(&format!("{model} unmerged batch row {i}"), r, &all[i * per_row..(i + 1) * per_row]);
            eprintln!("{model} unmerged batch row {i}: max |ours - PEFT| = {worst:.2e}");
        }
        let ids = common::json_ids(&g["prompt_ids"]);
        for case in g["cases"].as_array().unwrap() {
            let Some(a) = case["adapter"].as_str() else { continue };
            let scale = case["scale"].as_f64().unwrap() as f32;
            let want = common::read_f32(&dir.join(case["file"].as_str().unwrap()));
            let got = batch_logits(&path, &[(ids.clone(), Some(dir.join(a)), scale)]).remove(0);
            compare(&format!("{model} unmerged {}", case["name"]), &got, &want);
        }
    }
}
