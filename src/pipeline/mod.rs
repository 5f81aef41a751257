//! The data path: sources, validation, the labeling engine, and sinks.
//!
//! ```text
//! source ──► decode+validate ──► engine (batcher ─► tokenizer ─► inference) ──► sinks ──► acks
//!                 │ bad → dead letters
//! ```
//! Every stage is connected by bounded channels, so a slow sink slows the source and memory stays
//! bounded. The relabel job ([`relabel`]) and the Kafka pipeline share the engine and sinks.

pub mod engine;
pub mod kafka;
pub mod output;
pub mod relabel;
pub mod sinks;

pub use engine::{EngineSettings, LabeledChunk, LabelingEngine, TextChunk};
