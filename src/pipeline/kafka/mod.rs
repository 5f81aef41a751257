//! The streaming pipeline: product records from a Kafka topic, labeled by the engine, written to
//! an output topic (and optionally rotating files), with dead letters and low-confidence reviews.
//!
//! ```text
//! consumer thread ─► decode+validate ─► engine ─► sink thread ─► output / review / dead-letter topics, files
//!   ▲ commit offsets ◄──────────── AckTracker ◄── delivery reports, file closes (or transaction commits)
//! ```
//! Delivery is at-least-once: an input offset is committed only after every sink durably wrote
//! every record up to it, contiguously per partition. With `kafka.exactly_once`, outputs and the
//! input offsets commit in one Kafka transaction instead. On SIGINT/SIGTERM and for partitions
//! revoked by a rebalance, records in flight are finished and committed before letting go.

pub mod acks;
pub mod decode;
mod sink;
mod source;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use rdkafka::consumer::Consumer;
use serde::Serialize;

pub use acks::{AckTracker, TopicPartition};
pub use decode::{ProductRecord, RecordRules, Rejection, decode};

use crate::config::PipelineConfig;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::pipeline::engine::LabelingEngine;
use crate::serve::{Classifier, ModelSlot};

/// Header carrying the model version on labeled records.
pub const MODEL_VERSION_HEADER: &str = "prodcat-model-version";

/// A record on its way through the engine.
#[derive(Debug)]
pub struct InRecord {
    pub tp: TopicPartition,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub record: ProductRecord,
    /// When the consumer read it (for end-to-end latency).
    pub read_at: Instant,
}

/// A message that cannot be labeled.
#[derive(Debug)]
pub struct DeadMessage {
    pub tp: TopicPartition,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub rejection: Rejection,
}

/// The payload of one engine chunk: its valid records (one per text, in order) and the
/// messages dead-lettered in between.
#[derive(Debug, Default)]
pub struct KafkaPart {
    pub records: Vec<InRecord>,
    pub dead: Vec<DeadMessage>,
}

/// What the operations endpoint reports.
#[derive(Debug, Default)]
pub struct Health {
    /// A model is loaded and serving.
    pub model_ready: AtomicBool,
    /// The consumer is subscribed and polling.
    pub consuming: AtomicBool,
    /// Partitions assigned to this instance.
    pub partitions: AtomicUsize,
    /// The pipeline hit a fatal error.
    pub failed: AtomicBool,
    /// Shutdown was requested.
    pub stopping: AtomicBool,
}

impl Health {
    /// Ready to take traffic: model loaded, consuming, not failed or stopping.
    pub fn ready(&self) -> bool {
        self.model_ready.load(Ordering::Relaxed)
            && self.consuming.load(Ordering::Relaxed)
            && !self.failed.load(Ordering::Relaxed)
            && !self.stopping.load(Ordering::Relaxed)
    }
}

/// Counts of a finished run.
#[derive(Debug, Default, Clone, Serialize)]
pub struct StreamSummary {
    pub received: u64,
    pub labeled: u64,
    pub dead_lettered: u64,
    pub reviewed: u64,
}

/// The model folder whose `current` pointer a model path follows (None for a pinned version).
fn watched_model_dir(path: &std::path::Path) -> Option<std::path::PathBuf> {
    let current = crate::registry::files::CURRENT;
    if path.file_name().is_some_and(|n| n == current) {
        return path.parent().map(std::path::Path::to_path_buf);
    }
    if path.join(current).exists() {
        return Some(path.to_path_buf());
    }
    // A registry root with one model: follow that model's pointer.
    let resolved = crate::registry::resolve_model_dir(path).ok()?;
    let parent = resolved.parent()?;
    (resolved.file_name().is_some_and(|n| n == current)).then(|| parent.to_path_buf())
}

/// Runs the Kafka pipeline until `stop` is set (or a fatal error), then drains and commits.
pub fn run(
    config: &PipelineConfig,
    model: Classifier,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stop: Arc<AtomicBool>,
) -> Result<StreamSummary> {
    let identity = model.identity();
    metrics.set_model(&identity.name, &identity.version);
    let slot = ModelSlot::new(model);
    run_with_slot(config, slot, metrics, health, stop)
}

/// [`run`] with a model slot the caller keeps (to hot-swap models while it runs).
pub fn run_with_slot(
    config: &PipelineConfig,
    slot: ModelSlot,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stop: Arc<AtomicBool>,
) -> Result<StreamSummary> {
    let (engine_tx, engine) = LabelingEngine::<KafkaPart>::start(slot.clone(), config.engine.clone(), metrics.clone())?;
    health.model_ready.store(true, Ordering::Relaxed);
    let tracker = Arc::new(AckTracker::new());
    let fatal: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let consumer = source::create_consumer(config, tracker.clone(), engine_tx, metrics.clone(), health.clone())?;
    let sink =
        sink::Sink::new(config, tracker.clone(), metrics.clone(), fatal.clone(), consumer.context().group.clone())?;
    let summary = Arc::new(std::sync::Mutex::new(StreamSummary::default()));
    let sink_summary = summary.clone();
    let receiver = engine.receiver();
    let sink_thread = std::thread::Builder::new()
        .name("prodcat-sink".into())
        .spawn(move || sink.run(receiver, sink_summary))
        .map_err(|e| Error::Other(format!("starting the sink thread: {e}")))?;
    // Continuous learning and hot swap run beside the data path.
    let session = config.session(None);
    let learner = if config.training.enabled {
        let target = crate::learn::RegistryTarget::from_model_path(&config.model.path)?;
        Some(crate::learn::Learner::new(
            config.training.clone(),
            target,
            slot.clone(),
            session.clone(),
            metrics.clone(),
        )?)
    } else {
        None
    };
    let side_stop = Arc::new(AtomicBool::new(false));
    let mut side_threads = Vec::new();
    if config.model.watch {
        if let Some(model_dir) = watched_model_dir(&config.model.path) {
            let watcher = crate::learn::watch::ModelWatcher::new(&model_dir, slot.clone(), session, metrics.clone());
            side_threads.push(
                watcher.spawn(
                    std::time::Duration::from_millis(config.model.watch_interval_ms.max(50)),
                    side_stop.clone(),
                )?,
            );
        }
    }
    if let Some(learner) = learner.clone() {
        let flag = side_stop.clone();
        side_threads.push(
            std::thread::Builder::new()
                .name("prodcat-learner".into())
                .spawn(move || {
                    while !flag.load(Ordering::Relaxed) {
                        if let Err(e) = learner.maybe_train() {
                            tracing::warn!(error = %e, "could not start a training run");
                        }
                        std::thread::sleep(std::time::Duration::from_millis(500));
                    }
                })
                .map_err(|e| Error::Other(format!("starting the learner: {e}")))?,
        );
    }
    let label_inputs = learner.as_ref().map(|l| source::LabelInputs {
        store: l.store.clone(),
        feedback_topic: config.training.feedback_topic.trim().to_string(),
    });
    let consumed =
        source::consume(config, consumer, tracker, stop, fatal.clone(), metrics, health.clone(), label_inputs);
    side_stop.store(true, Ordering::Relaxed);
    for t in side_threads {
        let _ = t.join();
    }
    if let Some(learner) = &learner {
        learner.shutdown();
    }
    let sunk = sink_thread.join().unwrap_or_else(|_| Err(Error::Other("the sink thread panicked".into())));
    engine.join();
    health.consuming.store(false, Ordering::Relaxed);
    let fatal_message = fatal.lock().ok().and_then(|m| m.clone());
    if let Some(message) = fatal_message {
        health.failed.store(true, Ordering::Relaxed);
        return Err(Error::Other(message));
    }
    let received = consumed?;
    sunk?;
    let mut out = summary.lock().map(|s| s.clone()).unwrap_or_default();
    out.received = received;
    Ok(out)
}
