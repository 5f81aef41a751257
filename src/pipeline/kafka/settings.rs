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
    /// librdkafka properties for both the consumer and the producer, passed through unchanged.
    pub properties: std::collections::BTreeMap<String, String>,
    /// librdkafka properties for the consumer only.
    pub consumer_properties: std::collections::BTreeMap<String, String>,
    /// librdkafka properties for the producer only.
    pub producer_properties: std::collections::BTreeMap<String, String>,
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
            id_field: "id".into(),
            max_message_bytes: 960_000,
            exactly_once: false,
            transactional_id: String::new(),
            chunk_records: 256,
            chunk_wait_ms: 5,
            commit_interval_ms: 1000,
            drain_timeout_ms: 30_000,
            properties: Default::default(),
            consumer_properties: Default::default(),
            producer_properties: Default::default(),
        }
    }
}
