//! `--model-type auto`: every family on the same split, the best one published.
//!
//! The lexical model and the transformer are trained on the same rows with the same seed; the
//! ensemble and the cascade are built from those two (weight and threshold chosen on the
//! validation rows). Each candidate is then scored through the serving code on the validation
//! rows (macro-F1, and titles/s measured there) and on the test rows. The best validation
//! macro-F1 wins; candidates within [`TIE`] of it count as tied and the fastest of them wins.
//! Only the winner is published (the others' staged folders are removed).

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::cascade::{CascadeJob, build_cascade};
use super::ensemble::{EnsembleJob, build_ensemble};
use super::pair::{CompositeJob, Rows};
use crate::error::{Error, Result};
use crate::eval::{evaluate, label_ids};
use crate::lexical::{LexicalJob, fit_lexical};
use crate::registry::ModelVersion;
use crate::serve::SessionSettings;
use crate::train::{Candidate, TrainJob, fit};

/// Validation macro-F1 differences up to this count as ties (broken by throughput).
pub const TIE: f64 = 0.002;

/// The two trainings `auto` starts from (same data, split fractions and seed).
pub struct AutoJob<'a> {
    pub lexical: LexicalJob<'a>,
    pub transformer: TrainJob<'a>,
    pub session: SessionSettings,
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

/// What `auto` did: the candidates in the order trained, and the winner (not yet published).
pub struct AutoOutcome {
    pub scores: Vec<CandidateScore>,
    pub winner: Candidate,
}

/// Index of the winner: best validation macro-F1, ties (within [`TIE`]) to the fastest.
pub fn pick(scores: &[CandidateScore]) -> Option<usize> {
    let best = scores.iter().map(|s| s.validation_macro_f1).fold(f64::NEG_INFINITY, f64::max);
    (0..scores.len())
        .filter(|&i| scores[i].validation_macro_f1 >= best - TIE)
        .max_by(|&a, &b| scores[a].titles_per_second.total_cmp(&scores[b].titles_per_second))
}

/// Trains every family, scores each on validation and test rows, and returns the winner.
pub fn train_auto(job: AutoJob<'_>) -> Result<AutoOutcome> {
    let AutoJob { lexical, transformer, session } = job;
    if lexical.settings.refit || transformer.settings.refit || lexical.settings.folds > 1 {
        return Err(Error::config(
            "auto",
            "--model-type auto chooses on the validation rows; it cannot be combined with --refit or --folds",
        ));
    }
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
    let rows = |set: &[usize], what: &str| Rows {
        texts: set.iter().map(|&r| data.texts[r].clone()).collect(),
        labels: set.iter().map(|&r| data.labels[r].clone()).collect(),
        origin: format!("{what} split of {file}"),
    };
    let validation = rows(&split.validation, "validation");

    tracing::info!("auto: training the lexical model");
    let started = Instant::now();
    let lexical_candidate = fit_lexical(lexical)?;
    let lexical_seconds = started.elapsed().as_secs_f64();
    tracing::info!("auto: training the transformer");
    let started = Instant::now();
    let transformer_candidate = fit(transformer)?;
    let transformer_seconds = started.elapsed().as_secs_f64();
    let members = || -> Result<CompositeJob> {
        Ok(CompositeJob {
            lexical: ModelVersion::at(&lexical_candidate.staged.dir)?,
            transformer: ModelVersion::at(&transformer_candidate.staged.dir)?,
            registry: registry.clone(),
            name: name.clone(),
            validation: Some(rows(&split.validation, "validation")),
            test: Some(rows(&split.test, "test")),
            session: session.clone(),
        })
    };
    tracing::info!("auto: building the ensemble and the cascade");
    let started = Instant::now();
    let ensemble = build_ensemble(EnsembleJob { members: members()?, lexical_weight: None })?.0;
    let ensemble_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let cascade = build_cascade(CascadeJob { members: members()?, threshold: None, max_f1_loss: 0.001 })?.0;
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
            test_worst_auc: test_report.and_then(|r| {
                r.per_class.iter().filter(|c| c.support >= 10).filter_map(|c| c.roc_auc).reduce(f64::min)
            }),
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
    let winner = pick(&scores).ok_or_else(|| Error::Internal("no candidates".into()))?;
    scores[winner].chosen = true;
    // The composites copied their members, so the members' staged folders may go with the rest.
    let (winner, _) = candidates.swap_remove(winner);
    Ok(AutoOutcome { scores, winner })
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
        assert_eq!(pick(&scores), Some(1), "0.951 vs 0.95 is a tie; the transformer is faster");
        let scores = [score("lexical", 0.90, 50_000.0), score("ensemble", 0.96, 250.0)];
        assert_eq!(pick(&scores), Some(1));
        assert_eq!(pick(&[]), None);
    }
}
