//! Plain settings records of the lexical model: what `[training.lexical]` sets and what a lexical
//! card records, so that serving featurizes exactly as training did. Data only: the featurizer and
//! the solvers that read them live in [`crate::lexical`].

use serde::{Deserialize, Serialize};

/// Featurizer settings (stored in the model card).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FeaturizerSettings {
    /// Hash space size (rows of the weight matrix).
    pub buckets: u32,
    /// Inclusive range of word n-gram lengths.
    pub word_ngrams: (u8, u8),
    /// Inclusive range of character n-gram lengths (0 = none).
    pub char_ngrams: (u8, u8),
    /// Features kept per text at most (the rest are dropped, longest texts only).
    pub max_features: usize,
    /// How a text's feature vector is scaled to unit length (cards from before this field: `joint`).
    #[serde(default = "FeatureNorm::legacy")]
    pub norm: FeatureNorm,
    /// How a feature's count in the text weighs (cards from before this field: `binary`).
    #[serde(default = "TermFrequency::legacy")]
    pub tf: TermFrequency,
    /// Which tokens character n-grams are taken from (cards from before this field: `words`).
    #[serde(default = "CharTokens::legacy")]
    pub char_tokens: CharTokens,
}

/// The tokens whose padded character n-grams are features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CharTokens {
    /// The words (runs of letters and digits), as word n-grams use.
    Words,
    /// Runs of non-whitespace, punctuation kept (`galaxy-s23,`), as a TF-IDF `char_wb` analyzer
    /// does: "s23," and "-s2" tell model numbers and sizes apart (+0.005 macro-F1 on Amazon 2023
    /// items, equal on the others).
    Whitespace,
}

impl CharTokens {
    fn legacy() -> Self {
        Self::Words
    }
}

/// How the count of an n-gram in a text weighs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TermFrequency {
    /// Present or not.
    Binary,
    /// 1 + ln(count).
    Sublinear,
}

impl TermFrequency {
    fn legacy() -> Self {
        Self::Binary
    }

    /// The weight of a feature seen `count` times.
    pub fn weight(self, count: u32) -> f32 {
        match self {
            Self::Binary => 1.0,
            Self::Sublinear => 1.0 + (count.max(1) as f32).ln(),
        }
    }
}

/// How the lexical model normalises a text's IDF-weighted features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatureNorm {
    /// One L2 norm over all features.
    Joint,
    /// Word n-grams and character n-grams each scaled to unit L2 norm (ids below
    /// [`FeaturizerSettings::first_char_bucket`] are words).
    Blocks,
}

impl FeatureNorm {
    fn legacy() -> Self {
        Self::Joint
    }
}

impl FeaturizerSettings {
    /// With `blocks`, the first id of the character block (word ids lie in `1..first_char_bucket`).
    pub fn first_char_bucket(&self) -> Option<u32> {
        (self.norm == FeatureNorm::Blocks).then(|| self.buckets.max(4) / 2)
    }
}

impl Default for FeaturizerSettings {
    fn default() -> Self {
        Self {
            buckets: 1 << 19,
            word_ngrams: (1, 2),
            char_ngrams: (2, 5),
            max_features: 8192,
            norm: FeatureNorm::Blocks,
            tf: TermFrequency::Sublinear,
            char_tokens: CharTokens::Whitespace,
        }
    }
}

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
    /// How the weights are fitted (cards from before this field were trained with `sgd`).
    #[serde(default = "LexicalSolver::legacy")]
    pub solver: LexicalSolver,
    /// `svm`: regularisation strengths tried; the best on validation macro-F1 is kept.
    pub c_grid: Vec<f32>,
    /// `svm`: stop when the projected-gradient spread falls below this (liblinear's `eps`).
    pub tolerance: f32,
    /// `svm`: passes over the data at most, per class.
    pub max_iterations: usize,
    /// `svm`: fit a temperature on validation so probabilities are calibrated.
    pub calibrate: bool,
    /// `svm`: choose C and the temperature by K-fold cross-validation over train + validation
    /// rows, then train on all of them (0 = choose on the validation split).
    pub folds: usize,
    /// `svm`: after choosing on validation, train the published model on train + validation.
    pub refit: bool,
    /// `svm` with `refit`: the published model learns from the test rows too — trained once more
    /// at the same choices after its test figures were measured on the model of train +
    /// validation (`prodcat train`'s default for the lexical kind; cards from before: false).
    #[serde(default)]
    pub refit_test: bool,
    /// Feature normalisations tried (each a full fit); the best on validation (or out of fold) is
    /// kept and recorded in the card's featurizer. Empty: the featurizer's own.
    pub norms: Vec<FeatureNorm>,
    /// `svm`: how the C grid is searched on validation (cards from before this field: `grid`).
    #[serde(default = "CSearch::legacy")]
    pub c_search: CSearch,
    /// `svm`: a class's weights of smaller magnitude are dropped as soon as its SVM is solved (0:
    /// none), so training holds only the weights that matter, whatever the class count. Cards from
    /// before this field: 0.
    #[serde(default)]
    pub prune_below: f32,
    /// Classes a feature keeps weights for, at most: the largest in magnitude (0: every class).
    /// The model's size and its serving cost per feature are bounded by it, not by the class count.
    /// Unset: [`LexicalSettings::classes_per_feature`] chooses by the class count. Cards from
    /// before this field: 0 (dense weights).
    #[serde(default = "every_class")]
    pub max_classes_per_feature: Option<usize>,
    /// `svm`: training memory in MiB (unset: every row, however many). Before featurizing, the
    /// trainer counts the features of a sample of the texts and what the process holds already;
    /// when the rows would not fit, it trains on a stratified sample of them that does (the card's
    /// `training.sampled_from` counts the rows there were).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_budget_mib: Option<u64>,
    /// `svm`, with a taxonomy: a two-level label tree (Parabel / XR-Linear with one level) — a
    /// classifier over the top-level categories, and each leaf trained only against its own
    /// category's rows; a leaf's probability is its category's times its own among its siblings.
    /// Cards from before this field: flat (false).
    #[serde(default)]
    pub label_tree: bool,
    /// Show a progress bar over the classes of each long solve (a run-time choice of the command
    /// line, not recorded).
    #[serde(skip)]
    pub show_progress: bool,
}

/// The lexical model's solver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LexicalSolver {
    /// One-vs-rest squared-hinge SVMs by dual coordinate descent (liblinear), C on validation.
    Svm,
    /// Softmax regression by AdaGrad with early stopping (the first lexical model).
    Sgd,
}

impl LexicalSolver {
    fn legacy() -> Self {
        Self::Sgd
    }
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
            solver: LexicalSolver::Svm,
            c_grid: vec![0.1, 0.3, 1.0, 3.0, 10.0, 30.0],
            tolerance: 0.1,
            max_iterations: 1000,
            calibrate: true,
            folds: 0,
            refit: false,
            refit_test: false,
            norms: vec![FeatureNorm::Blocks, FeatureNorm::Joint],
            c_search: CSearch::Walk,
            prune_below: 1e-3,
            max_classes_per_feature: None,
            memory_budget_mib: None,
            label_tree: true,
            show_progress: false,
        }
    }
}

fn every_class() -> Option<usize> {
    Some(0)
}

impl LexicalSettings {
    /// Classes past which an unset `max_classes_per_feature` caps each feature's weights.
    pub const CAP_ABOVE: usize = 64;
    /// The cap an unset `max_classes_per_feature` gives past [`Self::CAP_ABOVE`] classes. Measured
    /// on PriceRunner's 2,115 products as leaves (label tree): macro-F1 0.8236 at 16, 0.8207 at
    /// 32, 0.8206 at 64, and relabel 1.4× as fast at 16 as at 64 (the sparse layer's gathers and
    /// scatter are as wide as the cap); on Amazon 2023's 24 classes a cap of 16 cost 0.0025
    /// macro-F1 (three seeds), so up to 64 classes every weight stays.
    pub const AUTO_CAP: usize = 16;

    /// The classes a feature of a model of `classes` classes keeps weights for (0: all): the
    /// setting, or when unset every class up to [`Self::CAP_ABOVE`] classes and [`Self::AUTO_CAP`]
    /// past it.
    pub fn classes_per_feature(&self, classes: usize) -> usize {
        match self.max_classes_per_feature {
            Some(cap) => cap,
            None if classes > Self::CAP_ABOVE => Self::AUTO_CAP,
            None => 0,
        }
    }
}

/// How the `svm` solver searches its C grid on a validation split (cross-validation always tries
/// every C).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CSearch {
    /// Every C, and every normalisation at every C.
    Grid,
    /// The normalisation chosen at the C nearest 1; from there up the grid while validation
    /// macro-F1 improves, then down. Each C costs a pass over every row for every class, so past
    /// a few hundred classes the full grid is most of the training time. The default: on
    /// PriceRunner's 10 categories (3 seeds) it scored as the grid (0.9871 vs 0.9873, sd 0.001)
    /// in two thirds of the time (4.7 vs 6.9 s).
    Walk,
    /// `walk` past [`CSearch::WALK_ABOVE`] classes, else `grid`.
    Auto,
}

impl CSearch {
    /// Classes past which `auto` walks.
    pub const WALK_ABOVE: usize = 100;

    fn legacy() -> Self {
        Self::Grid
    }

    /// Whether a search of `classes` classes walks.
    pub fn walks(self, classes: usize) -> bool {
        match self {
            Self::Grid => false,
            Self::Walk => true,
            Self::Auto => classes > Self::WALK_ABOVE,
        }
    }
}

/// What the `svm` solver chose on validation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SvmChoice {
    pub c: f32,
    /// Probabilities are softmax(margins / temperature); a multi-label model's are
    /// sigmoid(margins / temperature + shift).
    pub temperature: f32,
    /// A multi-label model's Platt offset (the `b` of sigmoid(a·margin + b)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift: Option<f32>,
    /// Passes over the data of the slowest class at the chosen C.
    pub iterations: usize,
}

/// How large a set of weights is, as the card records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightStats {
    /// Features (buckets) with at least one weight.
    pub features: usize,
    /// Weights kept.
    pub nonzeros: usize,
    /// Classes of the longest row: the width every row is padded to in the ONNX graph.
    pub width: usize,
    /// Weights dropped by the per-feature cap.
    pub dropped: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unset_cap_keeps_every_class_up_to_64_and_16_past_them_and_old_cards_keep_theirs() {
        let unset = LexicalSettings::default();
        assert_eq!((unset.classes_per_feature(24), unset.classes_per_feature(64)), (0, 0));
        assert_eq!((unset.classes_per_feature(65), unset.classes_per_feature(2115)), (16, 16));
        let set = LexicalSettings { max_classes_per_feature: Some(32), ..Default::default() };
        assert_eq!((set.classes_per_feature(10), set.classes_per_feature(2115)), (32, 32));
        // A card's settings: a number as written, none (from before the field) every class.
        let mut card = serde_json::to_value(LexicalSettings::default()).unwrap();
        assert!(card["max_classes_per_feature"].is_null());
        card["max_classes_per_feature"] = 64.into();
        let read: LexicalSettings = serde_json::from_value(card.clone()).unwrap();
        assert_eq!(read.classes_per_feature(2115), 64);
        card.as_object_mut().unwrap().remove("max_classes_per_feature");
        let read: LexicalSettings = serde_json::from_value(card).unwrap();
        assert_eq!(read.classes_per_feature(2115), 0);
    }
}
