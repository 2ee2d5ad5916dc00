//! safetensors reader: single files and sharded Hugging Face checkpoints
//! (`model.safetensors.index.json`), memory-mapped and exposed as [`TensorRef`] views keyed by the
//! Hugging Face tensor name.
//!
//! A file is an 8-byte little-endian header length `N`, `N` bytes of JSON describing every tensor
//! (`dtype`, `shape`, `data_offsets` relative to the byte after the header), then the data. The
//! file is untrusted: the header length is bounded, the JSON is parsed strictly, every offset must
//! lie inside the data section, a tensor's byte range must equal its shape times its element size,
//! and the tensors must tile the data section exactly (no shared bytes, no gaps), as the reference
//! reader demands.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::tensor::{DType, Storage, TensorRef, WeightMap};

/// Largest JSON header we accept. The reference implementation uses the same 100 MB cap; real
/// headers are a few hundred bytes per tensor, so even 100k-tensor checkpoints stay far below it.
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Name of a single-file checkpoint inside a model directory.
pub const SINGLE_FILE: &str = "model.safetensors";
/// Name of the shard index inside a sharded model directory.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// dtypes the safetensors format defines that this crate does not read (named in errors).
const KNOWN_UNSUPPORTED: &[&str] = &[
    "BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64", "F64", "F8_E4M3", "F8_E5M2",
    "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64",
];

/// One tensor entry of a safetensors header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Hugging Face tensor name, e.g. `model.layers.0.self_attn.q_proj.weight`.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape, outermost first (as stored).
    pub shape: Vec<usize>,
    /// Byte offset of the tensor's data from the start of the file.
    pub offset: usize,
    /// Byte length of the tensor's data.
    pub len: usize,
}

/// A parsed and validated safetensors header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SafetensorsHeader {
    /// Tensors in order of their data offsets.
    pub tensors: Vec<TensorInfo>,
    /// The optional `__metadata__` string map (e.g. `{"format": "pt"}`).
    pub metadata: BTreeMap<String, String>,
    /// Byte offset where the data section starts (8 + header length).
    pub data_start: usize,
}

/// Reads and validates the header of the safetensors file at `path` (the file is mapped, not read).
pub fn read_header(path: &Path) -> Result<SafetensorsHeader> {
    let storage = map_file(path)?;
    parse_header(path, storage_bytes(&storage))
}

/// Parses and validates a safetensors header from the start of `bytes`, which must hold the whole
/// file (offsets are checked against its length). `path` names the file in errors.
pub fn parse_header(path: &Path, bytes: &[u8]) -> Result<SafetensorsHeader> {
    let len_bytes: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            Error::format(
                path,
                format!(
                    "file too short for a safetensors header ({} bytes)",
                    bytes.len()
                ),
            )
        })?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER_BYTES {
        return Err(Error::format(
            path,
            format!(
                "safetensors header length {header_len} exceeds the {MAX_HEADER_BYTES}-byte limit"
            ),
        ));
    }
    let available = (bytes.len() - 8) as u64;
    if header_len > available {
        return Err(Error::format(
            path,
            format!("safetensors header length {header_len} runs past the end of the file ({available} bytes follow)"),
        ));
    }
    // Both bounds above make this cast and addition exact.
    let data_start = 8 + header_len as usize;
    let json = &bytes[8..data_start];
    if json.first() != Some(&b'{') {
        return Err(Error::format(
            path,
            "safetensors header is not a JSON object",
        ));
    }
    let root: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(json)
        .map_err(|e| Error::format(path, format!("safetensors header is not valid JSON: {e}")))?;

    let data_len = bytes.len() - data_start;
    let mut header = SafetensorsHeader {
        data_start,
        ..Default::default()
    };
    for (name, entry) in root {
        if name == "__metadata__" {
            header.metadata = parse_metadata(path, &entry)?;
            continue;
        }
        let (dtype, shape, begin, end) = parse_entry(path, &name, &entry)?;
        if begin > end || end > data_len {
            return Err(Error::format(
                path,
                format!("tensor {name}: data_offsets [{begin}, {end}] outside the {data_len}-byte data section"),
            ));
        }
        let len = end - begin;
        let n = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| {
                Error::format(path, format!("tensor {name}: shape {shape:?} overflows"))
            })?;
        let need = dtype.bytes_for(n).ok_or_else(|| {
            Error::format(path, format!("tensor {name}: shape {shape:?} overflows"))
        })?;
        if need != len {
            return Err(Error::format(
                path,
                format!(
                    "tensor {name}: {len} bytes stored but shape {shape:?} of {} needs {need}",
                    dtype.name()
                ),
            ));
        }
        header.tensors.push(TensorInfo {
            name,
            dtype,
            shape,
            offset: data_start + begin,
            len,
        });
    }
    // Like the reference reader, demand that the tensors tile the data section exactly: no
    // overlaps (two views of the same bytes), no gaps and no unused tail. Every conforming writer
    // produces such files, and the rule catches a corrupted header length, which shifts the data.
    // Sorting by (offset, len) puts zero-length tensors before a tensor starting at the same byte.
    header
        .tensors
        .sort_by(|a, b| (a.offset, a.len, &a.name).cmp(&(b.offset, b.len, &b.name)));
    let mut prev_end = data_start;
    let mut prev_name = "the header";
    for t in &header.tensors {
        if t.offset < prev_end {
            return Err(Error::format(
                path,
                format!("tensors {prev_name} and {} overlap", t.name),
            ));
        }
        if t.offset > prev_end {
            return Err(Error::format(
                path,
                format!(
                    "{} unused bytes between {prev_name} and tensor {}",
                    t.offset - prev_end,
                    t.name
                ),
            ));
        }
        prev_end = t.offset + t.len;
        prev_name = &t.name;
    }
    if prev_end != bytes.len() {
        return Err(Error::format(
            path,
            format!(
                "{} unused bytes after the last tensor (the header length may be wrong)",
                bytes.len() - prev_end
            ),
        ));
    }
    Ok(header)
}

fn parse_metadata(path: &Path, value: &serde_json::Value) -> Result<BTreeMap<String, String>> {
    let obj = value
        .as_object()
        .ok_or_else(|| Error::format(path, "__metadata__ is not a JSON object"))?;
    obj.iter()
        .map(|(k, v)| match v.as_str() {
            Some(s) => Ok((k.clone(), s.to_string())),
            None => Err(Error::format(
                path,
                format!("__metadata__ value of {k} is not a string"),
            )),
        })
        .collect()
}

fn parse_entry(
    path: &Path,
    name: &str,
    entry: &serde_json::Value,
) -> Result<(DType, Vec<usize>, usize, usize)> {
    let obj = entry.as_object().ok_or_else(|| {
        Error::format(
            path,
            format!("tensor {name}: header entry is not a JSON object"),
        )
    })?;
    let dtype_str = obj.get("dtype").and_then(|v| v.as_str()).ok_or_else(|| {
        Error::format(path, format!("tensor {name}: missing or non-string dtype"))
    })?;
    let dtype = match dtype_str {
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        other if KNOWN_UNSUPPORTED.contains(&other) => {
            return Err(Error::Unsupported(format!(
                "{}: tensor {name} has dtype {other}; only F32, F16 and BF16 safetensors are read",
                display_name(path)
            )))
        }
        other => {
            return Err(Error::format(
                path,
                format!("tensor {name}: unknown dtype {other:?}"),
            ))
        }
    };
    let shape = usize_array(path, name, obj.get("shape"), "shape")?;
    let offsets = usize_array(path, name, obj.get("data_offsets"), "data_offsets")?;
    let [begin, end] = offsets[..] else {
        return Err(Error::format(
            path,
            format!("tensor {name}: data_offsets must hold exactly two numbers"),
        ));
    };
    Ok((dtype, shape, begin, end))
}

fn usize_array(
    path: &Path,
    name: &str,
    v: Option<&serde_json::Value>,
    what: &str,
) -> Result<Vec<usize>> {
    let bad = || {
        Error::format(
            path,
            format!("tensor {name}: {what} must be an array of non-negative integers"),
        )
    };
    let arr = v.and_then(|v| v.as_array()).ok_or_else(bad)?;
    arr.iter()
        .map(|x| {
            x.as_u64()
                .and_then(|x| usize::try_from(x).ok())
                .ok_or_else(bad)
        })
        .collect()
}

fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

fn map_file(path: &Path) -> Result<Storage> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mmap = crate::ffi::mmap::map_read_only(&file).map_err(|e| Error::io(path, e))?;
    Ok(Storage::Mmap(Arc::new(mmap)))
}

fn storage_bytes(storage: &Storage) -> &[u8] {
    match storage {
        Storage::Mmap(m) => m,
        Storage::Owned(v) => v,
    }
}

/// Adds every tensor of one parsed file to `weights`.
fn add_tensors(
    path: &Path,
    storage: &Storage,
    header: &SafetensorsHeader,
    weights: &mut WeightMap,
) -> Result<()> {
    for t in &header.tensors {
        let view = TensorRef::new(
            path,
            t.name.clone(),
            t.dtype,
            t.shape.clone(),
            storage.clone(),
            t.offset,
            t.len,
        )?;
        weights.insert(view)?;
    }
    Ok(())
}

/// The weights of a Hugging Face safetensors checkpoint (one file or several shards).
pub struct SafetensorsModel {
    /// Every tensor, keyed by its Hugging Face name.
    pub weights: WeightMap,
    /// The `__metadata__` of the first file (shards normally all carry the same map).
    pub metadata: BTreeMap<String, String>,
    /// The files that were mapped, in load order.
    pub files: Vec<PathBuf>,
}

impl SafetensorsModel {
    /// Opens the checkpoint in `dir`: `model.safetensors`, or else the shards listed in
    /// `model.safetensors.index.json`. Each file is memory-mapped once and shared by its tensors.
    pub fn open_dir(dir: &Path) -> Result<SafetensorsModel> {
        let single = dir.join(SINGLE_FILE);
        if single.is_file() {
            let mut model = Self::open_file(&single)?;
            model.weights.source = dir.to_path_buf();
            return Ok(model);
        }
        let index = dir.join(INDEX_FILE);
        if !index.is_file() {
            return Err(Error::NotFound(format!(
                "{}: neither {SINGLE_FILE} nor {INDEX_FILE} is present",
                dir.display()
            )));
        }
        Self::open_index(&index)
    }

    /// Opens one safetensors file.
    pub fn open_file(path: &Path) -> Result<SafetensorsModel> {
        let storage = map_file(path)?;
        Self::from_storage(path, storage)
    }

    /// Parses a safetensors image held in memory (tests and fuzzing); `name` labels errors.
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Result<SafetensorsModel> {
        Self::from_storage(Path::new(name), Storage::Owned(Arc::new(bytes)))
    }

    fn from_storage(path: &Path, storage: Storage) -> Result<SafetensorsModel> {
        let header = parse_header(path, storage_bytes(&storage))?;
        let mut weights = WeightMap::new(path);
        add_tensors(path, &storage, &header, &mut weights)?;
        Ok(SafetensorsModel {
            weights,
            metadata: header.metadata,
            files: vec![path.to_path_buf()],
        })
    }

    /// Opens the shards named by the index file at `index`. Every entry of its `weight_map` must
    /// be found in the shard it names; shard names must be plain relative paths inside the index's
    /// directory.
    pub fn open_index(index: &Path) -> Result<SafetensorsModel> {
        let dir = index.parent().unwrap_or(Path::new("."));
        let text = std::fs::read(index).map_err(|e| Error::io(index, e))?;
        let root: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| Error::format(index, format!("not valid JSON: {e}")))?;
        let map = root
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::format(index, "missing weight_map object"))?;
        let mut expected: BTreeMap<&str, &str> = BTreeMap::new();
        let mut shards: BTreeSet<&str> = BTreeSet::new();
        for (tensor, file) in map {
            let file = file.as_str().ok_or_else(|| {
                Error::format(
                    index,
                    format!("weight_map entry {tensor} is not a file name"),
                )
            })?;
            check_shard_name(index, file)?;
            expected.insert(tensor, file);
            shards.insert(file);
        }
        if shards.is_empty() {
            return Err(Error::format(index, "weight_map lists no shards"));
        }

        let mut weights = WeightMap::new(dir);
        let mut metadata = None;
        let mut files = Vec::new();
        let mut found: BTreeMap<String, &str> = BTreeMap::new();
        for shard in &shards {
            let path = dir.join(shard);
            let storage = map_file(&path)?;
            let header = parse_header(&path, storage_bytes(&storage))?;
            add_tensors(&path, &storage, &header, &mut weights)?;
            for t in &header.tensors {
                found.insert(t.name.clone(), shard);
            }
            metadata.get_or_insert(header.metadata);
            files.push(path);
        }
        for (tensor, file) in &expected {
            match found.get(*tensor) {
                Some(f) if f == file => {}
                Some(f) => {
                    return Err(Error::format(
                        index,
                        format!("tensor {tensor} is listed in {file} but stored in {f}"),
                    ))
                }
                None => {
                    return Err(Error::format(
                        index,
                        format!("missing tensor {tensor} (listed in {file})"),
                    ))
                }
            }
        }
        Ok(SafetensorsModel {
            weights,
            metadata: metadata.unwrap_or_default(),
            files,
        })
    }
}

/// Refuses shard names that would leave the model directory (absolute paths, `..`).
fn check_shard_name(index: &Path, file: &str) -> Result<()> {
    let p = Path::new(file);
    let ok = !file.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(Error::format(
            index,
            format!("shard name {file:?} is not a plain relative path"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(header: &str, data: &[u8]) -> Vec<u8> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn parses_a_minimal_file() {
        let bytes = image(
            r#"{"__metadata__":{"format":"pt"},"b":{"dtype":"F16","shape":[2],"data_offsets":[8,12]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            &[0u8; 12],
        );
        let h = parse_header(Path::new("x.safetensors"), &bytes).unwrap();
        assert_eq!(h.tensors.len(), 2);
        assert_eq!(h.tensors[0].name, "a");
        assert_eq!(h.tensors[1].offset, h.data_start + 8);
        assert_eq!(h.metadata.get("format").map(String::as_str), Some("pt"));
    }

    #[test]
    fn rejects_overlap_and_bad_dtype() {
        let overlap = image(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
            &[0u8; 8],
        );
        let e = parse_header(Path::new("x"), &overlap).unwrap_err();
        assert!(e.to_string().contains("overlap"), "{e}");
        let i64 = image(
            r#"{"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#,
            &[0u8; 8],
        );
        match parse_header(Path::new("x"), &i64) {
            Err(Error::Unsupported(m)) => assert!(m.contains("I64"), "{m}"),
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }

    #[test]
    fn shard_names_stay_inside_the_directory() {
        let idx = Path::new("i.json");
        assert!(check_shard_name(idx, "model-00001-of-00002.safetensors").is_ok());
        assert!(check_shard_name(idx, "../etc/passwd").is_err());
        assert!(check_shard_name(idx, "/abs.safetensors").is_err());
        assert!(check_shard_name(idx, "").is_err());
    }
}
