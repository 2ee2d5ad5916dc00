//! Status codes, the thread-local last-error message, and the boundary every exported function
//! runs inside: it catches panics, turns typed errors into a stable `edgellm_status`, and records
//! the detailed message for `edgellm_last_error()`.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::Error;

/// Result of every fallible C API call. Values are stable across releases; a retired code is
/// never reused for another meaning.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum edgellm_status {
    /// Success.
    EDGELLM_OK = 0,
    /// An argument is out of range or inconsistent (e.g. a negative token id).
    EDGELLM_ERR_INVALID_ARGUMENT = 1,
    /// A required pointer argument was NULL.
    EDGELLM_ERR_NULL_POINTER = 2,
    /// A file could not be opened or read.
    EDGELLM_ERR_IO = 3,
    /// A model file is corrupt, truncated or inconsistent.
    EDGELLM_ERR_MODEL_FORMAT = 4,
    /// Valid input that this build or backend does not support.
    EDGELLM_ERR_UNSUPPORTED = 5,
    /// The prompt plus generation does not fit in the context window.
    EDGELLM_ERR_CONTEXT_OVERFLOW = 6,
    /// A memory plan or allocation failed.
    EDGELLM_ERR_OUT_OF_MEMORY = 7,
    /// The compute backend failed or is absent.
    EDGELLM_ERR_BACKEND = 8,
    /// Tokenizer construction, encoding or decoding failed.
    EDGELLM_ERR_TOKENIZER = 9,
    /// Chat template missing, unknown or failing to render.
    EDGELLM_ERR_TEMPLATE = 10,
    /// Text passed in is not valid UTF-8.
    EDGELLM_ERR_INVALID_UTF8 = 11,
    /// A named object (template style, adapter, ...) does not exist.
    EDGELLM_ERR_NOT_FOUND = 12,
    /// An output buffer is too small; the needed size was written to the size out-pointer.
    EDGELLM_ERR_BUFFER_TOO_SMALL = 13,
    /// A bug in the library (an internal check failed or a panic was caught).
    EDGELLM_ERR_INTERNAL = 14,
}

use edgellm_status::*;

impl edgellm_status {
    /// Every status, in numeric order (for tests and for `edgellm_status_string`).
    pub const ALL: [edgellm_status; 15] = [
        EDGELLM_OK,
        EDGELLM_ERR_INVALID_ARGUMENT,
        EDGELLM_ERR_NULL_POINTER,
        EDGELLM_ERR_IO,
        EDGELLM_ERR_MODEL_FORMAT,
        EDGELLM_ERR_UNSUPPORTED,
        EDGELLM_ERR_CONTEXT_OVERFLOW,
        EDGELLM_ERR_OUT_OF_MEMORY,
        EDGELLM_ERR_BACKEND,
        EDGELLM_ERR_TOKENIZER,
        EDGELLM_ERR_TEMPLATE,
        EDGELLM_ERR_INVALID_UTF8,
        EDGELLM_ERR_NOT_FOUND,
        EDGELLM_ERR_BUFFER_TOO_SMALL,
        EDGELLM_ERR_INTERNAL,
    ];

    /// Short fixed description of the code.
    pub fn message(self) -> &'static CStr {
        match self {
            EDGELLM_OK => c"success",
            EDGELLM_ERR_INVALID_ARGUMENT => c"invalid argument",
            EDGELLM_ERR_NULL_POINTER => c"NULL pointer argument",
            EDGELLM_ERR_IO => c"I/O error",
            EDGELLM_ERR_MODEL_FORMAT => c"invalid model format",
            EDGELLM_ERR_UNSUPPORTED => c"unsupported",
            EDGELLM_ERR_CONTEXT_OVERFLOW => c"context window overflow",
            EDGELLM_ERR_OUT_OF_MEMORY => c"out of memory",
            EDGELLM_ERR_BACKEND => c"backend error",
            EDGELLM_ERR_TOKENIZER => c"tokenizer error",
            EDGELLM_ERR_TEMPLATE => c"chat template error",
            EDGELLM_ERR_INVALID_UTF8 => c"invalid UTF-8",
            EDGELLM_ERR_NOT_FOUND => c"not found",
            EDGELLM_ERR_BUFFER_TOO_SMALL => c"buffer too small",
            EDGELLM_ERR_INTERNAL => c"internal error",
        }
    }
}

/// A failed call as the boundary sees it: the code to return and the detailed message.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: edgellm_status,
    pub(crate) message: String,
}

impl Failure {
    /// A failure with an explicit code and message.
    pub(crate) fn new(status: edgellm_status, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
        }
    }

    /// A required pointer argument named `what` was NULL.
    pub(crate) fn null(what: &str) -> Self {
        Failure::new(EDGELLM_ERR_NULL_POINTER, format!("{what} must not be NULL"))
    }

    /// An output buffer of `cap` elements is short of the `needed` ones.
    pub(crate) fn too_small(what: &str, cap: usize, needed: usize) -> Self {
        Failure::new(
            EDGELLM_ERR_BUFFER_TOO_SMALL,
            format!("{what} holds {cap} elements but {needed} are needed"),
        )
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::InvalidArgument(_) => EDGELLM_ERR_INVALID_ARGUMENT,
            Error::Io { .. } => EDGELLM_ERR_IO,
            Error::ModelFormat { .. } => EDGELLM_ERR_MODEL_FORMAT,
            Error::Unsupported(_) => EDGELLM_ERR_UNSUPPORTED,
            Error::ContextOverflow(_) => EDGELLM_ERR_CONTEXT_OVERFLOW,
            Error::OutOfMemory(_) => EDGELLM_ERR_OUT_OF_MEMORY,
            Error::Backend(_) => EDGELLM_ERR_BACKEND,
            Error::Tokenizer(_) => EDGELLM_ERR_TOKENIZER,
            Error::Template(_) => EDGELLM_ERR_TEMPLATE,
            Error::InvalidUtf8(_) => EDGELLM_ERR_INVALID_UTF8,
            Error::NotFound(_) => EDGELLM_ERR_NOT_FOUND,
            Error::Internal(_) => EDGELLM_ERR_INTERNAL,
        };
        Failure::new(status, e.to_string())
    }
}

thread_local! {
    // The message behind the last failed call on this thread; C reads it through a pointer that
    // stays valid until the next call that replaces it.
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    // A message with an interior NUL would be cut there by C anyway; keep the part before it.
    let bytes = message.split('\0').next().unwrap_or_default();
    let text = CString::new(bytes).unwrap_or_default();
    LAST_ERROR.with(|cell| *cell.borrow_mut() = text);
}

/// Pointer to this thread's last error message (empty string when the last call succeeded).
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR.with(|cell| cell.borrow().as_ptr())
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}

/// Runs the body of an exported function: a panic becomes `EDGELLM_ERR_INTERNAL`, an error its
/// status code, and this thread's last-error message is set (or cleared on success).
pub(crate) fn boundary(function: &str, body: impl FnOnce() -> Result<(), Failure>) -> edgellm_status {
    let result = catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        Err(Failure::new(
            EDGELLM_ERR_INTERNAL,
            format!("internal error: panic: {}", panic_message(payload.as_ref())),
        ))
    });
    match result {
        Ok(()) => {
            set_last_error("");
            EDGELLM_OK
        }
        Err(failure) => {
            let message = format!("{function}: {}", failure.message);
            // The log sink is user code behind a Rust closure; keep even its failure inside.
            let _ = catch_unwind(AssertUnwindSafe(|| crate::edgellm_log!(Debug, "{message}")));
            set_last_error(&message);
            failure.status
        }
    }
}

/// Boundary for the few exports that return a value instead of a status and cannot fail on
/// valid input (getters of static strings, default parameter structs): a panic yields
/// `fallback` instead of unwinding into C.
pub(crate) fn boundary_value<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

/// Returns a fixed, human-readable description of a status code.
///
/// `code` is an `edgellm_status` value; unknown values give "unknown status code".
/// The returned string is static: never free it. Thread-safe.
#[no_mangle]
pub extern "C" fn edgellm_status_string(code: u32) -> *const c_char {
    boundary_value(c"unknown status code".as_ptr(), || {
        edgellm_status::ALL
            .iter()
            .find(|s| **s as u32 == code)
            .map_or(c"unknown status code", |s| s.message())
            .as_ptr()
    })
}

/// Returns the detailed message of the last failed call made on the calling thread, or an empty
/// string if that call succeeded.
///
/// Never NULL. The string is owned by the library and stays valid until the next `edgellm_*`
/// call on the same thread; copy it to keep it. Each thread has its own message.
#[no_mangle]
pub extern "C" fn edgellm_last_error() -> *const c_char {
    boundary_value(c"".as_ptr(), last_error_ptr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last_error() -> String {
        // SAFETY: `last_error_ptr` always returns a valid NUL-terminated string of this thread.
        unsafe { CStr::from_ptr(last_error_ptr()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn panic_becomes_internal_error_with_message() {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {})); // keep the expected panic out of the test output
        let status = boundary("edgellm_test", || panic!("boom {}", 7));
        std::panic::set_hook(prev);
        assert_eq!(status, EDGELLM_ERR_INTERNAL);
        assert_eq!(last_error(), "edgellm_test: internal error: panic: boom 7");
    }

    #[test]
    fn errors_map_to_codes_and_success_clears_message() {
        let status = boundary("f", || Err(Error::ContextOverflow("too long".into()).into()));
        assert_eq!(status, EDGELLM_ERR_CONTEXT_OVERFLOW);
        assert_eq!(last_error(), "f: too long");
        assert_eq!(boundary("g", || Ok(())), EDGELLM_OK);
        assert_eq!(last_error(), "");
    }

    #[test]
    fn every_code_has_a_distinct_message_and_value() {
        for (i, s) in edgellm_status::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i, "codes are dense and in order");
            assert!(!s.message().is_empty());
        }
    }
}
