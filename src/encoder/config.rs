//! The architecture of a Hugging Face encoder. Each family reads it from its own `config.json`
//! keys ([`super::family`], where `EncoderConfig::from_hf_file` lives).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Encoder families whose weights prodcat can load (one file each in [`super::family`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncoderFamily {
    /// BERT and BERT-shaped models (MiniLM, all-MiniLM-L6-v2, ...).
    Bert,
    /// RoBERTa and XLM-RoBERTa: positions offset past the padding id, a single token type.
    Roberta,
    /// DistilBERT: BERT's blocks under other names, no token types.
    DistilBert,
    /// GPT-2: a decoder — pre-norm blocks, causal attention, tanh-GELU, a final norm.
    Gpt2,
}

/// The feed-forward activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Exact GELU, 0.5·x·(1 + erf(x/√2)) (BERT's `gelu`).
    #[default]
    Gelu,
    /// GELU's tanh approximation (GPT-2's `gelu_new`).
    GeluTanh,
}

/// Architecture hyper-parameters of the encoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderConfig {
    pub family: EncoderFamily,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    pub max_positions: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub pad_token_id: u32,
    /// Pre-norm blocks (decoders): each sub-layer normalises its input, and a final norm follows
    /// the last block. Cards from before the field: BERT's post-norm.
    #[serde(default)]
    pub norm_first: bool,
    /// Causal attention: a token attends to itself and those before it (decoders).
    #[serde(default)]
    pub causal: bool,
    #[serde(default)]
    pub activation: Activation,
}

impl EncoderConfig {
    /// The config, or an error when its heads do not divide its width.
    pub fn checked(self, path: &Path) -> Result<Self> {
        if self.num_heads == 0 || !self.hidden_size.is_multiple_of(self.num_heads) {
            return Err(Error::model(
                path,
                format!("hidden_size {} is not divisible by num_attention_heads {}", self.hidden_size, self.num_heads),
            ));
        }
        Ok(self)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// The first position id used for real tokens (RoBERTa counts from `pad_token_id + 1`).
    pub fn position_offset(&self) -> usize {
        match self.family {
            EncoderFamily::Bert | EncoderFamily::DistilBert | EncoderFamily::Gpt2 => 0,
            EncoderFamily::Roberta => self.pad_token_id as usize + 1,
        }
    }

    /// Longest sequence the position table allows.
    pub fn max_sequence(&self) -> usize {
        self.max_positions.saturating_sub(self.position_offset())
    }
}
