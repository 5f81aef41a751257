//! `auto` on the validation split: the lexical model and a transformer per base trained on the
//! training rows, each transformer's ensemble and cascade with the lexical model built from them,
//! all scored through the serving code on the validation rows (and the test rows for the report),
//! the winner picked and, with `--refit`, trained again on train + validation with the choices it
//! made.

use std::time::Instant;

use super::{AutoJob, AutoOutcome, CandidateScore, RefitScore, SMALL_VALIDATION, pick, rebuild_composite, worst_auc};
use crate::error::{Error, Result};
use crate::eval::{evaluate, label_ids};
use crate::lexical::fit_lexical;
use crate::models::cascade::{CascadeJob, build_cascade};
use crate::models::ensemble::{EnsembleJob, build_ensemble};
use crate::models::pair::{CompositeJob, Rows};
use crate::registry::{ModelKind, ModelVersion};
use crate::staging::Candidate;
use crate::train::fit;

/// Chooses on the validation split (see the module documentation).
pub(super) fn train(job: AutoJob<'_>) -> Result<AutoOutcome> {
    let AutoJob { mut lexical, mut transformers, session, eligible } = job;
    // The search trains on the training split only; the refit (if asked) comes after the choice.
    let refit = lexical.settings.refit || transformers.iter().any(|t| t.settings.refit);
    lexical.settings.refit = false;
    transformers.iter_mut().for_each(|t| t.settings.refit = false);
    let refit_jobs = refit.then(|| (lexical.clone(), transformers.clone()));
    // With several bases, each transformer-holding candidate names its base.
    let base_names: Vec<Option<String>> = transformers
        .iter()
        .map(|t| {
            let name =
                t.base_dir.file_name().map_or_else(|| t.base_dir.display().to_string(), |n| n.to_string_lossy().into());
            (transformers.len() > 1).then_some(name)
        })
        .collect();
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
    // (candidate, seconds to train, index of its base's transformer)
    let mut candidates: Vec<(Candidate, f64, Option<usize>)> = Vec::new();
    let mut composites = Vec::new();
    for (b, transformer) in transformers.into_iter().enumerate() {
        tracing::info!(base = %transformer.base_dir.display(), "auto: training the transformer");
        let started = Instant::now();
        let transformer_candidate = fit(transformer)?;
        let transformer_seconds = started.elapsed().as_secs_f64();
        let members = || composite(&lexical_candidate, &transformer_candidate, true);
        tracing::info!("auto: building the ensemble and the cascade");
        let started = Instant::now();
        let ensemble = build_ensemble(EnsembleJob { members: members()?, lexical_weight: None })?.0;
        let ensemble_seconds = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let cascade = build_cascade(CascadeJob::tuned(members()?))?.0;
        let cascade_seconds = started.elapsed().as_secs_f64();
        let both = lexical_seconds + transformer_seconds;
        candidates.push((transformer_candidate, transformer_seconds, Some(b)));
        composites.push((ensemble, both + ensemble_seconds, Some(b)));
        composites.push((cascade, both + cascade_seconds, Some(b)));
    }
    candidates.insert(0, (lexical_candidate, lexical_seconds, None));
    candidates.extend(composites);

    let mut scores = Vec::new();
    for (candidate, train_seconds, base) in &candidates {
        let model = crate::models::load(ModelVersion::at(&candidate.staged.dir)?, &session)?;
        let y = label_ids(model.labels(), &validation.labels, &validation.origin)?;
        let started = Instant::now();
        let evaluation = evaluate(&*model, &validation.texts(), y, None)?;
        let titles_per_second = validation.texts.len() as f64 / started.elapsed().as_secs_f64().max(1e-9);
        let test_report = candidate.test.as_ref().map(|t| &t.report);
        scores.push(CandidateScore {
            model: candidate.card.model.kind(),
            base: base.and_then(|b| base_names[b].clone()),
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
    let (winner, _, winner_base) = candidates.swap_remove(winner);
    drop(candidates);
    let Some((mut lexical, transformers)) = refit_jobs else {
        return Ok(AutoOutcome { candidates: scores, refit: None, folds: None, winner });
    };
    // The winner's own base (the lexical model's: any, unused).
    let Some(mut transformer) = transformers.into_iter().nth(winner_base.unwrap_or(0)) else {
        return Err(Error::Internal("the winner's base has no training job".into()));
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
        model = %refit.model,
        rows,
        test_macro_f1 = ?refit.test_macro_f1,
        "auto: refitted"
    );
    Ok(AutoOutcome { candidates: scores, refit: Some(refit), folds: None, winner: refitted })
}
