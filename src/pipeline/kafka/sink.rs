//! The sink thread of the Kafka pipeline: labeled records to the output topic (key = product id,
//! model version in a header), low-confidence records to the review topic, rejected messages to
//! the dead-letter topic (original bytes, reason and source position in headers), and optionally
//! rotating files. Offsets complete when every write of their chunk is durable: Kafka delivery
//! reports (acks=all), a closed file — or, with exactly-once, a committed transaction.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use rdkafka::ClientContext;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde_json::{Value, json};

use super::acks::{AckTracker, TopicPartition};
use super::reach::{Link, Reach, STATISTICS_INTERVAL_MS};
use super::settings::dead_letter_payload;
use super::source::client_config;
use super::{Fatal, KafkaJob, KafkaPart, MODEL_VERSION_HEADER, StreamSummary};
use crate::error::{Error, Result};
use crate::learn::intake::LabelBarrier;
use crate::metrics::Metrics;
use crate::pipeline::engine::LabeledChunk;
use crate::pipeline::output::{RowSource, labeled_batch, now_millis};
use crate::pipeline::sinks::RotatingFileWriter;
use crate::serve::Prediction;

/// Offsets of one chunk that complete when all of the chunk's writes are durable.
pub struct ChunkAck {
    remaining: AtomicUsize,
    offsets: Vec<(TopicPartition, i64)>,
    tracker: Arc<AckTracker>,
    read_at: Option<Instant>,
    /// When the sink started sending the chunk, and its records (the produce stage).
    sent_at: Instant,
    records: usize,
    metrics: Arc<Metrics>,
}

impl ChunkAck {
    /// One write finished; the last one completes the offsets.
    pub fn done(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            for (tp, offset) in &self.offsets {
                self.tracker.complete(tp, *offset);
            }
            if let Some(t) = self.read_at {
                self.metrics.end_to_end_seconds.observe(t.elapsed().as_secs_f64());
            }
            self.metrics.observe_records("produce", self.sent_at.elapsed().as_secs_f64(), self.records);
        }
    }
}

/// Delivery reports: a delivered record finishes one write of its chunk; a failed one is fatal
/// (its offset is never committed, so a restart redelivers it).
pub struct SinkContext {
    fatal: Arc<Fatal>,
    /// Whether the producer reaches its brokers.
    link: Link,
}

impl ClientContext for SinkContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.link.error(&error, reason);
    }

    fn stats(&self, statistics: rdkafka::statistics::Statistics) {
        self.link.statistics(&statistics);
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Box<Option<Arc<ChunkAck>>>;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Self::DeliveryOpaque) {
        match result {
            Ok(_) => {
                if let Some(ack) = ack.as_ref() {
                    ack.done();
                }
            }
            Err((e, _)) => {
                tracing::error!(error = %e, "a record could not be delivered; stopping (it will be redelivered after restart)");
                self.fatal.fail("producer", format!("Kafka delivery failed: {e}"));
            }
        }
    }
}

/// Open transaction bookkeeping (exactly-once).
#[derive(Default)]
struct Transaction {
    open: bool,
    started: Option<Instant>,
    /// Highest offset per partition written in this transaction.
    positions: BTreeMap<TopicPartition, i64>,
    offsets: Vec<(TopicPartition, i64)>,
}

struct StreamFiles {
    writer: RotatingFileWriter,
    /// Chunks with records in the open file.
    pending: Vec<Arc<ChunkAck>>,
    opened: Option<Instant>,
    max_age: Duration,
}

/// Everything the sink thread owns.
pub struct Sink {
    producer: ThreadedProducer<SinkContext>,
    output_topic: String,
    review_topic: String,
    dead_letter_topic: String,
    /// Longest dead-letter payload that can be produced (longer ones are truncated).
    dead_letter_max_bytes: usize,
    review_threshold: f32,
    review_level: usize,
    exactly_once: bool,
    commit_every: Duration,
    files: Option<StreamFiles>,
    tracker: Arc<AckTracker>,
    metrics: Arc<Metrics>,
    fatal: Arc<Fatal>,
    group: Arc<Mutex<Option<ConsumerGroupMetadata>>>,
    txn: Transaction,
    /// The newest fencing generation honoured (chunks read in older ones are dropped).
    generation: u64,
    /// With continuous learning: a transaction commits its input offsets only once the trusted
    /// labels read so far are durable.
    labels: Option<LabelBarrier>,
}

const TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// One attempt at a commit or abort; a timed-out attempt is retried (the transaction stays).
const TXN_ATTEMPT: Duration = Duration::from_secs(5);
/// How long an abort is retried while the brokers do not answer (a revoke waits for it:
/// `source::FENCE_WAIT` is longer).
const ABORT_RETRY_LIMIT: Duration = Duration::from_secs(60);
/// How long a transaction commit is retried while the brokers do not answer (below the
/// `transaction.timeout.ms` the producer is given, after which the broker aborts it).
const TXN_RETRY_LIMIT: Duration = Duration::from_secs(540);

impl Sink {
    /// Creates the producer (transactional with exactly-once) and the optional file sink.
    pub fn new(
        job: &KafkaJob,
        tracker: Arc<AckTracker>,
        metrics: Arc<Metrics>,
        fatal: Arc<Fatal>,
        group: Arc<Mutex<Option<ConsumerGroupMetadata>>>,
        labels: Option<LabelBarrier>,
        reach: Arc<Reach>,
    ) -> Result<Self> {
        let k = &job.kafka;
        let mut c = rdkafka::config::ClientConfig::new();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
        if k.exactly_once {
            // The broker aborts a transaction left open this long (librdkafka's default, 60 s,
            // would abort every transaction open across a broker outage of a minute).
            c.set("transactional.id", &k.transactional_id).set("transaction.timeout.ms", "600000");
        }
        for (key, value) in client_config(k, &k.producer_properties).config_map() {
            c.set(key, value);
        }
        let producer: ThreadedProducer<SinkContext> = c
            .create_with_context(SinkContext {
                fatal: fatal.clone(),
                link: Link::new("producer", reach, metrics.clone(), true),
            })
            .map_err(|e| Error::config("kafka", format!("cannot create the producer: {e}")))?;
        if k.exactly_once {
            producer
                .init_transactions(TXN_TIMEOUT)
                .map_err(|e| Error::config("kafka.transactional_id", format!("init_transactions: {e}")))?;
        }
        let files = if let Some(files) = &job.files {
            std::fs::create_dir_all(&files.path)
                .map_err(|e| Error::config("files.path", format!("cannot create {}: {e}", files.path.display())))?;
            let prefix = format!("stream-{}-{}", std::process::id(), chrono::Utc::now().format("%Y%m%dT%H%M%S"));
            Some(StreamFiles {
                writer: RotatingFileWriter::new(&files.path, &prefix, files.format, files.rotation),
                pending: Vec::new(),
                opened: None,
                max_age: Duration::from_millis(files.max_age_ms.max(1)),
            })
        } else {
            None
        };
        Ok(Self {
            producer,
            output_topic: k.output_topic.clone(),
            review_topic: k.review_topic.clone(),
            dead_letter_topic: k.dead_letter_topic.clone(),
            dead_letter_max_bytes: k.dead_letter_max_bytes(),
            review_threshold: k.review_threshold,
            review_level: k.review_level,
            exactly_once: k.exactly_once,
            commit_every: Duration::from_millis(k.commit_interval_ms.max(10)),
            files,
            tracker,
            metrics,
            fatal,
            group,
            txn: Transaction::default(),
            generation: 0,
            labels,
        })
    }

    fn fail(&self, message: String) -> Error {
        self.fatal.fail("sink", message)
    }

    /// Enqueues one record, waiting while the producer queue is full (backpressure).
    fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: OwnedHeaders,
        ack: Option<Arc<ChunkAck>>,
    ) -> Result<()> {
        if crate::fault::hit("kafka.send") {
            return Err(self.fail(format!("producing to {topic}: injected fault (PRODCAT_FAULTS)")));
        }
        let mut record = BaseRecord::with_opaque_to(topic, Box::new(ack)).payload(payload).headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((e, _)) => return Err(self.fail(format!("producing to {topic}: {e}"))),
            }
        }
    }

    /// The labeled JSON record: input fields plus prodcat's fields.
    fn output_json(record: &super::InRecord, p: &Prediction, labeled_at: &str) -> Value {
        let mut obj = record.record.fields.clone();
        let top_k: Vec<Value> =
            p.top_k.iter().map(|(id, score)| json!({"label": p.model.labels[*id as usize], "score": score})).collect();
        for (k, v) in [
            ("label", json!(p.label())),
            ("label_id", json!(p.label_id)),
            ("confidence", json!(p.confidence)),
            ("top_k", Value::Array(top_k)),
            ("path", json!(p.path())),
            ("levels", Value::Array(p.levels().map(|(l, s)| json!({"label": l, "score": s})).collect())),
            ("labels", Value::Array(p.label_set().map(|(l, s)| json!({"label": l, "score": s})).collect())),
            ("stage", json!(p.stage.name())),
            ("model_name", json!(p.model.name)),
            ("model_version", json!(p.model.version)),
            ("labeled_at", json!(labeled_at)),
            ("source_topic", json!(record.tp.0)),
            ("source_partition", json!(record.tp.1)),
            ("source_offset", json!(record.offset)),
        ] {
            obj.insert(k.to_string(), v);
        }
        Value::Object(obj)
    }

    /// Exactly-once: after a revoke that could not drain, aborts the open transaction (its
    /// records are read again from the committed offsets) before anything else is written.
    fn honour_fence(&mut self) {
        if let Some(generation) = self.tracker.fence_pending(self.generation) {
            self.abort_transaction();
            self.generation = generation;
            self.tracker.honoured(generation);
        }
    }

    fn write_chunk(&mut self, chunk: LabeledChunk<KafkaPart>, summary: &Mutex<StreamSummary>) -> Result<()> {
        let started = Instant::now();
        let LabeledChunk { payload: part, predictions, .. } = chunk;
        if part.generation < self.generation {
            // Read before a revoke whose transaction was aborted: read again by the owner now.
            tracing::debug!(records = part.records.len(), "dropping a chunk of an aborted generation");
            return Ok(());
        }
        if let Some(handed) = part.handed_at {
            self.metrics.observe_records("engine", handed.elapsed().as_secs_f64(), part.records.len());
        }
        let mut offsets: Vec<(TopicPartition, i64)> = part.records.iter().map(|r| (r.tp.clone(), r.offset)).collect();
        offsets.extend(part.dead.iter().map(|d| (d.tp.clone(), d.offset)));
        offsets.extend(part.handled.iter().cloned());
        let low: Vec<bool> =
            predictions.iter().map(|p| p.score_at(self.review_level) < self.review_threshold).collect();
        let reviews = if self.review_topic.is_empty() { 0 } else { low.iter().filter(|l| **l).count() };
        let outputs = if self.output_topic.is_empty() { 0 } else { part.records.len() };
        let file_write = usize::from(self.files.is_some() && !part.records.is_empty());
        // Writes to wait for (+1 held until every write is enqueued, so none completes early).
        let dead_letters = if self.dead_letter_topic.is_empty() { 0 } else { part.dead.len() };
        let writes = if self.exactly_once { 1 } else { outputs + reviews + dead_letters + file_write + 1 };
        let ack = Arc::new(ChunkAck {
            remaining: AtomicUsize::new(writes),
            offsets: offsets.clone(),
            tracker: self.tracker.clone(),
            read_at: part.records.first().map(|r| r.read_at),
            sent_at: Instant::now(),
            records: part.records.len(),
            metrics: self.metrics.clone(),
        });
        let per_record = |ack: &Arc<ChunkAck>| if self.exactly_once { None } else { Some(ack.clone()) };
        if self.exactly_once && !self.txn.open {
            self.producer.begin_transaction().map_err(|e| self.fail(format!("begin_transaction: {e}")))?;
            self.txn = Transaction { open: true, started: Some(Instant::now()), ..Default::default() };
        }
        let labeled_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        for ((record, p), is_low) in part.records.iter().zip(&predictions).zip(&low) {
            let json = serde_json::to_vec(&Self::output_json(record, p, &labeled_at))
                .map_err(|e| Error::Internal(format!("labeled record as JSON: {e}")))?;
            let headers = || {
                OwnedHeaders::new().insert(Header { key: MODEL_VERSION_HEADER, value: Some(p.model.version.as_str()) })
            };
            if !self.output_topic.is_empty() {
                self.send(&self.output_topic, Some(record.record.id.as_bytes()), &json, headers(), per_record(&ack))?;
            }
            self.metrics.records_labeled.with_label_values(&[p.label()]).inc();
            if *is_low {
                self.metrics.low_confidence.inc();
                if !self.review_topic.is_empty() {
                    self.send(
                        &self.review_topic,
                        Some(record.record.id.as_bytes()),
                        &json,
                        headers(),
                        per_record(&ack),
                    )?;
                }
            }
        }
        for dead in &part.dead {
            let (partition, offset) = (dead.tp.1.to_string(), dead.offset.to_string());
            let headers = OwnedHeaders::new()
                .insert(Header { key: "prodcat-reason", value: Some(dead.rejection.reason.as_str()) })
                .insert(Header { key: "prodcat-error", value: Some(dead.rejection.detail.as_str()) })
                .insert(Header { key: "prodcat-source-topic", value: Some(dead.tp.0.as_str()) })
                .insert(Header { key: "prodcat-source-partition", value: Some(partition.as_str()) })
                .insert(Header { key: "prodcat-source-offset", value: Some(offset.as_str()) });
            // A payload too large to produce whole goes out truncated, its size in a header, so
            // one record can never wedge its partition.
            let (payload, original) =
                dead_letter_payload(dead.payload.as_deref().unwrap_or_default(), self.dead_letter_max_bytes);
            let original = original.map(|n| n.to_string());
            let headers = match &original {
                Some(n) => headers
                    .insert(Header { key: "prodcat-original-bytes", value: Some(n.as_str()) })
                    .insert(Header { key: "prodcat-truncated", value: Some("true") }),
                None => headers,
            };
            if !self.dead_letter_topic.is_empty() {
                // (Empty only for a learner instance: the serving group dead-letters the record.)
                self.send(&self.dead_letter_topic, dead.key.as_deref(), payload, headers, per_record(&ack))?;
            }
        }
        if file_write == 1 {
            self.write_files(&part, &predictions, ack.clone())?;
        }
        if let Ok(mut s) = summary.lock() {
            s.labeled += part.records.len() as u64;
            s.dead_lettered += part.dead.len() as u64;
            s.reviewed += reviews as u64;
        }
        if self.exactly_once {
            for (tp, offset) in &offsets {
                let e = self.txn.positions.entry(tp.clone()).or_insert(*offset);
                *e = (*e).max(*offset);
            }
            self.txn.offsets.extend(offsets);
        } else {
            ack.done();
        }
        self.metrics.stage_seconds.with_label_values(&["sink"]).observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    fn write_files(&mut self, part: &KafkaPart, predictions: &[Prediction], ack: Arc<ChunkAck>) -> Result<()> {
        let Some(files) = self.files.as_mut() else { return Ok(()) };
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("text", DataType::Utf8, false),
            Field::new("record", DataType::Utf8, false),
            Field::new("source_topic", DataType::Utf8, false),
            Field::new("source_partition", DataType::Int32, false),
            Field::new("source_offset", DataType::Int64, false),
        ]));
        let r = &part.records;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(r.iter().map(|x| x.record.id.as_str()))),
            Arc::new(StringArray::from_iter_values(r.iter().map(|x| x.record.text.as_str()))),
            Arc::new(StringArray::from_iter_values(
                r.iter().map(|x| Value::Object(x.record.fields.clone()).to_string()),
            )),
            Arc::new(StringArray::from_iter_values(r.iter().map(|x| x.tp.0.as_str()))),
            Arc::new(Int32Array::from_iter_values(r.iter().map(|x| x.tp.1))),
            Arc::new(Int64Array::from_iter_values(r.iter().map(|x| x.offset))),
        ];
        let input = RecordBatch::try_new(schema, columns).map_err(|e| Error::table("stream file batch", e))?;
        let sources = vec![RowSource { file: None, row: None }; r.len()];
        let batch = labeled_batch(&input, predictions, &sources, now_millis())?;
        if files.writer.write(&batch)?.is_some() {
            // The previous file was closed by size: its records are durable now.
            for done in files.pending.drain(..) {
                done.done();
            }
            files.opened = Some(Instant::now());
        }
        files.opened.get_or_insert_with(Instant::now);
        files.pending.push(ack);
        Ok(())
    }

    /// Closes the open file if it is old enough (or `force`), completing its records.
    fn rotate_files(&mut self, force: bool) -> Result<()> {
        let Some(files) = self.files.as_mut() else { return Ok(()) };
        if files.pending.is_empty() || !(force || files.opened.is_some_and(|t| t.elapsed() >= files.max_age)) {
            return Ok(());
        }
        files.writer.rotate()?;
        files.opened = None;
        for done in files.pending.drain(..) {
            done.done();
        }
        Ok(())
    }

    /// Commits the open transaction with its input offsets (exactly-once).
    fn commit_transaction(&mut self, force: bool) -> Result<()> {
        if !self.txn.open || !(force || self.txn.started.is_some_and(|t| t.elapsed() >= self.commit_every)) {
            return Ok(());
        }
        if self.fatal.is_set() {
            // Another stage failed (a delivery error among them): never commit what may be partial.
            self.abort_transaction();
            return Ok(());
        }
        if let Some(Err(e)) = self.labels.as_ref().map(LabelBarrier::wait) {
            self.abort_transaction();
            return Err(self.fail(format!("trusted labels are not durable, transaction aborted: {e}")));
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in &self.txn.positions {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(offset + 1))
                .map_err(|e| Error::Kafka(format!("transaction offsets: {e}")))?;
        }
        // A commit that times out while the brokers are unreachable is retried until they answer
        // (librdkafka: a retriable error leaves the transaction to be committed again; nothing
        // new may be produced meanwhile, so the sink waits here and backpressure holds the
        // consumer). The transaction timeout prodcat sets (10 minutes) spans such an outage.
        // A timed-out call is resumed by calling the *same* API again: once the offsets are in
        // the transaction only the commit is retried (calling send_offsets again while a commit
        // is pending is refused as a conflicting call).
        let first_try = Instant::now();
        let mut offsets_sent = false;
        let result = loop {
            let result = if offsets_sent {
                Ok(())
            } else {
                let guard = self.group.lock().unwrap_or_else(|p| p.into_inner());
                let Some(group) = guard.as_ref() else {
                    return Err(self.fail("no consumer group metadata for the transaction".into()));
                };
                self.producer.send_offsets_to_transaction(&tpl, group, TXN_ATTEMPT)
            };
            let result = result.and_then(|()| {
                offsets_sent = true;
                self.producer.commit_transaction(TXN_ATTEMPT)
            });
            match result {
                Err(KafkaError::Transaction(t))
                    if t.is_retriable()
                        && !t.txn_requires_abort()
                        && !self.fatal.is_set()
                        && self.tracker.fence_pending(self.generation).is_none()
                        && first_try.elapsed() < TXN_RETRY_LIMIT =>
                {
                    self.metrics.transactions.with_label_values(&["retried"]).inc();
                    tracing::warn!(error = %t, "transaction commit not finished (brokers unreachable?); retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
                other => break other,
            }
        };
        if let Err(e) = result {
            if self.tracker.fence_pending(self.generation).is_some() {
                // A revoke gave up on this transaction meanwhile: abort it for the fence.
                self.honour_fence();
                return Ok(());
            }
            // The broker refused the commit but the producer lives on (e.g. the consumer group
            // moved on to a new generation while the brokers were unreachable): abort, and read
            // every partition again from its committed offsets — nothing lost, nothing twice.
            if let KafkaError::Transaction(t) = &e
                && t.txn_requires_abort()
                && !t.is_fatal()
                && !self.fatal.is_set()
            {
                self.abort_transaction();
                self.generation = self.tracker.request_rewind();
                tracing::warn!(error = %e, "transaction commit refused; aborted, reading again from the committed offsets");
                return Ok(());
            }
            self.abort_transaction();
            return Err(self.fail(format!("transaction commit failed (aborted; records will be redelivered): {e}")));
        }
        for (tp, offset) in std::mem::take(&mut self.txn.offsets) {
            self.tracker.complete(&tp, offset);
        }
        self.metrics.transactions.with_label_values(&["committed"]).inc();
        self.txn = Transaction::default();
        Ok(())
    }

    /// Aborts the open transaction: nothing in it becomes visible and its input offsets stay
    /// uncommitted, so its records are read again.
    fn abort_transaction(&mut self) {
        if !self.txn.open {
            return;
        }
        // Retried while the brokers do not answer (a timed-out abort is retriable), so the next
        // transaction can begin once they do.
        let first_try = Instant::now();
        let aborted = loop {
            match self.producer.abort_transaction(TXN_ATTEMPT) {
                Err(KafkaError::Transaction(t)) if t.is_retriable() && first_try.elapsed() < ABORT_RETRY_LIMIT => {
                    tracing::warn!(error = %t, "transaction abort not finished (brokers unreachable?); retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
                other => break other,
            }
        };
        match aborted {
            Ok(()) => {
                self.metrics.transactions.with_label_values(&["aborted"]).inc();
                tracing::warn!(records = self.txn.offsets.len(), "transaction aborted; its records will be read again")
            }
            Err(e) => tracing::error!(error = %e, "transaction abort failed; the broker aborts it at its timeout"),
        }
        self.txn = Transaction::default();
    }

    /// The sink loop: runs until the engine's output closes, then flushes everything.
    pub fn run(
        mut self,
        input: flume::Receiver<Result<LabeledChunk<KafkaPart>>>,
        summary: Arc<Mutex<StreamSummary>>,
    ) -> Result<()> {
        let tick = Duration::from_millis(20);
        let result = (|| -> Result<()> {
            loop {
                let received = input.recv_timeout(tick);
                if self.exactly_once {
                    self.honour_fence();
                }
                match received {
                    Ok(chunk) => self.write_chunk(chunk?, &summary)?,
                    Err(flume::RecvTimeoutError::Timeout) => {}
                    Err(flume::RecvTimeoutError::Disconnected) => return Ok(()),
                }
                self.rotate_files(false)?;
                if self.exactly_once {
                    self.honour_fence();
                    self.commit_transaction(false)?;
                }
            }
        })();
        // Finish: close files, then commit the last transaction — or abort it when anything
        // failed (this sink or another stage), so a half-written chunk is never committed and its
        // records are redelivered.
        let failed = result.is_err() || self.fatal.is_set();
        let finished = self.rotate_files(true).and_then(|()| match (self.exactly_once, failed) {
            (false, _) => Ok(()),
            (true, false) => self.commit_transaction(true),
            (true, true) => {
                self.abort_transaction();
                Ok(())
            }
        });
        if let Some(files) = self.files.take() {
            let _ = files.writer.finish();
        }
        if let Err(e) = self.producer.flush(Duration::from_secs(30)) {
            tracing::warn!(error = %e, "producer flush at shutdown");
        }
        result?;
        finished
    }
}
