//! DistilBERT: BERT's post-norm blocks under other names (`transformer.layer.{i}.attention.q_lin`,
//! `sa_layer_norm`, `ffn.lin1`, `output_layer_norm`) and other config keys (`dim`, `n_layers`,
//! `n_heads`, `hidden_dim`), learned absolute positions from 0, no token types.

use std::path::Path;

use serde_json::Value;

use super::{EmbeddingNames, Family, Keys, LayerNames, sized};
use crate::encoder::config::{EncoderConfig, EncoderFamily};
use crate::error::{Error, Result};

pub struct DistilBert;

/// DistilBERT's LayerNorm epsilon (fixed in its code, not in its config).
const EPS: f64 = 1e-12;

impl Family for DistilBert {
    fn id(&self) -> EncoderFamily {
        EncoderFamily::DistilBert
    }

    fn model_types(&self) -> &'static [&'static str] {
        &["distilbert"]
    }

    fn prefixes(&self) -> &'static [&'static str] {
        &["distilbert."]
    }

    fn config(&self, raw: &Value, path: &Path) -> Result<EncoderConfig> {
        let keys = Keys::new(raw, path);
        keys.only("activation", &["gelu"])?;
        if raw.get("sinusoidal_pos_embds").and_then(Value::as_bool) == Some(true) {
            return Err(Error::model(path, "sinusoidal_pos_embds is not supported (only learned positions)"));
        }
        sized(EncoderFamily::DistilBert, &keys, ["dim", "n_layers", "n_heads", "hidden_dim"], 1, EPS)
    }

    fn embeddings(&self) -> EmbeddingNames {
        EmbeddingNames {
            word: "embeddings.word_embeddings",
            position: Some("embeddings.position_embeddings"),
            token_type: None,
            norm: Some("embeddings.LayerNorm"),
        }
    }

    fn layer(&self, i: usize) -> LayerNames {
        LayerNames::ungated(
            &format!("transformer.layer.{i}"),
            ["attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin", "ffn.lin1", "ffn.lin2"],
            "sa_layer_norm",
            "output_layer_norm",
        )
    }

    fn hf_config(&self, config: &EncoderConfig) -> Value {
        serde_json::json!({
            "model_type": "distilbert",
            "architectures": ["DistilBertModel"],
            "vocab_size": config.vocab_size,
            "dim": config.hidden_size,
            "n_layers": config.num_layers,
            "n_heads": config.num_heads,
            "hidden_dim": config.intermediate_size,
            "max_position_embeddings": config.max_positions,
            "pad_token_id": config.pad_token_id,
            "activation": "gelu",
            "sinusoidal_pos_embds": false,
        })
    }
}
