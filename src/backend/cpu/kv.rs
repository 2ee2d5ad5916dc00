//! Keys and values of every sequence on the CPU: per layer, one paged store of `n_slots` rows of
//! `kv_dim` values, where slot `b * BLOCK_TOKENS + i` is position `i` of KV block `b`
//! (`crate::kv_cache` decides which sequence owns which block). f16 by default (half the bytes
//! attention reads per token; f16 keeps 11 significant bits, far finer than the int8
//! activations), f32 on the exact path. The stores are anonymous zero pages mapped at creation,
//! so the resident set grows only with the blocks actually written.

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

use crate::error::{Error, Result};

/// A zero-initialised, lazily backed array of `T`.
pub struct KvBuf<T> {
    map: memmap2::MmapMut,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: bytemuck::Pod> KvBuf<T> {
    fn zeroed(len: usize) -> Result<KvBuf<T>> {
        let bytes = len.checked_mul(size_of::<T>()).ok_or_else(|| Error::OutOfMemory("KV cache size overflows".into()))?;
        let map = memmap2::MmapOptions::new()
            .len(bytes.max(1))
            .map_anon()
            .map_err(|e| Error::OutOfMemory(format!("KV cache of {bytes} bytes: {e}")))?;
        Ok(KvBuf { map, len, _t: PhantomData })
    }
}

impl<T: bytemuck::Pod> Deref for KvBuf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        bytemuck::cast_slice(&self.map[..self.len * size_of::<T>()])
    }
}

impl<T: bytemuck::Pod> DerefMut for KvBuf<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        bytemuck::cast_slice_mut(&mut self.map[..self.len * size_of::<T>()])
    }
}

impl<T> std::fmt::Debug for KvBuf<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KvBuf({} values)", self.len)
    }
}

/// One layer's keys or values.
#[derive(Debug)]
pub enum KvRows {
    /// f32 values.
    F32(KvBuf<f32>),
    /// IEEE half bits.
    F16(KvBuf<u16>),
}

impl KvRows {
    fn zeroed(len: usize, f32: bool) -> Result<KvRows> {
        Ok(if f32 { KvRows::F32(KvBuf::zeroed(len)?) } else { KvRows::F16(KvBuf::zeroed(len)?) })
    }

    /// Bytes of one value.
    pub fn value_bytes(&self) -> usize {
        match self {
            KvRows::F32(_) => 4,
            KvRows::F16(_) => 2,
        }
    }

    /// The raw bytes of values `range`.
    pub fn bytes(&self, range: std::ops::Range<usize>) -> &[u8] {
        match self {
            KvRows::F32(v) => bytemuck::cast_slice(&v[range]),
            KvRows::F16(v) => bytemuck::cast_slice(&v[range]),
        }
    }

    /// Overwrites values `range` with raw bytes (`src` exactly that many values long).
    pub fn set_bytes(&mut self, range: std::ops::Range<usize>, src: &[u8]) {
        match self {
            KvRows::F32(v) => bytemuck::cast_slice_mut(&mut v[range]).copy_from_slice(src),
            KvRows::F16(v) => bytemuck::cast_slice_mut(&mut v[range]).copy_from_slice(src),
        }
    }
}

/// Keys and values of all sequences, all layers.
#[derive(Debug)]
pub struct CpuKv {
    /// Width of one position's keys (and values) in one layer.
    pub kv_dim: usize,
    /// Rows per layer (blocks times positions per block).
    pub n_slots: usize,
    /// Keys per layer.
    pub k: Vec<KvRows>,
    /// Values per layer.
    pub v: Vec<KvRows>,
}

impl CpuKv {
    /// Zeroed storage of `n_slots` rows for `n_layers` layers, f16 unless `f32`.
    pub fn new(n_layers: usize, kv_dim: usize, n_slots: usize, f32: bool) -> Result<CpuKv> {
        let len = n_slots.checked_mul(kv_dim).ok_or_else(|| Error::OutOfMemory("KV cache size overflows".into()))?;
        let mut k = Vec::with_capacity(n_layers);
        let mut v = Vec::with_capacity(n_layers);
        for _ in 0..n_layers {
            k.push(KvRows::zeroed(len, f32)?);
            v.push(KvRows::zeroed(len, f32)?);
        }
        Ok(CpuKv { kv_dim, n_slots, k, v })
    }

    /// The keys and values of `layer`.
    pub fn layer(&self, layer: usize) -> LayerKv<'_> {
        LayerKv { keys: &self.k[layer], values: &self.v[layer], kv_dim: self.kv_dim }
    }
}

/// One layer's keys and values, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct LayerKv<'a> {
    /// Keys, one `kv_dim` row per slot.
    pub keys: &'a KvRows,
    /// Values, one `kv_dim` row per slot.
    pub values: &'a KvRows,
    /// Width of a row.
    pub kv_dim: usize,
}
