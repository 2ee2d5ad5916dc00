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

/// Drops this process's resident pages of `map[offset..offset + len]` (whole pages inside that
/// range only), so that a tensor copied elsewhere (repacked weights) stops counting towards the
/// resident set. Later reads fault the pages back in from the page cache or the file.
pub(crate) fn release_pages(map: &memmap2::Mmap, offset: usize, len: usize) {
    const PAGE: usize = 4096;
    let base = map.as_ptr() as usize;
    let start = (base + offset).next_multiple_of(PAGE) - base;
    let end = ((base + offset + len) / PAGE * PAGE).saturating_sub(base);
    if end <= start || end > map.len() {
        return;
    }
    // SAFETY: `map` is a read-only private file mapping (`map_read_only`), never written, so it
    // holds no private copies: MADV_DONTNEED only unmaps clean pages, and the next read of any
    // address in the range returns the same file bytes (the file is immutable while loaded, as
    // `map_read_only` requires). References into the range stay valid. A failure only means the
    // pages stay resident, so it is ignored.
    let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start) };
}
