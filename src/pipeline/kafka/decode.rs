//! Decoding and validating one Kafka message into a product record, or naming why it cannot be
//! one (the reason travels to the dead-letter topic and to `prodcat_records_rejected_total`).

use serde_json::{Map, Value};

use crate::pipeline::text::{RejectReason, TextSpec};

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
