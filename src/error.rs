//! Typed errors of the georob library. Every variant names the file (or the
//! setting) that is wrong and says what is wrong with it.

use std::path::PathBuf;

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while loading a model or data, or running a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not a valid ONNX model (empty, truncated, random bytes...).
    #[error("{path}: not a valid ONNX model: {reason}")]
    InvalidModel {
        /// The model file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The model is valid ONNX but not an image classifier georob can feed.
    #[error("{path}: not an image classifier georob can audit: {reason}")]
    NotAClassifier {
        /// The model file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The backend failed to load or run the model.
    #[error("{path}: the {backend} backend failed: {reason}")]
    Backend {
        /// The model file.
        path: PathBuf,
        /// Which backend.
        backend: &'static str,
        /// The backend's message.
        reason: String,
    },
    /// The backend cannot be used at all (not compiled in, library missing, no CUDA).
    #[error("the {backend} backend is not available: {reason}")]
    BackendUnavailable {
        /// Which backend.
        backend: &'static str,
        /// Why, and what to do about it.
        reason: String,
    },
    /// The model produced NaN or infinite logits.
    #[error("{path}: the model produced NaN or infinite outputs for input #{index} ({item})")]
    NonFinite {
        /// The model file.
        path: PathBuf,
        /// Index of the offending input in the data set.
        index: usize,
        /// Name of the offending input.
        item: String,
    },
    /// An image could not be decoded or has the wrong shape.
    #[error("{path}: {reason}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A data set (folder, manifest, .npy) is malformed.
    #[error("{path}: {reason}")]
    Data {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A sidecar or other settings file is malformed.
    #[error("{path}: {reason}")]
    Settings {
        /// The settings file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A file georob was pointed at cannot be read as one: not a regular file (a FIFO, a
    /// device, a folder), larger than georob reads from such a file, or not text.
    #[error("{path}: {reason}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Settings given on the command line or through the API are inconsistent.
    #[error("{0}")]
    Config(String),
}

impl Error {
    /// Builds an [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Builds an [`Error::Data`] for `path`.
    pub fn data(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Data {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// Builds an [`Error::Image`] for `path`.
    pub fn image(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Image {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
