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

/// How the lexical solver makes its choices (C, temperature; `sgd`: the epoch).
#[derive(Debug, Clone, Copy)]
pub enum Selection<'a> {
    /// On these validation rows; with `refit`, the final model is then trained on train +
    /// validation at the chosen C (the temperature stays the validation-fitted one).
    /// `warm`: dual variables to start from ([`LexicalFit::alphas`] of a fit on the same rows).
    Holdout { validation: &'a [(Bag, usize)], refit: bool, warm: Option<&'a [Vec<f32>]> },
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
    /// `svm` on a validation split: the dual variables (per class, per training row) at the chosen
    /// C, from which another fit on the same rows starts nearly solved.
    pub alphas: Option<DualVariables>,
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
        let mut out = self.bias.clone();
        for (&f, x) in features.ids.iter().zip(self.values(features)) {
            self.weights.add_row(f as usize, x, &mut out);
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
            weights: SparseWeights::empty(buckets, classes),
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
                LexicalFit { model, history, svm: None, trained_on: train.len(), alphas: None }
            }
            (LexicalSolver::Sgd, Selection::Folds(_)) => {
                // Callers refuse this combination; the validation-free fallback is one pass.
                let (model, history) = Self::train(train, &[], classes, settings);
                LexicalFit { model, history, svm: None, trained_on: train.len(), alphas: None }
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
        let (mut model, history, c, iterations, temperature, trained_on, alphas) = match selection {
            Selection::Holdout { validation, refit, warm } => {
                let mut best: Option<(Self, f64, f32, usize)> = None;
                let mut best_alphas: Option<Vec<Vec<f32>>> = None;
                let mut history = Vec::new();
                // Keeps the better model (ties: the smaller C); says whether this one was better.
                let mut score = |c: f32, model: Self, iterations: usize| -> bool {
                    let f1 = macro_f1_of(&model, validation);
                    history.push(f1);
                    tracing::debug!(c, validation_macro_f1 = f1, iterations, "lexical svm");
                    let better = best.as_ref().is_none_or(|b| f1 > b.1 || (f1 == b.1 && c < b.2));
                    if better {
                        best = Some((model, f1, c, iterations));
                    }
                    better
                };
                let mut solver = OvrSolver::new(train, classes, settings, warm);
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
                    // Started from the chosen C's solution, the validation rows' variables at 0.
                    let warm: Option<Vec<Vec<f32>>> = best_alphas.as_ref().map(|alphas| {
                        alphas
                            .iter()
                            .map(|a| a.iter().copied().chain(validation.iter().map(|_| 0.0)).collect())
                            .collect()
                    });
                    let (model, iterations) = OvrSolver::new(&pool, classes, settings, warm.as_deref()).solve(c);
                    (model, history, c, iterations, temperature, pool.len(), None)
                } else {
                    (model, history, c, iterations, temperature, train.len(), best_alphas)
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
                let (model, iterations) = OvrSolver::new(train, classes, settings, None).solve(grid[best]);
                (model, history, grid[best], iterations, temperature, train.len(), None)
            }
        };
        model.weights.scale(1.0 / temperature);
        model.bias.iter_mut().for_each(|b| *b /= temperature);
        LexicalFit { model, history, svm: Some(SvmChoice { c, temperature, iterations }), trained_on, alphas }
    }

    /// Trains on `train` (feature lists and class ids), keeping the epoch with the best
    /// macro-F1 on `validation`. Returns the model and validation macro-F1 per epoch. The weights
    /// are dense while they learn (`buckets × classes`; training refuses sizes that would not fit),
    /// then stored sparsely like the `svm` solver's.
    pub fn train(
        train: &[(Bag, usize)],
        validation: &[(Bag, usize)],
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
        model.weights = SparseWeights::from_dense(buckets, classes, &best.0, settings.max_classes_per_feature);
        model.bias = best.1;
        (model, history)
    }

    /// Whether the graph keeps a dense `[buckets, classes]` matrix: when some feature has a weight
    /// for every class (the sparse rows would be as wide as dense ones, and gathering dense rows
    /// into a MatMul serves 1.5× faster than the scatter: 10 PriceRunner categories, 50,735 against
    /// 33,488 titles/s) and the matrix fits in an ONNX file.
    pub fn dense_graph(&self) -> bool {
        self.weights.stats().width >= self.classes && (self.buckets * self.classes * 4) < (1 << 30)
    }

    /// The embedding-bag ONNX graph, dense ([`Self::dense_graph`]) or sparse: inputs `input_ids` (feature ids), `attention_mask` and,
    /// with sublinear tf, `token_type_ids` (feature counts); outputs `logits` and `probabilities`.
    /// Each feature id picks its slot (`slot_of`), the slot its row of class ids and weights
    /// (padded to the longest row), and the weights scaled by the feature's value are
    /// scatter-added into the bias.
    pub fn export(&self, head: Head, taxonomy: Option<&Taxonomy>, metadata: &[(&str, String)]) -> OnnxFiles {
        let mut g = GraphBuilder::new("prodcat_lexical_classifier");
        let dims = [Dim::Named("batch"), Dim::Named("features")];
        let ids = g.input(names::INPUT_IDS, data_type::INT64, &dims);
        let mask = g.input(names::ATTENTION_MASK, data_type::INT64, &dims);
        let idf = g.f32_tensor("idf", &[self.buckets], &self.idf);
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
        let gather = [("axis", Attr::Int(0))];
        if self.dense_graph() {
            let weights = g.f32_tensor("weights", &[self.buckets, self.classes], &self.weights.to_dense());
            let w = g.op("Unsqueeze", &[&w, &axis_1], &[]); // [batch, 1, features]
            let rows = g.op("Gather", &[&weights, &ids], &gather); // [batch, features, classes]
            let bag = g.op("MatMul", &[&w, &rows], &[]); // [batch, 1, classes]
            let bag = g.op("Squeeze", &[&bag, &axis_1], &[]);
            g.op_into("Add", &[&bag, &bias], &[], names::LOGITS);
            g.head_outputs(head, self.classes, taxonomy);
            return g.finish_files(metadata, external_above());
        }
        let rows = self.weights.padded();
        let i32_bytes = |v: &[i32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let slot_of = g.initializer("slot_of", data_type::INT32, &[self.buckets], i32_bytes(&rows.slot_of));
        let row_classes =
            g.initializer("row_classes", data_type::INT32, &[rows.slots, rows.width], i32_bytes(&rows.class_ids));
        let row_weights = g.f32_tensor("row_weights", &[rows.slots, rows.width], &rows.values);
        drop(rows);
        let slots = g.op("Gather", &[&slot_of, &ids], &gather); // [batch, features]
        let classes = g.op("Gather", &[&row_classes, &slots], &gather); // [batch, features, width]
        let weights = g.op("Gather", &[&row_weights, &slots], &gather);
        let axis_2 = g.ints(&[2]);
        let w = g.op("Unsqueeze", &[&w, &axis_2], &[]); // [batch, features, 1]
        let contributions = g.op("Mul", &[&weights, &w], &[]);
        let flat = g.ints(&[0, -1]); // [batch, features × width]
        let contributions = g.op("Reshape", &[&contributions, &flat], &[]);
        let classes = g.op("Reshape", &[&classes, &flat], &[]);
        let batch = g.op("Shape", &[&ids], &[("end", Attr::Int(1))]);
        let width = g.ints(&[self.classes as i64]);
        let shape = g.op("Concat", &[&batch, &width], &[("axis", Attr::Int(0))]);
        let base = g.op("Expand", &[&bias, &shape], &[]); // [batch, classes]
        g.op_into(
            "ScatterElements",
            &[&base, &classes, &contributions],
            &[("axis", Attr::Int(1)), ("reduction", Attr::Str("add".into()))],
            names::LOGITS,
        );
        g.head_outputs(head, self.classes, taxonomy);
        g.finish_files(metadata, external_above())
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
    let OvrSolver { rows, features, y, alphas, settings, .. } = problems;
    let (rows, features, y, settings) = (&rows[..], &features[..], &y[..], *settings);
    let buckets = model.buckets;
    let prune = settings.prune_below.max(0.0);
    let solved: Vec<(Column, f32, usize)> = alphas
        .par_iter_mut()
        .enumerate()
        .map(|(k, alpha)| {
            let signs: Vec<f32> = y.iter().map(|&yi| if yi == k { 1.0 } else { -1.0 }).collect();
            let problem = DualProblem { rows, signs: &signs, dims: features.len(), c };
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
    model.weights = SparseWeights::from_columns(buckets, &columns, settings.max_classes_per_feature);
    slowest
}

/// One class's kept weights: (bucket, weight).
type Column = Vec<(u32, f32)>;

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
    let mut index: Vec<usize> = (0..n).collect();
    let mut active = n;
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
                alpha[i] = (old - g / q[i]).max(0.0);
                let step = (alpha[i] - old) * signs[i];
                for &(f, v) in row {
                    w[f as usize] += step * v;
                }
                b += step;
            }
            s += 1;
        }
        if pg_max - pg_min <= tolerance {
            if active == n {
                break;
            }
            // Converged on the active rows: check every row once more.
            active = n;
            pg_max_old = f32::INFINITY;
            continue;
        }
        pg_max_old = if pg_max <= 0.0 { f32::INFINITY } else { pg_max };
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

/// The one-vs-rest SVMs of a training set, solved at one C after another, each solve
/// warm-started from the previous one's dual variables (`alphas`, one per class and row).
struct OvrSolver<'a> {
    base: LexicalModel,
    rows: Vec<Vec<(u32, f32)>>,
    /// The bucket of each compact feature index the rows use.
    features: Vec<u32>,
    y: Vec<usize>,
    alphas: Vec<Vec<f32>>,
    settings: &'a LexicalSettings,
}

impl<'a> OvrSolver<'a> {
    /// The problems of `train`, starting from `warm` where it has a variable per class and row.
    fn new(train: &[(Bag, usize)], classes: usize, settings: &'a LexicalSettings, warm: Option<&[Vec<f32>]>) -> Self {
        let base = LexicalModel::with_idf(train, classes, &settings.featurizer);
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
        let y: Vec<usize> = train.iter().map(|(_, y)| *y).collect();
        let alphas = match warm {
            Some(w) if w.len() == classes && w.iter().all(|a| a.len() == rows.len()) => w.to_vec(),
            _ => vec![vec![0.0; rows.len()]; classes],
        };
        Self { base, rows, features, y, alphas, settings }
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
    train: &[(Bag, usize)],
    classes: usize,
    settings: &LexicalSettings,
    grid: &[f32],
    mut visit: impl FnMut(f32, LexicalModel, usize),
) {
    let mut solver = OvrSolver::new(train, classes, settings, None);
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

    #[test]
    fn svm_solver_converges_separates_and_calibrates() {
        let settings = LexicalSettings {
            featurizer: FeaturizerSettings { buckets: 128, ..Default::default() },
            ..Default::default()
        };
        let (train, validation) = (toy(400, 1), toy(200, 2));
        let fit = LexicalModel::fit(
            &train,
            Selection::Holdout { validation: &validation, refit: false, warm: None },
            2,
            &settings,
        );
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
        let holdout = LexicalModel::fit(
            &train,
            Selection::Holdout { validation: &validation, refit: false, warm: None },
            2,
            &settings,
        );
        let refit = LexicalModel::fit(
            &train,
            Selection::Holdout { validation: &validation, refit: true, warm: None },
            2,
            &settings,
        );
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
                &train,
                Selection::Holdout { validation: &validation, refit: false, warm: None },
                2,
                &settings,
            )
        };
        let (grid, walk) = (fit(CSearch::Grid), fit(CSearch::Walk));
        assert_eq!(grid.history.len(), 6);
        // From C = 1 up while better, then down while better: at least the start and one on each
        // side that was no better, at most the grid.
        assert!((2..6).contains(&walk.history.len()), "{:?}", walk.history);
        let best = walk.history.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        assert!(best >= grid.history[2], "the walk's best is at least its start's (grid's C = 1)");
        assert!(macro_f1_of(&walk.model, &validation) > 0.8);
        // Its dual variables warm-start a fit on the same rows, which then needs almost no passes.
        let alphas = walk.alphas.expect("svm on validation keeps its dual variables");
        let settings = LexicalSettings {
            featurizer: FeaturizerSettings { buckets: 128, ..Default::default() },
            c_grid: vec![walk.svm.unwrap().c],
            ..Default::default()
        };
        let again = LexicalModel::fit(
            &train,
            Selection::Holdout { validation: &validation, refit: false, warm: Some(&alphas) },
            2,
            &settings,
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
        let problem = DualProblem { rows: &rows, signs: &signs, dims: 200, c: 1.0 };
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
        let problem = DualProblem { rows: &rows, signs: &signs, dims: 2, c: 1.0 };
        let (w, b, passes) = dual_cd_l2_svm(&problem, &mut [0.0; 4], 1e-4, 1000, 0);
        assert!(w[1] > 0.4 && b.abs() < 1e-3, "w {w:?} b {b} after {passes} passes");
        assert!(passes < 1000);
    }
}
