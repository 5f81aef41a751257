//! The Kafka source: a consumer thread that reads, validates and chunks records for the engine,
//! commits completed offsets, and drains revoked partitions before a rebalance lets them go.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, ConsumerGroupMetadata, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::acks::{AckTracker, TopicPartition};
use super::decode::KnownTexts;
use super::decode::{RecordRules, decode};
use super::reach::{Link, STATISTICS_INTERVAL_MS};
use super::{DeadMessage, Fatal, Health, InRecord, KafkaJob, KafkaPart, KafkaSettings};
use crate::error::{Error, Result};
use crate::learn::intake::{LabelBarrier, LabelEvent};
use crate::learn::store::LabelSource;
use crate::metrics::Metrics;
use crate::pipeline::engine::TextChunk;

/// How long a revoke that could not drain waits for the sink to abort its open transaction (one
/// commit attempt and an abort retried for up to a minute while the brokers do not answer).
const FENCE_WAIT: Duration = Duration::from_secs(90);

/// The chunk being filled by the consumer thread.
#[derive(Default)]
struct Pending {
    part: KafkaPart,
    texts: Vec<String>,
    started: Option<Instant>,
}

/// Consumer callbacks: rebalances (drain before revoke), statistics (lag).
pub struct SourceContext {
    tracker: Arc<AckTracker>,
    pending: Mutex<Pending>,
    engine: Mutex<Option<flume::Sender<TextChunk<KafkaPart>>>>,
    drain_timeout: Duration,
    exactly_once: bool,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    fatal: Arc<Fatal>,
    /// Group generation for transactional offset commits (refreshed on every assignment).
    pub group: Arc<Mutex<Option<ConsumerGroupMetadata>>>,
    /// With continuous learning: every commit first waits until the labels handed over are
    /// durable in the label store.
    labels: Option<LabelBarrier>,
    /// Whether the consumer reaches its brokers.
    link: Link,
}

/// The consumer type of the pipeline.
pub type PipelineConsumer = BaseConsumer<SourceContext>;

impl SourceContext {
    /// Hands the chunk being filled to the engine (blocking: backpressure).
    fn flush(&self) -> Result<()> {
        let Pending { mut part, texts, .. } = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.part.records.is_empty() && pending.part.dead.is_empty() && pending.part.handled.is_empty() {
                return Ok(());
            }
            std::mem::take(&mut *pending)
        };
        part.generation = self.tracker.generation();
        if self.tracker.rewind_requested() {
            // Read before the sink aborted a transaction: read again after the rewind.
            return Ok(());
        }
        part.handed_at = Some(Instant::now());
        let chunk = self.metrics.record_latency.with_label_values(&["chunk"]);
        for r in &part.records {
            chunk.observe(r.read_at.elapsed().as_secs_f64());
        }
        let sender = self.engine.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(tx) = sender else {
            return Err(Error::Stopped("the labeling engine (closed)"));
        };
        // Blocks while the engine is full (backpressure), but gives up once a stage has failed:
        // a dead sink must not leave the consumer waiting forever.
        let mut chunk = TextChunk { texts, payload: part, flush: false };
        loop {
            match tx.send_timeout(chunk, Duration::from_millis(100)) {
                Ok(()) => return Ok(()),
                Err(flume::SendTimeoutError::Timeout(back)) if !self.health.failed.load(Ordering::Relaxed) => {
                    chunk = back;
                }
                Err(_) => return Err(Error::Stopped("the labeling engine")),
            }
        }
    }

    fn close_engine(&self) {
        self.engine.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect()
}

/// Commits `positions` (next offsets to read) synchronously or not, once the trusted labels read
/// so far are durable (an error, and nothing committed, when they cannot be made so).
fn commit(consumer: &PipelineConsumer, positions: &[(TopicPartition, i64)], mode: CommitMode) -> Result<()> {
    if positions.is_empty() {
        return Ok(());
    }
    if let Some(labels) = &consumer.context().labels {
        labels.wait()?;
    }
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in positions {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))
            .map_err(|e| Error::Kafka(format!("commit list: {e}")))?;
    }
    consumer.commit(&tpl, mode).map_err(|e| Error::Kafka(format!("committing offsets: {e}")))
}

impl ClientContext for SourceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.link.error(&error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        self.link.statistics(&statistics);
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                // librdkafka's lag counts from the consumer's own commits; with exactly-once the
                // offsets are committed by the producer's transactions, which the consumer never
                // sees, so there the lag is measured from what was read (the end being the last
                // stable offset under read_committed).
                let lag = if p.consumer_lag >= 0 {
                    p.consumer_lag
                } else if self.exactly_once && p.ls_offset >= 0 && p.app_offset >= 0 {
                    (p.ls_offset - p.app_offset).max(0)
                } else {
                    continue;
                };
                if *partition >= 0 {
                    self.metrics.consumer_lag.with_label_values(&[topic, &partition.to_string()]).set(lag as f64);
                }
            }
        }
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else { return };
        let revoked = partitions(tpl);
        if revoked.is_empty() {
            return;
        }
        // Finish what was read from these partitions before another instance takes them.
        if let Err(e) = self.flush() {
            tracing::warn!(error = %e, "could not hand the last records to the engine before a rebalance");
        }
        let drained = self.tracker.wait_drained(&revoked, self.drain_timeout);
        if !drained {
            tracing::warn!(in_flight = ?self.tracker.in_flight(), "revoke: records still in flight after the drain timeout; they will be redelivered to the next owner");
            // Exactly-once: the open transaction holds records of the revoked partitions; it must
            // be aborted, never committed once another instance owns them.
            if self.exactly_once && !self.tracker.fence_and_wait(self.drain_timeout.max(FENCE_WAIT)) {
                self.fatal.fail("revoke", "the sink did not abort its open transaction after a revoke timed out");
            }
        }
        if !self.exactly_once {
            let positions: Vec<_> =
                self.tracker.take_commits().into_iter().filter(|(tp, _)| revoked.contains(tp)).collect();
            if let Err(e) = commit(consumer, &positions, CommitMode::Sync) {
                tracing::warn!(error = %e, "commit before revoke failed");
            }
        }
        self.tracker.forget(&revoked);
        for (topic, partition) in &revoked {
            let _ = self.metrics.consumer_lag.remove_label_values(&[topic, &partition.to_string()]);
        }
        tracing::info!(partitions = ?revoked, drained, "partitions revoked");
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            tracing::info!(partitions = ?partitions(tpl), "partitions assigned");
        }
        *self.group.lock().unwrap_or_else(|p| p.into_inner()) = consumer.group_metadata();
        let count = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        self.health.partitions.store(count, Ordering::Relaxed);
    }
}

/// The librdkafka configuration shared by consumer and producer, plus role-specific properties.
pub fn client_config(kafka: &KafkaSettings, role: &super::settings::ClientProperties) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &kafka.brokers);
    for (k, v) in kafka.properties.iter().chain(role) {
        c.set(k, v);
    }
    c
}

/// Builds the consumer and subscribes it to the input topic.
pub fn create_consumer(
    job: &KafkaJob,
    tracker: Arc<AckTracker>,
    engine: flume::Sender<TextChunk<KafkaPart>>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    fatal: Arc<Fatal>,
    labels: Option<LabelBarrier>,
) -> Result<Arc<PipelineConsumer>> {
    let k = &job.kafka;
    let mut c = ClientConfig::new();
    // Defaults first; pipeline properties (passed through unchanged) override them.
    c.set("group.id", &k.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("statistics.interval.ms", STATISTICS_INTERVAL_MS)
        // Latency: a fetch returns after at most 10 ms even when little data is there
        // (librdkafka's default is 500 ms, which some brokers hold a fetch for).
        .set("fetch.wait.max.ms", "10");
    if k.exactly_once {
        c.set("isolation.level", "read_committed");
    }
    for (key, value) in client_config(k, &k.consumer_properties).config_map() {
        c.set(key, value);
    }
    // A fetch the broker may hold longer than the stall limit is not a stall.
    let fetch_wait = c.get("fetch.wait.max.ms").and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(500);
    let link = Link::new("consumer", health.reach.clone(), metrics.clone(), false)
        .stalled_after(Duration::from_millis(fetch_wait.saturating_mul(2)));
    let context = SourceContext {
        tracker,
        pending: Mutex::new(Pending::default()),
        engine: Mutex::new(Some(engine)),
        drain_timeout: Duration::from_millis(k.drain_timeout_ms),
        exactly_once: k.exactly_once,
        metrics,
        health,
        fatal,
        group: Arc::default(),
        labels,
        link,
    };
    let consumer: PipelineConsumer = c
        .create_with_context(context)
        .map_err(|e| Error::config("kafka", format!("cannot create the consumer: {e}")))?;
    let mut topics = vec![k.input_topic.as_str()];
    if let Some(feedback) = job.feedback_topic() {
        topics.push(feedback);
    }
    consumer.subscribe(&topics).map_err(|e| Error::config("kafka.input_topic", format!("cannot subscribe: {e}")))?;
    Ok(Arc::new(consumer))
}

/// Where trusted labels go while the pipeline runs: the learner's intake thread.
pub struct LabelInputs {
    pub events: flume::Sender<crate::learn::intake::LabelEvent>,
    /// Corrections, when a feedback topic is consumed.
    pub feedback: Option<Feedback>,
}

/// The corrections topic and where its corrections find their products' texts.
pub struct Feedback {
    pub topic: String,
    pub known: KnownTexts,
}

/// The consumer loop; returns the number of records read. On `stop` (or a fatal sink error) it
/// stops reading, lets everything in flight finish, commits, and leaves the group.
pub fn consume(
    job: &KafkaJob,
    consumer: Arc<PipelineConsumer>,
    tracker: Arc<AckTracker>,
    stop: Arc<AtomicBool>,
    fatal: Arc<Fatal>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    labels: Option<LabelInputs>,
) -> Result<u64> {
    let k = &job.kafka;
    let trusted = job.training.as_ref().map_or("", |t| t.trusted_label_field.trim());
    let rules = RecordRules {
        text: &job.text,
        id_field: &k.id_field,
        max_message_bytes: k.max_message_bytes,
        trusted_label_field: (labels.is_some() && !trusted.is_empty()).then_some(trusted),
    };
    let chunk_wait = Duration::from_millis(k.chunk_wait_ms.max(1));
    let commit_every = Duration::from_millis(k.commit_interval_ms.max(10));
    let mut last_commit = Instant::now();
    let mut received = 0u64;
    let ctx = consumer.context();
    health.consuming.store(true, Ordering::Relaxed);
    let failed = || fatal.is_set();
    let (events, mut feedback) = match labels {
        Some(LabelInputs { events, feedback }) => (Some(events), feedback),
        None => (None, None),
    };
    // Hands a label to the intake thread (blocking when it is behind: backpressure).
    let hand_over = |event: LabelEvent| {
        if events.as_ref().is_some_and(|e| e.send(event).is_err()) {
            tracing::warn!("the label intake has stopped; a trusted label was not stored");
        }
    };
    // Per-record metrics, looked up once.
    let (read, fetched) =
        (metrics.records_received.with_label_values(&["kafka"]), metrics.record_latency.with_label_values(&["fetch"]));
    let result = (|| -> Result<()> {
        while !stop.load(Ordering::Relaxed) && !failed() {
            if tracker.take_rewind() {
                rewind(&consumer, &tracker, &stop, &fatal)?;
            }
            match consumer.poll(chunk_wait) {
                Some(Ok(message)) if let Some(f) = feedback.as_ref().filter(|f| f.topic == message.topic()) => {
                    let tp = (message.topic().to_string(), message.partition());
                    let offset = message.offset();
                    tracker.register(&tp, offset);
                    // A correction is handed to the label store; one that cannot be used is a
                    // dead letter. Either way its offset completes with the chunk.
                    let resolved = f.known.resolve(message.payload());
                    let mut pending = ctx.pending.lock().unwrap_or_else(|p| p.into_inner());
                    match resolved {
                        Ok(c) => {
                            let source = LabelSource::Feedback;
                            hand_over(LabelEvent::Label { id: c.id, text: c.text, label: c.label, source });
                            pending.part.handled.push((tp, offset));
                        }
                        Err(rejection) => {
                            metrics.records_rejected.with_label_values(&[rejection.reason.as_str()]).inc();
                            let (key, payload) =
                                (message.key().map(<[u8]>::to_vec), message.payload().map(<[u8]>::to_vec));
                            pending.part.dead.push(DeadMessage { tp, offset, key, payload, rejection });
                        }
                    }
                    pending.started.get_or_insert_with(Instant::now);
                }
                Some(Ok(message)) => {
                    received += 1;
                    read.inc();
                    if let Some(created) = message.timestamp().to_millis() {
                        fetched.observe((chrono::Utc::now().timestamp_millis() - created).max(0) as f64 / 1e3);
                    }
                    let tp = (message.topic().to_string(), message.partition());
                    let offset = message.offset();
                    tracker.register(&tp, offset);
                    let key = message.key().map(<[u8]>::to_vec);
                    let full = {
                        let mut pending = ctx.pending.lock().unwrap_or_else(|p| p.into_inner());
                        match decode(message.payload(), &rules) {
                            Ok(record) => {
                                if let Some(f) = feedback.as_mut() {
                                    f.known.seen(&record.id, &record.text);
                                }
                                // Only with a learner: the event's copies are not made for nothing.
                                if events.is_some()
                                    && let Some(label) = &record.trusted_label
                                {
                                    hand_over(LabelEvent::Label {
                                        id: record.id.clone(),
                                        text: record.text.clone(),
                                        label: label.clone(),
                                        source: LabelSource::Record,
                                    });
                                }
                                pending.texts.push(record.text.clone());
                                pending.part.records.push(InRecord {
                                    tp,
                                    offset,
                                    key,
                                    record,
                                    read_at: Instant::now(),
                                });
                            }
                            Err(rejection) => {
                                metrics.records_rejected.with_label_values(&[rejection.reason.as_str()]).inc();
                                let payload = message.payload().map(<[u8]>::to_vec);
                                pending.part.dead.push(DeadMessage { tp, offset, key, payload, rejection });
                            }
                        }
                        pending.started.get_or_insert_with(Instant::now);
                        pending.part.records.len() + pending.part.dead.len() >= k.chunk_records
                    };
                    if full {
                        ctx.flush()?;
                    }
                }
                Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
                None => {}
            }
            let due = ctx.pending.lock().map(|p| p.started.is_some_and(|s| s.elapsed() >= chunk_wait)).unwrap_or(false);
            if due {
                ctx.flush()?;
            }
            if !k.exactly_once && last_commit.elapsed() >= commit_every {
                commit(&consumer, &tracker.take_commits(), CommitMode::Async)
                    .map_err(|e| fatal.fail("commit", e.to_string()))?;
                last_commit = Instant::now();
            }
        }
        Ok(())
    })();
    health.stopping.store(true, Ordering::Relaxed);
    // Drain: hand over the last chunk, close the engine, let sinks finish, commit, leave.
    let flushed = ctx.flush();
    ctx.close_engine();
    if let Ok(assignment) = consumer.assignment() {
        let _ = consumer.pause(&assignment);
    }
    let all: Vec<TopicPartition> = consumer
        .assignment()
        .map(|a| a.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect())
        .unwrap_or_default();
    let deadline = Instant::now() + Duration::from_millis(k.drain_timeout_ms);
    while !tracker.wait_drained(&all, Duration::from_millis(50)) && Instant::now() < deadline && !failed() {
        // Keep serving callbacks while sinks finish.
        let _ = consumer.poll(Duration::from_millis(0));
    }
    if !k.exactly_once && !failed() {
        commit(&consumer, &tracker.take_commits(), CommitMode::Sync)?;
    }
    leave_group(consumer);
    tracing::info!(received, "consumer stopped");
    result?;
    flushed.or_else(|e| if failed() { Ok(()) } else { Err(e) })?;
    Ok(received)
}

/// Exactly-once, after the sink aborted a transaction on its own: drops what was read and not
/// handed on, and seeks every assigned partition back to its committed offset (the beginning
/// where none was committed), retrying while the brokers do not answer.
fn rewind(consumer: &PipelineConsumer, tracker: &AckTracker, stop: &AtomicBool, fatal: &Fatal) -> Result<()> {
    let dropped = std::mem::take(&mut *consumer.context().pending.lock().unwrap_or_else(|p| p.into_inner()));
    let limit = Duration::from_secs(10);
    loop {
        let attempt = (|| -> std::result::Result<Vec<TopicPartition>, KafkaError> {
            let assignment = consumer.assignment()?;
            let committed = consumer.committed_offsets(assignment.clone(), limit)?;
            for e in committed.elements() {
                let to = match e.offset() {
                    Offset::Offset(o) => Offset::Offset(o),
                    _ => Offset::Beginning,
                };
                consumer.seek(e.topic(), e.partition(), to, limit)?;
            }
            Ok(partitions(&assignment))
        })();
        match attempt {
            Ok(rewound) => {
                tracker.forget(&rewound);
                tracing::warn!(partitions = ?rewound, dropped = dropped.part.records.len(), "read again from the committed offsets");
                return Ok(());
            }
            Err(e) if !stop.load(Ordering::Relaxed) && !fatal.is_set() => {
                tracing::warn!(error = %e, "cannot rewind to the committed offsets yet; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(fatal.fail("rewind", format!("cannot read again from the committed offsets: {e}"))),
        }
    }
}

/// Unsubscribes and drops the consumer on a helper thread with a time limit: librdkafka's
/// shutdown can hang when a consumer is dropped right after subscribe + poll + commit.
fn leave_group(consumer: Arc<PipelineConsumer>) {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let _ = std::thread::Builder::new().name("prodcat-consumer-close".into()).spawn(move || {
        consumer.unsubscribe();
        drop(consumer);
        let _ = done_tx.send(());
    });
    if done_rx.recv_timeout(Duration::from_secs(10)).is_err() {
        tracing::warn!("the Kafka consumer did not close within 10 s; continuing shutdown");
    }
}
