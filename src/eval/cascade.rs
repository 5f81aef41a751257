//! Choosing a cascade's confidence threshold: the accuracy/throughput curve on labeled data.
//!
//! Both members score every row once (their speeds measured on the way); each threshold `t` then
//! sends the rows whose lexical confidence is below `t` to the second stage. The chosen threshold
//! is the lowest one whose macro-F1 is within `max_f1_loss` of the best on the curve and whose
//! labels agree with the second stage's on at least `min_agreement` of the rows: the cheapest
//! cascade that is as good as the best. The agreement bound matters on small validation sets,
//! where macro-F1 moves in steps of one row and a low threshold can look as good as sending every
//! row on; agreement does not depend on the labels, so it is the steadier measure of what routing
//! fewer rows gives up.
//!
//! The rows the first stage keeps report the lexical model's scores, the others the second
//! stage's; calibrated separately, the two do not rank alike (a lexical model sure enough to keep
//! a row is sure of it, and its small probabilities for the other classes are smaller than the
//! second stage's), so ranking by a class's score across both kinds of rows — ROC AUC, review
//! queues — is worse than either stage's. The tuning therefore also fits a temperature for the
//! first stage's scores: the one that makes them closest (cross-entropy) to the second stage's
//! probabilities on the rows the first stage keeps. Labels do not change.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use super::calibration::fit_temperature_to;
use super::metrics::ClassificationReport;
use crate::common::Taxonomy;
use crate::error::{Error, Result};
use crate::serve::ModelOutput;

/// One point of the curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdPoint {
    pub threshold: f32,
    pub macro_f1: f64,
    pub accuracy: f64,
    /// Share of rows the transformer labels.
    pub transformer_share: f64,
    /// Share of rows whose cascade label is the second stage's (cards from before: absent).
    #[serde(default)]
    pub agreement: Option<f64>,
    /// Expected titles/s: 1 / (1/lexical + share/transformer), from the measured member speeds.
    pub expected_titles_per_second: f64,
}

/// The curve and the choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdTuning {
    pub rows: usize,
    pub lexical_titles_per_second: f64,
    pub transformer_titles_per_second: f64,
    pub max_f1_loss: f64,
    #[serde(default)]
    pub min_agreement: f64,
    pub chosen: ThresholdPoint,
    pub curve: Vec<ThresholdPoint>,
    /// The first stage's scores are softmax(lexical logits / T) for this T (module docs; cards
    /// from before: 1).
    #[serde(default = "crate::registry::card::unit_temperature")]
    pub first_stage_temperature: f32,
}

/// Thresholds tried: 0 (lexical only) … 1.01 (transformer only).
fn grid() -> Vec<f32> {
    let mut g = vec![0.0];
    g.extend((1..20).map(|i| i as f32 * 0.05));
    g.extend([0.97, 0.98, 0.99, 0.995, 0.999, 1.01]);
    g
}

/// Both members' scores of the same rows (the transformer's in the cascade's classes) and their
/// measured speeds.
pub struct MemberScores {
    pub lexical: ModelOutput,
    pub lexical_rate: f64,
    pub transformer: ModelOutput,
    pub transformer_rate: f64,
}

/// How far the chosen threshold may fall short of the best point of the curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThresholdBounds {
    /// Macro-F1 below the curve's best, at most.
    pub max_f1_loss: f64,
    /// Share of rows labeled as the second stage labels them, at least.
    pub min_agreement: f64,
}

impl Default for ThresholdBounds {
    fn default() -> Self {
        Self { max_f1_loss: 0.001, min_agreement: 0.99 }
    }
}

/// Tunes the threshold against `y_true` from both members' scores of the same rows (`transformer`:
/// the second stage's).
pub fn tune_threshold(
    labels: &[String],
    members: &MemberScores,
    y_true: &[usize],
    bounds: ThresholdBounds,
    level: Option<(&Taxonomy, usize)>,
) -> Result<ThresholdTuning> {
    let ThresholdBounds { max_f1_loss, min_agreement } = bounds;
    let rows = members.lexical.rows;
    if rows == 0 {
        return Err(Error::Label("no rows to tune the cascade threshold on".into()));
    }
    let MemberScores { lexical, lexical_rate, transformer, transformer_rate } = members;
    let (lexical_rate, transformer_rate) = (*lexical_rate, *transformer_rate);
    let curve: Vec<ThresholdPoint> = grid()
        .into_iter()
        .map(|t| {
            let (mut to_transformer, mut agree) = (0usize, 0usize);
            let y_pred: Vec<usize> = (0..rows)
                .map(|r| {
                    let (label, confidence) = lexical.confidence(r, level);
                    let second = transformer.argmax(r).0;
                    let chosen = if confidence < t {
                        to_transformer += 1;
                        second
                    } else {
                        label
                    };
                    agree += usize::from(chosen == second);
                    chosen
                })
                .collect();
            let report = ClassificationReport::compute(labels, y_true, &y_pred, None);
            let share = to_transformer as f64 / rows as f64;
            ThresholdPoint {
                threshold: t,
                macro_f1: report.macro_f1,
                accuracy: report.accuracy,
                transformer_share: share,
                agreement: Some(agree as f64 / rows as f64),
                expected_titles_per_second: 1.0 / (1.0 / lexical_rate + share / transformer_rate),
            }
        })
        .collect();
    // Sending every row on agrees everywhere, so some point always qualifies.
    let agrees = |p: &&ThresholdPoint| p.agreement.unwrap_or(1.0) >= min_agreement;
    let best = curve.iter().filter(agrees).map(|p| p.macro_f1).fold(f64::MIN, f64::max);
    let chosen = curve
        .iter()
        .filter(agrees)
        .find(|p| p.macro_f1 >= best - max_f1_loss)
        .cloned()
        .ok_or_else(|| Error::Label("empty threshold curve".into()))?;
    let kept: Vec<usize> = (0..rows).filter(|&r| lexical.argmax(r).1 >= chosen.threshold).collect();
    let (kept_lexical, kept_second) = (lexical.select(&kept), transformer.select(&kept));
    let first_stage_temperature = fit_temperature_to(&kept_lexical.logits, lexical.classes, &kept_second.probabilities);
    Ok(ThresholdTuning {
        first_stage_temperature,
        rows,
        lexical_titles_per_second: lexical_rate,
        transformer_titles_per_second: transformer_rate,
        max_f1_loss,
        min_agreement,
        chosen,
        curve,
    })
}

/// The curve as a terminal table, the chosen row marked.
pub fn format_tuning(t: &ThresholdTuning) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "threshold curve on {} rows (lexical {:.0} titles/s, transformer {:.0} titles/s); chosen: the lowest \
         threshold within {} macro-F1 of the best with agreement ≥ {}",
        t.rows, t.lexical_titles_per_second, t.transformer_titles_per_second, t.max_f1_loss, t.min_agreement
    );
    let _ = writeln!(
        s,
        "{:>9}  {:>8}  {:>8}  {:>12}  {:>9}  {:>16}",
        "threshold", "macro_f1", "accuracy", "second stage", "agreement", "expected titles/s"
    );
    for p in &t.curve {
        let mark = if p.threshold == t.chosen.threshold { "  ← chosen" } else { "" };
        let _ = writeln!(
            s,
            "{:>9.3}  {:>8.4}  {:>8.4}  {:>11.1}%  {:>9.4}  {:>16.0}{mark}",
            p.threshold,
            p.macro_f1,
            p.accuracy,
            100.0 * p.transformer_share,
            p.agreement.unwrap_or(f64::NAN),
            p.expected_titles_per_second
        );
    }
    let _ = writeln!(
        s,
        "first-stage scores: softmax(lexical logits / {:.3}), the temperature closest to the second stage's \
         probabilities on the rows the first stage keeps",
        t.first_stage_temperature
    );
    s
}

/// Draws macro-F1 and expected throughput against the threshold.
pub fn plot_tuning(t: &ThresholdTuning, path: &Path) -> Result<()> {
    super::plots::register_font();
    let err = |e: String| Error::Plot { path: path.to_path_buf(), message: e };
    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let lo = t.curve.iter().map(|p| p.macro_f1).fold(1.0, f64::min).min(t.chosen.macro_f1 - 0.01).max(0.0);
    let top_rate = t.curve.iter().map(|p| p.expected_titles_per_second).fold(0.0, f64::max) * 1.05;
    let mut chart = ChartBuilder::on(&root)
        .caption("Cascade threshold: accuracy vs throughput", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .right_y_label_area_size(70)
        .build_cartesian_2d(0f64..1.01f64, lo..1.0f64)
        .map_err(|e| err(e.to_string()))?
        .set_secondary_coord(0f64..1.01f64, 0f64..top_rate.max(1.0));
    chart
        .configure_mesh()
        .x_desc("threshold (lexical confidence below it → transformer)")
        .y_desc("macro-F1")
        .draw()
        .map_err(|e| err(e.to_string()))?;
    chart.configure_secondary_axes().y_desc("expected titles/s").draw().map_err(|e| err(e.to_string()))?;
    let f1: Vec<(f64, f64)> = t.curve.iter().map(|p| (f64::from(p.threshold).min(1.01), p.macro_f1)).collect();
    let rate: Vec<(f64, f64)> =
        t.curve.iter().map(|p| (f64::from(p.threshold).min(1.01), p.expected_titles_per_second)).collect();
    chart
        .draw_series(LineSeries::new(f1, BLUE.stroke_width(2)))
        .map_err(|e| err(e.to_string()))?
        .label("macro-F1")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLUE.stroke_width(2)));
    chart
        .draw_secondary_series(LineSeries::new(rate, RED.stroke_width(2)))
        .map_err(|e| err(e.to_string()))?
        .label("expected titles/s")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RED.stroke_width(2)));
    let x = f64::from(t.chosen.threshold);
    chart
        .draw_series(LineSeries::new([(x, lo), (x, 1.0)], BLACK.mix(0.5)))
        .map_err(|e| err(e.to_string()))?
        .label(format!("chosen {:.3}", t.chosen.threshold))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.mix(0.5)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}
