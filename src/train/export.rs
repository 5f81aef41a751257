//! Turning a trained [`EncoderClassifier`] into a staged registry version: ONNX export with merged
//! adapters, the candle-vs-ONNX-Runtime parity check, test-split metrics, and the model card.

use std::path::PathBuf;
use std::time::Instant;

use super::checkpoint::RunState;
use super::{Examples, TrainJob, base_model_name, parity_rows};
use crate::data::SplitAssignment;
use crate::encoder::EncoderClassifier;
use crate::error::{Error, IoContext, Result};
use crate::eval::{Evaluation, evaluate};
use crate::onnx::graph::OPSET;
use crate::onnx::transformer::{self, names};
use crate::registry::card::{
    BaseModelInfo, DataInfo, OnnxInfo, ParityInfo, SplitMetrics, TrainingInfo, TransformerInfo, TransformerSection,
};
use crate::registry::{ModelCard, ModelKind, ModelRegistry, ModelVersion, StagedVersion, files, write_labels};
use crate::serve::{BatchLimits, Model, SingleModel, Stage};
use crate::tokenize::{PaddedBatch, TextTokenizer};

/// A trained, exported and checked model waiting to be published.
pub struct Candidate {
    pub registry: ModelRegistry,
    pub name: String,
    pub staged: StagedVersion,
    pub card: ModelCard,
    /// Test-split evaluation through ONNX Runtime (absent when the test split is empty).
    pub test: Option<Evaluation>,
    /// Texts of the test split, in the order of `test` (for gating against another model).
    pub test_texts: Vec<String>,
}

impl Candidate {
    /// Publishes the candidate as the next version; `make_current` also points `current` at it.
    pub fn publish(mut self, make_current: bool) -> Result<PathBuf> {
        let version = self.registry.reserve_version(&self.staged)?;
        self.card.version = version.clone();
        let card_path = self.staged.dir.join(files::CARD);
        if let Err(e) = self.card.write(&card_path) {
            let _ = std::fs::remove_dir(self.registry.model_dir(&self.name).join(&version));
            return Err(e);
        }
        self.registry.publish(self.staged, &version, make_current)
    }
}

pub(super) struct ExportInputs<'a> {
    pub job: &'a TrainJob<'a>,
    pub model: &'a EncoderClassifier,
    pub tokenizer: &'a TextTokenizer,
    pub labels: &'a [String],
    pub examples: &'a Examples,
    pub split: &'a SplitAssignment,
    pub data_info: DataInfo,
    pub state: &'a RunState,
    pub started: Instant,
    pub texts: &'a [&'a str],
    pub refit_rows: Option<usize>,
    pub temperature: Option<f32>,
}

/// Largest |a − b| over two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

pub(super) fn export_candidate(inputs: ExportInputs<'_>) -> Result<Candidate> {
    let ExportInputs {
        job,
        model,
        tokenizer,
        labels,
        examples,
        split,
        data_info,
        state,
        started,
        texts,
        refit_rows,
        temperature,
    } = inputs;
    let settings = &job.settings;
    let registry = ModelRegistry::new(&job.registry);
    let staged = registry.stage(&job.name)?;
    let dir = staged.dir.clone();

    let onnx = transformer::export(
        model,
        &[("prodcat.model_type", "transformer".into()), ("prodcat.labels", labels.join("\n"))],
    )?;
    let model_path = dir.join(files::MODEL);
    std::fs::write(&model_path, &onnx).at(&model_path)?;
    tokenizer.save(&dir.join(files::TOKENIZER))?;
    write_labels(&dir.join(files::LABELS), labels)?;
    crate::registry::replay::Replay::sample(job.data, crate::registry::replay::PER_CLASS).write(&dir)?;

    let trainable = model.trainable_parameters();
    let mut inputs_names = vec![names::INPUT_IDS.to_string(), names::ATTENTION_MASK.to_string()];
    if model.embeddings.token_type.dims()[0] > 1 {
        inputs_names.push(names::TOKEN_TYPE_IDS.to_string());
    }
    let wall = started.elapsed().as_secs_f64();
    let mut card = ModelCard {
        name: job.name.clone(),
        version: String::new(),
        model: ModelKind::Transformer(TransformerSection {
            encoder: Some(TransformerInfo {
                base_model: BaseModelInfo {
                    path: job.base_dir.display().to_string(),
                    name: base_model_name(&job.base_dir),
                    architecture: model.config.clone(),
                    parameters: model.base_parameters,
                },
                lora: model.lora.clone(),
                pooling: model.pooling,
                trainable_parameters: trainable,
                trainable_percent: 100.0 * trainable as f64 / (model.base_parameters + trainable) as f64,
            }),
            quantization: None,
        }),
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        prodcat_version: env!("CARGO_PKG_VERSION").into(),
        max_length: tokenizer.max_length(),
        num_labels: labels.len(),
        data: Some(data_info),
        training: Some(TrainingInfo {
            seed: settings.seed,
            epochs_requested: settings.epochs,
            epochs_run: state.epochs_done,
            best_epoch: state.best_epoch,
            batch_size: settings.batch_size,
            learning_rate: settings.learning_rate,
            class_weights: settings.class_weights,
            best_validation_macro_f1: state.best_macro_f1,
            samples_per_second: state.train_samples as f64 / state.train_seconds.max(1e-9),
            wall_seconds: wall,
            validation_macro_f1: state.validation_macro_f1.clone(),
            split: settings.split,
            stable_split: settings.stable_split,
            refit_rows,
            folds: settings.cross_validated.as_ref().map(|c| c.folds),
            temperature,
        }),
        test_metrics: None,
        parity: None,
        onnx: Some(OnnxInfo {
            opset: OPSET,
            precision: "fp32".into(),
            inputs: inputs_names,
            outputs: vec![names::LOGITS.into(), names::PROBABILITIES.into()],
            file_bytes: onnx.len() as u64,
        }),
    };
    card.write(&dir.join(files::CARD))?;

    // Parity: the same padded batch through candle (adapters unmerged) and ONNX Runtime (merged).
    let served = SingleModel::open(
        ModelVersion::at(&dir)?,
        Box::new(tokenizer.clone()),
        Stage::Transformer,
        BatchLimits::default(),
        &job.session,
    )?;
    let rows = parity_rows(split, &examples.lengths, 32);
    let batch = PaddedBatch::from_tokens(rows.iter().map(|&r| &examples.tokens[r]));
    let reference = model.forward(&batch, None)?.flatten_all()?.to_vec1::<f32>()?;
    let exported = served.run(&batch)?;
    let diff = max_abs_diff(&reference, &exported.logits);
    let parity = ParityInfo {
        samples: rows.len(),
        max_abs_diff: diff,
        tolerance: settings.parity_tolerance,
        passed: diff <= settings.parity_tolerance,
    };
    tracing::info!(samples = rows.len(), max_abs_diff = diff, tolerance = settings.parity_tolerance, "parity check");
    if !parity.passed {
        return Err(Error::Parity { max_abs_diff: diff, tolerance: settings.parity_tolerance });
    }
    card.parity = Some(parity);

    let test = test_evaluation(&served, &mut card, split, texts, &examples.y)?;
    if let Some(training) = card.training.as_mut() {
        training.wall_seconds = started.elapsed().as_secs_f64();
    }
    card.write(&dir.join(files::CARD))?;
    let test_texts = split.test.iter().map(|&r| texts[r].to_string()).collect();
    Ok(Candidate { registry, name: job.name.clone(), staged, card, test, test_texts })
}

/// Evaluates the exported model on the test split through ONNX Runtime and records the metrics
/// in `card` (nothing when the test split is empty).
pub(crate) fn test_evaluation(
    served: &dyn Model,
    card: &mut ModelCard,
    split: &SplitAssignment,
    texts: &[&str],
    y: &[usize],
) -> Result<Option<Evaluation>> {
    if split.test.is_empty() {
        return Ok(None);
    }
    let test_texts: Vec<&str> = split.test.iter().map(|&r| texts[r]).collect();
    let y_true: Vec<usize> = split.test.iter().map(|&r| y[r]).collect();
    let evaluation = evaluate(served, &test_texts, y_true, None)?;
    card.test_metrics = Some(SplitMetrics::from_report(&evaluation.report));
    Ok(Some(evaluation))
}
