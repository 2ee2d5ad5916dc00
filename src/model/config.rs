//! Hyperparameters of a supported architecture, read from GGUF metadata or a Hugging Face
//! `config.json`, normalised so that the forward pass never asks where a model came from.

use std::path::Path;

use crate::error::{Error, Result};
use crate::loader::metadata::Metadata;

/// Architecture families the model code implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// Llama 1/2/3, SmolLM, and Mistral (same graph; Mistral adds a sliding window).
    Llama,
    /// Mistral: the Llama graph with sliding-window attention.
    Mistral,
    /// Qwen2: Llama graph with biases on the Q/K/V projections.
    Qwen2,
    /// Qwen3: per-head RMSNorm of queries and keys before RoPE.
    Qwen3,
    /// Gemma 3 text: sandwich norms, GELU-tanh, scaled embeddings, local/global layer mix.
    Gemma3,
}

impl Arch {
    /// The family name used in GGUF metadata and in `ModelInfo`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Mistral => "mistral",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma3 => "gemma3",
        }
    }
}

/// How RoPE pairs the dimensions of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Dimensions `2i` and `2i+1` rotate together (llama.cpp's layout for permuted Llama Q/K).
    Adjacent,
    /// Dimensions `i` and `i + d/2` rotate together (Hugging Face "rotate half", GPT-NeoX).
    Neox,
}

/// Frequency scaling applied on top of the base RoPE frequencies.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// No scaling.
    None,
    /// Positions divided by `factor` (all frequencies divided by it).
    Linear {
        /// Divisor of every frequency.
        factor: f64,
    },
    /// Llama 3's piecewise scaling of low frequencies.
    Llama3 {
        /// Divisor applied to the lowest frequencies.
        factor: f64,
        /// Wavelength threshold factor below which frequencies are scaled fully.
        low_freq_factor: f64,
        /// Wavelength threshold factor above which frequencies are left alone.
        high_freq_factor: f64,
        /// Context the model was pre-trained with before extension.
        original_context: f64,
    },
}

/// RoPE parameters of one kind of layer.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeConfig {
    /// Base of the geometric frequency series.
    pub theta: f64,
    /// Scaling of the frequencies.
    pub scaling: RopeScaling,
}

impl RopeConfig {
    /// Inverse frequencies for the `rot_dims / 2` rotated pairs, scaling applied, computed in f32
    /// as Hugging Face does (so positions times frequencies round the same way).
    pub fn inv_freq(&self, rot_dims: usize) -> Vec<f32> {
        let half = rot_dims / 2;
        (0..half)
            .map(|i| {
                let exponent = (2 * i) as f32 / rot_dims as f32;
                let base = 1.0f32 / (self.theta as f32).powf(exponent);
                match &self.scaling {
                    RopeScaling::None => base,
                    RopeScaling::Linear { factor } => base / *factor as f32,
                    RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_context } => {
                        let wavelen = 2.0 * std::f64::consts::PI / base as f64;
                        let low_wavelen = original_context / low_freq_factor;
                        let high_wavelen = original_context / high_freq_factor;
                        if wavelen < high_wavelen {
                            base
                        } else if wavelen > low_wavelen {
                            base / *factor as f32
                        } else {
                            let smooth = (original_context / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            ((1.0 - smooth) * base as f64 / factor + smooth * base as f64) as f32
                        }
                    }
                }
            })
            .collect()
    }
}

/// Everything the forward pass needs to know about a model's shape.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// Architecture family.
    pub arch: Arch,
    /// Transformer blocks.
    pub n_layers: usize,
    /// Hidden (residual stream) width.
    pub hidden: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `n_heads`).
    pub n_kv_heads: usize,
    /// Width of one attention head.
    pub head_dim: usize,
    /// Width of the feed-forward inner layer.
    pub ffn: usize,
    /// Vocabulary size (rows of the embedding table).
    pub vocab: usize,
    /// Context length the model was trained for.
    pub trained_context: usize,
    /// Epsilon of every RMSNorm.
    pub rms_eps: f32,
    /// Pairing of rotated dimensions; depends on how the file stores Q/K.
    pub rope_style: RopeStyle,
    /// RoPE of global layers (all layers but Gemma 3's local ones).
    pub rope_global: RopeConfig,
    /// RoPE of sliding-window (local) layers.
    pub rope_local: RopeConfig,
    /// Sliding window in tokens for the layers that use one.
    pub sliding_window: Option<usize>,
    /// Per layer: whether it attends through the sliding window.
    pub layer_is_sliding: Vec<bool>,
    /// Multiplier of attention scores (1/sqrt(head_dim) unless the model says otherwise).
    pub attn_scale: f32,
    /// Soft cap of attention scores (`tanh(s/c)*c`), if any.
    pub attn_softcap: Option<f32>,
    /// Soft cap of final logits, if any.
    pub final_softcap: Option<f32>,
    /// Multiplier of token embeddings (Gemma: sqrt(hidden)).
    pub embed_scale: Option<f32>,
    /// Whether norm weights are stored as `w` and applied as `1 + w` (Gemma in HF files).
    pub norm_adds_one: bool,
    /// GELU-tanh gating instead of SiLU.
    pub gelu: bool,
}

impl ModelConfig {
    /// Width of all query heads together.
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Width of all key (or value) heads together.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Reads the hyperparameters from GGUF metadata (`<arch>.*` keys).
    pub fn from_gguf(meta: &Metadata, file: &Path) -> Result<ModelConfig> {
        let arch_name = meta.str("general.architecture")?;
        let arch = match arch_name {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            "gemma3" => Arch::Gemma3,
            other => {
                return Err(Error::Unsupported(format!(
                    "{}: architecture '{other}' is not supported (supported: llama, mistral, qwen2, qwen3, gemma3)",
                    file.display()
                )))
            }
        };
        let k = |s: &str| format!("{arch_name}.{s}");
        let usize_of = |key: &str| -> Result<usize> { Ok(meta.u64(&k(key))? as usize) };
        let opt_usize = |key: &str| -> Result<Option<usize>> { Ok(meta.u64_opt(&k(key))?.map(|v| v as usize)) };
        let hidden = usize_of("embedding_length")?;
        let n_heads = usize_of("attention.head_count")?;
        let n_kv_heads = opt_usize("attention.head_count_kv")?.unwrap_or(n_heads);
        let head_dim = match opt_usize("attention.key_length")? {
            Some(d) => d,
            None if n_heads > 0 => hidden / n_heads,
            None => 0,
        };
        let n_layers = check_layers(usize_of("block_count")?, file)?;
        let vocab = match opt_usize("vocab_size")? {
            Some(v) => v,
            None => meta.array_opt("tokenizer.ggml.tokens")?.map(|a| a.len()).unwrap_or(0),
        };
        let theta = meta.f64_opt(&k("rope.freq_base"))?.unwrap_or(10_000.0);
        let scaling = match meta.str_opt(&k("rope.scaling.type"))? {
            None | Some("none") => RopeScaling::None,
            Some("linear") => RopeScaling::Linear { factor: meta.f64_opt(&k("rope.scaling.factor"))?.unwrap_or(1.0) },
            Some(other) => {
                return Err(Error::Unsupported(format!("{}: RoPE scaling '{other}' is not supported", file.display())))
            }
        };
        let sliding_window = opt_usize("attention.sliding_window")?.filter(|&w| w > 0);
        let mut cfg = ModelConfig {
            arch,
            n_layers,
            hidden,
            n_heads,
            n_kv_heads,
            head_dim,
            ffn: usize_of("feed_forward_length")?,
            vocab,
            trained_context: usize_of("context_length")?,
            rms_eps: meta.f64_opt(&k("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-5) as f32,
            // llama.cpp's converter permutes Llama Q/K rows for adjacent-pair RoPE; the other
            // families keep Hugging Face's rotate-half layout.
            rope_style: if arch == Arch::Llama { RopeStyle::Adjacent } else { RopeStyle::Neox },
            rope_global: RopeConfig { theta, scaling },
            rope_local: RopeConfig { theta, scaling: RopeScaling::None },
            sliding_window,
            layer_is_sliding: vec![sliding_window.is_some(); n_layers],
            attn_scale: 0.0,
            attn_softcap: meta.f64_opt(&k("attn_logit_softcapping"))?.map(|v| v as f32),
            final_softcap: meta.f64_opt(&k("final_logit_softcapping"))?.map(|v| v as f32),
            embed_scale: None,
            norm_adds_one: false,
            gelu: false,
        };
        if arch == Arch::Llama && sliding_window.is_some() {
            cfg.arch = Arch::Mistral;
        }
        if arch == Arch::Gemma3 {
            // Gemma 3 GGUF files do not store the layer pattern or the local base: llama.cpp fixes
            // them at every sixth layer global and base 10000, as the released models use.
            let pattern = opt_usize("attention.sliding_window_pattern")?.unwrap_or(6).max(1);
            cfg.layer_is_sliding = (0..n_layers).map(|i| sliding_window.is_some() && (i + 1) % pattern != 0).collect();
            cfg.rope_local = RopeConfig { theta: meta.f64_opt(&k("rope.freq_base_swa"))?.unwrap_or(10_000.0), scaling: RopeScaling::None };
            cfg.embed_scale = Some((hidden as f32).sqrt());
            cfg.gelu = true;
            // The 27B model scales queries by hidden/heads instead of the head width.
            let scalar = if n_layers == 62 { hidden / n_heads.max(1) } else { head_dim };
            cfg.attn_scale = 1.0 / (scalar as f32).sqrt();
        }
        cfg.finish(file)
    }

    /// Reads the hyperparameters from a Hugging Face `config.json` (already parsed).
    pub fn from_hf(json: &serde_json::Value, file: &Path) -> Result<ModelConfig> {
        let bad = |msg: String| Error::format(file, msg);
        let model_type = json.get("model_type").and_then(|v| v.as_str()).ok_or_else(|| bad("missing key 'model_type'".into()))?;
        let arch = match model_type {
            "llama" => Arch::Llama,
            "mistral" => Arch::Mistral,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            "gemma3_text" | "gemma3" => Arch::Gemma3,
            other => {
                return Err(Error::Unsupported(format!(
                    "{}: model_type '{other}' is not supported (supported: llama, mistral, qwen2, qwen3, gemma3_text)",
                    file.display()
                )))
            }
        };
        // Multimodal Gemma 3 configs nest the text model.
        let json = if model_type == "gemma3" { json.get("text_config").unwrap_or(json) } else { json };
        let need = |key: &str| -> Result<usize> {
            json.get(key).and_then(|v| v.as_u64()).map(|v| v as usize).ok_or_else(|| bad(format!("missing or non-integer key '{key}'")))
        };
        let opt_f64 = |key: &str| json.get(key).and_then(|v| v.as_f64());
        let hidden = need("hidden_size")?;
        let n_heads = need("num_attention_heads")?;
        let n_kv_heads = json.get("num_key_value_heads").and_then(|v| v.as_u64()).map(|v| v as usize).unwrap_or(n_heads);
        let head_dim = match json.get("head_dim").and_then(|v| v.as_u64()) {
            Some(d) => d as usize,
            None if n_heads > 0 => hidden / n_heads,
            None => 0,
        };
        let n_layers = check_layers(need("num_hidden_layers")?, file)?;
        // Newer configs keep RoPE settings under `rope_parameters`; classic ones use
        // `rope_theta` + `rope_scaling`.
        let rope_obj = json.get("rope_parameters").or_else(|| json.get("rope_scaling")).filter(|v| v.is_object());
        let theta = opt_f64("rope_theta")
            .or_else(|| rope_obj.and_then(|r| r.get("rope_theta")).and_then(|v| v.as_f64()))
            .unwrap_or(10_000.0);
        let scaling = match rope_obj {
            None => RopeScaling::None,
            Some(r) => {
                let kind = r.get("rope_type").or_else(|| r.get("type")).and_then(|v| v.as_str()).unwrap_or("default");
                let f = |key: &str, default: f64| r.get(key).and_then(|v| v.as_f64()).unwrap_or(default);
                match kind {
                    "default" => RopeScaling::None,
                    "linear" => RopeScaling::Linear { factor: f("factor", 1.0) },
                    "llama3" => RopeScaling::Llama3 {
                        factor: f("factor", 8.0),
                        low_freq_factor: f("low_freq_factor", 1.0),
                        high_freq_factor: f("high_freq_factor", 4.0),
                        original_context: f("original_max_position_embeddings", 8192.0),
                    },
                    other => return Err(Error::Unsupported(format!("{}: RoPE scaling '{other}' is not supported", file.display()))),
                }
            }
        };
        let window = json.get("sliding_window").and_then(|v| v.as_u64()).map(|v| v as usize).filter(|&w| w > 0);
        let sliding_window = match arch {
            Arch::Mistral | Arch::Gemma3 => window,
            Arch::Qwen2 | Arch::Qwen3 if json.get("use_sliding_window").and_then(|v| v.as_bool()) == Some(true) => {
                return Err(Error::Unsupported(format!("{}: Qwen sliding-window layers are not supported", file.display())))
            }
            _ => None,
        };
        let layer_is_sliding: Vec<bool> = match (arch, json.get("layer_types").and_then(|v| v.as_array())) {
            (_, Some(types)) if sliding_window.is_some() => {
                if types.len() != n_layers {
                    return Err(bad(format!("'layer_types' has {} entries for {n_layers} layers", types.len())));
                }
                types.iter().map(|t| t.as_str() == Some("sliding_attention")).collect()
            }
            (Arch::Gemma3, _) if sliding_window.is_some() => {
                let pattern = json.get("sliding_window_pattern").and_then(|v| v.as_u64()).unwrap_or(6).max(1) as usize;
                (0..n_layers).map(|i| (i + 1) % pattern != 0).collect()
            }
            _ => vec![sliding_window.is_some(); n_layers],
        };
        let act = json.get("hidden_activation").or_else(|| json.get("hidden_act")).and_then(|v| v.as_str()).unwrap_or("silu");
        let gelu = match act {
            "silu" | "swish" => false,
            "gelu_pytorch_tanh" | "gelu_tanh" => true,
            other => return Err(Error::Unsupported(format!("{}: activation '{other}' is not supported", file.display()))),
        };
        let mut cfg = ModelConfig {
            arch,
            n_layers,
            hidden,
            n_heads,
            n_kv_heads,
            head_dim,
            ffn: need("intermediate_size")?,
            vocab: need("vocab_size")?,
            trained_context: need("max_position_embeddings")?,
            rms_eps: opt_f64("rms_norm_eps").unwrap_or(1e-6) as f32,
            rope_style: RopeStyle::Neox,
            rope_global: RopeConfig { theta, scaling },
            rope_local: RopeConfig { theta, scaling: RopeScaling::None },
            sliding_window,
            layer_is_sliding,
            attn_scale: 0.0,
            attn_softcap: opt_f64("attn_logit_softcapping").map(|v| v as f32),
            final_softcap: opt_f64("final_logit_softcapping").map(|v| v as f32),
            embed_scale: None,
            norm_adds_one: false,
            gelu,
        };
        if arch == Arch::Gemma3 {
            cfg.rope_local = RopeConfig { theta: opt_f64("rope_local_base_freq").unwrap_or(10_000.0), scaling: RopeScaling::None };
            cfg.embed_scale = Some((hidden as f32).sqrt());
            cfg.norm_adds_one = true;
            let scalar = opt_f64("query_pre_attn_scalar").unwrap_or(head_dim as f64);
            cfg.attn_scale = (1.0 / scalar.sqrt()) as f32;
        }
        cfg.finish(file)
    }

    /// Fills defaults and checks the shape is self-consistent.
    fn finish(mut self, file: &Path) -> Result<ModelConfig> {
        let bad = |msg: String| Err(Error::format(file, msg));
        if self.n_layers == 0 || self.hidden == 0 || self.n_heads == 0 || self.head_dim == 0 || self.ffn == 0 || self.vocab == 0 {
            return bad(format!(
                "implausible shape: layers {}, hidden {}, heads {}, head_dim {}, ffn {}, vocab {}",
                self.n_layers, self.hidden, self.n_heads, self.head_dim, self.ffn, self.vocab
            ));
        }
        if self.n_kv_heads == 0 || !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(format!("{} query heads cannot share {} key/value heads", self.n_heads, self.n_kv_heads));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!("head width {} is odd; RoPE needs pairs", self.head_dim));
        }
        if [self.n_layers, self.hidden, self.n_heads, self.head_dim, self.ffn].iter().any(|&v| v > MAX_DIM) || self.vocab > 1 << 24 {
            return bad("hyperparameters exceed sane limits".into());
        }
        if self.attn_scale == 0.0 {
            self.attn_scale = 1.0 / (self.head_dim as f32).sqrt();
        }
        let theta_ok = self.rope_global.theta.is_finite() && self.rope_global.theta > 0.0;
        if !self.rms_eps.is_finite() || self.rms_eps < 0.0 || !theta_ok {
            return bad("non-finite norm epsilon or RoPE base".into());
        }
        // A zero or negative `query_pre_attn_scalar` would make every attention score inf/NaN.
        if !(self.attn_scale.is_finite() && self.attn_scale > 0.0) {
            return bad(format!("attention scale {} is not a positive number", self.attn_scale));
        }
        if self.trained_context == 0 {
            self.trained_context = 2048;
        }
        Ok(self)
    }
}

/// Largest layer count, width or head count accepted; real models are below 1/1000 of it.
const MAX_DIM: usize = 1 << 20;

/// Refuses an absurd layer count before per-layer tables are allocated from it: an untrusted
/// `2^60` would otherwise abort the process on allocation instead of failing the load.
fn check_layers(n_layers: usize, file: &Path) -> Result<usize> {
    if n_layers > MAX_DIM {
        return Err(Error::format(file, format!("{n_layers} layers exceed the limit of {MAX_DIM}")));
    }
    Ok(n_layers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_scaling_keeps_high_and_divides_low_frequencies() {
        let rope = RopeConfig {
            theta: 500_000.0,
            scaling: RopeScaling::Llama3 { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_context: 8192.0 },
        };
        let plain = RopeConfig { theta: 500_000.0, scaling: RopeScaling::None }.inv_freq(128);
        let scaled = rope.inv_freq(128);
        assert_eq!(scaled[0], plain[0]);
        assert!((scaled[63] - plain[63] / 8.0).abs() <= plain[63] * 1e-6);
    }

    #[test]
    fn hf_config_missing_key_names_it() {
        let j = serde_json::json!({"model_type": "llama", "hidden_size": 64});
        let e = ModelConfig::from_hf(&j, Path::new("x/config.json")).unwrap_err().to_string();
        assert!(e.contains("num_attention_heads") && e.contains("config.json"), "{e}");
    }

    #[test]
    fn absurd_layer_count_is_an_error_not_an_allocation() {
        for model_type in ["llama", "mistral", "gemma3_text"] {
            let j = serde_json::json!({
                "model_type": model_type, "hidden_size": 64, "num_attention_heads": 4,
                "num_hidden_layers": 1u64 << 62, "intermediate_size": 128, "vocab_size": 100,
                "max_position_embeddings": 64, "sliding_window": 16,
            });
            let e = ModelConfig::from_hf(&j, Path::new("c.json")).unwrap_err().to_string();
            assert!(e.contains("layers exceed the limit"), "{model_type}: {e}");
        }
    }

    #[test]
    fn non_positive_query_scalar_is_refused() {
        for scalar in [0.0, -4.0] {
            let j = serde_json::json!({
                "model_type": "gemma3_text", "hidden_size": 64, "num_attention_heads": 4, "head_dim": 16,
                "num_hidden_layers": 2, "intermediate_size": 128, "vocab_size": 100,
                "max_position_embeddings": 64, "query_pre_attn_scalar": scalar,
            });
            let e = ModelConfig::from_hf(&j, Path::new("c.json")).unwrap_err().to_string();
            assert!(e.contains("attention scale"), "{scalar}: {e}");
        }
    }

    #[test]
    fn unknown_architecture_is_unsupported() {
        let j = serde_json::json!({"model_type": "bloom"});
        assert!(matches!(ModelConfig::from_hf(&j, Path::new("c.json")), Err(Error::Unsupported(_))));
    }
}
