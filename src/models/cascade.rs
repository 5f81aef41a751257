//! The cascade kind: the lexical member labels everything; rows whose confidence is below the
//! threshold are labeled again by the transformer member (its own token-budget batches). The
//! members are registry versions of their own kinds in the `lexical/` and `transformer/`
//! subfolders ([`super::pair`]). Building one copies the members in, tunes the threshold on
//! validation rows (or takes a given one) and evaluates the cascade on test rows through the same
//! serving code as every model; retraining retrains both members and re-tunes.

use std::sync::Arc;
use std::time::Instant;

use super::pair::{Composite, CompositeJob, LEXICAL, Members, TRANSFORMER, retrain_members, stage_composite};
use super::{ModelFamily, RetrainJob};
use crate::error::{Error, Result};
use crate::eval::cascade::{MemberScores, ThresholdTuning, tune_threshold};
use crate::registry::card::CascadeInfo;
use crate::registry::{ModelKind, ModelVersion};
use crate::serve::{Model, Scored, SessionSettings, Stage, score_texts};
use crate::tokenize::PaddedBatch;
use crate::train::Candidate;

pub use super::pair::Rows;

/// The cascade family.
pub struct CascadeFamily;

/// A loaded cascade.
#[derive(Debug)]
pub struct Cascade {
    pub version: ModelVersion,
    /// Confidence below which the transformer member relabels a row.
    pub threshold: f32,
    pub members: Members,
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
        let threshold = info.threshold;
        Ok(Self { version, threshold, members })
    }

    /// Lexical scores for the batch; rows below `threshold` re-scored by the transformer in
    /// token-budget batches.
    pub fn score_at(&self, batch: &PaddedBatch, texts: &[&str], threshold: f32) -> Result<Scored> {
        let mut out = self.members.lexical.score(batch, texts)?;
        let unsure: Vec<usize> = (0..out.output.rows).filter(|&r| out.output.argmax(r).1 < threshold).collect();
        if unsure.is_empty() {
            return Ok(out);
        }
        let unsure_texts: Vec<&str> = unsure.iter().map(|&r| texts[r]).collect();
        let scored = self.members.score_transformer(&unsure_texts)?;
        out.scatter(&unsure, &Scored::single(scored, Stage::Transformer));
        Ok(out)
    }

    /// Scores `texts` with both members (their speeds measured) and tunes the threshold.
    pub fn tune(&self, texts: &[&str], y_true: &[usize], max_f1_loss: f64) -> Result<ThresholdTuning> {
        let started = Instant::now();
        let lexical = score_texts(&*self.members.lexical, texts, None)?.output;
        let lexical_rate = texts.len() as f64 / started.elapsed().as_secs_f64().max(1e-9);
        let started = Instant::now();
        let transformer = self.members.score_transformer(texts)?;
        let transformer_rate = texts.len() as f64 / started.elapsed().as_secs_f64().max(1e-9);
        let members = MemberScores { lexical, lexical_rate, transformer, transformer_rate };
        tune_threshold(self.members.labels(), &members, y_true, max_f1_loss)
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
    fn load(&self, version: ModelVersion, settings: &SessionSettings) -> Result<Arc<dyn Model>> {
        Ok(Arc::new(Cascade::load(version, settings)?))
    }

    /// Both members retrained on the same split; the threshold re-tuned on its validation rows.
    fn candidate(&self, job: RetrainJob<'_>) -> Result<Candidate> {
        let retrained = retrain_members(&job)?;
        Ok(build_cascade(CascadeJob { members: retrained.job, threshold: None, max_f1_loss: 0.001 })?.0)
    }
}

/// What to combine, and how the threshold is set.
pub struct CascadeJob {
    pub members: CompositeJob,
    /// A fixed threshold, or None to tune it on the validation rows.
    pub threshold: Option<f32>,
    pub max_f1_loss: f64,
}

/// Stages the cascade, tunes and evaluates it. Returns the candidate and the tuning curve.
pub fn build_cascade(job: CascadeJob) -> Result<(Candidate, Option<ThresholdTuning>)> {
    let CascadeJob { members, threshold, max_f1_loss } = job;
    let section = ModelKind::Cascade(CascadeInfo {
        threshold: threshold.unwrap_or(0.9),
        lexical: LEXICAL.into(),
        transformer: TRANSFORMER.into(),
        tuning: None,
    });
    let staged = stage_composite(&members, section)?;
    let mut cascade = Cascade::load(ModelVersion::at(&staged.staged.dir)?, &members.session)?;
    let tuning = match (threshold, &members.validation) {
        (Some(_), _) => None,
        (None, None) => {
            return Err(Error::config("cascade", "give a threshold or validation rows to tune it on"));
        }
        (None, Some(rows)) => {
            let tuning = cascade.tune(&rows.texts(), &staged.ids(rows)?, max_f1_loss)?;
            cascade.set_tuning(&tuning);
            Some(tuning)
        }
    };
    let card = cascade.version.card.clone();
    Ok((staged.finish(&cascade, card, members.test)?, tuning))
}
