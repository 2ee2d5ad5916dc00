//! Model file loaders: GGUF files and Hugging Face directories, both untrusted input whose every
//! offset, size and count is checked before use.

pub mod gguf;
pub mod metadata;
pub mod safetensors;
