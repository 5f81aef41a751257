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
pub mod reach;
mod settings;
mod sink;
mod source;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use serde::Serialize;

pub use acks::{AckTracker, TopicPartition};
pub use decode::{ProductRecord, RecordRules, Rejection, decode};
pub use settings::{ClientProperties, KafkaSettings, LABEL_HEADROOM_BYTES, PRODUCER_MESSAGE_MAX_BYTES};

use crate::common::TextSpec;
use crate::error::{Error, Result};
use crate::learn::TrainingSection;
use crate::metrics::Metrics;
use crate::pipeline::engine::{EngineSettings, LabelingEngine};
use crate::pipeline::sinks::FileSinkSettings;
use crate::registry::ModelVersion;
use crate::serve::{Model, ModelSlot, SessionSettings};

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
    /// Messages consumed without output (corrections handed to the label store): their offsets
    /// complete with the chunk (in exactly-once mode, inside its transaction).
    pub handled: Vec<(TopicPartition, i64)>,
    /// The fencing generation the records were read in (see [`acks::AckTracker::fence_and_wait`]).
    pub generation: u64,
    /// When the consumer handed the chunk to the engine.
    pub handed_at: Option<Instant>,
}

/// Product texts each instance remembers for corrections that name only a product id.
const RECENT_TEXTS: usize = 100_000;

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
    /// The first fatal error, `stage: message` (what `/healthz` answers with).
    pub failure: OnceLock<String>,
    /// Whether the Kafka clients reach their brokers.
    pub reach: Arc<reach::Reach>,
    /// `/healthz` fails once the brokers have been unreachable this long, in ms (0: never).
    pub unhealthy_after_disconnected_ms: AtomicU64,
}

impl Health {
    /// Ready to take traffic: model loaded, consuming, not failed or stopping.
    pub fn ready(&self) -> bool {
        self.model_ready.load(Ordering::Relaxed)
            && self.consuming.load(Ordering::Relaxed)
            && !self.failed.load(Ordering::Relaxed)
            && !self.stopping.load(Ordering::Relaxed)
            && self.reach.disconnected_for().is_none()
    }

    /// Why `/healthz` fails, if it does: a stage failed, or the brokers have been unreachable for
    /// longer than the limit (this one passes again once they answer).
    pub fn unhealthy(&self) -> Option<String> {
        if self.failed.load(Ordering::Relaxed) {
            return Some(format!("failed: {}", self.failure.get().map_or("", String::as_str)));
        }
        let limit = Duration::from_millis(self.unhealthy_after_disconnected_ms.load(Ordering::Relaxed));
        match self.reach.disconnected_for() {
            Some(cut) if !limit.is_zero() && cut > limit => Some(format!(
                "kafka brokers unreachable for {:.0} s (kafka.unhealthy_after_disconnected_ms = {} ms)",
                cut.as_secs_f64(),
                limit.as_millis()
            )),
            _ => None,
        }
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

/// Everything the Kafka pipeline needs, built from a pipeline file by
/// [`crate::config::PipelineConfig::kafka_job`] (the model path resolved once there).
#[derive(Debug, Clone)]
pub struct KafkaJob {
    /// The version served at start (and, when it was reached through `current`, the folder a
    /// watcher follows).
    pub model: ModelVersion,
    pub kafka: KafkaSettings,
    pub text: TextSpec,
    pub engine: EngineSettings,
    /// Rotating files beside the output topic (None = off).
    pub files: Option<FileSinkSettings>,
    /// Continuous learning (None = off).
    pub training: Option<TrainingSection>,
    pub session: SessionSettings,
    /// Poll the model folder's `current` this often and hot-swap (None = serve the start version).
    pub watch: Option<Duration>,
}

impl KafkaJob {
    /// The feedback topic consumed beside the input topic, if any.
    pub fn feedback_topic(&self) -> Option<&str> {
        self.training.as_ref().map(|t| t.feedback_topic.trim()).filter(|t| !t.is_empty())
    }
}

/// The first fatal error of any stage. Once set, every stage stops: the consumer reads no more,
/// nothing more is committed, and [`run`] returns it; the health it reports to answers `/healthz`
/// with 503 and the stage at once.
#[derive(Debug, Default)]
pub struct Fatal {
    first: OnceLock<(&'static str, String)>,
    health: Option<Arc<Health>>,
}

impl Fatal {
    /// A fatal flag that marks `health` failed the moment a stage fails.
    pub fn reporting_to(health: Arc<Health>) -> Self {
        Self { first: OnceLock::new(), health: Some(health) }
    }

    /// Records `stage`'s failure (the first one wins) and returns it as an error.
    pub fn fail(&self, stage: &'static str, message: impl Into<String>) -> Error {
        let message = message.into();
        if self.first.set((stage, message.clone())).is_ok() {
            tracing::error!(stage, error = %message, "pipeline failed");
            if let Some(health) = &self.health {
                let _ = health.failure.set(format!("{stage}: {message}"));
                health.failed.store(true, Ordering::Relaxed);
            }
        }
        Error::Pipeline { stage, message }
    }

    /// Whether a stage failed.
    pub fn is_set(&self) -> bool {
        self.first.get().is_some()
    }

    /// The first failure, as an error.
    pub fn error(&self) -> Option<Error> {
        self.first.get().map(|(stage, message)| Error::Pipeline { stage, message: message.clone() })
    }
}

/// Runs the Kafka pipeline until `stop` is set (or a fatal error), then drains and commits.
pub fn run(
    job: &KafkaJob,
    model: Arc<dyn Model>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stop: Arc<AtomicBool>,
) -> Result<StreamSummary> {
    let identity = model.identity();
    metrics.set_model(&identity.name, &identity.version);
    let slot = ModelSlot::new(model);
    run_with_slot(job, slot, metrics, health, stop)
}

/// [`run`] with a model slot the caller keeps (to hot-swap models while it runs).
pub fn run_with_slot(
    job: &KafkaJob,
    slot: ModelSlot,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stop: Arc<AtomicBool>,
) -> Result<StreamSummary> {
    let (engine_tx, engine) = LabelingEngine::<KafkaPart>::start(slot.clone(), job.engine.clone(), metrics.clone())?;
    health.model_ready.store(true, Ordering::Relaxed);
    health.unhealthy_after_disconnected_ms.store(job.kafka.unhealthy_after_disconnected_ms, Ordering::Relaxed);
    let tracker = Arc::new(AckTracker::new());
    let fatal = Arc::new(Fatal::reporting_to(health.clone()));
    // Continuous learning and hot swap run beside the data path.
    let learner = match &job.training {
        Some(training) => Some(crate::learn::Learner::new(
            training.clone(),
            crate::learn::RegistryTarget::of(&job.model)?,
            slot.clone(),
            job.session.clone(),
            metrics.clone(),
        )?),
        None => None,
    };
    // Trusted labels go to the intake thread; commits wait on its barrier.
    let intake = match &learner {
        Some(learner) => Some(crate::learn::intake::start(learner.store.clone(), job.kafka.chunk_records.max(1) * 4)?),
        None => None,
    };
    let barrier = intake.as_ref().map(|i| i.barrier.clone());
    let consumer = source::create_consumer(
        job,
        tracker.clone(),
        engine_tx,
        metrics.clone(),
        health.clone(),
        fatal.clone(),
        barrier.clone(),
    )?;
    let sink = sink::Sink::new(
        job,
        tracker.clone(),
        metrics.clone(),
        fatal.clone(),
        consumer.context().group.clone(),
        barrier,
        health.reach.clone(),
    )?;
    let summary = Arc::new(std::sync::Mutex::new(StreamSummary::default()));
    let sink_summary = summary.clone();
    let receiver = engine.receiver();
    let sink_thread = std::thread::Builder::new()
        .name("prodcat-sink".into())
        .spawn({
            let fatal = fatal.clone();
            // Any error that ends the sink is fatal at once (the consumer stops reading).
            move || sink.run(receiver, sink_summary).inspect_err(|e| drop(fatal.fail("sink", e.to_string())))
        })
        .map_err(|e| Error::thread("starting the sink thread", e))?;
    let side_stop = Arc::new(AtomicBool::new(false));
    let mut side_threads = Vec::new();
    if let (Some(interval), Some(model_dir)) = (job.watch, &job.model.follows) {
        let watcher =
            crate::learn::watch::ModelWatcher::new(model_dir, slot.clone(), job.session.clone(), metrics.clone());
        side_threads.push(watcher.spawn(interval, side_stop.clone())?);
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
                        std::thread::sleep(Duration::from_millis(500));
                    }
                })
                .map_err(|e| Error::thread("starting the learner", e))?,
        );
    }
    let label_inputs = intake.as_ref().zip(learner.as_ref()).map(|(i, learner)| source::LabelInputs {
        events: i.events.clone(),
        feedback: job.feedback_topic().map(|topic| source::Feedback {
            topic: topic.to_string(),
            known: decode::KnownTexts::new(learner.store.clone(), &job.kafka.id_field, RECENT_TEXTS),
        }),
    });
    let consumed = source::consume(job, consumer, tracker, stop, fatal.clone(), metrics, health.clone(), label_inputs);
    // Every label the consumer handed over reaches the store before the learner flushes it.
    if let Some(crate::learn::intake::Intake { events, handle, .. }) = intake {
        drop(events);
        if handle.join().is_err() {
            fatal.fail("label intake", "the label intake thread panicked");
        }
    }
    side_stop.store(true, Ordering::Relaxed);
    for t in side_threads {
        let _ = t.join();
    }
    if let Some(learner) = &learner {
        learner.shutdown();
    }
    let sunk = sink_thread.join().unwrap_or_else(|_| Err(fatal.fail("sink", "the sink thread panicked")));
    if fatal.is_set() {
        // The sink may be gone: drop what the engine still produces so it can finish.
        let leftovers = engine.receiver();
        while leftovers.recv().is_ok() {}
    }
    engine.join();
    health.consuming.store(false, Ordering::Relaxed);
    if let Some(error) = fatal.error() {
        health.failed.store(true, Ordering::Relaxed);
        return Err(error);
    }
    let received = consumed?;
    sunk?;
    let mut out = summary.lock().map(|s| s.clone()).unwrap_or_default();
    out.received = received;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_marks_health_failed_at_once_and_names_the_stage() {
        let health = Arc::new(Health { model_ready: AtomicBool::new(true), ..Default::default() });
        health.consuming.store(true, Ordering::Relaxed);
        assert!(health.ready());
        let fatal = Fatal::reporting_to(health.clone());
        let error = fatal.fail("sink", "writing out/part-0001.arrow: No space left on device");
        assert!(error.to_string().contains("No space left"), "{error}");
        assert!(health.failed.load(Ordering::Relaxed) && !health.ready());
        fatal.fail("producer", "later failure");
        assert_eq!(health.failure.get().unwrap(), "sink: writing out/part-0001.arrow: No space left on device");
        assert!(matches!(fatal.error(), Some(Error::Pipeline { stage: "sink", .. })));
    }
}
