//! Text to token ids: a Hugging Face `tokenizer.json` without its built-in padding, plus a padded
//! batch layout shared by training (candle) and serving (ONNX Runtime).
//!
//! Padding is done here, per batch, to the longest sequence in the batch, never to a fixed length:
//! with product titles of ~20 tokens, padding to 128 would make every batch six times as costly.

mod wordpiece;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use tokenizers::{Tokenizer, TruncationParams};

use wordpiece::AsciiWordPiece;

use crate::error::{Error, Result};

/// Token ids and segment ids of one text (no padding; attention mask is all ones).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenizedText {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
}

impl TokenizedText {
    /// Number of tokens, special tokens included.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True for a text that produced no tokens at all.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// A `tokenizer.json` configured for prodcat: truncation at `max_length`, no padding.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    /// The ASCII fast path, for BERT-style WordPiece tokenizers ([`wordpiece`]).
    fast: Option<Arc<AsciiWordPiece>>,
    path: PathBuf,
    max_length: usize,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("path", &self.path)
            .field("max_length", &self.max_length)
            .field("ascii_fast_path", &self.fast.is_some())
            .finish()
    }
}

impl TextTokenizer {
    /// Loads `path` (a `tokenizer.json`), truncating every text to `max_length` tokens.
    pub fn from_file(path: &Path, max_length: usize) -> Result<Self> {
        let err = |message: String| Error::Tokenizer { path: path.to_path_buf(), message };
        if !path.is_file() {
            return Err(err("file not found".into()));
        }
        // Read once: Hugging Face builds its tokenizer from the bytes, the fast path its tables.
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let mut inner = Tokenizer::from_bytes(&bytes).map_err(|e| err(e.to_string()))?;
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams { max_length, ..Default::default() }))
            .map_err(|e| err(e.to_string()))?;
        let fast = serde_json::from_slice(&bytes).ok().as_ref().and_then(AsciiWordPiece::from_json).map(Arc::new);
        Ok(Self { inner, fast, path: path.to_path_buf(), max_length })
    }

    /// This tokenizer with every text going through Hugging Face tokenizers (the reference the
    /// fast path is checked against, and the benchmark's baseline).
    pub fn without_fast_path(mut self) -> Self {
        self.fast = None;
        self
    }

    /// Whether ASCII texts take the fast path.
    pub fn has_fast_path(&self) -> bool {
        self.fast.is_some()
    }

    /// The file this tokenizer was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Maximum tokens per text (longer texts are truncated).
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Writes the configured tokenizer (no padding, this truncation) as a `tokenizer.json`.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner.save(path, false).map_err(|e| Error::Tokenizer { path: path.to_path_buf(), message: e.to_string() })
    }

    /// Tokenizes one text.
    pub fn encode(&self, text: &str) -> Result<TokenizedText> {
        if let Some(fast) = &self.fast
            && let Some(ids) = fast.encode(text, self.max_length)
        {
            return Ok(TokenizedText { type_ids: vec![0; ids.len()], ids });
        }
        let encoding = self
            .inner
            .encode_fast(text, true)
            .map_err(|e| Error::Tokenizer { path: self.path.clone(), message: e.to_string() })?;
        Ok(TokenizedText { ids: encoding.get_ids().to_vec(), type_ids: encoding.get_type_ids().to_vec() })
    }

    /// Tokenizes many texts in parallel (rayon; inside the tokenizers crate without a fast path).
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<TokenizedText>> {
        if self.fast.is_some() {
            return texts.par_iter().with_min_len(64).map(|t| self.encode(t)).collect();
        }
        let encodings = self
            .inner
            .encode_batch_fast(texts.to_vec(), true)
            .map_err(|e| Error::Tokenizer { path: self.path.clone(), message: e.to_string() })?;
        Ok(encodings
            .iter()
            .map(|e| TokenizedText { ids: e.get_ids().to_vec(), type_ids: e.get_type_ids().to_vec() })
            .collect())
    }

    /// Tokenizes many texts on the calling thread only (for use inside a worker pool).
    pub fn encode_each(&self, texts: &[&str]) -> Result<Vec<TokenizedText>> {
        texts.iter().map(|t| self.encode(t)).collect()
    }
}

/// A right-padded batch in the layout of the exported models' inputs (`[batch, seq]`, i64).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PaddedBatch {
    pub batch: usize,
    pub seq: usize,
    pub input_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub token_type_ids: Vec<i64>,
}

impl PaddedBatch {
    /// Pads `items` to the longest one (pad id 0, mask 0).
    pub fn from_tokens<'a>(items: impl IntoIterator<Item = &'a TokenizedText> + Clone) -> Self {
        let mut batch = Self::default();
        batch.fill(items);
        batch
    }

    /// Refills this batch from `items`, reusing its buffers.
    pub fn fill<'a>(&mut self, items: impl IntoIterator<Item = &'a TokenizedText> + Clone) {
        let seq = items.clone().into_iter().map(TokenizedText::len).max().unwrap_or(0).max(1);
        let batch = items.clone().into_iter().count();
        self.batch = batch;
        self.seq = seq;
        for buf in [&mut self.input_ids, &mut self.attention_mask, &mut self.token_type_ids] {
            buf.clear();
            buf.resize(batch * seq, 0);
        }
        for (row, item) in items.into_iter().enumerate() {
            let base = row * seq;
            for (j, (&id, &ty)) in item.ids.iter().zip(&item.type_ids).enumerate() {
                self.input_ids[base + j] = i64::from(id);
                self.token_type_ids[base + j] = i64::from(ty);
                self.attention_mask[base + j] = 1;
            }
        }
    }

    /// Tokens that carry text (mask ones), as opposed to `batch * seq` padded cost.
    pub fn real_tokens(&self) -> usize {
        self.attention_mask.iter().filter(|&&m| m != 0).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_to_longest_with_mask() {
        let a = TokenizedText { ids: vec![1, 5, 2], type_ids: vec![0, 0, 0] };
        let b = TokenizedText { ids: vec![1, 2], type_ids: vec![0, 0] };
        let batch = PaddedBatch::from_tokens([&a, &b]);
        assert_eq!((batch.batch, batch.seq), (2, 3));
        assert_eq!(batch.input_ids, vec![1, 5, 2, 1, 2, 0]);
        assert_eq!(batch.attention_mask, vec![1, 1, 1, 1, 1, 0]);
        assert_eq!(batch.real_tokens(), 5);
    }
}
