//! PEFT LoRA adapters load onto the tiny Llama (Hugging Face dir and GGUF), with shapes,
//! scalings and update values as PEFT has them, and bad adapters are refused with errors that
//! name the problem.
//!
//! Oracle data: tests/fixtures/lora/ written by tests/fixtures/gen_lora.py with peft 0.21 (see
//! golden.json there for versions): the adapters themselves, the scaling PEFT's LoraLayer
//! computed, and `scale * scaling * B(A x)` computed by PEFT's own lora_A/lora_B modules.

mod common;

use std::path::{Path, PathBuf};

use edgellm::lora::{add_delta, LoraAdapter, LoraModule};
use edgellm::model::{open_source, ModelConfig, ModelSource};
use edgellm::Error;
use serde_json::Value;

/// add_delta vs PEFT: both compute in f32 but sum in different orders over at most 128 terms of
/// size ~1; 1e-5 relative to the largest output is ~100x f32 epsilon times the term count margin.
const DELTA_TOL: f32 = 1e-5;

fn lora_dir() -> PathBuf {
    common::fixtures().join("lora")
}

fn golden() -> Value {
    let p = lora_dir().join("golden.json");
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

fn source(kind: &str) -> (ModelSource, ModelConfig) {
    let base = common::fixtures().join("tiny/llama");
    let path = if kind == "gguf" {
        base.join("model.gguf")
    } else {
        base.join("hf")
    };
    open_source(&path).unwrap()
}

fn config(kind: &str) -> ModelConfig {
    source(kind).1
}

/// A fresh scratch directory holding a copy of fixture adapter `from` (or nothing when `None`).
fn scratch(name: &str, from: Option<&str>) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("edgellm-lora-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    if let Some(from) = from {
        for f in std::fs::read_dir(lora_dir().join(from)).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), dir.join(f.file_name())).unwrap();
        }
    }
    dir
}

/// Rewrites `dir/adapter_config.json` with `edit` applied to its JSON.
fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let p = dir.join("adapter_config.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    edit(v.as_object_mut().unwrap());
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// Writes a safetensors file of F32 tensors `(name, shape, values)`.
fn write_safetensors(path: &Path, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape, values) in tensors {
        assert_eq!(shape.iter().product::<usize>(), values.len());
        let begin = data.len();
        for v in values {
            data.extend_from_slice(&v.to_le_bytes());
        }
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [begin, data.len()]}),
        );
    }
    let json = serde_json::to_vec(&Value::Object(header)).unwrap();
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&json);
    bytes.extend_from_slice(&data);
    std::fs::write(path, bytes).unwrap();
}

/// A minimal adapter directory with the given config keys and tensors.
fn custom_adapter(name: &str, config: Value, tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> PathBuf {
    let dir = scratch(name, None);
    std::fs::write(
        dir.join("adapter_config.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
    write_safetensors(&dir.join("adapter_model.safetensors"), tensors);
    dir
}

fn ramp(n: usize, step: f32) -> Vec<f32> {
    (0..n).map(|i| (i as f32 * step).sin()).collect()
}

fn module_named(s: &str) -> LoraModule {
    LoraModule::from_peft_name(s).unwrap_or_else(|| panic!("module {s}"))
}

#[test]
fn fixture_adapters_load_with_peft_shapes_and_scaling() {
    let g = golden();
    for kind in ["hf", "gguf"] {
        let cfg = config(kind);
        for name in ["a", "b"] {
            let spec = &g["adapters"][name];
            let ad = LoraAdapter::load(&lora_dir().join(name), &cfg).unwrap();
            let targets: Vec<LoraModule> = spec["target_modules"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| module_named(m.as_str().unwrap()))
                .collect();
            let r = spec["r"].as_u64().unwrap() as usize;
            let scaling = spec["scaling"].as_f64().unwrap() as f32;
            assert_eq!(
                ad.pairs().count() * 2,
                spec["n_tensors"].as_u64().unwrap() as usize,
                "{kind} {name}"
            );
            for layer in 0..cfg.n_layers {
                for m in LoraModule::ALL {
                    let p = ad.pair(layer, m);
                    assert_eq!(
                        p.is_some(),
                        targets.contains(&m),
                        "{kind} {name} layer {layer} {m:?}"
                    );
                    let Some(p) = p else { continue };
                    let (din, dout) = m.dims(&cfg);
                    assert_eq!((p.rank, p.in_features, p.out_features), (r, din, dout));
                    assert_eq!((p.a.len(), p.b.len()), (r * din, dout * r));
                    assert_eq!(p.scaling, scaling, "{kind} {name} scaling (PEFT's value)");
                }
            }
            let bytes: usize = ad
                .pairs()
                .map(|(_, _, p)| 4 * (p.a.len() + p.b.len()))
                .sum();
            assert_eq!(ad.bytes(), bytes);
            assert_eq!(ad.max_rank(), r);
        }
    }
    // b is rsLoRA: PEFT's alpha / sqrt(r), not alpha / r.
    let b = &g["adapters"]["b"];
    let (alpha, r) = (b["lora_alpha"].as_f64().unwrap(), b["r"].as_f64().unwrap());
    assert!(b["use_rslora"].as_bool().unwrap());
    assert_eq!(b["scaling"].as_f64().unwrap(), alpha / r.sqrt());
    assert_ne!(b["scaling"].as_f64().unwrap(), alpha / r);
}

#[test]
fn add_delta_matches_peft_modules() {
    let g = golden();
    let dir = lora_dir();
    let hf = config("hf");
    let gguf = config("gguf");
    let mut adapters = std::collections::HashMap::new();
    for d in g["deltas"].as_array().unwrap() {
        let name = d["adapter"].as_str().unwrap();
        let layout = d["layout"].as_str().unwrap();
        let cfg = if layout == "gguf_permuted" {
            &gguf
        } else {
            &hf
        };
        let ad = adapters
            .entry((name.to_string(), layout.to_string()))
            .or_insert_with(|| LoraAdapter::load(&dir.join(name), cfg).unwrap());
        let layer = d["layer"].as_u64().unwrap() as usize;
        let pair = ad
            .pair(layer, module_named(d["module"].as_str().unwrap()))
            .unwrap();
        let n = d["n"].as_u64().unwrap() as usize;
        let x = common::read_f32(&dir.join(d["x_file"].as_str().unwrap()));
        let want = common::read_f32(&dir.join(d["out_file"].as_str().unwrap()));
        // Start from a non-zero "base output" to check the update adds rather than overwrites.
        let base: Vec<f32> = ramp(want.len(), 0.37);
        let mut got = base.clone();
        add_delta(pair, &x, n, d["scale"].as_f64().unwrap() as f32, &mut got).unwrap();
        let peak = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(
            peak > 0.05,
            "{}: the oracle delta is too small to test anything",
            d["name"]
        );
        let worst = got
            .iter()
            .zip(&base)
            .zip(&want)
            .map(|((g, b), w)| (g - b - w).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= DELTA_TOL * peak,
            "{}: max |ours - PEFT| = {worst} (peak {peak})",
            d["name"]
        );
    }
}

/// f32 rows of a canonical weight of either source.
fn weight_rows(src: &ModelSource, name: &str) -> (Vec<f32>, usize) {
    let map = match src {
        ModelSource::Gguf(g) => &g.weights,
        ModelSource::HfDir { weights, .. } => weights,
    };
    let t = map.get(name).unwrap();
    let mut out = vec![0f32; t.n_elements()];
    edgellm::quant::dequantize_row(t.dtype, t.bytes(), &mut out).unwrap();
    (out, t.row_len())
}

#[test]
fn gguf_llama_adapter_rows_follow_the_files_qk_permutation() {
    // The permutation is read off the model files themselves: row g of the GGUF attn_q/attn_k
    // is row perm[g] of the Hugging Face q_proj/k_proj. The adapter loaded for the GGUF model
    // must have B row g equal to the Hugging Face-layout B row perm[g], and V untouched.
    let (hf_src, hf_cfg) = source("hf");
    let (gg_src, gg_cfg) = source("gguf");
    let b_hf = LoraAdapter::load(&lora_dir().join("b"), &hf_cfg).unwrap();
    let b_gg = LoraAdapter::load(&lora_dir().join("b"), &gg_cfg).unwrap();
    for layer in 0..hf_cfg.n_layers {
        for (m, tensor) in [
            (LoraModule::Q, "attn_q"),
            (LoraModule::K, "attn_k"),
            (LoraModule::V, "attn_v"),
        ] {
            let name = format!("blk.{layer}.{tensor}.weight");
            let (w_hf, cols) = weight_rows(&hf_src, &name);
            let (w_gg, _) = weight_rows(&gg_src, &name);
            let rows = w_hf.len() / cols;
            let perm: Vec<usize> = (0..rows)
                .map(|g| {
                    let row = &w_gg[g * cols..(g + 1) * cols];
                    (0..rows)
                        .find(|&h| &w_hf[h * cols..(h + 1) * cols] == row)
                        .expect("GGUF row not found in HF weight")
                })
                .collect();
            let identity = perm.iter().enumerate().all(|(i, &p)| i == p);
            assert_eq!(
                identity,
                m == LoraModule::V,
                "{name}: the fixture's Q/K rows are permuted, V's are not"
            );
            let (p_hf, p_gg) = (b_hf.pair(layer, m).unwrap(), b_gg.pair(layer, m).unwrap());
            assert_eq!(p_hf.a, p_gg.a, "A is not permuted");
            let r = p_hf.rank;
            for (g, &h) in perm.iter().enumerate() {
                assert_eq!(
                    p_gg.b[g * r..(g + 1) * r],
                    p_hf.b[h * r..(h + 1) * r],
                    "{name} B row {g}"
                );
            }
        }
    }
}

#[test]
fn identity_tells_adapters_apart_and_is_stable() {
    let cfg = config("hf");
    let a1 = LoraAdapter::load(&lora_dir().join("a"), &cfg).unwrap();
    let a2 = LoraAdapter::load(&lora_dir().join("a"), &cfg).unwrap();
    let b = LoraAdapter::load(&lora_dir().join("b"), &cfg).unwrap();
    assert_eq!(a1.identity(), a2.identity());
    assert_ne!(a1.identity(), b.identity());
    // One changed value changes the fingerprint.
    let dir = scratch("identity", Some("a"));
    let t =
        edgellm::loader::safetensors::read_header(&dir.join("adapter_model.safetensors")).unwrap();
    let first = t
        .tensors
        .iter()
        .find(|t| t.name.ends_with("lora_B.weight"))
        .unwrap();
    let mut bytes = std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
    bytes[first.offset] ^= 1;
    std::fs::write(dir.join("adapter_model.safetensors"), bytes).unwrap();
    assert_ne!(
        LoraAdapter::load(&dir, &cfg).unwrap().identity(),
        a1.identity()
    );
}

#[test]
fn adapter_for_another_width_is_refused_naming_the_tensor() {
    let g = golden();
    let made_for = g["adapters"]["wrong_shape"]["made_for"]["hidden_size"]
        .as_u64()
        .unwrap();
    for kind in ["hf", "gguf"] {
        let cfg = config(kind);
        assert_ne!(made_for as usize, cfg.hidden);
        let e = LoraAdapter::load(&lora_dir().join("wrong_shape"), &cfg).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::InvalidArgument(_)), "{msg}");
        assert!(
            msg.contains("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("[2, {made_for}]"))
                && msg.contains(&format!("[2, {}]", cfg.hidden)),
            "{msg}"
        );
    }
}

#[test]
fn missing_and_corrupt_files_are_reported() {
    let cfg = config("hf");
    let nowhere = std::env::temp_dir().join("edgellm-lora-does-not-exist");
    assert!(matches!(
        LoraAdapter::load(&nowhere, &cfg),
        Err(Error::Io { .. })
    ));

    let dir = scratch("no-weights", Some("a"));
    std::fs::remove_file(dir.join("adapter_model.safetensors")).unwrap();
    let e = LoraAdapter::load(&dir, &cfg).unwrap_err();
    assert!(
        matches!(e, Error::Io { ref path, .. } if path.ends_with("adapter_model.safetensors")),
        "{e}"
    );
    std::fs::write(dir.join("adapter_model.bin"), b"pickle").unwrap();
    assert!(
        matches!(LoraAdapter::load(&dir, &cfg), Err(Error::Unsupported(ref m)) if m.contains("adapter_model.bin"))
    );

    let dir = scratch("no-config", Some("a"));
    std::fs::remove_file(dir.join("adapter_config.json")).unwrap();
    let e = LoraAdapter::load(&dir, &cfg).unwrap_err();
    assert!(
        matches!(e, Error::Io { ref path, .. } if path.ends_with("adapter_config.json")),
        "{e}"
    );

    let dir = scratch("bad-json", Some("a"));
    std::fs::write(
        dir.join("adapter_config.json"),
        b"{\"r\": 8, \"target_modules\": [",
    )
    .unwrap();
    let e = LoraAdapter::load(&dir, &cfg).unwrap_err();
    assert!(
        matches!(e, Error::ModelFormat { ref file, .. } if file == "adapter_config.json"),
        "{e}"
    );

    let dir = scratch("truncated", Some("a"));
    let p = dir.join("adapter_model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    let e = LoraAdapter::load(&dir, &cfg).unwrap_err();
    assert!(
        matches!(e, Error::ModelFormat { ref file, .. } if file == "adapter_model.safetensors"),
        "{e}"
    );
}

/// An edit of an adapter_config.json object.
type ConfigEdit = Box<dyn Fn(&mut serde_json::Map<String, Value>)>;

#[test]
fn unsupported_configs_are_refused_by_name() {
    let cfg = config("hf");
    let cases: Vec<(&str, ConfigEdit, &str)> = vec![
        (
            "dora",
            Box::new(|c| {
                c.insert("use_dora".into(), Value::Bool(true));
            }),
            "use_dora",
        ),
        (
            "bias",
            Box::new(|c| {
                c.insert("bias".into(), "lora_only".into());
            }),
            "bias",
        ),
        (
            "save",
            Box::new(|c| {
                c.insert("modules_to_save".into(), serde_json::json!(["lm_head"]));
            }),
            "modules_to_save",
        ),
        (
            "fifo",
            Box::new(|c| {
                c.insert("fan_in_fan_out".into(), Value::Bool(true));
            }),
            "fan_in_fan_out",
        ),
        (
            "head",
            Box::new(|c| {
                c.insert(
                    "target_modules".into(),
                    serde_json::json!(["q_proj", "v_proj", "lm_head"]),
                );
            }),
            "lm_head",
        ),
        (
            "embed",
            Box::new(|c| {
                c.insert(
                    "target_modules".into(),
                    serde_json::json!(["embed_tokens", "q_proj"]),
                );
            }),
            "embed_tokens",
        ),
        (
            "regex",
            Box::new(|c| {
                c.insert("target_modules".into(), ".*\\.(q|v)_proj".into());
            }),
            "regular expression",
        ),
        (
            "rankre",
            Box::new(|c| {
                c.insert(
                    "rank_pattern".into(),
                    serde_json::json!({"^model.*q_proj": 4}),
                );
            }),
            "rank_pattern",
        ),
        (
            "ia3",
            Box::new(|c| {
                c.insert("peft_type".into(), "IA3".into());
            }),
            "IA3",
        ),
    ];
    for (name, edit, needle) in cases {
        let dir = scratch(&format!("unsup-{name}"), Some("a"));
        edit_config(&dir, edit);
        let e = LoraAdapter::load(&dir, &cfg).unwrap_err();
        assert!(
            matches!(e, Error::Unsupported(ref m) if m.contains(needle)),
            "{name}: {e}"
        );
    }
    // A tensor for a module we cannot adapt (PEFT writes lm_head factors so) is refused by name.
    let (din, dout) = (cfg.hidden, cfg.vocab);
    let dir = custom_adapter(
        "head-tensor",
        serde_json::json!({"r": 2, "lora_alpha": 2, "target_modules": ["q_proj"]}),
        &[
            (
                "base_model.model.lm_head.lora_A.weight",
                vec![2, din],
                ramp(2 * din, 0.1),
            ),
            (
                "base_model.model.lm_head.lora_B.weight",
                vec![dout, 2],
                ramp(2 * dout, 0.1),
            ),
        ],
    );
    let e = LoraAdapter::load(&dir, &cfg).unwrap_err();
    assert!(
        matches!(e, Error::Unsupported(ref m) if m.contains("base_model.model.lm_head.lora_A.weight")),
        "{e}"
    );
}

#[test]
fn inconsistent_tensors_are_refused() {
    let cfg = config("hf");
    let h = cfg.hidden;
    let q = cfg.q_dim();
    let conf = serde_json::json!({"r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"]});
    let qa = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
    let qb = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight";

    let dir = custom_adapter(
        "a-only",
        conf.clone(),
        &[(qa, vec![2, h], ramp(2 * h, 0.1))],
    );
    let e = LoraAdapter::load(&dir, &cfg).unwrap_err();
    assert!(
        matches!(e, Error::ModelFormat { ref msg, .. } if msg.contains(qa) && msg.contains("lora_B")),
        "{e}"
    );

    let dir = custom_adapter(
        "rank-mix",
        conf.clone(),
        &[
            (qa, vec![2, h], ramp(2 * h, 0.1)),
            (qb, vec![q, 3], ramp(3 * q, 0.1)),
        ],
    );
    let e = LoraAdapter::load(&dir, &cfg).unwrap_err();
    assert!(
        matches!(e, Error::ModelFormat { ref msg, .. } if msg.contains("[2, 64]") && msg.contains("[64, 3]")),
        "{e}"
    );

    let dir = custom_adapter(
        "rank-vs-r",
        conf.clone(),
        &[
            (qa, vec![4, h], ramp(4 * h, 0.1)),
            (qb, vec![q, 4], ramp(4 * q, 0.1)),
        ],
    );
    let e = LoraAdapter::load(&dir, &cfg).unwrap_err();
    assert!(
        matches!(e, Error::ModelFormat { ref msg, .. } if msg.contains("rank 4") && msg.contains("rank 2")),
        "{e}"
    );

    let far = format!(
        "base_model.model.model.layers.{}.self_attn.v_proj.lora_A.weight",
        cfg.n_layers
    );
    let far_b = far.replace("lora_A", "lora_B");
    let kv = cfg.kv_dim();
    let dir = custom_adapter(
        "far-layer",
        conf.clone(),
        &[
            (&far, vec![2, h], ramp(2 * h, 0.1)),
            (&far_b, vec![kv, 2], ramp(2 * kv, 0.1)),
        ],
    );
    let e = LoraAdapter::load(&dir, &cfg).unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument(ref m) if m.contains(&far)),
        "{e}"
    );

    let dir = custom_adapter(
        "not-targeted",
        serde_json::json!({"r": 2, "target_modules": ["v_proj"]}),
        &[
            (qa, vec![2, h], ramp(2 * h, 0.1)),
            (qb, vec![q, 2], ramp(2 * q, 0.1)),
        ],
    );
    let e = LoraAdapter::load(&dir, &cfg).unwrap_err();
    assert!(
        matches!(e, Error::ModelFormat { ref msg, .. } if msg.contains(qa)),
        "{e}"
    );

    let mut nan = ramp(2 * q, 0.1);
    nan[5] = f32::NAN;
    let dir = custom_adapter(
        "nan",
        conf.clone(),
        &[(qa, vec![2, h], ramp(2 * h, 0.1)), (qb, vec![q, 2], nan)],
    );
    let e = LoraAdapter::load(&dir, &cfg).unwrap_err();
    assert!(
        matches!(e, Error::ModelFormat { ref msg, .. } if msg.contains(qb) && msg.contains("non-finite")),
        "{e}"
    );

    let dir = custom_adapter("empty", conf, &[]);
    assert!(matches!(
        LoraAdapter::load(&dir, &cfg),
        Err(Error::ModelFormat { .. })
    ));
}

#[test]
fn rank_alpha_patterns_and_layer_selection_are_honoured() {
    let cfg = config("hf");
    let (h, kv) = (cfg.hidden, cfg.kv_dim());
    let va = "base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight";
    let vb = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight";
    let tensors = [
        (va, vec![3, h], ramp(3 * h, 0.1)),
        (vb, vec![kv, 3], ramp(3 * kv, 0.2)),
    ];
    // PEFT: v_proj of layer 1 gets rank 3 and alpha 6 (scaling 2), everything else r=8/alpha 16.
    let dir = custom_adapter(
        "patterns",
        serde_json::json!({"r": 8, "lora_alpha": 16, "target_modules": ["v_proj"], "layers_to_transform": [1],
                           "rank_pattern": {"layers.1.self_attn.v_proj": 3}, "alpha_pattern": {"v_proj": 6}}),
        &tensors,
    );
    let ad = LoraAdapter::load(&dir, &cfg).unwrap();
    let p = ad.pair(1, LoraModule::V).unwrap();
    assert_eq!((p.rank, p.scaling), (3, 2.0));
    assert!(ad.pair(0, LoraModule::V).is_none());

    // The same tensors without the rank override disagree with r=8.
    let dir = custom_adapter(
        "no-pattern",
        serde_json::json!({"r": 8, "target_modules": ["v_proj"]}),
        &tensors,
    );
    assert!(matches!(
        LoraAdapter::load(&dir, &cfg),
        Err(Error::ModelFormat { .. })
    ));

    // Layer 1 excluded by layers_to_transform: its tensors contradict the config.
    let dir = custom_adapter(
        "layers",
        serde_json::json!({"r": 3, "target_modules": ["v_proj"], "layers_to_transform": 0}),
        &tensors,
    );
    let e = LoraAdapter::load(&dir, &cfg).unwrap_err();
    assert!(
        matches!(e, Error::ModelFormat { ref msg, .. } if msg.contains("layers_to_transform")),
        "{e}"
    );
}
