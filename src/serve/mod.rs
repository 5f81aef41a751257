//! Serving models through ONNX Runtime: loading a registry version, running batches, and the
//! model slot the data path reads from.

mod classifier;
mod session;

pub use classifier::{Cascade, Classifier, ModelIdentity, ModelSlot, Prediction, Stage, top_k};
pub use session::{ExecutionTarget, LoadedModel, ModelOutput, Preprocessor, SessionSettings, build_session};
