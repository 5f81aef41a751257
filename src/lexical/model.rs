//! The lexical classifier: a binary bag of hashed n-grams, IDF-weighted and L2-normalised, into a
//! linear softmax layer. Trained in Rust with AdaGrad on sparse features (seconds on a catalogue),
//! exported to ONNX as an embedding-bag graph (Gather rows of the weight matrix by feature id,
//! weighted sum, bias, softmax) so the same ONNX Runtime path serves it.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::featurizer::FeaturizerSettings;
use crate::onnx::graph::{Attr, Dim, GraphBuilder};
use crate::onnx::proto::data_type;
use crate::onnx::transformer::names;

/// Training hyper-parameters of the lexical model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LexicalSettings {
    pub featurizer: FeaturizerSettings,
    pub epochs: usize,
    pub learning_rate: f32,
    /// L2 penalty on touched weight rows.
    pub l2: f32,
    /// Stop after this many epochs without a better validation macro-F1.
    pub patience: usize,
    pub class_weights: bool,
    pub seed: u64,
}

impl Default for LexicalSettings {
    fn default() -> Self {
        Self {
            featurizer: FeaturizerSettings::default(),
            epochs: 30,
            learning_rate: 0.5,
            l2: 1e-6,
            patience: 4,
            class_weights: false,
            seed: 42,
        }
    }
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
}

impl LexicalModel {
    /// Feature values of one text: IDF weights, L2-normalised.
    fn values(&self, features: &[u32]) -> Vec<f32> {
        let mut v: Vec<f32> = features.iter().map(|&f| self.idf[f as usize]).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        v.iter_mut().for_each(|x| *x /= norm);
        v
    }

    /// Logits of one text (the reference forward pass for the parity check).
    pub fn logits(&self, features: &[u32]) -> Vec<f32> {
        let c = self.classes;
        let mut out = self.bias.clone();
        for (&f, x) in features.iter().zip(self.values(features)) {
            let row = &self.weights[f as usize * c..(f as usize + 1) * c];
            for k in 0..c {
                out[k] += x * row[k];
            }
        }
        out
    }

    /// Class of the largest logit.
    pub fn predict(&self, features: &[u32]) -> usize {
        let l = self.logits(features);
        (0..l.len()).fold(0, |best, k| if l[k] > l[best] { k } else { best })
    }

    /// Trains on `train` (feature lists and class ids), keeping the epoch with the best
    /// macro-F1 on `validation`. Returns the model and validation macro-F1 per epoch.
    pub fn train(
        train: &[(Vec<u32>, usize)],
        validation: &[(Vec<u32>, usize)],
        classes: usize,
        settings: &LexicalSettings,
    ) -> (Self, Vec<f64>) {
        let buckets = settings.featurizer.buckets as usize;
        let mut df = vec![0u32; buckets];
        for (features, _) in train {
            for &f in features {
                df[f as usize] += 1;
            }
        }
        let n = train.len() as f32;
        let mut idf: Vec<f32> = df.iter().map(|&d| ((1.0 + n) / (1.0 + d as f32)).ln() + 1.0).collect();
        idf[0] = 0.0;
        let mut model = Self { classes, buckets, weights: vec![0.0; buckets * classes], bias: vec![0.0; classes], idf };
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
                    for (&f, &x) in features.iter().zip(&values) {
                        let row = &model.weights[f as usize * classes..(f as usize + 1) * classes];
                        for k in 0..classes {
                            out[k] += x * row[k];
                        }
                    }
                    out
                };
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f32 = logits.iter().map(|l| (l - max).exp()).sum();
                for k in 0..classes {
                    probs[k] = (logits[k] - max).exp() / sum;
                }
                let w = class_weight[y];
                for k in 0..classes {
                    let g = w * (probs[k] - if k == y { 1.0 } else { 0.0 });
                    g2_bias[k] += g * g;
                    model.bias[k] -= lr * g / (g2_bias[k].sqrt() + 1e-8);
                    for (&f, &x) in features.iter().zip(&values) {
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

    /// The embedding-bag ONNX graph: inputs `input_ids` (feature ids) and `attention_mask`,
    /// outputs `logits` and `probabilities`.
    pub fn export(&self, metadata: &[(&str, String)]) -> Vec<u8> {
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
        let sq = g.op("Mul", &[&w, &w], &[]);
        let axis_1 = g.ints(&[1]);
        let sum_sq = g.op("ReduceSum", &[&sq, &axis_1], &[("keepdims", Attr::Int(1))]);
        let norm = g.op("Sqrt", &[&sum_sq], &[]);
        let tiny = g.scalar_f32(1e-12);
        let norm = g.op("Max", &[&norm, &tiny], &[]);
        let w = g.op("Div", &[&w, &norm], &[]);
        let w = g.op("Unsqueeze", &[&w, &axis_1], &[]); // [batch, 1, features]
        let rows = g.op("Gather", &[&weights, &ids], &[("axis", Attr::Int(0))]); // [batch, features, classes]
        let bag = g.op("MatMul", &[&w, &rows], &[]); // [batch, 1, classes]
        let bag = g.op("Squeeze", &[&bag, &axis_1], &[]);
        g.op_into("Add", &[&bag, &bias], &[], names::LOGITS);
        g.op_into("Softmax", &[names::LOGITS], &[("axis", Attr::Int(-1))], names::PROBABILITIES);
        let out = [Dim::Named("batch"), Dim::Fixed(self.classes as i64)];
        g.output(names::LOGITS, data_type::FLOAT, &out);
        g.output(names::PROBABILITIES, data_type::FLOAT, &out);
        g.finish(metadata)
    }
}
