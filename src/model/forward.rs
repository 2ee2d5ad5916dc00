//! The decoder forward pass, written once against [`Backend`]: every supported family is this
//! graph with the switches of [`ModelConfig`] (biases, q/k norms, sandwich norms, activation,
//! embedding scale, sliding windows, two RoPE bases).

use super::adapters::{BackendLora, LoraRef};
use super::config::ModelConfig;
use super::weights::ModelWeights;
use crate::lora::LoraModule;
use crate::backend::{AttentionShape, AttnSeq, Backend};
use crate::error::{Error, Result};
use crate::kv_cache::{slot, BLOCK_TOKENS};

/// Which positions of a forward call produce logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitRows {
    /// None (prefill of a chunk that is not the last).
    None,
    /// Only the last position.
    Last,
    /// Every position.
    All,
}

/// One sequence's share of a batched forward call.
#[derive(Clone, Debug)]
pub struct SeqInput<'a> {
    /// Its new tokens.
    pub ids: &'a [u32],
    /// Position of the first of them.
    pub pos0: usize,
    /// Its KV block table, covering positions up to `pos0 + ids.len()`.
    pub blocks: &'a [u32],
    /// Whether these are prompt tokens (prefill) or generated ones (decode); see
    /// [`AttnSeq::prompt`].
    pub prompt: bool,
    /// Which of its rows produce logits.
    pub logits: LogitRows,
    /// Its LoRA adapter and scale, if any.
    pub lora: Option<LoraRef<'a>>,
}

/// Bytes of f32 activation buffers one forward call of `rows` rows allocates, `logit_rows` of
/// them producing logits (the scratch memory a step needs on top of weights and KV).
pub fn scratch_bytes(cfg: &ModelConfig, rows: usize, logit_rows: usize) -> u64 {
    let per_row = 3 * cfg.hidden + 2 * cfg.q_dim() + 2 * cfg.kv_dim() + 2 * cfg.ffn;
    let head = logit_rows * (2 * cfg.hidden + cfg.vocab);
    ((rows * per_row + head) * 4) as u64
}

/// A sequence's rows in a forward call and its adapter with the request's scale.
type SeqLora<'a, B> = (std::ops::Range<usize>, Option<(&'a BackendLora<B>, f32)>);

/// Adds every sequence's LoRA update of `module` in `layer` to `out` (`x` is the projection's
/// input).
fn apply_lora<B: Backend>(
    b: &B,
    loras: &[SeqLora<'_, B>],
    layer: usize,
    module: LoraModule,
    x: &B::Act,
    out: &mut B::Act,
) -> Result<()> {
    for (rows, lora) in loras {
        if let Some(p) = lora.and_then(|(ad, scale)| ad.pair(layer, module).map(|p| (p, scale))) {
            let (pair, scale) = p;
            let factor = (scale as f64 * pair.scaling as f64) as f32;
            let u = crate::backend::LoraUpdate { a: &pair.a, b: &pair.b, rank: pair.rank, factor };
            b.lora_add(x, rows.clone(), u, out)?;
        }
    }
    Ok(())
}

/// Runs every sequence's tokens through the model in one pass (their rows share every matrix
/// product), storing their keys and values in their blocks of `kv`, and returns each sequence's
/// requested logits rows.
pub fn forward<B: Backend + 'static>(
    backend: &B,
    cfg: &ModelConfig,
    w: &ModelWeights<B>,
    kv: &mut B::Kv,
    seqs: &[SeqInput<'_>],
) -> Result<Vec<Vec<Vec<f32>>>> {
    let n: usize = seqs.iter().map(|s| s.ids.len()).sum();
    if n == 0 || seqs.iter().any(|s| s.ids.is_empty()) {
        return Err(Error::InvalidArgument("forward of zero tokens".into()));
    }
    let mut ids = Vec::with_capacity(n);
    let mut positions = Vec::with_capacity(n);
    let mut slots = Vec::with_capacity(n);
    let mut attn = Vec::with_capacity(seqs.len());
    let mut loras = Vec::new();
    for s in seqs {
        if let Some(l) = s.lora {
            let ad = l.adapter.downcast_ref::<BackendLora<B>>().ok_or_else(|| Error::Internal("an adapter of another backend".into()))?;
            loras.push((ids.len()..ids.len() + s.ids.len(), Some((ad, l.scale))));
        }
        let end = s.pos0 + s.ids.len();
        if s.blocks.len() * BLOCK_TOKENS < end {
            return Err(Error::Internal(format!("{} KV blocks cannot hold position {}", s.blocks.len(), end - 1)));
        }
        attn.push(AttnSeq { rows: ids.len()..ids.len() + s.ids.len(), pos0: s.pos0, blocks: s.blocks, prompt: s.prompt });
        ids.extend_from_slice(s.ids);
        positions.extend(s.pos0..end);
        slots.extend((s.pos0..end).map(|p| slot(s.blocks, p)));
    }
    let b = backend;
    let mut x = b.act(n, cfg.hidden)?;
    b.embed(&w.embed, &ids, cfg.embed_scale, &mut x)?;
    let mut xn = b.act(n, cfg.hidden)?;
    let mut q = b.act(n, cfg.q_dim())?;
    let mut k = b.act(n, cfg.kv_dim())?;
    let mut v = b.act(n, cfg.kv_dim())?;
    let mut att = b.act(n, cfg.q_dim())?;
    let mut proj = b.act(n, cfg.hidden)?;
    let mut gate = b.act(n, cfg.ffn)?;
    let mut up = b.act(n, cfg.ffn)?;
    for (li, l) in w.layers.iter().enumerate() {
        let sliding = cfg.layer_is_sliding[li];
        // Attention block.
        b.rms_norm(&x, &l.attn_norm, cfg.rms_eps, &mut xn)?;
        b.matmul_many(&xn, &[&l.wq, &l.wk, &l.wv], &mut [&mut q, &mut k, &mut v])?;
        if !loras.is_empty() {
            apply_lora(b, &loras, li, LoraModule::Q, &xn, &mut q)?;
            apply_lora(b, &loras, li, LoraModule::K, &xn, &mut k)?;
            apply_lora(b, &loras, li, LoraModule::V, &xn, &mut v)?;
        }
        if let Some([bq, bk, bv]) = &l.qkv_bias {
            b.add_bias(&mut q, bq)?;
            b.add_bias(&mut k, bk)?;
            b.add_bias(&mut v, bv)?;
        }
        if let Some([qn, kn]) = &l.qk_norm {
            b.rms_norm_inplace(&mut q, qn, cfg.rms_eps)?;
            b.rms_norm_inplace(&mut k, kn, cfg.rms_eps)?;
        }
        let inv_freq = if sliding { &w.inv_freq_local } else { &w.inv_freq_global };
        b.rope(&mut q, &positions, inv_freq, cfg.head_dim, cfg.rope_style)?;
        b.rope(&mut k, &positions, inv_freq, cfg.head_dim, cfg.rope_style)?;
        b.kv_store(kv, li, &slots, &k, &v)?;
        let shape = AttentionShape {
            n_heads: cfg.n_heads,
            n_kv_heads: cfg.n_kv_heads,
            head_dim: cfg.head_dim,
            scale: cfg.attn_scale,
            window: if sliding { cfg.sliding_window } else { None },
            softcap: cfg.attn_softcap,
        };
        b.attention(&q, kv, li, &attn, shape, &mut att)?;
        b.matmul(&att, &l.wo, &mut proj)?;
        if !loras.is_empty() {
            apply_lora(b, &loras, li, LoraModule::O, &att, &mut proj)?;
        }
        if let Some(pn) = &l.post_attn_norm {
            b.rms_norm_inplace(&mut proj, pn, cfg.rms_eps)?;
        }
        b.add(&mut x, &proj)?;
        // Feed-forward block.
        b.rms_norm(&x, &l.ffn_norm, cfg.rms_eps, &mut xn)?;
        b.matmul_many(&xn, &[&l.gate, &l.up], &mut [&mut gate, &mut up])?;
        if !loras.is_empty() {
            apply_lora(b, &loras, li, LoraModule::Gate, &xn, &mut gate)?;
            apply_lora(b, &loras, li, LoraModule::Up, &xn, &mut up)?;
        }
        b.gated_activation(&mut gate, &up, cfg.gelu)?;
        b.matmul(&gate, &l.down, &mut proj)?;
        if !loras.is_empty() {
            apply_lora(b, &loras, li, LoraModule::Down, &gate, &mut proj)?;
        }
        if let Some(pn) = &l.post_ffw_norm {
            b.rms_norm_inplace(&mut proj, pn, cfg.rms_eps)?;
        }
        b.add(&mut x, &proj)?;
    }
    // The rows that produce logits, and how many belong to each sequence.
    let mut picked = Vec::new();
    let mut per_seq = Vec::with_capacity(seqs.len());
    for (s, a) in seqs.iter().zip(&attn) {
        let before = picked.len();
        match s.logits {
            LogitRows::None => {}
            LogitRows::Last => picked.push(a.rows.end - 1),
            LogitRows::All => picked.extend(a.rows.clone()),
        }
        per_seq.push(picked.len() - before);
    }
    if picked.is_empty() {
        return Ok(vec![Vec::new(); seqs.len()]);
    }
    let m = picked.len();
    let mut sel = b.act(m, cfg.hidden)?;
    b.gather_rows(&x, &picked, &mut sel)?;
    let mut normed = b.act(m, cfg.hidden)?;
    b.rms_norm(&sel, &w.output_norm, cfg.rms_eps, &mut normed)?;
    let mut logits = b.act(m, cfg.vocab)?;
    b.matmul(&normed, &w.output, &mut logits)?;
    if let Some(cap) = cfg.final_softcap {
        b.softcap(&mut logits, cap)?;
    }
    let all = b.take_to_host(logits)?;
    let mut rows = all.chunks_exact(cfg.vocab);
    Ok(per_seq.iter().map(|&c| rows.by_ref().take(c).map(|r| r.to_vec()).collect()).collect())
}
