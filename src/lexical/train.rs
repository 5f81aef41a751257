//! Training a lexical model end to end: the same split as the transformer trainer, featurization,
//! softmax regression, ONNX export into a staged registry version, the Rust-vs-ONNX-Runtime parity
//! check, and test-split metrics through the exported model.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;

use super::featurizer::{Bag, Featurizer};
use super::model::{DualVariables, LexicalFit, LexicalModel, Row, Selection, Targets};
use crate::common::{FeatureNorm, FeaturizerSettings, Head, Kind, LexicalSettings, LexicalSolver, names};
use crate::data::prepare::{DataSource, prepare_data};
use crate::data::{LabeledData, stratified_group_folds};
use crate::error::{Error, Result};
use crate::registry::card::{DataInfo, LabelTreeInfo, LexicalInfo, TrainingInfo};
use crate::registry::{ModelCard, ModelKind};
use crate::serve::SessionSettings;
use crate::staging::{Candidate, GraphExport, ParityBatch, parity_rows, stage_graph};
use crate::tokenize::PaddedBatch;

/// Everything a lexical training run needs.
#[derive(Clone)]
pub struct LexicalJob<'a> {
    pub data: &'a LabeledData,
    pub source: DataSource,
    pub registry: PathBuf,
    pub name: String,
    pub settings: LexicalSettings,
    /// Train/validation/test fractions (use the transformer's, with the same seed, to share its split).
    pub split: [f64; 3],
    /// Hash-based split that stays put as data grows (see [`crate::data::stable_group_split`]).
    pub stable_split: bool,
    pub session: SessionSettings,
    /// The taxonomy; None = the data's labels, sorted.
    pub labels: Option<Vec<String>>,
    pub parity_tolerance: f32,
}

/// What a lexical fit works on: the featurized rows, each row's field for the fit (its class, or
/// for multi-label rows the row itself: see [`Targets`]) and split, and what the classes are.
struct Rows<'a> {
    features: &'a [Bag],
    y: &'a [usize],
    split: &'a crate::data::SplitAssignment,
    data: &'a LabeledData,
    classes: usize,
    targets: Targets<'a>,
}

/// Fits the model on featurized rows, choosing as the settings say (K-fold over train +
/// validation, or on the validation split with optional refit, and with `refit_test` a last fit
/// that learns from the test rows too).
fn fit_rows(rows: &Rows<'_>, settings: &LexicalSettings, warm: Option<&[Vec<f32>]>) -> LexicalFit {
    let Rows { features, y, split, data, classes, targets } = *rows;
    let rows = |set: &[usize]| -> Vec<Row<'_>> { set.iter().map(|&r| (&features[r], y[r])).collect() };
    // The test rows, learned from after their figures are measured (cross-validation trains on
    // train + validation whatever `refit` says).
    let also =
        if (settings.refit || settings.folds > 1) && settings.refit_test { rows(&split.test) } else { Vec::new() };
    if settings.folds > 1 {
        // Cross-validation over train + validation, folds dealt like the split (grouped, stratified).
        let pool_rows: Vec<usize> = split.train.iter().chain(&split.validation).copied().collect();
        let pool = data.select(&pool_rows);
        let folds = stratified_group_folds(&pool.labels, pool.groups.as_deref(), settings.folds, settings.seed);
        LexicalModel::fit(
            &rows(&pool_rows),
            Selection::Folds { folds: &folds, also: &also },
            classes,
            settings,
            targets,
        )
    } else {
        let validation = rows(&split.validation);
        LexicalModel::fit(
            &rows(&split.train),
            Selection::Holdout { validation: &validation, refit: settings.refit, warm, also: &also },
            classes,
            settings,
            targets,
        )
    }
}

/// The dense weights the `sgd` solver may learn: it holds several copies of them while training
/// (weights, AdaGrad sums, the best epoch's), so past 2 GiB it would need ten or more.
const MAX_GRAPH_BYTES: u64 = (1 << 31) - 1;

/// Whether the `sgd` solver's dense `buckets` × `classes` weights (plus the IDF row) stay within
/// [`MAX_GRAPH_BYTES`]; if not, an error naming the sizes and the buckets that would fit.
fn dense_servable(buckets: u32, classes: usize) -> Result<()> {
    let floats = u64::from(buckets) * (classes as u64 + 1);
    // Headroom for the bias, the graph and the protobuf framing.
    let bytes = floats * 4 + (1 << 20);
    if bytes <= MAX_GRAPH_BYTES {
        return Ok(());
    }
    let fits = MAX_GRAPH_BYTES.saturating_sub(1 << 20) / 4 / (classes as u64 + 1);
    let suggestion = if fits >= 2 { 1u64 << fits.ilog2() } else { 0 };
    Err(Error::config(
        "--buckets",
        format!(
            "the sgd solver's lexical model of {buckets} buckets × {classes} classes needs {:.1} GiB of dense \
             weights, past the 2 GiB it learns densely (several copies while training); with {classes} classes at \
             most {suggestion} buckets fit (--buckets {suggestion}, training.lexical.featurizer.buckets), or use \
             the svm solver, whose weights are sparse",
            bytes as f64 / f64::from(1u32 << 30)
        ),
    ))
}

/// What a featurized training row holds at the peak of a lexical fit, in bytes: per feature, its
/// bag's id and count and the solver's compact id and value; per class, its dual variables (three
/// copies while a C is chosen); per row, its text, label and the vectors' headers and allocations
/// (with the allocator's rounding: 18 rather than 16 per feature). Checked against measured peaks
/// by `bench/rows_scaling.py --memory-budget-mib` (300,000 PriceRunner rows at 1,024 MiB: a peak of
/// 1,029 MiB at 16 and 256).
const ROW_BYTES_PER_FEATURE: u64 = 18;
const ROW_BYTES_PER_CLASS: u64 = 12;
const ROW_BYTES: u64 = 384;
/// What a fit holds beyond its rows and what the process held before it: the model's IDF and
/// weights, the exported graph, ONNX Runtime's session for parity and the test figures.
const FIT_OVERHEAD_MIB: u64 = 256;
/// Rows past which featurizing shows a progress bar (about 5 s at 2 cores).
const FEATURIZE_PROGRESS_ROWS: usize = 100_000;
/// Rows featurized per parallel task (one progress step each).
const FEATURIZE_CHUNK: usize = 1024;
/// Texts whose features are counted to size a row.
const SIZING_SAMPLE: usize = 2000;

/// The process's resident memory in MiB (Linux; None elsewhere).
fn resident_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// The rows of `data` a lexical fit of `classes` classes can hold within `budget_mib`, counted
/// from the features of a sample of the texts and what the process holds already: None when every
/// row fits; an error naming the budget that would hold enough rows to train when too few fit.
fn rows_within_budget(
    data: &LabeledData,
    featurizer: &FeaturizerSettings,
    classes: usize,
    budget_mib: u64,
) -> Result<Option<usize>> {
    let featurize = Featurizer::new(featurizer.clone());
    let sample: Vec<&String> = data.texts.iter().step_by((data.len() / SIZING_SAMPLE).max(1)).collect();
    let features: usize = sample.par_iter().map(|t| featurize.features(t).len()).sum();
    let per_feature = ROW_BYTES_PER_FEATURE * (features as u64).div_ceil(sample.len().max(1) as u64);
    let per_row = ROW_BYTES + per_feature + ROW_BYTES_PER_CLASS * classes as u64;
    let held = resident_mib().unwrap_or(0) + FIT_OVERHEAD_MIB;
    let rows = (budget_mib.saturating_sub(held) << 20) / per_row;
    if rows as usize >= data.len() {
        return Ok(None);
    }
    let least = (20 * classes) as u64;
    if rows < least {
        return Err(Error::config(
            "--memory-budget-mib",
            format!(
                "{budget_mib} MiB holds {rows} rows of about {per_row} bytes beside the {held} MiB the process and \
                 the model take: too few to train {classes} classes; {} MiB would hold {least}",
                held + (least * per_row).div_ceil(1 << 20)
            ),
        ));
    }
    Ok(Some(rows as usize))
}

/// Trains, exports and checks a lexical model.
pub fn fit_lexical(job: LexicalJob<'_>) -> Result<Candidate> {
    let started = Instant::now();
    let settings = &job.settings;
    if settings.featurizer.buckets < 2 || settings.featurizer.word_ngrams.1 < settings.featurizer.word_ngrams.0 {
        return Err(Error::config("lexical", "featurizer needs at least 2 buckets and a valid word n-gram range"));
    }
    // A memory budget the rows would pass: a stratified sample of them that fits.
    let sampled;
    let (data, sampled_from) = match settings.memory_budget_mib {
        Some(mib) => {
            let classes = job
                .labels
                .as_ref()
                .map_or_else(|| job.data.labels.iter().collect::<std::collections::HashSet<_>>().len(), Vec::len);
            match rows_within_budget(job.data, &settings.featurizer, classes, mib)? {
                Some(rows) => {
                    sampled = job.data.stratified_sample(rows, settings.seed);
                    tracing::warn!(
                        budget_mib = mib,
                        rows = sampled.len(),
                        of = job.data.len(),
                        "the memory budget holds a stratified sample of the rows: training on it"
                    );
                    (&sampled, Some(job.data.len()))
                }
                None => (job.data, None),
            }
        }
        None => (job.data, None),
    };
    let multi_label = data.head == Head::MultiLabel;
    if multi_label && (settings.solver == LexicalSolver::Sgd || settings.folds > 1) {
        return Err(Error::config(
            "lexical",
            "several labels per row train with the svm solver on a validation split: drop --solver sgd and --folds",
        ));
    }
    let (labels, y, split) =
        prepare_data(data, job.labels.as_deref(), &job.source, job.split, settings.seed, job.stable_split)?;
    // Multi-label: each row's classes, which the fit reads through the row's own index.
    let sets = match crate::eval::truth_of(&labels, data, &job.source.file)? {
        crate::eval::Truth::Sets(sets) => Some(sets),
        crate::eval::Truth::Classes(_) => None,
    };
    let row_ids: Vec<usize> = if sets.is_some() { (0..data.len()).collect() } else { Vec::new() };
    if settings.solver == LexicalSolver::Sgd && (settings.refit || settings.folds > 1) {
        return Err(Error::config("lexical", "--refit and --folds need the svm solver"));
    }
    // Refused now rather than after training: a graph ONNX Runtime could not load.
    if settings.solver == LexicalSolver::Sgd {
        dense_servable(settings.featurizer.buckets, labels.len())?;
    }
    tracing::info!(
        rows = data.len(),
        train = split.train.len(),
        validation = split.validation.len(),
        test = split.test.len(),
        classes = labels.len(),
        buckets = settings.featurizer.buckets,
        folds = settings.folds,
        refit = settings.refit,
        norms = ?settings.norms,
        "training lexical classifier"
    );
    let taxonomy = data.taxonomy(&labels);
    // A label tree over the top-level categories, where there are several and fewer than classes.
    let groups = taxonomy
        .as_ref()
        .and_then(|t| t.levels.first())
        .filter(|top| settings.label_tree && settings.solver == LexicalSolver::Svm && top.nodes.len() > 1)
        .filter(|top| top.nodes.len() < labels.len())
        .map(|top| top.of_class.clone());
    if let Some(groups) = &groups {
        let count = groups.iter().max().map_or(0, |&g| g + 1);
        tracing::info!(groups = count, classes = labels.len(), "lexical label tree: top-level categories, then leaves");
    }
    let train_started = Instant::now();
    // One fit per normalisation tried; the best validation (or out-of-fold) macro-F1 wins.
    // The rows' feature counts (for the parity batch) rather than their features: a norm's
    // features are freed before the next is tried, and the few rows needed later are featurized
    // again.
    let mut best: Option<(f64, FeaturizerSettings, Vec<usize>, LexicalFit)> = None;
    let mut norms = if settings.norms.is_empty() { vec![settings.featurizer.norm] } else { settings.norms.clone() };
    let fit_norm = |norm, settings: &LexicalSettings, warm: Option<&[Vec<f32>]>| {
        let tried = FeaturizerSettings { norm, ..settings.featurizer.clone() };
        let featurizer = Featurizer::new(tried.clone());
        let bar = crate::common::progress_bar(
            settings.show_progress && data.len() >= FEATURIZE_PROGRESS_ROWS,
            data.len() as u64,
            "featurize".into(),
        );
        // Chunks of rows, so the bar is touched once per chunk rather than once per row.
        let features: Vec<Bag> = data
            .texts
            .par_chunks(FEATURIZE_CHUNK)
            .flat_map_iter(|chunk| {
                bar.inc(chunk.len() as u64);
                chunk.iter().map(|t| featurizer.features(t))
            })
            .collect();
        bar.finish_and_clear();
        let settings = LexicalSettings { featurizer: tried.clone(), ..settings.clone() };
        let targets = match (&sets, &groups) {
            (Some(sets), _) => Targets::Sets(sets),
            (None, Some(groups)) => Targets::Tree(groups),
            (None, None) => Targets::Classes,
        };
        let y = if sets.is_some() { &row_ids } else { &y };
        let rows = Rows { features: &features, y, split: &split, data, classes: labels.len(), targets };
        let fit = fit_rows(&rows, &settings, warm);
        let score = fit.history.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        tracing::info!(?norm, validation_macro_f1 = format!("{score:.4}"), "lexical normalisation tried");
        (score, tried, features.iter().map(Bag::len).collect::<Vec<usize>>(), fit)
    };
    let walks = settings.solver == LexicalSolver::Svm && settings.folds <= 1 && settings.c_search.walks(labels.len());
    if walks && norms.len() > 1 {
        // The normalisation is chosen at the walk's first C alone, then walked with.
        let mut grid = if settings.c_grid.is_empty() { vec![1.0] } else { settings.c_grid.clone() };
        grid.sort_by(f32::total_cmp);
        let at =
            LexicalSettings { c_grid: vec![grid[super::model::walk_start(&grid)]], refit: false, ..settings.clone() };
        let mut picked: Option<(f64, FeatureNorm, Option<DualVariables>)> = None;
        for &norm in &norms {
            let (score, _, _, fit) = fit_norm(norm, &at, None);
            if picked.as_ref().is_none_or(|p| score > p.0) {
                picked = Some((score, norm, fit.alphas));
            }
        }
        let (_, norm, alphas) = picked.expect("at least two normalisations are tried");
        // The walk starts from the pick's solution at its first C.
        let tried = fit_norm(norm, settings, alphas.as_deref());
        best = Some(tried);
        norms.clear();
    }
    for norm in norms {
        let tried = fit_norm(norm, settings, None);
        if best.as_ref().is_none_or(|b| tried.0 > b.0) {
            best = Some(tried);
        }
    }
    let (_, chosen, lengths, fit) = best.expect("at least one normalisation is tried");
    let settings = &LexicalSettings { featurizer: chosen, ..settings.clone() };
    let featurizer = Featurizer::new(settings.featurizer.clone());
    let LexicalFit { model, measured, history, svm, trained_on, thresholds, .. } = fit;
    let train_seconds = train_started.elapsed().as_secs_f64();
    let best_epoch = history.iter().enumerate().fold(0, |b, (i, f)| if *f > history[b] { i } else { b }) + 1;
    let best_f1 = history.get(best_epoch - 1).copied().unwrap_or(0.0);
    tracing::info!(
        epochs = history.len(),
        best_epoch,
        validation_macro_f1 = format!("{best_f1:.4}"),
        trained_on,
        seconds = format!("{train_seconds:.1}"),
        "lexical training finished"
    );

    let weights = model.weights.stats();
    tracing::info!(
        features = weights.features,
        weights = weights.nonzeros,
        width = weights.width,
        dropped_by_cap = weights.dropped,
        "lexical weights"
    );
    let onnx = model.export(
        data.head,
        taxonomy.as_ref(),
        &[("prodcat.model_type", Kind::Lexical.name().into()), ("prodcat.labels", labels.join("\n"))],
    );
    if onnx.data.is_some() {
        tracing::info!(
            gib = format!("{:.2}", onnx.bytes() as f64 / f64::from(1u32 << 30)),
            "the lexical graph passes protobuf's 2 GiB: its weights go to model.onnx.data (ONNX external data)"
        );
    }
    let card = ModelCard {
        name: job.name.clone(),
        version: String::new(),
        model: ModelKind::Lexical(LexicalInfo {
            featurizer: settings.featurizer.clone(),
            settings: settings.clone(),
            epochs_run: history.len(),
            validation_macro_f1: history.clone(),
            train_seconds,
            svm,
            weights: Some(weights),
            label_tree: model.tree.as_ref().map(|tree| LabelTreeInfo {
                groups: tree.groups(),
                svm: tree.svm,
                weights: tree.weights.stats(),
            }),
        }),
        head: data.head,
        taxonomy,
        label_thresholds: thresholds,
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        prodcat_version: env!("CARGO_PKG_VERSION").into(),
        max_length: settings.featurizer.max_features,
        num_labels: labels.len(),
        data: Some(DataInfo::describe(&job.source, data, &split)),
        training: Some(TrainingInfo {
            seed: settings.seed,
            epochs_requested: settings.epochs,
            epochs_run: history.len(),
            best_epoch,
            batch_size: 1,
            learning_rate: f64::from(settings.learning_rate),
            class_weights: settings.class_weights,
            best_validation_macro_f1: best_f1,
            samples_per_second: (split.train.len() * history.len()) as f64 / train_seconds.max(1e-9),
            wall_seconds: 0.0,
            validation_macro_f1: history.clone(),
            split: job.split,
            stable_split: job.stable_split,
            refit_rows: (trained_on > split.train.len()).then_some(trained_on),
            folds: (settings.folds > 1).then_some(settings.folds),
            temperature: svm.map(|c| c.temperature),
            test_before_final_fit: measured.is_some(),
            sampled_from,
        }),
        test_metrics: None,
        parity: None,
        onnx: None,
    };

    // The model that learned from the test rows too is published with the test figures of the
    // one before it (train + validation, the same choices).
    let measured_test = measured.as_ref().filter(|_| !split.test.is_empty()).map(|measured| {
        let logits: Vec<f32> =
            split.test.iter().flat_map(|&r| measured.logits(&featurizer.features(&data.texts[r]))).collect();
        let output = crate::eval::output_of_logits(card.head, logits, labels.len());
        let truth = match &sets {
            Some(sets) => crate::eval::Truth::Sets(split.test.iter().map(|&r| sets[r].clone()).collect()),
            None => crate::eval::Truth::Classes(split.test.iter().map(|&r| y[r]).collect()),
        };
        crate::eval::score_output(&card, &labels, output, vec![Kind::Lexical; split.test.len()], truth)
    });
    if measured_test.is_some() {
        tracing::info!(
            rows = trained_on,
            test = split.test.len(),
            "the published model learned from the test rows too; its test figures are the model's before"
        );
    }

    // Parity: Rust logits vs ONNX Runtime on one padded batch of mixed lengths.
    let rows = parity_rows(&split, &lengths, 32);
    let prepared: Vec<_> = rows.iter().map(|&r| featurizer.prepare(&data.texts[r])).collect();
    let batch = PaddedBatch::from_tokens(prepared.iter());
    let reference: Vec<f32> = rows.iter().flat_map(|&r| model.logits(&featurizer.features(&data.texts[r]))).collect();
    let texts: Vec<&str> = data.texts.iter().map(String::as_str).collect();
    stage_graph(GraphExport {
        registry: &job.registry,
        name: &job.name,
        onnx,
        inputs: vec![names::INPUT_IDS.into(), names::ATTENTION_MASK.into()],
        labels: &labels,
        data,
        write_files: &|_: &Path| Ok(()),
        card,
        preprocess: Box::new(featurizer),
        stage: Kind::Lexical,
        limits: super::SERVE_LIMITS,
        session: &job.session,
        parity: ParityBatch { batch, reference, tolerance: job.parity_tolerance },
        split: &split,
        texts: &texts,
        y: &y,
        sets: sets.as_deref(),
        measured_test,
        started,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dense_graph_past_two_gib_is_refused_with_the_buckets_that_fit() {
        // PriceRunner's 10 categories at the default 2^19 buckets: 22 MB.
        assert!(dense_servable(1 << 19, 10).is_ok());
        // About 1,023 classes is where the default buckets stop fitting.
        assert!(dense_servable(1 << 19, 1000).is_ok());
        let err = dense_servable(1 << 19, 1100).unwrap_err().to_string();
        assert!(err.contains("524288 buckets × 1100 classes") && err.contains("2 GiB"), "{err}");
        assert!(err.contains("--buckets 262144"), "{err}");
        assert!(dense_servable(1 << 18, 1100).is_ok(), "the suggested buckets fit");
        // 2,115 PriceRunner product leaves: 2^17 buckets fit, 2^18 do not.
        assert!(dense_servable(1 << 17, 2115).is_ok());
        assert!(dense_servable(1 << 18, 2115).unwrap_err().to_string().contains("--buckets 131072"));
    }
}
