//! libedgellm: an embeddable LLM inference runtime with a C ABI.
//!
//! Data flow: `loader` reads model files (mmapped) into `tensor` views; `model` runs an
//! architecture's forward pass against a `backend`; `vocab` turns text into tokens and back;
//! `sampling` picks tokens; `runtime` ties them together per request; `ffi` is the C boundary.
//! See `docs/ARCHITECTURE.md`.

pub mod backend;
pub mod error;
pub mod kv_cache;
pub mod eval;
pub mod ffi;
#[doc(hidden)]
pub mod fuzzing;
pub mod loader;
pub mod lora;
pub mod log;
pub mod model;
pub mod quant;
pub mod runtime;
pub mod sampling;
pub mod tensor;
pub mod vocab;

pub use error::{Error, Result};
pub use runtime::{GenerationOutput, GenerationRequest, Runtime, RuntimeParams};
