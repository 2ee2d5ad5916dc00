//! Gathers a model's tensors by canonical name, checks every shape against the config, and
//! hands them to a backend. Errors name the file and the tensor.

use std::path::{Path, PathBuf};

use super::config::ModelConfig;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::tensor::{DType, TensorRef, WeightMap};

/// One transformer block's weights on a backend.
pub struct LayerWeights<B: Backend> {
    /// Norm before attention.
    pub attn_norm: B::Vector,
    /// Query projection `[q_dim, hidden]`.
    pub wq: B::Matrix,
    /// Key projection `[kv_dim, hidden]`.
    pub wk: B::Matrix,
    /// Value projection `[kv_dim, hidden]`.
    pub wv: B::Matrix,
    /// Output projection `[hidden, q_dim]`.
    pub wo: B::Matrix,
    /// Q/K/V biases (Qwen2).
    pub qkv_bias: Option<[B::Vector; 3]>,
    /// Per-head query and key norms (Qwen3, Gemma 3).
    pub qk_norm: Option<[B::Vector; 2]>,
    /// Norm of the attention output before the residual add (Gemma 3).
    pub post_attn_norm: Option<B::Vector>,
    /// Norm before the feed-forward block.
    pub ffn_norm: B::Vector,
    /// Gate projection `[ffn, hidden]`.
    pub gate: B::Matrix,
    /// Up projection `[ffn, hidden]`.
    pub up: B::Matrix,
    /// Down projection `[hidden, ffn]`.
    pub down: B::Matrix,
    /// Norm of the feed-forward output before the residual add (Gemma 3).
    pub post_ffw_norm: Option<B::Vector>,
}

/// All weights of a model on a backend.
pub struct ModelWeights<B: Backend> {
    /// Token embedding table `[vocab, hidden]`.
    pub embed: B::Matrix,
    /// Output projection `[vocab, hidden]` (the embedding table when tied).
    pub output: B::Matrix,
    /// Final norm.
    pub output_norm: B::Vector,
    /// Blocks in order.
    pub layers: Vec<LayerWeights<B>>,
    /// RoPE inverse frequencies of global layers.
    pub inv_freq_global: B::Vector,
    /// RoPE inverse frequencies of sliding-window layers.
    pub inv_freq_local: B::Vector,
    /// Bytes of weight data referenced.
    pub bytes: u64,
    /// Parameters counted.
    pub params: u64,
}

struct Gather<'a> {
    map: &'a WeightMap,
    file: PathBuf,
    cfg: &'a ModelConfig,
    bytes: u64,
    params: u64,
}

impl Gather<'_> {
    fn err(&self, msg: String) -> Error {
        Error::format(&self.file, msg)
    }

    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<TensorRef> {
        let t = self.map.try_get(name).ok_or_else(|| self.err(format!("missing tensor {name}")))?;
        if t.shape != shape {
            return Err(self.err(format!("tensor {name} has shape {:?}, expected {shape:?}", t.shape)));
        }
        self.bytes += t.bytes().len() as u64;
        self.params += t.n_elements() as u64;
        Ok(t.clone())
    }

    fn vector(&mut self, name: &str, len: usize, norm: bool) -> Result<Vec<f32>> {
        let t = self.tensor(name, &[len])?;
        if !matches!(t.dtype, DType::F32 | DType::F16 | DType::BF16) {
            return Err(self.err(format!("tensor {name} is {}; vectors must be F32, F16 or BF16", t.dtype.name())));
        }
        let mut v = vec![0f32; len];
        crate::quant::dequantize_row(t.dtype, t.bytes(), &mut v)?;
        if norm && self.cfg.norm_adds_one {
            v.iter_mut().for_each(|x| *x += 1.0);
        }
        Ok(v)
    }

    fn has(&self, name: &str) -> bool {
        self.map.try_get(name).is_some()
    }
}

impl<B: Backend> ModelWeights<B> {
    /// Collects and checks every tensor `cfg` needs from `map` (canonical names) and places them
    /// on `backend`. `file` names the source in errors.
    pub fn load(backend: &B, cfg: &ModelConfig, map: &WeightMap, file: &Path) -> Result<ModelWeights<B>> {
        let mut g = Gather { map, file: file.to_path_buf(), cfg, bytes: 0, params: 0 };
        let (h, q, kv, f) = (cfg.hidden, cfg.q_dim(), cfg.kv_dim(), cfg.ffn);
        let embed_t = g.tensor("token_embd.weight", &[cfg.vocab, h])?;
        let output_t = if g.has("output.weight") { g.tensor("output.weight", &[cfg.vocab, h])? } else { embed_t.clone() };
        let output_norm = g.vector("output_norm.weight", h, true)?;
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let n = |s: &str| format!("blk.{i}.{s}");
            let qkv_bias = if g.has(&n("attn_q.bias")) {
                Some([
                    backend.vector(&g.vector(&n("attn_q.bias"), q, false)?)?,
                    backend.vector(&g.vector(&n("attn_k.bias"), kv, false)?)?,
                    backend.vector(&g.vector(&n("attn_v.bias"), kv, false)?)?,
                ])
            } else {
                None
            };
            let qk_norm = if g.has(&n("attn_q_norm.weight")) {
                Some([
                    backend.vector(&g.vector(&n("attn_q_norm.weight"), cfg.head_dim, true)?)?,
                    backend.vector(&g.vector(&n("attn_k_norm.weight"), cfg.head_dim, true)?)?,
                ])
            } else {
                None
            };
            let post_attn_norm = match g.has(&n("post_attention_norm.weight")) {
                true => Some(backend.vector(&g.vector(&n("post_attention_norm.weight"), h, true)?)?),
                false => None,
            };
            let post_ffw_norm = match g.has(&n("post_ffw_norm.weight")) {
                true => Some(backend.vector(&g.vector(&n("post_ffw_norm.weight"), h, true)?)?),
                false => None,
            };
            layers.push(LayerWeights {
                attn_norm: backend.vector(&g.vector(&n("attn_norm.weight"), h, true)?)?,
                wq: backend.matrix(&g.tensor(&n("attn_q.weight"), &[q, h])?)?,
                wk: backend.matrix(&g.tensor(&n("attn_k.weight"), &[kv, h])?)?,
                wv: backend.matrix(&g.tensor(&n("attn_v.weight"), &[kv, h])?)?,
                wo: backend.matrix(&g.tensor(&n("attn_output.weight"), &[h, q])?)?,
                qkv_bias,
                qk_norm,
                post_attn_norm,
                ffn_norm: backend.vector(&g.vector(&n("ffn_norm.weight"), h, true)?)?,
                gate: backend.matrix(&g.tensor(&n("ffn_gate.weight"), &[f, h])?)?,
                up: backend.matrix(&g.tensor(&n("ffn_up.weight"), &[f, h])?)?,
                down: backend.matrix(&g.tensor(&n("ffn_down.weight"), &[h, f])?)?,
                post_ffw_norm,
            });
        }
        let mut inv_global = cfg.rope_global.inv_freq(cfg.head_dim);
        if g.has("rope_freqs.weight") {
            // Llama 3 GGUF files carry the scaling as per-frequency divisors.
            let factors = g.vector("rope_freqs.weight", cfg.head_dim / 2, false)?;
            inv_global.iter_mut().zip(&factors).for_each(|(f, d)| *f /= d);
        }
        let inv_local = cfg.rope_local.inv_freq(cfg.head_dim);
        Ok(ModelWeights {
            embed: backend.embedding_table(&embed_t)?,
            output: backend.matrix(&output_t)?,
            output_norm: backend.vector(&output_norm)?,
            layers,
            inv_freq_global: backend.vector(&inv_global)?,
            inv_freq_local: backend.vector(&inv_local)?,
            bytes: g.bytes,
            params: g.params,
        })
    }
}
