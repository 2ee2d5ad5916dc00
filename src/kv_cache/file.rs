//! The prefix cache on disk, so a device restart keeps its cached prompts. Layout (little-endian):
//!
//! ```text
//! magic "EDGEKVC\0" · version u32 · model fingerprint u64 · block tokens u32 · layers u32 ·
//! kv_dim u32 · element bytes u32 · entry count u64 ·
//! entries, parents before children: key u64 · has parent u8 · parent u64 · adapter u64 ·
//!   pinned u8 · tokens [u32; block tokens] · keys and values (layer by layer, keys then values)
//! FNV-1a 64 checksum of everything before it
//! ```
//!
//! A file whose magic, version, checksum, model fingerprint or geometry does not match is refused
//! whole, with an error that says which; nothing is loaded from it.

use std::path::Path;

use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"EDGEKVC\0";
/// Format version this build writes and reads.
pub const VERSION: u32 = 1;

/// What a file must match to be loaded: the model and the cache's geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Fingerprint of the model (architecture, hyperparameters, tensor table and samples of the
    /// weight bytes).
    pub model: u64,
    /// Positions per block.
    pub block_tokens: u32,
    /// Layers.
    pub n_layers: u32,
    /// Width of a layer's keys (and values) per position.
    pub kv_dim: u32,
    /// Bytes of one stored element (2: f16, 4: f32).
    pub element_bytes: u32,
}

impl Geometry {
    /// Bytes of one block's keys and values over all layers.
    pub fn block_bytes(&self) -> usize {
        2 * self.n_layers as usize * self.block_tokens as usize * self.kv_dim as usize * self.element_bytes as usize
    }
}

/// One cached block as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct FileEntry {
    /// Its prefix-cache key.
    pub key: u64,
    /// Key of the block before it.
    pub parent: Option<u64>,
    /// Adapter identity (0: none).
    pub adapter: u64,
    /// Whether it was pinned (an explicitly cached system prompt).
    pub pinned: bool,
    /// Its tokens.
    pub tokens: Vec<u32>,
    /// Its keys and values, [`Geometry::block_bytes`] long.
    pub kv: Vec<u8>,
}

/// FNV-1a, 64 bits: a checksum that catches truncation and flipped bytes (not an adversary).
pub fn fnv1a(bytes: &[u8], mut h: u64) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// FNV-1a's starting value.
pub const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// Writes `entries` to `path` (through a temporary file renamed into place, so a crash never
/// leaves half a file under the name).
pub fn write(path: &Path, g: &Geometry, entries: &[FileEntry]) -> Result<()> {
    let mut out = Vec::with_capacity(64 + entries.len() * (g.block_bytes() + 64));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&g.model.to_le_bytes());
    for v in [g.block_tokens, g.n_layers, g.kv_dim, g.element_bytes] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for e in entries {
        if e.tokens.len() != g.block_tokens as usize || e.kv.len() != g.block_bytes() {
            return Err(Error::Internal("a prefix-cache entry does not match the cache geometry".into()));
        }
        out.extend_from_slice(&e.key.to_le_bytes());
        out.push(e.parent.is_some() as u8);
        out.extend_from_slice(&e.parent.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&e.adapter.to_le_bytes());
        out.push(e.pinned as u8);
        e.tokens.iter().for_each(|t| out.extend_from_slice(&t.to_le_bytes()));
        out.extend_from_slice(&e.kv);
    }
    let sum = fnv1a(&out, FNV_START);
    out.extend_from_slice(&sum.to_le_bytes());
    let tmp = path.with_extension("tmp-edgellm");
    std::fs::write(&tmp, &out).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Reads and checks a file written by [`write`] for a cache of geometry `g`.
pub fn read(path: &Path, g: &Geometry) -> Result<Vec<FileEntry>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |msg: String| Error::format(path, msg);
    if bytes.len() < MAGIC.len() + 4 || &bytes[..8] != MAGIC {
        return Err(bad("not an edgellm prefix-cache file".into()));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(bad(format!("prefix-cache format version {version}; this build reads version {VERSION}")));
    }
    if bytes.len() < 52 {
        return Err(bad("the file is truncated".into()));
    }
    let (body, sum) = bytes.split_at(bytes.len() - 8);
    if fnv1a(body, FNV_START) != u64::from_le_bytes(sum.try_into().expect("8 bytes")) {
        return Err(bad("checksum mismatch: the file is corrupt or truncated".into()));
    }
    let mut r = Reader { b: body, at: 12 };
    let saved = Geometry { model: r.u64()?, block_tokens: r.u32()?, n_layers: r.u32()?, kv_dim: r.u32()?, element_bytes: r.u32()? };
    if saved.model != g.model {
        return Err(Error::InvalidArgument(format!(
            "{}: the prefix cache was saved for another model (fingerprint {:016x}, this model {:016x})",
            path.display(),
            saved.model,
            g.model
        )));
    }
    if saved != *g {
        return Err(Error::InvalidArgument(format!(
            "{}: the prefix cache was saved with another cache layout ({saved:?}; this runtime {g:?}, e.g. exact vs fast arithmetic)",
            path.display()
        )));
    }
    let n = r.u64()?;
    let per = 8 + 1 + 8 + 8 + 1 + 4 * g.block_tokens as usize + g.block_bytes();
    if n > (body.len() / per.max(1)) as u64 {
        return Err(bad(format!("{n} entries cannot fit in {} bytes", body.len())));
    }
    let mut entries = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let key = r.u64()?;
        let has_parent = r.u8()? != 0;
        let parent = r.u64()?;
        let adapter = r.u64()?;
        let pinned = r.u8()? != 0;
        let tokens = (0..g.block_tokens).map(|_| r.u32()).collect::<Result<Vec<u32>>>()?;
        let kv = r.take(g.block_bytes())?.to_vec();
        entries.push(FileEntry { key, parent: has_parent.then_some(parent), adapter, pinned, tokens, kv });
    }
    if r.at != body.len() {
        return Err(bad(format!("{} bytes after the last entry", body.len() - r.at)));
    }
    Ok(entries)
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len());
        let end = end.ok_or_else(|| Error::ModelFormat { file: "prefix cache".into(), msg: "the file is truncated".into() })?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry() -> Geometry {
        Geometry { model: 42, block_tokens: 2, n_layers: 1, kv_dim: 3, element_bytes: 2 }
    }

    fn entry(key: u64, parent: Option<u64>) -> FileEntry {
        FileEntry { key, parent, adapter: 0, pinned: true, tokens: vec![1, 2], kv: (0..24).collect() }
    }

    #[test]
    fn round_trip_and_refusals() {
        let dir = std::env::temp_dir().join(format!("edgellm-kvfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.kv");
        let es = vec![entry(1, None), entry(2, Some(1))];
        write(&p, &geometry(), &es).unwrap();
        assert_eq!(read(&p, &geometry()).unwrap(), es);
        let other = Geometry { model: 7, ..geometry() };
        assert!(read(&p, &other).unwrap_err().to_string().contains("another model"));
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[40] ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        assert!(read(&p, &geometry()).unwrap_err().to_string().contains("checksum"));
        std::fs::write(&p, &bytes[..30]).unwrap();
        assert!(read(&p, &geometry()).is_err());
        std::fs::write(&p, b"hello world, not a cache").unwrap();
        assert!(read(&p, &geometry()).unwrap_err().to_string().contains("not an edgellm"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
