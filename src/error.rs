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

    /// A stage of a running pipeline failed; the pipeline stops (its health says which stage).
    #[error("pipeline stage `{stage}` failed: {message}")]
    Pipeline { stage: &'static str, message: String },

    /// A stage ended because the stage after it stopped (the cause is that stage's error).
    #[error("{0} stopped")]
    Stopped(&'static str),

    /// The Kafka client failed (consumer, producer, transactions, offset commits).
    #[error("Kafka: {0}")]
    Kafka(String),

    /// A thread or thread pool could not be started, or a thread panicked.
    #[error("{what}: {message}")]
    Thread { what: &'static str, message: String },

    /// A training run was cancelled (shutdown, or a newer run superseded it).
    #[error("training cancelled")]
    Cancelled,

    /// A model was built but refused by its own acceptance check (e.g. int8 costs too much).
    #[error("model refused: {0}")]
    Refused(String),

    /// An ONNX graph cannot be read or rewritten.
    #[error("ONNX graph: {0}")]
    Onnx(String),

    /// A plot could not be drawn.
    #[error("drawing {path}: {message}")]
    Plot { path: PathBuf, message: String },

    /// A broken internal invariant (a bug, not bad input): the message says which.
    #[error("internal error: {0}")]
    Internal(String),
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

    /// A thread-start or join failure.
    pub fn thread(what: &'static str, err: impl std::fmt::Display) -> Self {
        Error::Thread { what, message: err.to_string() }
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
