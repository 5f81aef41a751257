//! The transformer encoder used for fine-tuning: architecture config, LoRA, custom autograd ops
//! and the candle model.

pub mod config;
pub mod family;
pub mod kernels;
pub mod lora;
pub mod model;
pub mod ops;

pub use config::{EncoderConfig, EncoderFamily};
pub use lora::{LoraSettings, LoraTarget};
pub use model::{Dropout, EncoderClassifier, Pooling, load_base_weights};
