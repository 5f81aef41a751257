//! Turning a trained [`EncoderClassifier`] into a staged registry version: ONNX export with merged
//! adapters, the candle-vs-ONNX-Runtime parity check, test-split metrics, and the model card.

use std::path::Path;
use std::time::Instant;

use super::checkpoint::RunState;
use super::{Examples, TrainJob, base_model_name};
use crate::common::{BatchLimits, Kind, names};
use crate::data::SplitAssignment;
use crate::encoder::EncoderClassifier;
use crate::error::Result;
use crate::onnx::transformer;
use crate::registry::card::{BaseModelInfo, DataInfo, TrainingInfo, TransformerInfo, TransformerSection};
use crate::registry::{ModelCard, ModelKind, files};
use crate::staging::{Candidate, GraphExport, ParityBatch, parity_rows, stage_graph};
use crate::tokenize::{PaddedBatch, TextTokenizer};

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
    /// A multi-label model's per-class thresholds (tuned on validation).
    pub thresholds: Option<Vec<f32>>,
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
        thresholds,
    } = inputs;
    let settings = &job.settings;
    let taxonomy = job.data.taxonomy(labels);
    let onnx = transformer::export(
        model,
        job.data.head,
        taxonomy.as_ref(),
        &[("prodcat.model_type", Kind::Transformer.name().into()), ("prodcat.labels", labels.join("\n"))],
    )?;
    let trainable = model.trainable_parameters();
    let mut inputs = vec![names::INPUT_IDS.to_string(), names::ATTENTION_MASK.to_string()];
    if model.embeddings.token_type.dims()[0] > 1 {
        inputs.push(names::TOKEN_TYPE_IDS.to_string());
    }
    let card = ModelCard {
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
        head: job.data.head,
        taxonomy,
        label_thresholds: thresholds,
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
            wall_seconds: 0.0,
            validation_macro_f1: state.validation_macro_f1.clone(),
            split: settings.split,
            stable_split: settings.stable_split,
            refit_rows,
            folds: settings.cross_validated.as_ref().map(|c| c.folds),
            temperature,
            test_before_final_fit: false,
            sampled_from: None,
        }),
        test_metrics: None,
        parity: None,
        onnx: None,
    };

    // Parity: the same padded batch through candle (adapters unmerged) and ONNX Runtime (merged).
    let rows = parity_rows(split, &examples.lengths, 32);
    let batch = PaddedBatch::from_tokens(rows.iter().map(|&r| &examples.tokens[r]));
    let reference = model.forward(&batch, None)?.flatten_all()?.to_vec1::<f32>()?;
    stage_graph(GraphExport {
        registry: &job.registry,
        name: &job.name,
        onnx,
        inputs,
        labels,
        data: job.data,
        write_files: &|dir: &Path| tokenizer.save(&dir.join(files::TOKENIZER)),
        card,
        preprocess: Box::new(tokenizer.clone()),
        stage: Kind::Transformer,
        limits: BatchLimits::default(),
        session: &job.session,
        parity: ParityBatch { batch, reference, tolerance: settings.parity_tolerance },
        split,
        texts,
        y: &examples.y,
        sets: examples.sets.as_deref(),
        measured_test: None,
        started,
    })
}
