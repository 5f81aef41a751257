//! Serving models through ONNX Runtime: loading a registry version and running batches.

mod session;

pub use session::{ExecutionTarget, LoadedModel, ModelOutput, SessionSettings};
