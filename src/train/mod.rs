//! The transformer recipe: fine-tuning a LoRA classifier in-process with candle, then exporting,
//! checking and staging it. Data preparation (taxonomy, split, held-out rows) is shared by every
//! family and lives in [`crate::data::prepare`].
//!
//! [`fit`] runs the whole recipe on labeled examples: stratified grouped split, tokenization,
//! LoRA + head training with AdamW (class weights, early stopping on validation macro-F1, a
//! checkpoint per epoch), merge and ONNX export into a staged registry version, the parity check
//! against ONNX Runtime, and test-split metrics through the exported model. The result is a
//! [`Candidate`]; [`Candidate::publish`] makes it a registry version.

pub mod batches;
pub mod checkpoint;
mod export;
pub mod optim;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{D, Device, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crate::data::prepare::DataSource;
use crate::data::prepare::prepare_data;

use crate::common::{Head, progress_bar};
use crate::data::LabeledData;
use crate::encoder::{Dropout, EncoderClassifier, EncoderConfig, LoraSettings, Pooling, load_base_weights};
use crate::error::{Error, Result};
use crate::eval::macro_f1;
use crate::registry::card::DataInfo;
use crate::serve::SessionSettings;
use crate::staging::Candidate;
use crate::tokenize::{PaddedBatch, TextTokenizer, TokenizedText};
use batches::{bucketed_batches, sorted_batches};
use checkpoint::{Checkpoint, RunState};
use optim::{AdamW, AdamWSettings, LinearSchedule};

/// Hyper-parameters of a fine-tuning run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainSettings {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// Fraction of optimizer steps spent warming the learning rate up.
    pub warmup_ratio: f64,
    /// Texts are truncated to this many tokens.
    pub max_length: usize,
    /// Stop after this many epochs without a better validation macro-F1.
    pub patience: usize,
    /// Weight the loss by inverse class frequency.
    pub class_weights: bool,
    pub seed: u64,
    pub lora: LoraSettings,
    pub pooling: Pooling,
    /// Train/validation/test fractions.
    pub split: [f64; 3],
    /// Hash-based split that stays put as the data grows (the in-pipeline learner), instead of
    /// the stratified one.
    pub stable_split: bool,
    /// Largest tolerated |candle − ONNX Runtime| logit difference.
    pub parity_tolerance: f32,
    pub eval_batch_size: usize,
    /// After choosing the epoch count on validation, train a fresh model for that many epochs on
    /// train + validation and publish it.
    pub refit: bool,
    /// Fit a temperature on the validation logits so probabilities are calibrated (folded into
    /// the head, so the exported graph is unchanged).
    pub calibrate: bool,
    /// Peak learning rate of the encoder's own weights under full fine-tuning (`lora.full`); the
    /// head keeps `learning_rate`.
    pub encoder_learning_rate: f64,
    /// Set when the choices were made by K-fold cross-validation before the run (`auto --folds`):
    /// it then trains on train + validation (as a refit does) for all `epochs`, keeps the last, and
    /// folds this temperature (chosen out of fold) into the head.
    pub cross_validated: Option<CrossValidated>,
}

/// Choices a run takes from a cross-validation made before it (see
/// [`TrainSettings::cross_validated`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrossValidated {
    pub folds: usize,
    pub temperature: Option<f32>,
}

impl Default for TrainSettings {
    fn default() -> Self {
        Self {
            epochs: 3,
            batch_size: 32,
            learning_rate: 1e-3,
            weight_decay: 0.01,
            warmup_ratio: 0.06,
            max_length: 128,
            patience: 2,
            class_weights: false,
            seed: crate::data::prepare::DEFAULT_SEED,
            lora: LoraSettings::default(),
            pooling: Pooling::Mean,
            split: crate::data::prepare::DEFAULT_SPLIT,
            stable_split: false,
            parity_tolerance: 1e-3,
            eval_batch_size: 64,
            refit: false,
            calibrate: true,
            encoder_learning_rate: 5e-5,
            cross_validated: None,
        }
    }
}

impl TrainSettings {
    /// Checks value ranges, reporting every problem at once.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        if self.epochs == 0 {
            problems.push("epochs must be at least 1".to_string());
        }
        if self.batch_size == 0 {
            problems.push("batch_size must be at least 1".into());
        }
        if !(self.learning_rate > 0.0) {
            problems.push("learning_rate must be positive".into());
        }
        if self.lora.full && !(self.encoder_learning_rate > 0.0) {
            problems.push("encoder_learning_rate must be positive".into());
        }
        if self.lora.rank == 0 {
            problems.push("lora rank must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.lora.dropout) {
            problems.push("lora dropout must be in [0, 1)".into());
        }
        if self.max_length < 4 {
            problems.push("max_length must be at least 4".into());
        }
        if let Err(e) = crate::data::prepare::check_fractions(self.split) {
            problems.push(e.to_string());
        }
        if problems.is_empty() { Ok(()) } else { Err(Error::config("train", problems.join("; "))) }
    }

    /// Warm-up then linear decay over `epochs` passes of `rows` rows.
    fn schedule(&self, rows: usize, epochs: usize) -> LinearSchedule {
        let steps = rows.div_ceil(self.batch_size) * epochs;
        LinearSchedule { warmup_steps: (steps as f64 * self.warmup_ratio).ceil().max(1.0) as usize, total_steps: steps }
    }

    /// AdamW over the model's trainable variables.
    fn optimizer(&self, model: &EncoderClassifier) -> Result<AdamW> {
        let settings = AdamWSettings { lr: self.learning_rate, weight_decay: self.weight_decay, ..Default::default() };
        let mut optimizer = AdamW::new(model.trainable(), settings)?;
        let encoder = self.encoder_learning_rate / self.learning_rate;
        let full = [crate::encoder::model::FULL_WEIGHT, crate::encoder::model::FULL_BIAS];
        optimizer.scale_lr(|name| if full.iter().any(|f| name.ends_with(f)) { encoder } else { 1.0 });
        Ok(optimizer)
    }

    /// Hash of everything that shapes a run except its length (epochs, patience), so `--resume`
    /// with more epochs continues the same run.
    fn run_key(&self, data_fingerprint: &str, base: &Path) -> String {
        let mut shape = self.clone();
        shape.epochs = 0;
        shape.patience = 0;
        // Refitting follows the search and does not change it: `--refit --resume` after a run
        // without it refits from that run's choices instead of searching again.
        shape.refit = false;
        let mut h = Sha256::new();
        h.update(data_fingerprint.as_bytes());
        h.update(serde_json::to_vec(&shape).unwrap_or_default());
        h.update(base.to_string_lossy().as_bytes());
        format!("{:x}", h.finalize())[..16].to_string()
    }
}

/// Epochs at most when none are given: enough passes over `train_rows` for about 2,000 optimizer
/// steps, between 3 and 10 — small catalogues need many passes, large ones few (on Amazon 2023,
/// 1,779 training rows, validation macro-F1 still rose until epoch 4–6; early stopping with
/// patience 2 ends most runs before the cap).
pub fn default_epochs(train_rows: usize, batch_size: usize) -> usize {
    let steps_per_epoch = train_rows.div_ceil(batch_size.max(1)).max(1);
    2000usize.div_ceil(steps_per_epoch).clamp(3, 10)
}

/// Everything a fine-tuning run needs.
#[derive(Clone)]
pub struct TrainJob<'a> {
    pub data: &'a LabeledData,
    pub source: DataSource,
    /// Hugging Face base model folder (config.json, model.safetensors, tokenizer.json).
    pub base_dir: PathBuf,
    pub registry: PathBuf,
    pub name: String,
    pub settings: TrainSettings,
    pub resume: bool,
    pub session: SessionSettings,
    pub show_progress: bool,
    /// Set to stop training at the next batch boundary.
    pub cancel: Option<Arc<AtomicBool>>,
    /// The taxonomy (class ids in this order); None = the data's labels, sorted. Every data label
    /// must be in it; a label without examples is allowed (the head keeps a row for it).
    pub labels: Option<Vec<String>>,
}

/// Tokenized examples with their class ids (and for multi-label data each row's classes).
pub(crate) struct Examples {
    pub tokens: Vec<TokenizedText>,
    pub lengths: Vec<usize>,
    pub y: Vec<usize>,
    pub sets: Option<Vec<Vec<u32>>>,
}

impl Examples {
    fn batch(&self, rows: &[usize]) -> PaddedBatch {
        PaddedBatch::from_tokens(rows.iter().map(|&r| &self.tokens[r]))
    }
}

/// Logits per row of `rows` (candle forward, no dropout), row-major in the order of `rows`.
pub(crate) fn logits_rows(
    model: &EncoderClassifier,
    ex: &Examples,
    rows: &[usize],
    batch_size: usize,
) -> Result<Vec<f32>> {
    let classes = model.num_classes();
    let batches = sorted_batches(rows, &ex.lengths, batch_size);
    let workers = rayon::current_num_threads().clamp(1, batches.len().max(1));
    // Worker w takes every w-th batch; each returns (row, logits) pairs.
    let score = |w: usize| -> Result<Vec<(usize, Vec<f32>)>> {
        let mut out = Vec::new();
        for chunk in batches.iter().skip(w).step_by(workers) {
            let logits = model.forward(&ex.batch(chunk), None)?.to_vec2::<f32>()?;
            out.extend(chunk.iter().copied().zip(logits));
        }
        Ok(out)
    };
    let parts: Vec<Result<Vec<(usize, Vec<f32>)>>> = (0..workers).into_par_iter().map(score).collect();
    let mut by_row: std::collections::HashMap<usize, Vec<f32>> = std::collections::HashMap::with_capacity(rows.len());
    for part in parts {
        by_row.extend(part?);
    }
    let mut out = Vec::with_capacity(rows.len() * classes);
    for r in rows {
        out.extend(by_row.get(r).map_or(&[][..], Vec::as_slice));
    }
    Ok(out)
}

/// Predicted class per row of `rows` (candle forward, no dropout).
pub(crate) fn predict_rows(
    model: &EncoderClassifier,
    ex: &Examples,
    rows: &[usize],
    batch_size: usize,
) -> Result<Vec<usize>> {
    let logits = logits_rows(model, ex, rows, batch_size)?;
    Ok(logits
        .chunks_exact(model.num_classes().max(1))
        .map(|l| (0..l.len()).fold(0, |best, k| if l[k] > l[best] { k } else { best }))
        .collect())
}

/// Σ w·(−log p) over the rows, divided by `total` (the weight of the whole batch, so shard losses
/// add up to the batch loss).
fn weighted_cross_entropy(logits: &Tensor, y: &[usize], class_weight: &[f32], total: f32) -> Result<Tensor> {
    let dev = Device::Cpu;
    let targets = Tensor::from_vec(y.iter().map(|&c| c as u32).collect::<Vec<_>>(), (y.len(), 1), &dev)?;
    let weights: Vec<f32> = y.iter().map(|&c| class_weight[c]).collect();
    let weights = Tensor::from_vec(weights, y.len(), &dev)?;
    let log_probs = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = log_probs.gather(&targets, 1)?.squeeze(1)?;
    Ok((picked.mul(&weights)?.sum_all()? * (-1.0 / f64::from(total)))?)
}

/// Σ over the rows and classes of the binary cross-entropy of sigmoid(logits) against `targets`
/// (multi-hot, `[rows, classes]`), divided by `total` (the batch's rows, so shard losses add up):
/// softplus(z) − t·z, with softplus(z) = max(z, 0) + ln(1 + e^−|z|) so no exp overflows.
fn binary_cross_entropy(logits: &Tensor, targets: &Tensor, total: f32) -> Result<Tensor> {
    let softplus = (logits.relu()? + logits.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?)?;
    let loss = (softplus - logits.mul(targets)?)?;
    Ok((loss.sum_all()? * (1.0 / f64::from(total)))?)
}

/// The multi-hot `[rows, classes]` targets of `rows`' label sets.
fn multi_hot(sets: &[Vec<u32>], rows: &[usize], classes: usize) -> Result<Tensor> {
    let mut hot = vec![0f32; rows.len() * classes];
    for (i, &r) in rows.iter().enumerate() {
        for &c in &sets[r] {
            hot[i * classes + c as usize] = 1.0;
        }
    }
    Ok(Tensor::from_vec(hot, (rows.len(), classes), &Device::Cpu)?)
}

/// Forward and backward of one batch, split into data-parallel shards (one per thread of the
/// current rayon pool, BLAS single-threaded inside each). Returns each shard's gradients and the
/// batch loss. Shards and their dropout seeds depend only on the batch, so runs are reproducible.
fn train_step(
    model: &EncoderClassifier,
    ex: &Examples,
    rows: &[usize],
    seed: u64,
    dropout: f32,
    class_weight: &[f32],
) -> Result<(Vec<candle_core::backprop::GradStore>, f64)> {
    let total: f32 = rows.iter().map(|&r| class_weight[ex.y[r]]).sum();
    // Shards smaller than this cost more in thread overhead than they gain.
    const MIN_SHARD: usize = 8;
    let workers = rayon::current_num_threads().clamp(1, rows.len().div_ceil(MIN_SHARD).max(1));
    let shard_size = rows.len().div_ceil(workers);
    let run = |shard: usize, part: &[usize]| -> Result<(candle_core::backprop::GradStore, f64)> {
        let mut d = Dropout::new(dropout, seed ^ ((shard as u64) << 48));
        let logits = model.forward(&ex.batch(part), Some(&mut d))?;
        let loss = match &ex.sets {
            // Multi-label: every row weighs 1 (`class_weight` is all ones), so `total` is the rows.
            Some(sets) => binary_cross_entropy(&logits, &multi_hot(sets, part, model.num_classes())?, total)?,
            None => {
                let targets: Vec<usize> = part.iter().map(|&r| ex.y[r]).collect();
                weighted_cross_entropy(&logits, &targets, class_weight, total)?
            }
        };
        let value = f64::from(loss.to_scalar::<f32>()?);
        Ok((loss.backward()?, value))
    };
    let parts: Vec<&[usize]> = rows.chunks(shard_size.max(1)).collect();
    // Shards run as tasks of the current rayon pool, so the row-parallel kernels inside them
    // nest into the same pool instead of competing with it.
    let results: Vec<Result<(candle_core::backprop::GradStore, f64)>> =
        parts.par_iter().enumerate().map(|(i, part)| run(i, part)).collect();
    let mut stores = Vec::with_capacity(results.len());
    let mut loss = 0.0;
    for r in results {
        let (store, value) = r?;
        stores.push(store);
        loss += value;
    }
    Ok((stores, loss))
}

/// Trains, exports and checks a model; see the module docs.
pub fn fit(job: TrainJob<'_>) -> Result<Candidate> {
    let settings = &job.settings;
    settings.validate()?;
    let started = Instant::now();
    let data = job.data;
    // The head decides the loss (class-weighted cross-entropy on a softmax; multi-label: binary
    // cross-entropy on each class's sigmoid), the validation figure and the calibration.
    if data.head == Head::MultiLabel && settings.cross_validated.is_some() {
        return Err(Error::config("head", "several labels per row are trained on a validation split, not by folds"));
    }
    let (labels, y, split) =
        prepare_data(data, job.labels.as_deref(), &job.source, settings.split, settings.seed, settings.stable_split)?;
    let sets = match crate::eval::truth_of(&labels, data, &job.source.file)? {
        crate::eval::Truth::Sets(sets) => Some(sets),
        crate::eval::Truth::Classes(_) => None,
    };
    // The split as the card records it; with choices made by cross-validation the run trains on
    // train + validation (as a refit does) and has no validation rows of its own.
    let recorded = split.clone();
    let mut split = split;
    if settings.cross_validated.is_some() {
        split.train.append(&mut split.validation);
        split.train.sort_unstable();
    }

    // Base model.
    let base = &job.base_dir;
    let config = EncoderConfig::from_hf_file(&base.join("config.json"))?;
    let tokenizer =
        TextTokenizer::from_file(&base.join("tokenizer.json"), settings.max_length.min(config.max_sequence()))?;
    let weights_path = base.join("model.safetensors");
    // The base weights with fresh adapters and head (seeded); the base tensors are dropped after.
    let fresh_model = |config: EncoderConfig| -> Result<EncoderClassifier> {
        let weights = load_base_weights(&weights_path)?;
        let lora = settings.lora.clone();
        EncoderClassifier::new(config, &weights, &weights_path, lora, settings.pooling, labels.len(), settings.seed)
    };
    let model = fresh_model(config)?;

    let texts: Vec<&str> = data.texts.iter().map(String::as_str).collect();
    let tokens = tokenizer.encode_batch(&texts)?;
    let lengths = tokens.iter().map(TokenizedText::len).collect();
    let ex = Examples { tokens, lengths, y, sets };

    // Class weights: inverse frequency in the training split, mean 1.
    let mut train_counts = vec![0usize; labels.len()];
    for &r in &split.train {
        train_counts[ex.y[r]] += 1;
    }
    let class_weight: Vec<f32> = train_counts
        .iter()
        .map(|&n| {
            if settings.class_weights && n > 0 && ex.sets.is_none() {
                split.train.len() as f32 / (labels.len() as f32 * n as f32)
            } else {
                1.0
            }
        })
        .collect();

    let fingerprint = data.fingerprint();
    let checkpoint =
        Checkpoint::new(&job.registry.join(&job.name).join(".checkpoints"), &settings.run_key(&fingerprint, base));
    let schedule = settings.schedule(split.train.len(), settings.epochs);
    let mut optimizer = settings.optimizer(&model)?;
    let mut state = RunState::default();
    let mut best = model.snapshot()?;
    if job.resume && checkpoint.exists() {
        let (last, best_saved, opt_state, saved) = checkpoint.load()?;
        model.load_trainable(&last, &checkpoint.dir)?;
        optimizer.load_state(&opt_state, saved.optimizer_step);
        best = best_saved;
        tracing::info!(checkpoint = %checkpoint.dir.display(), epochs_done = saved.epochs_done, "resuming training");
        state = saved;
    } else {
        if job.resume {
            tracing::warn!(checkpoint = %checkpoint.dir.display(), "--resume: no checkpoint for this data and settings; starting fresh");
        }
        checkpoint.clear()?;
    }

    // Data-parallel shards run one per thread; BLAS inside each stays single-threaded.
    crate::encoder::kernels::set_threads(1);
    tracing::info!(
        matmul = crate::encoder::kernels::backend(),
        threads = rayon::current_num_threads(),
        rows = data.len(),
        train = split.train.len(),
        validation = split.validation.len(),
        test = split.test.len(),
        classes = labels.len(),
        trainable_parameters = model.trainable_parameters(),
        adaptation = if settings.lora.full { "full" } else { "lora" },
        "training transformer classifier"
    );
    while state.epochs_done < settings.epochs && state.epochs_without_improvement < settings.patience.max(1) {
        let epoch = state.epochs_done + 1;
        let pass = EpochPass { job: &job, ex: &ex, class_weight: &class_weight, schedule: &schedule };
        let (loss, seen, epoch_seconds) = pass.run(&model, &mut optimizer, &split.train, epoch, "epoch")?;
        state.train_seconds += epoch_seconds;
        state.train_samples += seen;
        // Without validation rows (choices made by cross-validation) every epoch is the latest best.
        let f1 = if split.validation.is_empty() {
            None
        } else {
            Some(match &ex.sets {
                // Multi-label: the micro-F1 of the margins' signs (before calibration).
                Some(sets) => {
                    let logits = logits_rows(&model, &ex, &split.validation, settings.eval_batch_size)?;
                    let truth: Vec<Vec<u32>> = split.validation.iter().map(|&r| sets[r].clone()).collect();
                    crate::eval::metrics::margin_micro_f1(&logits, labels.len(), &truth)
                }
                None => {
                    let val_pred = predict_rows(&model, &ex, &split.validation, settings.eval_batch_size)?;
                    let val_true: Vec<usize> = split.validation.iter().map(|&r| ex.y[r]).collect();
                    macro_f1(&val_true, &val_pred, labels.len())
                }
            })
        };
        state.validation_macro_f1.extend(f1);
        state.epochs_done = epoch;
        state.optimizer_step = optimizer.step;
        if f1.is_none_or(|f1| f1 > state.best_macro_f1) || state.best_epoch == 0 {
            state.best_macro_f1 = f1.unwrap_or(state.best_macro_f1);
            state.best_epoch = epoch;
            state.epochs_without_improvement = 0;
            best = model.snapshot()?;
        } else {
            state.epochs_without_improvement += 1;
        }
        tracing::info!(
            epoch,
            loss = format!("{loss:.4}"),
            validation_macro_f1 = f1.map_or_else(|| "-".into(), |f1| format!("{f1:.4}")),
            samples_per_second = format!("{:.1}", seen as f64 / epoch_seconds.max(1e-9)),
            "epoch finished"
        );
        checkpoint.save(&model.snapshot()?, &best, &optimizer.state(), &state)?;
    }
    model.load_trainable(&best, &checkpoint.dir)?;

    // Calibration on the validation rows, with the model the choices were made with; multi-label:
    // one Platt sigmoid (its slope kept as a temperature, its offset as `shift`) and each class's
    // threshold.
    let (mut shift, mut thresholds) = (None, None);
    let temperature = match &ex.sets {
        Some(sets) if !split.validation.is_empty() => {
            let logits = logits_rows(&model, &ex, &split.validation, settings.eval_batch_size)?;
            let truth: Vec<Vec<u32>> = split.validation.iter().map(|&r| sets[r].clone()).collect();
            let ((a, b), tuned) =
                crate::eval::calibration::calibrate_label_sets(&logits, labels.len(), &truth, settings.calibrate);
            (shift, thresholds) = (Some(b), Some(tuned));
            Some(1.0 / a)
        }
        _ if settings.calibrate && !split.validation.is_empty() => {
            let logits = logits_rows(&model, &ex, &split.validation, settings.eval_batch_size)?;
            let y: Vec<usize> = split.validation.iter().map(|&r| ex.y[r]).collect();
            Some(crate::eval::calibration::fit_temperature(&logits, labels.len(), &y))
        }
        _ => settings.cross_validated.as_ref().and_then(|c| c.temperature),
    };
    // Refit: a fresh model (same seed) for the chosen number of epochs on train + validation.
    let (model, refit_rows) = if settings.refit && !split.validation.is_empty() {
        let mut pool: Vec<usize> = split.train.iter().chain(&split.validation).copied().collect();
        pool.sort_unstable();
        let fresh = fresh_model(model.config.clone())?;
        let epochs = state.best_epoch.max(1);
        let schedule = settings.schedule(pool.len(), epochs);
        let mut optimizer = settings.optimizer(&fresh)?;
        tracing::info!(rows = pool.len(), epochs, "refit on train + validation");
        let pass = EpochPass { job: &job, ex: &ex, class_weight: &class_weight, schedule: &schedule };
        for epoch in 1..=epochs {
            let (loss, _, seconds) = pass.run(&fresh, &mut optimizer, &pool, epoch, "refit")?;
            tracing::info!(
                epoch,
                loss = format!("{loss:.4}"),
                seconds = format!("{seconds:.1}"),
                "refit epoch finished"
            );
        }
        (fresh, Some(pool.len()))
    } else {
        (model, None)
    };
    if let Some(t) = temperature {
        model.scale_logits(1.0 / t)?;
        let on = if settings.cross_validated.is_some() { "out of fold" } else { "validation" };
        tracing::info!(temperature = t, on, "calibrated");
    }
    if let Some(b) = shift {
        model.shift_logits(b)?;
    }

    let data_info = DataInfo::describe(&job.source, data, &recorded);
    let refit_rows = refit_rows.or(settings.cross_validated.as_ref().map(|_| split.train.len()));
    export::export_candidate(export::ExportInputs {
        job: &job,
        model: &model,
        tokenizer: &tokenizer,
        labels: &labels,
        examples: &ex,
        split: &split,
        data_info,
        state: &state,
        started,
        texts: &texts,
        refit_rows,
        temperature,
        thresholds,
    })
}

/// What one pass over training rows needs besides the model and its optimizer.
struct EpochPass<'a> {
    job: &'a TrainJob<'a>,
    ex: &'a Examples,
    class_weight: &'a [f32],
    schedule: &'a LinearSchedule,
}

impl EpochPass<'_> {
    /// One epoch over `rows` in length-bucketed, seeded batches. Returns the mean loss, rows seen
    /// and seconds taken; stops with [`Error::Cancelled`] when the job's cancel flag is set.
    fn run(
        &self,
        model: &EncoderClassifier,
        optimizer: &mut AdamW,
        rows: &[usize],
        epoch: usize,
        what: &str,
    ) -> Result<(f64, usize, f64)> {
        let settings = &self.job.settings;
        let epoch_seed = settings.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(epoch as u64);
        let plan = bucketed_batches(rows, &self.ex.lengths, settings.batch_size, epoch_seed);
        let progress =
            progress_bar(self.job.show_progress, plan.len() as u64, format!("{what} {epoch}/{}", settings.epochs));
        let started = Instant::now();
        let (mut loss_sum, mut seen) = (0f64, 0usize);
        for (i, batch) in plan.iter().enumerate() {
            if self.job.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
                return Err(Error::Cancelled);
            }
            let batch_seed = epoch_seed ^ ((i as u64 + 1) << 20);
            let (stores, batch_loss) =
                train_step(model, self.ex, batch, batch_seed, settings.lora.dropout, self.class_weight)?;
            let grads = optimizer.sum_gradients(&stores)?;
            optimizer.step(&grads, self.schedule.factor(optimizer.step))?;
            loss_sum += batch_loss * batch.len() as f64;
            seen += batch.len();
            let rate = seen as f64 / started.elapsed().as_secs_f64().max(1e-9);
            progress.set_message(format!("loss {:.4} · {rate:.0} samples/s", loss_sum / seen as f64));
            progress.inc(1);
        }
        progress.finish_and_clear();
        Ok((loss_sum / seen.max(1) as f64, seen, started.elapsed().as_secs_f64()))
    }
}

/// Path helper: the base model's display name (`_name_or_path` or the folder name).
pub(crate) fn base_model_name(base: &Path) -> String {
    std::fs::read_to_string(base.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("_name_or_path").and_then(|n| n.as_str()).map(str::to_string))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| base.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
}

/// Where a model's checkpoints live.
pub fn checkpoint_root(registry: &Path, name: &str) -> PathBuf {
    registry.join(name).join(".checkpoints")
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    #[test]
    fn binary_cross_entropy_is_the_sigmoid_loss_and_its_gradient_sigmoid_minus_target() {
        // Large margins of both signs: the loss stays finite (no exp overflow).
        let z = [0.5f32, -2.0, 80.0, -90.0, 0.0, 3.0];
        let sets = vec![vec![0u32], vec![1, 2]];
        let logits = Var::from_vec(z.to_vec(), (2, 3), &Device::Cpu).unwrap();
        let targets = super::multi_hot(&sets, &[0, 1], 3).unwrap();
        assert_eq!(targets.flatten_all().unwrap().to_vec1::<f32>().unwrap(), [1.0, 0.0, 0.0, 0.0, 1.0, 1.0]);
        let loss = super::binary_cross_entropy(logits.as_tensor(), &targets, 2.0).unwrap();
        let t = [1.0f64, 0.0, 0.0, 0.0, 1.0, 1.0];
        let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
        let expected: f64 = z
            .iter()
            .zip(t)
            .map(|(&z, t)| {
                // −t·ln σ(z) − (1 − t)·ln(1 − σ(z)) = ln(1 + e^z) − t·z, in f64.
                let z = f64::from(z);
                let softplus = if z > 0.0 { z + (-z).exp().ln_1p() } else { z.exp().ln_1p() };
                softplus - t * z
            })
            .sum::<f64>()
            / 2.0;
        let value = f64::from(loss.to_scalar::<f32>().unwrap());
        assert!((value - expected).abs() < 1e-4 * expected.abs().max(1.0), "{value} vs {expected}");
        let grads = loss.backward().unwrap();
        let grad = grads.get(logits.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for ((g, &z), t) in grad.iter().zip(&z).zip(t) {
            let want = (sigmoid(f64::from(z)) - t) / 2.0;
            assert!((f64::from(*g) - want).abs() < 1e-5, "{grad:?}");
        }
    }

    #[test]
    fn default_epochs_give_small_catalogues_more_passes() {
        // Amazon 2023's training split: 56 steps an epoch → the cap.
        assert_eq!(super::default_epochs(1_779, 32), 10);
        // PriceRunner's: 652 steps → 4 epochs.
        assert_eq!(super::default_epochs(20_856, 32), 4);
        // Big catalogues keep the floor of 3.
        assert_eq!(super::default_epochs(1_000_000, 32), 3);
        assert_eq!(super::default_epochs(0, 0), 10);
    }
}
