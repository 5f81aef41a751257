//! The cascade kind: the lexical member labels everything; rows whose confidence is below the
//! threshold are labeled again by the second stage: the transformer member (its own token-budget
//! batches), its probabilities averaged with the lexical member's at the cascade's lexical weight
//! — the ensemble's rule, so a cascade whose threshold sends every row on is the ensemble, and one
//! with weight 0 is the plain transformer fallback. The members are registry versions of their own
//! kinds in the `lexical/` and `transformer/` subfolders ([`super::pair`]). Building one copies
//! the members in, chooses the weight on validation rows as the ensemble does, then the threshold
//! on the same rows (or takes given ones), and evaluates the cascade on test rows through the same
//! serving code as every model; retraining retrains both members and re-tunes.

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::ensemble::{WeightTuning, blend, tune_weight};
use super::pair::{Composite, CompositeJob, Members, retrain_members, stage_composite};
use super::{ModelFamily, RetrainJob};
use crate::common::Kind;
use crate::error::{Error, Result};
use crate::eval::cascade::{MemberScores, ThresholdBounds, ThresholdTuning, tune_threshold};
use crate::registry::card::CascadeInfo;
use crate::registry::{ModelKind, ModelVersion};
use crate::serve::{Model, ModelOutput, Scored, SessionSettings, score_texts};
use crate::staging::Candidate;
use crate::tokenize::PaddedBatch;

pub use super::pair::Rows;

/// The cascade family.
pub struct CascadeFamily;

/// A loaded cascade.
#[derive(Debug)]
pub struct Cascade {
    pub version: ModelVersion,
    /// Confidence below which the second stage relabels a row.
    pub threshold: f32,
    /// Weight of the lexical member's probabilities in the second stage.
    pub lexical_weight: f32,
    /// Temperature of the scores of rows the first stage keeps (see [`crate::eval::cascade`]).
    pub first_stage_temperature: f32,
    /// The taxonomy level whose score the threshold applies to (0: the label's own).
    pub level: usize,
    pub members: Members,
}

/// How a cascade was tuned: the second stage's weight, then the threshold with that weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CascadeTuning {
    /// None when the weight was given.
    pub weight: Option<WeightTuning>,
    pub lexical_weight: f32,
    pub threshold: ThresholdTuning,
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
        let members = Members::load(&version.dir, &info.lexical, &info.transformer, settings)?;
        let (threshold, lexical_weight, first_stage_temperature, level) =
            (info.threshold, info.lexical_weight, info.first_stage_temperature, info.level);
        if level > 0 && version.card.taxonomy.as_ref().is_none_or(|t| level > t.levels.len()) {
            let levels = version.card.taxonomy.as_ref().map_or(0, |t| t.levels.len());
            return Err(Error::model(
                &version.dir,
                format!("the threshold applies at level {level}, but the labels have {levels} levels above the leaves"),
            ));
        }
        Ok(Self { version, threshold, lexical_weight, first_stage_temperature, level, members })
    }

    /// The taxonomy level the threshold reads, when not the label's own.
    fn route(&self) -> Option<(&crate::common::Taxonomy, usize)> {
        self.version.card.taxonomy.as_ref().filter(|_| self.level > 0).map(|t| (t, self.level))
    }

    /// Lexical scores for the batch; rows below `threshold` re-scored by the second stage (the
    /// transformer in token-budget batches, averaged with the lexical scores at the weight), the
    /// others reported at the first stage's temperature.
    pub fn score_at(&self, batch: &PaddedBatch, texts: &[&str], threshold: f32) -> Result<Scored> {
        let mut out = self.members.lexical.score(batch, texts)?;
        let route = self.route();
        let unsure: Vec<usize> =
            (0..out.output.rows).filter(|&r| out.output.confidence(r, route).1 < threshold).collect();
        // The second stage averages the lexical scores as calibrated, not as the first stage reports them.
        let lexical = (self.lexical_weight > 0.0 && !unsure.is_empty()).then(|| out.output.select(&unsure));
        temper(&mut out.output, self.first_stage_temperature);
        if unsure.is_empty() {
            return Ok(out);
        }
        let unsure_texts: Vec<&str> = unsure.iter().map(|&r| texts[r]).collect();
        let transformer = self.members.score_transformer(&unsure_texts)?;
        let second = match lexical {
            Some(lexical) => Scored::single(blend(&lexical, &transformer, self.lexical_weight), Kind::Ensemble),
            None => Scored::single(transformer, Kind::Transformer),
        };
        out.scatter(&unsure, &second);
        Ok(out)
    }

    /// Scores `texts` with both members (their speeds measured), chooses the second stage's
    /// weight (unless `lexical_weight` is given) and then the threshold.
    pub fn tune(
        &self,
        texts: &[&str],
        y_true: &[usize],
        bounds: ThresholdBounds,
        lexical_weight: Option<f32>,
    ) -> Result<CascadeTuning> {
        let started = Instant::now();
        let lexical = score_texts(&*self.members.lexical, texts, None)?.output;
        let lexical_rate = texts.len() as f64 / started.elapsed().as_secs_f64().max(1e-9);
        let started = Instant::now();
        let transformer = self.members.score_transformer(texts)?;
        let transformer_rate = texts.len() as f64 / started.elapsed().as_secs_f64().max(1e-9);
        let weight = match lexical_weight {
            Some(_) => None,
            None => Some(tune_weight(&lexical, &transformer, y_true)?),
        };
        let w = lexical_weight.or(weight.as_ref().map(|t| t.chosen.lexical_weight)).unwrap_or(0.0);
        let second = blend(&lexical, &transformer, w);
        let members = MemberScores { lexical, lexical_rate, transformer: second, transformer_rate };
        let threshold = tune_threshold(self.members.labels(), &members, y_true, bounds, self.route())?;
        Ok(CascadeTuning { weight, lexical_weight: w, threshold })
    }

    /// Sets the threshold, weight and first-stage temperature and records the tuning in the card.
    pub fn set_tuning(&mut self, tuning: &CascadeTuning) {
        self.threshold = tuning.threshold.chosen.threshold;
        self.lexical_weight = tuning.lexical_weight;
        self.first_stage_temperature = tuning.threshold.first_stage_temperature;
        if let ModelKind::Cascade(info) = &mut self.version.card.model {
            info.threshold = self.threshold;
            info.lexical_weight = self.lexical_weight;
            info.first_stage_temperature = self.first_stage_temperature;
            info.tuning = serde_json::to_value(&tuning.threshold).ok();
            if let Some(w) = &tuning.weight {
                info.weight_tuning = serde_json::to_value(w).ok();
            }
        }
    }
}

impl Composite for Cascade {
    fn version(&self) -> &ModelVersion {
        &self.version
    }

    fn members(&self) -> &Members {
        &self.members
    }

    fn combine(&self, batch: &PaddedBatch, texts: &[&str]) -> Result<Scored> {
        self.score_at(batch, texts, self.threshold)
    }
}

impl ModelFamily for CascadeFamily {
    fn kind(&self) -> Kind {
        Kind::Cascade
    }

    fn stages(&self) -> &'static [Kind] {
        // The lexical member keeps the rows it is sure of; the others report the ensemble of both members
        // (the transformer alone when its weight is 0).
        &[Kind::Lexical, Kind::Transformer, Kind::Ensemble]
    }

    fn load(&self, version: ModelVersion, settings: &SessionSettings) -> Result<Arc<dyn Model>> {
        Ok(Arc::new(Cascade::load(version, settings)?))
    }

    /// Both members retrained on the same split; the threshold re-tuned on its validation rows.
    fn candidate(&self, job: RetrainJob<'_>) -> Result<Candidate> {
        // The serving cascade's level stays.
        let serving = ModelVersion::open(&job.registry.join(&job.name)).ok();
        let level = serving.as_ref().and_then(|v| section(v).ok()).map_or(0, |info| info.level);
        let retrained = retrain_members(&job)?;
        Ok(build_cascade(CascadeJob { level, ..CascadeJob::tuned(retrained.job) })?.0)
    }
}

/// What to combine, and how the threshold and the second stage's weight are set.
pub struct CascadeJob {
    pub members: CompositeJob,
    /// A fixed threshold, or None to tune it on the validation rows.
    pub threshold: Option<f32>,
    /// A fixed lexical weight for the second stage, or None: chosen on the validation rows when
    /// the threshold is tuned, else 0 (the transformer alone).
    pub lexical_weight: Option<f32>,
    pub bounds: ThresholdBounds,
    /// For a taxonomy model, the level whose score the threshold applies to (0: the label's).
    pub level: usize,
}

impl CascadeJob {
    /// Threshold and weight both chosen on the job's validation rows, with the default bounds.
    pub fn tuned(members: CompositeJob) -> Self {
        Self { members, threshold: None, lexical_weight: None, bounds: ThresholdBounds::default(), level: 0 }
    }
}

/// Every row of `output` at temperature `t`: logits / t and their softmax (unchanged at t = 1).
fn temper(output: &mut ModelOutput, t: f32) {
    if t == 1.0 || !(t.is_finite() && t > 0.0) {
        return;
    }
    let classes = output.classes;
    for (logits, probs) in output.logits.chunks_exact_mut(classes).zip(output.probabilities.chunks_exact_mut(classes)) {
        logits.iter_mut().for_each(|l| *l /= t);
        crate::eval::calibration::softmax(logits, probs);
    }
}

/// Stages the cascade, tunes and evaluates it. Returns the candidate and the tuning.
pub fn build_cascade(job: CascadeJob) -> Result<(Candidate, Option<CascadeTuning>)> {
    let CascadeJob { members, threshold, lexical_weight, bounds, level } = job;
    if let Some(w) = lexical_weight.filter(|w| !(0.0..=1.0).contains(w)) {
        return Err(Error::config("cascade", format!("the lexical weight {w} must be within [0, 1]")));
    }
    let section = ModelKind::Cascade(CascadeInfo {
        threshold: threshold.unwrap_or(0.9),
        lexical_weight: lexical_weight.unwrap_or(0.0),
        lexical: Kind::Lexical.name().into(),
        transformer: Kind::Transformer.name().into(),
        tuning: None,
        weight_tuning: None,
        first_stage_temperature: 1.0,
        level,
    });
    let staged = stage_composite(&members, section)?;
    let mut cascade = Cascade::load(ModelVersion::at(&staged.staged.dir)?, &members.session)?;
    let tuning = match (threshold, &members.validation) {
        (Some(_), _) => None,
        (None, None) => {
            return Err(Error::config("cascade", "give a threshold or validation rows to tune it on"));
        }
        (None, Some(rows)) => {
            let tuning = cascade.tune(&rows.texts(), &staged.ids(rows)?, bounds, lexical_weight)?;
            cascade.set_tuning(&tuning);
            Some(tuning)
        }
    };
    let card = cascade.version.card.clone();
    Ok((staged.finish(&cascade, card, members.test)?, tuning))
}
