//! The lexical model family: hashed word and character n-grams into a linear classifier
//! (fastText-style), trained in Rust in seconds and served through the same ONNX Runtime path.

mod featurizer;
mod model;
mod train;

pub use featurizer::{Featurizer, FeaturizerSettings};
pub use model::{LexicalModel, LexicalSettings};
pub use train::{LexicalJob, fit_lexical};
