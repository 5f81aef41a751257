//! Text → hashed n-gram features for the lexical model (fastText-style).
//!
//! A text is lower-cased and split into words on anything that is not a letter or digit. Features
//! are word n-grams (`word_ngrams`, default 1–2) and character n-grams (`char_ngrams`, default
//! 2–5) of each word padded with `<` and `>`, each hashed (FNV-1a, 64-bit) into `buckets` ids. A
//! text's features are deduplicated and sorted, so the model sees a binary bag of n-grams. The
//! settings travel in the model card so serving featurizes exactly as training did.

use serde::{Deserialize, Serialize};

use crate::tokenize::TokenizedText;

/// Featurizer settings (stored in the model card).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FeaturizerSettings {
    /// Hash space size (rows of the weight matrix).
    pub buckets: u32,
    /// Inclusive range of word n-gram lengths.
    pub word_ngrams: (u8, u8),
    /// Inclusive range of character n-gram lengths (0 = none).
    pub char_ngrams: (u8, u8),
    /// Features kept per text at most (the rest are dropped, longest texts only).
    pub max_features: usize,
}

impl Default for FeaturizerSettings {
    fn default() -> Self {
        Self { buckets: 1 << 19, word_ngrams: (1, 2), char_ngrams: (2, 5), max_features: 1024 }
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv(seed: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(seed, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME))
}

/// Turns texts into feature ids.
#[derive(Debug, Clone)]
pub struct Featurizer {
    pub settings: FeaturizerSettings,
}

impl Featurizer {
    /// A featurizer with `settings`.
    pub fn new(settings: FeaturizerSettings) -> Self {
        Self { settings }
    }

    /// Sorted, unique feature ids of `text`.
    pub fn features(&self, text: &str) -> Vec<u32> {
        let lower = text.to_lowercase();
        let words: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect();
        let s = &self.settings;
        // Bucket 0 is reserved (zero weights): it stands for "no feature" in padding and empty texts.
        let buckets = u64::from(s.buckets.max(2)) - 1;
        let mut ids: Vec<u32> = Vec::with_capacity(words.len() * 16);
        // Word n-grams: hash of the words joined by a separator byte, tagged with n.
        for n in s.word_ngrams.0.max(1)..=s.word_ngrams.1 {
            let n = n as usize;
            for window in words.windows(n) {
                let mut h = fnv(FNV_OFFSET, &[b'w', n as u8]);
                for w in window {
                    h = fnv(h, w.as_bytes());
                    h = fnv(h, &[0x1f]);
                }
                ids.push((1 + h % buckets) as u32);
            }
        }
        // Character n-grams of each `<word>`.
        if s.char_ngrams.0 > 0 {
            let mut padded: Vec<char> = Vec::new();
            for w in &words {
                padded.clear();
                padded.push('<');
                padded.extend(w.chars());
                padded.push('>');
                for n in s.char_ngrams.0..=s.char_ngrams.1 {
                    let n = n as usize;
                    if n > padded.len() {
                        break;
                    }
                    for window in padded.windows(n) {
                        let mut h = fnv(FNV_OFFSET, &[b'c']);
                        let mut buf = [0u8; 4];
                        for c in window {
                            h = fnv(h, c.encode_utf8(&mut buf).as_bytes());
                        }
                        ids.push((1 + h % buckets) as u32);
                    }
                }
            }
        }
        ids.sort_unstable();
        ids.dedup();
        ids.truncate(s.max_features.max(1));
        ids
    }

    /// Features in the engine's token layout (`ids`; segment ids zero), for batching and ONNX.
    pub fn prepare(&self, text: &str) -> TokenizedText {
        let mut ids = self.features(text);
        if ids.is_empty() {
            // One position on the reserved bucket: the model answers with its bias (the prior).
            ids.push(0);
        }
        TokenizedText { type_ids: vec![0; ids.len()], ids }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_sorted_unique_and_case_insensitive() {
        let f = Featurizer::new(FeaturizerSettings::default());
        let a = f.features("Samsung Galaxy S23 128GB");
        assert_eq!(a, f.features("samsung  galaxy-s23, 128gb"));
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert!(a.iter().all(|&id| id >= 1 && id < 1 << 19));
        // 4 words → 4 unigrams + 3 bigrams, plus character n-grams.
        assert!(a.len() > 7);
        assert_ne!(a, f.features("Bosch washing machine"));
    }

    #[test]
    fn settings_change_the_features() {
        let words_only =
            Featurizer::new(FeaturizerSettings { char_ngrams: (0, 0), word_ngrams: (1, 1), ..Default::default() });
        assert_eq!(words_only.features("red red apple").len(), 2);
    }
}
