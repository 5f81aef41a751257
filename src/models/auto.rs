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
//! With `--folds K` the choices are made out of fold instead ([`super::auto_folds`]): for data
//! sets whose validation split is too small to tell the candidates apart.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::cascade::{CascadeJob, build_cascade};
use super::ensemble::{EnsembleJob, build_ensemble};
use super::pair::{CompositeJob, Rows};
use crate::error::{Error, Result};
use crate::eval::{evaluate, label_ids};
use crate::lexical::{LexicalJob, fit_lexical};
use crate::registry::{ModelKind, ModelVersion, files};
use crate::serve::SessionSettings;
use crate::train::{Candidate, TrainJob, fit};

/// Validation macro-F1 differences up to this count as ties (broken by throughput).
pub const TIE: f64 = 0.002;

/// Fewer validation rows than this make `auto` suggest `--folds` (at 500, one row is 0.002 of
/// accuracy: the tie margin).
pub const SMALL_VALIDATION: usize = 500;

/// Every candidate kind `auto` builds, in the order it builds them.
pub const KINDS: [&str; 4] = ["lexical", "transformer", "ensemble", "cascade"];

/// The two trainings `auto` starts from (same data, split fractions and seed).
pub struct AutoJob<'a> {
    pub lexical: LexicalJob<'a>,
    pub transformer: TrainJob<'a>,
    pub session: SessionSettings,
    /// Kinds that may be published (all are built and reported); empty: any of [`KINDS`].
    pub eligible: Vec<String>,
}

/// One candidate's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateScore {
    /// Kind of the candidate (`lexical`, `transformer`, `ensemble`, `cascade`).
    pub model: String,
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
    pub model: String,
    /// Rows the refitted model (each member of a composite) was trained on.
    pub rows: usize,
    pub test_macro_f1: Option<f64>,
    pub test_accuracy: Option<f64>,
    pub test_worst_auc: Option<f64>,
    pub train_seconds: f64,
}

impl RefitScore {
    /// The published `model`'s figures: trained on `rows` rows in `seconds`.
    pub(super) fn of(model: &Candidate, rows: usize, seconds: f64) -> Self {
        let test = model.test.as_ref().map(|t| &t.report);
        Self {
            model: model.card.model.name().to_string(),
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
fn worst_auc(candidate: &Candidate) -> Option<f64> {
    let report = &candidate.test.as_ref()?.report;
    report.per_class.iter().filter(|c| c.support >= 10).filter_map(|c| c.roc_auc).reduce(f64::min)
}

/// Index of the winner among the eligible kinds (empty: all): best validation macro-F1, ties
/// (within [`TIE`]) to the fastest.
pub fn pick(scores: &[CandidateScore], eligible: &[String]) -> Option<usize> {
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
pub(super) fn rebuild_composite(section: &ModelKind, members: CompositeJob) -> Result<Candidate> {
    let mut built = match section {
        ModelKind::Ensemble(e) => build_ensemble(EnsembleJob { members, lexical_weight: Some(e.lexical_weight) })?.0,
        ModelKind::Cascade(c) => {
            let job = CascadeJob {
                members,
                threshold: Some(c.threshold),
                lexical_weight: Some(c.lexical_weight),
                bounds: Default::default(),
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
    let AutoJob { mut lexical, mut transformer, session, eligible } = job;
    if let Some(kind) = eligible.iter().find(|k| !KINDS.contains(&k.as_str())) {
        return Err(Error::config("auto", format!("unknown candidate kind `{kind}` (one of {})", KINDS.join(", "))));
    }
    if lexical.settings.folds > 1 {
        return super::auto_folds::train_auto_folds(AutoJob { lexical, transformer, session, eligible });
    }
    // The search trains on the training split only; the refit (if asked) comes after the choice.
    let refit = lexical.settings.refit || transformer.settings.refit;
    lexical.settings.refit = false;
    transformer.settings.refit = false;
    let refit_jobs = refit.then(|| (lexical.clone(), transformer.clone()));
    let data = lexical.data;
    let (registry, name) = (lexical.registry.clone(), lexical.name.clone());
    let (_, _, split) = crate::data::prepare::prepare_data(
        data,
        lexical.labels.as_deref(),
        &lexical.source,
        lexical.split,
        lexical.settings.seed,
        lexical.stable_split,
    )?;
    let file = lexical.source.file.clone();
    let rows = |set: &[usize], what: &str| Rows::of(data, set, format!("{what} split of {file}"));
    let validation = rows(&split.validation, "validation");
    if validation.texts.len() < SMALL_VALIDATION {
        tracing::warn!(
            rows = validation.texts.len(),
            "auto: the candidates are compared on few validation rows (one row moves accuracy by {:.3}); \
             --folds K compares them out of fold over train + validation (K + 1 trainings of each member)",
            1.0 / validation.texts.len().max(1) as f64
        );
    }

    tracing::info!("auto: training the lexical model");
    let started = Instant::now();
    let lexical_candidate = fit_lexical(lexical)?;
    let lexical_seconds = started.elapsed().as_secs_f64();
    tracing::info!("auto: training the transformer");
    let started = Instant::now();
    let transformer_candidate = fit(transformer)?;
    let transformer_seconds = started.elapsed().as_secs_f64();
    let composite = |lexical: &Candidate, transformer: &Candidate, validation: bool| -> Result<CompositeJob> {
        Ok(CompositeJob {
            lexical: ModelVersion::at(&lexical.staged.dir)?,
            transformer: ModelVersion::at(&transformer.staged.dir)?,
            registry: registry.clone(),
            name: name.clone(),
            validation: validation.then(|| rows(&split.validation, "validation")),
            test: Some(rows(&split.test, "test")),
            session: session.clone(),
        })
    };
    let members = || composite(&lexical_candidate, &transformer_candidate, true);
    tracing::info!("auto: building the ensemble and the cascade");
    let started = Instant::now();
    let ensemble = build_ensemble(EnsembleJob { members: members()?, lexical_weight: None })?.0;
    let ensemble_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let cascade = build_cascade(CascadeJob::tuned(members()?))?.0;
    let cascade_seconds = started.elapsed().as_secs_f64();
    let both = lexical_seconds + transformer_seconds;
    let mut candidates = vec![
        (lexical_candidate, lexical_seconds),
        (transformer_candidate, transformer_seconds),
        (ensemble, both + ensemble_seconds),
        (cascade, both + cascade_seconds),
    ];

    let mut scores = Vec::new();
    for (candidate, train_seconds) in &candidates {
        let model = super::load(ModelVersion::at(&candidate.staged.dir)?, &session)?;
        let y = label_ids(model.labels(), &validation.labels, &validation.origin)?;
        let started = Instant::now();
        let evaluation = evaluate(&*model, &validation.texts(), y, None)?;
        let titles_per_second = validation.texts.len() as f64 / started.elapsed().as_secs_f64().max(1e-9);
        let test_report = candidate.test.as_ref().map(|t| &t.report);
        scores.push(CandidateScore {
            model: candidate.card.model.name().to_string(),
            validation_macro_f1: evaluation.report.macro_f1,
            validation_accuracy: evaluation.report.accuracy,
            test_macro_f1: test_report.map(|r| r.macro_f1),
            test_accuracy: test_report.map(|r| r.accuracy),
            test_worst_auc: worst_auc(candidate),
            titles_per_second,
            train_seconds: *train_seconds,
            chosen: false,
        });
        tracing::info!(
            model = candidate.card.model.name(),
            validation_macro_f1 = format!("{:.4}", evaluation.report.macro_f1),
            titles_per_second = format!("{titles_per_second:.0}"),
            "auto: candidate scored"
        );
    }
    let winner = pick(&scores, &eligible).ok_or_else(|| Error::Internal("no candidates".into()))?;
    scores[winner].chosen = true;
    // The composites copied their members, so the members' staged folders may go with the rest.
    let (winner, _) = candidates.swap_remove(winner);
    drop(candidates);
    let Some((mut lexical, mut transformer)) = refit_jobs else {
        return Ok(AutoOutcome { candidates: scores, refit: None, folds: None, winner });
    };

    tracing::info!(model = winner.card.model.name(), "auto: refitting the winner on train + validation");
    let started = Instant::now();
    lexical.settings.refit = true;
    transformer.settings.refit = true;
    // The search's checkpoint holds the transformer's choices: only the refit epochs run.
    transformer.resume = true;
    let refitted = match &winner.card.model {
        ModelKind::Lexical(_) => fit_lexical(lexical)?,
        ModelKind::Transformer(_) => fit(transformer)?,
        section @ (ModelKind::Ensemble(_) | ModelKind::Cascade(_)) => {
            let (lexical, transformer) = (fit_lexical(lexical)?, fit(transformer)?);
            rebuild_composite(section, composite(&lexical, &transformer, false)?)?
        }
    };
    let rows = split.train.len() + split.validation.len();
    let refit = RefitScore::of(&refitted, rows, started.elapsed().as_secs_f64());
    tracing::info!(
        model = refit.model,
        rows,
        test_macro_f1 = ?refit.test_macro_f1,
        "auto: refitted"
    );
    Ok(AutoOutcome { candidates: scores, refit: Some(refit), folds: None, winner: refitted })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(model: &str, f1: f64, speed: f64) -> CandidateScore {
        CandidateScore {
            model: model.into(),
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
        let scores =
            [score("lexical", 0.90, 50_000.0), score("transformer", 0.95, 300.0), score("ensemble", 0.951, 250.0)];
        assert_eq!(pick(&scores, &[]), Some(1), "0.951 vs 0.95 is a tie; the transformer is faster");
        let scores = [score("lexical", 0.90, 50_000.0), score("ensemble", 0.96, 250.0)];
        assert_eq!(pick(&scores, &[]), Some(1));
        assert_eq!(pick(&[], &[]), None);
        // Only the eligible kinds compete, however the others score.
        assert_eq!(pick(&scores, &["lexical".to_string()]), Some(0));
        assert_eq!(pick(&scores, &["cascade".to_string()]), None);
    }
}
