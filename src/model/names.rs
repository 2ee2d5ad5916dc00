//! Hugging Face tensor names → the canonical GGUF-style names the model code uses.

use super::config::Arch;

/// Canonical name of a Hugging Face checkpoint tensor, or `None` for tensors the text model
/// does not use (rotary caches, vision towers).
pub fn canonical_from_hf(hf: &str, arch: Arch) -> Option<String> {
    let name = hf.strip_prefix("language_model.").unwrap_or(hf);
    let name = name.strip_prefix("model.language_model.").map(|r| format!("model.{r}"));
    let name = name.as_deref().unwrap_or(hf.strip_prefix("language_model.").unwrap_or(hf));
    match name {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, tail) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let gemma = arch == super::config::Arch::Gemma3;
    let short = match tail {
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" if gemma => "post_attention_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "pre_feedforward_layernorm.weight" => "ffn_norm.weight",
        "post_feedforward_layernorm.weight" => "post_ffw_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "self_attn.q_proj.bias" => "attn_q.bias",
        "self_attn.k_proj.bias" => "attn_k.bias",
        "self_attn.v_proj.bias" => "attn_v.bias",
        "self_attn.q_norm.weight" => "attn_q_norm.weight",
        "self_attn.k_norm.weight" => "attn_k_norm.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        _ => return None,
    };
    Some(format!("blk.{layer}.{short}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemma_and_llama_map_post_attention_norm_differently() {
        let n = "model.layers.3.post_attention_layernorm.weight";
        assert_eq!(canonical_from_hf(n, Arch::Llama).unwrap(), "blk.3.ffn_norm.weight");
        assert_eq!(canonical_from_hf(n, Arch::Gemma3).unwrap(), "blk.3.post_attention_norm.weight");
        assert_eq!(canonical_from_hf("model.rotary_emb.inv_freq", Arch::Llama), None);
    }
}
