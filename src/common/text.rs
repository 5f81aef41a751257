//! How a product record becomes the text a model reads, and which records cannot be labeled.
//!
//! The text is composed from configured fields (by default the title alone), each optionally cut
//! to a number of characters (descriptions), joined with a separator. A record whose text is
//! missing, empty, or larger than the limit is rejected with a [`RejectReason`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Why a record went to the dead-letter sink instead of being labeled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// Not valid JSON (Kafka) or not decodable.
    InvalidJson,
    /// Bytes that are not UTF-8.
    InvalidUtf8,
    /// A JSON value that is not an object.
    NotAnObject,
    /// No id field, or an unusable one.
    MissingId,
    /// The text field is absent or null.
    MissingText,
    /// The text field is present but blank.
    EmptyText,
    /// A field has the wrong type (e.g. a number where text is expected).
    WrongType,
    /// The record or its text exceeds the configured size limit.
    Oversized,
    /// The record declares a schema version prodcat does not know.
    UnknownSchemaVersion,
    /// A correction (feedback topic) without a label.
    MissingLabel,
    /// A correction for a product whose text prodcat cannot find (not in the correction, not read
    /// recently by this instance, not in the label store).
    UnknownProduct,
}

impl RejectReason {
    /// Every reason (the values `schemas/dead-letter.schema.json` lists).
    pub const ALL: [RejectReason; 11] = [
        Self::InvalidJson,
        Self::InvalidUtf8,
        Self::NotAnObject,
        Self::MissingId,
        Self::MissingText,
        Self::EmptyText,
        Self::WrongType,
        Self::Oversized,
        Self::UnknownSchemaVersion,
        Self::MissingLabel,
        Self::UnknownProduct,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::NotAnObject => "not_an_object",
            Self::MissingId => "missing_id",
            Self::MissingText => "missing_text",
            Self::EmptyText => "empty_text",
            Self::WrongType => "wrong_type",
            Self::Oversized => "oversized",
            Self::UnknownSchemaVersion => "unknown_schema_version",
            Self::MissingLabel => "missing_label",
            Self::UnknownProduct => "unknown_product",
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which fields make up the model's text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TextSpec {
    /// Fields joined in this order; the first is required, the others are used when present.
    pub fields: Vec<String>,
    pub separator: String,
    /// Per-field character limits (e.g. `description = 300`).
    pub max_chars: BTreeMap<String, usize>,
    /// Records whose text is longer than this many bytes are rejected as oversized.
    pub max_bytes: usize,
}

impl Default for TextSpec {
    fn default() -> Self {
        Self { fields: vec!["title".into()], separator: " | ".into(), max_chars: BTreeMap::new(), max_bytes: 16 * 1024 }
    }
}

impl TextSpec {
    /// The text of one column, as it is (training and evaluation files: no size limit).
    pub fn column(name: &str) -> Self {
        Self { fields: vec![name.to_string()], max_bytes: usize::MAX, ..Default::default() }
    }

    /// How the text is composed (fields, separator, limits), without the size limit.
    pub fn composition(&self) -> TextComposition {
        TextComposition {
            fields: self.fields.clone(),
            separator: self.separator.clone(),
            max_chars: self.max_chars.clone(),
        }
    }

    /// True when the text is a single column as it is.
    pub fn is_single_column(&self) -> bool {
        self.fields.len() == 1 && self.max_chars.is_empty()
    }

    /// The required field (the first one).
    pub fn primary(&self) -> &str {
        self.fields.first().map(String::as_str).unwrap_or("title")
    }

    /// Composes the text from field values (`None` = absent or null), or says why it cannot.
    pub fn compose<'a>(&self, mut value: impl FnMut(&str) -> Option<&'a str>) -> Result<String, RejectReason> {
        let mut parts: Vec<String> = Vec::with_capacity(self.fields.len());
        for (i, field) in self.fields.iter().enumerate() {
            let Some(raw) = value(field) else {
                if i == 0 {
                    return Err(RejectReason::MissingText);
                }
                continue;
            };
            if raw.len() > self.max_bytes {
                return Err(RejectReason::Oversized);
            }
            let trimmed = raw.trim();
            if trimmed.is_empty() {
                if i == 0 {
                    return Err(RejectReason::EmptyText);
                }
                continue;
            }
            let part = match self.max_chars.get(field) {
                Some(&limit) => trimmed.chars().take(limit).collect(),
                None => trimmed.to_string(),
            };
            parts.push(part);
        }
        let text = parts.join(&self.separator);
        if text.len() > self.max_bytes { Err(RejectReason::Oversized) } else { Ok(text) }
    }
}

/// How a model's training texts were composed from columns: recorded in its card when they came
/// from more than one column or were cut, so that serving can compose its texts the same way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextComposition {
    pub fields: Vec<String>,
    pub separator: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub max_chars: BTreeMap<String, usize>,
}

impl TextComposition {
    /// The spec that composes texts this way (for reading the training file again).
    pub fn spec(&self) -> TextSpec {
        TextSpec {
            fields: self.fields.clone(),
            separator: self.separator.clone(),
            max_chars: self.max_chars.clone(),
            max_bytes: usize::MAX,
        }
    }

    /// Why texts composed by `serving` are not shaped like these training texts (another number
    /// of fields, another separator, another cut of the n-th field), or `None`. Names are not
    /// compared: a stream's fields are often named otherwise than the training file's columns.
    pub fn mismatch(&self, serving: &TextSpec) -> Option<String> {
        let limits = |fields: &[String], max: &BTreeMap<String, usize>| -> Vec<Option<usize>> {
            fields.iter().map(|f| max.get(f).copied()).collect()
        };
        let describe = |fields: &[String], separator: &str, max: &BTreeMap<String, usize>| {
            let parts: Vec<String> = fields
                .iter()
                .map(|f| max.get(f).map_or_else(|| format!("`{f}`"), |n| format!("`{f}` (first {n} chars)")))
                .collect();
            format!("{} joined by {separator:?}", parts.join(", "))
        };
        let same = self.fields.len() == serving.fields.len()
            && (self.fields.len() < 2 || self.separator == serving.separator)
            && limits(&self.fields, &self.max_chars) == limits(&serving.fields, &serving.max_chars);
        (!same).then(|| {
            format!(
                "the model was trained on texts composed of {}, but these are composed of {}: compose them \
                 alike (text.fields, text.separator and text.max_chars in a pipeline; --text-column and \
                 --max-chars on the command line) or the model reads texts unlike those it learned from",
                describe(&self.fields, &self.separator, &self.max_chars),
                describe(&serving.fields, &serving.separator, &serving.max_chars)
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_listed_once_under_its_serde_name() {
        let names: std::collections::BTreeSet<&str> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), RejectReason::ALL.len());
        for r in RejectReason::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), serde_json::json!(r.as_str()));
        }
    }

    #[test]
    fn composes_and_rejects() {
        let spec = TextSpec {
            fields: vec!["title".into(), "brand".into(), "description".into()],
            max_chars: [("description".to_string(), 5)].into_iter().collect(),
            max_bytes: 40,
            ..Default::default()
        };
        let rec = |t: Option<&'static str>, b: Option<&'static str>, d: Option<&'static str>| {
            spec.compose(|f| match f {
                "title" => t,
                "brand" => b,
                _ => d,
            })
        };
        assert_eq!(
            rec(Some(" Galaxy S23 "), Some("Samsung"), Some("A great phone")).unwrap(),
            "Galaxy S23 | Samsung | A gre"
        );
        assert_eq!(rec(Some("Galaxy"), None, Some("  ")).unwrap(), "Galaxy");
        assert_eq!(rec(None, Some("x"), None), Err(RejectReason::MissingText));
        assert_eq!(rec(Some("   "), Some("x"), None), Err(RejectReason::EmptyText));
        let long = "x".repeat(41);
        let oversized = spec.compose(|f| (f == "title").then_some(long.as_str()));
        assert_eq!(oversized, Err(RejectReason::Oversized));
    }

    #[test]
    fn a_serving_composition_unlike_the_training_one_is_named() {
        let trained = TextSpec {
            fields: vec!["name".into(), "body".into()],
            max_chars: [("body".to_string(), 300)].into_iter().collect(),
            ..TextSpec::column("name")
        }
        .composition();
        let serving = |fields: &[&str], cut: Option<(&str, usize)>| TextSpec {
            fields: fields.iter().map(|f| f.to_string()).collect(),
            max_chars: cut.map(|(f, n)| (f.to_string(), n)).into_iter().collect(),
            ..Default::default()
        };
        // Same shape under other names: fine.
        assert_eq!(trained.mismatch(&serving(&["title", "description"], Some(("description", 300)))), None);
        let title_only = trained.mismatch(&serving(&["title"], None)).expect("one field against two");
        assert!(
            title_only.contains("`name`, `body` (first 300 chars)") && title_only.contains("`title` joined"),
            "{title_only}"
        );
        assert!(trained.mismatch(&serving(&["title", "description"], None)).is_some(), "uncut description");
        assert!(trained.mismatch(&serving(&["title", "description"], Some(("description", 100)))).is_some());
        let other_separator = TextSpec { separator: " ; ".into(), ..serving(&["t", "d"], Some(("d", 300))) };
        assert!(trained.mismatch(&other_separator).is_some());
        assert_eq!(trained.spec().compose(|f| Some(if f == "name" { "a" } else { "b" })).unwrap(), "a | b");
    }
}
