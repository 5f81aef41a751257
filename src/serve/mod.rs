//! Serving models through ONNX Runtime: sessions, the [`Model`] trait every kind implements, the
//! token-budget batcher every scoring path uses, and the slot the data path reads the model from.
//!
//! Layering: `serve` knows no model kinds. The kinds (transformer, lexical, ensemble, cascade) live in
//! [`crate::models`], which loads a [`crate::registry::ModelVersion`] into a `dyn Model`.

pub mod batcher;
mod model;
mod session;
mod slot;

pub use batcher::{plan_batches, score_texts};
pub use model::{
    DEFAULT_LABEL_THRESHOLD, Model, ModelIdentity, Prediction, Preprocess, Scored, SingleModel, labels_above, top_k,
};
pub use session::{ExecutionTarget, ModelOutput, OnnxSession, SessionSettings, build_session};
pub use slot::ModelSlot;
