//! prodcat: a streaming pipeline that categorizes e-commerce products.
//!
//! Product records come from Kafka or Parquet, their text is micro-batched through classifiers
//! served by ONNX Runtime, and labeled records go to Arrow IPC, Parquet or Kafka. Classifiers are
//! fine-tuned inside prodcat (LoRA on a BERT-family encoder, with candle), exported to ONNX from
//! Rust, checked for parity and kept in an on-disk registry.
//!
//! Module map:
//! - [`common`]: the ground floor: text composition, graph names, batch limits, the kinds, heads
//! - [`data`]: reading labeled tables, train/validation/test splits
//! - [`tokenize`]: `tokenizer.json` handling and padded batches
//! - [`encoder`]: the candle encoder with LoRA, used for training and as the parity reference
//! - [`train`]: the fine-tuning recipe, export, parity, publication
//! - [`onnx`]: writing ONNX graphs from Rust
//! - [`registry`]: model versions on disk and their cards, a version's held-out rows
//! - [`serve`]: ONNX Runtime sessions, the `Model` trait, the token-budget batcher, the model slot
//! - [`staging`]: a new version on its way to the registry (files, card, parity, test metrics)
//! - [`models`]: the model kinds (transformer, lexical, ensemble, cascade): loading and retraining
//! - [`fsutil`]: durable renames and atomic writes
//! - [`eval`]: metrics, reports and plots
//! - [`pipeline`]: the data path (engine, relabel job, sinks)
//! - [`metrics`]: Prometheus metrics
//! - [`learn`]: label store, background training, gate, hot swap
//! - [`runtime`]: locating and loading the ONNX Runtime library
//! - [`fault`]: fault injection points for tests

pub mod common;
pub mod config;
pub mod data;
pub mod encoder;
pub mod error;
pub mod eval;
pub mod fault;
pub mod fsutil;
pub mod http;
pub mod learn;
pub mod lexical;
pub mod metrics;
pub mod models;
pub mod onnx;
pub mod pipeline;
pub mod registry;
pub mod runtime;
pub mod serve;
pub mod staging;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod tokenize;
pub mod train;

pub use error::{Error, Result};
