//! The lexical model family: hashed word and character n-grams into a linear classifier
//! (fastText-style), trained in Rust in seconds and served through the same ONNX Runtime path.

use crate::common::BatchLimits;

mod featurizer;
mod model;
mod train;
mod weights;

pub use featurizer::{Bag, Featurizer};
pub use model::{LexicalFit, LexicalModel, Selection};
pub use train::{LexicalJob, fit_lexical};
pub use weights::{SparseWeights, WeightStats};

/// How lexical models are batched outside the engine: a row costs its feature count, and the
/// embedding bag is cheap, so batches are wide.
pub const SERVE_LIMITS: BatchLimits = BatchLimits { max_tokens: 1 << 20, max_records: 256 };
