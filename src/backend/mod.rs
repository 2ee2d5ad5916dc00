//! The op set a transformer needs, as a trait; `cpu` implements it (and is the reference),
//! `cuda` will. Buffers belong to the backend: model code only holds the associated types and
//! never sees device pointers, so one forward pass serves every backend.

pub mod cpu;
#[cfg(feature = "cuda")] pub mod cuda;

use std::ops::Range;

use crate::error::Result;
use crate::model::config::RopeStyle;
use crate::tensor::TensorRef;

/// Shape of an attention call shared by all of its heads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionShape {
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Width of a head.
    pub head_dim: usize,
    /// Multiplier of the query-key dot products.
    pub scale: f32,
    /// Tokens a query may look back, itself included (`None`: the whole prefix).
    pub window: Option<usize>,
    /// Soft cap of the scores, if any.
    pub softcap: Option<f32>,
}

/// One sequence's share of a batched attention call.
#[derive(Clone, Debug)]
pub struct AttnSeq<'a> {
    /// Its query rows in the call's `q` and `out` (consecutive positions).
    pub rows: Range<usize>,
    /// Position of the first of those rows.
    pub pos0: usize,
    /// Its KV block table, covering every position up to its last row's
    /// (see [`crate::kv_cache::slot`]).
    pub blocks: &'a [u32],
    /// Prompt rows (prefill path) rather than generated ones (decode path). A backend computes a
    /// row the same way whatever else shares the call, and picks the path by this flag alone, so
    /// a sequence's results do not depend on batching or on how its prompt was chunked.
    pub prompt: bool,
}

/// One LoRA update of a projection: `factor * B (A x)`.
#[derive(Clone, Copy, Debug)]
pub struct LoraUpdate<'a, V> {
    /// `A`, row-major `rank x in`.
    pub a: &'a V,
    /// `B`, row-major `out x rank`.
    pub b: &'a V,
    /// Rank.
    pub rank: usize,
    /// Multiplier (request scale times the adapter's scaling).
    pub factor: f32,
}

/// Compute backend: owns weights, activations and KV storage, and runs the ops on them.
pub trait Backend: Send + Sync {
    /// A weight matrix `[rows, cols]` in its stored (possibly quantized) format.
    type Matrix: Send + Sync;
    /// A small f32 vector (norm weights, biases, RoPE frequencies).
    type Vector: Send + Sync;
    /// An f32 activation buffer of `rows x cols`.
    type Act: Send;
    /// Paged key/value storage shared by all sequences, all layers.
    type Kv: Send;

    /// Backend name for logs and `ModelInfo`.
    fn name(&self) -> &'static str;
    /// Makes a weight matrix from a tensor view (the CPU keeps the mmap or repacks it; CUDA uploads).
    fn matrix(&self, t: &TensorRef) -> Result<Self::Matrix>;
    /// Makes the token-embedding table, read a row per token by [`Backend::embed`] (a backend may
    /// keep it as stored where [`Backend::matrix`] would transform it for products).
    fn embedding_table(&self, t: &TensorRef) -> Result<Self::Matrix> {
        self.matrix(t)
    }
    /// Makes a vector from host values.
    fn vector(&self, v: &[f32]) -> Result<Self::Vector>;
    /// A zeroed activation buffer.
    fn act(&self, rows: usize, cols: usize) -> Result<Self::Act>;
    /// Copies one row of an activation buffer back to the host.
    fn read_row(&self, x: &Self::Act, row: usize) -> Result<Vec<f32>>;
    /// Copies all rows back to the host, row-major.
    fn read_all(&self, x: &Self::Act) -> Result<Vec<f32>>;
    /// Moves all rows to the host, row-major (no copy where the buffer already is host memory).
    fn take_to_host(&self, x: Self::Act) -> Result<Vec<f32>> {
        self.read_all(&x)
    }
    /// Copies rows `rows` of `x`, in that order, into `out` (`rows.len()` rows).
    fn gather_rows(&self, x: &Self::Act, rows: &[usize], out: &mut Self::Act) -> Result<()>;
    /// Zeroed paged KV storage of `n_slots` rows (blocks times
    /// [`crate::kv_cache::BLOCK_TOKENS`]) of `kv_dim`-wide keys and values for `n_layers` layers.
    fn kv(&self, n_layers: usize, kv_dim: usize, n_slots: usize) -> Result<Self::Kv>;
    /// Bytes of one stored key or value element (2 for f16).
    fn kv_element_bytes(&self, kv: &Self::Kv) -> usize;
    /// The raw bytes of rows `slots` of every layer, keys then values layer by layer (for saving
    /// the prefix cache).
    fn kv_read(&self, kv: &Self::Kv, slots: Range<usize>) -> Result<Vec<u8>>;
    /// Writes bytes laid out as [`Backend::kv_read`] returns them into rows `slots`.
    fn kv_write(&self, kv: &mut Self::Kv, slots: Range<usize>, bytes: &[u8]) -> Result<()>;

    /// `out[i] = table[ids[i]] * scale` (rows of the embedding table, dequantized).
    fn embed(&self, table: &Self::Matrix, ids: &[u32], scale: Option<f32>, out: &mut Self::Act) -> Result<()>;
    /// RMSNorm of every `w.len()`-wide segment of `x` (a row, or one head of a row), times `w`.
    fn rms_norm(&self, x: &Self::Act, w: &Self::Vector, eps: f32, out: &mut Self::Act) -> Result<()>;
    /// In-place variant of [`Backend::rms_norm`].
    fn rms_norm_inplace(&self, x: &mut Self::Act, w: &Self::Vector, eps: f32) -> Result<()>;
    /// `out = x · wᵀ` for `x: [n, cols]`, `w: [rows, cols]`, `out: [n, rows]`, f32 accumulation.
    fn matmul(&self, x: &Self::Act, w: &Self::Matrix, out: &mut Self::Act) -> Result<()>;
    /// `outs[i] = x · ws[i]ᵀ` for several matrices sharing one input (Q, K and V; gate and up),
    /// which a backend may run as one step.
    fn matmul_many(&self, x: &Self::Act, ws: &[&Self::Matrix], outs: &mut [&mut Self::Act]) -> Result<()> {
        for (w, o) in ws.iter().zip(outs.iter_mut()) {
            self.matmul(x, w, o)?;
        }
        Ok(())
    }
    /// `out[r] += u.factor * B (A x[r])` for every row `r` in `rows`: a LoRA update.
    fn lora_add(&self, x: &Self::Act, rows: Range<usize>, u: LoraUpdate<'_, Self::Vector>, out: &mut Self::Act) -> Result<()>;
    /// Adds `b` to every row of `x`.
    fn add_bias(&self, x: &mut Self::Act, b: &Self::Vector) -> Result<()>;
    /// `x += y` elementwise.
    fn add(&self, x: &mut Self::Act, y: &Self::Act) -> Result<()>;
    /// Rotates every `head_dim`-wide head of row `i` of `x` by position `positions[i]`.
    fn rope(&self, x: &mut Self::Act, positions: &[usize], inv_freq: &Self::Vector, head_dim: usize, style: RopeStyle) -> Result<()>;
    /// Stores row `i` of `k` and `v` in row `slots[i]` of `layer`.
    fn kv_store(&self, kv: &mut Self::Kv, layer: usize, slots: &[usize], k: &Self::Act, v: &Self::Act) -> Result<()>;
    /// Causal attention of every sequence's query rows over its keys and values in `layer`.
    fn attention(
        &self,
        q: &Self::Act,
        kv: &Self::Kv,
        layer: usize,
        seqs: &[AttnSeq<'_>],
        shape: AttentionShape,
        out: &mut Self::Act,
    ) -> Result<()>;
    /// `gate = act(gate) * up`, with GELU-tanh when `gelu`, else SiLU.
    fn gated_activation(&self, gate: &mut Self::Act, up: &Self::Act, gelu: bool) -> Result<()>;
    /// `x = tanh(x / cap) * cap` elementwise.
    fn softcap(&self, x: &mut Self::Act, cap: f32) -> Result<()>;
}
