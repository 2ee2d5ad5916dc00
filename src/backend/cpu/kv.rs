//! Keys and values of one sequence on the CPU: per layer, one row of `kv_dim` values per
//! position, grown as positions are stored. f16 by default (half the bytes attention reads per
//! token; f16 keeps 11 significant bits, far finer than the int8 activations), f32 on the
//! exact path.

use crate::error::{Error, Result};

/// One layer's keys or values.
#[derive(Debug)]
pub enum KvRows {
    /// f32 values.
    F32(Vec<f32>),
    /// IEEE half bits.
    F16(Vec<u16>),
}

impl KvRows {
    fn len(&self) -> usize {
        match self {
            KvRows::F32(v) => v.len(),
            KvRows::F16(v) => v.len(),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            KvRows::F32(v) => v.capacity() * 4,
            KvRows::F16(v) => v.capacity() * 2,
        }
    }

    /// Makes room for `len` values (zero-filled), failing cleanly when memory runs out.
    pub fn grow_to(&mut self, len: usize) -> Result<()> {
        let have = self.len();
        if have >= len {
            return Ok(());
        }
        let oom = |_| Error::OutOfMemory(format!("KV cache of {len} values"));
        match self {
            KvRows::F32(v) => {
                v.try_reserve(len - have).map_err(oom)?;
                v.resize(len, 0.0);
            }
            KvRows::F16(v) => {
                v.try_reserve(len - have).map_err(oom)?;
                v.resize(len, 0);
            }
        }
        Ok(())
    }
}

/// Keys and values of one sequence, all layers.
#[derive(Debug)]
pub struct CpuKv {
    /// Width of one position's keys (and values) in one layer.
    pub kv_dim: usize,
    /// Positions it may hold.
    pub capacity: usize,
    /// Keys per layer.
    pub k: Vec<KvRows>,
    /// Values per layer.
    pub v: Vec<KvRows>,
}

impl CpuKv {
    /// Empty storage for `n_layers` layers, f16 unless `f32`.
    pub fn new(n_layers: usize, kv_dim: usize, capacity: usize, f32: bool) -> CpuKv {
        let empty = || if f32 { KvRows::F32(Vec::new()) } else { KvRows::F16(Vec::new()) };
        CpuKv { kv_dim, capacity, k: (0..n_layers).map(|_| empty()).collect(), v: (0..n_layers).map(|_| empty()).collect() }
    }

    /// Bytes currently held.
    pub fn bytes(&self) -> usize {
        self.k.iter().chain(&self.v).map(KvRows::bytes).sum()
    }

    /// The keys and values of `layer`.
    pub fn layer(&self, layer: usize) -> LayerKv<'_> {
        LayerKv { keys: &self.k[layer], values: &self.v[layer], kv_dim: self.kv_dim }
    }

    /// Positions stored in `layer` (the highest stored position + 1).
    pub fn stored(&self, layer: usize) -> usize {
        self.k[layer].len() / self.kv_dim.max(1)
    }
}

/// One layer's keys and values, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct LayerKv<'a> {
    /// Keys, one `kv_dim` row per position.
    pub keys: &'a KvRows,
    /// Values, one `kv_dim` row per position.
    pub values: &'a KvRows,
    /// Width of a row.
    pub kv_dim: usize,
}
