//! RoBERTa and XLM-RoBERTa: BERT's blocks and names under `roberta.`, positions counted from
//! `pad_token_id + 1` (the padding id's row and those before it are never used), one token type.
//! Their tokenizers (byte-level BPE, SentencePiece Unigram) come in `tokenizer.json`.

use std::path::Path;

use serde_json::Value;

use super::{BERT_EMBEDDINGS, EmbeddingNames, Family, Keys, LayerNames, bert_hf_config, bert_keys, bert_layer};
use crate::encoder::config::{EncoderConfig, EncoderFamily};
use crate::error::Result;

pub struct Roberta;

impl Family for Roberta {
    fn id(&self) -> EncoderFamily {
        EncoderFamily::Roberta
    }

    fn model_types(&self) -> &'static [&'static str] {
        &["roberta", "xlm-roberta"]
    }

    fn prefixes(&self) -> &'static [&'static str] {
        &["roberta.", "model."]
    }

    fn config(&self, raw: &Value, path: &Path) -> Result<EncoderConfig> {
        bert_keys(EncoderFamily::Roberta, &Keys::new(raw, path))
    }

    fn embeddings(&self) -> EmbeddingNames {
        BERT_EMBEDDINGS
    }

    fn layer(&self, i: usize) -> LayerNames {
        bert_layer(i)
    }

    fn hf_config(&self, config: &EncoderConfig) -> Value {
        bert_hf_config(config, "roberta", "RobertaModel")
    }
}
