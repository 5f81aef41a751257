//! A new version on its way to the registry, whatever trained it: the one staging path of a
//! single-graph model (files into a staging folder, card, the trainer-vs-ONNX-Runtime parity
//! check, test-split metrics through the exported graph), and the [`Candidate`] it yields, which
//! the learner's gate, `auto` and the CLI publish or discard.
//!
//! Layer: above `serve` and `eval` (it opens the staged graph and evaluates it), below the
//! trainers (`train`, `lexical`) that call it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::common::{BatchLimits, Kind, Taxonomy, names};
use crate::data::{LabeledData, SplitAssignment};
use crate::error::{Error, Result};
use crate::eval::{Evaluation, evaluate};
use crate::onnx::graph::{OPSET, OnnxFiles};
use crate::registry::card::{OnnxInfo, ParityInfo};
use crate::registry::replay::{PER_CLASS, Replay};
use crate::registry::{ModelCard, ModelRegistry, ModelVersion, StagedVersion, files, write_labels};
use crate::serve::{Model, Preprocess, SessionSettings, SingleModel};
use crate::tokenize::PaddedBatch;

/// A trained, exported and checked model waiting to be published.
pub struct Candidate {
    pub registry: ModelRegistry,
    pub name: String,
    pub staged: StagedVersion,
    pub card: ModelCard,
    /// Test-split evaluation through ONNX Runtime (absent when the test split is empty).
    pub test: Option<Evaluation>,
    /// Texts of the test split, in the order of `test` (for gating against another model).
    pub test_texts: Vec<String>,
}

impl Candidate {
    /// Publishes the candidate as the next version; `make_current` also points `current` at it.
    pub fn publish(mut self, make_current: bool) -> Result<PathBuf> {
        let version = self.registry.reserve_version(&self.staged)?;
        self.card.version = version.clone();
        let card_path = self.staged.dir.join(files::CARD);
        if let Err(e) = self.card.write(&card_path) {
            let _ = std::fs::remove_dir(self.registry.model_dir(&self.name).join(&version));
            return Err(e);
        }
        self.registry.publish(self.staged, &version, make_current)
    }
}

/// Largest |a − b| over two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Up to `n` rows for the parity check: held-out rows when there are any (a run on every row,
/// cross-validated with no test split, checks training rows rather than none), evenly spaced over
/// their lengths so the batch mixes short and long inputs and exercises the padding mask.
pub fn parity_rows(split: &SplitAssignment, lengths: &[usize], n: usize) -> Vec<usize> {
    let pool = [&split.test, &split.validation, &split.train].into_iter().find(|s| !s.is_empty());
    let mut sorted = pool.cloned().unwrap_or_default();
    sorted.sort_by_key(|&r| lengths[r]);
    if sorted.len() <= n {
        return sorted;
    }
    (0..n).map(|i| sorted[i * (sorted.len() - 1) / (n - 1).max(1)]).collect()
}

/// The trainer's own forward pass on one padded batch, which the exported graph must reproduce.
pub struct ParityBatch {
    pub batch: PaddedBatch,
    /// `[rows, classes]` logits, row-major, as the trainer computes them.
    pub reference: Vec<f32>,
    pub tolerance: f32,
}

/// Everything that makes a staged single-graph version: the exported graph and the files beside
/// it, its card (without parity, test metrics and ONNX description, which staging fills in), how
/// it is served, the parity batch, and the split whose test rows it is evaluated on.
pub struct GraphExport<'a> {
    pub registry: &'a Path,
    pub name: &'a str,
    pub onnx: OnnxFiles,
    /// The graph's inputs (see [`names`]), recorded in the card.
    pub inputs: Vec<String>,
    pub labels: &'a [String],
    /// The training rows a replay sample is taken from (`replay.jsonl`).
    pub data: &'a LabeledData,
    /// Writes the kind's other files (a tokenizer) into the staging folder.
    pub write_files: &'a dyn Fn(&Path) -> Result<()>,
    pub card: ModelCard,
    pub preprocess: Box<dyn Preprocess>,
    pub stage: Kind,
    pub limits: BatchLimits,
    pub session: &'a SessionSettings,
    pub parity: ParityBatch,
    pub split: &'a SplitAssignment,
    /// Every row's text and class id, indexed like `split`.
    pub texts: &'a [&'a str],
    pub y: &'a [usize],
    /// Multi-label: every row's classes (the test metrics are then over label sets).
    pub sets: Option<&'a [Vec<u32>]>,
    /// The test figures when they were measured before the final fit (which learned from the test
    /// rows too); `None`: the staged graph is evaluated on the test rows.
    pub measured_test: Option<Evaluation>,
    /// When training started (the card's wall seconds).
    pub started: Instant,
}

/// Stages a single-graph version: files, card, parity (refused past the tolerance: nothing is
/// left to publish), test metrics through ONNX Runtime, final card.
pub fn stage_graph(export: GraphExport<'_>) -> Result<Candidate> {
    let GraphExport {
        registry,
        name,
        onnx,
        inputs,
        labels,
        data,
        write_files,
        mut card,
        preprocess,
        stage,
        limits,
        session,
        parity,
        split,
        texts,
        y,
        sets,
        measured_test,
        started,
    } = export;
    let registry = ModelRegistry::new(registry);
    let staged = registry.stage(name)?;
    let dir = staged.dir.clone();
    onnx.write(&dir)?;
    write_labels(&dir.join(files::LABELS), labels)?;
    crate::registry::copy_taxonomy(&dir, &card, &dir)?;
    Replay::sample(data, PER_CLASS).write(&dir)?;
    write_files(&dir)?;
    let mut outputs: Vec<String> = vec![names::LOGITS.into(), names::PROBABILITIES.into()];
    let levels = card.taxonomy.as_ref().map_or(0, |t| t.levels.len());
    outputs.extend((1..=levels).map(names::level_probabilities));
    card.onnx =
        Some(OnnxInfo { opset: OPSET, precision: "fp32".into(), inputs, outputs, file_bytes: onnx.bytes() as u64 });
    card.write(&dir.join(files::CARD))?;

    let served = SingleModel::open(ModelVersion::at(&dir)?, preprocess, stage, limits, session)?;
    let ParityBatch { batch, reference, tolerance } = parity;
    let diff = max_abs_diff(&reference, &served.run(&batch)?.logits);
    let samples = batch.batch;
    tracing::info!(samples, max_abs_diff = diff, tolerance, kind = %stage, "parity check (trainer vs ONNX Runtime)");
    if diff > tolerance {
        return Err(Error::Parity { max_abs_diff: diff, tolerance });
    }
    card.parity = Some(ParityInfo { samples, max_abs_diff: diff, tolerance, passed: true });
    if let Some(taxonomy) = &card.taxonomy {
        check_level_outputs(&served, taxonomy, &batch)?;
    }

    let test = match measured_test {
        Some(evaluation) => {
            card.test_metrics = Some(evaluation.report.headline());
            Some(evaluation)
        }
        None => test_evaluation(&served, &mut card, split, texts, y, sets)?,
    };
    if let Some(training) = card.training.as_mut() {
        training.wall_seconds = started.elapsed().as_secs_f64();
    }
    card.write(&dir.join(files::CARD))?;
    let test_texts = split.test.iter().map(|&r| texts[r].to_string()).collect();
    Ok(Candidate { registry, name: name.to_string(), staged, card, test, test_texts })
}

/// Checks a taxonomy graph's `level{N}_probabilities` on `batch` against the sums of its own
/// probabilities by the card's tree: what a consumer of the graph alone reads must be the path
/// scores prodcat's outputs carry (to fp32 rounding: the sums run in fp32 in every precision, see
/// `onnx::half`).
pub fn check_level_outputs(served: &SingleModel, taxonomy: &Taxonomy, batch: &PaddedBatch) -> Result<()> {
    let mut outputs = vec![names::PROBABILITIES.to_string()];
    outputs.extend((1..=taxonomy.levels.len()).map(names::level_probabilities));
    let ran = served.session.run_outputs(batch, &outputs)?;
    let classes = served.labels.len();
    for (l, scores) in ran[1..].iter().enumerate() {
        let expected: Vec<f32> = ran[0].chunks(classes).flat_map(|row| taxonomy.level_scores(l, row)).collect();
        let diff = max_abs_diff(&expected, scores);
        if expected.len() != scores.len() || diff > 1e-5 {
            return Err(Error::Internal(format!(
                "the graph's {} differ from the sums of its probabilities by {diff:e}",
                names::level_probabilities(l + 1)
            )));
        }
    }
    Ok(())
}

/// Evaluates a staged model on the test split through ONNX Runtime and records the metrics in
/// `card` (nothing when the test split is empty).
pub fn test_evaluation(
    served: &dyn Model,
    card: &mut ModelCard,
    split: &SplitAssignment,
    texts: &[&str],
    y: &[usize],
    sets: Option<&[Vec<u32>]>,
) -> Result<Option<Evaluation>> {
    if split.test.is_empty() {
        return Ok(None);
    }
    let test_texts: Vec<&str> = split.test.iter().map(|&r| texts[r]).collect();
    let truth = match sets {
        Some(sets) => crate::eval::Truth::Sets(split.test.iter().map(|&r| sets[r].clone()).collect()),
        None => crate::eval::Truth::Classes(split.test.iter().map(|&r| y[r]).collect()),
    };
    let evaluation = evaluate(served, &test_texts, truth, None)?;
    card.test_metrics = Some(evaluation.report.headline());
    Ok(Some(evaluation))
}
