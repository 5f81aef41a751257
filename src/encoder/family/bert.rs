//! BERT and BERT-shaped encoders (MiniLM, all-MiniLM-L6-v2): post-norm blocks, exact GELU,
//! absolute positions from 0, token types.

use std::path::Path;

use serde_json::Value;

use super::{BERT_EMBEDDINGS, EmbeddingNames, Family, Keys, LayerNames, bert_hf_config, bert_keys, bert_layer};
use crate::encoder::config::{EncoderConfig, EncoderFamily};
use crate::error::Result;

pub struct Bert;

impl Family for Bert {
    fn id(&self) -> EncoderFamily {
        EncoderFamily::Bert
    }

    fn model_types(&self) -> &'static [&'static str] {
        &["bert"]
    }

    fn prefixes(&self) -> &'static [&'static str] {
        &["bert.", "model."]
    }

    fn config(&self, raw: &Value, path: &Path) -> Result<EncoderConfig> {
        bert_keys(EncoderFamily::Bert, &Keys::new(raw, path))
    }

    fn embeddings(&self) -> EmbeddingNames {
        BERT_EMBEDDINGS
    }

    fn layer(&self, i: usize) -> LayerNames {
        bert_layer(i)
    }

    fn hf_config(&self, config: &EncoderConfig) -> Value {
        bert_hf_config(config, "bert", "BertModel")
    }
}
