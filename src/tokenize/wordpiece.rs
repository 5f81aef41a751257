//! A fast path for BERT-style WordPiece tokenizers on ASCII text.
//!
//! Hugging Face tokenizers keeps an alignment entry per character through normalization and
//! builds a full `Encoding` (token strings, offsets, masks) per text: about 42,000 product titles
//! a second per core, which on a GPU machine is what limits a relabel (README, "Measured on one
//! NVIDIA H200"). For the tokenizer shape every BERT-family model ships — `BertNormalizer`
//! (clean text, lowercase), `BertPreTokenizer`, `WordPiece` with `##` continuations, a
//! `[CLS] $A [SEP]` template — and a text that is all ASCII and names no added token, the result
//! is fully determined by a few byte rules, done here without allocation per character. Any other
//! tokenizer or text goes through Hugging Face tokenizers unchanged. Parity with it is tested on
//! hand-made edge cases and on every text of the shared data sets.

use std::collections::HashMap;

use serde_json::Value;

/// The fast path, when the tokenizer's configuration is one it reproduces exactly.
#[derive(Debug, Clone)]
pub(super) struct AsciiWordPiece {
    /// Word-initial pieces.
    start: HashMap<Box<[u8]>, u32>,
    /// Continuation pieces, without their `##`.
    cont: HashMap<Box<[u8]>, u32>,
    unk: u32,
    cls: u32,
    sep: u32,
    max_word_chars: usize,
    /// Added tokens (`[MASK]`, ...) that Hugging Face matches in the raw text: a text containing
    /// one goes the slow way.
    added: Vec<Box<[u8]>>,
}

impl AsciiWordPiece {
    /// Reads `tokenizer.json`; `None` where any part differs from the shape reproduced here.
    pub(super) fn from_json(json: &Value) -> Option<Self> {
        let normalizer = &json["normalizer"];
        if normalizer["type"] != "BertNormalizer"
            || normalizer["clean_text"] != true
            || normalizer["lowercase"] != true
            || json["pre_tokenizer"]["type"] != "BertPreTokenizer"
        {
            return None;
        }
        let model = &json["model"];
        if model["type"] != "WordPiece" || model["continuing_subword_prefix"] != "##" {
            return None;
        }
        let vocab = model["vocab"].as_object()?;
        let (mut start, mut cont) = (HashMap::new(), HashMap::new());
        for (piece, id) in vocab {
            let id = u32::try_from(id.as_u64()?).ok()?;
            match piece.strip_prefix("##") {
                Some(rest) => cont.insert(rest.as_bytes().into(), id),
                None => start.insert(piece.as_bytes().into(), id),
            };
        }
        let unk = *start.get(model["unk_token"].as_str()?.as_bytes())?;
        let max_word_chars = usize::try_from(model["max_input_chars_per_word"].as_u64()?).ok()?;
        // `[CLS] $A [SEP]`, every piece of type 0.
        let post = &json["post_processor"];
        if post["type"] != "TemplateProcessing" {
            return None;
        }
        let single = post["single"].as_array()?;
        let special = |item: &Value| -> Option<u32> {
            let token = &item["SpecialToken"];
            if token["type_id"] != 0 {
                return None;
            }
            let ids = post["special_tokens"][token["id"].as_str()?]["ids"].as_array()?;
            if ids.len() != 1 {
                return None;
            }
            u32::try_from(ids[0].as_u64()?).ok()
        };
        if single.len() != 3 || single[1]["Sequence"]["id"] != "A" || single[1]["Sequence"]["type_id"] != 0 {
            return None;
        }
        let (cls, sep) = (special(&single[0])?, special(&single[2])?);
        let mut added = Vec::new();
        for token in json["added_tokens"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let content = token["content"].as_str()?;
            // A normalized added token matches the lowercased text; an unnormalized one the raw
            // text. Matching either, case-insensitively, errs on the slow (always right) side.
            if token["single_word"] == true || token["lstrip"] == true || token["rstrip"] == true || !content.is_ascii()
            {
                return None;
            }
            added.push(content.to_ascii_lowercase().into_bytes().into());
        }
        Some(Self { start, cont, unk, cls, sep, max_word_chars, added })
    }

    /// Token ids of `text` with `[CLS]`/`[SEP]`, truncated to `max_length`; `None` for a text the
    /// fast path does not take (not ASCII, or containing an added token).
    pub(super) fn encode(&self, text: &str, max_length: usize) -> Option<Vec<u32>> {
        if !text.is_ascii() || max_length < 2 {
            return None;
        }
        let bytes = text.as_bytes();
        if self.added.iter().any(|t| contains_ignore_case(bytes, t)) {
            return None;
        }
        let budget = max_length - 2;
        let mut ids = Vec::with_capacity(bytes.len() / 3 + 2);
        ids.push(self.cls);
        let mut word: Vec<u8> = Vec::with_capacity(32);
        let mut full = false;
        for &b in bytes {
            if full {
                break;
            }
            match b {
                // BertNormalizer's clean_text: whitespace becomes a space, control characters go.
                b' ' | b'\t' | b'\n' | b'\r' => full = self.flush(&mut word, &mut ids, budget),
                0..=31 | 127 => {}
                // BertPreTokenizer: every punctuation character is a word of its own.
                _ if b.is_ascii_punctuation() => {
                    full = self.flush(&mut word, &mut ids, budget) || {
                        word.push(b);
                        self.flush(&mut word, &mut ids, budget)
                    };
                }
                _ => word.push(b.to_ascii_lowercase()),
            }
        }
        if !full {
            self.flush(&mut word, &mut ids, budget);
        }
        ids.push(self.sep);
        Some(ids)
    }

    /// WordPiece of one word (greedy longest match; a word with an unmatched rest, or longer than
    /// `max_input_chars_per_word`, is one unknown token). Returns true once `budget` ids are there.
    fn flush(&self, word: &mut Vec<u8>, ids: &mut Vec<u32>, budget: usize) -> bool {
        if word.is_empty() {
            return ids.len() > budget;
        }
        let before = ids.len();
        if word.len() > self.max_word_chars {
            ids.push(self.unk);
        } else {
            let mut start = 0;
            while start < word.len() {
                let map = if start == 0 { &self.start } else { &self.cont };
                let found =
                    (start + 1..=word.len()).rev().find_map(|end| map.get(&word[start..end]).map(|&id| (end, id)));
                match found {
                    Some((end, id)) => {
                        ids.push(id);
                        start = end;
                    }
                    None => {
                        ids.truncate(before);
                        ids.push(self.unk);
                        break;
                    }
                }
            }
        }
        word.clear();
        // Truncation keeps the first `budget` pieces of the sequence.
        if ids.len() > budget {
            ids.truncate(budget + 1);
            return true;
        }
        false
    }
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}
