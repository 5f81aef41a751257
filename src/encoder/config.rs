//! The architecture of a Hugging Face BERT-family encoder, read from its `config.json`.
//!
//! BERT and MiniLM share one layout; DistilBERT and RoBERTa use the same blocks with different
//! embeddings and weight names, so the family is recorded here and consulted by the weight loader.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

/// Encoder families whose weights prodcat can load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncoderFamily {
    /// BERT and BERT-shaped models (MiniLM, all-MiniLM-L6-v2, ...).
    Bert,
    /// RoBERTa-style: positions offset past the padding id, a single token type.
    Roberta,
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
}

#[derive(Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    intermediate_size: Option<usize>,
    max_position_embeddings: Option<usize>,
    type_vocab_size: Option<usize>,
    layer_norm_eps: Option<f64>,
    pad_token_id: Option<u32>,
    hidden_act: Option<String>,
    position_embedding_type: Option<String>,
}

impl EncoderConfig {
    /// Reads `config.json` from a Hugging Face model folder.
    pub fn from_hf_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).at(path)?;
        let raw: HfConfig =
            serde_json::from_str(&text).map_err(|source| Error::Json { path: path.to_path_buf(), source })?;
        let missing = |key: &str| Error::model(path, format!("config.json has no `{key}`"));
        let family = match raw.model_type.as_deref() {
            Some("bert") | None => EncoderFamily::Bert,
            Some("roberta" | "xlm-roberta") => EncoderFamily::Roberta,
            Some(other) => {
                return Err(Error::model(
                    path,
                    format!("model_type `{other}` is not supported yet (supported: bert, roberta)"),
                ));
            }
        };
        if let Some(act) = raw.hidden_act.as_deref().filter(|a| *a != "gelu") {
            return Err(Error::model(path, format!("hidden_act `{act}` is not supported (only `gelu`)")));
        }
        if let Some(kind) = raw.position_embedding_type.as_deref().filter(|p| *p != "absolute") {
            return Err(Error::model(
                path,
                format!("position_embedding_type `{kind}` is not supported (only `absolute`)"),
            ));
        }
        let config = Self {
            family,
            vocab_size: raw.vocab_size.ok_or_else(|| missing("vocab_size"))?,
            hidden_size: raw.hidden_size.ok_or_else(|| missing("hidden_size"))?,
            num_layers: raw.num_hidden_layers.ok_or_else(|| missing("num_hidden_layers"))?,
            num_heads: raw.num_attention_heads.ok_or_else(|| missing("num_attention_heads"))?,
            intermediate_size: raw.intermediate_size.ok_or_else(|| missing("intermediate_size"))?,
            max_positions: raw.max_position_embeddings.unwrap_or(512),
            type_vocab_size: raw.type_vocab_size.unwrap_or(2),
            layer_norm_eps: raw.layer_norm_eps.unwrap_or(1e-12),
            pad_token_id: raw.pad_token_id.unwrap_or(0),
        };
        if config.num_heads == 0 || config.hidden_size % config.num_heads != 0 {
            return Err(Error::model(
                path,
                format!(
                    "hidden_size {} is not divisible by num_attention_heads {}",
                    config.hidden_size, config.num_heads
                ),
            ));
        }
        Ok(config)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// The first position id used for real tokens (RoBERTa counts from `pad_token_id + 1`).
    pub fn position_offset(&self) -> usize {
        match self.family {
            EncoderFamily::Bert => 0,
            EncoderFamily::Roberta => self.pad_token_id as usize + 1,
        }
    }

    /// Longest sequence the position table allows.
    pub fn max_sequence(&self) -> usize {
        self.max_positions.saturating_sub(self.position_offset())
    }

    /// Writes an HF-style `config.json` (used by tests that build tiny models).
    pub fn to_hf_json(&self) -> serde_json::Value {
        serde_json::json!({
            "model_type": match self.family { EncoderFamily::Bert => "bert", EncoderFamily::Roberta => "roberta" },
            "architectures": ["BertModel"],
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_positions,
            "type_vocab_size": self.type_vocab_size,
            "layer_norm_eps": self.layer_norm_eps,
            "pad_token_id": self.pad_token_id,
            "hidden_act": "gelu",
            "position_embedding_type": "absolute",
        })
    }
}
