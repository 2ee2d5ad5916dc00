//! Backend-erased model handle: the runtime drives batches through this trait and never names a
//! backend type, so adding the CUDA backend touches only `create`.

use std::any::Any;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use super::scheduler::lock;
use crate::backend::Backend;
use crate::error::Result;
use crate::lora::LoraAdapter;
use crate::model::adapters::BackendLora;
use crate::model::{Model, ModelConfig, SeqInput};

/// A loaded model on some backend, with the paged KV storage all its sequences share.
pub(crate) trait Engine: Send + Sync {
    /// Hyperparameters of the model.
    fn config(&self) -> &ModelConfig;
    /// Backend name.
    fn backend_name(&self) -> &'static str;
    /// Runs one batched forward pass (see [`crate::model::forward::forward`]).
    fn forward(&self, seqs: &[SeqInput<'_>]) -> Result<Vec<Vec<Vec<f32>>>>;
    /// Bytes of one stored key or value element.
    fn kv_element_bytes(&self) -> usize;
    /// Raw keys and values of KV rows `slots`, all layers.
    fn kv_read(&self, slots: Range<usize>) -> Result<Vec<u8>>;
    /// Writes rows read by [`Engine::kv_read`] back into rows `slots`.
    fn kv_write(&self, slots: Range<usize>, bytes: &[u8]) -> Result<()>;
    /// Places a LoRA adapter on the backend, for [`crate::model::adapters::LoraRef`]s.
    fn place_lora(&self, adapter: &LoraAdapter) -> Result<Arc<dyn Any + Send + Sync>>;
}

/// A model and its KV storage (one pass at a time uses it).
pub(crate) struct ModelEngine<B: Backend> {
    model: Model<B>,
    kv: Mutex<B::Kv>,
}

impl<B: Backend> ModelEngine<B> {
    /// Pairs `model` with zeroed KV storage of `n_blocks` blocks.
    pub fn new(model: Model<B>, n_blocks: usize) -> Result<ModelEngine<B>> {
        let kv = model.new_kv(n_blocks)?;
        Ok(ModelEngine { model, kv: Mutex::new(kv) })
    }
}

impl<B: Backend + 'static> Engine for ModelEngine<B> {
    fn config(&self) -> &ModelConfig {
        &self.model.config
    }

    fn backend_name(&self) -> &'static str {
        self.model.backend.name()
    }

    fn forward(&self, seqs: &[SeqInput<'_>]) -> Result<Vec<Vec<Vec<f32>>>> {
        self.model.forward(&mut lock(&self.kv), seqs)
    }

    fn kv_element_bytes(&self) -> usize {
        self.model.backend.kv_element_bytes(&lock(&self.kv))
    }

    fn kv_read(&self, slots: Range<usize>) -> Result<Vec<u8>> {
        self.model.backend.kv_read(&lock(&self.kv), slots)
    }

    fn kv_write(&self, slots: Range<usize>, bytes: &[u8]) -> Result<()> {
        self.model.backend.kv_write(&mut lock(&self.kv), slots, bytes)
    }

    fn place_lora(&self, adapter: &LoraAdapter) -> Result<Arc<dyn Any + Send + Sync>> {
        Ok(Arc::new(BackendLora::place(&self.model.backend, adapter, self.model.config.n_layers)?))
    }
}
