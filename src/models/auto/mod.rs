//! `--model-type auto`: every family on the same split, the best one published.
//!
//! The lexical model and the transformer are trained on the same rows with the same seed; the
//! ensemble and the cascade are built from those two (weight and threshold chosen on the
//! validation rows). Each candidate is then scored through the serving code on the validation
//! rows (macro-F1, and titles/s measured there) and on the test rows. The best validation
//! macro-F1 wins; candidates within [`TIE`] of it count as tied and the fastest of them wins.
//! Only the winner is published (the others' staged folders are removed).
//!
//! With `--refit`, the choice is made exactly as above (members trained on the training split,
//! every candidate scored on validation), and then the winner is trained again on train +
//! validation with the choices it made: the lexical model with its C, normalisation and
//! temperature; the transformer for its best epoch count, resuming the search's checkpoint so the
//! search is not repeated; a composite from both members refitted, with the weight and threshold
//! it chose on validation. The published model is that refit; its test figures are reported
//! beside the candidates'.
//!
//! The choice on the validation split is [`holdout`]'s; with `--folds K` the choices are made out of
//! fold instead ([`folds`]): for data sets whose validation split is too small to tell the
//! candidates apart. This module holds what both share: the job, the figures, the rule that
//! picks the winner and the rebuilding of a composite from refitted members.

mod folds;
mod holdout;

use serde::{Deserialize, Serialize};

use super::cascade::{CascadeJob, build_cascade};
use super::ensemble::{EnsembleJob, build_ensemble};
use super::pair::CompositeJob;
use crate::common::Kind;
use crate::error::{Error, Result};
use crate::lexical::LexicalJob;
use crate::registry::{ModelKind, files};
use crate::serve::SessionSettings;
use crate::staging::Candidate;
use crate::train::TrainJob;

/// Validation macro-F1 differences up to this count as ties (broken by throughput).
pub const TIE: f64 = 0.002;

/// Fewer validation rows than this make `auto` suggest `--folds` (at 500, one row is 0.002 of
/// accuracy: the tie margin).
pub const SMALL_VALIDATION: usize = 500;

/// The trainings `auto` starts from (same data, split fractions and seed): the lexical model and
/// one transformer per base (at least one; several only on the validation split, not `--folds`).
pub struct AutoJob<'a> {
    pub lexical: LexicalJob<'a>,
    pub transformers: Vec<TrainJob<'a>>,
    pub session: SessionSettings,
    /// Kinds that may be published (all are built and reported); empty: any kind.
    pub eligible: Vec<Kind>,
}

/// One candidate's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateScore {
    /// Kind of the candidate.
    pub model: Kind,
    /// The base its transformer was fine-tuned from (folder name), when `auto` compared several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    pub validation_macro_f1: f64,
    pub validation_accuracy: f64,
    pub test_macro_f1: Option<f64>,
    pub test_accuracy: Option<f64>,
    /// Worst one-vs-rest ROC AUC on the test rows over classes with at least 10 test rows.
    pub test_worst_auc: Option<f64>,
    /// Titles per second through the serving code, measured on the validation rows.
    pub titles_per_second: f64,
    /// Seconds to train (composites: their members' plus tuning).
    pub train_seconds: f64,
    pub chosen: bool,
}

/// The published model's figures when the winner was refitted on train + validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefitScore {
    pub model: Kind,
    /// Rows the refitted model (each member of a composite) was trained on.
    pub rows: usize,
    pub test_macro_f1: Option<f64>,
    pub test_accuracy: Option<f64>,
    pub test_worst_auc: Option<f64>,
    pub train_seconds: f64,
}

impl RefitScore {
    /// The published `model`'s figures: trained on `rows` rows in `seconds`.
    pub(crate) fn of(model: &Candidate, rows: usize, seconds: f64) -> Self {
        let test = model.test.as_ref().map(|t| &t.report);
        Self {
            model: model.card.model.kind(),
            rows,
            test_macro_f1: test.map(|r| r.macro_f1),
            test_accuracy: test.map(|r| r.accuracy),
            test_worst_auc: worst_auc(model),
            train_seconds: seconds,
        }
    }
}

/// What `auto` did: the candidates in the order trained, and the winner (not yet published).
#[derive(Serialize)]
pub struct AutoOutcome {
    pub candidates: Vec<CandidateScore>,
    /// Present with `--refit`: the winner trained again on train + validation (what `winner` is).
    pub refit: Option<RefitScore>,
    /// Present with `--folds K`: the candidates' validation figures are out of fold over train +
    /// validation, and `refit` is the winner trained on all of those rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub folds: Option<usize>,
    #[serde(skip)]
    pub winner: Candidate,
}

/// Worst one-vs-rest ROC AUC over classes with at least 10 test rows.
pub(crate) fn worst_auc(candidate: &Candidate) -> Option<f64> {
    let report = &candidate.test.as_ref()?.report;
    report.per_class.iter().filter(|c| c.support >= 10).filter_map(|c| c.roc_auc).reduce(f64::min)
}

/// Index of the winner among the eligible kinds (empty: all): best validation macro-F1, ties
/// (within [`TIE`]) to the fastest.
pub fn pick(scores: &[CandidateScore], eligible: &[Kind]) -> Option<usize> {
    let allowed: Vec<usize> =
        (0..scores.len()).filter(|&i| eligible.is_empty() || eligible.contains(&scores[i].model)).collect();
    let best = allowed.iter().map(|&i| scores[i].validation_macro_f1).fold(f64::NEG_INFINITY, f64::max);
    allowed
        .into_iter()
        .filter(|&i| scores[i].validation_macro_f1 >= best - TIE)
        .max_by(|&a, &b| scores[a].titles_per_second.total_cmp(&scores[b].titles_per_second))
}

/// A composite of `section`'s kind over `members`, with the weight and threshold the section
/// holds (chosen earlier, on validation or out of fold) and their tuning kept in its card.
pub(crate) fn rebuild_composite(section: &ModelKind, members: CompositeJob) -> Result<Candidate> {
    let mut built = match section {
        ModelKind::Ensemble(e) => build_ensemble(EnsembleJob { members, lexical_weight: Some(e.lexical_weight) })?.0,
        ModelKind::Cascade(c) => {
            let job = CascadeJob {
                members,
                threshold: Some(c.threshold),
                lexical_weight: Some(c.lexical_weight),
                bounds: Default::default(),
                level: c.level,
            };
            build_cascade(job)?.0
        }
        other => return Err(Error::Internal(format!("a {} model is not a composite", other.name()))),
    };
    built.card.model = section.clone();
    built.card.write(&built.staged.dir.join(files::CARD))?;
    Ok(built)
}

/// Trains every family, scores each on validation and test rows, and returns the winner.
pub fn train_auto(job: AutoJob<'_>) -> Result<AutoOutcome> {
    if job.transformers.is_empty() {
        return Err(Error::config("base", "auto needs a base model for its transformer"));
    }
    if job.lexical.settings.folds > 1 {
        if job.transformers.len() > 1 {
            return Err(Error::config(
                "base",
                "auto --folds takes one base; several bases are compared on the validation split (without --folds)",
            ));
        }
        folds::train(job)
    } else {
        holdout::train(job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(model: Kind, f1: f64, speed: f64) -> CandidateScore {
        CandidateScore {
            model,
            base: None,
            validation_macro_f1: f1,
            validation_accuracy: f1,
            test_macro_f1: None,
            test_accuracy: None,
            test_worst_auc: None,
            titles_per_second: speed,
            train_seconds: 1.0,
            chosen: false,
        }
    }

    #[test]
    fn best_macro_f1_wins_and_ties_go_to_the_fastest() {
        let scores = [
            score(Kind::Lexical, 0.90, 50_000.0),
            score(Kind::Transformer, 0.95, 300.0),
            score(Kind::Ensemble, 0.951, 250.0),
        ];
        assert_eq!(pick(&scores, &[]), Some(1), "0.951 vs 0.95 is a tie; the transformer is faster");
        let scores = [score(Kind::Lexical, 0.90, 50_000.0), score(Kind::Ensemble, 0.96, 250.0)];
        assert_eq!(pick(&scores, &[]), Some(1));
        assert_eq!(pick(&[], &[]), None);
        // Only the eligible kinds compete, however the others score.
        assert_eq!(pick(&scores, &[Kind::Lexical]), Some(0));
        assert_eq!(pick(&scores, &[Kind::Cascade]), None);
    }
}
