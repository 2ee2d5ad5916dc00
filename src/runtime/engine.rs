//! Backend-erased model handle: the runtime drives sequences through these two traits and never
//! names a backend type, so adding the CUDA backend touches only `create`.

use crate::backend::Backend;
use crate::error::Result;
use crate::model::{LogitRows, Model, ModelConfig};

/// A loaded model on some backend.
pub(crate) trait Engine: Send + Sync {
    /// Hyperparameters of the model.
    fn config(&self) -> &ModelConfig;
    /// Backend name.
    fn backend_name(&self) -> &'static str;
    /// Starts an empty sequence that can hold up to `capacity` tokens.
    fn new_sequence(&self, capacity: usize) -> Result<Box<dyn Sequence + '_>>;
}

/// One sequence's growing KV state.
pub(crate) trait Sequence: Send {
    /// Appends `ids` and returns the requested logits rows.
    fn feed(&mut self, ids: &[u32], rows: LogitRows) -> Result<Vec<Vec<f32>>>;
    /// Tokens held so far.
    fn len(&self) -> usize;
}

struct ModelSequence<'m, B: Backend> {
    model: &'m Model<B>,
    kv: B::Kv,
    len: usize,
}

impl<B: Backend> Sequence for ModelSequence<'_, B> {
    fn feed(&mut self, ids: &[u32], rows: LogitRows) -> Result<Vec<Vec<f32>>> {
        let out = self.model.forward(&mut self.kv, ids, self.len, rows)?;
        self.len += ids.len();
        Ok(out)
    }

    fn len(&self) -> usize {
        self.len
    }
}

impl<B: Backend + 'static> Engine for Model<B> {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    fn new_sequence(&self, capacity: usize) -> Result<Box<dyn Sequence + '_>> {
        Ok(Box::new(ModelSequence { model: self, kv: self.new_kv(capacity)?, len: 0 }))
    }
}
