//! LoRA adapters placed on a backend and applied unmerged inside the forward pass: each
//! sequence of a batch may use its own adapter and scale (or none), and a row's update depends
//! only on that row, so requests with different adapters share every base-weight product.

use std::any::Any;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::lora::{LoraAdapter, LoraModule};

/// One adapted projection on a backend.
pub struct BackendPair<B: Backend> {
    /// `A`, `rank x in`.
    pub a: B::Vector,
    /// `B`, `out x rank`.
    pub b: B::Vector,
    /// Rank.
    pub rank: usize,
    /// PEFT's layer scaling at scale 1.
    pub scaling: f32,
}

/// An adapter's pairs on a backend, per layer and module.
pub struct BackendLora<B: Backend> {
    /// `layers[l][m]`: the pair of module `LoraModule::ALL[m]` in layer `l`, if adapted.
    pub layers: Vec<[Option<BackendPair<B>>; 7]>,
}

impl<B: Backend> BackendLora<B> {
    /// Copies `adapter`'s pairs onto `backend` for a model of `n_layers` layers.
    pub fn place(backend: &B, adapter: &LoraAdapter, n_layers: usize) -> Result<BackendLora<B>> {
        let mut layers: Vec<[Option<BackendPair<B>>; 7]> = (0..n_layers).map(|_| Default::default()).collect();
        for (l, m, p) in adapter.pairs() {
            let slot = layers
                .get_mut(l)
                .ok_or_else(|| Error::InvalidArgument(format!("the adapter adapts layer {l} of a {n_layers}-layer model")))?;
            slot[m.index()] = Some(BackendPair { a: backend.vector(&p.a)?, b: backend.vector(&p.b)?, rank: p.rank, scaling: p.scaling });
        }
        Ok(BackendLora { layers })
    }

    /// The pair of `module` in layer `layer`, if adapted.
    pub fn pair(&self, layer: usize, module: LoraModule) -> Option<&BackendPair<B>> {
        self.layers.get(layer).and_then(|l| l[module.index()].as_ref())
    }
}

/// A sequence's adapter in a forward call: the backend-placed adapter (type-erased so the
/// backend-free runtime can hold it) and the request's scale.
#[derive(Clone, Copy)]
pub struct LoraRef<'a> {
    /// A `BackendLora<B>` of the model's backend.
    pub adapter: &'a (dyn Any + Send + Sync),
    /// Multiplies PEFT's scaling (1 = the adapter as trained).
    pub scale: f32,
}

impl std::fmt::Debug for LoraRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LoraRef(scale {})", self.scale)
    }
}
