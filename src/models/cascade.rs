//! The cascade kind: the lexical member labels everything; rows whose confidence is below the
//! threshold are labeled again by the transformer member (its own token-budget batches). The
//! members are registry versions of their own kinds in the `lexical/` and `transformer/`
//! subfolders. Building one copies the members in, tunes the threshold on validation rows (or
//! takes a given one) and evaluates the cascade on test rows through the same serving code as
//! every model; retraining retrains both members and re-tunes.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::{ModelFamily, RetrainJob};
use crate::error::{Error, IoContext, Result};
use crate::eval::cascade::{MemberScores, ThresholdTuning, tune_threshold};
use crate::eval::{evaluate, label_ids};
use crate::lexical::fit_lexical;
use crate::registry::card::{CascadeInfo, ParityInfo, SplitMetrics};
use crate::registry::{ModelCard, ModelKind, ModelRegistry, ModelVersion, files, write_labels};
use crate::serve::{Model, ModelOutput, Scored, SessionSettings, Stage, plan_batches, score_texts};
use crate::tokenize::{PaddedBatch, TokenizedText};
use crate::train::{Candidate, fit};

/// The cascade family.
pub struct CascadeFamily;

/// A loaded cascade.
#[derive(Debug)]
pub struct Cascade {
    pub version: ModelVersion,
    /// Confidence below which the transformer member relabels a row.
    pub threshold: f32,
    pub lexical: Arc<dyn Model>,
    pub transformer: Arc<dyn Model>,
    /// Transformer class id → cascade (lexical) class id.
    to_cascade: Vec<usize>,
}

fn section(version: &ModelVersion) -> Result<&CascadeInfo> {
    match &version.card.model {
        ModelKind::Cascade(info) => Ok(info),
        other => Err(Error::model(&version.dir, format!("a {} model, not a cascade", other.name()))),
    }
}

impl Cascade {
    /// Loads a cascade version folder and its members.
    pub fn load(version: ModelVersion, settings: &SessionSettings) -> Result<Self> {
        version.check_files()?;
        let info = section(&version)?;
        let member = |sub: &str| ModelVersion::at(&version.dir.join(sub));
        let lexical = super::lexical::open(member(&info.lexical)?, settings)?;
        let transformer = super::transformer::open(member(&info.transformer)?, settings)?;
        let to_cascade = transformer
            .labels
            .iter()
            .map(|l| {
                lexical.labels.iter().position(|x| x == l).ok_or_else(|| {
                    Error::model(
                        &version.dir,
                        format!("label `{l}` of the transformer member is not a label of the lexical member"),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let threshold = info.threshold;
        Ok(Self { version, threshold, lexical: Arc::new(lexical), transformer: Arc::new(transformer), to_cascade })
    }

    /// Transformer-member outputs re-indexed to the cascade's classes.
    pub fn to_cascade_classes(&self, scored: &ModelOutput) -> ModelOutput {
        let c = self.lexical.labels().len();
        let mut out = ModelOutput {
            rows: scored.rows,
            classes: c,
            logits: vec![f32::NEG_INFINITY; scored.rows * c],
            probabilities: vec![0.0; scored.rows * c],
        };
        for r in 0..scored.rows {
            for (t, &k) in self.to_cascade.iter().enumerate() {
                out.probabilities[r * c + k] = scored.probs(r)[t];
                out.logits[r * c + k] = scored.logits_row(r)[t];
            }
        }
        out
    }

    /// Lexical scores for the batch; rows below `threshold` re-scored by the transformer in
    /// token-budget batches.
    pub fn score_at(&self, batch: &PaddedBatch, texts: &[&str], threshold: f32) -> Result<Scored> {
        let mut out = self.lexical.score(batch, texts)?;
        let unsure: Vec<usize> = (0..out.output.rows).filter(|&r| out.output.argmax(r).1 < threshold).collect();
        if unsure.is_empty() {
            return Ok(out);
        }
        let unsure_texts: Vec<&str> = unsure.iter().map(|&r| texts[r]).collect();
        let tokens = self.transformer.prepare(&unsure_texts)?;
        let lengths: Vec<usize> = tokens.iter().map(TokenizedText::len).collect();
        let mut sub = PaddedBatch::default();
        for plan in plan_batches(&lengths, self.transformer.batch_limits()) {
            sub.fill(plan.iter().map(|&i| &tokens[i]));
            let sub_texts: Vec<&str> = plan.iter().map(|&i| unsure_texts[i]).collect();
            let scored = self.transformer.score(&sub, &sub_texts)?;
            let rows: Vec<usize> = plan.iter().map(|&i| unsure[i]).collect();
            out.scatter(&rows, &Scored::single(self.to_cascade_classes(&scored.output), Stage::Transformer));
        }
        Ok(out)
    }

    /// Scores `texts` with both members (their speeds measured) and tunes the threshold.
    pub fn tune(&self, texts: &[&str], y_true: &[usize], max_f1_loss: f64) -> Result<ThresholdTuning> {
        let started = Instant::now();
        let lexical = score_texts(&*self.lexical, texts, None)?.output;
        let lexical_rate = texts.len() as f64 / started.elapsed().as_secs_f64().max(1e-9);
        let started = Instant::now();
        let transformer = self.to_cascade_classes(&score_texts(&*self.transformer, texts, None)?.output);
        let transformer_rate = texts.len() as f64 / started.elapsed().as_secs_f64().max(1e-9);
        let members = MemberScores { lexical, lexical_rate, transformer, transformer_rate };
        tune_threshold(self.lexical.labels(), &members, y_true, max_f1_loss)
    }

    /// Sets the threshold and records the tuning in the card.
    pub fn set_tuning(&mut self, tuning: &ThresholdTuning) {
        self.threshold = tuning.chosen.threshold;
        if let ModelKind::Cascade(info) = &mut self.version.card.model {
            info.threshold = tuning.chosen.threshold;
            info.tuning = serde_json::to_value(tuning).ok();
        }
    }
}

impl Model for Cascade {
    fn version(&self) -> &ModelVersion {
        &self.version
    }

    fn labels(&self) -> &[String] {
        self.lexical.labels()
    }

    fn prepare(&self, texts: &[&str]) -> Result<Vec<TokenizedText>> {
        self.lexical.prepare(texts)
    }

    fn score(&self, batch: &PaddedBatch, texts: &[&str]) -> Result<Scored> {
        self.score_at(batch, texts, self.threshold)
    }

    fn batch_limits(&self) -> crate::serve::BatchLimits {
        self.lexical.batch_limits()
    }

    /// Both members, each through its own warm-up.
    fn warm_up(&self) -> Result<()> {
        self.lexical.warm_up()?;
        self.transformer.warm_up()
    }
}

impl ModelFamily for CascadeFamily {
    fn load(&self, version: ModelVersion, settings: &SessionSettings) -> Result<Arc<dyn Model>> {
        Ok(Arc::new(Cascade::load(version, settings)?))
    }

    /// Both members retrained on the same split; the threshold re-tuned on its validation rows.
    fn candidate(&self, job: RetrainJob<'_>) -> Result<Candidate> {
        let lexical = fit_lexical(job.lexical_job())?;
        let transformer = fit(job.transformer_job())?;
        let t = &job.transformer;
        let (_, _, split) =
            crate::data::prepare::prepare_data(job.data, Some(&job.labels), &job.source, t.split, t.seed, true)?;
        let rows = |set: &[usize], origin: &str| Rows {
            texts: set.iter().map(|&r| job.data.texts[r].clone()).collect(),
            labels: set.iter().map(|&r| job.data.labels[r].clone()).collect(),
            origin: origin.into(),
        };
        let build = CascadeJob {
            lexical: ModelVersion::at(&lexical.staged.dir)?,
            transformer: ModelVersion::at(&transformer.staged.dir)?,
            registry: job.registry.clone(),
            name: job.name.clone(),
            threshold: None,
            validation: Some(rows(&split.validation, "label store validation split")),
            test: Some(rows(&split.test, "label store test split")),
            max_f1_loss: 0.001,
            session: job.session.clone(),
        };
        Ok(build_cascade(build)?.0)
    }
}

/// Labeled rows with where they came from.
pub struct Rows {
    pub texts: Vec<String>,
    pub labels: Vec<String>,
    pub origin: String,
}

/// What to combine.
pub struct CascadeJob {
    pub lexical: ModelVersion,
    pub transformer: ModelVersion,
    pub registry: std::path::PathBuf,
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

fn copy_version(from: &ModelVersion, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).at(to)?;
    for file in from.card.model.required_files() {
        std::fs::copy(from.dir.join(file), to.join(file)).at(to.join(file))?;
    }
    Ok(())
}

/// Stages the cascade, tunes and evaluates it. Returns the candidate and the tuning curve.
pub fn build_cascade(job: CascadeJob) -> Result<(Candidate, Option<ThresholdTuning>)> {
    if !matches!(job.lexical.card.model, ModelKind::Lexical(_)) {
        return Err(Error::model(&job.lexical.dir, "--lexical must be a lexical model"));
    }
    if !matches!(job.transformer.card.model, ModelKind::Transformer(_)) {
        return Err(Error::model(&job.transformer.dir, "--transformer must be a transformer model"));
    }
    let (lexical_card, transformer_card) = (&job.lexical.card, &job.transformer.card);
    if let (Some(a), Some(b)) = (&lexical_card.data, &transformer_card.data)
        && a.sha256 != b.sha256
    {
        tracing::warn!(
            "the members were trained on different data; validation rows of one may be training rows of the other"
        );
    }
    let registry = ModelRegistry::new(&job.registry);
    let staged = registry.stage(&job.name)?;
    let dir = staged.dir.clone();
    copy_version(&job.lexical, &dir.join(LEXICAL))?;
    copy_version(&job.transformer, &dir.join(TRANSFORMER))?;
    let labels = job.lexical.labels()?;
    write_labels(&dir.join(files::LABELS), &labels)?;
    let worst_parity = [&lexical_card.parity, &transformer_card.parity]
        .into_iter()
        .flatten()
        .max_by(|a, b| a.max_abs_diff.total_cmp(&b.max_abs_diff))
        .cloned();
    let card = ModelCard {
        name: job.name.clone(),
        version: String::new(),
        model: ModelKind::Cascade(CascadeInfo {
            threshold: job.threshold.unwrap_or(0.9),
            lexical: LEXICAL.into(),
            transformer: TRANSFORMER.into(),
            tuning: None,
        }),
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        prodcat_version: env!("CARGO_PKG_VERSION").into(),
        max_length: transformer_card.max_length,
        num_labels: labels.len(),
        data: lexical_card.data.clone(),
        training: None,
        test_metrics: None,
        parity: worst_parity.map(|p| ParityInfo { passed: p.passed, ..p }),
        onnx: None,
    };
    card.write(&dir.join(files::CARD))?;
    let mut cascade = Cascade::load(ModelVersion::at(&dir)?, &job.session)?;

    let tuning = match (job.threshold, &job.validation) {
        (Some(_), _) => None,
        (None, None) => {
            return Err(Error::config("cascade", "give a threshold or validation rows to tune it on"));
        }
        (None, Some(rows)) => {
            let texts: Vec<&str> = rows.texts.iter().map(String::as_str).collect();
            let y = label_ids(&labels, &rows.labels, &rows.origin)?;
            let tuning = cascade.tune(&texts, &y, job.max_f1_loss)?;
            cascade.set_tuning(&tuning);
            Some(tuning)
        }
    };
    let mut card = cascade.version.card.clone();
    let test = match &job.test {
        Some(rows) if !rows.texts.is_empty() => {
            let texts: Vec<&str> = rows.texts.iter().map(String::as_str).collect();
            let y = label_ids(&labels, &rows.labels, &rows.origin)?;
            let evaluation = evaluate(&cascade, &texts, y, None)?;
            card.test_metrics = Some(SplitMetrics::from_report(&evaluation.report));
            Some(evaluation)
        }
        _ => None,
    };
    card.write(&dir.join(files::CARD))?;
    let test_texts = job.test.map(|r| r.texts).unwrap_or_default();
    Ok((Candidate { registry, name: job.name, staged, card, test, test_texts }, tuning))
}
