//! PEFT LoRA adapters, read straight from the directory PEFT's `save_pretrained` writes
//! (`adapter_config.json` + `adapter_model.safetensors`) with no offline conversion.
//!
//! An adapter adds `scale * scaling * B (A x)` to the output of some of a block's projections
//! (q/k/v/o, gate/up/down), where `A` is `r x in`, `B` is `out x r`, `scaling` is
//! `lora_alpha / r` (rsLoRA: `lora_alpha / sqrt(r)`) and `scale` is chosen per request. Loading
//! checks every tensor against the model's shapes and converts it to f32 (adapters are small:
//! rank 8 on q/v of a 135M model is ~1 MB), in the row layout of the model's own weights: a
//! GGUF Llama stores Q/K rows permuted for adjacent-pair RoPE, so the adapter's B rows of q_proj
//! and k_proj are permuted the same way. [`add_delta`] is the scalar reference of the update.

pub mod config;
pub mod delta;
mod names;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::config::{ModelConfig, RopeStyle};
use crate::tensor::{DType, TensorRef};

pub use config::{AdapterConfig, Targets, CONFIG_FILE};
pub use delta::{add_delta, merge_into, permute_rows_for_adjacent_rope};

/// File name of the adapter weights inside an adapter directory.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// A projection of a transformer block that an adapter may adapt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LoraModule {
    /// Attention query projection (`q_proj`).
    Q,
    /// Attention key projection (`k_proj`).
    K,
    /// Attention value projection (`v_proj`).
    V,
    /// Attention output projection (`o_proj`).
    O,
    /// Feed-forward gate projection (`gate_proj`).
    Gate,
    /// Feed-forward up projection (`up_proj`).
    Up,
    /// Feed-forward down projection (`down_proj`).
    Down,
}

impl LoraModule {
    /// Every module, in the order of [`LoraModule::index`].
    pub const ALL: [LoraModule; 7] = [
        LoraModule::Q,
        LoraModule::K,
        LoraModule::V,
        LoraModule::O,
        LoraModule::Gate,
        LoraModule::Up,
        LoraModule::Down,
    ];

    /// Position of the module in [`LoraModule::ALL`] (and in a layer's slot array).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The module's name in Hugging Face checkpoints and PEFT configs (`q_proj`, ...).
    pub fn peft_name(self) -> &'static str {
        match self {
            LoraModule::Q => "q_proj",
            LoraModule::K => "k_proj",
            LoraModule::V => "v_proj",
            LoraModule::O => "o_proj",
            LoraModule::Gate => "gate_proj",
            LoraModule::Up => "up_proj",
            LoraModule::Down => "down_proj",
        }
    }

    /// The canonical (GGUF-style) name of the base weight in block `layer`, e.g.
    /// `blk.3.attn_q.weight`: the tensor whose output this module's update adds to.
    pub fn weight_name(self, layer: usize) -> String {
        let short = match self {
            LoraModule::Q => "attn_q",
            LoraModule::K => "attn_k",
            LoraModule::V => "attn_v",
            LoraModule::O => "attn_output",
            LoraModule::Gate => "ffn_gate",
            LoraModule::Up => "ffn_up",
            LoraModule::Down => "ffn_down",
        };
        format!("blk.{layer}.{short}.weight")
    }

    /// The module called `name` in PEFT's naming, if it is one of the seven.
    pub fn from_peft_name(name: &str) -> Option<LoraModule> {
        LoraModule::ALL.into_iter().find(|m| m.peft_name() == name)
    }

    /// The submodule of a block holding it (`self_attn` or `mlp`).
    pub fn parent(self) -> &'static str {
        match self {
            LoraModule::Q | LoraModule::K | LoraModule::V | LoraModule::O => "self_attn",
            LoraModule::Gate | LoraModule::Up | LoraModule::Down => "mlp",
        }
    }

    /// `(in, out)` widths of the projection in a model of shape `cfg`.
    pub fn dims(self, cfg: &ModelConfig) -> (usize, usize) {
        match self {
            LoraModule::Q => (cfg.hidden, cfg.q_dim()),
            LoraModule::K | LoraModule::V => (cfg.hidden, cfg.kv_dim()),
            LoraModule::O => (cfg.q_dim(), cfg.hidden),
            LoraModule::Gate | LoraModule::Up => (cfg.hidden, cfg.ffn),
            LoraModule::Down => (cfg.ffn, cfg.hidden),
        }
    }
}

/// The two low-rank factors adapting one projection, in f32.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraPair {
    /// `A`, row-major `rank x in_features`.
    pub a: Vec<f32>,
    /// `B`, row-major `out_features x rank`, rows in the model's layout (permuted for a GGUF
    /// Llama's Q/K).
    pub b: Vec<f32>,
    /// Rank `r` of this pair.
    pub rank: usize,
    /// Input width of the projection.
    pub in_features: usize,
    /// Output width of the projection.
    pub out_features: usize,
    /// PEFT's layer scaling at scale 1: `alpha / r`, or `alpha / sqrt(r)` with rsLoRA.
    pub scaling: f32,
}

impl LoraPair {
    /// The single multiplier of `B (A x)` for a request scale: `scale * scaling`, rounded once
    /// to f32 as PEFT's `set_scale` (computed in Python floats) is.
    pub fn factor(&self, scale: f32) -> f32 {
        (scale as f64 * self.scaling as f64) as f32
    }
}

/// A loaded LoRA adapter: per layer, per module, an optional [`LoraPair`].
#[derive(Clone)]
pub struct LoraAdapter {
    /// The adapter directory it was loaded from.
    pub dir: PathBuf,
    /// Its parsed `adapter_config.json`.
    pub config: AdapterConfig,
    layers: Vec<[Option<LoraPair>; 7]>,
    identity: u64,
    bytes: usize,
}

impl LoraAdapter {
    /// Loads the PEFT adapter in `dir` for a model of shape `cfg`, checking every tensor's shape
    /// against it. When `cfg.rope_style` is [`RopeStyle::Adjacent`] (a GGUF Llama/Mistral, whose
    /// Q/K rows llama.cpp's converter permuted) the q_proj/k_proj `B` rows are permuted the same
    /// way, so the update adds to the right features.
    pub fn load(dir: &Path, cfg: &ModelConfig) -> Result<LoraAdapter> {
        let config = AdapterConfig::load(dir)?;
        let file = dir.join(WEIGHTS_FILE);
        if !file.exists() && dir.join("adapter_model.bin").exists() {
            return Err(Error::Unsupported(format!(
                "{}: adapter_model.bin (PyTorch pickle) is not supported; save the adapter with safe_serialization=True",
                dir.display()
            )));
        }
        let st = crate::loader::safetensors::SafetensorsModel::open_file(&file)?;
        let mut tensors: Vec<&TensorRef> = st.weights.iter().collect();
        tensors.sort_by(|a, b| a.name.cmp(&b.name));

        // (layer, module) -> (module path, A, B)
        type Slot<'a> = (String, Option<&'a TensorRef>, Option<&'a TensorRef>);
        let mut slots: BTreeMap<(usize, LoraModule), Slot> = BTreeMap::new();
        for t in tensors {
            let n = names::parse(&t.name).ok_or_else(|| {
                Error::Unsupported(format!(
                    "{}: tensor {} is not a LoRA factor of a q/k/v/o/gate/up/down projection",
                    file.display(),
                    t.name
                ))
            })?;
            if !config.targets_module(&n.module_path, n.layer) {
                return Err(Error::format(
                    &file,
                    format!(
                        "tensor {} adapts {}, which target_modules/layers_to_transform exclude",
                        t.name, n.module_path
                    ),
                ));
            }
            if n.layer >= cfg.n_layers {
                return Err(Error::InvalidArgument(format!(
                    "LoRA adapter {}: tensor {} is for layer {} but the model has {} layers",
                    dir.display(),
                    t.name,
                    n.layer,
                    cfg.n_layers
                )));
            }
            let slot = slots
                .entry((n.layer, n.module))
                .or_insert_with(|| (n.module_path.clone(), None, None));
            let place = if n.is_b { &mut slot.2 } else { &mut slot.1 };
            if place.is_some() {
                return Err(Error::format(
                    &file,
                    format!("two tensors for {} ({})", n.module_path, t.name),
                ));
            }
            *place = Some(t);
        }
        if slots.is_empty() {
            return Err(Error::format(&file, "no LoRA tensors"));
        }

        let mut layers: Vec<[Option<LoraPair>; 7]> = (0..cfg.n_layers)
            .map(|_| std::array::from_fn(|_| None))
            .collect();
        for ((layer, module), (path, a, b)) in slots {
            let (a, b) = match (a, b) {
                (Some(a), Some(b)) => (a, b),
                (Some(a), None) => {
                    return Err(Error::format(
                        &file,
                        format!("{} has no matching lora_B tensor", a.name),
                    ))
                }
                (None, Some(b)) => {
                    return Err(Error::format(
                        &file,
                        format!("{} has no matching lora_A tensor", b.name),
                    ))
                }
                (None, None) => continue,
            };
            let pair = load_pair(dir, &file, &config, cfg, module, &path, a, b)?;
            layers[layer][module.index()] = Some(pair);
        }

        let bytes = layers
            .iter()
            .flatten()
            .flatten()
            .map(|p| (p.a.len() + p.b.len()) * 4)
            .sum();
        let identity = fingerprint(&config, &layers);
        Ok(LoraAdapter {
            dir: dir.to_path_buf(),
            config,
            layers,
            identity,
            bytes,
        })
    }

    /// The pair adapting `module` of block `layer`, if the adapter has one.
    pub fn pair(&self, layer: usize, module: LoraModule) -> Option<&LoraPair> {
        self.layers
            .get(layer)
            .and_then(|l| l[module.index()].as_ref())
    }

    /// Every pair with its layer and module, layer by layer in [`LoraModule::ALL`] order.
    pub fn pairs(&self) -> impl Iterator<Item = (usize, LoraModule, &LoraPair)> {
        self.layers.iter().enumerate().flat_map(|(i, l)| {
            LoraModule::ALL
                .into_iter()
                .filter_map(move |m| l[m.index()].as_ref().map(|p| (i, m, p)))
        })
    }

    /// Number of layers of the model it was loaded for.
    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    /// Largest rank of any pair (sizes the scratch of a batched update).
    pub fn max_rank(&self) -> usize {
        self.pairs().map(|(_, _, p)| p.rank).max().unwrap_or(0)
    }

    /// A 64-bit fingerprint of the adapter's math (ranks, scalings and every factor value in the
    /// model's layout), for prefix-cache keys: equal adapters loaded twice share it. The request
    /// scale is not part of it.
    pub fn identity(&self) -> u64 {
        self.identity
    }

    /// Bytes of f32 factor data held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl std::fmt::Debug for LoraAdapter {
    /// A summary (the factor values would be megabytes of text).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoraAdapter")
            .field("dir", &self.dir)
            .field("pairs", &self.pairs().count())
            .field("max_rank", &self.max_rank())
            .field("bytes", &self.bytes)
            .field("identity", &format_args!("{:016x}", self.identity))
            .finish()
    }
}

/// Reads, checks and converts one A/B pair.
#[allow(clippy::too_many_arguments)]
fn load_pair(
    dir: &Path,
    file: &Path,
    config: &AdapterConfig,
    cfg: &ModelConfig,
    module: LoraModule,
    path: &str,
    a: &TensorRef,
    b: &TensorRef,
) -> Result<LoraPair> {
    let (din, dout) = module.dims(cfg);
    for t in [a, b] {
        if t.shape.len() != 2 {
            return Err(Error::format(
                file,
                format!(
                    "tensor {} has shape {:?}; LoRA factors are matrices",
                    t.name, t.shape
                ),
            ));
        }
    }
    let rank = a.shape[0];
    if rank == 0 {
        return Err(Error::format(file, format!("tensor {} has rank 0", a.name)));
    }
    let expect_a = [rank, din];
    let expect_b = [dout, rank];
    if a.shape[1] != din {
        return Err(shape_error(dir, a, &expect_a, module, din, dout));
    }
    if b.shape[0] != dout {
        return Err(shape_error(dir, b, &expect_b, module, din, dout));
    }
    if b.shape[1] != rank {
        return Err(Error::format(
            file,
            format!(
                "{} has shape {:?} but {} has shape {:?}: the ranks differ",
                b.name, b.shape, a.name, a.shape
            ),
        ));
    }
    let want_rank = config.rank_for(path);
    if rank != want_rank {
        return Err(Error::format(
            file,
            format!(
                "{} has rank {rank} but adapter_config.json gives {path} rank {want_rank}",
                a.name
            ),
        ));
    }
    let scaling = config.scaling(config.alpha_for(path), rank);
    if !scaling.is_finite() {
        return Err(Error::format(
            file,
            format!("{path}: scaling {scaling} is not finite"),
        ));
    }
    let av = to_f32(file, a)?;
    let mut bv = to_f32(file, b)?;
    if cfg.rope_style == RopeStyle::Adjacent {
        match module {
            LoraModule::Q => bv = permute_rows_for_adjacent_rope(&bv, dout, rank, cfg.n_heads)?,
            LoraModule::K => bv = permute_rows_for_adjacent_rope(&bv, dout, rank, cfg.n_kv_heads)?,
            _ => {}
        }
    }
    Ok(LoraPair {
        a: av,
        b: bv,
        rank,
        in_features: din,
        out_features: dout,
        scaling: scaling as f32,
    })
}

fn shape_error(
    dir: &Path,
    t: &TensorRef,
    expect: &[usize; 2],
    module: LoraModule,
    din: usize,
    dout: usize,
) -> Error {
    Error::InvalidArgument(format!(
        "LoRA adapter {}: tensor {} has shape {:?} but the model needs {:?} ({} maps {din} -> {dout} features)",
        dir.display(),
        t.name,
        t.shape,
        expect,
        module.peft_name()
    ))
}

/// Converts an F32/F16/BF16 tensor to f32, refusing other types and non-finite values.
fn to_f32(file: &Path, t: &TensorRef) -> Result<Vec<f32>> {
    if !matches!(t.dtype, DType::F32 | DType::F16 | DType::BF16) {
        return Err(Error::Unsupported(format!(
            "{}: tensor {} is {}; LoRA factors must be F32, F16 or BF16",
            file.display(),
            t.name,
            t.dtype.name()
        )));
    }
    let mut out = vec![0f32; t.n_elements()];
    crate::quant::dequantize_row(t.dtype, t.bytes(), &mut out)?;
    if let Some(i) = out.iter().position(|v| !v.is_finite()) {
        return Err(Error::format(
            file,
            format!("tensor {} has a non-finite value at element {i}", t.name),
        ));
    }
    Ok(out)
}

/// FNV-1a over 32-bit words: the shape of every pair, its scaling and its factor values.
fn fingerprint(config: &AdapterConfig, layers: &[[Option<LoraPair>; 7]]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut word = |w: u32| h = (h ^ w as u64).wrapping_mul(PRIME);
    word(config.use_rslora as u32);
    word(layers.len() as u32);
    for (i, l) in layers.iter().enumerate() {
        for (m, p) in l.iter().enumerate() {
            let Some(p) = p else { continue };
            for v in [
                i as u32,
                m as u32,
                p.rank as u32,
                p.in_features as u32,
                p.out_features as u32,
                p.scaling.to_bits(),
            ] {
                word(v);
            }
            p.a.iter().chain(&p.b).for_each(|v| word(v.to_bits()));
        }
    }
    h
}
