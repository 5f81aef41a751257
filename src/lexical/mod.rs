//! The lexical model family: hashed word and character n-grams into a linear classifier
//! (fastText-style), trained in Rust in seconds and served through the same ONNX Runtime path.

mod featurizer;
mod model;
mod train;

pub use featurizer::{Bag, CharTokens, FeatureNorm, Featurizer, FeaturizerSettings, TermFrequency};
pub use model::{LexicalFit, LexicalModel, LexicalSettings, LexicalSolver, Selection, SvmChoice};
pub use train::{LexicalJob, fit_lexical};

/// How lexical models are batched outside the engine: a row costs its feature count, and the
/// embedding bag is cheap, so batches are wide.
pub const SERVE_LIMITS: crate::serve::BatchLimits = crate::serve::BatchLimits { max_tokens: 1 << 20, max_records: 256 };
