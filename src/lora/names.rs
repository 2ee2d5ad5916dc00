//! PEFT tensor names: `base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight` and
//! friends, parsed into layer, module and factor.

use super::LoraModule;

/// What a LoRA tensor name says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct LoraName {
    /// Block index.
    pub layer: usize,
    /// Adapted projection.
    pub module: LoraModule,
    /// True for `lora_B`, false for `lora_A`.
    pub is_b: bool,
    /// The module's name in the base model (`model.layers.3.self_attn.q_proj`), which PEFT
    /// matches `target_modules` and `rank_pattern` keys against.
    pub module_path: String,
}

/// Prefixes before `layers.{i}.` in the text models we load: causal LMs, and Gemma 3's
/// multimodal checkpoints in their transformers 4 and 5 spellings.
const LAYER_ROOTS: [&str; 3] = [
    "model.layers.",
    "model.language_model.layers.",
    "language_model.model.layers.",
];

/// Parses a PEFT LoRA tensor name (with or without the `base_model.model.` wrapper prefix PEFT
/// adds when saving); `None` for anything else (embeddings, lm_head, DoRA magnitudes, biases).
pub(crate) fn parse(name: &str) -> Option<LoraName> {
    let name = name.strip_prefix("base_model.model.").unwrap_or(name);
    let (module_path, is_b) = if let Some(p) = name.strip_suffix(".lora_A.weight") {
        (p, false)
    } else {
        (name.strip_suffix(".lora_B.weight")?, true)
    };
    let root = LAYER_ROOTS.iter().find(|r| module_path.starts_with(*r))?;
    let rest = &module_path[root.len()..];
    let mut parts = rest.split('.');
    let layer_s = parts.next()?;
    // Plain decimal only: "+3" or "03" would parse but are not names PEFT writes.
    if layer_s.is_empty()
        || !layer_s.bytes().all(|c| c.is_ascii_digit())
        || (layer_s.len() > 1 && layer_s.starts_with('0'))
    {
        return None;
    }
    let layer: usize = layer_s.parse().ok()?;
    let parent = parts.next()?;
    let module = LoraModule::from_peft_name(parts.next()?)?;
    if parts.next().is_some() || parent != module.parent() {
        return None;
    }
    Some(LoraName {
        layer,
        module,
        is_b,
        module_path: module_path.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peft_names_with_and_without_wrapper() {
        let n = parse("base_model.model.model.layers.12.self_attn.k_proj.lora_B.weight").unwrap();
        assert_eq!((n.layer, n.module, n.is_b), (12, LoraModule::K, true));
        assert_eq!(n.module_path, "model.layers.12.self_attn.k_proj");
        let n = parse("model.layers.0.mlp.down_proj.lora_A.weight").unwrap();
        assert_eq!((n.layer, n.module, n.is_b), (0, LoraModule::Down, false));
    }

    #[test]
    fn other_tensors_are_not_lora_factors() {
        for name in [
            "base_model.model.lm_head.lora_A.weight",
            "base_model.model.model.embed_tokens.lora_embedding_A",
            "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector",
            "base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias",
            "base_model.model.model.layers.0.mlp.q_proj.lora_A.weight",
            "base_model.model.model.layers.x.self_attn.q_proj.lora_A.weight",
            "base_model.model.model.layers.01.self_attn.q_proj.lora_A.weight",
            "base_model.model.model.layers.0.self_attn.q_proj.extra.lora_A.weight",
            "base_model.model.model.layers.99999999999999999999999.self_attn.q_proj.lora_A.weight",
        ] {
            assert_eq!(parse(name), None, "{name}");
        }
    }
}
