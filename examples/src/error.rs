//! The error type of this crate.
//!
//! Library functions never panic on bad input (a missing file, a corrupt dataset, an invalid
//! argument); they return [`Error`] so that example programs can print one clear message.

use std::path::{Path, PathBuf};

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation on `path` failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file's content is not in the expected format.
    #[error("{context}: {message}")]
    Format {
        /// Where the problem is (usually a file path, possibly with a line number).
        context: String,
        /// What is wrong.
        message: String,
    },
    /// A function was called with an argument it cannot work with.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// (De)serialising JSON failed.
    #[error("JSON error: {0}")]
    Json(#[from] serde_json::Error),
}

/// Shorthand for `std::result::Result<T, Error>`.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an I/O error together with the path it concerns.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// A format error with a context (for instance a file name) and a message.
    pub fn format(context: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Format {
            context: context.into(),
            message: message.into(),
        }
    }

    /// An invalid-argument error.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidArgument(message.into())
    }
}
