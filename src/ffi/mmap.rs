//! Read-only memory maps of model files: the one `unsafe` call the loaders need, kept here with
//! the rest of the crate's unsafe code.

use std::fs::File;

/// Maps `file` read-only. Weights are read straight from the page cache, so start-up costs no
/// copy and several processes share the pages.
pub(crate) fn map_read_only(file: &File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: the map is read-only and private to this process. The remaining hazard of any
    // file mapping is another process truncating or rewriting the file while it is mapped, which
    // would make reads fault or change; model files are treated as immutable while loaded, the
    // same contract llama.cpp and safetensors' mmap loaders document.
    unsafe { memmap2::Mmap::map(file) }
}
