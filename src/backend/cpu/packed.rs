//! Weight matrices repacked at load into the row-interleaved layout of
//! [`crate::quant::packed`], for kernel sets that have kernels for it (AVX-512 VNNI).
//!
//! The packed copy has the size of the GGUF tensor and replaces it: once packed, the tensor's
//! pages in the file mapping are released, so the resident set holds each weight once. The copy
//! lives in an anonymous mapping (page-aligned, so every 64-byte load of a quant chunk is
//! aligned; transparent huge pages requested to spare the TLB when decode streams the weights).

use crate::error::{Error, Result};
use crate::ffi::pool::Pool;
use crate::quant::int8::WeightFormat;
use crate::quant::packed::{self, GROUP_ROWS};
use crate::tensor::TensorRef;

/// Groups one packing task converts (and whose source pages it then releases).
const GROUPS_PER_TASK: usize = 64;

/// A weight matrix in the packed layout.
pub struct PackedMatrix {
    /// The source format (the packed layout keeps its scales and quants).
    pub format: WeightFormat,
    /// Rows of the matrix (the last group may hold fewer).
    pub rows: usize,
    /// Bytes of one group of 16 rows.
    pub group_bytes: usize,
    data: memmap2::MmapMut,
}

impl std::fmt::Debug for PackedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedMatrix({:?}, {} rows)", self.format, self.rows)
    }
}

impl PackedMatrix {
    /// Packs `t` (format `f`, rows a whole number of 32-element blocks) over the pool, then
    /// releases the tensor's mapped pages.
    pub fn pack(pool: &Pool, f: WeightFormat, t: &TensorRef) -> Result<PackedMatrix> {
        let (rows, rb) = (t.n_rows(), t.row_bytes());
        let gb = packed::group_bytes(f, t.row_len());
        let n_groups = rows.div_ceil(GROUP_ROWS);
        let len = n_groups * gb;
        let mut data = memmap2::MmapOptions::new()
            .len(len.max(1))
            .map_anon()
            .map_err(|e| {
                Error::OutOfMemory(format!(
                    "{} bytes for the packed weights of {}: {e}",
                    len, t.name
                ))
            })?;
        // Only a hint: without huge pages the kernels run the same, with more TLB misses.
        let _ = data.advise(memmap2::Advice::HugePage);
        let src = t.bytes();
        // Each task releases the source pages it has packed, so the resident set never holds
        // both copies of a large matrix (the LM head) at once.
        pool.chunks_mut(&mut data[..len], gb * GROUPS_PER_TASK, |c, dst| {
            let first = c * GROUPS_PER_TASK * GROUP_ROWS;
            for (i, group) in dst.chunks_exact_mut(gb).enumerate() {
                let r0 = first + i * GROUP_ROWS;
                let r1 = rows.min(r0 + GROUP_ROWS);
                packed::pack_group(f, &src[r0 * rb..r1 * rb], rb, group);
            }
            let last = rows.min(first + GROUPS_PER_TASK * GROUP_ROWS);
            t.release_pages(first * rb, (last - first) * rb);
        });
        t.release_pages(0, rows * rb);
        Ok(PackedMatrix {
            format: f,
            rows,
            group_bytes: gb,
            data,
        })
    }

    /// The packed groups holding rows `r0..r1` (`r0` a multiple of 16).
    pub fn groups(&self, r0: usize, r1: usize) -> &[u8] {
        debug_assert!(r0.is_multiple_of(GROUP_ROWS) && r1 <= self.rows);
        &self.data[r0 / GROUP_ROWS * self.group_bytes..r1.div_ceil(GROUP_ROWS) * self.group_bytes]
    }
}
