//! `edgellm_set_log_callback`: routes the crate's log messages (`src/log.rs`) to a C function.

use std::ffi::{c_char, c_void, CString};

use super::status::{boundary, edgellm_status};
use crate::log::{self, Level};

/// Severity of a log message (values of the `level` arguments).
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum edgellm_log_level {
    /// Detail useful only when debugging the library.
    EDGELLM_LOG_DEBUG = 0,
    /// Normal progress messages.
    EDGELLM_LOG_INFO = 1,
    /// Something unexpected that the library worked around.
    EDGELLM_LOG_WARN = 2,
    /// A failure (also reported through a status code).
    EDGELLM_LOG_ERROR = 3,
}

/// Log callback: receives `user_data`, the `edgellm_log_level` as a number, and a NUL-terminated
/// message that is valid only during the call. It may be called from any thread, also
/// concurrently, and must not throw or unwind.
#[allow(non_camel_case_types)]
pub type edgellm_log_callback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, level: u32, message: *const c_char)>;

/// The C side's `user_data`, which the caller promised is safe to use from any thread.
struct UserData(*mut c_void);
// SAFETY: `edgellm_set_log_callback` documents that user_data is used from any thread; the
// library only passes it back to the caller's callback.
unsafe impl Send for UserData {}
// SAFETY: as above.
unsafe impl Sync for UserData {}

impl UserData {
    /// The raw pointer; a method (not a field access) so closures capture the whole `Send`
    /// wrapper rather than the bare pointer.
    fn get(&self) -> *mut c_void {
        self.0
    }
}

/// Installs a process-wide log callback receiving messages at or above `min_level`
/// (an `edgellm_log_level`; values above `EDGELLM_LOG_ERROR` mean errors only); a NULL `callback`
/// turns logging off (the default).
///
/// `user_data` is passed back unchanged to every call; it must stay valid until the callback is
/// replaced, and be usable from any thread. Thread-safe; messages being delivered while the
/// callback is replaced may still reach the old callback.
#[no_mangle]
pub extern "C" fn edgellm_set_log_callback(
    callback: edgellm_log_callback,
    user_data: *mut c_void,
    min_level: u32,
) -> edgellm_status {
    boundary("edgellm_set_log_callback", || {
        let min = Level::from_u32(min_level);
        let Some(callback) = callback else {
            log::set_sink(None, min);
            return Ok(());
        };
        let user_data = UserData(user_data);
        log::set_sink(
            Some(Box::new(move |level: Level, message: &str| {
                let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
                // SAFETY: the caller registered `callback` with this `user_data` and promised both
                // stay valid and thread-safe until replaced; `text` outlives the call.
                unsafe { callback(user_data.get(), level as u32, text.as_ptr()) };
            })),
            min,
        );
        Ok(())
    })
}
