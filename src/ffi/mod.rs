//! The C boundary: the only `extern "C"` and `unsafe` code in the crate.

pub(crate) mod mmap;
