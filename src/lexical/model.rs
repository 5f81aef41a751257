//! The lexical classifier: a binary bag of hashed n-grams, IDF-weighted and L2-normalised, into a
//! linear layer. The default solver is liblinear's: one-vs-rest L2-regularised squared-hinge SVMs
//! solved to convergence by dual coordinate descent (Hsieh et al., ICML 2008), the regularisation
//! strength `C` chosen on the validation rows, and the margins calibrated into probabilities by a
//! temperature fitted on the validation rows (softmax(margins / T); T is folded into the weights, so
//! the exported graph is unchanged). The earlier AdaGrad softmax regression stays as `solver =
//! "sgd"`. Weights are sparse ([`SparseWeights`]): each class's weights below `prune_below` are
//! dropped as soon as its SVM is solved, and each feature keeps at most `max_classes_per_feature`
//! classes. Export is a sparse embedding-bag ONNX graph (the feature ids gather their rows of
//! class ids and weights, scaled by the feature values and scatter-added into the bias, softmax),
//! served by the same ONNX Runtime path as every model.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::featurizer::Bag;
use super::weights::SparseWeights;
use crate::common::{
    FeaturizerSettings, Head, LexicalSettings, LexicalSolver, SvmChoice, Taxonomy, TermFrequency, names,
};
use crate::eval::calibration::fit_temperature;
use crate::onnx::graph::{Attr, Dim, GraphBuilder, OnnxFiles, external_above};
use crate::onnx::proto::data_type;

/// A training row: its features (borrowed: the rows of every split and of the refit pool are
/// views of one featurization) and its class.
pub type Row<'a> = (&'a Bag, usize);

/// How the lexical solver makes its choices (C, temperature; `sgd`: the epoch).
#[derive(Debug, Clone, Copy)]
pub enum Selection<'a> {
    /// On these validation rows; with `refit`, the final model is then trained on train +
    /// validation at the chosen C (the temperature stays the validation-fitted one), and with
    /// `also` rows (the test split) once more on all of them, warm-started from that one, which is
    /// kept as [`LexicalFit::measured`].
    /// `warm`: dual variables to start from ([`LexicalFit::alphas`] of a fit on the same rows).
    Holdout { validation: &'a [Row<'a>], refit: bool, warm: Option<&'a [Vec<f32>]>, also: &'a [Row<'a>] },
    /// By cross-validation over the training rows split into these folds (row indices into
    /// them); the final model is trained on all of them, and with `also` rows once more on all of
    /// them too (the model before kept as [`LexicalFit::measured`]).
    Folds { folds: &'a [Vec<usize>], also: &'a [Row<'a>] },
}

/// What a fit's classes are to each other, and what a training row's second field means.
#[derive(Debug, Clone, Copy)]
pub enum Targets<'a> {
    /// One class per row (the row's field), all classes alike.
    Classes,
    /// One class per row, each class in a group (its index here): a two-level label tree
    /// ([`LabelTree`]; the `svm` solver only).
    Tree(&'a [u32]),
    /// Any number of classes per row (multi-label; the `svm` solver on a validation split only):
    /// a row's field indexes this list of class sets. Each class's SVM is trained against every row
    /// without it, the margins calibrated by one Platt sigmoid, and each class given the
    /// probability threshold of its best validation F1.
    Sets(&'a [Vec<u32>]),
}

/// A trained lexical model and how it was chosen.
#[derive(Debug, Clone)]
pub struct LexicalFit {
    pub model: LexicalModel,
    /// With rows `also` to learn from after the choices: the model of train + validation, whose
    /// figures on those rows are still held out (`model` learned from them too).
    pub measured: Option<LexicalModel>,
    /// Validation (or out-of-fold) macro-F1 per epoch (`sgd`) or per C of the grid (`svm`);
    /// multi-label: the validation micro-F1 of the margins' signs.
    pub history: Vec<f64>,
    pub svm: Option<SvmChoice>,
    /// Rows the final model was trained on.
    pub trained_on: usize,
    /// `svm` on a validation split: the dual variables (per class, per training row) at the chosen
    /// C, from which another fit on the same rows starts nearly solved.
    pub alphas: Option<DualVariables>,
    /// Multi-label: each class's probability threshold, tuned on the validation rows.
    pub thresholds: Option<Vec<f32>>,
}

/// The `svm` solver's dual variables: per class, one per training row.
pub type DualVariables = Vec<Vec<f32>>;

/// Weights of a trained lexical model.
#[derive(Debug, Clone, PartialEq)]
pub struct LexicalModel {
    pub classes: usize,
    pub buckets: usize,
    /// Per feature bucket, its classes' weights; row 0 (the reserved bucket) stays empty.
    pub weights: SparseWeights,
    pub bias: Vec<f32>,
    /// Inverse document frequency per bucket (0 for bucket 0).
    pub idf: Vec<f32>,
    /// First bucket of the character block when word and character n-grams are normalised
    /// separately (`norm = "blocks"`); `None`: one norm over all features.
    pub char_block: Option<u32>,
    /// How a feature's count weighs (the graph reads counts as `token_type_ids` when sublinear).
    pub tf: TermFrequency,
    /// A two-level label tree: `weights` and `bias` then score each class among its siblings, and
    /// the tree's own classifier scores the groups.
    pub tree: Option<LabelTree>,
}

/// The top of a two-level label tree (Parabel and XR-Linear with one level): a linear classifier
/// over groups of classes (a taxonomy's top-level categories) on the same features. A class's
/// probability is its group's probability times its own softmax among the group's classes, so
/// the classes of a group sum to exactly the group's probability, and each class is trained only
/// against its own group's rows.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelTree {
    /// Each class's group.
    pub group_of: Vec<u32>,
    /// Per feature bucket, its groups' weights.
    pub weights: SparseWeights,
    pub bias: Vec<f32>,
    /// What the group classifier's solver chose.
    pub svm: Option<SvmChoice>,
}

/// The label trees a fit trains its classes under: the final model's, and with rows learned from
/// after the choices (`Selection::Holdout::also`) the one of train + validation apart.
#[derive(Debug, Clone, Copy)]
struct Trees<'a> {
    final_tree: &'a LabelTree,
    measured: Option<&'a LabelTree>,
}

/// A score that keeps a class out of a softmax (a class of another group while fitting the
/// within-group temperature).
const MASKED: f32 = -1e30;

/// The label tree's softmax within each group, in f32 without underflow: each group's classes are
/// shifted by a soft maximum of the group's scores, (1/β)·ln Σ exp(β·(score − the row's best)) +
/// the row's best with β = [`GROUP_MAX_SCALE`], which lies at or above the group's best and at most
/// ln(classes)/β above it, so the group's best class keeps exp(shift) ≥ e^(−ln(classes)/β) > 0 and
/// its sum cannot underflow to 0 / 0. β·(score − the row's best) is floored at [`SCALED_FLOOR`]:
/// a group some 640 below the row's best (as far as f64 reached before) is still summed exactly.
const GROUP_MAX_SCALE: f32 = 0.125;
const SCALED_FLOOR: f32 = -80.0;
/// The smallest per-group sum taken the log of (a group past [`SCALED_FLOOR`]).
const GROUP_SUM_FLOOR: f32 = 1e-30;

impl LabelTree {
    /// How many groups there are (one bias each).
    pub fn groups(&self) -> usize {
        self.bias.len()
    }

    /// The logits of one text: ln P(group) + ln softmax(`scores` among the group's classes), from
    /// the classes' scores and the groups' logits. Mirrors the exported graph ([`tree_graph`]):
    /// each class shifted by its group's soft maximum ([`GROUP_MAX_SCALE`]), summed per group.
    fn joint(&self, scores: &[f32], group_logits: &[f32]) -> Vec<f32> {
        let groups = self.groups();
        let top = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut soft = vec![0f32; groups];
        for (&s, &g) in scores.iter().zip(&self.group_of) {
            soft[g as usize] += (GROUP_MAX_SCALE * (s - top)).max(SCALED_FLOOR).exp();
        }
        let shift: Vec<f32> = soft.iter().map(|&v| v.ln() / GROUP_MAX_SCALE + top).collect();
        let mut sums = vec![0f32; groups];
        for (&s, &g) in scores.iter().zip(&self.group_of) {
            sums[g as usize] += (s - shift[g as usize]).exp();
        }
        let g_max = group_logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let g_log_sum = group_logits.iter().map(|&l| (l - g_max).exp()).sum::<f32>().ln();
        let offsets: Vec<f32> = (0..groups)
            .map(|g| group_logits[g] - g_max - g_log_sum - sums[g].max(GROUP_SUM_FLOOR).ln() - shift[g])
            .collect();
        scores.iter().zip(&self.group_of).map(|(&s, &g)| s + offsets[g as usize]).collect()
    }

    /// Scores of the classes outside `class`'s group replaced by [`MASKED`]: softmax over a row
    /// is then the softmax among the group's classes.
    fn mask_to_group(&self, scores: &mut [f32], class: usize) {
        let group = self.group_of[class];
        scores.iter_mut().zip(&self.group_of).filter(|(_, g)| **g != group).for_each(|(s, _)| *s = MASKED);
    }
}

impl LexicalModel {
    /// Feature values of one text: IDF weights, L2-normalised (each block on its own with
    /// `char_block`).
    fn values(&self, bag: &Bag) -> Vec<f32> {
        let features = &bag.ids;
        let mut v: Vec<f32> =
            features.iter().zip(&bag.counts).map(|(&f, &n)| self.idf[f as usize] * self.tf.weight(n)).collect();
        let block = |f: u32| self.char_block.is_some_and(|first| f >= first);
        for b in [false, true] {
            let norm = features.iter().zip(&v).filter(|(f, _)| block(**f) == b).map(|(_, x)| x * x).sum::<f32>();
            let norm = norm.sqrt().max(1e-12);
            features.iter().zip(v.iter_mut()).filter(|(f, _)| block(**f) == b).for_each(|(_, x)| *x /= norm);
        }
        v
    }

    /// `bias` + the features' rows of `weights`, scaled by their values.
    fn linear(weights: &SparseWeights, bias: &[f32], features: &Bag, values: &[f32]) -> Vec<f32> {
        let mut out = bias.to_vec();
        for (&f, &x) in features.ids.iter().zip(values) {
            weights.add_row(f as usize, x, &mut out);
        }
        out
    }

    /// The classes' own scores of one text (with a label tree: each class's among its group's),
    /// and its feature values.
    fn scores(&self, features: &Bag) -> (Vec<f32>, Vec<f32>) {
        let values = self.values(features);
        (Self::linear(&self.weights, &self.bias, features, &values), values)
    }

    /// The logits of one text, given its [`Self::scores`] and feature values.
    fn logits_of_scores(&self, scores: Vec<f32>, features: &Bag, values: &[f32]) -> Vec<f32> {
        match &self.tree {
            None => scores,
            Some(tree) => tree.joint(&scores, &Self::linear(&tree.weights, &tree.bias, features, values)),
        }
    }

    /// Logits of one text (the reference forward pass for the parity check).
    pub fn logits(&self, features: &Bag) -> Vec<f32> {
        let (scores, values) = self.scores(features);
        self.logits_of_scores(scores, features, &values)
    }

    /// The temperature that calibrates the scores of labeled rows (row-major, as
    /// [`scores_of`] gives them): over all classes, or with a label tree among each row's
    /// group's classes (the groups' probabilities are calibrated on their own).
    fn temperature(&self, mut scores: Vec<f32>, y: &[usize]) -> f32 {
        if let Some(tree) = &self.tree {
            for (row, &class) in scores.chunks_exact_mut(self.classes).zip(y) {
                tree.mask_to_group(row, class);
            }
        }
        fit_temperature(&scores, self.classes, y)
    }

    /// Class of the largest logit.
    pub fn predict(&self, features: &Bag) -> usize {
        argmax(&self.logits(features))
    }

    /// An untrained model with the IDF of `train`.
    fn with_idf(train: &[Row<'_>], classes: usize, settings: &FeaturizerSettings) -> Self {
        let buckets = settings.buckets as usize;
        let mut df = vec![0u32; buckets];
        for (features, _) in train {
            for &f in &features.ids {
                df[f as usize] += 1;
            }
        }
        let n = train.len() as f32;
        // An n-gram no training row had weighs 0, as out-of-vocabulary terms do in a TF-IDF
        // vectorizer: it has no weight in the model either, and given the largest IDF it would only
        // shrink the text's other features under the L2 norm, against the bias (measured: 0.007
        // macro-F1 on the 4-class sample's long descriptions).
        let mut idf: Vec<f32> =
            df.iter().map(|&d| if d == 0 { 0.0 } else { ((1.0 + n) / (1.0 + d as f32)).ln() + 1.0 }).collect();
        idf[0] = 0.0;
        let char_block = settings.first_char_bucket();
        Self {
            classes,
            buckets,
            weights: SparseWeights::empty(buckets, classes),
            bias: vec![0.0; classes],
            idf,
            char_block,
            tf: settings.tf,
            tree: None,
        }
    }

    /// An untrained model with the IDF of `train` and `tree`'s group classifier.
    fn untrained(train: &[Row<'_>], classes: usize, settings: &FeaturizerSettings, tree: Option<&LabelTree>) -> Self {
        Self { tree: tree.cloned(), ..Self::with_idf(train, classes, settings) }
    }

    /// Trains with the configured solver, making its choices as `selection` says (`sgd`: early
    /// stopping on the validation rows only), for `targets` (the `sgd` solver: one class per row
    /// alone, flat; callers refuse the others for it, and multi-label cross-validation).
    pub fn fit(
        train: &[Row<'_>],
        selection: Selection<'_>,
        classes: usize,
        settings: &LexicalSettings,
        targets: Targets<'_>,
    ) -> LexicalFit {
        match (settings.solver, selection) {
            (LexicalSolver::Sgd, selection) => {
                // Early stopping on the validation rows; with folds (callers refuse them) no
                // validation rows: one pass.
                let validation = match selection {
                    Selection::Holdout { validation, .. } => validation,
                    Selection::Folds { .. } => &[],
                };
                let (model, history) = Self::train(train, validation, classes, settings);
                LexicalFit {
                    model,
                    measured: None,
                    history,
                    svm: None,
                    trained_on: train.len(),
                    alphas: None,
                    thresholds: None,
                }
            }
            (LexicalSolver::Svm, selection) => {
                let (trees, sets) = match targets {
                    Targets::Classes => (None, None),
                    Targets::Tree(group_of) => (Some(Self::fit_groups(train, selection, group_of, settings)), None),
                    Targets::Sets(sets) => (None, Some(sets)),
                };
                let tree =
                    trees.as_ref().map(|(final_tree, measured)| Trees { final_tree, measured: measured.as_ref() });
                Self::train_svm(train, selection, classes, settings, tree, sets)
            }
        }
    }

    /// The label tree's group classifier: the same solver and choices over the rows' groups
    /// (trained first, with the same refit, so that it and the classes share their rows' IDF);
    /// with rows `also`, the tree of train + validation too (the measured model's).
    fn fit_groups<'a>(
        train: &[Row<'a>],
        selection: Selection<'a>,
        group_of: &[u32],
        settings: &LexicalSettings,
    ) -> (LabelTree, Option<LabelTree>) {
        let groups = group_of.iter().max().map_or(1, |&g| g as usize + 1);
        let regroup =
            |rows: &[Row<'a>]| -> Vec<Row<'a>> { rows.iter().map(|&(bag, y)| (bag, group_of[y] as usize)).collect() };
        let group_validation;
        let group_also;
        let selection = match selection {
            Selection::Holdout { validation, refit, also, .. } => {
                (group_validation, group_also) = (regroup(validation), regroup(also));
                Selection::Holdout { validation: &group_validation, refit, warm: None, also: &group_also }
            }
            Selection::Folds { folds, also } => {
                group_also = regroup(also);
                Selection::Folds { folds, also: &group_also }
            }
        };
        let fit = Self::train_svm(&regroup(train), selection, groups, settings, None, None);
        let best = fit.history.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        tracing::info!(groups, validation_macro_f1 = format!("{best:.4}"), svm = ?fit.svm, "label tree: groups trained");
        let tree = |model: LexicalModel| LabelTree {
            group_of: group_of.to_vec(),
            weights: model.weights,
            bias: model.bias,
            svm: fit.svm,
        };
        (tree(fit.model), fit.measured.map(tree))
    }

    /// One-vs-rest squared-hinge SVMs by dual coordinate descent for each C of the grid (ascending,
    /// warm-started); keeps the C with the best macro-F1 on the validation rows or out of fold
    /// (ties: the smaller C), fits the temperature on the same rows, and — after cross-validation
    /// or with `refit` — trains the final model on every row used for the choice at that C.
    ///
    /// With `tree`, each class's SVM is trained against its own group's rows, and the choices
    /// read the tree's logits (the temperature: the scores among each row's own group). With
    /// `sets` (multi-label, [`Targets::Sets`]; validation rows only), each class's against every
    /// row, C chosen on the validation micro-F1, Platt scaling instead of a temperature, and
    /// per-class thresholds.
    fn train_svm(
        train: &[Row<'_>],
        selection: Selection<'_>,
        classes: usize,
        settings: &LexicalSettings,
        trees: Option<Trees<'_>>,
        sets: Option<&[Vec<u32>]>,
    ) -> LexicalFit {
        let mut grid: Vec<f32> = if settings.c_grid.is_empty() { vec![1.0] } else { settings.c_grid.clone() };
        grid.sort_by(f32::total_cmp);
        // The choices are made with the tree of train + validation where there is one apart.
        let tree = trees.map(|t| t.measured.unwrap_or(t.final_tree));
        let mut thresholds = None;
        let mut measured = None;
        let (mut model, history, c, iterations, (scale, shift), trained_on, alphas) = match selection {
            Selection::Holdout { validation, refit, warm, also } => {
                let mut best: Option<(Self, f64, f32, usize)> = None;
                let mut best_alphas: Option<Vec<Vec<f32>>> = None;
                let mut history = Vec::new();
                // Keeps the better model (ties: the smaller C); says whether this one was better.
                let mut score = |c: f32, model: Self, iterations: usize| -> bool {
                    let f1 = match sets {
                        None => macro_f1_of(&model, validation),
                        Some(sets) => sign_micro_f1(&model, validation, sets),
                    };
                    history.push(f1);
                    tracing::debug!(c, validation_macro_f1 = f1, iterations, "lexical svm");
                    let better = best.as_ref().is_none_or(|b| f1 > b.1 || (f1 == b.1 && c < b.2));
                    if better {
                        best = Some((model, f1, c, iterations));
                    }
                    better
                };
                let mut solver = OvrSolver::new(train, classes, settings, warm, tree, sets);
                // Solves at C, keeps the dual variables of the best model; whether it was better.
                let mut step = |solver: &mut OvrSolver<'_>, c: f32| -> bool {
                    let (model, iterations) = solver.solve(c);
                    let better = score(c, model, iterations);
                    if better {
                        best_alphas = Some(solver.alphas.clone());
                    }
                    better
                };
                if settings.c_search.walks(classes) {
                    // From the C nearest 1 up the grid while validation improves, then down from it.
                    let start = walk_start(&grid);
                    step(&mut solver, grid[start]);
                    let at_start = solver.alphas.clone();
                    for &c in &grid[start + 1..] {
                        if !step(&mut solver, c) {
                            break;
                        }
                    }
                    solver.alphas = at_start;
                    for &c in grid[..start].iter().rev() {
                        if !step(&mut solver, c) {
                            break;
                        }
                    }
                } else {
                    for &c in &grid {
                        step(&mut solver, c);
                    }
                }
                drop(solver);
                let (model, _, c, iterations) = best
                    .unwrap_or_else(|| (Self::untrained(train, classes, &settings.featurizer, tree), 0.0, grid[0], 0));
                let calibration = match sets {
                    Some(sets) if !validation.is_empty() => {
                        let (scores, rows) = scores_of(&model, validation.iter());
                        let truth: Vec<Vec<u32>> = rows.iter().map(|&r| sets[r].clone()).collect();
                        let (platt, tuned) = crate::eval::calibration::calibrate_label_sets(
                            &scores,
                            classes,
                            &truth,
                            settings.calibrate,
                        );
                        thresholds = Some(tuned);
                        platt
                    }
                    Some(_) => (1.0, 0.0),
                    None if settings.calibrate && !validation.is_empty() => {
                        let (scores, y) = scores_of(&model, validation.iter());
                        (1.0 / model.temperature(scores, &y), 0.0)
                    }
                    None => (1.0, 0.0),
                };
                if refit && !validation.is_empty() {
                    let pool: Vec<Row<'_>> = train.iter().chain(validation).copied().collect();
                    // Started from the chosen C's solution, the validation rows' variables at 0.
                    let warm: Option<Vec<Vec<f32>>> = best_alphas.as_ref().map(|alphas| {
                        alphas
                            .iter()
                            .map(|a| a.iter().copied().chain(validation.iter().map(|_| 0.0)).collect())
                            .collect()
                    });
                    let mut solver = OvrSolver::new(&pool, classes, settings, warm.as_deref(), tree, sets);
                    let (model, iterations) = solver.solve(c);
                    let (model, trained_on) = learn_also(solver, model, &pool, also, c, trees, &mut measured);
                    (model, history, c, iterations, calibration, trained_on, None)
                } else {
                    (model, history, c, iterations, calibration, train.len(), best_alphas)
                }
            }
            Selection::Folds { folds, also } => {
                // Out-of-fold scores (row-major over `train`) and predictions, per C. (A label
                // tree's group classifier is the final one, trained on every row: its part of the
                // out-of-fold predictions is in-sample.)
                let mut oof = vec![vec![0f32; train.len() * classes]; grid.len()];
                let mut oof_pred = vec![vec![0usize; train.len()]; grid.len()];
                for fold in folds {
                    let mut held = vec![false; train.len()];
                    fold.iter().for_each(|&r| held[r] = true);
                    let rest: Vec<Row<'_>> =
                        train.iter().zip(&held).filter(|(_, h)| !**h).map(|(row, _)| *row).collect();
                    let mut g = 0;
                    debug_assert!(sets.is_none(), "multi-label models choose on validation rows");
                    solve_grid(&rest, classes, settings, tree, &grid, |_, model, _| {
                        for &r in fold {
                            let (scores, values) = model.scores(train[r].0);
                            oof[g][r * classes..(r + 1) * classes].copy_from_slice(&scores);
                            oof_pred[g][r] = argmax(&model.logits_of_scores(scores, train[r].0, &values));
                        }
                        g += 1;
                    });
                }
                let y: Vec<usize> = train.iter().map(|(_, y)| *y).collect();
                let history: Vec<f64> = oof_pred.iter().map(|pred| crate::eval::macro_f1(&y, pred, classes)).collect();
                let best = (0..grid.len()).fold(0, |b, i| if history[i] > history[b] { i } else { b });
                let mut solver = OvrSolver::new(train, classes, settings, None, tree, None);
                let (model, iterations) = solver.solve(grid[best]);
                let temperature =
                    if settings.calibrate { model.temperature(std::mem::take(&mut oof[best]), &y) } else { 1.0 };
                let (model, trained_on) = learn_also(solver, model, train, also, grid[best], trees, &mut measured);
                (model, history, grid[best], iterations, (1.0 / temperature, 0.0), trained_on, None)
            }
        };
        for model in std::iter::once(&mut model).chain(measured.as_mut()) {
            model.weights.scale(scale);
            model.bias.iter_mut().for_each(|b| *b = *b * scale + shift);
        }
        let svm = SvmChoice { c, temperature: 1.0 / scale, iterations, shift: sets.map(|_| shift) };
        LexicalFit { model, measured, history, svm: Some(svm), trained_on, alphas, thresholds }
    }

    /// Trains on `train` (feature lists and class ids), keeping the epoch with the best
    /// macro-F1 on `validation`. Returns the model and validation macro-F1 per epoch. The weights
    /// are dense while they learn (`buckets × classes`; training refuses sizes that would not fit),
    /// then stored sparsely like the `svm` solver's.
    pub fn train(
        train: &[Row<'_>],
        validation: &[Row<'_>],
        classes: usize,
        settings: &LexicalSettings,
    ) -> (Self, Vec<f64>) {
        let buckets = settings.featurizer.buckets as usize;
        let n = train.len() as f32;
        let mut model = Self::with_idf(train, classes, &settings.featurizer);
        let mut weights = vec![0f32; buckets * classes];
        let logits = |model: &Self, weights: &[f32], features: &Bag| -> Vec<f32> {
            let mut out = model.bias.clone();
            for (&f, x) in features.ids.iter().zip(model.values(features)) {
                let row = &weights[f as usize * classes..(f as usize + 1) * classes];
                out.iter_mut().zip(row).for_each(|(o, w)| *o += x * w);
            }
            out
        };
        let mut class_count = vec![0usize; classes];
        for (_, y) in train {
            class_count[*y] += 1;
        }
        let class_weight: Vec<f32> = class_count
            .iter()
            .map(|&k| if settings.class_weights && k > 0 { n / (classes as f32 * k as f32) } else { 1.0 })
            .collect();
        // AdaGrad accumulators.
        let mut g2 = vec![0f32; buckets * classes];
        let mut g2_bias = vec![0f32; classes];
        let mut order: Vec<usize> = (0..train.len()).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(settings.seed);
        let (mut best, mut best_f1, mut stale, mut history) =
            ((weights.clone(), model.bias.clone()), -1.0f64, 0usize, Vec::new());
        let lr = settings.learning_rate;
        let mut probs = vec![0f32; classes];
        for _epoch in 0..settings.epochs.max(1) {
            order.shuffle(&mut rng);
            for &i in &order {
                let (features, y) = (&train[i].0, train[i].1);
                let values = model.values(features);
                crate::eval::calibration::softmax(&logits(&model, &weights, features), &mut probs);
                let w = class_weight[y];
                for k in 0..classes {
                    let g = w * (probs[k] - if k == y { 1.0 } else { 0.0 });
                    g2_bias[k] += g * g;
                    model.bias[k] -= lr * g / (g2_bias[k].sqrt() + 1e-8);
                    for (&f, &x) in features.ids.iter().zip(&values) {
                        if f == 0 {
                            continue;
                        }
                        let idx = f as usize * classes + k;
                        let gw = g * x + settings.l2 * weights[idx];
                        g2[idx] += gw * gw;
                        weights[idx] -= lr * gw / (g2[idx].sqrt() + 1e-8);
                    }
                }
            }
            let y_true: Vec<usize> = validation.iter().map(|(_, y)| *y).collect();
            let y_pred: Vec<usize> = validation.iter().map(|(f, _)| argmax(&logits(&model, &weights, f))).collect();
            let f1 = if validation.is_empty() { 0.0 } else { crate::eval::macro_f1(&y_true, &y_pred, classes) };
            history.push(f1);
            if f1 > best_f1 {
                best_f1 = f1;
                best = (weights.clone(), model.bias.clone());
                stale = 0;
            } else {
                stale += 1;
                if stale >= settings.patience.max(1) {
                    break;
                }
            }
        }
        model.weights = SparseWeights::from_dense(buckets, classes, &best.0, settings.classes_per_feature(classes));
        model.bias = best.1;
        (model, history)
    }

    /// The embedding-bag ONNX graph: inputs `input_ids` (feature ids), `attention_mask` and, with
    /// sublinear tf, `token_type_ids` (feature counts); outputs `logits` and `probabilities`. The
    /// feature values computed once feed the classes' linear layer ([`linear_graph`]) and, with a
    /// label tree, the groups' and the tree's logits ([`tree_graph`]).
    pub fn export(&self, head: Head, taxonomy: Option<&Taxonomy>, metadata: &[(&str, String)]) -> OnnxFiles {
        let mut g = GraphBuilder::new("prodcat_lexical_classifier");
        let dims = [Dim::Named("batch"), Dim::Named("features")];
        let ids = g.input(names::INPUT_IDS, data_type::INT64, &dims);
        let mask = g.input(names::ATTENTION_MASK, data_type::INT64, &dims);
        let idf = g.f32_tensor("idf", &[self.buckets], &self.idf);
        let mask_f = g.op("Cast", &[&mask], &[("to", Attr::Int(data_type::FLOAT as i64))]);
        let w = g.op("Gather", &[&idf, &ids], &[("axis", Attr::Int(0))]);
        let w = g.op("Mul", &[&w, &mask_f], &[]);
        let w = match self.tf {
            TermFrequency::Binary => w,
            TermFrequency::Sublinear => {
                // Counts arrive as `token_type_ids`: weight 1 + ln(count).
                let counts = g.input(names::TOKEN_TYPE_IDS, data_type::INT64, &dims);
                let counts = g.op("Cast", &[&counts], &[("to", Attr::Int(data_type::FLOAT as i64))]);
                let one = g.scalar_f32(1.0);
                let counts = g.op("Max", &[&counts, &one], &[]);
                let log = g.op("Log", &[&counts], &[]);
                let tf = g.op("Add", &[&log, &one], &[]);
                g.op("Mul", &[&w, &tf], &[])
            }
        };
        let axis_1 = g.ints(&[1]);
        let tiny = g.scalar_f32(1e-12);
        // Scaled to unit L2 norm.
        let normalised = |g: &mut GraphBuilder, block: &str| {
            let sq = g.op("Mul", &[block, block], &[]);
            let sum_sq = g.op("ReduceSum", &[&sq, &axis_1], &[("keepdims", Attr::Int(1))]);
            let norm = g.op("Sqrt", &[&sum_sq], &[]);
            let norm = g.op("Max", &[&norm, &tiny], &[]);
            g.op("Div", &[block, &norm], &[])
        };
        let w = match self.char_block {
            None => normalised(&mut g, &w),
            Some(first) => {
                // Word ids lie below `first`, character ids from it: each block scaled on its own.
                let first = g.scalar_i64(i64::from(first));
                let is_word = g.op("Less", &[&ids, &first], &[]);
                let is_word = g.op("Cast", &[&is_word], &[("to", Attr::Int(data_type::FLOAT as i64))]);
                let words = g.op("Mul", &[&w, &is_word], &[]);
                let chars = g.op("Sub", &[&w, &words], &[]);
                let words = normalised(&mut g, &words);
                let chars = normalised(&mut g, &chars);
                g.op("Add", &[&words, &chars], &[])
            }
        };
        let layer =
            |weights, bias, classes| Linear { ids: &ids, values: &w, weights, bias, buckets: self.buckets, classes };
        match &self.tree {
            None => linear_graph(&mut g, "", &layer(&self.weights, &self.bias, self.classes), names::LOGITS),
            Some(tree) => {
                linear_graph(&mut g, "", &layer(&self.weights, &self.bias, self.classes), "class_scores");
                linear_graph(&mut g, "group_", &layer(&tree.weights, &tree.bias, tree.groups()), "group_scores");
                tree_graph(&mut g, tree, "class_scores", "group_scores");
            }
        }
        g.head_outputs(head, self.classes, taxonomy);
        g.finish_files(metadata, external_above())
    }
}

/// A linear layer of the exported graph: the feature ids and their values (graph names), the
/// weights and bias, and their sizes.
struct Linear<'a> {
    ids: &'a str,
    values: &'a str,
    weights: &'a SparseWeights,
    bias: &'a [f32],
    buckets: usize,
    classes: usize,
}

/// Whether a layer keeps a dense `[buckets, classes]` matrix: when some feature has a weight for
/// every class (the sparse rows would be as wide as dense ones, and gathering dense rows into a
/// MatMul serves 1.5× faster than the scatter: 10 PriceRunner categories, 50,735 against 33,488
/// titles/s) and the matrix fits in an ONNX file.
fn dense_rows(weights: &SparseWeights, buckets: usize, classes: usize) -> bool {
    weights.stats().width >= classes && (buckets * classes * 4) < (1 << 30)
}

/// Adds `bias` + Σ value × the feature's row of weights as `output` ([batch, classes]), its
/// initializers named with `prefix`. Dense ([`dense_rows`]): the rows gathered into a MatMul.
/// Sparse: each feature id picks its slot (`slot_of`), the slot its row of class ids and weights
/// (padded to the longest row), and the weights scaled by the feature's value are scatter-added
/// into the bias.
fn linear_graph(g: &mut GraphBuilder, prefix: &str, layer: &Linear<'_>, output: &str) {
    let Linear { ids, values: w, weights, bias, buckets, classes } = *layer;
    let bias = g.f32_tensor(&format!("{prefix}bias"), &[classes], bias);
    let gather = [("axis", Attr::Int(0))];
    let axis_1 = g.ints(&[1]);
    if dense_rows(weights, buckets, classes) {
        let weights = g.f32_tensor(&format!("{prefix}weights"), &[buckets, classes], &weights.to_dense());
        let w = g.op("Unsqueeze", &[w, &axis_1], &[]); // [batch, 1, features]
        let rows = g.op("Gather", &[&weights, ids], &gather); // [batch, features, classes]
        let bag = g.op("MatMul", &[&w, &rows], &[]); // [batch, 1, classes]
        let bag = g.op("Squeeze", &[&bag, &axis_1], &[]);
        g.op_into("Add", &[&bag, &bias], &[], output);
        return;
    }
    let rows = weights.padded();
    let i32_bytes = |v: &[i32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let slot_of = g.initializer(&format!("{prefix}slot_of"), data_type::INT32, &[buckets], i32_bytes(&rows.slot_of));
    let row_classes = g.initializer(
        &format!("{prefix}row_classes"),
        data_type::INT32,
        &[rows.slots, rows.width],
        i32_bytes(&rows.class_ids),
    );
    let row_weights = g.f32_tensor(&format!("{prefix}row_weights"), &[rows.slots, rows.width], &rows.values);
    drop(rows);
    let slots = g.op("Gather", &[&slot_of, ids], &gather); // [batch, features]
    let class_ids = g.op("Gather", &[&row_classes, &slots], &gather); // [batch, features, width]
    let weights = g.op("Gather", &[&row_weights, &slots], &gather);
    let axis_2 = g.ints(&[2]);
    let w = g.op("Unsqueeze", &[w, &axis_2], &[]); // [batch, features, 1]
    let contributions = g.op("Mul", &[&weights, &w], &[]);
    let flat = g.ints(&[0, -1]); // [batch, features × width]
    let contributions = g.op("Reshape", &[&contributions, &flat], &[]);
    let class_ids = g.op("Reshape", &[&class_ids, &flat], &[]);
    let base = expand_rows(g, ids, &bias, classes); // [batch, classes]
    g.op_into(
        "ScatterElements",
        &[&base, &class_ids, &contributions],
        &[("axis", Attr::Int(1)), ("reduction", Attr::Str("add".into()))],
        output,
    );
}

/// `row` ([width]) repeated for each row of `like`'s batch: [batch, width].
fn expand_rows(g: &mut GraphBuilder, like: &str, row: &str, width: usize) -> String {
    let batch = g.op("Shape", &[like], &[("end", Attr::Int(1))]);
    let width = g.ints(&[width as i64]);
    let shape = g.op("Concat", &[&batch, &width], &[("axis", Attr::Int(0))]);
    g.op("Expand", &[row, &shape], &[])
}

/// The label tree's `logits` from the classes' and the groups' scores, as [`LabelTree::joint`]:
/// score + ln softmax(groups)[group] − m − ln Σ over the group of exp(score − m), m the group's
/// soft maximum ([`GROUP_MAX_SCALE`]). f32 throughout: ONNX Runtime's f32 Exp is vectorised, and
/// the f64 one was 10% of the 2,115-leaf graph's time.
fn tree_graph(g: &mut GraphBuilder, tree: &LabelTree, class_scores: &str, group_scores: &str) {
    let classes = tree.group_of.len();
    let log_groups = g.op("LogSoftmax", &[group_scores], &[("axis", Attr::Int(-1))]);
    // The groups are the taxonomy's top level: its scores are the group classifier's (equal to
    // the sums of each group's class probabilities, as staging checks) without a scatter.
    g.op_into("Softmax", &[group_scores], &[("axis", Attr::Int(-1))], &names::level_probabilities(1));
    // Per-group sums, and each group's value back at its classes, as products with the one-hot
    // membership matrix ([groups, classes]; transposed for the sums): vectorised matrix products,
    // where a scatter and a gather along the class axis cost ONNX Runtime twice the rest of the tree
    // (measured at 2,115 classes in 10 groups).
    let groups = tree.groups();
    let mut one_hot = vec![0f32; groups * classes];
    tree.group_of.iter().enumerate().for_each(|(k, &group)| one_hot[group as usize * classes + k] = 1.0);
    let members = g.f32_tensor("group_members", &[groups, classes], &one_hot);
    let per_group_sum =
        |g: &mut GraphBuilder, values: &str| g.op("Gemm", &[values, &members], &[("transB", Attr::Int(1))]);
    // Each group's soft maximum m: (1/β)·ln Σ exp(max(β·(score − the row's best), floor)) + best.
    let top = g.op("ReduceMax", &[class_scores], &[("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(1))]);
    let shifted = g.op("Sub", &[class_scores, &top], &[]);
    let scale = g.scalar_f32(GROUP_MAX_SCALE);
    let scaled = g.op("Mul", &[&shifted, &scale], &[]);
    let floor = g.scalar_f32(SCALED_FLOOR);
    let scaled = g.op("Max", &[&scaled, &floor], &[]);
    let soft = g.op("Exp", &[&scaled], &[]);
    let soft = per_group_sum(g, &soft);
    let soft = g.op("Log", &[&soft], &[]);
    let inverse = g.scalar_f32(1.0 / GROUP_MAX_SCALE);
    let soft = g.op("Mul", &[&soft, &inverse], &[]);
    let shift = g.op("Add", &[&soft, &top], &[]); // [batch, groups]
    let at_classes = g.op("MatMul", &[&shift, &members], &[]);
    let within = g.op("Sub", &[class_scores, &at_classes], &[]);
    let exp = g.op("Exp", &[&within], &[]);
    let sums = per_group_sum(g, &exp);
    let sum_floor = g.scalar_f32(GROUP_SUM_FLOOR);
    let sums = g.op("Max", &[&sums, &sum_floor], &[]);
    let log_sums = g.op("Log", &[&sums], &[]);
    // Each group's offset: ln P(group) − m − ln Σ exp(score − m), then at its classes.
    let offsets = g.op("Sub", &[&log_groups, &log_sums], &[]);
    let offsets = g.op("Sub", &[&offsets, &shift], &[]);
    let offsets = g.op("MatMul", &[&offsets, &members], &[]); // [batch, classes]
    g.op_into("Add", &[class_scores, &offsets], &[], names::LOGITS);
}

/// Macro-F1 of `model` on labeled rows (0 when there are none).
fn macro_f1_of(model: &LexicalModel, rows: &[Row<'_>]) -> f64 {
    if rows.is_empty() {
        return 0.0;
    }
    let y_true: Vec<usize> = rows.iter().map(|(_, y)| *y).collect();
    let y_pred: Vec<usize> = rows.iter().map(|(f, _)| model.predict(f)).collect();
    crate::eval::macro_f1(&y_true, &y_pred, model.classes)
}

/// The final solve with rows `also` learned from after the choices: `solver`'s problems (the
/// rows `pool` of `model`, solved at `c`) once more with them, warm-started from its solution
/// (theirs at 0) under the final label tree; `model` is kept in `measured`. Without `also`:
/// `model` as it is. Returns the final model and the rows it learned from.
fn learn_also(
    mut solver: OvrSolver<'_>,
    model: LexicalModel,
    pool: &[Row<'_>],
    also: &[Row<'_>],
    c: f32,
    trees: Option<Trees<'_>>,
    measured: &mut Option<LexicalModel>,
) -> (LexicalModel, usize) {
    if also.is_empty() {
        return (model, pool.len());
    }
    let all: Vec<Row<'_>> = pool.iter().chain(also).copied().collect();
    let warm: Vec<Vec<f32>> = std::mem::take(&mut solver.alphas)
        .into_iter()
        .map(|a| a.into_iter().chain(also.iter().map(|_| 0.0)).collect())
        .collect();
    let (classes, settings, sets) = (warm.len(), solver.settings, solver.sets);
    drop(solver);
    let (all_model, _) =
        OvrSolver::new(&all, classes, settings, Some(&warm), trees.map(|t| t.final_tree), sets).solve(c);
    *measured = Some(model);
    (all_model, all.len())
}

/// The micro-F1 of the label sets `model`'s margins give labeled multi-label rows (each class with
/// a positive margin, or the best one when none is) against their `sets` (0 without rows): what
/// the multi-label C is chosen by, before calibration.
fn sign_micro_f1(model: &LexicalModel, rows: &[Row<'_>], sets: &[Vec<u32>]) -> f64 {
    let scores: Vec<f32> = rows.iter().flat_map(|&(bag, _)| model.logits(bag)).collect();
    let truth: Vec<Vec<u32>> = rows.iter().map(|&(_, row)| sets[row].clone()).collect();
    crate::eval::metrics::margin_micro_f1(&scores, model.classes, &truth)
}

/// Fits every class's one-vs-rest SVM of `problems` at `c` into `model` (its weights and biases),
/// classes in parallel (one `progress` step each), starting from and updating their dual
/// variables; each class's weights below `prune_below` dropped as soon as it is solved (a dense
/// vector per class lives only while that class is solved). Returns the passes the slowest class
/// needed.
fn solve_ovr(
    model: &mut LexicalModel,
    problems: &mut OvrSolver<'_>,
    c: f32,
    progress: &indicatif::ProgressBar,
) -> usize {
    use rayon::prelude::*;
    let OvrSolver { rows, sq_norms, features, y, alphas, settings, scope, sets, .. } = problems;
    let sets = *sets;
    let (rows, sq_norms, features, y, settings) = (&rows[..], &sq_norms[..], &features[..], &y[..], *settings);
    let group_of = model.tree.as_ref().map(|tree| &tree.group_of);
    let buckets = model.buckets;
    let prune = settings.prune_below.max(0.0);
    let solved: Vec<(Column, f32, usize)> = alphas
        .par_iter_mut()
        .enumerate()
        .map(|(k, alpha)| {
            let positive = |yi: usize| match sets {
                None => yi == k,
                Some(sets) => sets[yi].contains(&(k as u32)),
            };
            let signs: Vec<f32> = y.iter().map(|&yi| if positive(yi) { 1.0 } else { -1.0 }).collect();
            // With a label tree, the class's own group's rows alone.
            let subset = group_of.map(|group_of| &scope[group_of[k] as usize][..]);
            let problem = DualProblem { rows, sq_norms, signs: &signs, dims: features.len(), c, subset };
            let (w, b, iterations) =
                dual_cd_l2_svm(&problem, alpha, settings.tolerance, settings.max_iterations, settings.seed ^ k as u64);
            let column = w.into_iter().zip(features).filter(|(v, _)| v.abs() > prune).map(|(v, &f)| (f, v)).collect();
            progress.inc(1);
            (column, b, iterations)
        })
        .collect();
    let mut slowest = 0;
    let mut columns = Vec::with_capacity(solved.len());
    for (k, (column, b, iterations)) in solved.into_iter().enumerate() {
        columns.push(column);
        model.bias[k] = b;
        slowest = slowest.max(iterations);
    }
    model.weights = SparseWeights::from_columns(buckets, &columns, settings.classes_per_feature(columns.len()));
    slowest
}

/// Each sparse row's squared L2 norm.
fn squared_norms(rows: &[Vec<(u32, f32)>]) -> Vec<f32> {
    rows.iter().map(|r| r.iter().map(|(_, v)| v * v).sum()).collect()
}

/// One class's kept weights: (bucket, weight).
type Column = Vec<(u32, f32)>;

/// One binary problem: sparse rows (and their squared norms), their ±1 labels, the feature space
/// and C; `subset`: the rows that take part (None: all).
struct DualProblem<'a> {
    rows: &'a [Vec<(u32, f32)>],
    sq_norms: &'a [f32],
    signs: &'a [f32],
    dims: usize,
    c: f32,
    subset: Option<&'a [u32]>,
}

/// L2-regularised squared-hinge SVM (liblinear solver 1): minimises
/// ½‖w‖² + C Σ max(0, 1 − yᵢ(w·xᵢ + b))², the bias regularised as a constant feature of value 1,
/// by coordinate descent on the dual with a seeded random order per pass, starting from the dual
/// variables in `alpha` (zeros, or another C's solution: any α ≥ 0 is feasible; rows outside the
/// problem's subset stay at 0). Stops when the spread of projected gradients is below `tolerance`
/// or after `max_iterations` passes.
///
/// With liblinear's shrinking: a row at α = 0 whose gradient is above the last pass's largest
/// projected gradient is set aside for the following passes, and all rows are checked again
/// before stopping. In a one-vs-rest problem of many classes nearly every row is such a negative,
/// so after the first pass a class costs only its few support vectors.
fn dual_cd_l2_svm(
    problem: &DualProblem<'_>,
    alpha: &mut [f32],
    tolerance: f32,
    max_iterations: usize,
    seed: u64,
) -> (Vec<f32>, f32, usize) {
    let DualProblem { rows, sq_norms, signs, dims, c, subset } = *problem;
    let n = rows.len();
    let d_ii = 0.5 / c;
    // w = Σ αᵢ yᵢ xᵢ for the starting α.
    let mut w = vec![0f32; dims];
    let mut b = 0f32;
    for i in 0..n {
        if alpha[i] > 0.0 {
            let step = alpha[i] * signs[i];
            for &(f, v) in &rows[i] {
                w[f as usize] += step * v;
            }
            b += step;
        }
    }
    let mut index: Vec<usize> = match subset {
        Some(rows) => rows.iter().map(|&i| i as usize).collect(),
        None => (0..n).collect(),
    };
    let all = index.len();
    let mut active = all;
    // (The squared hinge has no upper bound on α, so only rows at α = 0 are ever shrunk.)
    let mut pg_max_old = f32::INFINITY;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut passes = 0;
    while passes < max_iterations.max(1) {
        passes += 1;
        index[..active].shuffle(&mut rng);
        let (mut pg_max, mut pg_min) = (f32::NEG_INFINITY, f32::INFINITY);
        let mut s = 0;
        while s < active {
            let i = index[s];
            let row = &rows[i];
            let margin: f32 = row.iter().map(|&(f, v)| w[f as usize] * v).sum::<f32>() + b;
            let g = signs[i] * margin - 1.0 + d_ii * alpha[i];
            let pg = if alpha[i] == 0.0 {
                if g > pg_max_old {
                    // Shrunk: out of the active set until the final check.
                    active -= 1;
                    index.swap(s, active);
                    continue;
                }
                g.min(0.0)
            } else {
                g
            };
            pg_max = pg_max.max(pg);
            pg_min = pg_min.min(pg);
            if pg.abs() > 1e-12 {
                let old = alpha[i];
                alpha[i] = (old - g / (sq_norms[i] + 1.0 + d_ii)).max(0.0);
                let step = (alpha[i] - old) * signs[i];
                for &(f, v) in row {
                    w[f as usize] += step * v;
                }
                b += step;
            }
            s += 1;
        }
        if pg_max - pg_min <= tolerance {
            if active == all {
                break;
            }
            // Converged on the active rows: check every row once more.
            active = all;
            pg_max_old = f32::INFINITY;
            continue;
        }
        pg_max_old = if pg_max <= 0.0 { f32::INFINITY } else { pg_max };
    }
    (w, b, passes)
}

/// Scores (row-major, [`LexicalModel::scores`]) and class ids of labeled rows.
fn scores_of<'a>(model: &LexicalModel, rows: impl Iterator<Item = &'a Row<'a>>) -> (Vec<f32>, Vec<usize>) {
    let (mut scores, mut y) = (Vec::new(), Vec::new());
    for (f, label) in rows {
        scores.extend(model.scores(f).0);
        y.push(*label);
    }
    (scores, y)
}

fn argmax(values: &[f32]) -> usize {
    (0..values.len()).fold(0, |best, k| if values[k] > values[best] { k } else { best })
}

/// The one-vs-rest SVMs of a training set, solved at one C after another, each solve
/// warm-started from the previous one's dual variables (`alphas`, one per class and row).
struct OvrSolver<'a> {
    base: LexicalModel,
    rows: Vec<Vec<(u32, f32)>>,
    sq_norms: Vec<f32>,
    /// The bucket of each compact feature index the rows use.
    features: Vec<u32>,
    y: Vec<usize>,
    alphas: Vec<Vec<f32>>,
    settings: &'a LexicalSettings,
    /// With a label tree: the rows of each group.
    scope: Vec<Vec<u32>>,
    /// Multi-label: the class sets the rows' fields index.
    sets: Option<&'a [Vec<u32>]>,
}

impl<'a> OvrSolver<'a> {
    /// The problems of `train`, starting from `warm` where it has a variable per class and row;
    /// with `tree`, each class's over its group's rows.
    fn new(
        train: &[Row<'_>],
        classes: usize,
        settings: &'a LexicalSettings,
        warm: Option<&[Vec<f32>]>,
        tree: Option<&LabelTree>,
        sets: Option<&'a [Vec<u32>]>,
    ) -> Self {
        let base = LexicalModel::untrained(train, classes, &settings.featurizer, tree);
        // The solver works over the features the rows have, numbered compactly: a class's dense
        // weight vector is then a few hundred KB rather than `buckets` floats, and stays in cache.
        let mut compact = vec![u32::MAX; base.buckets];
        let mut features: Vec<u32> = Vec::new();
        let rows: Vec<Vec<(u32, f32)>> = train
            .iter()
            .map(|(f, _)| {
                f.ids
                    .iter()
                    .copied()
                    .zip(base.values(f))
                    .filter(|(id, _)| *id != 0)
                    .map(|(id, v)| {
                        let slot = &mut compact[id as usize];
                        if *slot == u32::MAX {
                            *slot = features.len() as u32;
                            features.push(id);
                        }
                        (*slot, v)
                    })
                    .collect()
            })
            .collect();
        let sq_norms = squared_norms(&rows);
        let y: Vec<usize> = train.iter().map(|(_, y)| *y).collect();
        let alphas = match warm {
            Some(w) if w.len() == classes && w.iter().all(|a| a.len() == rows.len()) => w.to_vec(),
            _ => vec![vec![0.0; rows.len()]; classes],
        };
        let mut scope = vec![Vec::new(); tree.map_or(0, LabelTree::groups)];
        if let Some(tree) = tree {
            for (i, &class) in y.iter().enumerate() {
                scope[tree.group_of[class] as usize].push(i as u32);
            }
        }
        Self { base, rows, sq_norms, features, y, alphas, settings, scope, sets }
    }

    /// The model at `c`, and the passes its slowest class took.
    fn solve(&mut self, c: f32) -> (LexicalModel, usize) {
        let started = std::time::Instant::now();
        let mut model = self.base.clone();
        let classes = self.alphas.len();
        // A bar over the classes where a solve takes long enough to watch.
        let visible = self.settings.show_progress && classes * self.rows.len() >= PROGRESS_WORK;
        let progress = crate::common::progress_bar(visible, classes as u64, format!("svm C={c}"));
        let iterations = solve_ovr(&mut model, self, c, &progress);
        progress.finish_and_clear();
        let seconds = started.elapsed().as_secs_f64();
        // A long step (thousands of classes) says so as it ends; a quick one only at debug.
        if seconds >= 5.0 {
            tracing::info!(
                c,
                classes = self.alphas.len(),
                iterations,
                seconds = format!("{seconds:.1}"),
                "lexical svm solved"
            );
        } else {
            tracing::debug!(c, iterations, seconds, "lexical svm solved");
        }
        (model, iterations)
    }
}

/// Classes × rows past which a solve shows a progress bar (about a second of work).
const PROGRESS_WORK: usize = 5_000_000;

/// Solves the one-vs-rest SVMs on `train` for each C of `grid` (ascending), each solve
/// warm-started from the previous one's, handing each model to `visit`.
fn solve_grid(
    train: &[Row<'_>],
    classes: usize,
    settings: &LexicalSettings,
    tree: Option<&LabelTree>,
    grid: &[f32],
    mut visit: impl FnMut(f32, LexicalModel, usize),
) {
    let mut solver = OvrSolver::new(train, classes, settings, None, tree, None);
    for &c in grid {
        let (model, iterations) = solver.solve(c);
        visit(c, model, iterations);
    }
}

/// Where a walk over the (ascending) grid starts: the C nearest 1 on a log scale.
pub fn walk_start(grid: &[f32]) -> usize {
    (0..grid.len()).fold(0, |b, i| if grid[i].ln().abs() < grid[b].ln().abs() { i } else { b })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows borrowing `owned`'s bags.
    fn borrowed(owned: &[(Bag, usize)]) -> Vec<Row<'_>> {
        owned.iter().map(|(bag, y)| (bag, *y)).collect()
    }
    use crate::common::CSearch;

    /// Two classes told apart by which of two feature blocks a row draws from, with overlap.
    fn toy(n: usize, seed: u64) -> Vec<(Bag, usize)> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|i| {
                let y = i % 2;
                let f: Vec<u32> =
                    (0..6).map(|_| 1 + (y as u32) * 40 + rand::Rng::random_range(&mut rng, 0..60)).collect();
                (Bag::from_ids(f), y)
            })
            .collect()
    }

    /// Four classes in two groups ([0, 0, 1, 1]): a row draws from its group's feature block and
    /// its class's sub-block, with overlap.
    fn grouped(n: usize, seed: u64) -> Vec<(Bag, usize)> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|i| {
                let y = i % 4;
                let group = (y / 2) as u32;
                let mut f: Vec<u32> =
                    (0..4).map(|_| 1 + group * 50 + rand::Rng::random_range(&mut rng, 0..60)).collect();
                f.extend((0..3).map(|_| 120 + y as u32 * 20 + rand::Rng::random_range(&mut rng, 0..30)));
                (Bag::from_ids(f), y)
            })
            .collect()
    }

    #[test]
    fn a_label_tree_scores_classes_within_their_group_and_sums_to_the_group() {
        let settings = LexicalSettings {
            featurizer: FeaturizerSettings { buckets: 256, ..Default::default() },
            ..Default::default()
        };
        let (train, validation, test) = (grouped(400, 1), grouped(200, 2), grouped(200, 3));
        let groups = [0u32, 0, 1, 1];
        let fit = LexicalModel::fit(
            &borrowed(&train),
            Selection::Holdout { validation: &borrowed(&validation), refit: true, warm: None, also: &[] },
            4,
            &settings,
            Targets::Tree(&groups),
        );
        let model = fit.model;
        let tree = model.tree.as_ref().expect("a label tree");
        assert_eq!((tree.groups(), fit.trained_on), (2, 600));
        assert!(tree.svm.is_some_and(|s| s.temperature > 0.0));
        assert!(macro_f1_of(&model, &borrowed(&test)) > 0.8);
        for (bag, _) in &test[..20] {
            let mut probs = vec![0f32; 4];
            crate::eval::calibration::softmax(&model.logits(bag), &mut probs);
            // Each group's classes sum to the group classifier's probability.
            let values = model.values(bag);
            let mut group_probs = vec![0f32; 2];
            let group_logits = LexicalModel::linear(&tree.weights, &tree.bias, bag, &values);
            crate::eval::calibration::softmax(&group_logits, &mut group_probs);
            assert!((probs[0] + probs[1] - group_probs[0]).abs() < 1e-5, "{probs:?} {group_probs:?}");
            assert!((probs[2] + probs[3] - group_probs[1]).abs() < 1e-5, "{probs:?} {group_probs:?}");
        }
        // A group far below the row's best (a score gap past f32's exp range) keeps its share.
        let joint = tree.joint(&[0.0, -1.0, -200.0, -201.0], &[0.0, 0.0]);
        let mut probs = vec![0f32; 4];
        crate::eval::calibration::softmax(&joint, &mut probs);
        assert!(joint.iter().all(|l| l.is_finite()), "{joint:?}");
        assert!((probs[2] + probs[3] - 0.5).abs() < 1e-5 && probs[2] > probs[3], "{probs:?}");
    }

    #[test]
    fn a_subset_problem_is_the_problem_of_its_rows_alone() {
        let rows: Vec<Vec<(u32, f32)>> =
            grouped(120, 4).iter().map(|(b, _)| b.ids.iter().map(|&f| (f, 0.4)).collect()).collect();
        let signs: Vec<f32> = (0..120).map(|i| if i % 4 == 1 { 1.0 } else { -1.0 }).collect();
        let sq_norms = squared_norms(&rows);
        let subset: Vec<u32> = (0..120).filter(|i| i % 4 < 2).collect();
        let problem =
            DualProblem { rows: &rows, sq_norms: &sq_norms, signs: &signs, dims: 256, c: 1.0, subset: Some(&subset) };
        let mut alpha = vec![0.0; 120];
        let (w, b, _) = dual_cd_l2_svm(&problem, &mut alpha, 1e-4, 10_000, 1);
        assert!(alpha.iter().enumerate().all(|(i, a)| i % 4 < 2 || *a == 0.0), "rows outside stay out");
        let picked: Vec<Vec<(u32, f32)>> = subset.iter().map(|&i| rows[i as usize].clone()).collect();
        let picked_signs: Vec<f32> = subset.iter().map(|&i| signs[i as usize]).collect();
        let picked_norms = squared_norms(&picked);
        let alone = DualProblem {
            rows: &picked,
            sq_norms: &picked_norms,
            signs: &picked_signs,
            dims: 256,
            c: 1.0,
            subset: None,
        };
        let (w2, b2, _) = dual_cd_l2_svm(&alone, &mut vec![0.0; picked.len()], 1e-4, 10_000, 1);
        let gap = w.iter().zip(&w2).map(|(a, b)| (a - b).abs()).fold((b - b2).abs(), f32::max);
        assert!(gap < 1e-2, "same optimum: gap {gap}");
    }

    #[test]
    fn svm_solver_converges_separates_and_calibrates() {
        let settings = LexicalSettings {
            featurizer: FeaturizerSettings { buckets: 128, ..Default::default() },
            c_search: CSearch::Grid,
            ..Default::default()
        };
        let (train, validation) = (toy(400, 1), toy(200, 2));
        let fit = LexicalModel::fit(
            &borrowed(&train),
            Selection::Holdout { validation: &borrowed(&validation), refit: false, warm: None, also: &[] },
            2,
            &settings,
            Targets::Classes,
        );
        let (model, history, choice) = (fit.model, fit.history, fit.svm.unwrap());
        assert_eq!(history.len(), settings.c_grid.len());
        assert!(settings.c_grid.contains(&choice.c));
        assert!(choice.iterations < settings.max_iterations, "did not converge: {choice:?}");
        assert!(macro_f1_of(&model, &borrowed(&validation)) > 0.8, "{history:?}");
        assert!(choice.temperature > 0.0 && choice.temperature.is_finite());
        // Calibrated: no worse validation NLL than the uncalibrated margins (T = 1 is a candidate).
        let (logits, y) = scores_of(&model, borrowed(&validation).iter());
        let t = fit_temperature(&logits, 2, &y);
        assert!((t - 1.0).abs() < 0.05, "temperature already folded in, refit gives {t}");
    }

    #[test]
    fn a_multi_label_fit_gives_each_of_a_rows_classes_its_own_probability() {
        // Three classes on feature blocks 1..40, 41..80, 81..120; a row carries one or two of them
        // (the set a row's field indexes), drawing features from each of its classes' blocks.
        let sets: Vec<Vec<u32>> = vec![vec![0], vec![1], vec![2], vec![0, 1], vec![1, 2], vec![0, 2]];
        let rows = |n: usize, seed: u64| -> Vec<(Bag, usize)> {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..n)
                .map(|i| {
                    let set = i % sets.len();
                    let ids = sets[set]
                        .iter()
                        .flat_map(|&c| (0..4).map(move |_| c))
                        .map(|c| 1 + c * 40 + rand::Rng::random_range(&mut rng, 0..40))
                        .collect();
                    (Bag::from_ids(ids), set)
                })
                .collect()
        };
        let settings = LexicalSettings {
            featurizer: FeaturizerSettings { buckets: 128, ..Default::default() },
            ..Default::default()
        };
        let (train, validation) = (rows(600, 1), rows(300, 2));
        let fit = LexicalModel::fit(
            &borrowed(&train),
            Selection::Holdout { validation: &borrowed(&validation), refit: false, warm: None, also: &[] },
            3,
            &settings,
            Targets::Sets(&sets),
        );
        let thresholds = fit.thresholds.expect("multi-label fits tune thresholds");
        assert_eq!(thresholds.len(), 3);
        assert!(fit.svm.unwrap().shift.is_some() && fit.history.iter().all(|f| *f > 0.9), "{:?}", fit.history);
        // Every validation row: its classes' sigmoids above their thresholds, the others below.
        let sigmoid = |x: f32| 1.0 / (1.0 + (-x).exp());
        let mut exact = 0;
        for (bag, set) in &validation {
            let probs: Vec<f32> = fit.model.logits(bag).into_iter().map(sigmoid).collect();
            let chosen: Vec<u32> = (0..3).filter(|&c| probs[c] >= thresholds[c]).map(|c| c as u32).collect();
            exact += usize::from(chosen == sets[*set]);
        }
        assert!(exact * 10 >= validation.len() * 9, "{exact} of {} rows exactly right", validation.len());
    }

    #[test]
    fn refit_and_folds_train_on_every_row_they_chose_with() {
        let settings = LexicalSettings {
            featurizer: FeaturizerSettings { buckets: 128, ..Default::default() },
            ..Default::default()
        };
        let (train, validation, test) = (toy(300, 1), toy(100, 2), toy(200, 3));
        let holdout = LexicalModel::fit(
            &borrowed(&train),
            Selection::Holdout { validation: &borrowed(&validation), refit: false, warm: None, also: &[] },
            2,
            &settings,
            Targets::Classes,
        );
        let refit = LexicalModel::fit(
            &borrowed(&train),
            Selection::Holdout { validation: &borrowed(&validation), refit: true, warm: None, also: &[] },
            2,
            &settings,
            Targets::Classes,
        );
        assert_eq!((holdout.trained_on, refit.trained_on), (300, 400));
        // Same choice, different (larger) training set: different weights, still a good model.
        assert_eq!(holdout.svm.unwrap().c, refit.svm.unwrap().c);
        assert_ne!(holdout.model.weights, refit.model.weights);
        assert!(macro_f1_of(&refit.model, &borrowed(&test)) > 0.8);
        assert!(refit.measured.is_none());

        // Rows learned from after the choices: the same choices, the refit kept as the measured
        // model (to the bit: the same solve), and a final model of every row.
        let also = toy(100, 4);
        let all = LexicalModel::fit(
            &borrowed(&train),
            Selection::Holdout { validation: &borrowed(&validation), refit: true, warm: None, also: &borrowed(&also) },
            2,
            &settings,
            Targets::Classes,
        );
        assert_eq!(all.trained_on, 500);
        assert_eq!(all.svm.unwrap().c, refit.svm.unwrap().c);
        assert_eq!(all.measured.as_ref(), Some(&refit.model));
        assert_ne!(all.model.weights, refit.model.weights);
        assert!(macro_f1_of(&all.model, &borrowed(&test)) > 0.8);
        // The tree's groups are refitted alike: both models carry their own group classifier.
        let (tree_train, tree_validation, tree_also) = (grouped(400, 5), grouped(200, 6), grouped(200, 7));
        let groups = [0, 0, 1, 1];
        let wide = LexicalSettings {
            featurizer: FeaturizerSettings { buckets: 256, ..Default::default() },
            ..Default::default()
        };
        let tree = LexicalModel::fit(
            &borrowed(&tree_train),
            Selection::Holdout {
                validation: &borrowed(&tree_validation),
                refit: true,
                warm: None,
                also: &borrowed(&tree_also),
            },
            4,
            &wide,
            Targets::Tree(&groups),
        );
        let (final_tree, measured_tree) = (tree.model.tree.unwrap(), tree.measured.unwrap().tree.unwrap());
        assert_ne!(final_tree.weights, measured_tree.weights);
        assert_eq!(final_tree.group_of, measured_tree.group_of);

        let pool: Vec<_> = train.iter().chain(&validation).cloned().collect();
        let labels: Vec<String> = pool.iter().map(|(_, y)| y.to_string()).collect();
        let folds = crate::data::stratified_group_folds(&labels, None, 4, 7);
        let cv = LexicalModel::fit(
            &borrowed(&pool),
            Selection::Folds { folds: &folds, also: &[] },
            2,
            &settings,
            Targets::Classes,
        );
        assert_eq!(cv.trained_on, 400);
        assert_eq!(cv.history.len(), settings.c_grid.len());
        assert!(cv.history.iter().all(|f| (0.0..=1.0).contains(f)));
        let choice = cv.svm.unwrap();
        assert!(choice.temperature.is_finite() && choice.temperature > 0.0);
        assert!(macro_f1_of(&cv.model, &borrowed(&test)) > 0.8);
    }

    #[test]
    fn the_walk_starts_near_one_and_tries_fewer_c_than_the_grid() {
        assert_eq!(walk_start(&[0.1, 0.3, 1.0, 3.0, 10.0, 30.0]), 2);
        assert_eq!(walk_start(&[0.01, 0.1]), 1);
        assert_eq!(walk_start(&[5.0]), 0);
        assert!(CSearch::Auto.walks(CSearch::WALK_ABOVE + 1) && !CSearch::Auto.walks(CSearch::WALK_ABOVE));
        assert!(CSearch::Walk.walks(2) && !CSearch::Grid.walks(10_000));

        let (train, validation) = (toy(400, 1), toy(200, 2));
        let fit = |c_search| {
            let settings = LexicalSettings {
                featurizer: FeaturizerSettings { buckets: 128, ..Default::default() },
                c_search,
                ..Default::default()
            };
            LexicalModel::fit(
                &borrowed(&train),
                Selection::Holdout { validation: &borrowed(&validation), refit: false, warm: None, also: &[] },
                2,
                &settings,
                Targets::Classes,
            )
        };
        let (grid, walk) = (fit(CSearch::Grid), fit(CSearch::Walk));
        assert_eq!(grid.history.len(), 6);
        // From C = 1 up while better, then down while better: at least the start and one on each
        // side that was no better, at most the grid.
        assert!((2..6).contains(&walk.history.len()), "{:?}", walk.history);
        let best = walk.history.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        assert!(best >= grid.history[2], "the walk's best is at least its start's (grid's C = 1)");
        assert!(macro_f1_of(&walk.model, &borrowed(&validation)) > 0.8);
        // Its dual variables warm-start a fit on the same rows, which then needs almost no passes.
        let alphas = walk.alphas.expect("svm on validation keeps its dual variables");
        let settings = LexicalSettings {
            featurizer: FeaturizerSettings { buckets: 128, ..Default::default() },
            c_grid: vec![walk.svm.unwrap().c],
            ..Default::default()
        };
        let again = LexicalModel::fit(
            &borrowed(&train),
            Selection::Holdout { validation: &borrowed(&validation), refit: false, warm: Some(&alphas), also: &[] },
            2,
            &settings,
            Targets::Classes,
        );
        assert!(again.svm.unwrap().iterations <= 2, "{:?}", again.svm);
    }

    #[test]
    fn shrinking_reaches_the_optimum_many_negatives_and_all() {
        // One positive class of 5 rows against 300 negatives: the unshrunk solution (tolerance
        // reached with every row active) and the shrunk one agree.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let rows: Vec<Vec<(u32, f32)>> = (0..305)
            .map(|i| {
                let mut r: Vec<(u32, f32)> = (0..4).map(|_| (rand::Rng::random_range(&mut rng, 1..200), 0.5)).collect();
                if i < 5 {
                    r.push((0, 1.0));
                }
                r.sort_by_key(|x| x.0);
                r.dedup_by_key(|x| x.0);
                r
            })
            .collect();
        let signs: Vec<f32> = (0..305).map(|i| if i < 5 { 1.0 } else { -1.0 }).collect();
        let sq_norms = squared_norms(&rows);
        let problem = DualProblem { rows: &rows, sq_norms: &sq_norms, signs: &signs, dims: 200, c: 1.0, subset: None };
        let (w, b, _) = dual_cd_l2_svm(&problem, &mut [0.0; 305], 1e-5, 10_000, 1);
        let margin = |r: &Vec<(u32, f32)>| r.iter().map(|&(f, v)| w[f as usize] * v).sum::<f32>() + b;
        // Primal optimality: w = C·Σ 2·max(0, 1 − y·m)·y·x over every row (squared hinge, D = 1/(2C)).
        let mut expected = vec![0f32; 200];
        for (r, &y) in rows.iter().zip(&signs) {
            let slack = (1.0 - y * margin(r)).max(0.0);
            for &(f, v) in r {
                expected[f as usize] += 2.0 * slack * y * v;
            }
        }
        let gap = w.iter().zip(&expected).map(|(a, e)| (a - e).abs()).fold(0f32, f32::max);
        assert!(gap < 1e-3, "KKT gap {gap}");
        assert!(rows[..5].iter().all(|r| margin(r) > 0.0), "positives on their side");
    }

    #[test]
    fn dual_cd_reaches_the_optimum_of_a_tiny_problem() {
        // x = ±1 in one dimension, labels by sign: the optimum is symmetric, b = 0 and w > 0.
        let rows = vec![vec![(1u32, 1.0f32)], vec![(1, -1.0)], vec![(1, 2.0)], vec![(1, -2.0)]];
        let signs = [1.0, -1.0, 1.0, -1.0];
        let sq_norms = squared_norms(&rows);
        let problem = DualProblem { rows: &rows, sq_norms: &sq_norms, signs: &signs, dims: 2, c: 1.0, subset: None };
        let (w, b, passes) = dual_cd_l2_svm(&problem, &mut [0.0; 4], 1e-4, 1000, 0);
        assert!(w[1] > 0.4 && b.abs() < 1e-3, "w {w:?} b {b} after {passes} passes");
        assert!(passes < 1000);
    }
}
