//! `--model-type auto --folds K`: the choices of `auto` made by K-fold cross-validation, for data
//! sets small enough that a validation split of a few dozen rows cannot tell the candidates apart
//! (one row of 81 moves macro-F1 by about 0.012).
//!
//! The train + validation rows are dealt into K folds (stratified, grouped, as the split). For
//! each fold, the lexical model and the transformer are trained on the other K − 1 folds (each
//! choosing its own C or epochs on the held-out fold, as without folds) and score the held-out
//! fold through the serving code. Those out-of-fold scores of every row give: each member's
//! macro-F1, the ensemble's weight (lowest log-loss), the cascade's threshold (same bounds) and
//! their macro-F1 — the candidates, compared with [`super::pick`]'s rule. The winner is then
//! trained on all train + validation rows: the lexical model by its own K-fold choice of C and
//! temperature, the transformer for the median of the folds' best epoch counts with the median
//! of their temperatures, a composite from both with the out-of-fold weight and threshold. The
//! test rows are touched only by that final model. Cost: K + 1 trainings of each member. A run
//! that stops keeps the fold transformers' checkpoints: `--resume` continues from them (finished
//! folds are exported again without training, the interrupted one goes on from its last epoch).

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{AutoJob, AutoOutcome, CandidateScore, RefitScore, pick, rebuild_composite};
use crate::common::Kind;
use crate::data::{LabeledData, Split, stratified_group_folds};
use crate::error::{Error, IoContext, Result};
use crate::eval::cascade::{MemberScores, ThresholdBounds, tune_threshold};
use crate::eval::{label_ids, macro_f1};
use crate::lexical::fit_lexical;
use crate::models::cascade::CascadeTuning;
use crate::models::ensemble::{WeightTuning, blend, tune_weight};
use crate::models::pair::{CompositeJob, Rows};
use crate::registry::card::{CascadeInfo, EnsembleInfo};
use crate::registry::{ModelKind, ModelVersion};
use crate::serve::{ModelOutput, score_texts};
use crate::train::{CrossValidated, fit};

/// The folds' scratch registry: removed when training ends well; when it fails, only the fold
/// transformers' checkpoints stay, for `--resume`.
struct Scratch {
    dir: PathBuf,
    finished: bool,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.finished {
            let _ = std::fs::remove_dir_all(&self.dir);
            return;
        }
        // `<scratch>/<name>/` holds the fold models (`vN`, `current`) and `.checkpoints`.
        for model in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            for entry in std::fs::read_dir(model.path()).into_iter().flatten().flatten() {
                if entry.file_name() != ".checkpoints" {
                    let path = entry.path();
                    let _ = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
                }
            }
        }
        tracing::warn!(
            checkpoints = %self.dir.display(),
            "auto --folds stopped: the fold transformers' checkpoints are kept; the same command with --resume continues from them"
        );
    }
}

/// Both members' out-of-fold scores of every pool row, and what the folds chose.
struct OutOfFold {
    lexical: ModelOutput,
    transformer: ModelOutput,
    lexical_rate: f64,
    transformer_rate: f64,
    lexical_seconds: f64,
    transformer_seconds: f64,
    best_epochs: Vec<usize>,
    temperatures: Vec<f32>,
}

/// Macro-F1 and accuracy of the argmax of `scores`.
fn figures(scores: &ModelOutput, y: &[usize]) -> (f64, f64) {
    let pred: Vec<usize> = (0..scores.rows).map(|r| scores.argmax(r).0).collect();
    let correct = y.iter().zip(&pred).filter(|(a, b)| a == b).count();
    (macro_f1(y, &pred, scores.classes), correct as f64 / y.len().max(1) as f64)
}

/// The lower median (None when empty).
fn median<T: Copy + PartialOrd>(values: &[T]) -> Option<T> {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get(v.len().saturating_sub(1) / 2).copied()
}

/// Copies `part`'s rows into `into` at `rows`.
fn scatter(into: &mut ModelOutput, rows: &[usize], part: &ModelOutput) {
    let c = into.classes;
    for (j, &r) in rows.iter().enumerate() {
        into.probabilities[r * c..(r + 1) * c].copy_from_slice(part.probs(j));
        into.logits[r * c..(r + 1) * c].copy_from_slice(part.logits_row(j));
    }
}

/// Trains both members on each fold's complement and scores the held-out fold.
fn out_of_fold(job: &AutoJob<'_>, pool: &LabeledData, taxonomy: &[String], scratch: &Path) -> Result<OutOfFold> {
    let k = job.lexical.settings.folds;
    let folds = stratified_group_folds(&pool.labels, pool.groups.as_deref(), k, job.lexical.settings.seed);
    let empty = || ModelOutput {
        rows: pool.len(),
        classes: taxonomy.len(),
        logits: vec![0.0; pool.len() * taxonomy.len()],
        probabilities: vec![0.0; pool.len() * taxonomy.len()],
    };
    let mut oof = OutOfFold {
        lexical: empty(),
        transformer: empty(),
        lexical_rate: 0.0,
        transformer_rate: 0.0,
        lexical_seconds: 0.0,
        transformer_seconds: 0.0,
        best_epochs: Vec::new(),
        temperatures: Vec::new(),
    };
    let (mut lexical_time, mut transformer_time) = (0.0, 0.0);
    for (i, held) in folds.iter().enumerate() {
        if crate::fault::hit("auto.fold") {
            return Err(Error::Internal(format!("fold {}: injected fault (PRODCAT_FAULTS)", i + 1)));
        }
        let mut is_held = vec![false; pool.len()];
        held.iter().for_each(|&r| is_held[r] = true);
        let fixed = (0..pool.len()).map(|r| Some(if is_held[r] { Split::Validation } else { Split::Train }));
        let data = LabeledData { fixed_split: Some(fixed.collect()), ..pool.clone() };
        let mut lexical = job.lexical.clone();
        lexical.data = &data;
        lexical.labels = Some(taxonomy.to_vec());
        lexical.registry = scratch.to_path_buf();
        lexical.settings.folds = 0;
        lexical.settings.refit = false;
        let mut transformer = job.transformers[0].clone();
        transformer.data = &data;
        transformer.labels = Some(taxonomy.to_vec());
        transformer.registry = scratch.to_path_buf();
        // Each fold's data differ (their split), so each fold has its own checkpoint to resume.
        transformer.resume = job.transformers[0].resume;
        transformer.settings.refit = false;
        tracing::info!(fold = i + 1, folds = k, held_out = held.len(), "auto: training the fold's members");
        let started = Instant::now();
        let lexical = fit_lexical(lexical)?;
        oof.lexical_seconds += started.elapsed().as_secs_f64();
        let started = Instant::now();
        let transformer = fit(transformer)?;
        oof.transformer_seconds += started.elapsed().as_secs_f64();
        if let Some(t) = &transformer.card.training {
            oof.best_epochs.push(t.best_epoch);
            oof.temperatures.extend(t.temperature);
        }
        let texts: Vec<&str> = held.iter().map(|&r| pool.texts[r].as_str()).collect();
        for (member, into, seconds) in [
            (&lexical, &mut oof.lexical, &mut lexical_time),
            (&transformer, &mut oof.transformer, &mut transformer_time),
        ] {
            let model = crate::models::load(ModelVersion::at(&member.staged.dir)?, &job.session)?;
            if model.labels() != taxonomy {
                return Err(Error::Internal("a fold's member has another taxonomy".into()));
            }
            let started = Instant::now();
            let scored = score_texts(&*model, &texts, None)?.output;
            *seconds += started.elapsed().as_secs_f64();
            scatter(into, held, &scored);
        }
    }
    oof.lexical_rate = pool.len() as f64 / f64::max(lexical_time, 1e-9);
    oof.transformer_rate = pool.len() as f64 / f64::max(transformer_time, 1e-9);
    Ok(oof)
}

/// See the module docs.
pub(super) fn train(job: AutoJob<'_>) -> Result<AutoOutcome> {
    let k = job.lexical.settings.folds;
    let data = job.lexical.data;
    let seed = job.lexical.settings.seed;
    let (taxonomy, _, split) = crate::data::prepare::prepare_data(
        data,
        job.lexical.labels.as_deref(),
        &job.lexical.source,
        job.lexical.split,
        seed,
        job.lexical.stable_split,
    )?;
    let mut pool_rows: Vec<usize> = split.train.iter().chain(&split.validation).copied().collect();
    pool_rows.sort_unstable();
    if pool_rows.len() < 2 * k {
        return Err(Error::config("auto", format!("{} rows are too few for {k} folds", pool_rows.len())));
    }
    let pool = data.select(&pool_rows);
    let (registry, name) = (job.lexical.registry.clone(), job.lexical.name.clone());
    let mut scratch = Scratch { dir: registry.join(&name).join(".folds"), finished: false };
    if !job.transformers[0].resume {
        let _ = std::fs::remove_dir_all(&scratch.dir);
    }
    std::fs::create_dir_all(&scratch.dir).at(&scratch.dir)?;

    let oof = out_of_fold(&job, &pool, &taxonomy, &scratch.dir)?;
    let y = label_ids(&taxonomy, &pool.labels, "train + validation rows")?;
    let weight: WeightTuning = tune_weight(&oof.lexical, &oof.transformer, &y)?;
    let w = weight.chosen.lexical_weight;
    let blended = blend(&oof.lexical, &oof.transformer, w);
    let members = MemberScores {
        lexical: oof.lexical.clone(),
        lexical_rate: oof.lexical_rate,
        transformer: blended.clone(),
        transformer_rate: oof.transformer_rate,
    };
    let threshold = tune_threshold(&taxonomy, &members, &y, ThresholdBounds::default(), None)?;
    let cascade_tuning = CascadeTuning { weight: Some(weight.clone()), lexical_weight: w, threshold };
    let both = oof.lexical_seconds + oof.transformer_seconds;
    let point = &cascade_tuning.threshold.chosen;
    let figures_of = |kind: Kind| match kind {
        Kind::Lexical => (figures(&oof.lexical, &y), oof.lexical_rate, oof.lexical_seconds),
        Kind::Transformer => (figures(&oof.transformer, &y), oof.transformer_rate, oof.transformer_seconds),
        Kind::Ensemble => (figures(&blended, &y), 1.0 / (1.0 / oof.lexical_rate + 1.0 / oof.transformer_rate), both),
        Kind::Cascade => ((point.macro_f1, point.accuracy), point.expected_titles_per_second, both),
    };
    let mut scores: Vec<CandidateScore> = Kind::ALL
        .into_iter()
        .map(|model| (model, figures_of(model)))
        .map(|(model, ((f1, acc), rate, seconds))| CandidateScore {
            base: None,
            model,
            validation_macro_f1: f1,
            validation_accuracy: acc,
            test_macro_f1: None,
            test_accuracy: None,
            test_worst_auc: None,
            titles_per_second: rate,
            train_seconds: seconds,
            chosen: false,
        })
        .collect();
    for s in &scores {
        tracing::info!(
            model = %s.model,
            out_of_fold_macro_f1 = format!("{:.4}", s.validation_macro_f1),
            titles_per_second = format!("{:.0}", s.titles_per_second),
            "auto: candidate scored"
        );
    }
    let winner = pick(&scores, &job.eligible).ok_or_else(|| Error::Internal("no candidates".into()))?;
    scores[winner].chosen = true;
    let kind = scores[winner].model;

    // The winner on every train + validation row (the lexical model choosing its C by the same
    // folds); the split is the one the card records, so its test rows can be re-derived.
    tracing::info!(model = %kind, rows = pool_rows.len(), "auto: training the winner on train + validation");
    let started = Instant::now();
    let lexical = || {
        let mut lexical = job.lexical.clone();
        lexical.labels = Some(taxonomy.clone());
        fit_lexical(lexical)
    };
    let transformer = || {
        let mut transformer = job.transformers[0].clone();
        transformer.labels = Some(taxonomy.clone());
        transformer.settings.refit = false;
        transformer.settings.epochs = median(&oof.best_epochs).unwrap_or(transformer.settings.epochs).max(1);
        transformer.settings.cross_validated =
            Some(CrossValidated { folds: k, temperature: median(&oof.temperatures) });
        fit(transformer)
    };
    let published = match kind {
        Kind::Lexical => lexical()?,
        Kind::Transformer => transformer()?,
        composite @ (Kind::Ensemble | Kind::Cascade) => {
            let (lexical, transformer) = (lexical()?, transformer()?);
            let members = CompositeJob {
                lexical: ModelVersion::at(&lexical.staged.dir)?,
                transformer: ModelVersion::at(&transformer.staged.dir)?,
                registry: registry.clone(),
                name: name.clone(),
                validation: None,
                test: Some(Rows::of(data, &split.test, format!("test split of {}", job.lexical.source.file))),
                session: job.session.clone(),
            };
            let section = if composite == Kind::Ensemble {
                ModelKind::Ensemble(EnsembleInfo {
                    lexical_weight: w,
                    lexical: Kind::Lexical.name().into(),
                    transformer: Kind::Transformer.name().into(),
                    tuning: serde_json::to_value(&weight).ok(),
                })
            } else {
                ModelKind::Cascade(CascadeInfo {
                    threshold: cascade_tuning.threshold.chosen.threshold,
                    lexical_weight: w,
                    lexical: Kind::Lexical.name().into(),
                    transformer: Kind::Transformer.name().into(),
                    tuning: serde_json::to_value(&cascade_tuning.threshold).ok(),
                    weight_tuning: serde_json::to_value(&weight).ok(),
                    first_stage_temperature: cascade_tuning.threshold.first_stage_temperature,
                    level: 0,
                })
            };
            rebuild_composite(&section, members)?
        }
    };
    scratch.finished = true;
    let refit = RefitScore::of(&published, pool_rows.len(), started.elapsed().as_secs_f64());
    tracing::info!(model = %refit.model, rows = refit.rows, test_macro_f1 = ?refit.test_macro_f1, "auto: trained");
    Ok(AutoOutcome { candidates: scores, refit: Some(refit), folds: Some(k), winner: published })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_is_the_lower_middle() {
        assert_eq!(median(&[3, 1, 2]), Some(2));
        assert_eq!(median(&[4, 1, 3, 2]), Some(2));
        assert_eq!(median(&[0.5f32]), Some(0.5));
        assert_eq!(median::<usize>(&[]), None);
    }
}
