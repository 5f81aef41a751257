//! PNG plots of an evaluation: the confusion-matrix heatmap and one-vs-rest ROC curves
//! (plotters, with an embedded DejaVu font so plots render the same on any machine).

use std::path::Path;
use std::sync::Once;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::metrics::{ClassificationReport, roc_curve};
use crate::error::{Error, Result};

const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSansCondensed.ttf");
static FONT_ONCE: Once = Once::new();

pub(crate) fn register_font() {
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
    if label.chars().count() > 18 {
        format!("{}…", label.chars().take(17).collect::<String>())
    } else {
        label.to_string()
    }
}

/// Draws the confusion matrix as a heatmap (rows: true label, columns: predicted), colour by
/// row-normalised share, with counts written in each cell.
pub fn confusion_heatmap(report: &ClassificationReport, path: &Path) -> Result<()> {
    register_font();
    let n = report.labels.len();
    let err = plot_err(path);
    let size = (260 + 60 * n as u32).clamp(480, 1800);
    let root = BitMapBackend::new(path, (size + 120, size)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let labels = report.labels.clone();
    let labels_y = report.labels.clone();
    let mut chart = ChartBuilder::on(&root)
        .caption("Confusion matrix (rows: true, columns: predicted)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(110)
        .y_label_area_size(150)
        .build_cartesian_2d((0..n).into_segmented(), (0..n).into_segmented())
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(n)
        .y_labels(n)
        .x_label_style(("sans-serif", 13).into_font().transform(FontTransform::Rotate90))
        .y_label_style(("sans-serif", 13))
        .x_label_formatter(&move |v| match v {
            SegmentValue::CenterOf(i) if *i < labels.len() => short(&labels[*i]),
            _ => String::new(),
        })
        .y_label_formatter(&move |v| match v {
            SegmentValue::CenterOf(i) if *i < labels_y.len() => short(&labels_y[labels_y.len() - 1 - *i]),
            _ => String::new(),
        })
        .draw()
        .map_err(|e| err(e.to_string()))?;
    for (t, row) in report.confusion.iter().enumerate() {
        let total: usize = row.iter().sum::<usize>().max(1);
        let y = n - 1 - t;
        for (p, &count) in row.iter().enumerate() {
            let share = count as f64 / total as f64;
            let color =
                RGBColor((255.0 - 225.0 * share) as u8, (255.0 - 160.0 * share) as u8, 255 - (60.0 * share) as u8);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [
                        (SegmentValue::Exact(p), SegmentValue::Exact(y)),
                        (SegmentValue::Exact(p + 1), SegmentValue::Exact(y + 1)),
                    ],
                    color.filled(),
                )))
                .map_err(|e| err(e.to_string()))?;
            let text_color = if share > 0.55 { WHITE } else { BLACK };
            chart
                .draw_series(std::iter::once(Text::new(
                    count.to_string(),
                    (SegmentValue::CenterOf(p), SegmentValue::CenterOf(y)),
                    ("sans-serif", 14).into_font().color(&text_color).pos(Pos::new(HPos::Center, VPos::Center)),
                )))
                .map_err(|e| err(e.to_string()))?;
        }
    }
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// Draws one-vs-rest ROC curves, one per class, with AUC in the legend.
pub fn roc_curves(report: &ClassificationReport, y_true: &[usize], scores: &[f32], path: &Path) -> Result<()> {
    register_font();
    let err = plot_err(path);
    let classes = report.labels.len();
    let root = BitMapBackend::new(path, (900, 720)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("ROC curves (one vs rest)", ("sans-serif", 22))
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
    for c in 0..classes {
        let class_scores: Vec<f32> = (0..y_true.len()).map(|r| scores[r * classes + c]).collect();
        let positive: Vec<bool> = y_true.iter().map(|&t| t == c).collect();
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
