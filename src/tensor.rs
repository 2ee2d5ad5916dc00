//! Tensor element types and read-only views of weight tensors that live in mmapped model files.
//!
//! Shapes are written outermost first, as PyTorch does: a linear layer's weight is
//! `[out_features, in_features]` and each of its rows is stored contiguously (GGUF's `ne` order is
//! the reverse; the GGUF loader flips it). Quantized types pack each row into whole blocks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};

/// Element types of weight tensors, numbered as ggml numbers them (GGUF stores these ids).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum DType {
    /// 32-bit IEEE float.
    F32 = 0,
    /// 16-bit IEEE float.
    F16 = 1,
    /// 4-bit, blocks of 32 with an f16 scale.
    Q4_0 = 2,
    /// 4-bit, blocks of 32 with f16 scale and minimum.
    Q4_1 = 3,
    /// 5-bit, blocks of 32 with an f16 scale.
    Q5_0 = 6,
    /// 5-bit, blocks of 32 with f16 scale and minimum.
    Q5_1 = 7,
    /// 8-bit, blocks of 32 with an f16 scale.
    Q8_0 = 8,
    /// 4-bit k-quant, super-blocks of 256.
    Q4K = 12,
    /// 5-bit k-quant, super-blocks of 256.
    Q5K = 13,
    /// 6-bit k-quant, super-blocks of 256.
    Q6K = 14,
    /// bfloat16.
    BF16 = 30,
}

impl DType {
    /// Maps a ggml type id to a supported type; `None` for types we do not read.
    pub fn from_ggml(id: u32) -> Option<DType> {
        Some(match id {
            0 => DType::F32,
            1 => DType::F16,
            2 => DType::Q4_0,
            3 => DType::Q4_1,
            6 => DType::Q5_0,
            7 => DType::Q5_1,
            8 => DType::Q8_0,
            12 => DType::Q4K,
            13 => DType::Q5K,
            14 => DType::Q6K,
            30 => DType::BF16,
            _ => return None,
        })
    }

    /// Number of elements in one block (1 for plain float types).
    pub fn block_elems(self) -> usize {
        match self {
            DType::F32 | DType::F16 | DType::BF16 => 1,
            DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q5_1 | DType::Q8_0 => 32,
            DType::Q4K | DType::Q5K | DType::Q6K => 256,
        }
    }

    /// Bytes in one block.
    pub fn block_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::Q4_0 => 18,
            DType::Q4_1 => 20,
            DType::Q5_0 => 22,
            DType::Q5_1 => 24,
            DType::Q8_0 => 34,
            DType::Q4K => 144,
            DType::Q5K => 176,
            DType::Q6K => 210,
        }
    }

    /// Bytes needed for `n` elements, or `None` if `n` is not a whole number of blocks or overflows.
    pub fn bytes_for(self, n: usize) -> Option<usize> {
        if !n.is_multiple_of(self.block_elems()) {
            return None;
        }
        (n / self.block_elems()).checked_mul(self.block_bytes())
    }

    /// The name ggml and llama.cpp print for this type.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::Q4_0 => "Q4_0",
            DType::Q4_1 => "Q4_1",
            DType::Q5_0 => "Q5_0",
            DType::Q5_1 => "Q5_1",
            DType::Q8_0 => "Q8_0",
            DType::Q4K => "Q4_K",
            DType::Q5K => "Q5_K",
            DType::Q6K => "Q6_K",
        }
    }
}

/// Bytes a tensor view reads from: a shared mmap of a model file, or an owned buffer.
#[derive(Clone)]
pub enum Storage {
    /// A read-only memory map shared by every tensor of one file.
    Mmap(Arc<memmap2::Mmap>),
    /// Bytes held in memory (tests, converted tensors).
    Owned(Arc<Vec<u8>>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mmap(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// A read-only view of one weight tensor: name, type, shape and its bytes in the backing storage.
#[derive(Clone)]
pub struct TensorRef {
    /// Canonical (GGUF-style) tensor name, e.g. `blk.3.attn_q.weight`.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape, outermost first; the last dimension is contiguous.
    pub shape: Vec<usize>,
    storage: Storage,
    offset: usize,
    len: usize,
}

impl std::fmt::Debug for TensorRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TensorRef({} {} {:?})", self.name, self.dtype.name(), self.shape)
    }
}

impl TensorRef {
    /// Creates a view after checking that the shape's byte size equals `len`, that a row is whole
    /// blocks, and that `offset + len` lies inside `storage`. `file` names the source in errors.
    pub fn new(
        file: &Path,
        name: String,
        dtype: DType,
        shape: Vec<usize>,
        storage: Storage,
        offset: usize,
        len: usize,
    ) -> Result<Self> {
        let row = shape.last().copied().unwrap_or(1);
        if row % dtype.block_elems() != 0 {
            return Err(Error::format(
                file,
                format!(
                    "tensor {name}: row length {row} is not a multiple of the {} block size {}",
                    dtype.name(),
                    dtype.block_elems()
                ),
            ));
        }
        let n = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| Error::format(file, format!("tensor {name}: shape {shape:?} overflows")))?;
        let need = dtype
            .bytes_for(n)
            .ok_or_else(|| Error::format(file, format!("tensor {name}: shape {shape:?} overflows")))?;
        if need != len {
            return Err(Error::format(
                file,
                format!("tensor {name}: {len} bytes stored but shape {shape:?} of {} needs {need}", dtype.name()),
            ));
        }
        let end = offset
            .checked_add(len)
            .ok_or_else(|| Error::format(file, format!("tensor {name}: offset overflows")))?;
        if end > storage.bytes().len() {
            return Err(Error::format(
                file,
                format!(
                    "tensor {name} extends past the end of the file (ends at {end}, file has {} bytes)",
                    storage.bytes().len()
                ),
            ));
        }
        Ok(TensorRef { name, dtype, shape, storage, offset, len })
    }

    /// Creates a view over owned bytes (for tests and converted tensors).
    pub fn from_owned(name: &str, dtype: DType, shape: Vec<usize>, bytes: Vec<u8>) -> Result<Self> {
        let len = bytes.len();
        Self::new(Path::new("<memory>"), name.to_string(), dtype, shape, Storage::Owned(Arc::new(bytes)), 0, len)
    }

    /// All bytes of the tensor.
    pub fn bytes(&self) -> &[u8] {
        &self.storage.bytes()[self.offset..self.offset + self.len]
    }

    /// Total number of elements.
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Length of one row (the last dimension).
    pub fn row_len(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    /// Number of rows (product of all but the last dimension).
    pub fn n_rows(&self) -> usize {
        self.n_elements().checked_div(self.row_len()).unwrap_or(0)
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.dtype.bytes_for(self.row_len()).unwrap_or(0)
    }

    /// Drops the process's resident pages of bytes `start..start + len` of this tensor where it
    /// lives in a file mapping (after a backend copied them elsewhere); reads still work and fault
    /// the pages back in.
    pub fn release_pages(&self, start: usize, len: usize) {
        if let Storage::Mmap(m) = &self.storage {
            let len = len.min(self.len.saturating_sub(start));
            crate::ffi::mmap::release_pages(m, self.offset + start, len);
        }
    }

    /// The bytes of row `i` (panics if out of range; callers index rows they validated).
    pub fn row(&self, i: usize) -> &[u8] {
        let rb = self.row_bytes();
        &self.bytes()[i * rb..(i + 1) * rb]
    }
}

/// All weight tensors of a model, by canonical name, with the file they came from for errors.
#[derive(Clone, Debug, Default)]
pub struct WeightMap {
    tensors: HashMap<String, TensorRef>,
    /// The model file or directory, named in "missing tensor" errors.
    pub source: PathBuf,
}

impl WeightMap {
    /// An empty map whose errors name `source`.
    pub fn new(source: impl Into<PathBuf>) -> Self {
        WeightMap { tensors: HashMap::new(), source: source.into() }
    }

    /// Adds a tensor; a duplicate name is a format error.
    pub fn insert(&mut self, t: TensorRef) -> Result<()> {
        if self.tensors.contains_key(&t.name) {
            return Err(Error::format(&self.source, format!("duplicate tensor {}", t.name)));
        }
        self.tensors.insert(t.name.clone(), t);
        Ok(())
    }

    /// The tensor called `name`, or an error naming it and the file.
    pub fn get(&self, name: &str) -> Result<&TensorRef> {
        self.tensors
            .get(name)
            .ok_or_else(|| Error::format(&self.source, format!("missing tensor {name}")))
    }

    /// The tensor called `name` if present.
    pub fn try_get(&self, name: &str) -> Option<&TensorRef> {
        self.tensors.get(name)
    }

    /// Iterates over all tensors (unordered).
    pub fn iter(&self) -> impl Iterator<Item = &TensorRef> {
        self.tensors.values()
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// True when no tensor is loaded.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
}
