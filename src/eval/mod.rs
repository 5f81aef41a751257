//! Evaluating a served model on labeled data: metrics, a terminal table, `metrics.json` and plots.

pub mod calibration;
pub mod cascade;
pub mod metrics;
pub mod plots;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub use metrics::{ClassificationReport, macro_f1};

use crate::common::{BatchLimits, Head, Kind};
use crate::error::{Error, IoContext, Result};
use crate::serve::{Model, ModelOutput, score_texts};

/// Maps label strings to the model's class ids; a label the model does not know is an error
/// naming the label, the row and where it came from.
pub fn label_ids(model_labels: &[String], labels: &[String], origin: &str) -> Result<Vec<usize>> {
    let id = class_id_of(model_labels, origin);
    labels.iter().enumerate().map(|(row, label)| id(row, label)).collect()
}

/// The class id of a row's label among `model_labels`, or the error naming it.
fn class_id_of<'a>(model_labels: &'a [String], origin: &'a str) -> impl Fn(usize, &str) -> Result<usize> + 'a {
    let index: HashMap<&str, usize> = model_labels.iter().enumerate().map(|(i, l)| (l.as_str(), i)).collect();
    move |row, label| {
        index.get(label).copied().ok_or_else(|| {
            Error::Label(format!(
                "{origin}, row {}: label `{label}` is not one the model knows ({} labels: {})",
                row + 1,
                model_labels.len(),
                model_labels.join(", ")
            ))
        })
    }
}

/// The true labels of `data` as the model's class ids: a class per row, or each multi-label row's
/// set. Labels the model does not know are errors as in [`label_ids`].
pub fn truth_of(model_labels: &[String], data: &crate::data::LabeledData, origin: &str) -> Result<Truth> {
    match data.head {
        Head::SingleLabel => label_ids(model_labels, &data.labels, origin).map(Truth::Classes),
        Head::MultiLabel => {
            let id = class_id_of(model_labels, origin);
            let sets = (0..data.len())
                .map(|row| {
                    let mut set = data
                        .labels_of(row)
                        .into_iter()
                        .map(|l| id(row, l).map(|c| c as u32))
                        .collect::<Result<Vec<_>>>()?;
                    set.sort_unstable();
                    Ok(set)
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Truth::Sets(sets))
        }
    }
}

/// What evaluated rows truly are: a class per row, or a multi-label row's classes (sorted).
#[derive(Debug, Clone, PartialEq)]
pub enum Truth {
    Classes(Vec<usize>),
    Sets(Vec<Vec<u32>>),
}

impl From<Vec<usize>> for Truth {
    fn from(y: Vec<usize>) -> Self {
        Truth::Classes(y)
    }
}

impl Truth {
    /// Whether row `row` is of class `class`.
    pub fn has(&self, row: usize, class: usize) -> bool {
        match self {
            Truth::Classes(y) => y[row] == class,
            Truth::Sets(sets) => sets[row].contains(&(class as u32)),
        }
    }
}

/// The output of rows of `logits` (`classes` each) as a graph of `head` gives it (for a model
/// evaluated through its trainer's forward pass).
pub fn output_of_logits(head: Head, logits: Vec<f32>, classes: usize) -> ModelOutput {
    let width = classes.max(1);
    let mut probabilities = vec![0f32; logits.len()];
    for (row, probs) in logits.chunks_exact(width).zip(probabilities.chunks_exact_mut(width)) {
        match head {
            Head::SingleLabel => calibration::softmax(row, probs),
            Head::MultiLabel => probs.iter_mut().zip(row).for_each(|(p, &z)| *p = 1.0 / (1.0 + (-z).exp())),
        }
    }
    ModelOutput { rows: logits.len() / width, classes, logits, probabilities }
}

/// Predictions and the report for `texts` with known truth.
pub struct Evaluation {
    pub report: ClassificationReport,
    /// Each row's class (multi-label: the first of its set; [`Self::truth`] has them all).
    pub y_true: Vec<usize>,
    pub truth: Truth,
    pub output: ModelOutput,
    /// Which stage labeled each row (all the same except for cascades).
    pub stages: Vec<Kind>,
}

/// Runs `model` over `texts` (token-budget batches: the model's own limits, or `limits`) and
/// scores it against `y_true`.
pub fn evaluate(
    model: &dyn Model,
    texts: &[&str],
    truth: impl Into<Truth>,
    limits: Option<BatchLimits>,
) -> Result<Evaluation> {
    let truth = truth.into();
    let card = model.card();
    match (card.head, &truth) {
        (Head::SingleLabel, Truth::Classes(_)) | (Head::MultiLabel, Truth::Sets(_)) => {}
        (head, _) => {
            return Err(Error::Label(format!(
                "{} is a {} model: its rows are labeled the other way (give the labels as it was trained on them)",
                model.id(),
                head.name()
            )));
        }
    }
    let scored = score_texts(model, texts, limits)?;
    Ok(score_output(card, model.labels(), scored.output, scored.stages, truth))
}

/// The report for already computed model outputs of the model of `card` (its head, taxonomy and
/// thresholds).
pub fn score_output(
    card: &crate::registry::ModelCard,
    labels: &[String],
    output: ModelOutput,
    stages: Vec<Kind>,
    truth: Truth,
) -> Evaluation {
    let (report, y_true) = match (card.head, &truth) {
        (Head::MultiLabel, Truth::Sets(sets)) => {
            let thresholds = card.label_thresholds.as_deref();
            let predicted: Vec<Vec<u32>> = output
                .probabilities
                .chunks(labels.len().max(1))
                .map(|row| {
                    let mut set: Vec<u32> =
                        crate::serve::labels_above(row, thresholds).into_iter().map(|(c, _)| c).collect();
                    set.sort_unstable();
                    set
                })
                .collect();
            let report =
                ClassificationReport::compute_multilabel(labels, sets, &predicted, Some(&output.probabilities));
            (report, sets.iter().map(|s| s.first().map_or(0, |&c| c as usize)).collect())
        }
        (_, truth) => {
            let y_true: Vec<usize> = match truth {
                Truth::Classes(y) => y.clone(),
                Truth::Sets(sets) => sets.iter().map(|s| s.first().map_or(0, |&c| c as usize)).collect(),
            };
            let y_pred: Vec<usize> = (0..output.rows).map(|i| output.argmax(i).0).collect();
            let mut report = ClassificationReport::compute(labels, &y_true, &y_pred, Some(&output.probabilities));
            if let Some(taxonomy) = &card.taxonomy {
                report = report.with_taxonomy(taxonomy, &y_true, &y_pred);
            }
            (report, y_true)
        }
    };
    Evaluation { report, y_true, truth, output, stages }
}

/// Files written by [`write_report`].
#[derive(Debug, Clone)]
pub struct ReportFiles {
    pub metrics_json: PathBuf,
    /// Absent for a multi-label model (its rows have no single true and predicted class).
    pub confusion_png: Option<PathBuf>,
    pub roc_png: PathBuf,
    /// A taxonomy model's top-level confusion matrix.
    pub level_confusion_png: Option<PathBuf>,
}

/// Writes `metrics.json`, `confusion_matrix.png` and `roc_curves.png` into `dir`.
pub fn write_report(dir: &Path, evaluation: &Evaluation, extra: serde_json::Value) -> Result<ReportFiles> {
    std::fs::create_dir_all(dir).at(dir)?;
    let mut files = ReportFiles {
        metrics_json: dir.join("metrics.json"),
        confusion_png: None,
        roc_png: dir.join("roc_curves.png"),
        level_confusion_png: None,
    };
    let mut json = serde_json::to_value(&evaluation.report)
        .map_err(|source| Error::Json { path: files.metrics_json.clone(), source })?;
    if let (Some(obj), serde_json::Value::Object(extra)) = (json.as_object_mut(), extra) {
        obj.extend(extra);
    }
    let text = serde_json::to_string_pretty(&json)
        .map_err(|source| Error::Json { path: files.metrics_json.clone(), source })?;
    std::fs::write(&files.metrics_json, text + "\n").at(&files.metrics_json)?;
    let report = &evaluation.report;
    if report.multilabel.is_none() {
        let path = dir.join("confusion_matrix.png");
        confusion_plot(report, "", &path)?;
        files.confusion_png = Some(path);
    }
    // The top level's confusions: where a taxonomy model mistakes one category for another.
    if let Some(top) = report.levels.first() {
        let path = dir.join("confusion_matrix_level1.png");
        confusion_plot(top, "Top-level categories: ", &path)?;
        files.level_confusion_png = Some(path);
    }
    let (shown, caption) = roc_classes(report);
    plots::roc_curves(report, &evaluation.truth, &evaluation.output.probabilities, &shown, &caption, &files.roc_png)?;
    Ok(files)
}

/// The confusion heat map of `report`: every cell of a small label set, else the classes of the
/// most frequent confusions.
fn confusion_plot(report: &ClassificationReport, title: &str, path: &Path) -> Result<()> {
    let classes = report.labels.len();
    if classes <= READABLE_CLASSES {
        let caption = format!("{title}Confusion matrix (rows: true, columns: predicted)");
        plots::confusion_heatmap(&report.labels, &report.dense_confusion(), &caption, path)
    } else {
        // The classes of the most frequent confusions, and only their cells.
        let mut shown: Vec<usize> = Vec::new();
        for [t, p, _] in report.confused_pairs(usize::MAX) {
            for c in [t, p] {
                if shown.len() < READABLE_CLASSES / 2 && !shown.contains(&c) {
                    shown.push(c);
                }
            }
        }
        let index = |c: usize| shown.iter().position(|&s| s == c);
        let mut matrix = vec![vec![0; shown.len()]; shown.len()];
        for &[t, p, count] in &report.confusion {
            if let (Some(t), Some(p)) = (index(t), index(p)) {
                matrix[t][p] = count;
            }
        }
        let labels: Vec<String> = shown.iter().map(|&c| report.labels[c].clone()).collect();
        let caption =
            format!("{title}Most confused {} of {classes} classes (rows: true, columns: predicted)", shown.len());
        plots::confusion_heatmap(&labels, &matrix, &caption, path)
    }
}

/// Label sets up to this size are reported whole (every class's row, the full confusion matrix);
/// larger ones by their worst and best classes and most frequent confusions.
pub const READABLE_CLASSES: usize = 30;

/// The classes whose ROC curves are drawn: every class of a small label set, else the five of
/// lowest and the five of highest AUC; and the plot's caption.
fn roc_classes(report: &ClassificationReport) -> (Vec<usize>, String) {
    if report.labels.len() <= 10 {
        return ((0..report.labels.len()).collect(), "ROC curves (one vs rest)".into());
    }
    let mut ranked: Vec<(usize, f64)> =
        report.per_class.iter().enumerate().filter_map(|(c, m)| m.roc_auc.map(|a| (c, a))).collect();
    ranked.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    let mut shown: Vec<usize> = ranked.iter().take(5).map(|r| r.0).collect();
    shown.extend(ranked.iter().rev().take(5).map(|r| r.0).filter(|c| !shown.contains(c)).collect::<Vec<_>>());
    (shown, format!("ROC curves (one vs rest): the 5 lowest and 5 highest AUC of {} classes", report.labels.len()))
}

/// The per-class table and the confusion matrix, as printed on the terminal. Past
/// [`READABLE_CLASSES`] classes: the ten classes of lowest and the ten of highest F1 (classes with
/// test rows), and the twenty most frequent confusions instead of the matrix.
pub fn format_report(report: &ClassificationReport) -> String {
    let large = report.labels.len() > READABLE_CLASSES;
    let mut shown: Vec<usize> = (0..report.per_class.len()).collect();
    if large {
        shown.retain(|&c| report.per_class[c].support > 0);
        shown.sort_by(|&a, &b| report.per_class[a].f1.total_cmp(&report.per_class[b].f1).then(a.cmp(&b)));
        if shown.len() > 20 {
            shown.drain(10..shown.len() - 10);
        }
    }
    let width = shown.iter().map(|&c| report.labels[c].chars().count()).max().unwrap_or(5).clamp(5, 32);
    let mut s = String::new();
    if large {
        let _ = writeln!(
            s,
            "{} classes: the 10 of lowest and the 10 of highest F1 shown (every class in metrics.json)",
            report.labels.len()
        );
    }
    let _ = writeln!(
        s,
        "{:<width$}  {:>9}  {:>9}  {:>9}  {:>9}  {:>7}",
        "label", "precision", "recall", "f1", "roc_auc", "support"
    );
    for c in shown.iter().map(|&c| &report.per_class[c]) {
        let auc = c.roc_auc.map(|a| format!("{a:.4}")).unwrap_or_else(|| "-".into());
        let _ = writeln!(
            s,
            "{:<width$}  {:>9.4}  {:>9.4}  {:>9.4}  {:>9}  {:>7}",
            if large { plots::clip(&c.label, width) } else { c.label.clone() },
            c.precision,
            c.recall,
            c.f1,
            auc,
            c.support
        );
    }
    let auc = report.macro_roc_auc.map(|a| format!("{a:.4}")).unwrap_or_else(|| "-".into());
    let _ = writeln!(
        s,
        "{:<width$}  {:>9.4}  {:>9.4}  {:>9.4}  {:>9}  {:>7}",
        "macro avg", report.macro_precision, report.macro_recall, report.macro_f1, auc, report.rows
    );
    let _ = writeln!(s, "{:<width$}  {:>9}  {:>9}  {:>9.4}", "weighted f1", "", "", report.weighted_f1);
    if let Some(m) = &report.multilabel {
        // Each label's row is its binary decision; there is no confusion matrix of label sets.
        for (name, value) in
            [("micro f1", m.micro_f1), ("subset accuracy", m.subset_accuracy), ("hamming loss", m.hamming_loss)]
        {
            let _ = writeln!(s, "{name:<width$}  {:>9}  {:>9}  {value:>9.4}", "", "");
        }
        return s;
    }
    let _ = writeln!(s, "{:<width$}  {:>9}  {:>9}  {:>9.4}", "accuracy", "", "", report.accuracy);
    for (k, recall) in report.top_k_recall.iter().filter(|(k, _)| **k > 1) {
        let _ = writeln!(s, "{:<width$}  {:>9}  {:>9}  {:>9.4}", format!("top-{k} recall"), "", "", recall);
    }
    if let Some(h) = report.hierarchical_f1 {
        let _ = writeln!(s, "{:<width$}  {:>9}  {:>9}  {:>9.4}", "hierarchical f1", "", "", h);
    }
    if large {
        let _ = writeln!(s, "\nmost frequent confusions (true → predicted: rows)");
        for [t, p, count] in report.confused_pairs(20) {
            let _ = writeln!(s, "{} → {}: {count}", report.labels[t], report.labels[p]);
        }
    } else {
        let _ = writeln!(s, "\nconfusion matrix (rows: true, columns: predicted; columns in row order)");
        let matrix = report.dense_confusion();
        let cell = report.confusion.iter().map(|c| c[2]).max().map(|m| m.to_string().len()).unwrap_or(1).max(3);
        for (label, row) in report.labels.iter().zip(&matrix) {
            let cells: Vec<String> = row.iter().map(|v| format!("{v:>cell$}")).collect();
            let _ = writeln!(s, "{label:<width$}  {}", cells.join(" "));
        }
    }
    for (i, level) in report.levels.iter().enumerate() {
        let _ = writeln!(s, "\nlevel {} of the taxonomy ({} categories)", i + 1, level.labels.len());
        s.push_str(&format_report(level));
    }
    s
}

/// The `level N: macro_f1=… accuracy=…` lines of a taxonomy model's levels above the leaves (none
/// for flat labels): what `prodcat eval` and `train` print before the leaves' line.
pub fn level_lines(levels: &[crate::registry::card::LevelMetrics]) -> String {
    levels
        .iter()
        .map(|l| format!("level {}: macro_f1={:.4} accuracy={:.4}\n", l.level, l.macro_f1, l.accuracy))
        .collect()
}
