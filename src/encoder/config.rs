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
    /// Llama (and Mistral-shaped) decoders: RMSNorm, rotary positions, grouped-query attention,
    /// SwiGLU, no biases.
    Llama,
    /// Qwen2: Llama's block with biases on query, key and value.
    Qwen2,
    /// MPNet: BERT's block under other names with a relative position bias, positions as RoBERTa.
    Mpnet,
    /// Qwen3: Llama's block with RMSNorm on each head's query and key, and an explicit head width.
    Qwen3,
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
    /// SwiGLU: `silu(gate·x) ⊙ (up·x)` — the block has a gate layer (Llama's `silu` MLP).
    SwiGlu,
}

/// The normalisation of the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NormKind {
    /// `(x − mean) / √(var + ε) · γ + β`.
    #[default]
    LayerNorm,
    /// `x / √(mean(x²) + ε) · γ`, no bias (Llama, Qwen).
    RmsNorm,
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
    #[serde(default)]
    pub norm: NormKind,
    /// Key/value heads when fewer than the query heads (grouped-query attention); None: as many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_heads: Option<usize>,
    /// A head width other than `hidden_size / num_heads` (Qwen3's `head_dim`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_width: Option<usize>,
    /// Rotary position embeddings with this base (no position table); None: absolute positions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    /// RMSNorm on each head's query and key before the rotation (Qwen3).
    #[serde(default)]
    pub qk_norm: bool,
    /// A relative position bias over this many buckets, shared by every block (MPNet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative_buckets: Option<usize>,
}

impl EncoderConfig {
    /// The config, or an error when its heads do not divide its width.
    pub fn checked(self, path: &Path) -> Result<Self> {
        let heads = self.num_heads;
        if heads == 0 || (self.head_width.is_none() && !self.hidden_size.is_multiple_of(heads)) {
            return Err(Error::model(
                path,
                format!("hidden_size {} is not divisible by num_attention_heads {heads}", self.hidden_size),
            ));
        }
        if self.kv_heads() == 0 || !heads.is_multiple_of(self.kv_heads()) {
            return Err(Error::model(
                path,
                format!("num_attention_heads {heads} is not divisible by num_key_value_heads {}", self.kv_heads()),
            ));
        }
        if self.rope_theta.is_some() && !self.head_dim().is_multiple_of(2) {
            return Err(Error::model(
                path,
                format!("rotary positions need an even head width, not {}", self.head_dim()),
            ));
        }
        Ok(self)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.head_width.unwrap_or(self.hidden_size / self.num_heads.max(1))
    }

    /// Key/value heads (fewer than the query heads under grouped-query attention).
    pub fn kv_heads(&self) -> usize {
        self.kv_heads.unwrap_or(self.num_heads)
    }

    /// The first position id used for real tokens (RoBERTa counts from `pad_token_id + 1`).
    pub fn position_offset(&self) -> usize {
        match self.family {
            EncoderFamily::Roberta | EncoderFamily::Mpnet => self.pad_token_id as usize + 1,
            _ => 0,
        }
    }

    /// Longest sequence the position table allows.
    pub fn max_sequence(&self) -> usize {
        self.max_positions.saturating_sub(self.position_offset())
    }
}
