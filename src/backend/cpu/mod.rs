//! The CPU backend: f32 activations, weights read from the mmap (or repacked at load for kernel
//! sets with packed kernels, `packed`), work split over the backend's own thread pool
//! ([`crate::ffi::pool::Pool`]). Matrix products quantize activations
//! to int8 and run the SIMD integer kernels (`matmul`); the KV cache is f16 (`kv`); attention
//! runs one task per (row, head) (`attention`). With `exact` set, products use f32 activations
//! and the KV cache f32: the reference arithmetic the other paths and backends are checked
//! against.

mod attention;
mod kv;
mod matmul;
mod ops;
mod packed;

use std::sync::Arc;

use super::{AttentionShape, AttnSeq, Backend, LoraUpdate};
use crate::error::{Error, Result};
use crate::ffi::pool::Pool;
use crate::ffi::simd::{self, KernelSet};
use crate::model::config::RopeStyle;
use crate::tensor::TensorRef;

pub use kv::{CpuKv, KvRows};
pub use matmul::CpuMatrix;
pub use ops::{gelu_tanh, rms_norm_row, rope_heads, rope_row, silu};

/// Element count from which element-wise ops are split over the pool (below it a step's
/// hand-out costs more than it saves).
const PARALLEL_MIN_ELEMS: usize = 1 << 15;

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

/// The CPU backend: a thread pool, the SIMD kernel set in use, and the arithmetic mode.
#[derive(Clone, Debug)]
pub struct CpuBackend {
    pool: Arc<Pool>,
    kernels: KernelSet,
    exact: bool,
}

impl CpuBackend {
    /// A backend running on `threads` threads (the caller included), with int8 activations and an
    /// f16 KV cache, or f32 for both when `exact`.
    pub fn new(threads: usize, exact: bool) -> Result<CpuBackend> {
        Self::with_kernels(threads, exact, simd::active())
    }

    /// As [`CpuBackend::new`] with the SIMD kernel set forced (unavailable sets fall back to the
    /// scalar reference op by op), for tests that compare the sets.
    pub fn with_kernels(threads: usize, exact: bool, kernels: KernelSet) -> Result<CpuBackend> {
        let pool = Pool::new(threads).map_err(|e| Error::Backend(format!("cannot start {threads} CPU threads: {e}")))?;
        Ok(CpuBackend { pool: Arc::new(pool), kernels, exact })
    }

    /// The SIMD kernel set in use.
    pub fn kernels(&self) -> KernelSet {
        self.kernels
    }

    /// Threads that run each op.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Runs `f` on chunks of `data`, over the pool when the data is large enough to pay for it.
    fn for_chunks<T: Send>(&self, data: &mut [T], chunk: usize, f: impl Fn(usize, &mut [T]) + Sync) {
        if data.len() >= PARALLEL_MIN_ELEMS {
            self.pool.chunks_mut(data, chunk, f);
        } else {
            data.chunks_mut(chunk.max(1)).enumerate().for_each(|(i, c)| f(i, c));
        }
    }
}

fn shape_err(op: &str, msg: String) -> Error {
    Error::Internal(format!("cpu {op}: {msg}"))
}

impl Backend for CpuBackend {
    type Matrix = CpuMatrix;
    type Vector = Vec<f32>;
    type Act = CpuAct;
    type Kv = CpuKv;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn matrix(&self, t: &TensorRef) -> Result<CpuMatrix> {
        if self.exact {
            return Ok(CpuMatrix::new(t));
        }
        CpuMatrix::packed_for(&self.pool, self.kernels, t)
    }

    fn embedding_table(&self, t: &TensorRef) -> Result<CpuMatrix> {
        // Rows are read one token at a time: no repacking, the mapped pages serve.
        Ok(CpuMatrix::new(t))
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

    fn take_to_host(&self, x: CpuAct) -> Result<Vec<f32>> {
        Ok(x.data)
    }

    fn gather_rows(&self, x: &CpuAct, rows: &[usize], out: &mut CpuAct) -> Result<()> {
        if out.rows != rows.len() || out.cols != x.cols || rows.iter().any(|&r| r >= x.rows) {
            return Err(shape_err("gather_rows", format!("rows {rows:?} of {}x{} into {}x{}", x.rows, x.cols, out.rows, out.cols)));
        }
        for (o, &r) in out.data.chunks_exact_mut(x.cols.max(1)).zip(rows) {
            o.copy_from_slice(x.row(r));
        }
        Ok(())
    }

    fn kv(&self, n_layers: usize, kv_dim: usize, n_slots: usize) -> Result<CpuKv> {
        CpuKv::new(n_layers, kv_dim, n_slots, self.exact)
    }

    fn kv_element_bytes(&self, kv: &CpuKv) -> usize {
        kv.k.first().map_or(2, KvRows::value_bytes)
    }

    fn kv_read(&self, kv: &CpuKv, slots: std::ops::Range<usize>) -> Result<Vec<u8>> {
        if slots.end > kv.n_slots || slots.start > slots.end {
            return Err(shape_err("kv_read", format!("slots {slots:?} of {}", kv.n_slots)));
        }
        let d = kv.kv_dim;
        let mut out = Vec::new();
        for (k, v) in kv.k.iter().zip(&kv.v) {
            out.extend_from_slice(k.bytes(slots.start * d..slots.end * d));
            out.extend_from_slice(v.bytes(slots.start * d..slots.end * d));
        }
        Ok(out)
    }

    fn kv_write(&self, kv: &mut CpuKv, slots: std::ops::Range<usize>, bytes: &[u8]) -> Result<()> {
        let d = kv.kv_dim;
        let per = slots.len() * d * self.kv_element_bytes(kv);
        if slots.end > kv.n_slots || slots.start > slots.end || bytes.len() != per * 2 * kv.k.len() {
            return Err(shape_err("kv_write", format!("{} bytes into slots {slots:?} of {}", bytes.len(), kv.n_slots)));
        }
        let mut chunks = bytes.chunks_exact(per.max(1));
        for (k, v) in kv.k.iter_mut().zip(kv.v.iter_mut()) {
            for rows in [k, v] {
                rows.set_bytes(slots.start * d..slots.end * d, chunks.next().unwrap_or(&[]));
            }
        }
        Ok(())
    }

    fn embed(&self, table: &CpuMatrix, ids: &[u32], scale: Option<f32>, out: &mut CpuAct) -> Result<()> {
        let table = &table.tensor;
        if out.rows != ids.len() || out.cols != table.row_len() {
            return Err(shape_err("embed", format!("{} ids into {}x{}", ids.len(), out.rows, out.cols)));
        }
        let n_rows = table.n_rows();
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= n_rows) {
            return Err(Error::InvalidArgument(format!("token id {id} is outside the vocabulary of {n_rows}")));
        }
        for (o, &id) in out.data.chunks_mut(out.cols.max(1)).zip(ids) {
            crate::quant::dequantize_row(table.dtype, table.row(id as usize), o)?;
            if let Some(s) = scale {
                o.iter_mut().for_each(|v| *v *= s);
            }
        }
        Ok(())
    }

    fn rms_norm(&self, x: &CpuAct, w: &Vec<f32>, eps: f32, out: &mut CpuAct) -> Result<()> {
        if out.rows != x.rows || out.cols != x.cols {
            return Err(shape_err("rms_norm", "output shape differs".into()));
        }
        out.data.copy_from_slice(&x.data);
        self.rms_norm_inplace(out, w, eps)
    }

    fn rms_norm_inplace(&self, x: &mut CpuAct, w: &Vec<f32>, eps: f32) -> Result<()> {
        if w.is_empty() || !x.cols.is_multiple_of(w.len()) {
            return Err(shape_err("rms_norm", format!("weight of {} for rows of {}", w.len(), x.cols)));
        }
        self.for_chunks(&mut x.data, w.len(), |_, seg| rms_norm_row(seg, w, eps));
        Ok(())
    }

    fn matmul(&self, x: &CpuAct, w: &CpuMatrix, out: &mut CpuAct) -> Result<()> {
        let (rows, cols) = (w.tensor.n_rows(), w.tensor.row_len());
        if x.cols != cols || out.cols != rows || out.rows != x.rows {
            return Err(shape_err(
                "matmul",
                format!("{}x{} · {}ᵀ [{rows}x{cols}] into {}x{}", x.rows, x.cols, w.tensor.name, out.rows, out.cols),
            ));
        }
        matmul::matmul(&self.pool, self.kernels, self.exact, &x.data, x.rows, w, &mut out.data);
        Ok(())
    }

    fn matmul_many(&self, x: &CpuAct, ws: &[&CpuMatrix], outs: &mut [&mut CpuAct]) -> Result<()> {
        let fused: Option<Vec<_>> = ws.iter().map(|w| w.int8.map(|f| (f, *w))).collect();
        match fused {
            Some(fw) if x.rows == 1 && !self.exact && ws.len() == outs.len() => {
                for (w, o) in ws.iter().zip(outs.iter()) {
                    if w.tensor.row_len() != x.cols || o.rows != 1 || o.cols != w.tensor.n_rows() {
                        return Err(shape_err("matmul_many", format!("1x{} · {}ᵀ into {}x{}", x.cols, w.tensor.name, o.rows, o.cols)));
                    }
                }
                let mut slices: Vec<&mut [f32]> = outs.iter_mut().map(|o| o.data.as_mut_slice()).collect();
                matmul::matmul_many_int8(&self.pool, self.kernels, &x.data, &fw, &mut slices);
                Ok(())
            }
            _ => {
                for (w, o) in ws.iter().zip(outs.iter_mut()) {
                    self.matmul(x, w, o)?;
                }
                Ok(())
            }
        }
    }

    fn lora_add(&self, x: &CpuAct, rows: std::ops::Range<usize>, u: LoraUpdate<'_, Vec<f32>>, out: &mut CpuAct) -> Result<()> {
        let LoraUpdate { a, b, rank, factor } = u;
        let (cin, cout) = (x.cols, out.cols);
        if rows.end > x.rows || x.rows != out.rows || a.len() != rank * cin || b.len() != cout * rank || rank == 0 {
            return Err(shape_err("lora_add", format!("rows {rows:?} of {}x{cin} -> {}x{cout}, rank {rank}", x.rows, out.rows)));
        }
        let r0 = rows.start;
        let x = &x.data;
        let k = self.kernels;
        self.pool.chunks_mut(&mut out.data[rows.start * cout..rows.end * cout], cout, |i, o| {
            let xr = &x[(r0 + i) * cin..(r0 + i + 1) * cin];
            let mut t = [0f32; 64];
            let mut big = Vec::new();
            let t: &mut [f32] = if rank <= 64 {
                &mut t[..rank]
            } else {
                big.resize(rank, 0.0);
                &mut big
            };
            for (j, tj) in t.iter_mut().enumerate() {
                *tj = factor * simd::float::dot_f32(k, xr, &a[j * cin..(j + 1) * cin]);
            }
            for (ov, brow) in o.iter_mut().zip(b.chunks_exact(rank)) {
                *ov += simd::float::dot_f32(k, t, brow);
            }
        });
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
        if positions.len() != x.rows || head_dim == 0 || !x.cols.is_multiple_of(head_dim) || inv_freq.len() * 2 > head_dim {
            return Err(shape_err("rope", format!("{} positions, head {head_dim}, rows {}x{}", positions.len(), x.rows, x.cols)));
        }
        let cols = x.cols;
        self.for_chunks(&mut x.data, cols, |i, row| {
            rope_heads(row, head_dim, positions[i], inv_freq, style);
        });
        Ok(())
    }

    fn kv_store(&self, kv: &mut CpuKv, layer: usize, slots: &[usize], k: &CpuAct, v: &CpuAct) -> Result<()> {
        if layer >= kv.k.len() || k.cols != kv.kv_dim || v.cols != kv.kv_dim || k.rows != slots.len() || v.rows != slots.len() {
            return Err(shape_err("kv_store", format!("layer {layer}, k {}x{}, kv_dim {}", k.rows, k.cols, kv.kv_dim)));
        }
        let d = kv.kv_dim;
        if let Some(&p) = slots.iter().find(|&&p| p >= kv.n_slots) {
            return Err(shape_err("kv_store", format!("slot {p} of {}", kv.n_slots)));
        }
        for (store, src) in [(&mut kv.k[layer], k), (&mut kv.v[layer], v)] {
            for (i, &p) in slots.iter().enumerate() {
                match store {
                    KvRows::F32(s) => s[p * d..(p + 1) * d].copy_from_slice(src.row(i)),
                    KvRows::F16(s) => simd::float::f32_to_f16(self.kernels, src.row(i), &mut s[p * d..(p + 1) * d]),
                }
            }
        }
        Ok(())
    }

    fn attention(&self, q: &CpuAct, kv: &CpuKv, layer: usize, seqs: &[AttnSeq<'_>], s: AttentionShape, out: &mut CpuAct) -> Result<()> {
        let qd = s.n_heads * s.head_dim;
        if q.cols != qd || out.cols != qd || out.rows != q.rows || layer >= kv.k.len() || s.n_kv_heads * s.head_dim != kv.kv_dim {
            return Err(shape_err("attention", format!("q {}x{}, heads {}x{}", q.rows, q.cols, s.n_heads, s.head_dim)));
        }
        for sq in seqs {
            let last = sq.pos0 + sq.rows.len();
            if sq.rows.end > q.rows || sq.rows.is_empty() || sq.blocks.len() * crate::kv_cache::BLOCK_TOKENS < last {
                return Err(shape_err("attention", format!("rows {:?} at {} over {} blocks", sq.rows, sq.pos0, sq.blocks.len())));
            }
            if sq.blocks.iter().any(|&b| (b as usize + 1) * crate::kv_cache::BLOCK_TOKENS > kv.n_slots) {
                return Err(shape_err("attention", "a block index is outside the cache".into()));
            }
        }
        attention::attention(&self.pool, self.kernels, &q.data, kv.layer(layer), seqs, s, &mut out.data);
        Ok(())
    }

    fn gated_activation(&self, gate: &mut CpuAct, up: &CpuAct, gelu: bool) -> Result<()> {
        if gate.rows != up.rows || gate.cols != up.cols {
            return Err(shape_err("gated_activation", "shapes differ".into()));
        }
        // Two loops rather than a function pointer, so each inlines and vectorizes.
        let up = &up.data;
        if gelu {
            self.for_chunks(&mut gate.data, 4096, |c, g| g.iter_mut().zip(&up[c * 4096..]).for_each(|(g, u)| *g = gelu_tanh(*g) * u));
        } else {
            self.for_chunks(&mut gate.data, 4096, |c, g| g.iter_mut().zip(&up[c * 4096..]).for_each(|(g, u)| *g = silu(*g) * u));
        }
        Ok(())
    }

    fn softcap(&self, x: &mut CpuAct, cap: f32) -> Result<()> {
        x.data.iter_mut().for_each(|v| *v = (*v / cap).tanh() * cap);
        Ok(())
    }
}
