//! Continuous learning: the running pipeline accumulates trusted labels, trains a candidate in the
//! background, gates it against the serving model on held-out products, publishes the winner to
//! the registry, and the [`watch::ModelWatcher`] hot-swaps whatever `current` points at.
//!
//! ```text
//! trusted labels ─► LabelStore ─► trigger ─► trainer thread (bounded threads) ─► gate ─► registry
//!                                                                                         │ current
//!                                                  engine ◄── ModelSlot ◄── ModelWatcher ◄┘
//! ```

pub mod intake;
pub mod store;
pub mod watch;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use store::{LabelSource, LabelStore, StoreLimits};

use crate::common::{LexicalSettings, TextSpec};
use crate::data::prepare::DataSource;
use crate::error::{Error, Result};
use crate::eval::ClassificationReport;
use crate::metrics::Metrics;
use crate::models::RetrainJob;
use crate::registry::ModelVersion;
use crate::serve::{Model, ModelSlot, SessionSettings, score_texts};
use crate::staging::Candidate;
use crate::train::TrainSettings;

/// `[training]` of a pipeline file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainingSection {
    pub enabled: bool,
    /// Input field holding a trusted category (empty = none).
    pub trusted_label_field: String,
    /// Topic of corrections `{"id": …, "label": …[, "title": …]}` (empty = none).
    pub feedback_topic: String,
    /// Hugging Face base model folder the candidates are fine-tuned from.
    pub base_model: PathBuf,
    /// Label store and training state.
    pub state_dir: PathBuf,
    /// Train when this many new labels arrived since the last run.
    pub min_new_labels: usize,
    /// Also train every this many seconds when new labels arrived (0 = only by count).
    pub interval_secs: u64,
    /// Train only when every class has at least this many examples.
    pub min_examples_per_class: usize,
    /// Threads the trainer may use (inference keeps the rest).
    pub threads: usize,
    /// Promote when candidate macro-F1 ≥ serving macro-F1 − tolerance …
    pub tolerance: f64,
    /// … and no class of the candidate has F1 below this floor …
    pub class_f1_floor: f64,
    /// … nor more than this below the serving model's F1 on the same class; and every class the
    /// serving model knows must have held-out rows (a candidate that cannot be shown to keep a
    /// class is refused rather than allowed to forget it).
    pub class_regression_tolerance: f64,
    pub max_records: usize,
    pub max_age_days: u64,
    /// Fine-tuning hyper-parameters.
    pub settings: TrainSettings,
    /// Settings of lexical candidates (used when the serving model is lexical).
    pub lexical: LexicalSettings,
}

impl Default for TrainingSection {
    fn default() -> Self {
        Self {
            enabled: false,
            trusted_label_field: String::new(),
            feedback_topic: String::new(),
            base_model: PathBuf::from(".deps/models/all-MiniLM-L6-v2"),
            state_dir: PathBuf::from(".prodcat/state"),
            min_new_labels: 1000,
            interval_secs: 0,
            min_examples_per_class: 5,
            threads: 1,
            tolerance: 0.0,
            class_f1_floor: 0.0,
            class_regression_tolerance: 0.1,
            max_records: 1_000_000,
            max_age_days: 365,
            settings: TrainSettings::default(),
            lexical: LexicalSettings::default(),
        }
    }
}

/// How a training run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Promoted,
    Rejected,
    Failed,
    Cancelled,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Promoted => "promoted",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// The gate's verdict on a candidate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateDecision {
    pub promote: bool,
    pub candidate_macro_f1: f64,
    pub serving_macro_f1: f64,
    pub worst_class: Option<(String, f64)>,
    pub reason: String,
}

/// How strict the gate is.
#[derive(Debug, Clone, Copy)]
pub struct GateRules {
    /// Candidate macro-F1 may be this much below the serving model's.
    pub tolerance: f64,
    /// No class of the candidate below this F1.
    pub floor: f64,
    /// No class more than this below the serving model's F1 on it.
    pub class_regression: f64,
}

/// Compares a candidate with the serving model on the candidate's held-out split: macro-F1, every
/// class against a floor and against the serving model, and coverage — every class the serving
/// model knows must be among the held-out rows.
pub fn gate(candidate: &Candidate, serving: &dyn Model, rules: GateRules) -> Result<GateDecision> {
    let GateRules { tolerance, floor, class_regression } = rules;
    let Some(test) = &candidate.test else {
        return Ok(GateDecision {
            promote: false,
            candidate_macro_f1: 0.0,
            serving_macro_f1: 0.0,
            worst_class: None,
            reason: "no held-out split to evaluate on".into(),
        });
    };
    let labels = &test.report.labels;
    let texts: Vec<&str> = candidate.test_texts.iter().map(String::as_str).collect();
    let scores = score_texts(serving, &texts, None)?.output;
    let index: std::collections::HashMap<&str, usize> =
        labels.iter().enumerate().map(|(i, l)| (l.as_str(), i)).collect();
    // Serving predictions in the candidate's label space (its taxonomy may be smaller).
    let y_pred: Vec<usize> = (0..scores.rows)
        .map(|r| {
            let best = scores.argmax(r).0;
            index.get(serving.labels()[best].as_str()).copied().unwrap_or(usize::MAX)
        })
        .collect();
    let y_true = &test.y_true;
    // A prediction outside the candidate's labels is simply wrong: map it to a class ≠ truth.
    let y_pred: Vec<usize> =
        y_pred.iter().zip(y_true).map(|(&p, &t)| if p == usize::MAX { (t + 1) % labels.len() } else { p }).collect();
    let serving_report = ClassificationReport::compute(labels, y_true, &y_pred, None);
    let candidate_f1 = test.report.macro_f1;
    let worst = test
        .report
        .per_class
        .iter()
        .filter(|c| c.support > 0)
        .min_by(|a, b| a.f1.total_cmp(&b.f1))
        .map(|c| (c.label.clone(), c.f1));
    let better = candidate_f1 + 1e-12 >= serving_report.macro_f1 - tolerance;
    let floor_ok = worst.as_ref().is_none_or(|(_, f1)| *f1 >= floor);
    // Classes the serving model knows that the held-out rows never show: nothing proves the
    // candidate kept them (labels arriving one category at a time look exactly like this).
    let unseen: Vec<&str> = serving
        .labels()
        .iter()
        .filter(|l| !test.report.per_class.iter().any(|c| &c.label == *l && c.support > 0))
        .map(String::as_str)
        .collect();
    let lost: Vec<String> = test
        .report
        .per_class
        .iter()
        .zip(&serving_report.per_class)
        .filter(|(c, s)| c.support > 0 && c.f1 + 1e-12 < s.f1 - class_regression)
        .map(|(c, s)| format!("{} {:.3} vs serving {:.3}", c.label, c.f1, s.f1))
        .collect();
    let reason = if !better {
        format!("macro-F1 {candidate_f1:.4} below serving {:.4} − {tolerance}", serving_report.macro_f1)
    } else if !floor_ok {
        format!("class {:?} below the F1 floor {floor}", worst.as_ref().map(|w| &w.0))
    } else if !unseen.is_empty() {
        format!("no held-out rows of serving classes {unseen:?}: the candidate could have forgotten them")
    } else if !lost.is_empty() {
        format!("classes lost more than {class_regression} F1 against the serving model: {}", lost.join(", "))
    } else {
        format!("macro-F1 {candidate_f1:.4} vs serving {:.4} (tolerance {tolerance})", serving_report.macro_f1)
    };
    Ok(GateDecision {
        promote: better && floor_ok && unseen.is_empty() && lost.is_empty(),
        candidate_macro_f1: candidate_f1,
        serving_macro_f1: serving_report.macro_f1,
        worst_class: worst,
        reason,
    })
}

/// The label store's rows plus replay rows, per class only up to the store's typical class size
/// (the median count of its classes): classes the store lacks are filled in, classes it has are
/// left to it, so replay keeps old classes without drowning new labels. Replay rows whose text
/// the store labels are left out (a stored label is newer: a correction wins over what the
/// serving model was taught).
fn with_replay(store: &crate::data::LabeledData, replay: &crate::registry::replay::Replay) -> crate::data::LabeledData {
    let known: std::collections::HashSet<&str> = store.texts.iter().map(String::as_str).collect();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for l in &store.labels {
        *counts.entry(l.as_str()).or_default() += 1;
    }
    let mut sizes: Vec<usize> = counts.values().copied().collect();
    sizes.sort_unstable();
    let typical = sizes.get(sizes.len() / 2).copied().unwrap_or(0).max(1);
    let extra = replay.to_data();
    let mut added: BTreeMap<&str, usize> = BTreeMap::new();
    let keep: Vec<usize> = (0..extra.len())
        .filter(|&i| {
            let label = extra.labels[i].as_str();
            let have = counts.get(label).copied().unwrap_or(0) + added.get(label).copied().unwrap_or(0);
            let take = have < typical && !known.contains(extra.texts[i].as_str());
            if take {
                *added.entry(label).or_default() += 1;
            }
            take
        })
        .collect();
    let extra = extra.select(&keep);
    let mut out = store.clone();
    out.texts.extend(extra.texts);
    out.labels.extend(extra.labels);
    if let Some(g) = out.groups.as_mut() {
        g.extend(extra.groups.unwrap_or_default());
    }
    if let Some(f) = out.fixed_split.as_mut() {
        f.extend(std::iter::repeat_n(None, keep.len()));
    }
    out
}

/// Where promoted versions go: the registry and model name behind the serving model's path.
#[derive(Debug, Clone)]
pub struct RegistryTarget {
    pub registry: PathBuf,
    pub name: String,
}

impl RegistryTarget {
    /// The registry and name of the served version (`REG/NAME/vN`).
    pub fn of(version: &ModelVersion) -> Result<Self> {
        let (registry, name) = version.registry_target()?;
        Ok(Self { registry, name })
    }
}

/// The background learner of a running pipeline.
pub struct Learner {
    pub store: Arc<LabelStore>,
    settings: TrainingSection,
    target: RegistryTarget,
    slot: ModelSlot,
    session: SessionSettings,
    metrics: Arc<Metrics>,
    running: Mutex<Option<(JoinHandle<()>, Arc<AtomicBool>)>>,
    last_run: Mutex<Instant>,
    /// The store's new-label count when a run was last deferred (too few classes with their
    /// minimum): nothing is re-read until more labels arrive.
    deferred_at: Mutex<Option<usize>>,
    /// Outcomes of finished runs (for tests and logs).
    pub history: Arc<Mutex<Vec<(Outcome, Option<GateDecision>)>>>,
}

impl Learner {
    /// A learner publishing into `target` and reading the serving model from `slot`.
    pub fn new(
        settings: TrainingSection,
        target: RegistryTarget,
        slot: ModelSlot,
        session: SessionSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>> {
        // Trusted labels are one category per record, and its gate and replay sample compare
        // single labels: a multi-label model is served, not retrained in the pipeline.
        let (_, identity) = slot.current();
        if identity.head != crate::common::Head::SingleLabel {
            return Err(Error::config(
                "training",
                format!(
                    "model {}:{} is {}: continuous learning retrains single-label models only; serve it with \
                     training.enabled = false and retrain it with `prodcat train`",
                    identity.name,
                    identity.version,
                    identity.head.name()
                ),
            ));
        }
        let limits = StoreLimits {
            max_records: settings.max_records,
            max_age_days: settings.max_age_days,
            ..Default::default()
        };
        let store = LabelStore::open(&settings.state_dir.join("labels"), limits)?;
        metrics.label_store_records.set(store.snapshot()?.len() as i64);
        Ok(Arc::new(Self {
            store,
            settings,
            target,
            slot,
            session,
            metrics,
            running: Mutex::new(None),
            last_run: Mutex::new(Instant::now()),
            deferred_at: Mutex::new(None),
            history: Arc::default(),
        }))
    }

    /// Starts a run if the trigger policy says so; never two at once. Returns whether one started.
    pub fn maybe_train(self: &Arc<Self>) -> Result<bool> {
        self.start(false)
    }

    /// Starts a run now if any new labels arrived (end of a stream, an operator's request); the
    /// class minimum still applies and never two runs at once.
    pub fn train_now(self: &Arc<Self>) -> Result<bool> {
        self.start(true)
    }

    fn start(self: &Arc<Self>, force: bool) -> Result<bool> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((handle, _)) = running.as_ref() {
            if !handle.is_finished() {
                return Ok(false);
            }
            if let Some((h, _)) = running.take() {
                let _ = h.join();
            }
        }
        let new = self.store.new_labels();
        let by_count = new >= self.settings.min_new_labels.max(1);
        let by_time = self.settings.interval_secs > 0
            && new > 0
            && self
                .last_run
                .lock()
                .map(|t| t.elapsed() >= Duration::from_secs(self.settings.interval_secs))
                .unwrap_or(false);
        if !(by_count || by_time || (force && new > 0)) {
            return Ok(false);
        }
        let mut deferred = self.deferred_at.lock().unwrap_or_else(|p| p.into_inner());
        if *deferred == Some(new) {
            return Ok(false);
        }
        self.store.flush()?;
        let all = self.store.training_data()?;
        self.metrics.label_store_records.set(all.len() as i64);
        // Classes below their minimum wait in the store for more examples; they do not hold
        // the others back.
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for l in &all.labels {
            *counts.entry(l.as_str()).or_default() += 1;
        }
        let min = self.settings.min_examples_per_class;
        let waiting: Vec<String> = counts.iter().filter(|(_, n)| **n < min).map(|(l, _)| l.to_string()).collect();
        if counts.len() - waiting.len() < 2 {
            tracing::info!(?counts, min, "training deferred: fewer than two classes have their minimum of examples");
            *deferred = Some(new);
            return Ok(false);
        }
        *deferred = None;
        let data = if waiting.is_empty() {
            all
        } else {
            tracing::info!(classes = ?waiting, min, "classes below their minimum wait for more examples; training the rest");
            let keep: Vec<usize> = (0..all.len()).filter(|&r| !waiting.contains(&all.labels[r])).collect();
            all.select(&keep)
        };
        self.store.take_new_labels();
        *self.last_run.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        let cancel = Arc::new(AtomicBool::new(false));
        let me = self.clone();
        let flag = cancel.clone();
        let handle = std::thread::Builder::new()
            .name("prodcat-trainer".into())
            .spawn(move || me.train_once(data, flag))
            .map_err(|e| Error::thread("starting the trainer", e))?;
        *running = Some((handle, cancel));
        Ok(true)
    }

    fn train_once(&self, mut data: crate::data::LabeledData, cancel: Arc<AtomicBool>) {
        let started = Instant::now();
        // Category paths: the candidate's labels make a tree as the serving model's did.
        if data.paths.is_none() {
            // Its taxonomy file read from the serving version's copy, wherever the recorded path is.
            let (serving, _) = self.slot.current();
            data.paths = serving.card().taxonomy.as_ref().map(|t| crate::common::PathLabels {
                file: serving.version().taxonomy_file().map(|f| f.display().to_string()),
                ..t.path_labels()
            });
        }
        let (outcome, decision) = match self.train_and_gate(&data, cancel.clone()) {
            Ok((outcome, decision)) => (outcome, decision),
            Err(e) if cancel.load(Ordering::Relaxed) => {
                tracing::info!(error = %e, "training cancelled");
                (Outcome::Cancelled, None)
            }
            Err(e) => {
                tracing::error!(error = %e, "training run failed; the serving model is unchanged");
                (Outcome::Failed, None)
            }
        };
        self.metrics.training_runs.with_label_values(&[outcome.as_str()]).inc();
        if let Some(d) = &decision {
            self.metrics.training_eval_macro_f1.set(d.candidate_macro_f1);
            self.metrics.training_serving_macro_f1.set(d.serving_macro_f1);
            tracing::info!(
                outcome = outcome.as_str(),
                rows = data.len(),
                candidate_macro_f1 = format!("{:.4}", d.candidate_macro_f1),
                serving_macro_f1 = format!("{:.4}", d.serving_macro_f1),
                seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
                reason = %d.reason,
                "training run finished"
            );
        }
        if let Ok(mut h) = self.history.lock() {
            h.push((outcome, decision));
        }
    }

    fn train_and_gate(
        &self,
        data: &crate::data::LabeledData,
        cancel: Arc<AtomicBool>,
    ) -> Result<(Outcome, Option<GateDecision>)> {
        let (serving, _) = self.slot.current();
        // What the serving model was trained on comes back as replay rows, so the candidate
        // keeps its classes and the gate holds out rows of each.
        let serving_dir = self.target.registry.join(&self.target.name).join(&serving.card().version);
        let merged;
        let data = match crate::registry::replay::Replay::read(&serving_dir)? {
            Some(replay) => {
                merged = with_replay(data, &replay);
                tracing::info!(
                    store = data.len(),
                    replay = merged.len() - data.len(),
                    "training on the label store and the serving model's replay sample"
                );
                &merged
            }
            None => {
                tracing::warn!(version = %serving_dir.display(), "the serving model has no replay sample: the candidate learns from the label store alone");
                data
            }
        };
        // Taxonomy: the serving labels keep their ids; labels new in trusted data are appended.
        let mut labels: Vec<String> = serving.labels().to_vec();
        for l in data.label_set() {
            if !labels.contains(&l) {
                tracing::info!(label = %l, "new category in trusted data: the candidate's head grows");
                labels.push(l);
            }
        }
        let job = RetrainJob {
            data,
            source: DataSource {
                file: self.store.dir().display().to_string(),
                text: TextSpec::column("text"),
                label_column: "label".into(),
                group_column: Some("id".into()),
                ..Default::default()
            },
            labels,
            registry: self.target.registry.clone(),
            name: self.target.name.clone(),
            transformer: self.settings.settings.clone(),
            lexical: self.settings.lexical.clone(),
            base_model: self.settings.base_model.clone(),
            session: self.session.clone(),
            cancel,
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(self.settings.threads.max(1))
            .thread_name(|i| format!("prodcat-train-{i}"))
            .build()
            .map_err(|e| Error::thread("training thread pool", e))?;
        // Candidates are of the serving model's kind (a cascade retrains both members and
        // re-tunes its threshold on the label store's validation split).
        let family = crate::models::family(serving.card().model.kind());
        let candidate = pool.install(|| family.candidate(job))?;
        let rules = GateRules {
            tolerance: self.settings.tolerance,
            floor: self.settings.class_f1_floor,
            class_regression: self.settings.class_regression_tolerance,
        };
        let decision = gate(&candidate, &*serving, rules)?;
        if decision.promote {
            let dir = candidate.publish(true)?;
            tracing::info!(version = %dir.display(), "candidate promoted");
            Ok((Outcome::Promoted, Some(decision)))
        } else {
            Ok((Outcome::Rejected, Some(decision)))
        }
    }

    /// Stops a run in progress (at its next batch) and waits for it.
    pub fn shutdown(&self) {
        let taken = self.running.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((handle, cancel)) = taken {
            cancel.store(true, Ordering::Relaxed);
            let _ = handle.join();
        }
        if let Err(e) = self.store.flush() {
            tracing::warn!(error = %e, "label store flush at shutdown");
        }
    }

    /// Whether a run is in progress.
    pub fn training(&self) -> bool {
        self.running.lock().map(|r| r.as_ref().is_some_and(|(h, _)| !h.is_finished())).unwrap_or(false)
    }
}
