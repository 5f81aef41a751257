//! Text → hashed n-gram features for the lexical model (fastText-style).
//!
//! A text is lower-cased and split into words on anything that is not a letter or digit. Features
//! are word n-grams (`word_ngrams`, default 1–2) and character n-grams (`char_ngrams`, default
//! 2–5) of each whitespace-separated token (punctuation kept; cards from before `char_tokens`:
//! each word) padded with `<` and `>`, each hashed (FNV-1a, 64-bit) into `buckets` ids. With
//! `norm = "blocks"` (the default) word n-grams hash into the lower half of the id space and
//! character n-grams into the upper half, so the model can normalise the two blocks separately (as
//! a TF-IDF union of a word and a character vectorizer does). A text's features are deduplicated
//! and sorted, each with how often it occurs (the model weighs it by 1 + ln(count), sublinear term
//! frequency, or — cards from before `tf` — by 1). The settings travel in the model card so serving
//! featurizes exactly as training did.

use crate::common::{CharTokens, FeaturizerSettings};
use crate::error::Result;
use crate::serve::Preprocess;
use crate::tokenize::TokenizedText;

/// A text's features: sorted unique ids and how often each occurs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bag {
    pub ids: Vec<u32>,
    pub counts: Vec<u32>,
}

impl Bag {
    /// A bag from ids in any order, with repeats.
    pub fn from_ids(mut ids: Vec<u32>) -> Self {
        ids.sort_unstable();
        let mut bag = Self { ids: Vec::with_capacity(ids.len()), counts: Vec::with_capacity(ids.len()) };
        for id in ids {
            match bag.ids.last() {
                Some(&last) if last == id => *bag.counts.last_mut().expect("counts follow ids") += 1,
                _ => {
                    bag.ids.push(id);
                    bag.counts.push(1);
                }
            }
        }
        bag
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
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

    /// The feature bag of `text` (at most `max_features` ids).
    pub fn features(&self, text: &str) -> Bag {
        let lower = text.to_lowercase();
        let words: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect();
        let s = &self.settings;
        // Bucket 0 is reserved (zero weights): it stands for "no feature" in padding and empty texts.
        let (word_ids, char_ids) = match s.first_char_bucket() {
            Some(split) => ((1, u64::from(split) - 1), (u64::from(split), u64::from(s.buckets.max(4) - split))),
            None => ((1, u64::from(s.buckets.max(2)) - 1), (1, u64::from(s.buckets.max(2)) - 1)),
        };
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
                ids.push((word_ids.0 + h % word_ids.1) as u32);
            }
        }
        // Character n-grams of each `<token>`.
        if s.char_ngrams.0 > 0 {
            let whitespace_tokens: Vec<&str>;
            let tokens: &[&str] = match s.char_tokens {
                CharTokens::Words => &words,
                CharTokens::Whitespace => {
                    whitespace_tokens = lower.split_whitespace().collect();
                    &whitespace_tokens
                }
            };
            let mut padded: Vec<char> = Vec::new();
            for w in tokens {
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
                        ids.push((char_ids.0 + h % char_ids.1) as u32);
                    }
                }
            }
        }
        let mut bag = Bag::from_ids(ids);
        bag.ids.truncate(s.max_features.max(1));
        bag.counts.truncate(s.max_features.max(1));
        bag
    }

    /// Features in the engine's token layout, for batching and ONNX: `ids` the feature ids, the
    /// segment ids their counts (graphs with sublinear tf read them as `token_type_ids`).
    pub fn prepare(&self, text: &str) -> TokenizedText {
        let Bag { mut ids, mut counts } = self.features(text);
        if ids.is_empty() {
            // One position on the reserved bucket: the model answers with its bias (the prior).
            ids.push(0);
            counts.push(1);
        }
        TokenizedText { ids, type_ids: counts }
    }
}

/// The lexical kind's preprocessing for [`crate::serve::SingleModel`]: feature ids in the
/// engine's token layout.
impl Preprocess for Featurizer {
    fn prepare(&self, texts: &[&str]) -> Result<Vec<TokenizedText>> {
        Ok(texts.iter().map(|t| Featurizer::prepare(self, t)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::{FeatureNorm, TermFrequency};

    #[test]
    fn deterministic_sorted_unique_and_case_insensitive() {
        let f = Featurizer::new(FeaturizerSettings::default());
        let a = f.features("Samsung Galaxy S23 128GB");
        assert_eq!(a, f.features("samsung  GALAXY s23\t128gb"));
        assert!(a.ids.windows(2).all(|w| w[0] < w[1]));
        assert!(a.ids.iter().all(|&id| id >= 1 && id < 1 << 19));
        // 4 words → 4 unigrams + 3 bigrams, plus character n-grams.
        assert!(a.len() > 7);
        assert_ne!(a, f.features("Bosch washing machine"));
    }

    #[test]
    fn blocks_keep_word_and_character_ids_apart() {
        let blocks = FeaturizerSettings::default();
        let split = blocks.first_char_bucket().unwrap();
        let words = Featurizer::new(FeaturizerSettings { char_ngrams: (0, 0), ..blocks.clone() });
        let chars = Featurizer::new(FeaturizerSettings { word_ngrams: (1, 0), ..blocks.clone() });
        let text = "Bosch Serie 4 washing machine, 8 kg";
        assert!(words.features(text).ids.iter().all(|&id| id >= 1 && id < split));
        assert!(chars.features(text).ids.iter().all(|&id| id >= split && id < blocks.buckets));
        let joint = FeaturizerSettings { norm: FeatureNorm::Joint, ..blocks };
        assert_eq!(joint.first_char_bucket(), None);
        // Old cards (no `norm`) featurize as they were trained: one id space, one norm.
        let old: FeaturizerSettings = serde_json::from_str(r#"{"buckets": 1024, "max_features": 1024}"#).unwrap();
        assert_eq!((old.norm, old.tf, old.char_tokens), (FeatureNorm::Joint, TermFrequency::Binary, CharTokens::Words));
    }

    #[test]
    fn counts_say_how_often_a_feature_occurs() {
        let words =
            Featurizer::new(FeaturizerSettings { char_ngrams: (0, 0), word_ngrams: (1, 1), ..Default::default() });
        let bag = words.features("red red red apple");
        assert_eq!(bag.len(), 2);
        let mut counts = bag.counts.clone();
        counts.sort_unstable();
        assert_eq!(counts, [1, 3]);
        assert_eq!(TermFrequency::Sublinear.weight(1), 1.0);
        assert!((TermFrequency::Sublinear.weight(3) - (1.0 + 3f32.ln())).abs() < 1e-6);
        assert_eq!(TermFrequency::Binary.weight(3), 1.0);
        let prepared = words.prepare("red red red apple");
        assert_eq!((prepared.ids, prepared.type_ids), (bag.ids, bag.counts));
    }

    #[test]
    fn character_ngrams_keep_punctuation_inside_whitespace_tokens() {
        let chars = |char_tokens| {
            let s = FeaturizerSettings { word_ngrams: (1, 0), char_ngrams: (3, 3), char_tokens, ..Default::default() };
            Featurizer::new(s)
        };
        let (spaces, words) = (chars(CharTokens::Whitespace), chars(CharTokens::Words));
        // "<s23,>" has 4 trigrams; the words "s23" → "<s23>" has 3.
        assert_eq!(spaces.features("s23,").len(), 4);
        assert_eq!(words.features("s23,").len(), 3);
        assert_ne!(spaces.features("galaxy-s23"), spaces.features("galaxy s23"));
        assert_eq!(words.features("galaxy-s23"), words.features("galaxy s23"));
    }

    #[test]
    fn settings_change_the_features() {
        let words_only =
            Featurizer::new(FeaturizerSettings { char_ngrams: (0, 0), word_ngrams: (1, 1), ..Default::default() });
        assert_eq!(words_only.features("red red apple").len(), 2);
    }
}
