//! Models: hyperparameters (`config`), tensor names (`names`), weights on a backend (`weights`)
//! and the forward pass (`forward`). A [`Model`] is opened from a GGUF file or a Hugging Face
//! directory and runs on any [`Backend`].

pub mod adapters;
pub mod config;
pub mod forward;
pub mod names;
pub mod weights;

use std::path::{Path, PathBuf};

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::loader::gguf::GgufFile;
use crate::loader::metadata::Metadata;
use crate::tensor::WeightMap;

pub use config::{Arch, ModelConfig};
pub use forward::{LogitRows, SeqInput};
use weights::ModelWeights;

/// Where a model's weights and vocabulary come from.
pub enum ModelSource {
    /// A GGUF file (weights, hyperparameters, vocabulary and template in one).
    Gguf(GgufFile),
    /// A Hugging Face directory: parsed config.json and the safetensors weights (canonical names).
    HfDir {
        /// The directory.
        dir: PathBuf,
        /// Parsed `config.json`.
        config: serde_json::Value,
        /// Weights renamed to canonical names.
        weights: WeightMap,
    },
}

impl ModelSource {
    /// The GGUF metadata, when the model is a GGUF file.
    pub fn gguf_metadata(&self) -> Option<&Metadata> {
        match self {
            ModelSource::Gguf(g) => Some(&g.metadata),
            ModelSource::HfDir { .. } => None,
        }
    }

    /// The path the model was opened from.
    pub fn path(&self) -> &Path {
        match self {
            ModelSource::Gguf(g) => &g.path,
            ModelSource::HfDir { dir, .. } => dir,
        }
    }
}

/// Opens a GGUF file or a Hugging Face directory and reads its hyperparameters.
pub fn open_source(path: &Path) -> Result<(ModelSource, ModelConfig)> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        let cfg_path = path.join("config.json");
        let text = std::fs::read(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        let json: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| Error::format(&cfg_path, format!("invalid JSON: {e}")))?;
        let cfg = ModelConfig::from_hf(&json, &cfg_path)?;
        let raw = crate::loader::safetensors::SafetensorsModel::open_dir(path)?.weights;
        let mut weights = WeightMap::new(path);
        for t in raw.iter() {
            if let Some(name) = names::canonical_from_hf(&t.name, cfg.arch) {
                let mut t = t.clone();
                t.name = name;
                weights.insert(t)?;
            }
        }
        Ok((ModelSource::HfDir { dir: path.to_path_buf(), config: json, weights }, cfg))
    } else {
        let g = GgufFile::open(path)?;
        let cfg = ModelConfig::from_gguf(&g.metadata, path)?;
        Ok((ModelSource::Gguf(g), cfg))
    }
}

/// A model's configuration and weights placed on a backend, ready to run.
pub struct Model<B: Backend> {
    /// Hyperparameters.
    pub config: ModelConfig,
    /// The backend running it.
    pub backend: B,
    weights: ModelWeights<B>,
}

impl<B: Backend> Model<B> {
    /// Places the weights of `source` on `backend`.
    pub fn load(backend: B, source: &ModelSource, config: ModelConfig) -> Result<Model<B>> {
        let map = match source {
            ModelSource::Gguf(g) => &g.weights,
            ModelSource::HfDir { weights, .. } => weights,
        };
        let weights = ModelWeights::load(&backend, &config, map, source.path())?;
        Ok(Model { config, backend, weights })
    }

    /// Zeroed paged KV storage of `n_blocks` blocks for this model.
    pub fn new_kv(&self, n_blocks: usize) -> Result<B::Kv> {
        self.backend.kv(self.config.n_layers, self.config.kv_dim(), n_blocks * crate::kv_cache::BLOCK_TOKENS)
    }

    /// Runs a batch of sequences (see [`forward::forward`]), checking their token ids first.
    pub fn forward(&self, kv: &mut B::Kv, seqs: &[SeqInput<'_>]) -> Result<Vec<Vec<Vec<f32>>>>
    where
        B: 'static,
    {
        for s in seqs {
            if let Some(&bad) = s.ids.iter().find(|&&id| id as usize >= self.config.vocab) {
                return Err(Error::InvalidArgument(format!("token id {bad} is outside the vocabulary of {}", self.config.vocab)));
            }
        }
        forward::forward(&self.backend, &self.config, &self.weights, kv, seqs)
    }

    /// Bytes of weight data and number of parameters.
    pub fn weight_stats(&self) -> (u64, u64) {
        (self.weights.bytes, self.weights.params)
    }
}
