//! What the composite kinds (cascade, ensemble) share: a lexical and a transformer member loaded
//! from the version's subfolders with the transformer's classes mapped onto the lexical member's,
//! the transformer scoring texts in its own token-budget batches, and building a composite
//! version (members copied in, card written, test rows evaluated through the serving code).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::RetrainJob;
use crate::common::{BatchLimits, Kind};
use crate::error::{Error, IoContext, Result};
use crate::eval::{Evaluation, evaluate, label_ids};
use crate::lexical::fit_lexical;
use crate::registry::card::ParityInfo;
use crate::registry::{ModelCard, ModelKind, ModelRegistry, ModelVersion, StagedVersion, files, replay, write_labels};
use crate::serve::{Model, ModelOutput, Scored, SessionSettings, plan_batches};
use crate::staging::Candidate;
use crate::tokenize::{PaddedBatch, TokenizedText};
use crate::train::fit;

/// The two members of a composite.
#[derive(Debug)]
pub struct Members {
    pub lexical: Arc<dyn Model>,
    pub transformer: Arc<dyn Model>,
    /// Transformer class id → lexical (composite) class id.
    to_lexical: Vec<usize>,
}

impl Members {
    /// Loads the members from `dir`'s subfolders `lexical` and `transformer`.
    pub fn load(dir: &Path, lexical: &str, transformer: &str, settings: &SessionSettings) -> Result<Self> {
        let lexical = super::lexical::open(ModelVersion::at(&dir.join(lexical))?, settings)?;
        let transformer = super::transformer::open(ModelVersion::at(&dir.join(transformer))?, settings)?;
        let to_lexical = transformer
            .labels
            .iter()
            .map(|l| {
                lexical.labels.iter().position(|x| x == l).ok_or_else(|| {
                    Error::model(
                        dir,
                        format!("label `{l}` of the transformer member is not a label of the lexical member"),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { lexical: Arc::new(lexical), transformer: Arc::new(transformer), to_lexical })
    }

    /// The composite's labels (the lexical member's).
    pub fn labels(&self) -> &[String] {
        self.lexical.labels()
    }

    /// Transformer-member outputs re-indexed to the composite's classes (a class the transformer
    /// lacks gets probability 0).
    pub fn to_lexical_classes(&self, scored: &ModelOutput) -> ModelOutput {
        let c = self.lexical.labels().len();
        let mut out = ModelOutput {
            rows: scored.rows,
            classes: c,
            logits: vec![f32::NEG_INFINITY; scored.rows * c],
            probabilities: vec![0.0; scored.rows * c],
        };
        for r in 0..scored.rows {
            for (t, &k) in self.to_lexical.iter().enumerate() {
                out.probabilities[r * c + k] = scored.probs(r)[t];
                out.logits[r * c + k] = scored.logits_row(r)[t];
            }
        }
        out
    }

    /// The transformer's scores of `texts` in the composite's classes, row i for `texts[i]`,
    /// batched by the transformer's own token budget.
    pub fn score_transformer(&self, texts: &[&str]) -> Result<ModelOutput> {
        let tokens = self.transformer.prepare(texts)?;
        let lengths: Vec<usize> = tokens.iter().map(TokenizedText::len).collect();
        let c = self.lexical.labels().len();
        let mut out = ModelOutput {
            rows: texts.len(),
            classes: c,
            logits: vec![0.0; texts.len() * c],
            probabilities: vec![0.0; texts.len() * c],
        };
        let mut sub = PaddedBatch::default();
        for plan in plan_batches(&lengths, self.transformer.batch_limits()) {
            sub.fill(plan.iter().map(|&i| &tokens[i]));
            let sub_texts: Vec<&str> = plan.iter().map(|&i| texts[i]).collect();
            let scored = self.to_lexical_classes(&self.transformer.score(&sub, &sub_texts)?.output);
            for (j, &i) in plan.iter().enumerate() {
                out.logits[i * c..(i + 1) * c].copy_from_slice(scored.logits_row(j));
                out.probabilities[i * c..(i + 1) * c].copy_from_slice(scored.probs(j));
            }
        }
        Ok(out)
    }
}

/// A model made of a lexical and a transformer member: how it combines their scores. Every
/// composite is a [`Model`] that prepares inputs, batches and warms up through its members.
pub trait Composite: Send + Sync + std::fmt::Debug {
    fn version(&self) -> &ModelVersion;
    fn members(&self) -> &Members;
    /// Scores a batch the lexical member prepared (`texts` in row order).
    fn combine(&self, batch: &PaddedBatch, texts: &[&str]) -> Result<Scored>;
}

impl<T: Composite> Model for T {
    fn version(&self) -> &ModelVersion {
        Composite::version(self)
    }

    fn labels(&self) -> &[String] {
        self.members().labels()
    }

    fn prepare(&self, texts: &[&str]) -> Result<Vec<TokenizedText>> {
        self.members().lexical.prepare(texts)
    }

    fn score(&self, batch: &PaddedBatch, texts: &[&str]) -> Result<Scored> {
        self.combine(batch, texts)
    }

    fn batch_limits(&self) -> BatchLimits {
        self.members().lexical.batch_limits()
    }

    /// Both members, each through its own warm-up.
    fn warm_up(&self) -> Result<()> {
        self.members().lexical.warm_up()?;
        self.members().transformer.warm_up()
    }
}

/// Labeled rows with where they came from.
pub struct Rows {
    pub texts: Vec<String>,
    pub labels: Vec<String>,
    pub origin: String,
}

impl Rows {
    /// Rows `set` of `data`.
    pub fn of(data: &crate::data::LabeledData, set: &[usize], origin: String) -> Self {
        Self {
            texts: set.iter().map(|&r| data.texts[r].clone()).collect(),
            labels: set.iter().map(|&r| data.labels[r].clone()).collect(),
            origin,
        }
    }

    /// The texts as `&str`s.
    pub fn texts(&self) -> Vec<&str> {
        self.texts.iter().map(String::as_str).collect()
    }
}

/// What a composite is made of, and the rows it is tuned and tested on.
pub struct CompositeJob {
    pub lexical: ModelVersion,
    pub transformer: ModelVersion,
    pub registry: PathBuf,
    pub name: String,
    /// Rows to tune on (a cascade's threshold, an ensemble's weight).
    pub validation: Option<Rows>,
    pub test: Option<Rows>,
    pub session: SessionSettings,
}

fn copy_version(from: &ModelVersion, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).at(to)?;
    for file in from.card.model.required_files() {
        std::fs::copy(from.dir.join(file), to.join(file)).at(to.join(file))?;
    }
    // A graph past 2 GiB keeps its weights beside it.
    if from.dir.join(files::MODEL_DATA).is_file() {
        std::fs::copy(from.dir.join(files::MODEL_DATA), to.join(files::MODEL_DATA)).at(to.join(files::MODEL_DATA))?;
    }
    crate::registry::copy_taxonomy(&from.dir, &from.card, to)
}

/// A staged composite version: members copied in, labels and a first card written.
pub struct StagedComposite {
    pub registry: ModelRegistry,
    pub staged: StagedVersion,
    pub labels: Vec<String>,
}

/// Checks the members' kinds, stages a version holding copies of both, and writes its card for
/// `model` (the composite's section). The card takes the lexical member's data description and
/// the worse of the members' parity checks.
pub fn stage_composite(job: &CompositeJob, model: ModelKind) -> Result<StagedComposite> {
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
    copy_version(&job.lexical, &dir.join(Kind::Lexical.name()))?;
    copy_version(&job.transformer, &dir.join(Kind::Transformer.name()))?;
    // The composite keeps its members' training sample (the transformer's, else the lexical's).
    let replay_from = if job.transformer.dir.join(replay::FILE).is_file() { &job.transformer } else { &job.lexical };
    replay::Replay::copy(&replay_from.dir, &dir)?;
    let labels = job.lexical.labels()?;
    write_labels(&dir.join(files::LABELS), &labels)?;
    // The composite's tree is its lexical member's.
    crate::registry::copy_taxonomy(&job.lexical.dir, &job.lexical.card, &dir)?;
    let worst_parity = [&lexical_card.parity, &transformer_card.parity]
        .into_iter()
        .flatten()
        .max_by(|a, b| a.max_abs_diff.total_cmp(&b.max_abs_diff))
        .cloned();
    let card = ModelCard {
        name: job.name.clone(),
        version: String::new(),
        model,
        head: lexical_card.head,
        taxonomy: lexical_card.taxonomy.clone(),
        label_thresholds: None,
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
    Ok(StagedComposite { registry, staged, labels })
}

impl StagedComposite {
    /// Class ids of labeled rows in the composite's taxonomy.
    pub fn ids(&self, rows: &Rows) -> Result<Vec<usize>> {
        label_ids(&self.labels, &rows.labels, &rows.origin)
    }

    /// Evaluates the loaded composite on the test rows, writes its final card and returns the
    /// candidate.
    pub fn finish(self, model: &dyn Model, mut card: ModelCard, test: Option<Rows>) -> Result<Candidate> {
        let evaluation: Option<Evaluation> = match &test {
            Some(rows) if !rows.texts.is_empty() => {
                let evaluation = evaluate(model, &rows.texts(), self.ids(rows)?, None)?;
                card.test_metrics = Some(evaluation.report.headline());
                Some(evaluation)
            }
            _ => None,
        };
        card.write(&self.staged.dir.join(files::CARD))?;
        let test_texts = test.map(|r| r.texts).unwrap_or_default();
        Ok(Candidate {
            registry: self.registry,
            name: card.name.clone(),
            staged: self.staged,
            card,
            test: evaluation,
            test_texts,
        })
    }
}

/// Members retrained for a composite candidate: the job over them, and the staged member
/// candidates, which must live until the composite has copied them.
pub struct Retrained {
    pub job: CompositeJob,
    _members: (Candidate, Candidate),
}

/// Retrains both members on the job's data (same split) and gives the composite job over them,
/// with the store's validation and test rows (the learner's composite candidates).
pub fn retrain_members(job: &RetrainJob<'_>) -> Result<Retrained> {
    let lexical = fit_lexical(job.lexical_job())?;
    let transformer = fit(job.transformer_job())?;
    let t = &job.transformer;
    let (_, _, split) =
        crate::data::prepare::prepare_data(job.data, Some(&job.labels), &job.source, t.split, t.seed, true)?;
    let rows = |set: &[usize], origin: &str| Rows::of(job.data, set, origin.into());
    let composite = CompositeJob {
        lexical: ModelVersion::at(&lexical.staged.dir)?,
        transformer: ModelVersion::at(&transformer.staged.dir)?,
        registry: job.registry.clone(),
        name: job.name.clone(),
        validation: Some(rows(&split.validation, "label store validation split")),
        test: Some(rows(&split.test, "label store test split")),
        session: job.session.clone(),
    };
    Ok(Retrained { job: composite, _members: (lexical, transformer) })
}
