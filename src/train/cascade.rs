//! Building a cascade version from a lexical and a transformer version: members copied into
//! `lexical/` and `transformer/`, the threshold tuned on validation rows (or given), and the
//! cascade evaluated on test rows through the same serving code as every model.

use std::path::{Path, PathBuf};

use super::Candidate;
use crate::error::{Error, IoContext, Result};
use crate::eval::cascade::{ThresholdTuning, tune_threshold};
use crate::eval::{evaluate, label_ids};
use crate::registry::card::{CascadeInfo, ParityInfo, SplitMetrics};
use crate::registry::{ModelCard, ModelRegistry, ModelType, files, resolve_model_dir, write_labels};
use crate::serve::{Cascade, Classifier, SessionSettings};

/// Labeled rows with where they came from.
pub struct Rows {
    pub texts: Vec<String>,
    pub labels: Vec<String>,
    pub origin: String,
}

/// What to combine.
pub struct CascadeJob {
    pub lexical: PathBuf,
    pub transformer: PathBuf,
    pub registry: PathBuf,
    pub name: String,
    /// A fixed threshold, or None to tune it on `validation`.
    pub threshold: Option<f32>,
    pub validation: Option<Rows>,
    pub test: Option<Rows>,
    pub max_f1_loss: f64,
    pub session: SessionSettings,
}

const LEXICAL: &str = "lexical";
const TRANSFORMER: &str = "transformer";

fn copy_version(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).at(to)?;
    for file in [files::MODEL, files::LABELS, files::CARD, files::TOKENIZER] {
        if from.join(file).is_file() {
            std::fs::copy(from.join(file), to.join(file)).at(to.join(file))?;
        }
    }
    Ok(())
}

/// Stages the cascade, tunes and evaluates it. Returns the candidate and the tuning curve.
pub fn build_cascade(job: CascadeJob) -> Result<(Candidate, Option<ThresholdTuning>)> {
    let lexical_dir = resolve_model_dir(&job.lexical)?;
    let transformer_dir = resolve_model_dir(&job.transformer)?;
    let registry = ModelRegistry::new(&job.registry);
    let staged = registry.stage(&job.name)?;
    let dir = staged.dir.clone();
    copy_version(&lexical_dir, &dir.join(LEXICAL))?;
    copy_version(&transformer_dir, &dir.join(TRANSFORMER))?;
    let lexical_card = ModelCard::read(&lexical_dir.join(files::CARD))?;
    let transformer_card = ModelCard::read(&transformer_dir.join(files::CARD))?;
    if lexical_card.model_type != ModelType::Lexical {
        return Err(Error::model(&lexical_dir, "--lexical must be a lexical model"));
    }
    if transformer_card.model_type != ModelType::Transformer {
        return Err(Error::model(&transformer_dir, "--transformer must be a transformer model"));
    }
    if let (Some(a), Some(b)) = (&lexical_card.data, &transformer_card.data) {
        if a.sha256 != b.sha256 {
            tracing::warn!(
                "the members were trained on different data; validation rows of one may be training rows of the other"
            );
        }
    }
    let labels = crate::registry::read_labels(&lexical_dir.join(files::LABELS))?;
    write_labels(&dir.join(files::LABELS), &labels)?;
    let worst_parity = [&lexical_card.parity, &transformer_card.parity]
        .into_iter()
        .flatten()
        .max_by(|a, b| a.max_abs_diff.total_cmp(&b.max_abs_diff))
        .cloned();
    let mut card = ModelCard {
        name: job.name.clone(),
        version: String::new(),
        model_type: ModelType::Cascade,
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        prodcat_version: env!("CARGO_PKG_VERSION").into(),
        max_length: transformer_card.max_length,
        num_labels: labels.len(),
        transformer: transformer_card.transformer.clone(),
        data: lexical_card.data.clone(),
        training: None,
        test_metrics: None,
        parity: worst_parity.map(|p| ParityInfo { passed: p.passed, ..p }),
        lexical: lexical_card.lexical.clone(),
        cascade: Some(CascadeInfo {
            threshold: job.threshold.unwrap_or(0.9),
            lexical: LEXICAL.into(),
            transformer: TRANSFORMER.into(),
            tuning: None,
        }),
        quantization: transformer_card.quantization.clone(),
        onnx: transformer_card.onnx.clone(),
    };
    card.write(&dir.join(files::CARD))?;
    let mut cascade = Cascade::load(&dir, card.clone(), &job.session)?;

    let tuning = match (job.threshold, &job.validation) {
        (Some(_), _) => None,
        (None, None) => return Err(Error::Other("give a threshold or validation rows to tune it on".into())),
        (None, Some(rows)) => {
            let texts: Vec<&str> = rows.texts.iter().map(String::as_str).collect();
            let y = label_ids(&labels, &rows.labels, &rows.origin)?;
            let tuning = tune_threshold(&cascade, &texts, &y, job.max_f1_loss)?;
            if let Some(info) = card.cascade.as_mut() {
                info.threshold = tuning.chosen.threshold;
                info.tuning = serde_json::to_value(&tuning).ok();
            }
            cascade.threshold = tuning.chosen.threshold;
            Some(tuning)
        }
    };
    cascade.card = card.clone();
    let served = Classifier::Cascade(Box::new(cascade));
    let test = match &job.test {
        Some(rows) if !rows.texts.is_empty() => {
            let texts: Vec<&str> = rows.texts.iter().map(String::as_str).collect();
            let y = label_ids(&labels, &rows.labels, &rows.origin)?;
            let evaluation = evaluate(&served, &texts, y, 256)?;
            card.test_metrics = Some(SplitMetrics::from_report(&evaluation.report));
            Some(evaluation)
        }
        _ => None,
    };
    card.write(&dir.join(files::CARD))?;
    let test_texts = job.test.map(|r| r.texts).unwrap_or_default();
    Ok((Candidate { registry, name: job.name, staged, card, test, test_texts }, tuning))
}
