//! The ground floor: plain types that several layers share, so that every import runs down the
//! layers of `docs/architecture.md` (nothing here imports anything of prodcat but `error`).
//!
//! - [`text`]: how a record's text is composed ([`TextSpec`], the card's [`TextComposition`]) and
//!   why a record cannot be labeled ([`RejectReason`]);
//! - [`graph`]: the input and output names of every served graph;
//! - [`batch`]: the limits of one batch ([`BatchLimits`]);
//! - [`kind`]: the model kinds, listed once ([`Kind`]), and a model's output [`Head`];
//! - [`settings`]: the lexical model's settings records (a card's and `[training.lexical]`'s);
//! - [`progress`]: the progress bar of a long training step;
//! - [`taxonomy`]: category paths, the tree a model's classes make and taxonomy files.

pub mod batch;
pub mod graph;
pub mod kind;
pub mod progress;
pub mod settings;
pub mod taxonomy;
pub mod text;

pub use batch::BatchLimits;
pub use graph::names;
pub use kind::{Head, Kind};
pub use progress::progress_bar;
pub use settings::{
    CSearch, CharTokens, FeatureNorm, FeaturizerSettings, LexicalSettings, LexicalSolver, SvmChoice, TermFrequency,
    WeightStats,
};
pub use taxonomy::{DEFAULT_PATH_SEPARATOR, PathLabels, Taxonomy, TaxonomyFile};
pub use text::{RejectReason, TextComposition, TextSpec};
