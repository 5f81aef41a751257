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
    let index: HashMap<&str, usize> = model_labels.iter().enumerate().map(|(i, l)| (l.as_str(), i)).collect();
    labels
        .iter()
        .enumerate()
        .map(|(row, label)| {
            index.get(label.as_str()).copied().ok_or_else(|| {
                Error::Label(format!(
                    "{origin}, row {}: label `{label}` is not one the model knows ({} labels: {})",
                    row + 1,
                    model_labels.len(),
                    model_labels.join(", ")
                ))
            })
        })
        .collect()
}

/// Predictions and the report for `texts` with known `y_true`.
pub struct Evaluation {
    pub report: ClassificationReport,
    pub y_true: Vec<usize>,
    pub output: ModelOutput,
    /// Which stage labeled each row (all the same except for cascades).
    pub stages: Vec<Kind>,
}

/// Runs `model` over `texts` (token-budget batches: the model's own limits, or `limits`) and
/// scores it against `y_true`.
pub fn evaluate(
    model: &dyn Model,
    texts: &[&str],
    y_true: Vec<usize>,
    limits: Option<BatchLimits>,
) -> Result<Evaluation> {
    let scored = score_texts(model, texts, limits)?;
    Ok(score_output(model.card().head, model.labels(), scored.output, scored.stages, y_true))
}

/// The report for already computed model outputs of a model with `head`.
pub fn score_output(
    head: Head,
    labels: &[String],
    output: ModelOutput,
    stages: Vec<Kind>,
    y_true: Vec<usize>,
) -> Evaluation {
    let y_pred: Vec<usize> = match head {
        Head::SingleLabel => (0..output.rows).map(|i| output.argmax(i).0).collect(),
    };
    let report = ClassificationReport::compute(labels, &y_true, &y_pred, Some(&output.probabilities));
    Evaluation { report, y_true, output, stages }
}

/// Files written by [`write_report`].
#[derive(Debug, Clone)]
pub struct ReportFiles {
    pub metrics_json: PathBuf,
    pub confusion_png: PathBuf,
    pub roc_png: PathBuf,
}

/// Writes `metrics.json`, `confusion_matrix.png` and `roc_curves.png` into `dir`.
pub fn write_report(dir: &Path, evaluation: &Evaluation, extra: serde_json::Value) -> Result<ReportFiles> {
    std::fs::create_dir_all(dir).at(dir)?;
    let files = ReportFiles {
        metrics_json: dir.join("metrics.json"),
        confusion_png: dir.join("confusion_matrix.png"),
        roc_png: dir.join("roc_curves.png"),
    };
    let mut json = serde_json::to_value(&evaluation.report)
        .map_err(|source| Error::Json { path: files.metrics_json.clone(), source })?;
    if let (Some(obj), serde_json::Value::Object(extra)) = (json.as_object_mut(), extra) {
        obj.extend(extra);
    }
    let text = serde_json::to_string_pretty(&json)
        .map_err(|source| Error::Json { path: files.metrics_json.clone(), source })?;
    std::fs::write(&files.metrics_json, text + "\n").at(&files.metrics_json)?;
    plots::confusion_heatmap(&evaluation.report, &files.confusion_png)?;
    plots::roc_curves(&evaluation.report, &evaluation.y_true, &evaluation.output.probabilities, &files.roc_png)?;
    Ok(files)
}

/// The per-class table and the confusion matrix, as printed on the terminal.
pub fn format_report(report: &ClassificationReport) -> String {
    let width = report.labels.iter().map(|l| l.chars().count()).max().unwrap_or(5).clamp(5, 32);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<width$}  {:>9}  {:>9}  {:>9}  {:>9}  {:>7}",
        "label", "precision", "recall", "f1", "roc_auc", "support"
    );
    for c in &report.per_class {
        let auc = c.roc_auc.map(|a| format!("{a:.4}")).unwrap_or_else(|| "-".into());
        let _ = writeln!(
            s,
            "{:<width$}  {:>9.4}  {:>9.4}  {:>9.4}  {:>9}  {:>7}",
            c.label, c.precision, c.recall, c.f1, auc, c.support
        );
    }
    let auc = report.macro_roc_auc.map(|a| format!("{a:.4}")).unwrap_or_else(|| "-".into());
    let _ = writeln!(
        s,
        "{:<width$}  {:>9.4}  {:>9.4}  {:>9.4}  {:>9}  {:>7}",
        "macro avg", report.macro_precision, report.macro_recall, report.macro_f1, auc, report.rows
    );
    let _ = writeln!(s, "{:<width$}  {:>9}  {:>9}  {:>9.4}", "weighted f1", "", "", report.weighted_f1);
    let _ = writeln!(s, "{:<width$}  {:>9}  {:>9}  {:>9.4}", "accuracy", "", "", report.accuracy);
    let _ = writeln!(s, "\nconfusion matrix (rows: true, columns: predicted; columns in row order)");
    let cell = report.confusion.iter().flatten().max().map(|m| m.to_string().len()).unwrap_or(1).max(3);
    for (label, row) in report.labels.iter().zip(&report.confusion) {
        let cells: Vec<String> = row.iter().map(|v| format!("{v:>cell$}")).collect();
        let _ = writeln!(s, "{label:<width$}  {}", cells.join(" "));
    }
    s
}
