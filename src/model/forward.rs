//! The decoder forward pass, written once against [`Backend`]: every supported family is this
//! graph with the switches of [`ModelConfig`] (biases, q/k norms, sandwich norms, activation,
//! embedding scale, sliding windows, two RoPE bases).

use super::config::ModelConfig;
use super::weights::ModelWeights;
use crate::backend::{AttentionShape, Backend};
use crate::error::{Error, Result};

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

/// Runs `ids` at positions `pos0..pos0+ids.len()` through the model, appending their keys and
/// values to `kv`, and returns the requested logits rows.
pub fn forward<B: Backend>(
    backend: &B,
    cfg: &ModelConfig,
    w: &ModelWeights<B>,
    kv: &mut B::Kv,
    ids: &[u32],
    pos0: usize,
    rows: LogitRows,
) -> Result<Vec<Vec<f32>>> {
    let n = ids.len();
    if n == 0 {
        return Err(Error::InvalidArgument("forward of zero tokens".into()));
    }
    let positions: Vec<usize> = (pos0..pos0 + n).collect();
    let b = backend;
    let mut x = b.act(n, cfg.hidden)?;
    b.embed(&w.embed, ids, cfg.embed_scale, &mut x)?;
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
        b.kv_store(kv, li, &positions, &k, &v)?;
        let shape = AttentionShape {
            n_heads: cfg.n_heads,
            n_kv_heads: cfg.n_kv_heads,
            head_dim: cfg.head_dim,
            scale: cfg.attn_scale,
            window: if sliding { cfg.sliding_window } else { None },
            softcap: cfg.attn_softcap,
        };
        b.attention(&q, kv, li, &positions, shape, &mut att)?;
        b.matmul(&att, &l.wo, &mut proj)?;
        if let Some(pn) = &l.post_attn_norm {
            b.rms_norm_inplace(&mut proj, pn, cfg.rms_eps)?;
        }
        b.add(&mut x, &proj)?;
        // Feed-forward block.
        b.rms_norm(&x, &l.ffn_norm, cfg.rms_eps, &mut xn)?;
        b.matmul_many(&xn, &[&l.gate, &l.up], &mut [&mut gate, &mut up])?;
        b.gated_activation(&mut gate, &up, cfg.gelu)?;
        b.matmul(&gate, &l.down, &mut proj)?;
        if let Some(pn) = &l.post_ffw_norm {
            b.rms_norm_inplace(&mut proj, pn, cfg.rms_eps)?;
        }
        b.add(&mut x, &proj)?;
    }
    let picked = match rows {
        LogitRows::None => return Ok(Vec::new()),
        LogitRows::All => x,
        LogitRows::Last => {
            let mut last = b.act(1, cfg.hidden)?;
            b.copy_row(&x, n - 1, &mut last)?;
            last
        }
    };
    let m = if rows == LogitRows::All { n } else { 1 };
    let mut normed = b.act(m, cfg.hidden)?;
    b.rms_norm(&picked, &w.output_norm, cfg.rms_eps, &mut normed)?;
    let mut logits = b.act(m, cfg.vocab)?;
    b.matmul(&normed, &w.output, &mut logits)?;
    if let Some(cap) = cfg.final_softcap {
        b.softcap(&mut logits, cap)?;
    }
    let all = b.take_to_host(logits)?;
    if m == 1 {
        return Ok(vec![all]);
    }
    Ok(all.chunks_exact(cfg.vocab).map(|r| r.to_vec()).collect())
}
