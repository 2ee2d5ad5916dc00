//! The op set a transformer needs, as a trait; `cpu` implements it (and is the reference),
//! `cuda` will. Buffers belong to the backend: model code only holds the associated types and
//! never sees device pointers, so one forward pass serves every backend.

pub mod cpu;

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

/// Compute backend: owns weights, activations and KV storage, and runs the ops on them.
pub trait Backend: Send + Sync {
    /// A weight matrix `[rows, cols]` in its stored (possibly quantized) format.
    type Matrix: Send + Sync;
    /// A small f32 vector (norm weights, biases, RoPE frequencies).
    type Vector: Send + Sync;
    /// An f32 activation buffer of `rows x cols`.
    type Act: Send;
    /// Key/value storage of one sequence, all layers.
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
    /// Copies row `row` of `x` into the single-row buffer `out`.
    fn copy_row(&self, x: &Self::Act, row: usize, out: &mut Self::Act) -> Result<()>;
    /// KV storage for `n_layers` layers of `kv_dim`-wide keys and values, growing up to
    /// `capacity` tokens.
    fn kv(&self, n_layers: usize, kv_dim: usize, capacity: usize) -> Result<Self::Kv>;

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
    /// Adds `b` to every row of `x`.
    fn add_bias(&self, x: &mut Self::Act, b: &Self::Vector) -> Result<()>;
    /// `x += y` elementwise.
    fn add(&self, x: &mut Self::Act, y: &Self::Act) -> Result<()>;
    /// Rotates every `head_dim`-wide head of row `i` of `x` by position `positions[i]`.
    fn rope(&self, x: &mut Self::Act, positions: &[usize], inv_freq: &Self::Vector, head_dim: usize, style: RopeStyle) -> Result<()>;
    /// Stores rows of `k` and `v` at `positions` of `layer`.
    fn kv_store(&self, kv: &mut Self::Kv, layer: usize, positions: &[usize], k: &Self::Act, v: &Self::Act) -> Result<()>;
    /// Causal attention of query rows at `positions` over the keys and values stored in `layer`.
    fn attention(
        &self,
        q: &Self::Act,
        kv: &Self::Kv,
        layer: usize,
        positions: &[usize],
        shape: AttentionShape,
        out: &mut Self::Act,
    ) -> Result<()>;
    /// `gate = act(gate) * up`, with GELU-tanh when `gelu`, else SiLU.
    fn gated_activation(&self, gate: &mut Self::Act, up: &Self::Act, gelu: bool) -> Result<()>;
    /// `x = tanh(x / cap) * cap` elementwise.
    fn softcap(&self, x: &mut Self::Act, cap: f32) -> Result<()>;
}
