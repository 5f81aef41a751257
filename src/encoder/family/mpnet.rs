//! MPNet (all-mpnet-base-v2): BERT's post-norm blocks with attention named `attention.attn.{q,k,v,o}`,
//! positions counted from `pad_token_id + 1` as RoBERTa's, no token types, and a relative position
//! bias shared by every block (`encoder.relative_attention_bias`, T5's buckets: half for each
//! direction, exact up to a quarter of them, logarithmic up to 128 apart) added to each head's
//! attention scores. Tensors under `mpnet.` (`MPNetFor*`) or none (`MPNetModel`).

use std::path::Path;

use serde_json::Value;

use super::{EmbeddingNames, Family, Keys, LayerNames, bert_keys};
use crate::encoder::config::{EncoderConfig, EncoderFamily};
use crate::error::Result;

pub struct Mpnet;

/// Where the shared relative position bias (`[buckets, heads]`) lives.
const RELATIVE_BIAS: &str = "encoder.relative_attention_bias";

impl Family for Mpnet {
    fn id(&self) -> EncoderFamily {
        EncoderFamily::Mpnet
    }

    fn model_types(&self) -> &'static [&'static str] {
        &["mpnet"]
    }

    fn prefixes(&self) -> &'static [&'static str] {
        &["mpnet."]
    }

    fn config(&self, raw: &Value, path: &Path) -> Result<EncoderConfig> {
        let keys = Keys::new(raw, path);
        let mut config = bert_keys(EncoderFamily::Mpnet, &keys)?;
        config.type_vocab_size = 1;
        config.pad_token_id = keys.optional_usize("pad_token_id")?.unwrap_or(1) as u32;
        config.layer_norm_eps = keys.optional_f64("layer_norm_eps")?.unwrap_or(1e-5);
        config.relative_buckets = Some(keys.optional_usize("relative_attention_num_buckets")?.unwrap_or(32));
        Ok(config)
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
            &format!("encoder.layer.{i}"),
            [
                "attention.attn.q",
                "attention.attn.k",
                "attention.attn.v",
                "attention.attn.o",
                "intermediate.dense",
                "output.dense",
            ],
            "attention.LayerNorm",
            "output.LayerNorm",
        )
    }

    fn relative_bias(&self) -> Option<&'static str> {
        Some(RELATIVE_BIAS)
    }

    fn hf_config(&self, config: &EncoderConfig) -> Value {
        serde_json::json!({
            "model_type": "mpnet",
            "architectures": ["MPNetModel"],
            "vocab_size": config.vocab_size,
            "hidden_size": config.hidden_size,
            "num_hidden_layers": config.num_layers,
            "num_attention_heads": config.num_heads,
            "intermediate_size": config.intermediate_size,
            "max_position_embeddings": config.max_positions,
            "layer_norm_eps": config.layer_norm_eps,
            "pad_token_id": config.pad_token_id,
            "bos_token_id": 0,
            "eos_token_id": 2,
            "hidden_act": "gelu",
            "relative_attention_num_buckets": config.relative_buckets.unwrap_or(32),
        })
    }
}

/// MPNet's bucket of the relative position `key − query` (Hugging Face's
/// `relative_position_bucket`, max distance 128), computed in f64 so powers of two land exactly.
pub fn relative_bucket(relative: i64, buckets: usize) -> usize {
    let half = (buckets / 2) as i64;
    let n = -relative;
    let mut bucket = if n < 0 { half } else { 0 };
    let n = n.abs();
    let exact = half / 2;
    bucket += if n < exact {
        n
    } else {
        let scaled = ((n as f64 / exact as f64).ln() / (128.0 / exact as f64).ln() * (half - exact) as f64) as i64;
        (exact + scaled).min(half - 1)
    };
    bucket as usize
}
