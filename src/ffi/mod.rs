//! The C boundary: the only `extern "C"`, raw-pointer and `unsafe` code in the crate.
//! `include/edgellm.h` is generated from these files by cbindgen (`cbindgen.toml`); the test
//! `tests/ffi_header_up_to_date.rs` fails when the committed header differs.
//!
//! One file per C object family, each mirroring one Rust module: `status` (codes, last error,
//! the panic-catching boundary every export runs in), `runtime`, `request`, `response`,
//! `tokenize` (tokenizer and chat template), `log`, `version`. All pointer casting and null
//! checking lives in `handle`, so the API files read like ordinary Rust. `mmap` holds the one
//! unsafe call the loaders need.

mod handle;
pub mod log;
pub(crate) mod mmap;
pub mod pool;
pub mod simd;
pub mod request;
mod request_json;
pub mod response;
pub mod runtime;
pub mod serving;
pub mod status;
pub mod tokenize;
pub mod version;

pub use log::{edgellm_log_callback, edgellm_log_level, edgellm_set_log_callback};
pub use request::*;
pub use response::*;
pub use runtime::*;
pub use status::{edgellm_last_error, edgellm_status, edgellm_status_string};
pub use tokenize::*;
pub use version::edgellm_version;
