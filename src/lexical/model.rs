//! The lexical classifier: a binary bag of hashed n-grams, IDF-weighted and L2-normalised, into a
//! linear layer. The default solver is liblinear's: one-vs-rest L2-regularised squared-hinge SVMs
//! solved to convergence by dual coordinate descent (Hsieh et al., ICML 2008), the regularisation
//! strength `C` chosen on the validation rows, and the margins calibrated into probabilities by a
//! temperature fitted on the validation rows (softmax(margins / T); T is folded into the weights, so
//! the exported graph is unchanged). The earlier AdaGrad softmax regression stays as `solver =
//! "sgd"`. Export is an embedding-bag ONNX graph (Gather rows of the weight matrix by feature id,
//! weighted sum, bias, softmax), served by the same ONNX Runtime path as every model.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::featurizer::Bag;
use crate::common::{FeaturizerSettings, Head, LexicalSettings, LexicalSolver, SvmChoice, TermFrequency, names};
use crate::eval::calibration::fit_temperature;
use crate::onnx::graph::{Attr, Dim, GraphBuilder};
use crate::onnx::proto::data_type;

/// How the lexical solver makes its choices (C, temperature; `sgd`: the epoch).
#[derive(Debug, Clone, Copy)]
pub enum Selection<'a> {
    /// On these validation rows; with `refit`, the final model is then trained on train +
    /// validation at the chosen C (the temperature stays the validation-fitted one).
    Holdout { validation: &'a [(Bag, usize)], refit: bool },
    /// By cross-validation over the training rows split into these folds (row indices into
    /// them); the final model is trained on all of them.
    Folds(&'a [Vec<usize>]),
}

/// A trained lexical model and how it was chosen.
#[derive(Debug, Clone)]
pub struct LexicalFit {
    pub model: LexicalModel,
    /// Validation (or out-of-fold) macro-F1 per epoch (`sgd`) or per C of the grid (`svm`).
    pub history: Vec<f64>,
    pub svm: Option<SvmChoice>,
    /// Rows the final model was trained on.
    pub trained_on: usize,
}

/// Weights of a trained lexical model.
#[derive(Debug, Clone, PartialEq)]
pub struct LexicalModel {
    pub classes: usize,
    pub buckets: usize,
    /// `[buckets, classes]`, row-major; row 0 (the reserved bucket) stays zero.
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
    /// Inverse document frequency per bucket (0 for bucket 0).
    pub idf: Vec<f32>,
    /// First bucket of the character block when word and character n-grams are normalised
    /// separately (`norm = "blocks"`); `None`: one norm over all features.
    pub char_block: Option<u32>,
    /// How a feature's count weighs (the graph reads counts as `token_type_ids` when sublinear).
    pub tf: TermFrequency,
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

    /// Logits of one text (the reference forward pass for the parity check).
    pub fn logits(&self, features: &Bag) -> Vec<f32> {
        let c = self.classes;
        let mut out = self.bias.clone();
        for (&f, x) in features.ids.iter().zip(self.values(features)) {
            let row = &self.weights[f as usize * c..(f as usize + 1) * c];
            for k in 0..c {
                out[k] += x * row[k];
            }
        }
        out
    }

    /// Class of the largest logit.
    pub fn predict(&self, features: &Bag) -> usize {
        argmax(&self.logits(features))
    }

    /// An untrained model with the IDF of `train`.
    fn with_idf(train: &[(Bag, usize)], classes: usize, settings: &FeaturizerSettings) -> Self {
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
            weights: vec![0.0; buckets * classes],
            bias: vec![0.0; classes],
            idf,
            char_block,
            tf: settings.tf,
        }
    }

    /// Trains with the configured solver, making its choices as `selection` says (`sgd`: early
    /// stopping on the validation rows only).
    pub fn fit(
        train: &[(Bag, usize)],
        selection: Selection<'_>,
        classes: usize,
        settings: &LexicalSettings,
    ) -> LexicalFit {
        match (settings.solver, selection) {
            (LexicalSolver::Sgd, Selection::Holdout { validation, .. }) => {
                let (model, history) = Self::train(train, validation, classes, settings);
                LexicalFit { model, history, svm: None, trained_on: train.len() }
            }
            (LexicalSolver::Sgd, Selection::Folds(_)) => {
                // Callers refuse this combination; the validation-free fallback is one pass.
                let (model, history) = Self::train(train, &[], classes, settings);
                LexicalFit { model, history, svm: None, trained_on: train.len() }
            }
            (LexicalSolver::Svm, selection) => Self::train_svm(train, selection, classes, settings),
        }
    }

    /// One-vs-rest squared-hinge SVMs by dual coordinate descent for each C of the grid (ascending,
    /// warm-started); keeps the C with the best macro-F1 on the validation rows or out of fold
    /// (ties: the smaller C), fits the temperature on the same rows, and — after cross-validation
    /// or with `refit` — trains the final model on every row used for the choice at that C.
    fn train_svm(
        train: &[(Bag, usize)],
        selection: Selection<'_>,
        classes: usize,
        settings: &LexicalSettings,
    ) -> LexicalFit {
        let mut grid: Vec<f32> = if settings.c_grid.is_empty() { vec![1.0] } else { settings.c_grid.clone() };
        grid.sort_by(f32::total_cmp);
        let (mut model, history, c, iterations, temperature, trained_on) = match selection {
            Selection::Holdout { validation, refit } => {
                let mut best: Option<(Self, f64, f32, usize)> = None;
                let mut history = Vec::new();
                solve_grid(train, classes, settings, &grid, |c, model, iterations| {
                    let f1 = macro_f1_of(&model, validation);
                    history.push(f1);
                    tracing::debug!(c, validation_macro_f1 = f1, iterations, "lexical svm");
                    if best.as_ref().is_none_or(|b| f1 > b.1) {
                        best = Some((model, f1, c, iterations));
                    }
                });
                let (model, _, c, iterations) =
                    best.unwrap_or_else(|| (Self::with_idf(train, classes, &settings.featurizer), 0.0, grid[0], 0));
                let temperature = if settings.calibrate && !validation.is_empty() {
                    let (logits, y) = logits_of(&model, validation.iter());
                    fit_temperature(&logits, classes, &y)
                } else {
                    1.0
                };
                if refit && !validation.is_empty() {
                    let pool: Vec<(Bag, usize)> = train.iter().chain(validation).cloned().collect();
                    let (model, iterations) = solve_at(&pool, classes, settings, c);
                    (model, history, c, iterations, temperature, pool.len())
                } else {
                    (model, history, c, iterations, temperature, train.len())
                }
            }
            Selection::Folds(folds) => {
                // Out-of-fold logits per C, row-major over `train`.
                let mut oof = vec![vec![0f32; train.len() * classes]; grid.len()];
                for fold in folds {
                    let mut held = vec![false; train.len()];
                    fold.iter().for_each(|&r| held[r] = true);
                    let rest: Vec<(Bag, usize)> =
                        train.iter().zip(&held).filter(|(_, h)| !**h).map(|(row, _)| row.clone()).collect();
                    let mut g = 0;
                    solve_grid(&rest, classes, settings, &grid, |_, model, _| {
                        for &r in fold {
                            oof[g][r * classes..(r + 1) * classes].copy_from_slice(&model.logits(&train[r].0));
                        }
                        g += 1;
                    });
                }
                let y: Vec<usize> = train.iter().map(|(_, y)| *y).collect();
                let history: Vec<f64> = oof
                    .iter()
                    .map(|logits| {
                        let pred: Vec<usize> = logits.chunks_exact(classes).map(argmax).collect();
                        crate::eval::macro_f1(&y, &pred, classes)
                    })
                    .collect();
                let best = (0..grid.len()).fold(0, |b, i| if history[i] > history[b] { i } else { b });
                let temperature = if settings.calibrate { fit_temperature(&oof[best], classes, &y) } else { 1.0 };
                let (model, iterations) = solve_at(train, classes, settings, grid[best]);
                (model, history, grid[best], iterations, temperature, train.len())
            }
        };
        model.weights.iter_mut().for_each(|w| *w /= temperature);
        model.bias.iter_mut().for_each(|b| *b /= temperature);
        LexicalFit { model, history, svm: Some(SvmChoice { c, temperature, iterations }), trained_on }
    }

    /// Trains on `train` (feature lists and class ids), keeping the epoch with the best
    /// macro-F1 on `validation`. Returns the model and validation macro-F1 per epoch.
    pub fn train(
        train: &[(Bag, usize)],
        validation: &[(Bag, usize)],
        classes: usize,
        settings: &LexicalSettings,
    ) -> (Self, Vec<f64>) {
        let buckets = settings.featurizer.buckets as usize;
        let n = train.len() as f32;
        let mut model = Self::with_idf(train, classes, &settings.featurizer);
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
        let (mut best, mut best_f1, mut stale, mut history) = (model.clone(), -1.0f64, 0usize, Vec::new());
        let lr = settings.learning_rate;
        let mut probs = vec![0f32; classes];
        for _epoch in 0..settings.epochs.max(1) {
            order.shuffle(&mut rng);
            for &i in &order {
                let (features, y) = (&train[i].0, train[i].1);
                let values = model.values(features);
                let logits = {
                    let mut out = model.bias.clone();
                    for (&f, &x) in features.ids.iter().zip(&values) {
                        let row = &model.weights[f as usize * classes..(f as usize + 1) * classes];
                        for k in 0..classes {
                            out[k] += x * row[k];
                        }
                    }
                    out
                };
                crate::eval::calibration::softmax(&logits, &mut probs);
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
                        let gw = g * x + settings.l2 * model.weights[idx];
                        g2[idx] += gw * gw;
                        model.weights[idx] -= lr * gw / (g2[idx].sqrt() + 1e-8);
                    }
                }
            }
            let y_true: Vec<usize> = validation.iter().map(|(_, y)| *y).collect();
            let y_pred: Vec<usize> = validation.iter().map(|(f, _)| model.predict(f)).collect();
            let f1 = if validation.is_empty() { 0.0 } else { crate::eval::macro_f1(&y_true, &y_pred, classes) };
            history.push(f1);
            if f1 > best_f1 {
                best_f1 = f1;
                best = model.clone();
                stale = 0;
            } else {
                stale += 1;
                if stale >= settings.patience.max(1) {
                    break;
                }
            }
        }
        (best, history)
    }

    /// The embedding-bag ONNX graph: inputs `input_ids` (feature ids), `attention_mask` and, with
    /// sublinear tf, `token_type_ids` (feature counts); outputs `logits` and `probabilities`.
    pub fn export(&self, head: Head, metadata: &[(&str, String)]) -> Vec<u8> {
        let mut g = GraphBuilder::new("prodcat_lexical_classifier");
        let dims = [Dim::Named("batch"), Dim::Named("features")];
        let ids = g.input(names::INPUT_IDS, data_type::INT64, &dims);
        let mask = g.input(names::ATTENTION_MASK, data_type::INT64, &dims);
        let idf = g.f32_tensor("idf", &[self.buckets], &self.idf);
        let weights = g.f32_tensor("weights", &[self.buckets, self.classes], &self.weights);
        let bias = g.f32_tensor("bias", &[self.classes], &self.bias);
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
        let w = g.op("Unsqueeze", &[&w, &axis_1], &[]); // [batch, 1, features]
        let rows = g.op("Gather", &[&weights, &ids], &[("axis", Attr::Int(0))]); // [batch, features, classes]
        let bag = g.op("MatMul", &[&w, &rows], &[]); // [batch, 1, classes]
        let bag = g.op("Squeeze", &[&bag, &axis_1], &[]);
        g.op_into("Add", &[&bag, &bias], &[], names::LOGITS);
        g.head_outputs(head, self.classes);
        g.finish(metadata)
    }
}

/// Macro-F1 of `model` on labeled rows (0 when there are none).
fn macro_f1_of(model: &LexicalModel, rows: &[(Bag, usize)]) -> f64 {
    if rows.is_empty() {
        return 0.0;
    }
    let y_true: Vec<usize> = rows.iter().map(|(_, y)| *y).collect();
    let y_pred: Vec<usize> = rows.iter().map(|(f, _)| model.predict(f)).collect();
    crate::eval::macro_f1(&y_true, &y_pred, model.classes)
}

/// Fits every class's one-vs-rest SVM into `model` (weights column k, bias k), classes in
/// parallel. Returns the passes the slowest class needed.
fn solve_ovr(
    model: &mut LexicalModel,
    rows: &[Vec<(u32, f32)>],
    y: &[usize],
    c: f32,
    settings: &LexicalSettings,
    alphas: &mut [Vec<f32>],
) -> usize {
    use rayon::prelude::*;
    let classes = model.classes;
    let buckets = model.buckets;
    let solved: Vec<(Vec<f32>, f32, usize)> = alphas
        .par_iter_mut()
        .enumerate()
        .map(|(k, alpha)| {
            let signs: Vec<f32> = y.iter().map(|&yi| if yi == k { 1.0 } else { -1.0 }).collect();
            let problem = DualProblem { rows, signs: &signs, dims: buckets, c };
            dual_cd_l2_svm(&problem, alpha, settings.tolerance, settings.max_iterations, settings.seed ^ k as u64)
        })
        .collect();
    let mut slowest = 0;
    for (k, (w, b, iterations)) in solved.into_iter().enumerate() {
        for (f, value) in w.into_iter().enumerate() {
            model.weights[f * classes + k] = value;
        }
        model.bias[k] = b;
        slowest = slowest.max(iterations);
    }
    slowest
}

/// One binary problem: sparse rows, their ±1 labels, the feature space and C.
struct DualProblem<'a> {
    rows: &'a [Vec<(u32, f32)>],
    signs: &'a [f32],
    dims: usize,
    c: f32,
}

/// L2-regularised squared-hinge SVM (liblinear solver 1): minimises
/// ½‖w‖² + C Σ max(0, 1 − yᵢ(w·xᵢ + b))², the bias regularised as a constant feature of value 1,
/// by coordinate descent on the dual with a seeded random order per pass, starting from the dual
/// variables in `alpha` (zeros, or another C's solution: any α ≥ 0 is feasible). Stops when the
/// spread of projected gradients is below `tolerance` or after `max_iterations` passes.
fn dual_cd_l2_svm(
    problem: &DualProblem<'_>,
    alpha: &mut [f32],
    tolerance: f32,
    max_iterations: usize,
    seed: u64,
) -> (Vec<f32>, f32, usize) {
    let DualProblem { rows, signs, dims, c } = *problem;
    let n = rows.len();
    let d_ii = 0.5 / c;
    let q: Vec<f32> = rows.iter().map(|r| r.iter().map(|(_, v)| v * v).sum::<f32>() + 1.0 + d_ii).collect();
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
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut passes = 0;
    while passes < max_iterations.max(1) {
        passes += 1;
        order.shuffle(&mut rng);
        let (mut max_pg, mut min_pg) = (f32::NEG_INFINITY, f32::INFINITY);
        for &i in &order {
            let row = &rows[i];
            let margin: f32 = row.iter().map(|&(f, v)| w[f as usize] * v).sum::<f32>() + b;
            let g = signs[i] * margin - 1.0 + d_ii * alpha[i];
            let pg = if alpha[i] == 0.0 { g.min(0.0) } else { g };
            max_pg = max_pg.max(pg);
            min_pg = min_pg.min(pg);
            if pg.abs() > 1e-12 {
                let old = alpha[i];
                alpha[i] = (old - g / q[i]).max(0.0);
                let step = (alpha[i] - old) * signs[i];
                for &(f, v) in row {
                    w[f as usize] += step * v;
                }
                b += step;
            }
        }
        if max_pg - min_pg <= tolerance {
            break;
        }
    }
    (w, b, passes)
}

/// Logits (row-major) and class ids of labeled rows.
fn logits_of<'a>(model: &LexicalModel, rows: impl Iterator<Item = &'a (Bag, usize)>) -> (Vec<f32>, Vec<usize>) {
    let (mut logits, mut y) = (Vec::new(), Vec::new());
    for (f, label) in rows {
        logits.extend(model.logits(f));
        y.push(*label);
    }
    (logits, y)
}

fn argmax(values: &[f32]) -> usize {
    (0..values.len()).fold(0, |best, k| if values[k] > values[best] { k } else { best })
}

/// Solves the one-vs-rest SVMs on `train` for each C of `grid` (ascending), each solve
/// warm-started from the previous one's dual variables, handing each model to `visit`.
fn solve_grid(
    train: &[(Bag, usize)],
    classes: usize,
    settings: &LexicalSettings,
    grid: &[f32],
    mut visit: impl FnMut(f32, LexicalModel, usize),
) {
    let base = LexicalModel::with_idf(train, classes, &settings.featurizer);
    let rows: Vec<Vec<(u32, f32)>> = train
        .iter()
        .map(|(f, _)| f.ids.iter().copied().zip(base.values(f)).filter(|(id, _)| *id != 0).collect())
        .collect();
    let y: Vec<usize> = train.iter().map(|(_, y)| *y).collect();
    let mut alphas: Vec<Vec<f32>> = vec![vec![0.0; rows.len()]; classes];
    for &c in grid {
        let mut model = base.clone();
        let iterations = solve_ovr(&mut model, &rows, &y, c, settings, &mut alphas);
        visit(c, model, iterations);
    }
}

/// The model solved on `train` at one C, and the passes it took.
fn solve_at(train: &[(Bag, usize)], classes: usize, settings: &LexicalSettings, c: f32) -> (LexicalModel, usize) {
    let mut out = None;
    solve_grid(train, classes, settings, &[c], |_, model, iterations| out = Some((model, iterations)));
    out.unwrap_or_else(|| (LexicalModel::with_idf(train, classes, &settings.featurizer), 0))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn svm_solver_converges_separates_and_calibrates() {
        let settings = LexicalSettings {
            featurizer: FeaturizerSettings { buckets: 128, ..Default::default() },
            ..Default::default()
        };
        let (train, validation) = (toy(400, 1), toy(200, 2));
        let fit = LexicalModel::fit(&train, Selection::Holdout { validation: &validation, refit: false }, 2, &settings);
        let (model, history, choice) = (fit.model, fit.history, fit.svm.unwrap());
        assert_eq!(history.len(), settings.c_grid.len());
        assert!(settings.c_grid.contains(&choice.c));
        assert!(choice.iterations < settings.max_iterations, "did not converge: {choice:?}");
        assert!(macro_f1_of(&model, &validation) > 0.8, "{history:?}");
        assert!(choice.temperature > 0.0 && choice.temperature.is_finite());
        // Calibrated: no worse validation NLL than the uncalibrated margins (T = 1 is a candidate).
        let (logits, y) = logits_of(&model, validation.iter());
        let t = fit_temperature(&logits, 2, &y);
        assert!((t - 1.0).abs() < 0.05, "temperature already folded in, refit gives {t}");
    }

    #[test]
    fn refit_and_folds_train_on_every_row_they_chose_with() {
        let settings = LexicalSettings {
            featurizer: FeaturizerSettings { buckets: 128, ..Default::default() },
            ..Default::default()
        };
        let (train, validation, test) = (toy(300, 1), toy(100, 2), toy(200, 3));
        let holdout =
            LexicalModel::fit(&train, Selection::Holdout { validation: &validation, refit: false }, 2, &settings);
        let refit =
            LexicalModel::fit(&train, Selection::Holdout { validation: &validation, refit: true }, 2, &settings);
        assert_eq!((holdout.trained_on, refit.trained_on), (300, 400));
        // Same choice, different (larger) training set: different weights, still a good model.
        assert_eq!(holdout.svm.unwrap().c, refit.svm.unwrap().c);
        assert_ne!(holdout.model.weights, refit.model.weights);
        assert!(macro_f1_of(&refit.model, &test) > 0.8);

        let pool: Vec<_> = train.iter().chain(&validation).cloned().collect();
        let labels: Vec<String> = pool.iter().map(|(_, y)| y.to_string()).collect();
        let folds = crate::data::stratified_group_folds(&labels, None, 4, 7);
        let cv = LexicalModel::fit(&pool, Selection::Folds(&folds), 2, &settings);
        assert_eq!(cv.trained_on, 400);
        assert_eq!(cv.history.len(), settings.c_grid.len());
        assert!(cv.history.iter().all(|f| (0.0..=1.0).contains(f)));
        let choice = cv.svm.unwrap();
        assert!(choice.temperature.is_finite() && choice.temperature > 0.0);
        assert!(macro_f1_of(&cv.model, &test) > 0.8);
    }

    #[test]
    fn dual_cd_reaches_the_optimum_of_a_tiny_problem() {
        // x = ±1 in one dimension, labels by sign: the optimum is symmetric, b = 0 and w > 0.
        let rows = vec![vec![(1u32, 1.0f32)], vec![(1, -1.0)], vec![(1, 2.0)], vec![(1, -2.0)]];
        let signs = [1.0, -1.0, 1.0, -1.0];
        let problem = DualProblem { rows: &rows, signs: &signs, dims: 2, c: 1.0 };
        let (w, b, passes) = dual_cd_l2_svm(&problem, &mut [0.0; 4], 1e-4, 1000, 0);
        assert!(w[1] > 0.4 && b.abs() < 1e-3, "w {w:?} b {b} after {passes} passes");
        assert!(passes < 1000);
    }
}
