//! int8 export of a published transformer: its graph quantized dynamically
//! ([`crate::onnx::quantize`]), both precisions evaluated on the same held-out rows, and the new
//! version refused when macro-F1 drops more than the tolerance.

use std::path::PathBuf;

use super::{Candidate, max_abs_diff};
use crate::error::{Error, IoContext, Result};
use crate::eval::{evaluate, label_ids};
use crate::onnx::quantize::{QuantizeSettings, quantize_dynamic};
use crate::registry::card::QuantizationInfo;
use crate::registry::{ModelRegistry, ModelType, files, resolve_model_dir};
use crate::serve::{Classifier, LoadedModel, SessionSettings};

/// What to quantize and how to judge it.
pub struct QuantizeJob {
    /// The fp32 transformer version (or a model folder with `current`).
    pub model: PathBuf,
    /// Held-out rows both precisions are evaluated on.
    pub texts: Vec<String>,
    pub labels: Vec<String>,
    /// Where those rows came from (for error messages).
    pub origin: String,
    pub registry: PathBuf,
    pub name: String,
    /// Largest tolerated macro-F1 drop (0.003 = 0.3 points).
    pub tolerance: f64,
    pub settings: QuantizeSettings,
    pub session: SessionSettings,
}

/// Quantizes, evaluates and stages the int8 version; refuses it when it costs too much accuracy.
pub fn quantize_model(job: QuantizeJob) -> Result<Candidate> {
    let source_dir = resolve_model_dir(&job.model)?;
    let fp32 = LoadedModel::load(&source_dir, &job.session)?;
    if fp32.card.model_type != ModelType::Transformer {
        return Err(Error::model(
            &source_dir,
            "only transformer models are quantized (lexical models are already fast)",
        ));
    }
    if fp32.card.quantization.is_some() {
        return Err(Error::model(&source_dir, "this model is already quantized"));
    }
    let bytes = std::fs::read(source_dir.join(files::MODEL)).at(source_dir.join(files::MODEL))?;
    let (int8_bytes, summary) = quantize_dynamic(&bytes, job.settings)?;
    tracing::info!(
        matmuls = summary.matmuls_quantized,
        mib_before = summary.bytes_before / (1 << 20),
        mib_after = summary.bytes_after / (1 << 20),
        "quantized weights to int8"
    );
    let registry = ModelRegistry::new(&job.registry);
    let staged = registry.stage(&job.name)?;
    let dir = staged.dir.clone();
    std::fs::write(dir.join(files::MODEL), &int8_bytes).at(dir.join(files::MODEL))?;
    for file in [files::TOKENIZER, files::LABELS] {
        std::fs::copy(source_dir.join(file), dir.join(file)).at(dir.join(file))?;
    }
    let mut card = fp32.card.clone();
    card.name = job.name.clone();
    card.version = String::new();
    card.created_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    card.onnx.precision = "int8".into();
    card.onnx.file_bytes = int8_bytes.len() as u64;
    card.write(&dir.join(files::CARD))?;
    let int8 = LoadedModel::load(&dir, &job.session)?;

    let texts: Vec<&str> = job.texts.iter().map(String::as_str).collect();
    let y = label_ids(&fp32.labels, &job.labels, &job.origin)?;
    let fp32 = Classifier::Single(fp32);
    let int8 = Classifier::Single(int8);
    let before = evaluate(&fp32, &texts, y.clone(), 64)?;
    let after = evaluate(&int8, &texts, y, 64)?;
    let agree = (0..texts.len()).filter(|&r| before.output.argmax(r).0 == after.output.argmax(r).0).count();
    let info = QuantizationInfo {
        method: format!(
            "dynamic int8: u8 activations per batch, int8 weights per output column ({} bits), {} MatMuls",
            if job.settings.reduce_range { 7 } else { 8 },
            summary.matmuls_quantized
        ),
        source_version: fp32.id(),
        rows: texts.len(),
        fp32_macro_f1: before.report.macro_f1,
        int8_macro_f1: after.report.macro_f1,
        macro_f1_drop: before.report.macro_f1 - after.report.macro_f1,
        tolerance: job.tolerance,
        agreement: agree as f64 / texts.len().max(1) as f64,
        max_abs_logit_diff: max_abs_diff(&before.output.logits, &after.output.logits),
    };
    tracing::info!(
        fp32_macro_f1 = format!("{:.4}", info.fp32_macro_f1),
        int8_macro_f1 = format!("{:.4}", info.int8_macro_f1),
        agreement = format!("{:.4}", info.agreement),
        "int8 vs fp32 on {} rows",
        info.rows
    );
    if info.macro_f1_drop > job.tolerance {
        return Err(Error::Other(format!(
            "int8 model refused: macro-F1 {:.4} vs fp32 {:.4} drops {:.4} > tolerance {:.4} (on {})",
            info.int8_macro_f1, info.fp32_macro_f1, info.macro_f1_drop, job.tolerance, job.origin
        )));
    }
    card.test_metrics = Some(crate::registry::card::SplitMetrics::from_report(&after.report));
    card.quantization = Some(info);
    card.write(&dir.join(files::CARD))?;
    Ok(Candidate { registry, name: job.name, staged, card, test: Some(after), test_texts: job.texts })
}
