//! Prometheus metrics of a running pipeline (`prodcat_` prefix, base units, `_total` counters).
//!
//! One [`Metrics`] value owns its registry, so several pipelines (or tests) in one process never
//! collide; `/metrics` renders it in the text exposition format.

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Every metric prodcat exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    pub records_received: IntCounterVec,
    pub records_labeled: IntCounterVec,
    pub records_rejected: IntCounterVec,
    pub low_confidence: IntCounter,
    pub batch_records: Histogram,
    pub batch_tokens: Histogram,
    pub stage_seconds: HistogramVec,
    pub consumer_lag: GaugeVec,
    pub model_info: GaugeVec,
    pub model_swaps: IntCounter,
    pub training_runs: IntCounterVec,
    pub training_eval_macro_f1: Gauge,
    pub training_serving_macro_f1: Gauge,
    pub label_store_records: IntGauge,
    pub end_to_end_seconds: Histogram,
    pub transactions: IntCounterVec,
    pub kafka_connected: GaugeVec,
    pub kafka_disconnections: IntCounterVec,
    pub record_latency: HistogramVec,
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registry.register(Box::new(c.clone())).expect("metric registered once");
    c
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("valid metric definition");
    registry.register(Box::new(h.clone())).expect("metric registered once");
    h
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Observes `seconds` of `stage` once per record of a chunk (per-record percentiles from a
    /// chunk's timing).
    pub fn observe_records(&self, stage: &str, seconds: f64, records: usize) {
        let h = self.record_latency.with_label_values(&[stage]);
        for _ in 0..records {
            h.observe(seconds);
        }
    }

    /// A fresh set of metrics in its own registry.
    pub fn new() -> Self {
        let r = Registry::new();
        let int_counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric definition");
            r.register(Box::new(c.clone())).expect("metric registered once");
            c
        };
        let low_confidence = int_counter(
            "prodcat_low_confidence_total",
            "Labeled records whose confidence was below the review threshold.",
        );
        let model_swaps =
            int_counter("prodcat_model_swaps_total", "Times the serving model was replaced while running.");
        let stage_seconds = HistogramVec::new(
            HistogramOpts::new("prodcat_stage_seconds", "Time spent per batch in each data-path stage.")
                .buckets(prometheus::exponential_buckets(0.0001, 2.5, 14).expect("valid buckets")),
            &["stage"],
        )
        .expect("valid metric definition");
        r.register(Box::new(stage_seconds.clone())).expect("metric registered once");
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition");
            r.register(Box::new(g.clone())).expect("metric registered once");
            g
        };
        let consumer_lag = gauge_vec(
            "prodcat_kafka_consumer_lag",
            "Records behind the partition end, per topic partition.",
            &["topic", "partition"],
        );
        let kafka_connected = gauge_vec(
            "prodcat_kafka_connected",
            "1 while the Kafka client (consumer, producer) reaches a broker that answers, 0 while it is cut off.",
            &["client"],
        );
        let model_info = gauge_vec("prodcat_model_info", "1 for the model version now serving.", &["name", "version"]);
        let training_eval_macro_f1 =
            Gauge::new("prodcat_training_eval_macro_f1", "Held-out macro-F1 of the last trained candidate.")
                .expect("valid metric definition");
        r.register(Box::new(training_eval_macro_f1.clone())).expect("metric registered once");
        let training_serving_macro_f1 = Gauge::new(
            "prodcat_training_serving_macro_f1",
            "Macro-F1 of the serving model on the last candidate's held-out rows (the gate's other score).",
        )
        .expect("valid metric definition");
        r.register(Box::new(training_serving_macro_f1.clone())).expect("metric registered once");
        let label_store_records =
            IntGauge::new("prodcat_label_store_records", "Records with trusted labels in the label store.")
                .expect("valid metric definition");
        r.register(Box::new(label_store_records.clone())).expect("metric registered once");
        Self {
            records_received: counter_vec(
                &r,
                "prodcat_records_received_total",
                "Records read from a source.",
                &["source"],
            ),
            transactions: counter_vec(
                &r,
                "prodcat_kafka_transactions_total",
                "Exactly-once transactions ended, by outcome (committed, aborted).",
                &["outcome"],
            ),
            kafka_connected,
            kafka_disconnections: counter_vec(
                &r,
                "prodcat_kafka_disconnections_total",
                "Times a Kafka client (consumer, producer) lost every broker or found them stalled.",
                &["client"],
            ),
            records_labeled: counter_vec(&r, "prodcat_records_labeled_total", "Records labeled, by label.", &["label"]),
            records_rejected: counter_vec(
                &r,
                "prodcat_records_rejected_total",
                "Records sent to the dead-letter sink, by reason.",
                &["reason"],
            ),
            low_confidence,
            batch_records: histogram(
                &r,
                "prodcat_batch_records",
                "Records per inference batch.",
                prometheus::exponential_buckets(1.0, 2.0, 10).expect("valid buckets"),
            ),
            batch_tokens: histogram(
                &r,
                "prodcat_batch_tokens",
                "Padded tokens per inference batch.",
                prometheus::exponential_buckets(16.0, 2.0, 12).expect("valid buckets"),
            ),
            stage_seconds,
            consumer_lag,
            model_info,
            model_swaps,
            training_runs: counter_vec(
                &r,
                "prodcat_training_runs_total",
                "Background training runs, by outcome.",
                &["outcome"],
            ),
            training_eval_macro_f1,
            training_serving_macro_f1,
            label_store_records,
            end_to_end_seconds: histogram(
                &r,
                "prodcat_end_to_end_seconds",
                "Time from a record's arrival at the source to its durable write.",
                prometheus::exponential_buckets(0.001, 2.0, 16).expect("valid buckets"),
            ),
            record_latency: {
                let h = HistogramVec::new(
                    HistogramOpts::new(
                        "prodcat_record_latency_seconds",
                        "Per record, time spent in each stage of the Kafka path: fetch (produced upstream to read \
                         by prodcat, by the input record's timestamp), chunk (read to handed to the engine), engine \
                         (batch wait and inference, to the sink), produce (sent to acknowledged and durable).",
                    )
                    .buckets(prometheus::exponential_buckets(0.0001, 2.0, 18).expect("valid buckets")),
                    &["stage"],
                )
                .expect("valid metric definition");
                r.register(Box::new(h.clone())).expect("metric registered once");
                h
            },
            registry: r,
        }
    }

    /// Marks `identity` as the serving model (and clears the previous one).
    pub fn set_model(&self, name: &str, version: &str) {
        self.model_info.reset();
        self.model_info.with_label_values(&[name, version]).set(1.0);
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
