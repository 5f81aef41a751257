//! int8 export of a published transformer (a transformer-kind operation): its graph quantized
//! dynamically ([`crate::onnx::quantize`]), both precisions evaluated on the same held-out rows,
//! and the new version refused when macro-F1 drops more than the tolerance.

use std::path::PathBuf;

use crate::error::{Error, IoContext, Result};
use crate::eval::{evaluate, label_ids};
use crate::onnx::quantize::{QuantizeSettings, quantize_dynamic};
use crate::registry::card::QuantizationInfo;
use crate::registry::{ModelKind, ModelRegistry, ModelVersion, files};
use crate::serve::{Model, SessionSettings};
use crate::train::{Candidate, max_abs_diff};

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
    pub settings: QuantizeSettings,
    pub session: SessionSettings,
}

/// Quantizes, evaluates and stages the int8 version; refuses it when it costs too much accuracy.
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
    crate::registry::replay::Replay::copy(&source_dir, &dir)?;
    let mut card = fp32.card().clone();
    card.name = job.name.clone();
    card.version = String::new();
    card.created_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    if let Some(onnx) = card.onnx.as_mut() {
        onnx.precision = "int8".into();
        onnx.file_bytes = int8_bytes.len() as u64;
    }
    card.write(&dir.join(files::CARD))?;
    let int8 = super::transformer::open(ModelVersion::at(&dir)?, &job.session)?;

    let texts: Vec<&str> = job.texts.iter().map(String::as_str).collect();
    let y = label_ids(&fp32.labels, &job.labels, &job.origin)?;
    let before = evaluate(&fp32, &texts, y.clone(), None)?;
    let after = evaluate(&int8, &texts, y, None)?;
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
        return Err(Error::Refused(format!(
            "int8 model: macro-F1 {:.4} vs fp32 {:.4} drops {:.4} > tolerance {:.4} (on {})",
            info.int8_macro_f1, info.fp32_macro_f1, info.macro_f1_drop, job.tolerance, job.origin
        )));
    }
    card.test_metrics = Some(crate::registry::card::SplitMetrics::from_report(&after.report));
    if let ModelKind::Transformer(t) = &mut card.model {
        t.quantization = Some(info);
    }
    card.write(&dir.join(files::CARD))?;
    Ok(Candidate { registry, name: job.name, staged, card, test: Some(after), test_texts: job.texts })
}
