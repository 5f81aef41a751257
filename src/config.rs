//! Pipeline configuration: typed sections loaded with the `config` crate from built-in defaults,
//! then a pipeline file (`pipelines/*.toml`), then `PRODCAT__SECTION__KEY` environment
//! variables, then `--set section.key=value` overrides. [`PipelineConfig::validate`] reports every
//! problem at once, each with its key and the file it came from.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::common::{BatchLimits, TextSpec};
use crate::error::{Error, Result};
use crate::pipeline::engine::EngineSettings;
use crate::pipeline::kafka::{KafkaJob, KafkaSettings};
use crate::pipeline::relabel::{RelabelJob, Shard};
use crate::pipeline::sinks::{FileSinkSettings, OutputFormat, Rotation};
use crate::registry::ModelVersion;
use crate::serve::{ExecutionTarget, SessionSettings};

/// What a pipeline file runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PipelineKind {
    /// Relabel Parquet files (the nightly batch job).
    #[default]
    Relabel,
    /// Consume product records from Kafka and label them continuously.
    Kafka,
}

/// `[pipeline]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineSection {
    pub kind: PipelineKind,
    /// Shown in logs and metrics.
    pub name: String,
}

/// `[model]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSection {
    /// Registry model folder, `current` pointer, or a registry with one model.
    pub path: PathBuf,
    pub device: ExecutionTarget,
    /// With `device = "cuda"`: refuse to run on CPU when CUDA cannot be used.
    pub require_gpu: bool,
    /// With `device = "cuda"`: which GPU (CUDA device ordinal).
    pub device_id: i32,
    /// ONNX Runtime intra-op threads (0 = one per core).
    pub intra_threads: usize,
    /// Whether ONNX Runtime's intra-op threads spin while waiting for work (its default): lower
    /// latency on idle cores, wasted CPU when the cores are shared (a broker on the same machine).
    pub intra_op_spinning: bool,
    /// Run batches through an ONNX Runtime I/O binding (pinned host memory in, outputs copied back
    /// once per batch). Unset: on for CUDA, off for CPU.
    pub io_binding: Option<bool>,
    /// Streaming pipelines: follow the registry's `current` pointer and hot-swap new versions.
    pub watch: bool,
    /// How often `current` is checked, in ms.
    pub watch_interval_ms: u64,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            path: PathBuf::new(),
            device: ExecutionTarget::Cpu,
            require_gpu: false,
            device_id: 0,
            intra_threads: 0,
            intra_op_spinning: true,
            io_binding: None,
            watch: true,
            watch_interval_ms: 1000,
        }
    }
}

/// `[relabel]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelabelSection {
    /// Parquet files, folders or globs.
    pub inputs: Vec<String>,
    pub output: PathBuf,
    pub format: OutputFormat,
    /// SQL predicate pushed down into the scan (empty = all rows).
    #[serde(rename = "where")]
    pub filter: String,
    /// Input columns carried to the output (empty = all).
    pub keep_columns: Vec<String>,
    /// `I/N` share of the input.
    pub shard: String,
    pub chunk_rows: usize,
    pub rotation: Rotation,
    pub progress: bool,
}

impl Default for RelabelSection {
    fn default() -> Self {
        Self {
            inputs: Vec::new(),
            output: PathBuf::new(),
            format: OutputFormat::Parquet,
            filter: String::new(),
            keep_columns: Vec::new(),
            shard: "0/1".into(),
            chunk_rows: 1024,
            rotation: Rotation::default(),
            progress: true,
        }
    }
}

/// `[http]`: the operations endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    /// `host:port` of `/metrics`, `/healthz`, `/readyz`; empty = off.
    pub listen: String,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self { listen: "127.0.0.1:9464".into() }
    }
}

/// A whole pipeline file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    pub pipeline: PipelineSection,
    pub model: ModelSection,
    pub text: TextSpec,
    pub engine: EngineSettings,
    pub relabel: RelabelSection,
    pub kafka: KafkaSettings,
    pub files: FileSinkSettings,
    pub http: HttpSection,
    pub training: crate::learn::TrainingSection,
}

/// Keys whose environment values are comma-separated lists.
const LIST_KEYS: [&str; 3] = ["relabel.inputs", "relabel.keep_columns", "text.fields"];

impl PipelineConfig {
    /// Loads defaults < `file` < environment (`PRODCAT__…`) < `overrides` (`key=value`), and
    /// validates the result.
    pub fn load(file: Option<&Path>, overrides: &[String]) -> Result<Self> {
        let config = Self::merge(file, overrides)?;
        config.validate(&file.map(|f| f.display().to_string()).unwrap_or_else(|| "defaults".into()))?;
        Ok(config)
    }

    /// Like [`PipelineConfig::load`] without validation (for callers that fill in more keys).
    pub fn merge(file: Option<&Path>, overrides: &[String]) -> Result<Self> {
        let origin = file.map(|f| f.display().to_string()).unwrap_or_else(|| "defaults".into());
        let defaults = config::Config::try_from(&PipelineConfig::default())
            .map_err(|e| Error::config("defaults", e.to_string()))?;
        // What the file, the environment and the overrides set, apart from the defaults: some
        // defaults depend on it (see `device_defaults`).
        let mut builder = config::Config::builder();
        if let Some(file) = file {
            if !file.is_file() {
                return Err(Error::config(file.display().to_string(), "pipeline file not found"));
            }
            builder = builder.add_source(config::File::from(file).format(config::FileFormat::Toml));
        }
        let mut env = config::Environment::with_prefix("PRODCAT")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",");
        for key in LIST_KEYS {
            env = env.with_list_parse_key(key);
        }
        builder = builder.add_source(env);
        for item in overrides {
            let (key, value) =
                item.split_once('=').ok_or_else(|| Error::config("--set", format!("`{item}` is not key=value")))?;
            builder = builder.set_override(key.trim(), value.trim()).map_err(|e| Error::config(key, e.to_string()))?;
        }
        let given = builder.build().map_err(|e| Error::config(&origin, e.to_string()))?;
        let merged = config::Config::builder()
            .add_source(defaults)
            .add_source(given.clone())
            .build()
            .map_err(|e| Error::config(&origin, e.to_string()))?;
        // Every key must be read by some section: a misspelt one is refused with its full path
        // (`training.lexical.bukets`), whichever source set it, rather than silently left at its
        // default. Sections that are plain config structs also deny unknown fields themselves; this
        // covers the settings records they share with model cards (`[training.settings]`,
        // `[training.lexical]`), which must stay lenient where cards are read.
        let mut unknown = Vec::new();
        let mut config: Self = serde_ignored::deserialize(merged, |path| unknown.push(path.to_string()))
            .map_err(|e| Error::config(&origin, e.to_string()))?;
        if !unknown.is_empty() {
            return Err(Error::config(
                &origin,
                format!(
                    "unknown key{} {}: not a setting prodcat has (misspelt?)",
                    if unknown.len() > 1 { "s" } else { "" },
                    unknown.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        config.device_defaults(|key| given.get::<config::Value>(key).is_ok());
        Ok(config)
    }

    /// On a GPU, engine limits and window that were not set become the GPU's (8,192 texts sorted
    /// per window, [`BatchLimits::gpu`] per batch); `given(key)` says whether a key was set.
    fn device_defaults(&mut self, given: impl Fn(&str) -> bool) {
        if self.model.device != ExecutionTarget::Cuda {
            return;
        }
        let gpu = BatchLimits::gpu();
        if !given("engine.limits.max_tokens") {
            self.engine.limits.max_tokens = gpu.max_tokens;
        }
        if !given("engine.limits.max_records") {
            self.engine.limits.max_records = gpu.max_records;
        }
        if !given("engine.window") {
            self.engine.window = EngineSettings::GPU_WINDOW;
        }
    }

    /// Checks values, reporting every problem at once.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::config(origin, format!("invalid configuration:\n  - {}", problems.join("\n  - "))))
        }
    }

    /// Every problem of the values, each naming its key (empty: valid).
    pub fn problems(&self) -> Vec<String> {
        let mut problems: Vec<String> = Vec::new();
        if self.model.path.as_os_str().is_empty() {
            problems.push("model.path: required (a registry model folder)".into());
        }
        if self.text.fields.is_empty() {
            problems.push("text.fields: at least one field is needed".into());
        }
        if self.engine.limits.max_records == 0 || self.engine.limits.max_tokens == 0 {
            problems.push("engine.limits: max_records and max_tokens must be positive".into());
        }
        if self.engine.top_k == 0 {
            problems.push("engine.top_k: must be at least 1".into());
        }
        if self.model.device_id < 0 {
            problems.push(format!("model.device_id: {} is not a GPU ordinal (0, 1, ...)", self.model.device_id));
        }
        if self.pipeline.kind == PipelineKind::Relabel {
            if self.relabel.inputs.is_empty() {
                problems.push("relabel.inputs: at least one Parquet file, folder or glob".into());
            }
            if self.relabel.output.as_os_str().is_empty() {
                problems.push("relabel.output: required (an output folder)".into());
            }
            if let Err(e) = self.relabel.shard.parse::<Shard>() {
                problems.push(format!("relabel.shard: {e}"));
            }
        }
        if self.pipeline.kind == PipelineKind::Kafka {
            let k = &self.kafka;
            for (key, value) in
                [("kafka.brokers", &k.brokers), ("kafka.group_id", &k.group_id), ("kafka.input_topic", &k.input_topic)]
            {
                if value.trim().is_empty() {
                    problems.push(format!("{key}: required"));
                }
            }
            if k.learn_only {
                if !self.training.enabled {
                    problems.push("kafka.learn_only: a learner instance needs training.enabled = true".into());
                }
                for (key, value) in [
                    ("kafka.output_topic", &k.output_topic),
                    ("kafka.dead_letter_topic", &k.dead_letter_topic),
                    ("kafka.review_topic", &k.review_topic),
                ] {
                    if !value.trim().is_empty() {
                        problems.push(format!("{key}: must be empty with kafka.learn_only (the serving group writes)"));
                    }
                }
                if self.files.enabled || k.exactly_once {
                    problems.push("kafka.learn_only: writes nothing; turn off [files] and exactly_once".into());
                }
            } else if k.dead_letter_topic.trim().is_empty() {
                problems.push("kafka.dead_letter_topic: required".into());
            }
            if k.output_topic.trim().is_empty() && !self.files.enabled && !k.learn_only {
                problems.push(
                    "kafka.output_topic: required unless [files] is enabled (labeled records need a sink)".into(),
                );
            }
            if k.exactly_once && k.transactional_id.trim().is_empty() {
                problems.push("kafka.transactional_id: required with kafka.exactly_once = true".into());
            }
            let strategy = k
                .consumer_properties
                .get("partition.assignment.strategy")
                .or_else(|| k.properties.get("partition.assignment.strategy"));
            if k.exactly_once && strategy.is_some_and(|s| s.contains("cooperative")) {
                problems.push(
                    "kafka.consumer_properties.partition.assignment.strategy: a cooperative assignor keeps partitions \
                     through a rebalance, so a transaction aborted at a revoke could not be read again; use the eager \
                     `range` or `roundrobin` with kafka.exactly_once = true"
                        .into(),
                );
            }
            if k.exactly_once && self.files.enabled {
                problems.push("files.enabled: files cannot join a Kafka transaction; turn off kafka.exactly_once or the file sink".into());
            }
            problems.extend(topic_loops(k, &self.training));
            match k.producer_message_max_bytes() {
                Err(e) => problems.push(format!("kafka producer {e}")),
                Ok(limit) if k.max_message_bytes + LABEL_HEADROOM_BYTES > limit => problems.push(format!(
                    "kafka.max_message_bytes: {} leaves no room under the producer's message.max.bytes ({limit}) for \
                     the labels and dead-letter headers; use at most {} (or raise message.max.bytes, with the \
                     brokers' and topics' limits)",
                    k.max_message_bytes,
                    limit.saturating_sub(LABEL_HEADROOM_BYTES)
                )),
                Ok(_) => {}
            }
            if !(0.0..=1.0).contains(&k.review_threshold) {
                problems.push("kafka.review_threshold: must be within [0, 1]".into());
            }
            if k.chunk_records == 0 {
                problems.push("kafka.chunk_records: must be at least 1".into());
            }
            let t = &self.training;
            if t.enabled {
                if t.trusted_label_field.trim().is_empty() && t.feedback_topic.trim().is_empty() {
                    problems.push("training.trusted_label_field: set it (or training.feedback_topic) so trusted labels can arrive".into());
                }
                if !t.base_model.join("config.json").is_file() {
                    problems.push(format!(
                        "training.base_model: {} is not a Hugging Face model folder (no config.json)",
                        t.base_model.display()
                    ));
                }
                if t.threads == 0 {
                    problems.push("training.threads: must be at least 1".into());
                }
                if let Err(e) = t.settings.validate() {
                    problems.push(format!("training.settings: {e}"));
                }
            }
            if !self.http.listen.is_empty() && self.http.listen.parse::<std::net::SocketAddr>().is_err() {
                problems.push(format!("http.listen: `{}` is not host:port", self.http.listen));
            }
        }
        problems
    }

    /// How to build ONNX Runtime sessions.
    pub fn session(&self, ort_library: Option<PathBuf>) -> SessionSettings {
        SessionSettings {
            target: self.model.device,
            intra_threads: self.model.intra_threads,
            ort_library,
            require_gpu: self.model.require_gpu,
            device_id: self.model.device_id,
            intra_op_spinning: self.model.intra_op_spinning,
            io_binding: self.model.io_binding,
        }
    }

    /// The model version `model.path` names, resolved once here for everything below. A model
    /// trained on texts composed otherwise than `text` composes them gets a warning.
    pub fn model_version(&self) -> Result<ModelVersion> {
        let model = ModelVersion::open(&self.model.path)?;
        if let Some(problem) = self.text_mismatch(&model) {
            tracing::warn!(model = %model.id(), "text: {problem}");
        }
        Ok(model)
    }

    /// Why `text` does not compose texts like those `model` was trained on, if it does not.
    pub fn text_mismatch(&self, model: &ModelVersion) -> Option<String> {
        model.card.data.as_ref()?.text.as_ref()?.mismatch(&self.text)
    }

    /// The Kafka pipeline this configuration describes.
    pub fn kafka_job(&self, ort_library: Option<PathBuf>) -> Result<KafkaJob> {
        let model = self.model_version()?;
        // Watched only when the path went through `current` (`model.follows`); `run` checks that.
        let watch = self.model.watch.then(|| std::time::Duration::from_millis(self.model.watch_interval_ms.max(50)));
        Ok(KafkaJob {
            model,
            kafka: self.kafka.clone(),
            text: self.text.clone(),
            engine: self.engine.clone(),
            files: self.files.enabled.then(|| self.files.clone()),
            training: self.training.enabled.then(|| self.training.clone()),
            session: self.session(ort_library),
            watch,
        })
    }

    /// The relabel job this configuration describes.
    pub fn relabel_job(&self, ort_library: Option<PathBuf>) -> Result<RelabelJob> {
        let r = &self.relabel;
        Ok(RelabelJob {
            model: self.model_version()?,
            inputs: r.inputs.clone(),
            output: r.output.clone(),
            format: r.format,
            filter: (!r.filter.trim().is_empty()).then(|| r.filter.clone()),
            text: self.text.clone(),
            keep_columns: (!r.keep_columns.is_empty()).then(|| r.keep_columns.clone()),
            shard: r.shard.parse().map_err(|e: String| Error::config("relabel.shard", e))?,
            engine: self.engine.clone(),
            session: self.session(ort_library),
            rotation: r.rotation,
            show_progress: r.progress,
            chunk_rows: r.chunk_rows,
        })
    }
}

use crate::pipeline::kafka::LABEL_HEADROOM_BYTES;

/// Topics the pipeline both reads and writes: every record it writes there would come back.
fn topic_loops(k: &crate::pipeline::kafka::KafkaSettings, training: &crate::learn::TrainingSection) -> Vec<String> {
    let mut read = vec![("kafka.input_topic", k.input_topic.as_str())];
    if training.enabled {
        read.push(("training.feedback_topic", training.feedback_topic.as_str()));
    }
    let written = [
        ("kafka.output_topic", k.output_topic.as_str()),
        ("kafka.dead_letter_topic", k.dead_letter_topic.as_str()),
        ("kafka.review_topic", k.review_topic.as_str()),
    ];
    let mut problems = Vec::new();
    for (read_key, read_topic) in read.iter().filter(|(_, t)| !t.trim().is_empty()) {
        for (write_key, write_topic) in written.iter().filter(|(_, t)| t == read_topic) {
            problems.push(format!(
                "{write_key}: `{write_topic}` is also {read_key}; the pipeline would read back what it writes"
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gpu_gets_gpu_sized_batches_unless_they_are_set() {
        let cpu = PipelineConfig::merge(None, &[]).unwrap();
        assert_eq!((cpu.engine.limits, cpu.engine.window), (BatchLimits::default(), 1024));
        let gpu = PipelineConfig::merge(None, &["model.device=cuda".into()]).unwrap();
        assert_eq!((gpu.engine.limits, gpu.engine.window), (BatchLimits::gpu(), EngineSettings::GPU_WINDOW));
        let set = PipelineConfig::merge(
            None,
            &["model.device=cuda".into(), "engine.limits.max_tokens=20000".into(), "engine.window=2048".into()],
        )
        .unwrap();
        assert_eq!(set.engine.limits, BatchLimits { max_tokens: 20_000, max_records: BatchLimits::gpu().max_records });
        assert_eq!(set.engine.window, 2048);
        // Set to exactly the CPU's values: kept too (set is set).
        let cpu_values = PipelineConfig::merge(
            None,
            &[
                "model.device=cuda".into(),
                "engine.limits.max_records=64".into(),
                "engine.limits.max_tokens=4096".into(),
            ],
        )
        .unwrap();
        assert_eq!(cpu_values.engine.limits, BatchLimits::default());
    }

    #[test]
    fn io_binding_is_left_to_the_device_unless_set() {
        assert_eq!(PipelineConfig::merge(None, &[]).unwrap().session(None).io_binding, None);
        for (value, expected) in [("true", Some(true)), ("false", Some(false))] {
            let config = PipelineConfig::merge(None, &[format!("model.io_binding={value}")]).unwrap();
            assert_eq!(config.session(None).io_binding, expected);
        }
    }
}
