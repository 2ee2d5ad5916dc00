//! Matrix products of activations with weight matrices, the CPU backend's hot loop.
//!
//! Fast path (default): each activation row is quantized once to int8 in 32-element blocks and
//! multiplied with the weight blocks in integers by the SIMD kernels of `crate::ffi::simd`, as
//! llama.cpp does; decode (one row) splits the weight rows over the pool, prefill splits the
//! output into (tokens x weight rows) tiles so each unpacked weight block serves many tokens.
//! Exact path (`exact`, or weights without an int8 kernel: f32/f16/bf16, rows not a multiple of
//! 32): f32 activations times weights dequantized on the fly, the spine's reference arithmetic.

use std::cell::RefCell;
use std::ops::Range;
use std::sync::Arc;

use super::packed::PackedMatrix;
use crate::error::Result;
use crate::quant::packed::{self, GROUP_ROWS};

use crate::ffi::pool::{Pool, Split};
use crate::ffi::simd::{self, KernelSet};
use crate::quant::int8::{Q8Acts, WeightFormat, QK8};
use crate::quant::{dot_row, dot_rows_multi};
use crate::tensor::{DType, TensorRef};

/// Tokens per prefill tile: their int8 activations (a few tens of KB) stay in L1/L2 while a tile
/// of weight rows streams past them.
const TOKENS_PER_TILE: usize = 64;

/// Smallest number of weight rows one task takes: below this the hand-out cost (~0.1–0.5 µs)
/// stops being small next to the work (16 rows of 576 Q4_1 weights ≈ 6 KB).
const MIN_ROWS_PER_TASK: usize = 16;

/// Tasks per thread a matrix is cut into. One: each thread then streams one contiguous run of
/// weights, which the hardware prefetcher follows; with 4 tasks per thread decode was 6-10%
/// slower (SmolLM2 284 vs 310 t/s, Gemma 3 126 vs 134, 2 threads). Big matrices are still cut
/// by [`MAX_TASK_BYTES`], so a thread the OS delays leaves little of the LM head behind.
const TASKS_PER_THREAD: usize = 1;

thread_local! {
    /// Per-thread int8 activations, reused across products.
    static ACTS: RefCell<Q8Acts> = RefCell::new(Q8Acts::default());
    /// The calling thread's int8 activations of a prefill, one buffer per token tile.
    static TILE_ACTS: RefCell<Vec<Q8Acts>> = const { RefCell::new(Vec::new()) };
    /// Per-thread output of one gemm tile before it is copied into place.
    static OUT_TILE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Per-thread dequantized weight row (exact path).
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// A weight matrix of the CPU backend: the tensor (usually mmapped), its int8 kernel format, and
/// the packed copy the int8 kernels read instead of the tensor where the kernel set has one.
#[derive(Clone, Debug)]
pub struct CpuMatrix {
    /// The weights, `[rows, cols]`.
    pub tensor: TensorRef,
    /// The integer kernel format, when the int8 path can serve this matrix.
    pub int8: Option<WeightFormat>,
    /// The weights repacked for the kernels (`crate::quant::packed`), if they were.
    pub packed: Option<Arc<PackedMatrix>>,
}

impl CpuMatrix {
    /// Wraps a tensor, noting whether the integer kernels can serve it; nothing is repacked.
    pub fn new(t: &TensorRef) -> CpuMatrix {
        let int8 = match t.dtype {
            DType::Q4_0 => Some(WeightFormat::Q4_0),
            DType::Q4_1 => Some(WeightFormat::Q4_1),
            DType::Q5_0 => Some(WeightFormat::Q5_0),
            DType::Q5_1 => Some(WeightFormat::Q5_1),
            DType::Q8_0 => Some(WeightFormat::Q8_0),
            DType::Q4K => Some(WeightFormat::Q4K),
            DType::Q5K => Some(WeightFormat::Q5K),
            DType::Q6K => Some(WeightFormat::Q6K),
            DType::F32 | DType::F16 | DType::BF16 => None,
        };
        let int8 = int8.filter(|_| t.row_len().is_multiple_of(QK8));
        CpuMatrix { tensor: t.clone(), int8, packed: None }
    }

    /// As [`CpuMatrix::new`], repacking the weights (in place of their mapped pages) when
    /// kernel set `k` has kernels for the packed layout of their format.
    pub fn packed_for(pool: &Pool, k: KernelSet, t: &TensorRef) -> Result<CpuMatrix> {
        let mut m = CpuMatrix::new(t);
        if let Some(f) = m.int8.filter(|f| packed::packable(*f) && simd::has_packed_kernels(k, *f)) {
            m.packed = Some(Arc::new(PackedMatrix::pack(pool, f, t)?));
        }
        Ok(m)
    }

    /// Weight rows `rows` (starting at a multiple of 16) times every token of `xs` into
    /// `out[t * ldo + r - rows.start]`, through the packed kernels or the row kernels (`f` is
    /// `self.int8`).
    fn int8_product(&self, k: KernelSet, f: WeightFormat, rows: Range<usize>, xs: &Q8Acts, out: &mut [f32], ldo: usize) {
        let (r0, r1) = (rows.start, rows.end);
        match &self.packed {
            Some(p) => simd::packed_gemm(k, f, p.groups(r0, r1), r1 - r0, xs, out, ldo),
            None => {
                let rb = self.tensor.row_bytes();
                let w = &self.tensor.bytes()[r0 * rb..r1 * rb];
                if xs.rows == 1 {
                    simd::dot_rows(k, f, w, &xs.row(0), &mut out[..r1 - r0]);
                } else {
                    simd::gemm(k, f, w, r1 - r0, xs, out, ldo);
                }
            }
        }
    }
}

/// Most weight bytes one task streams: big matrices (the LM head) are cut finer than
/// `TASKS_PER_THREAD` so that a thread delayed by the OS leaves little work behind.
const MAX_TASK_BYTES: usize = 256 << 10;

/// Weight rows per task for a matrix of `rows` rows of `row_bytes` bytes on `threads` threads:
/// the matrix is cut into equal tasks, a whole number of rounds of `threads` tasks, each round's
/// tasks at most [`MAX_TASK_BYTES`] (capping the task size alone left a short last task: a 2048-row
/// matrix went 592 + 592 rows to one thread and 592 + 272 to the other).
fn rows_per_task(rows: usize, row_bytes: usize, threads: usize) -> usize {
    let rounds = (rows * row_bytes).div_ceil(threads * MAX_TASK_BYTES).max(1);
    let want = rows.div_ceil(threads * TASKS_PER_THREAD * rounds);
    want.max(MIN_ROWS_PER_TASK).next_multiple_of(GROUP_ROWS)
}

/// `out[n, rows] = x[n, cols] · wᵀ` (shapes checked by the caller).
pub fn matmul(pool: &Pool, kernels: KernelSet, exact: bool, x: &[f32], n: usize, w: &CpuMatrix, out: &mut [f32]) {
    match w.int8 {
        Some(f) if !exact => matmul_int8(pool, kernels, f, x, n, w, out),
        _ => matmul_f32(pool, x, n, &w.tensor, out),
    }
}

fn matmul_int8(pool: &Pool, k: KernelSet, f: WeightFormat, x: &[f32], n: usize, w: &CpuMatrix, out: &mut [f32]) {
    let (rows, cols) = (w.tensor.n_rows(), w.tensor.row_len());
    let per = rows_per_task(rows, w.tensor.row_bytes(), pool.threads());
    if n == 1 {
        ACTS.with(|acts| {
            let mut acts = acts.borrow_mut();
            simd::quantize_rows(k, x, 1, cols, &mut acts);
            let acts = &*acts;
            pool.chunks_mut(out, per, |c, o| {
                let r0 = c * per;
                let len = o.len();
                w.int8_product(k, f, r0..r0 + len, acts, o, len);
            });
        });
        return;
    }
    TILE_ACTS.with(|tiles| {
        let mut tiles = tiles.borrow_mut();
        // Quantize each tile's tokens once, in parallel, into that tile's own buffer.
        let n_tiles = n.div_ceil(TOKENS_PER_TILE);
        if tiles.len() < n_tiles {
            tiles.resize_with(n_tiles, Q8Acts::default);
        }
        if n_tiles == 1 {
            // A few rows (a decode batch): quantizing them costs less than a pool step.
            simd::quantize_rows(k, x, n, cols, &mut tiles[0]);
        } else {
            pool.chunks_mut(&mut tiles[..n_tiles], 1, |i, t| {
                let t0 = i * TOKENS_PER_TILE;
                let t1 = (t0 + TOKENS_PER_TILE).min(n);
                simd::quantize_rows(k, &x[t0 * cols..t1 * cols], t1 - t0, cols, &mut t[0]);
            });
        }
        let tiles = &tiles[..n_tiles];
        pool.tiles_mut(out, rows, Split { len: n, chunk: TOKENS_PER_TILE }, Split { len: rows, chunk: per.max(64) }, |tile| {
            let acts = &tiles[tile.rows.start / TOKENS_PER_TILE];
            let (r0, r1) = (tile.cols.start, tile.cols.end);
            OUT_TILE.with(|buf| {
                let mut buf = buf.borrow_mut();
                buf.resize(acts.rows * (r1 - r0), 0.0);
                w.int8_product(k, f, r0..r1, acts, &mut buf, r1 - r0);
                for (i, tok) in tile.rows.clone().enumerate() {
                    tile.row_mut(tok).copy_from_slice(&buf[i * (r1 - r0)..(i + 1) * (r1 - r0)]);
                }
            })
        });
    });
}

/// Several products sharing the input row `x` (one token), run as one pool step: the input is
/// quantized once and the tasks of all matrices are handed out together.
pub fn matmul_many_int8(pool: &Pool, k: KernelSet, x: &[f32], ws: &[(WeightFormat, &CpuMatrix)], outs: &mut [&mut [f32]]) {
    ACTS.with(|acts| {
        let mut acts = acts.borrow_mut();
        simd::quantize_rows(k, x, 1, x.len(), &mut acts);
        let acts = &*acts;
        let mut pieces: Vec<(usize, usize, &mut [f32])> = Vec::new();
        for (m, o) in outs.iter_mut().enumerate() {
            let per = rows_per_task(o.len(), ws[m].1.tensor.row_bytes(), pool.threads());
            for (c, piece) in o.chunks_mut(per).enumerate() {
                pieces.push((m, c * per, piece));
            }
        }
        pool.chunks_mut(&mut pieces, 1, |_, p| {
            let (m, r0, ref mut o) = p[0];
            let (f, w) = ws[m];
            let len = o.len();
            w.int8_product(k, f, r0..r0 + len, acts, o, len);
        });
    });
}

fn matmul_f32(pool: &Pool, x: &[f32], n: usize, w: &TensorRef, out: &mut [f32]) {
    let (rows, cols) = (w.n_rows(), w.row_len());
    let per = rows_per_task(rows, w.row_bytes(), pool.threads());
    if n == 1 {
        pool.chunks_mut(out, per, |c, o| {
            for (j, v) in o.iter_mut().enumerate() {
                *v = dot_row(w.dtype, w.row(c * per + j), x);
            }
        });
        return;
    }
    pool.tiles_mut(out, rows, Split { len: n, chunk: TOKENS_PER_TILE }, Split { len: rows, chunk: per }, |tile| {
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            let (t0, t1, c0) = (tile.rows.start, tile.rows.end, tile.cols.start);
            s.resize(cols + (t1 - t0), 0.0);
            let (scratch, col) = s.split_at_mut(cols);
            for r in tile.cols.clone() {
                dot_rows_multi(w.dtype, w.row(r), &x[t0 * cols..t1 * cols], scratch, col);
                for (i, tok) in tile.rows.clone().enumerate() {
                    tile.row_mut(tok)[r - c0] = col[i];
                }
            }
        })
    });
}
