//! Typed errors used everywhere inside the crate. The C boundary (`src/ffi`) maps each kind to a
//! stable `edgellm_status` code; nothing else converts errors to numbers.

use std::path::{Path, PathBuf};

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every failure the library can report, each with a message that names what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A caller-supplied argument is out of range or inconsistent.
    #[error("{0}")]
    InvalidArgument(String),
    /// A file could not be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The operating-system error.
        source: std::io::Error,
    },
    /// A model file is corrupt, truncated or inconsistent.
    #[error("{file}: {msg}")]
    ModelFormat {
        /// File name (or path) of the offending model file.
        file: String,
        /// What is wrong, naming the key or tensor.
        msg: String,
    },
    /// The input is valid but this build or backend does not support it.
    #[error("{0}")]
    Unsupported(String),
    /// The prompt (plus generation) does not fit in the context window.
    #[error("{0}")]
    ContextOverflow(String),
    /// A memory plan or allocation failed.
    #[error("{0}")]
    OutOfMemory(String),
    /// The compute backend (e.g. CUDA driver) failed or is absent.
    #[error("{0}")]
    Backend(String),
    /// Tokenizer construction, encoding or decoding failed.
    #[error("{0}")]
    Tokenizer(String),
    /// Chat template missing, unknown or failing to render.
    #[error("{0}")]
    Template(String),
    /// Text passed in is not valid UTF-8.
    #[error("{0}")]
    InvalidUtf8(String),
    /// A named object (adapter, template style, ...) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A bug: an internal invariant failed or a panic was caught.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Builds a [`Error::ModelFormat`] naming `file` (only its file name, to keep messages short).
    pub fn format(file: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        let p = file.as_ref();
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| p.display().to_string());
        Error::ModelFormat { file: name, msg: msg.into() }
    }

    /// Builds a [`Error::Io`] for `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().to_path_buf(), source }
    }
}
