//! Kafka settings: the `[kafka]` section of a pipeline file.

use serde::{Deserialize, Serialize};

/// The Kafka source and its topic sinks (`[kafka]` of a pipeline file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    /// Bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    pub group_id: String,
    pub input_topic: String,
    /// Labeled records (JSON, key = product id). Empty = no Kafka output.
    pub output_topic: String,
    /// Records that cannot be labeled, with the reason in headers.
    pub dead_letter_topic: String,
    /// Low-confidence records for people to review. Empty = off.
    pub review_topic: String,
    /// Records whose confidence is below this go to the review topic too.
    pub review_threshold: f32,
    /// For a taxonomy model, the level whose score `review_threshold` applies to (1 = the top
    /// category: review only records unsure of their category, not merely of the leaf); 0 = the
    /// label's own confidence. Past a model's deepest level: the label's.
    pub review_level: usize,
    /// Field holding the product id.
    pub id_field: String,
    /// Messages larger than this are dead-lettered as oversized. Must leave 32 KiB under the
    /// producer's `message.max.bytes` (librdkafka default 1,000,000) for labels and headers.
    pub max_message_bytes: usize,
    /// Transactional Kafka→Kafka: outputs and input offsets commit atomically.
    pub exactly_once: bool,
    /// `transactional.id` (exactly-once only); must be unique per instance.
    pub transactional_id: String,
    /// Records handed to the engine together (at most).
    pub chunk_records: usize,
    /// Longest a read record waits for its chunk to fill, in ms.
    pub chunk_wait_ms: u64,
    /// How often completed offsets are committed (or transactions committed), in ms.
    pub commit_interval_ms: u64,
    /// Longest a revoke or shutdown waits for in-flight records, in ms.
    pub drain_timeout_ms: u64,
    /// `/healthz` fails once the brokers have been unreachable (every connection down, or
    /// stalled) for longer than this, in ms; `/readyz` is not ready from the first second. 0 =
    /// never (only `/readyz` says so). The pipeline reconnects on its own either way.
    pub unhealthy_after_disconnected_ms: u64,
    /// A learner instance: its own consumer group reads every partition (and the feedback
    /// topic) only to feed the label store and train; it writes no records (output, dead-letter
    /// and review topics must be empty), while the serving instances' group labels the stream.
    pub learn_only: bool,
    /// librdkafka properties for both the consumer and the producer, passed through unchanged
    /// (SASL/TLS settings among them; secrets are never printed).
    pub properties: ClientProperties,
    /// librdkafka properties for the consumer only.
    pub consumer_properties: ClientProperties,
    /// librdkafka properties for the producer only.
    pub producer_properties: ClientProperties,
}

/// librdkafka properties as given, passed to the client unchanged. Their `Debug` form shows
/// secrets (passwords, client secrets, private keys) as `[redacted]`, so no log, error or
/// summary that prints settings can leak one.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientProperties(pub std::collections::BTreeMap<String, String>);

impl ClientProperties {
    /// Whether a property's value is a secret: librdkafka's sensitive properties (passwords,
    /// `sasl.oauthbearer.client.secret`, `sasl.oauthbearer.config`, the private key `ssl.key.pem`).
    pub fn is_secret(key: &str) -> bool {
        let key = key.trim().to_ascii_lowercase();
        key.contains("password")
            || key.contains("secret")
            || matches!(key.as_str(), "ssl.key.pem" | "ssl_key" | "sasl.oauthbearer.config")
    }

    /// The value as it may be shown: `[redacted]` for a secret.
    pub fn shown<'a>(key: &str, value: &'a str) -> &'a str {
        if Self::is_secret(key) { "[redacted]" } else { value }
    }
}

impl std::fmt::Debug for ClientProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.0.iter().map(|(k, v)| (k, Self::shown(k, v)))).finish()
    }
}

impl std::ops::Deref for ClientProperties {
    type Target = std::collections::BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for ClientProperties {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl<'a> IntoIterator for &'a ClientProperties {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            group_id: "prodcat".into(),
            input_topic: "products".into(),
            output_topic: "products-labeled".into(),
            dead_letter_topic: "products-dead-letter".into(),
            review_topic: String::new(),
            review_threshold: 0.5,
            review_level: 0,
            id_field: "id".into(),
            max_message_bytes: 960_000,
            exactly_once: false,
            transactional_id: String::new(),
            chunk_records: 256,
            chunk_wait_ms: 1,
            commit_interval_ms: 1000,
            drain_timeout_ms: 30_000,
            unhealthy_after_disconnected_ms: 300_000,
            learn_only: false,
            properties: Default::default(),
            consumer_properties: Default::default(),
            producer_properties: Default::default(),
        }
    }
}

/// librdkafka's default producer `message.max.bytes`.
pub const PRODUCER_MESSAGE_MAX_BYTES: usize = 1_000_000;
/// Room a produced record needs beyond its input message: label fields, top-k, dead-letter and
/// review headers.
pub const LABEL_HEADROOM_BYTES: usize = 32 * 1024;

impl KafkaSettings {
    /// The producer's `message.max.bytes` (producer properties, then shared ones, then
    /// librdkafka's default).
    pub fn producer_message_max_bytes(&self) -> Result<usize, String> {
        match self.producer_properties.get("message.max.bytes").or_else(|| self.properties.get("message.max.bytes")) {
            None => Ok(PRODUCER_MESSAGE_MAX_BYTES),
            Some(v) => v.trim().parse().map_err(|_| format!("message.max.bytes `{v}` is not a number")),
        }
    }

    /// The largest dead-letter payload that can be produced with its headers; longer payloads
    /// are truncated to it.
    pub fn dead_letter_max_bytes(&self) -> usize {
        self.producer_message_max_bytes().unwrap_or(PRODUCER_MESSAGE_MAX_BYTES).saturating_sub(LABEL_HEADROOM_BYTES)
    }
}

/// The dead-letter payload for `payload`: whole when it fits in `limit` bytes, else its first
/// `limit` bytes and the original size (for a `prodcat-original-bytes` header).
pub fn dead_letter_payload(payload: &[u8], limit: usize) -> (&[u8], Option<usize>) {
    if payload.len() <= limit { (payload, None) } else { (&payload[..limit], Some(payload.len())) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_fit_under_the_producer_limit() {
        let mut k = KafkaSettings::default();
        assert_eq!(k.dead_letter_max_bytes(), 1_000_000 - 32 * 1024);
        k.producer_properties.insert("message.max.bytes".into(), "150000".into());
        assert_eq!(k.dead_letter_max_bytes(), 150_000 - 32 * 1024);
        let big = vec![b'x'; 200_000];
        let (cut, original) = dead_letter_payload(&big, k.dead_letter_max_bytes());
        assert_eq!((cut.len(), original), (k.dead_letter_max_bytes(), Some(200_000)));
        assert_eq!(dead_letter_payload(b"small", 10), (&b"small"[..], None));
        k.properties.insert("message.max.bytes".into(), "lots".into());
        k.producer_properties.clear();
        assert!(k.producer_message_max_bytes().is_err());
    }

    #[test]
    fn secrets_pass_through_but_never_print() {
        let mut k = KafkaSettings::default();
        for (key, value) in [
            ("sasl.password", "hunter2-sasl"),
            ("ssl.key.password", "hunter2-key"),
            ("sasl.oauthbearer.client.secret", "hunter2-oauth"),
            ("ssl.key.pem", "-----BEGIN PRIVATE KEY----- hunter2"),
            ("sasl.username", "prodcat"),
            ("security.protocol", "SASL_SSL"),
        ] {
            k.properties.insert(key.into(), value.into());
        }
        k.producer_properties.insert("ssl.keystore.password".into(), "hunter2-store".into());
        let shown = format!("{k:?} {k:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("prodcat") && shown.contains("SASL_SSL") && shown.contains("[redacted]"), "{shown}");
        // The client gets them unchanged.
        assert_eq!(k.properties.get("sasl.password").map(String::as_str), Some("hunter2-sasl"));
    }
}
