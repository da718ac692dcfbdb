//! Library errors. Each message names the file, key or flag and what is accepted.

use std::path::PathBuf;

/// Everything that can go wrong before or during a simulation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The experiment file (or a CLI override) is malformed or out of range.
    #[error("{file}: {msg}")]
    Config { file: String, msg: String },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A `.npy` file has the wrong type, shape or values.
    #[error("{}: {msg}", path.display())]
    Npy { path: PathBuf, msg: String },
    /// Existing results cannot be resumed safely.
    #[error("{}: {msg}", path.display())]
    Results { path: PathBuf, msg: String },
    /// A GPU was asked for and cannot be used.
    #[error("{0}")]
    Gpu(String),
    /// A CSV file could not be written.
    #[error("{}: {source}", path.display())]
    Csv { path: PathBuf, source: csv::Error },
}

/// Library result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A configuration error for `file`.
    pub fn config(file: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Config {
            file: file.into(),
            msg: msg.into(),
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
