//! Classification metrics: accuracy, per-class and macro precision/recall/F1, one-vs-rest ROC
//! curves and AUC, and the confusion matrix; top-k recall; for a taxonomy, the same figures at
//! each level above the leaves and hierarchical F1.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::common::Taxonomy;
use crate::registry::card::{LevelMetrics, MultiLabelMetrics, SplitMetrics};

/// The k of the top-k recalls a report gives (those below the class count).
pub const TOP_K: [usize; 3] = [1, 3, 5];

/// Metrics of one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
    /// One-vs-rest ROC AUC; `None` when the class has no positives or no negatives.
    pub roc_auc: Option<f64>,
}

impl ClassMetrics {
    /// A class's figures from its true positives, predicted and true rows.
    fn of(label: &str, tp: usize, predicted: usize, support: usize, roc_auc: Option<f64>) -> Self {
        Self {
            label: label.to_string(),
            precision: ratio(tp, predicted),
            recall: ratio(tp, support),
            f1: f1(tp, predicted, support),
            support,
            roc_auc,
        }
    }
}

/// A full classification report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationReport {
    pub rows: usize,
    pub accuracy: f64,
    pub macro_precision: f64,
    pub macro_recall: f64,
    pub macro_f1: f64,
    pub weighted_f1: f64,
    pub macro_roc_auc: Option<f64>,
    pub per_class: Vec<ClassMetrics>,
    /// The confusion matrix's non-zero cells, `[true, predicted, count]` by class index, ordered by
    /// true then predicted class: sparse, so it stays small at thousands of classes.
    pub confusion: Vec<[usize; 3]>,
    pub labels: Vec<String>,
    /// The share of rows whose true class is among the k most likely, by k (with scores).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub top_k_recall: BTreeMap<usize, f64>,
    /// A taxonomy model's reports at each level above the leaves, top first (each row's true
    /// and predicted labels mapped to their nodes at that level).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub levels: Vec<ClassificationReport>,
    /// Hierarchical F1 (Kiritchenko et al.): micro precision and recall over each row's true and
    /// predicted label sets augmented with their ancestors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hierarchical_f1: Option<f64>,
    /// A multi-label model's figures over the rows' label sets (the per-class figures are then
    /// each label's binary ones, `accuracy` the subset accuracy, and there is no confusion matrix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multilabel: Option<MultiLabelMetrics>,
}

impl ClassificationReport {
    /// The confusion matrix as `[true][predicted]` counts (for small label sets: classes² cells).
    pub fn dense_confusion(&self) -> Vec<Vec<usize>> {
        let n = self.labels.len();
        let mut m = vec![vec![0; n]; n];
        for &[t, p, count] in &self.confusion {
            m[t][p] = count;
        }
        m
    }

    /// The `n` most frequent confusions `[true, predicted, count]` (most first; ties by class).
    pub fn confused_pairs(&self, n: usize) -> Vec<[usize; 3]> {
        let mut off: Vec<[usize; 3]> = self.confusion.iter().filter(|c| c[0] != c[1]).copied().collect();
        off.sort_by(|a, b| b[2].cmp(&a[2]).then(a.cmp(b)));
        off.truncate(n);
        off
    }

    /// The headline numbers a card keeps of a full report.
    pub fn headline(&self) -> SplitMetrics {
        SplitMetrics {
            rows: self.rows,
            accuracy: self.accuracy,
            macro_f1: self.macro_f1,
            macro_precision: self.macro_precision,
            macro_recall: self.macro_recall,
            per_class_f1: self.per_class.iter().map(|c| (c.label.clone(), c.f1)).collect(),
            levels: self
                .levels
                .iter()
                .enumerate()
                .map(|(i, l)| LevelMetrics {
                    level: i + 1,
                    nodes: l.labels.len(),
                    accuracy: l.accuracy,
                    macro_f1: l.macro_f1,
                    weighted_f1: l.weighted_f1,
                })
                .collect(),
            hierarchical_f1: self.hierarchical_f1,
            multilabel: self.multilabel,
        }
    }

    /// Adds the figures of a taxonomy: a report per level above the leaves and hierarchical F1.
    pub fn with_taxonomy(mut self, taxonomy: &Taxonomy, y_true: &[usize], y_pred: &[usize]) -> Self {
        self.levels = taxonomy
            .levels
            .iter()
            .enumerate()
            .map(|(l, level)| {
                let (t, p) = (taxonomy.nodes_of(l, y_true), taxonomy.nodes_of(l, y_pred));
                ClassificationReport::compute(&level.nodes, &t, &p, None)
            })
            .collect();
        // Each class's label set: its distinct ancestors' names and its own.
        let sets: Vec<Vec<&str>> = (0..self.labels.len())
            .map(|c| {
                let mut set: Vec<&str> =
                    taxonomy.ancestors(c).map(|(l, n)| taxonomy.levels[l].nodes[n as usize].as_str()).collect();
                set.push(&self.labels[c]);
                set.sort_unstable();
                set.dedup();
                set
            })
            .collect();
        let (mut common, mut predicted, mut true_) = (0usize, 0usize, 0usize);
        for (&t, &p) in y_true.iter().zip(y_pred) {
            common += sets[t].iter().filter(|n| sets[p].contains(n)).count();
            predicted += sets[p].len();
            true_ += sets[t].len();
        }
        let (hp, hr) = (ratio(common, predicted), ratio(common, true_));
        self.hierarchical_f1 = Some(if hp + hr > 0.0 { 2.0 * hp * hr / (hp + hr) } else { 0.0 });
        self
    }
}

/// The share of rows whose true class is among the `k` highest scores, for each k of [`TOP_K`]
/// below `classes` (ties count against the true class).
pub fn top_k_recall(scores: &[f32], y_true: &[usize], classes: usize) -> BTreeMap<usize, f64> {
    let ranks: Vec<usize> = y_true
        .iter()
        .enumerate()
        .map(|(r, &t)| {
            let row = &scores[r * classes..(r + 1) * classes];
            row.iter().enumerate().filter(|&(c, &s)| c != t && s >= row[t]).count()
        })
        .collect();
    TOP_K
        .iter()
        .filter(|&&k| k < classes)
        .map(|&k| (k, ratio(ranks.iter().filter(|&&r| r < k).count(), ranks.len())))
        .collect()
}

fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 { 0.0 } else { num as f64 / den as f64 }
}

/// The confusion matrix's non-zero cells `[true, predicted, count]`, ordered.
pub fn confusion_cells(y_true: &[usize], y_pred: &[usize]) -> Vec<[usize; 3]> {
    let mut pairs: Vec<(usize, usize)> = y_true.iter().copied().zip(y_pred.iter().copied()).collect();
    pairs.sort_unstable();
    let mut cells: Vec<[usize; 3]> = Vec::new();
    for (t, p) in pairs {
        match cells.last_mut() {
            Some(last) if last[0] == t && last[1] == p => last[2] += 1,
            _ => cells.push([t, p, 1]),
        }
    }
    cells
}

/// Per class: true positives, rows predicted as it, rows that are it.
fn class_counts(y_true: &[usize], y_pred: &[usize], classes: usize) -> Vec<(usize, usize, usize)> {
    let mut counts = vec![(0, 0, 0); classes];
    for (&t, &p) in y_true.iter().zip(y_pred) {
        counts[p].1 += 1;
        counts[t].2 += 1;
        if t == p {
            counts[t].0 += 1;
        }
    }
    counts
}

/// The micro-F1 of the label sets a multi-label model's margins give labeled rows (`scores`,
/// `classes` per row: each class with a positive margin, or the best one when none is) against
/// `truth` (0 without rows): what the trainers choose by before calibration.
pub fn margin_micro_f1(scores: &[f32], classes: usize, truth: &[Vec<u32>]) -> f64 {
    let (mut tp, mut predicted, mut actual) = (0usize, 0usize, 0usize);
    for (row, set) in scores.chunks_exact(classes.max(1)).zip(truth) {
        let mut chosen: Vec<u32> = (0..row.len()).filter(|&k| row[k] > 0.0).map(|k| k as u32).collect();
        if chosen.is_empty() {
            chosen.push((0..row.len()).fold(0, |b, k| if row[k] > row[b] { k } else { b }) as u32);
        }
        tp += chosen.iter().filter(|k| set.contains(k)).count();
        predicted += chosen.len();
        actual += set.len();
    }
    f1(tp, predicted, actual)
}

/// Macro-averaged F1 over the classes that occur in `y_true` or `y_pred` (scikit-learn's default).
pub fn macro_f1(y_true: &[usize], y_pred: &[usize], classes: usize) -> f64 {
    let (sum, n) =
        class_counts(y_true, y_pred, classes).into_iter().fold((0.0, 0usize), |(sum, n), (tp, predicted, support)| {
            if support == 0 && predicted == 0 { (sum, n) } else { (sum + f1(tp, predicted, support), n + 1) }
        });
    if n == 0 { 0.0 } else { sum / n as f64 }
}

fn f1(tp: usize, predicted: usize, support: usize) -> f64 {
    let (p, r) = (ratio(tp, predicted), ratio(tp, support));
    if p + r == 0.0 { 0.0 } else { 2.0 * p * r / (p + r) }
}

/// ROC curve points `(false positive rate, true positive rate)` for scores of a binary problem,
/// one point per distinct threshold, from (0,0) to (1,1).
pub fn roc_curve(scores: &[f32], positive: &[bool]) -> Vec<(f64, f64)> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let pos = positive.iter().filter(|&&p| p).count();
    let neg = positive.len() - pos;
    let mut points = vec![(0.0, 0.0)];
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut i = 0;
    while i < order.len() {
        let threshold = scores[order[i]];
        while i < order.len() && scores[order[i]] == threshold {
            if positive[order[i]] {
                tp += 1
            } else {
                fp += 1
            }
            i += 1;
        }
        points.push((ratio(fp, neg), ratio(tp, pos)));
    }
    points
}

/// Area under the ROC curve (trapezoidal, ties handled exactly); `None` for a one-sided problem.
pub fn roc_auc(scores: &[f32], positive: &[bool]) -> Option<f64> {
    let pos = positive.iter().filter(|&&p| p).count();
    if pos == 0 || pos == positive.len() {
        return None;
    }
    let curve = roc_curve(scores, positive);
    Some(curve.windows(2).map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0).sum())
}

impl ClassificationReport {
    /// Computes the report; `scores` are row-major class probabilities (`[rows, classes]`).
    pub fn compute(labels: &[String], y_true: &[usize], y_pred: &[usize], scores: Option<&[f32]>) -> Self {
        let classes = labels.len();
        let counts = class_counts(y_true, y_pred, classes);
        let rows = y_true.len();
        let correct: usize = counts.iter().map(|c| c.0).sum();
        let mut per_class = Vec::with_capacity(classes);
        let mut aucs = Vec::new();
        for (c, &(tp, predicted, support)) in counts.iter().enumerate() {
            let roc_auc = scores.and_then(|s| {
                let class_scores: Vec<f32> = (0..rows).map(|r| s[r * classes + c]).collect();
                let positive: Vec<bool> = y_true.iter().map(|&t| t == c).collect();
                roc_auc(&class_scores, &positive)
            });
            aucs.extend(roc_auc);
            per_class.push(ClassMetrics::of(&labels[c], tp, predicted, support, roc_auc));
        }
        let present: Vec<&ClassMetrics> = per_class
            .iter()
            .enumerate()
            .filter(|(c, pc)| pc.support > 0 || counts[*c].1 > 0)
            .map(|(_, pc)| pc)
            .collect();
        let mean = |f: fn(&ClassMetrics) -> f64| {
            if present.is_empty() { 0.0 } else { present.iter().map(|pc| f(pc)).sum::<f64>() / present.len() as f64 }
        };
        let weighted_f1 = if rows == 0 {
            0.0
        } else {
            per_class.iter().map(|pc| pc.f1 * pc.support as f64).sum::<f64>() / rows as f64
        };
        Self {
            rows,
            accuracy: ratio(correct, rows),
            macro_precision: mean(|pc| pc.precision),
            macro_recall: mean(|pc| pc.recall),
            macro_f1: mean(|pc| pc.f1),
            weighted_f1,
            macro_roc_auc: (!aucs.is_empty()).then(|| aucs.iter().sum::<f64>() / aucs.len() as f64),
            per_class,
            confusion: confusion_cells(y_true, y_pred),
            labels: labels.to_vec(),
            top_k_recall: scores.map(|s| top_k_recall(s, y_true, classes)).unwrap_or_default(),
            levels: Vec::new(),
            hierarchical_f1: None,
            multilabel: None,
        }
    }

    /// The report of a multi-label model: each row's true and predicted label sets (class ids,
    /// sorted) and optionally its per-class probabilities (row-major) for the ROC figures.
    pub fn compute_multilabel(
        labels: &[String],
        truth: &[Vec<u32>],
        predicted: &[Vec<u32>],
        scores: Option<&[f32]>,
    ) -> Self {
        let classes = labels.len();
        let rows = truth.len();
        // Per class: true positives, predicted, support.
        let mut counts = vec![(0usize, 0usize, 0usize); classes];
        let mut exact = 0;
        for (t, p) in truth.iter().zip(predicted) {
            for &c in t {
                counts[c as usize].2 += 1;
            }
            for &c in p {
                counts[c as usize].1 += 1;
                counts[c as usize].0 += usize::from(t.contains(&c));
            }
            exact += usize::from(t == p);
        }
        let (tp, predicted_n, support): (usize, usize, usize) =
            counts.iter().fold((0, 0, 0), |a, c| (a.0 + c.0, a.1 + c.1, a.2 + c.2));
        let mut aucs = Vec::new();
        let per_class: Vec<ClassMetrics> = counts
            .iter()
            .enumerate()
            .map(|(c, &(tp, predicted, support))| {
                let roc_auc = scores.and_then(|s| {
                    let class_scores: Vec<f32> = (0..rows).map(|r| s[r * classes + c]).collect();
                    let positive: Vec<bool> = truth.iter().map(|t| t.contains(&(c as u32))).collect();
                    roc_auc(&class_scores, &positive)
                });
                aucs.extend(roc_auc);
                ClassMetrics::of(&labels[c], tp, predicted, support, roc_auc)
            })
            .collect();
        let present: Vec<&ClassMetrics> =
            per_class.iter().zip(&counts).filter(|(_, c)| c.1 > 0 || c.2 > 0).map(|(pc, _)| pc).collect();
        let mean = |f: fn(&ClassMetrics) -> f64| {
            if present.is_empty() { 0.0 } else { present.iter().map(|pc| f(pc)).sum::<f64>() / present.len() as f64 }
        };
        let wrong = predicted_n - tp + (support - tp);
        let multilabel = MultiLabelMetrics {
            micro_f1: f1(tp, predicted_n, support),
            micro_precision: ratio(tp, predicted_n),
            micro_recall: ratio(tp, support),
            macro_f1: mean(|pc| pc.f1),
            subset_accuracy: ratio(exact, rows),
            hamming_loss: ratio(wrong, rows * classes),
        };
        let weighted_f1 = per_class.iter().map(|pc| pc.f1 * pc.support as f64).sum::<f64>() / support.max(1) as f64;
        Self {
            rows,
            accuracy: multilabel.subset_accuracy,
            macro_precision: mean(|pc| pc.precision),
            macro_recall: mean(|pc| pc.recall),
            macro_f1: multilabel.macro_f1,
            weighted_f1,
            macro_roc_auc: (!aucs.is_empty()).then(|| aucs.iter().sum::<f64>() / aucs.len() as f64),
            per_class,
            confusion: Vec::new(),
            labels: labels.to_vec(),
            top_k_recall: BTreeMap::new(),
            levels: Vec::new(),
            hierarchical_f1: None,
            multilabel: Some(multilabel),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multilabel_figures_of_a_known_case() {
        let labels: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        // Row 0 exact; row 1 misses b; row 2 adds a false c.
        let truth = [vec![0, 1], vec![0, 1], vec![2]];
        let predicted = [vec![0, 1], vec![0], vec![0, 2]];
        let r = ClassificationReport::compute_multilabel(&labels, &truth, &predicted, None);
        let m = r.multilabel.unwrap();
        // tp 4 (a, b, a, c), predicted 5, true 5.
        assert!((m.micro_f1 - 0.8).abs() < 1e-12 && (m.micro_precision - 0.8).abs() < 1e-12);
        assert!((m.subset_accuracy - 1.0 / 3.0).abs() < 1e-12 && (r.accuracy - m.subset_accuracy).abs() < 1e-12);
        // Wrong decisions: b missed in row 1, a added in row 2: 2 of 9.
        assert!((m.hamming_loss - 2.0 / 9.0).abs() < 1e-12);
        // a: p 2/3 r 1 f 0.8; b: p 1 r 1/2 f 2/3; c: f 1.
        assert!((m.macro_f1 - (0.8 + 2.0 / 3.0 + 1.0) / 3.0).abs() < 1e-12);
        assert_eq!(r.per_class[1].support, 2);
        assert!(r.confusion.is_empty());
    }

    #[test]
    fn known_values() {
        let labels: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let y_true = [0, 0, 1, 1, 2, 2];
        let y_pred = [0, 1, 1, 1, 2, 0];
        let r = ClassificationReport::compute(&labels, &y_true, &y_pred, None);
        assert!((r.accuracy - 4.0 / 6.0).abs() < 1e-12);
        // a: p=1/2 r=1/2 f=1/2; b: p=2/3 r=1 f=0.8; c: p=1 r=1/2 f=2/3
        assert!((r.per_class[1].f1 - 0.8).abs() < 1e-12);
        assert!((r.macro_f1 - (0.5 + 0.8 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
        assert_eq!(r.confusion, vec![[0, 0, 1], [0, 1, 1], [1, 1, 2], [2, 0, 1], [2, 2, 1]]);
        assert_eq!(r.dense_confusion(), vec![vec![1, 1, 0], vec![0, 2, 0], vec![1, 0, 1]]);
        assert_eq!(r.confused_pairs(5), vec![[0, 1, 1], [2, 0, 1]]);
        assert!((macro_f1(&y_true, &y_pred, 3) - r.macro_f1).abs() < 1e-12);
    }

    #[test]
    fn taxonomy_levels_hierarchical_f1_and_top_k_recall() {
        let labels: Vec<String> = ["A > x", "A > y", "B > z", "C"].map(String::from).to_vec();
        let paths = crate::common::PathLabels { separator: " > ".into(), file: None };
        let taxonomy = Taxonomy::of_labels(&labels, &paths).unwrap();
        // Right leaf; sibling leaf (right parent); wrong parent; the flat leaf right.
        let (y_true, y_pred) = ([0, 0, 1, 3], [0, 1, 2, 3]);
        let r =
            ClassificationReport::compute(&labels, &y_true, &y_pred, None).with_taxonomy(&taxonomy, &y_true, &y_pred);
        assert_eq!(r.levels.len(), 1);
        assert_eq!(r.levels[0].labels, vec!["A", "B", "C"]);
        assert!((r.levels[0].accuracy - 0.75).abs() < 1e-12);
        // Sets: {A, A>x} ×2 rows, {A, A>y} vs {B, B>z}, {C}: common 2+1+0+1, predicted 2+2+2+1,
        // true 2+2+2+1.
        let h = 4.0 / 7.0;
        assert!((r.hierarchical_f1.unwrap() - h).abs() < 1e-12);
        let headline = r.headline();
        assert_eq!(headline.levels[0].nodes, 3);
        assert_eq!(headline.hierarchical_f1, r.hierarchical_f1);

        let scores = [0.6, 0.3, 0.1, 0.0, /* */ 0.1, 0.2, 0.3, 0.4, /* */ 0.25, 0.25, 0.4, 0.1];
        let recall = top_k_recall(&scores, &[1, 0, 0], 4);
        // Ranks of the true class: 1, 3, 2 (a tie counts against it).
        assert_eq!(recall, BTreeMap::from([(1, 0.0), (3, 2.0 / 3.0)]));
    }

    #[test]
    fn auc_perfect_random_and_ties() {
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &[true, true, false, false]), Some(1.0));
        assert_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &[true, true, false, false]), Some(0.0));
        assert_eq!(roc_auc(&[0.5, 0.5, 0.5, 0.5], &[true, false, true, false]), Some(0.5));
        // One positive ranked above one of two negatives.
        assert_eq!(roc_auc(&[0.3, 0.6, 0.1], &[true, false, false]), Some(0.5));
        assert_eq!(roc_auc(&[0.3, 0.6], &[true, true]), None);
    }
}
