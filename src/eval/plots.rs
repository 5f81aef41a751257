//! PNG plots of an evaluation: the confusion-matrix heatmap and one-vs-rest ROC curves
//! (plotters, with an embedded DejaVu font so plots render the same on any machine).

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::metrics::{ClassificationReport, roc_curve};
use crate::error::{Error, Result};

const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSansCondensed.ttf");
static FONT_ONCE: Once = Once::new();

/// Registers the embedded font as `sans-serif` (once); every plot calls it first.
pub fn register_font() {
    FONT_ONCE.call_once(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            if plotters::style::register_font("sans-serif", style, FONT).is_err() {
                tracing::warn!("could not register the embedded plot font; plot text may be missing");
            }
        }
    });
}

fn plot_err(path: &Path) -> impl Fn(String) -> Error + '_ {
    move |e| Error::Plot { path: path.to_path_buf(), message: e }
}

fn short(label: &str) -> String {
    clip(label, 18)
}

/// Draws a confusion matrix (`matrix[true][predicted]` over `labels`) as a heatmap, colour by
/// row-normalised share, with counts written in each cell. Labels are drawn whole (up to 40
/// characters), row labels right-aligned beside the rows and column labels rotated below the
/// columns, in label areas sized to the longest label.
pub fn confusion_heatmap(labels: &[String], matrix: &[Vec<usize>], caption: &str, path: &Path) -> Result<()> {
    register_font();
    let n = labels.len();
    let err = plot_err(path);
    let names: Vec<String> = labels.iter().map(|l| clip(l, 40)).collect();
    let longest = names.iter().map(|l| l.chars().count()).max().unwrap_or(1) as u32;
    // About 7.5 px per character at 13 px, plus the gap to the axis.
    let label_px = (longest * 15 / 2 + 16).max(40);
    let cell = (1400 / n.max(1) as u32).clamp(22, 60);
    let side = cell * n as u32;
    let (width, height) = (side + label_px + 60, side + label_px + 70);
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(label_px)
        .y_label_area_size(label_px)
        .build_cartesian_2d(0f64..n as f64, 0f64..n as f64)
        .map_err(|e| err(e.to_string()))?;
    chart.configure_mesh().disable_mesh().x_labels(0).y_labels(0).draw().map_err(|e| err(e.to_string()))?;
    let font_px = if cell < 30 { 11 } else { 14 };
    for (t, row) in matrix.iter().enumerate() {
        let total: usize = row.iter().sum::<usize>().max(1);
        let y = (n - 1 - t) as f64;
        for (p, &count) in row.iter().enumerate() {
            let share = count as f64 / total as f64;
            let color =
                RGBColor((255.0 - 225.0 * share) as u8, (255.0 - 160.0 * share) as u8, 255 - (60.0 * share) as u8);
            let x = p as f64;
            chart
                .draw_series(std::iter::once(Rectangle::new([(x, y), (x + 1.0, y + 1.0)], color.filled())))
                .map_err(|e| err(e.to_string()))?;
            let text_color = if share > 0.55 { WHITE } else { BLACK };
            chart
                .draw_series(std::iter::once(Text::new(
                    count.to_string(),
                    (x + 0.5, y + 0.5),
                    ("sans-serif", font_px).into_font().color(&text_color).pos(Pos::new(HPos::Center, VPos::Center)),
                )))
                .map_err(|e| err(e.to_string()))?;
        }
    }
    // Labels in pixel space on the root area, outside the plotting area.
    let font = ("sans-serif", 13).into_font().color(&BLACK);
    for (i, name) in names.iter().enumerate() {
        let (row_x, row_y) = chart.backend_coord(&(0.0, (n - 1 - i) as f64 + 0.5));
        root.draw(&Text::new(name.clone(), (row_x - 6, row_y), font.pos(Pos::new(HPos::Right, VPos::Center))))
            .map_err(|e| err(e.to_string()))?;
        let (col_x, col_y) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
        let rotated = font.transform(FontTransform::Rotate90).pos(Pos::new(HPos::Left, VPos::Center));
        root.draw(&Text::new(name.clone(), (col_x, col_y + 6), rotated)).map_err(|e| err(e.to_string()))?;
    }
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// `label` cut to `max` characters (with an ellipsis).
pub(crate) fn clip(label: &str, max: usize) -> String {
    if label.chars().count() > max {
        format!("{}…", label.chars().take(max - 1).collect::<String>())
    } else {
        label.to_string()
    }
}

/// Draws one-vs-rest ROC curves of `shown` classes (indices), with AUC in the legend.
pub fn roc_curves(
    report: &ClassificationReport,
    truth: &super::Truth,
    scores: &[f32],
    shown: &[usize],
    caption: &str,
    path: &Path,
) -> Result<()> {
    register_font();
    let err = plot_err(path);
    let classes = report.labels.len();
    let root = BitMapBackend::new(path, (900, 720)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(54)
        .build_cartesian_2d(0f64..1f64, 0f64..1.0001f64)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("False positive rate")
        .y_desc("True positive rate")
        .draw()
        .map_err(|e| err(e.to_string()))?;
    chart.draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], BLACK.mix(0.3))).map_err(|e| err(e.to_string()))?;
    for &c in shown {
        let rows = scores.len() / classes.max(1);
        let class_scores: Vec<f32> = (0..rows).map(|r| scores[r * classes + c]).collect();
        let positive: Vec<bool> = (0..rows).map(|r| truth.has(r, c)).collect();
        if !positive.iter().any(|&p| p) {
            continue;
        }
        let color = Palette99::pick(c).to_rgba();
        let auc = report.per_class[c].roc_auc.map(|a| format!("{a:.4}")).unwrap_or_else(|| "n/a".into());
        chart
            .draw_series(LineSeries::new(roc_curve(&class_scores, &positive), color.stroke_width(2)))
            .map_err(|e| err(e.to_string()))?
            .label(format!("{} (AUC {auc})", short(&report.labels[c])))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// One model on a speed/quality plot.
pub struct TradeoffPoint {
    pub name: String,
    pub titles_per_second: f64,
    pub macro_f1: f64,
    /// Drawn larger and named "(chosen)".
    pub chosen: bool,
}

/// Macro-F1 against titles/s (log scale), one labeled point per model.
pub fn tradeoff_plot(points: &[TradeoffPoint], title: &str, path: &Path) -> Result<()> {
    register_font();
    let err = plot_err(path);
    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let speeds = points.iter().map(|p| p.titles_per_second.max(1e-3));
    let (lo, hi) = speeds.fold((f64::INFINITY, 0f64), |(lo, hi), s| (lo.min(s), hi.max(s)));
    let f1s = points.iter().map(|p| p.macro_f1);
    let (f_lo, f_hi) = f1s.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), f| (lo.min(f), hi.max(f)));
    let pad = ((f_hi - f_lo) * 0.15).max(0.01);
    let x = if lo.is_finite() { (lo / 2.0)..(hi * 2.0) } else { 1.0..10.0 };
    let y = if f_lo.is_finite() { (f_lo - pad).max(0.0)..(f_hi + pad).min(1.0) } else { 0.0..1.0 };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(x.log_scale(), y)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("titles / s (log scale)")
        .y_desc("validation macro-F1")
        .draw()
        .map_err(|e| err(e.to_string()))?;
    for (i, p) in points.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let size = if p.chosen { 9 } else { 6 };
        let label = if p.chosen { format!("{} (chosen)", p.name) } else { p.name.clone() };
        let at = (p.titles_per_second.max(1e-3), p.macro_f1);
        chart.draw_series([Circle::new(at, size, color.filled())]).map_err(|e| err(e.to_string()))?;
        chart
            .draw_series([Text::new(label, at, ("sans-serif", 15).into_font().color(&BLACK))])
            .map_err(|e| err(e.to_string()))?;
    }
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}
