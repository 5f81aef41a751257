//! Reduced-precision exports of a published transformer (a transformer-kind operation): its graph
//! quantized dynamically to int8 ([`crate::onnx::quantize`], for CPUs) or converted to fp16
//! ([`crate::onnx::half`], for GPUs), both precisions evaluated on the same held-out rows, and the
//! new version refused when macro-F1 drops more than the tolerance — for fp16 also when argmax
//! agreement or the largest logit difference are past their bounds.

use std::path::PathBuf;

use crate::error::{Error, IoContext, Result};
use crate::eval::{evaluate, label_ids};
use crate::onnx::graph::OnnxFiles;
use crate::onnx::half::{HalfSettings, convert_to_fp16};
use crate::onnx::quantize::{QuantizeSettings, quantize_dynamic};
use crate::registry::card::QuantizationInfo;
use crate::registry::{ModelKind, ModelRegistry, ModelVersion, files};
use crate::serve::{Model, SessionSettings};
use crate::staging::{Candidate, max_abs_diff};

/// What to quantize and how to judge it.
pub struct QuantizeJob {
    /// The fp32 transformer version.
    pub model: ModelVersion,
    /// Held-out rows both precisions are evaluated on.
    pub texts: Vec<String>,
    pub labels: Vec<String>,
    /// Where those rows came from (for error messages).
    pub origin: String,
    pub registry: PathBuf,
    pub name: String,
    /// Largest tolerated macro-F1 drop (0.003 = 0.3 points).
    pub tolerance: f64,
    pub precision: Precision,
    pub session: SessionSettings,
}

/// The precision to export, and how.
#[derive(Debug, Clone, PartialEq)]
pub enum Precision {
    Int8(QuantizeSettings),
    Fp16 {
        settings: HalfSettings,
        /// Smallest share of rows whose label must not change.
        min_agreement: f64,
        /// Largest tolerated |logit(fp16) − logit(fp32)| over every row and class.
        max_logit_diff: f32,
    },
}

impl Precision {
    /// fp16 for GPUs, with bounds that fp16 rounding (about 3 significant digits) meets on a
    /// healthy model: 99.5% of labels unchanged, logits within 0.05.
    pub fn fp16() -> Self {
        Self::Fp16 { settings: HalfSettings::gpu(), min_agreement: 0.995, max_logit_diff: 0.05 }
    }

    /// `int8` or `fp16`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Int8(_) => "int8",
            Self::Fp16 { .. } => "fp16",
        }
    }
}

/// Converts, evaluates and stages the reduced-precision version; refuses it when it costs too much
/// accuracy.
pub fn quantize_model(job: QuantizeJob) -> Result<Candidate> {
    let source_dir = job.model.dir.clone();
    let Some(section) = job.model.card.model.transformer() else {
        return Err(Error::model(
            &source_dir,
            "only transformer models are quantized (lexical models are already fast)",
        ));
    };
    if section.quantization.is_some() {
        return Err(Error::model(&source_dir, "this model is already quantized"));
    }
    let fp32 = super::transformer::open(job.model.clone(), &job.session)?;
    let bytes = std::fs::read(source_dir.join(files::MODEL)).at(source_dir.join(files::MODEL))?;
    // A model past 2 GiB keeps its weights in external data: read back in for the conversion, and
    // the converted model split again if it still passes the limit.
    let data_path = source_dir.join(files::MODEL_DATA);
    let data = data_path.is_file().then(|| std::fs::read(&data_path).at(&data_path)).transpose()?;
    let bytes = OnnxFiles::inlined(bytes, data.as_deref().map(|d| (d, data_path.as_path())))?;
    drop(data);
    let precision = job.precision.name();
    let (converted_bytes, method) = match &job.precision {
        Precision::Int8(settings) => {
            let (bytes, summary) = quantize_dynamic(&bytes, *settings)?;
            tracing::info!(
                matmuls = summary.matmuls_quantized,
                mib_before = summary.bytes_before / (1 << 20),
                mib_after = summary.bytes_after / (1 << 20),
                "quantized weights to int8"
            );
            let method = format!(
                "dynamic int8: u8 activations per batch, int8 weights per output column ({} bits), {} MatMuls",
                if settings.reduce_range { 7 } else { 8 },
                summary.matmuls_quantized
            );
            (bytes, method)
        }
        Precision::Fp16 { settings, .. } => {
            let (bytes, summary) = convert_to_fp16(&bytes, settings)?;
            tracing::info!(
                initializers = summary.initializers_converted,
                nodes_fp16 = summary.nodes_fp16,
                nodes_fp32 = summary.nodes_fp32,
                clamped = summary.values_clamped,
                mib_before = summary.bytes_before / (1 << 20),
                mib_after = summary.bytes_after / (1 << 20),
                "converted to fp16"
            );
            let kept = if settings.keep_fp32.is_empty() { "none".into() } else { settings.keep_fp32.join(", ") };
            let method = format!(
                "fp16 weights and activations, fp32 inputs/outputs: {} nodes fp16, {} fp32 (kept: {kept}), {} values clamped to ±65504",
                summary.nodes_fp16, summary.nodes_fp32, summary.values_clamped
            );
            (bytes, method)
        }
    };
    let registry = ModelRegistry::new(&job.registry);
    let staged = registry.stage(&job.name)?;
    let dir = staged.dir.clone();
    let converted_files = OnnxFiles::split(converted_bytes, crate::onnx::graph::external_above())?;
    converted_files.write(&dir)?;
    for file in [files::TOKENIZER, files::LABELS] {
        std::fs::copy(source_dir.join(file), dir.join(file)).at(dir.join(file))?;
    }
    crate::registry::replay::Replay::copy(&source_dir, &dir)?;
    crate::registry::copy_taxonomy(&source_dir, &job.model.card, &dir)?;
    let mut card = fp32.card().clone();
    card.name = job.name.clone();
    card.version = String::new();
    card.created_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    if let Some(onnx) = card.onnx.as_mut() {
        onnx.precision = precision.into();
        onnx.file_bytes = converted_files.bytes() as u64;
    }
    card.write(&dir.join(files::CARD))?;
    let converted = super::transformer::open(ModelVersion::at(&dir)?, &job.session)?;

    let texts: Vec<&str> = job.texts.iter().map(String::as_str).collect();
    if let Some(taxonomy) = &card.taxonomy {
        let sample = &texts[..texts.len().min(32)];
        let batch = crate::tokenize::PaddedBatch::from_tokens(converted.prepare(sample)?.iter());
        crate::staging::check_level_outputs(&converted, taxonomy, &batch)?;
    }
    let y = label_ids(&fp32.labels, &job.labels, &job.origin)?;
    let before = evaluate(&fp32, &texts, y.clone(), None)?;
    let after = evaluate(&converted, &texts, y, None)?;
    let agree = (0..texts.len()).filter(|&r| before.output.argmax(r).0 == after.output.argmax(r).0).count();
    let (min_agreement, max_logit_diff) = match &job.precision {
        Precision::Int8(_) => (None, None),
        Precision::Fp16 { min_agreement, max_logit_diff, .. } => (Some(*min_agreement), Some(*max_logit_diff)),
    };
    let info = QuantizationInfo {
        precision: precision.into(),
        method,
        source_version: fp32.id(),
        rows: texts.len(),
        fp32_macro_f1: before.report.macro_f1,
        converted_macro_f1: after.report.macro_f1,
        macro_f1_drop: before.report.macro_f1 - after.report.macro_f1,
        tolerance: job.tolerance,
        agreement: agree as f64 / texts.len().max(1) as f64,
        max_abs_logit_diff: max_abs_diff(&before.output.logits, &after.output.logits),
        min_agreement,
        max_logit_diff,
    };
    tracing::info!(
        fp32_macro_f1 = format!("{:.4}", info.fp32_macro_f1),
        converted_macro_f1 = format!("{:.4}", info.converted_macro_f1),
        agreement = format!("{:.4}", info.agreement),
        max_abs_logit_diff = format!("{:.4}", info.max_abs_logit_diff),
        "{precision} vs fp32 on {} rows",
        info.rows
    );
    let mut problems = Vec::new();
    if info.macro_f1_drop > job.tolerance {
        problems.push(format!(
            "macro-F1 {:.4} vs fp32 {:.4} drops {:.4} > tolerance {:.4}",
            info.converted_macro_f1, info.fp32_macro_f1, info.macro_f1_drop, job.tolerance
        ));
    }
    if let Some(min) = min_agreement.filter(|&min| info.agreement < min) {
        problems.push(format!("labels agree with fp32 on {:.4} of rows < {min:.4}", info.agreement));
    }
    if let Some(max) = max_logit_diff.filter(|&max| info.max_abs_logit_diff > max) {
        problems.push(format!("max |logit diff| {:.4} > {max:.4}", info.max_abs_logit_diff));
    }
    if !problems.is_empty() {
        return Err(Error::Refused(format!("{precision} model: {} (on {})", problems.join("; "), job.origin)));
    }
    card.test_metrics = Some(after.report.headline());
    if let ModelKind::Transformer(t) = &mut card.model {
        t.quantization = Some(info);
    }
    card.write(&dir.join(files::CARD))?;
    Ok(Candidate { registry, name: job.name, staged, card, test: Some(after), test_texts: job.texts })
}
