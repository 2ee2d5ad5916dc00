//! The CPU backend: f32 activations, weights read from the mmap and dequantized on the fly,
//! work split over a rayon pool owned by the runtime. It is the reference the other backends
//! are checked against, so every op is written for clarity first.

mod ops;

use rayon::prelude::*;

use super::{AttentionShape, Backend};
use crate::error::{Error, Result};
use crate::model::config::RopeStyle;
use crate::tensor::TensorRef;

pub use ops::{gelu_tanh, rms_norm_row, rope_row, silu};

/// Row-major f32 activations.
#[derive(Clone, Debug, Default)]
pub struct CpuAct {
    /// Number of rows (tokens).
    pub rows: usize,
    /// Width of a row.
    pub cols: usize,
    /// `rows * cols` values.
    pub data: Vec<f32>,
}

impl CpuAct {
    fn new(rows: usize, cols: usize) -> Result<CpuAct> {
        let n = rows.checked_mul(cols).ok_or_else(|| Error::OutOfMemory("activation size overflows".into()))?;
        let mut data = Vec::new();
        data.try_reserve_exact(n).map_err(|_| Error::OutOfMemory(format!("activation buffer of {n} floats")))?;
        data.resize(n, 0.0);
        Ok(CpuAct { rows, cols, data })
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }
}

/// Keys and values of one sequence: per layer, `len` rows of `kv_dim` floats each.
#[derive(Debug)]
pub struct CpuKv {
    kv_dim: usize,
    capacity: usize,
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl CpuKv {
    /// Bytes currently held.
    pub fn bytes(&self) -> usize {
        self.k.iter().chain(&self.v).map(|l| l.capacity() * 4).sum()
    }
}

/// The CPU backend.
#[derive(Debug, Default)]
pub struct CpuBackend;

fn shape_err(op: &str, msg: String) -> Error {
    Error::Internal(format!("cpu {op}: {msg}"))
}

impl Backend for CpuBackend {
    type Matrix = TensorRef;
    type Vector = Vec<f32>;
    type Act = CpuAct;
    type Kv = CpuKv;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn matrix(&self, t: &TensorRef) -> Result<TensorRef> {
        Ok(t.clone())
    }

    fn vector(&self, v: &[f32]) -> Result<Vec<f32>> {
        Ok(v.to_vec())
    }

    fn act(&self, rows: usize, cols: usize) -> Result<CpuAct> {
        CpuAct::new(rows, cols)
    }

    fn read_row(&self, x: &CpuAct, row: usize) -> Result<Vec<f32>> {
        if row >= x.rows {
            return Err(shape_err("read_row", format!("row {row} of {}", x.rows)));
        }
        Ok(x.row(row).to_vec())
    }

    fn read_all(&self, x: &CpuAct) -> Result<Vec<f32>> {
        Ok(x.data.clone())
    }

    fn copy_row(&self, x: &CpuAct, row: usize, out: &mut CpuAct) -> Result<()> {
        if row >= x.rows || out.rows != 1 || out.cols != x.cols {
            return Err(shape_err("copy_row", format!("row {row} of {}x{} into {}x{}", x.rows, x.cols, out.rows, out.cols)));
        }
        out.data.copy_from_slice(x.row(row));
        Ok(())
    }

    fn kv(&self, n_layers: usize, kv_dim: usize, capacity: usize) -> Result<CpuKv> {
        Ok(CpuKv { kv_dim, capacity, k: vec![Vec::new(); n_layers], v: vec![Vec::new(); n_layers] })
    }

    fn embed(&self, table: &TensorRef, ids: &[u32], scale: Option<f32>, out: &mut CpuAct) -> Result<()> {
        if out.rows != ids.len() || out.cols != table.row_len() {
            return Err(shape_err("embed", format!("{} ids into {}x{}", ids.len(), out.rows, out.cols)));
        }
        let n_rows = table.n_rows();
        out.data.par_chunks_mut(out.cols.max(1)).zip(ids.par_iter()).try_for_each(|(o, &id)| {
            if id as usize >= n_rows {
                return Err(Error::InvalidArgument(format!("token id {id} is outside the vocabulary of {n_rows}")));
            }
            crate::quant::dequantize_row(table.dtype, table.row(id as usize), o)?;
            if let Some(s) = scale {
                o.iter_mut().for_each(|v| *v *= s);
            }
            Ok(())
        })
    }

    fn rms_norm(&self, x: &CpuAct, w: &Vec<f32>, eps: f32, out: &mut CpuAct) -> Result<()> {
        if out.rows != x.rows || out.cols != x.cols {
            return Err(shape_err("rms_norm", "output shape differs".into()));
        }
        out.data.copy_from_slice(&x.data);
        self.rms_norm_inplace(out, w, eps)
    }

    fn rms_norm_inplace(&self, x: &mut CpuAct, w: &Vec<f32>, eps: f32) -> Result<()> {
        if w.is_empty() || x.cols % w.len() != 0 {
            return Err(shape_err("rms_norm", format!("weight of {} for rows of {}", w.len(), x.cols)));
        }
        x.data.par_chunks_mut(w.len()).for_each(|seg| rms_norm_row(seg, w, eps));
        Ok(())
    }

    fn matmul(&self, x: &CpuAct, w: &TensorRef, out: &mut CpuAct) -> Result<()> {
        let (rows, cols) = (w.n_rows(), w.row_len());
        if x.cols != cols || out.cols != rows || out.rows != x.rows {
            return Err(shape_err(
                "matmul",
                format!("{}x{} · {}ᵀ [{rows}x{cols}] into {}x{}", x.rows, x.cols, w.name, out.rows, out.cols),
            ));
        }
        ops::matmul(&x.data, x.rows, w, &mut out.data);
        Ok(())
    }

    fn add_bias(&self, x: &mut CpuAct, b: &Vec<f32>) -> Result<()> {
        if b.len() != x.cols {
            return Err(shape_err("add_bias", format!("bias of {} for rows of {}", b.len(), x.cols)));
        }
        x.data.chunks_exact_mut(b.len().max(1)).for_each(|r| r.iter_mut().zip(b).for_each(|(a, b)| *a += b));
        Ok(())
    }

    fn add(&self, x: &mut CpuAct, y: &CpuAct) -> Result<()> {
        if x.rows != y.rows || x.cols != y.cols {
            return Err(shape_err("add", "shapes differ".into()));
        }
        x.data.iter_mut().zip(&y.data).for_each(|(a, b)| *a += b);
        Ok(())
    }

    fn rope(&self, x: &mut CpuAct, positions: &[usize], inv_freq: &Vec<f32>, head_dim: usize, style: RopeStyle) -> Result<()> {
        if positions.len() != x.rows || head_dim == 0 || x.cols % head_dim != 0 || inv_freq.len() * 2 > head_dim {
            return Err(shape_err("rope", format!("{} positions, head {head_dim}, rows {}x{}", positions.len(), x.rows, x.cols)));
        }
        let cols = x.cols;
        x.data.par_chunks_mut(cols).zip(positions.par_iter()).for_each(|(row, &p)| {
            row.chunks_exact_mut(head_dim).for_each(|h| rope_row(h, p, inv_freq, style));
        });
        Ok(())
    }

    fn kv_store(&self, kv: &mut CpuKv, layer: usize, positions: &[usize], k: &CpuAct, v: &CpuAct) -> Result<()> {
        if layer >= kv.k.len() || k.cols != kv.kv_dim || v.cols != kv.kv_dim || k.rows != positions.len() || v.rows != positions.len() {
            return Err(shape_err("kv_store", format!("layer {layer}, k {}x{}, kv_dim {}", k.rows, k.cols, kv.kv_dim)));
        }
        let d = kv.kv_dim;
        for (i, &p) in positions.iter().enumerate() {
            if p >= kv.capacity {
                return Err(Error::ContextOverflow(format!("position {p} is beyond the context of {} tokens", kv.capacity)));
            }
            for (store, src) in [(&mut kv.k[layer], k), (&mut kv.v[layer], v)] {
                let need = (p + 1) * d;
                if store.len() < need {
                    store.try_reserve(need - store.len()).map_err(|_| Error::OutOfMemory("KV cache".into()))?;
                    store.resize(need, 0.0);
                }
                store[p * d..need].copy_from_slice(src.row(i));
            }
        }
        Ok(())
    }

    fn attention(&self, q: &CpuAct, kv: &CpuKv, layer: usize, positions: &[usize], s: AttentionShape, out: &mut CpuAct) -> Result<()> {
        let qd = s.n_heads * s.head_dim;
        if q.cols != qd || out.cols != qd || out.rows != q.rows || positions.len() != q.rows || layer >= kv.k.len() || s.n_kv_heads * s.head_dim != kv.kv_dim {
            return Err(shape_err("attention", format!("q {}x{}, heads {}x{}", q.rows, q.cols, s.n_heads, s.head_dim)));
        }
        let stored = kv.k[layer].len() / kv.kv_dim.max(1);
        if let Some(&p) = positions.iter().max() {
            if p >= stored {
                return Err(shape_err("attention", format!("position {p} has no stored key ({stored} stored)")));
            }
        }
        ops::attention(&q.data, &kv.k[layer], &kv.v[layer], kv.kv_dim, positions, s, &mut out.data);
        Ok(())
    }

    fn gated_activation(&self, gate: &mut CpuAct, up: &CpuAct, gelu: bool) -> Result<()> {
        if gate.rows != up.rows || gate.cols != up.cols {
            return Err(shape_err("gated_activation", "shapes differ".into()));
        }
        let f = if gelu { gelu_tanh } else { silu };
        gate.data.par_chunks_mut(4096).zip(up.data.par_chunks(4096)).for_each(|(g, u)| {
            g.iter_mut().zip(u).for_each(|(g, u)| *g = f(*g) * u);
        });
        Ok(())
    }

    fn softcap(&self, x: &mut CpuAct, cap: f32) -> Result<()> {
        x.data.iter_mut().for_each(|v| *v = (*v / cap).tanh() * cap);
        Ok(())
    }
}
