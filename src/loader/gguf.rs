//! GGUF v2/v3 reader: header, metadata, tensor table and aligned data section, over an mmap.
//!
//! The file is untrusted: every count is bounded by the bytes that remain before it is used to
//! allocate, every string length and array length is checked, every tensor's offset and size must
//! lie inside the data section, and shapes may not overflow. Errors name the file and the key or
//! tensor that is wrong.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::loader::metadata::{MetaValue, Metadata};
use crate::tensor::{DType, Storage, TensorRef, WeightMap};

/// "GGUF" read as a little-endian u32.
const GGUF_MAGIC: u32 = 0x4655_4747;
/// Alignment of the data section when `general.alignment` is absent (ggml's default).
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most four dimensions.
const MAX_DIMS: u32 = 4;
/// Arrays nest at most this deep; deeper nesting is refused rather than recursed into.
const MAX_ARRAY_DEPTH: usize = 4;

/// A parsed GGUF file: its metadata and views of its tensors in the mmapped data section.
pub struct GgufFile {
    /// Format version (2 or 3).
    pub version: u32,
    /// All key/value metadata.
    pub metadata: Metadata,
    /// Tensors by name, shapes outermost first.
    pub weights: WeightMap,
    /// Tensor names in file order (for listings).
    pub tensor_order: Vec<String>,
    /// Data-section alignment in bytes.
    pub alignment: u64,
    /// Path of the file.
    pub path: PathBuf,
}

impl GgufFile {
    /// Opens and memory-maps `path`, then parses it.
    pub fn open(path: &Path) -> Result<GgufFile> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let mmap = crate::ffi::mmap::map_read_only(&file).map_err(|e| Error::io(path, e))?;
        Self::parse(path, Storage::Mmap(Arc::new(mmap)))
    }

    /// Parses a GGUF image held in memory (used by tests and the fuzzer); `name` labels errors.
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Result<GgufFile> {
        Self::parse(Path::new(name), Storage::Owned(Arc::new(bytes)))
    }

    fn parse(path: &Path, storage: Storage) -> Result<GgufFile> {
        let bytes: &[u8] = match &storage {
            Storage::Mmap(m) => m,
            Storage::Owned(v) => v,
        };
        let mut r = Reader { buf: bytes, pos: 0, path };
        let magic = r.u32("magic")?;
        if magic != GGUF_MAGIC {
            return Err(Error::format(path, format!("not a GGUF file (magic {magic:#010x})")));
        }
        let version = r.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(Error::format(path, format!("unsupported GGUF version {version} (2 and 3 are read)")));
        }
        let n_tensors = r.count("tensor count", 8)?;
        let n_kv = r.count("metadata count", 12)?;

        let mut metadata = Metadata { source: path.to_path_buf(), ..Default::default() };
        for _ in 0..n_kv {
            let key = r.string("metadata key")?;
            let ty = r.u32(&key)?;
            let value = r.value(ty, &key, 0)?;
            metadata.entries.insert(key, value);
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a,
                _ => return Err(Error::format(path, format!("general.alignment {v:?} is not a power of two"))),
            },
        };

        struct Info {
            name: String,
            dims: Vec<usize>,
            ty: u32,
            offset: u64,
        }
        let mut infos = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = r.string("tensor name")?;
            let n_dims = r.u32(&name)?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(Error::format(path, format!("tensor {name}: {n_dims} dimensions (1 to 4 allowed)")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                let d = r.u64(&name)?;
                let d = usize::try_from(d)
                    .ok()
                    .filter(|&d| d as u64 <= bytes.len() as u64 * 2)
                    .ok_or_else(|| Error::format(path, format!("tensor {name}: dimension {d} is impossible")))?;
                dims.push(d);
            }
            let ty = r.u32(&name)?;
            let offset = r.u64(&name)?;
            infos.push(Info { name, dims, ty, offset });
        }

        let data_start = align_up(r.pos as u64, alignment)
            .filter(|&s| s <= bytes.len() as u64)
            .ok_or_else(|| Error::format(path, "file ends before its data section"))?;

        let mut weights = WeightMap::new(path);
        let mut tensor_order = Vec::with_capacity(infos.len());
        for info in infos {
            let name = info.name;
            let dtype = DType::from_ggml(info.ty).ok_or_else(|| {
                Error::Unsupported(format!(
                    "{}: tensor {name} has ggml type {} which this build does not read",
                    path.display(),
                    info.ty
                ))
            })?;
            if info.offset % alignment != 0 {
                return Err(Error::format(path, format!("tensor {name}: offset {} is not aligned", info.offset)));
            }
            let n: usize = info
                .dims
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .ok_or_else(|| Error::format(path, format!("tensor {name}: shape overflows")))?;
            let len = dtype
                .bytes_for(n)
                .ok_or_else(|| Error::format(path, format!("tensor {name}: {n} elements is not whole {} blocks", dtype.name())))?;
            let offset = data_start
                .checked_add(info.offset)
                .and_then(|o| usize::try_from(o).ok())
                .ok_or_else(|| Error::format(path, format!("tensor {name}: offset overflows")))?;
            // GGUF lists dims innermost first; TensorRef wants outermost first.
            let shape: Vec<usize> = info.dims.iter().rev().copied().collect();
            let t = TensorRef::new(path, name.clone(), dtype, shape, storage.clone(), offset, len)?;
            weights.insert(t)?;
            tensor_order.push(name);
        }

        Ok(GgufFile { version, metadata, weights, tensor_order, alignment, path: path.to_path_buf() })
    }

    /// `general.architecture`, required by every model file.
    pub fn architecture(&self) -> Result<&str> {
        self.metadata.str("general.architecture")
    }
}

fn align_up(x: u64, a: u64) -> Option<u64> {
    x.checked_add(a - 1).map(|v| v / a * a)
}

/// Bounds-checked little-endian cursor over the file bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&[u8]> {
        if n > self.remaining() {
            return Err(Error::format(self.path, format!("file is truncated while reading {what}")));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A u64 count of items that each take at least `min_item_bytes` bytes: bounded by the file.
    fn count(&mut self, what: &str, min_item_bytes: usize) -> Result<usize> {
        let n = self.u64(what)?;
        let max = (self.remaining() / min_item_bytes.max(1)) as u64;
        if n > max {
            return Err(Error::format(self.path, format!("{what} {n} is larger than the file can hold")));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.u64(what)?;
        let n = usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.remaining())
            .ok_or_else(|| Error::format(self.path, format!("string length {n} of {what} runs past the end of the file")))?;
        let s = self.take(n, what)?;
        String::from_utf8(s.to_vec()).map_err(|_| Error::format(self.path, format!("{what} is not valid UTF-8")))
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<MetaValue> {
        Ok(match ty {
            0 => MetaValue::U8(self.array::<1>(key)?[0]),
            1 => MetaValue::I8(self.array::<1>(key)?[0] as i8),
            2 => MetaValue::U16(u16::from_le_bytes(self.array(key)?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array(key)?)),
            4 => MetaValue::U32(self.u32(key)?),
            5 => MetaValue::I32(i32::from_le_bytes(self.array(key)?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array(key)?)),
            7 => match self.array::<1>(key)?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(Error::format(self.path, format!("metadata key {key}: bool byte {b}"))),
            },
            8 => MetaValue::Str(self.string(key)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(Error::format(self.path, format!("metadata key {key}: arrays nested too deeply")));
                }
                let elem_ty = self.u32(key)?;
                let min = match elem_ty {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    t => return Err(Error::format(self.path, format!("metadata key {key}: unknown array element type {t}"))),
                };
                let n = self.count(key, min)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(elem_ty, key, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::U64(self.u64(key)?),
            11 => MetaValue::I64(i64::from_le_bytes(self.array(key)?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array(key)?)),
            t => return Err(Error::format(self.path, format!("metadata key {key}: unknown value type {t}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a small GGUF image: one u32 key, one string key and one F32 tensor of `dims`.
    fn image(version: u32, dims: &[u64], offset: u64, data: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"GGUF");
        b.extend_from_slice(&version.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes()); // tensors
        b.extend_from_slice(&2u64.to_le_bytes()); // kv
        let s = |b: &mut Vec<u8>, t: &str| {
            b.extend_from_slice(&(t.len() as u64).to_le_bytes());
            b.extend_from_slice(t.as_bytes());
        };
        s(&mut b, "general.architecture");
        b.extend_from_slice(&8u32.to_le_bytes());
        s(&mut b, "llama");
        s(&mut b, "llama.block_count");
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&2u32.to_le_bytes());
        s(&mut b, "w");
        b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&offset.to_le_bytes());
        while b.len() % 32 != 0 {
            b.push(0);
        }
        b.extend_from_slice(data);
        b
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn parses_metadata_and_tensor_shape() {
        let g = GgufFile::from_bytes("t.gguf", image(3, &[3, 2], 0, &f32_bytes(&[1., 2., 3., 4., 5., 6.]))).unwrap();
        assert_eq!(g.architecture().unwrap(), "llama");
        assert_eq!(g.metadata.u64("llama.block_count").unwrap(), 2);
        let w = g.weights.get("w").unwrap();
        assert_eq!(w.shape, vec![2, 3]);
        assert_eq!(w.row(1), &f32_bytes(&[4., 5., 6.])[..]);
    }

    #[test]
    fn wrong_magic_is_refused() {
        let mut img = image(3, &[2], 0, &f32_bytes(&[1., 2.]));
        img[0] = b'X';
        let e = GgufFile::from_bytes("t.gguf", img).err().unwrap().to_string();
        assert!(e.contains("not a GGUF file"), "{e}");
    }

    #[test]
    fn tensor_past_end_is_refused() {
        let e = GgufFile::from_bytes("t.gguf", image(3, &[2], 32, &f32_bytes(&[1., 2.]))).err().unwrap().to_string();
        assert!(e.contains("tensor w extends past the end"), "{e}");
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let img = image(2, &[4], 0, &f32_bytes(&[1., 2., 3., 4.]));
        for n in 0..img.len() {
            assert!(GgufFile::from_bytes("t.gguf", img[..n].to_vec()).is_err(), "prefix {n} accepted");
        }
    }

    #[test]
    fn huge_counts_are_refused_before_allocating() {
        let mut img = image(3, &[2], 0, &f32_bytes(&[1., 2.]));
        img[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        let e = GgufFile::from_bytes("t.gguf", img).err().unwrap().to_string();
        assert!(e.contains("larger than the file"), "{e}");
    }
}
