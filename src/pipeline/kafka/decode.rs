//! Decoding and validating one Kafka message into a product record, or naming why it cannot be
//! one (the reason travels to the dead-letter topic and to `prodcat_records_rejected_total`).
//!
//! Corrections (`{id, label[, title]}` on the feedback topic) are decoded here too, on the consumer
//! thread, by [`KnownTexts`], so one that cannot be used becomes a dead letter with its reason
//! instead of a log line: the text comes from the correction itself, else from the products this
//! instance read recently, else from the label store (a product labeled before, by any instance
//! sharing it); a product found nowhere is dead-lettered as `unknown_product`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::common::{RejectReason, TextSpec};
use crate::learn::LabelStore;

/// Schema versions of the product record this build understands.
pub const SCHEMA_VERSIONS: [i64; 1] = [1];

/// A valid product record.
#[derive(Debug, Clone, PartialEq)]
pub struct ProductRecord {
    /// The product id (as text; integers are accepted and rendered in decimal).
    pub id: String,
    /// The composed model text.
    pub text: String,
    /// Every field of the input object, passed through to the output.
    pub fields: Map<String, Value>,
    /// The trusted category, when the pipeline names a trusted field and it is set.
    pub trusted_label: Option<String>,
}

/// Why a message was rejected, with a human-readable detail.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

fn reject(reason: RejectReason, detail: impl Into<String>) -> Rejection {
    Rejection { reason, detail: detail.into() }
}

/// How records are read.
#[derive(Debug, Clone)]
pub struct RecordRules<'a> {
    pub text: &'a TextSpec,
    pub id_field: &'a str,
    /// Messages larger than this many bytes are rejected as oversized.
    pub max_message_bytes: usize,
    /// Field holding a trusted category (None = no trusted labels).
    pub trusted_label_field: Option<&'a str>,
}

/// Decodes and validates one message payload.
pub fn decode(payload: Option<&[u8]>, rules: &RecordRules<'_>) -> Result<ProductRecord, Rejection> {
    let bytes = match payload {
        None | Some([]) => return Err(reject(RejectReason::MissingText, "empty message (no payload)")),
        Some(b) => b,
    };
    if bytes.len() > rules.max_message_bytes {
        return Err(reject(
            RejectReason::Oversized,
            format!("{} bytes > limit {}", bytes.len(), rules.max_message_bytes),
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| reject(RejectReason::InvalidUtf8, e.to_string()))?;
    let value: Value = serde_json::from_str(text).map_err(|e| reject(RejectReason::InvalidJson, e.to_string()))?;
    let Value::Object(fields) = value else {
        return Err(reject(RejectReason::NotAnObject, format!("expected a JSON object, got {}", kind(&value))));
    };
    if let Some(version) = fields.get("schema_version") {
        if !version.as_i64().is_some_and(|v| SCHEMA_VERSIONS.contains(&v)) {
            return Err(reject(
                RejectReason::UnknownSchemaVersion,
                format!("schema_version {version} (known: {SCHEMA_VERSIONS:?})"),
            ));
        }
    }
    let id = match fields.get(rules.id_field) {
        None | Some(Value::Null) => {
            return Err(reject(RejectReason::MissingId, format!("no `{}` field", rules.id_field)));
        }
        Some(Value::String(s)) if s.trim().is_empty() => {
            return Err(reject(RejectReason::MissingId, format!("`{}` is blank", rules.id_field)));
        }
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        Some(other) => {
            return Err(reject(
                RejectReason::WrongType,
                format!("`{}` is {}, expected a string or an integer", rules.id_field, kind(other)),
            ));
        }
    };
    for field in &rules.text.fields {
        if let Some(v) = fields.get(field).filter(|v| !v.is_null() && !v.is_string()) {
            return Err(reject(RejectReason::WrongType, format!("`{field}` is {}, expected a string", kind(v))));
        }
    }
    let text = rules
        .text
        .compose(|f| fields.get(f).and_then(Value::as_str))
        .map_err(|reason| reject(reason, format!("field `{}`", rules.text.primary())))?;
    let trusted_label = rules
        .trusted_label_field
        .and_then(|f| fields.get(f))
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    Ok(ProductRecord { id, text, fields, trusted_label })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Product texts seen recently, bounded (oldest forgotten first).
struct RecentTexts {
    map: HashMap<String, String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl RecentTexts {
    fn insert(&mut self, id: String, text: String) {
        if self.map.insert(id.clone(), text).is_none() {
            self.order.push_back(id);
            if self.order.len() > self.capacity
                && let Some(old) = self.order.pop_front()
            {
                self.map.remove(&old);
            }
        }
    }
}

/// Where a correction finds its product's text (see the module documentation). Owned by the
/// consumer thread, which both remembers products and resolves corrections.
pub struct KnownTexts {
    recent: RecentTexts,
    store: Arc<LabelStore>,
    id_field: String,
}

/// A usable correction.
#[derive(Debug, Clone, PartialEq)]
pub struct Correction {
    pub id: String,
    pub text: String,
    pub label: String,
}

impl KnownTexts {
    /// Remembers up to `capacity` recent product texts; falls back to `store`.
    pub fn new(store: Arc<LabelStore>, id_field: &str, capacity: usize) -> Self {
        Self {
            recent: RecentTexts { map: HashMap::new(), order: VecDeque::new(), capacity: capacity.max(1) },
            store,
            id_field: id_field.to_string(),
        }
    }

    /// Remembers a product the pipeline read.
    pub fn seen(&mut self, id: &str, text: &str) {
        self.recent.insert(id.to_string(), text.to_string());
    }

    /// The correction in a feedback message, or why it cannot be used (the dead letter's reason).
    pub fn resolve(&self, payload: Option<&[u8]>) -> std::result::Result<Correction, Rejection> {
        let reject = |reason, detail: String| Rejection { reason, detail };
        let bytes = payload.unwrap_or_default();
        let v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| reject(RejectReason::InvalidJson, format!("correction: {e}")))?;
        if !v.is_object() {
            return Err(reject(RejectReason::NotAnObject, "correction: expected a JSON object".into()));
        }
        let field = |k: &str| {
            v.get(k).and_then(|x| match x {
                serde_json::Value::String(s) => Some(s.trim().to_string()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
        };
        let id = field(&self.id_field)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| reject(RejectReason::MissingId, format!("correction without `{}`", self.id_field)))?;
        let label = field("label")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| reject(RejectReason::MissingLabel, format!("correction of `{id}` without `label`")))?;
        let given = field("title").or_else(|| field("text")).filter(|s| !s.is_empty());
        let text = match given {
            Some(text) => Some(text),
            None => self.recent.map.get(&id).cloned(),
        };
        let text = match text {
            Some(text) => text,
            None => self
                .store
                .text_of(&id)
                .map_err(|e| reject(RejectReason::UnknownProduct, format!("label store lookup failed: {e}")))?
                .ok_or_else(|| {
                    reject(
                        RejectReason::UnknownProduct,
                        format!(
                            "no text for product `{id}`: not read recently by this instance, not in the label store \
                             (send `title` with the correction)"
                        ),
                    )
                })?,
        };
        Ok(Correction { id, text, label })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(spec: &TextSpec) -> RecordRules<'_> {
        RecordRules { text: spec, id_field: "id", max_message_bytes: 1000, trusted_label_field: Some("category") }
    }

    #[test]
    fn accepts_a_good_record() {
        let spec = TextSpec::default();
        let r = decode(Some(br#"{"id": 7, "title": " Galaxy S23 ", "category": "Phones", "price": 3}"#), &rules(&spec))
            .unwrap();
        assert_eq!(r.id, "7");
        assert_eq!(r.text, "Galaxy S23");
        assert_eq!(r.trusted_label.as_deref(), Some("Phones"));
        assert_eq!(r.fields["price"], 3);
    }

    #[test]
    fn rejects_every_kind_of_bad_record() {
        let spec = TextSpec::default();
        let cases: Vec<(Option<&[u8]>, RejectReason)> = vec![
            (None, RejectReason::MissingText),
            (Some(b"\xff\xfe{}"), RejectReason::InvalidUtf8),
            (Some(b"{not json"), RejectReason::InvalidJson),
            (Some(b"[1, 2]"), RejectReason::NotAnObject),
            (Some(br#"{"title": "x"}"#), RejectReason::MissingId),
            (Some(br#"{"id": 1}"#), RejectReason::MissingText),
            (Some(br#"{"id": 1, "title": "  "}"#), RejectReason::EmptyText),
            (Some(br#"{"id": 1, "title": 42}"#), RejectReason::WrongType),
            (Some(br#"{"id": [1], "title": "x"}"#), RejectReason::WrongType),
            (Some(br#"{"id": 1, "title": "x", "schema_version": 9}"#), RejectReason::UnknownSchemaVersion),
        ];
        for (payload, reason) in cases {
            let got = decode(payload, &rules(&spec)).expect_err("should be rejected");
            assert_eq!(got.reason, reason, "{payload:?}: {}", got.detail);
        }
        let big = format!(r#"{{"id": 1, "title": "{}"}}"#, "x".repeat(2000));
        assert_eq!(decode(Some(big.as_bytes()), &rules(&spec)).unwrap_err().reason, RejectReason::Oversized);
    }
}
