//! The crate's one error type and its `Result` alias.
//!
//! Every variant names what went wrong *and where* (the file, the column, the config key), so a
//! message printed to an operator is enough to fix the problem without a backtrace.

use std::path::PathBuf;

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in prodcat's library code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Input data is unusable as a whole (missing column, wrong type, unreadable file).
    #[error("{file}: {message}")]
    Data { file: PathBuf, message: String },

    /// A model folder or model file is missing something or is inconsistent.
    #[error("model {path}: {message}")]
    Model { path: PathBuf, message: String },

    /// Configuration is invalid; `key` is the dotted config key or CLI flag.
    #[error("config `{key}`: {message}")]
    Config { key: String, message: String },

    /// The ONNX Runtime shared library could not be found or loaded.
    #[error("ONNX Runtime: {0}")]
    Runtime(String),

    /// ONNX Runtime failed while building a session or running a model.
    #[error("ONNX Runtime: {0}")]
    Ort(#[from] ort::Error),

    /// The candle tensor library failed (training and the reference forward pass).
    #[error("tensor computation: {0}")]
    Candle(#[from] candle_core::Error),

    /// Tokenizer failure (loading `tokenizer.json` or encoding text).
    #[error("tokenizer {path}: {message}")]
    Tokenizer { path: PathBuf, message: String },

    /// The exported ONNX graph does not reproduce the reference logits.
    #[error("parity check failed: max |candle - onnx| = {max_abs_diff:e} > {tolerance:e}")]
    Parity { max_abs_diff: f32, tolerance: f32 },

    /// Arrow / Parquet / DataFusion failure while reading or writing tables.
    #[error("{context}: {message}")]
    Table { context: String, message: String },

    /// A label at evaluation time that the model does not know, and similar label mismatches.
    #[error("{0}")]
    Label(String),

    /// JSON (de)serialization of a model card, label list or metrics file.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// Anything else, with enough context to act on.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Attach a path to an I/O error.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// A problem with an input file as a whole.
    pub fn data(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Data { file: file.into(), message: message.into() }
    }

    /// A problem with a model folder.
    pub fn model(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Model { path: path.into(), message: message.into() }
    }

    /// A configuration problem tied to a key.
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config { key: key.into(), message: message.into() }
    }

    /// A table-processing failure with the context it happened in.
    pub fn table(context: impl Into<String>, err: impl std::fmt::Display) -> Self {
        Error::Table { context: context.into(), message: err.to_string() }
    }
}

/// Extension to attach a path to `std::io::Result`s.
pub trait IoContext<T> {
    /// Map an I/O error to [`Error::Io`] naming `path`.
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
