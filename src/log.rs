//! Library-wide logging with one pluggable sink. The rest of the crate calls [`log`] (or the
//! `edgellm_log!` macro); by default messages go nowhere, so an embedded library stays quiet in
//! its host. The C API installs a sink with `edgellm_set_log_callback` (see `src/ffi/log.rs`).

use std::sync::{Arc, RwLock};

/// Severity of a log message; a sink receives messages at or above its minimum level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Detail useful only when debugging the library.
    Debug = 0,
    /// Normal progress (model loaded, graph captured, ...).
    Info = 1,
    /// Something unexpected that the library worked around.
    Warn = 2,
    /// A failure that is also reported through an error value.
    Error = 3,
}

impl Level {
    /// Level for a raw number (0 = debug .. 3 = error); numbers above 3 mean error.
    pub fn from_u32(v: u32) -> Level {
        match v {
            0 => Level::Debug,
            1 => Level::Info,
            2 => Level::Warn,
            _ => Level::Error,
        }
    }
}

/// A log sink: receives the level and the message text. It may be called from any thread.
pub type Sink = dyn Fn(Level, &str) + Send + Sync;

struct Logger {
    sink: Box<Sink>,
    min_level: Level,
}

// An Arc is cloned out of the lock before calling the sink, so a sink may itself call `set_sink`
// (or log) without deadlocking.
static LOGGER: RwLock<Option<Arc<Logger>>> = RwLock::new(None);

/// Installs `sink` for messages at or above `min_level`, replacing any previous sink; `None`
/// silences logging.
pub fn set_sink(sink: Option<Box<Sink>>, min_level: Level) {
    let logger = sink.map(|sink| Arc::new(Logger { sink, min_level }));
    match LOGGER.write() {
        Ok(mut guard) => *guard = logger,
        Err(poisoned) => *poisoned.into_inner() = logger,
    }
}

fn current() -> Option<Arc<Logger>> {
    match LOGGER.read() {
        Ok(guard) => guard.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

/// Whether a message at `level` would reach a sink (lets callers skip formatting).
pub fn enabled(level: Level) -> bool {
    current().is_some_and(|l| level >= l.min_level)
}

/// Sends `message` at `level` to the installed sink, if any accepts that level.
pub fn log(level: Level, message: &str) {
    if let Some(logger) = current() {
        if level >= logger.min_level {
            (logger.sink)(level, message);
        }
    }
}

/// Formats and logs a message only when a sink accepts its level:
/// `edgellm_log!(Info, "loaded {} tensors", n)`.
#[macro_export]
macro_rules! edgellm_log {
    ($level:ident, $($arg:tt)+) => {
        if $crate::log::enabled($crate::log::Level::$level) {
            $crate::log::log($crate::log::Level::$level, &format!($($arg)+));
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn sink_receives_only_levels_at_or_above_minimum() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        set_sink(
            Some(Box::new(move |lvl, msg| s.lock().unwrap().push((lvl, msg.to_string())))),
            Level::Warn,
        );
        log(Level::Info, "dropped");
        crate::edgellm_log!(Warn, "kept {}", 1);
        set_sink(None, Level::Debug);
        log(Level::Error, "after removal");
        assert_eq!(*seen.lock().unwrap(), vec![(Level::Warn, "kept 1".to_string())]);
    }
}
