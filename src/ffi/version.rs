//! Library version as a string; the `EDGELLM_VERSION_*` macros of the header are written by
//! cbindgen from `cbindgen.toml` and checked against Cargo.toml by `tests/ffi_version.rs`.

use std::ffi::c_char;

use super::status::boundary_value;

const VERSION: &std::ffi::CStr =
    match std::ffi::CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(v) => v,
        Err(_) => panic!("crate version contains a NUL byte"),
    };

/// Returns the version of the loaded library as "MAJOR.MINOR.PATCH".
///
/// Compare with the `EDGELLM_VERSION_*` macros to detect a header/library mismatch. The string is
/// static: never free it. Thread-safe.
#[no_mangle]
pub extern "C" fn edgellm_version() -> *const c_char {
    boundary_value(c"".as_ptr(), || VERSION.as_ptr())
}
