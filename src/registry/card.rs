//! `card.json`: what a served model is, how it was made, and how good it is.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::encoder::{EncoderConfig, LoraSettings, Pooling};
use crate::error::{Error, IoContext, Result};

/// The kinds of model the registry holds; all are served by the same data path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelType {
    /// A BERT-family encoder with merged LoRA adapters.
    Transformer,
    /// Hashed word/character n-grams into a linear classifier.
    Lexical,
    /// Lexical first; low-confidence records go to a transformer.
    Cascade,
}

/// The frozen base model the adapters were trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseModelInfo {
    /// Folder the base model was loaded from.
    pub path: String,
    /// `_name_or_path` or folder name.
    pub name: String,
    pub architecture: EncoderConfig,
    /// Parameters of the frozen base.
    pub parameters: usize,
}

/// Transformer-specific description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransformerInfo {
    pub base_model: BaseModelInfo,
    pub lora: LoraSettings,
    pub pooling: Pooling,
    pub trainable_parameters: usize,
    /// Trainable parameters as a percentage of base + trainable.
    pub trainable_percent: f64,
}

impl TransformerInfo {
    /// Base plus trainable parameters.
    pub fn base_parameters_total(&self) -> usize {
        self.base_model.parameters + self.trainable_parameters
    }
}

/// The data snapshot a model was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DataInfo {
    pub file: String,
    pub text_column: String,
    pub label_column: String,
    pub group_column: Option<String>,
    /// SHA-256 over (text, label, group) of every row used.
    pub sha256: String,
    pub rows: usize,
    pub rows_rejected: usize,
    pub train_rows: usize,
    pub validation_rows: usize,
    pub test_rows: usize,
    pub class_counts: BTreeMap<String, usize>,
}

/// How training went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TrainingInfo {
    pub seed: u64,
    pub epochs_requested: usize,
    pub epochs_run: usize,
    pub best_epoch: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub class_weights: bool,
    pub best_validation_macro_f1: f64,
    pub samples_per_second: f64,
    pub wall_seconds: f64,
    /// Validation macro-F1 after each epoch.
    pub validation_macro_f1: Vec<f64>,
    /// Train/validation/test fractions of the split (cards before this field: 80/10/10).
    #[serde(default = "default_split")]
    pub split: [f64; 3],
    /// Whether the split was the hash-based stable one (the in-pipeline learner's).
    #[serde(default)]
    pub stable_split: bool,
}

fn default_split() -> [f64; 3] {
    [0.8, 0.1, 0.1]
}

/// Headline metrics of one split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SplitMetrics {
    pub rows: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub macro_precision: f64,
    pub macro_recall: f64,
    pub per_class_f1: BTreeMap<String, f64>,
}

impl SplitMetrics {
    /// The headline numbers of a full report.
    pub fn from_report(r: &crate::eval::ClassificationReport) -> Self {
        Self {
            rows: r.rows,
            accuracy: r.accuracy,
            macro_f1: r.macro_f1,
            macro_precision: r.macro_precision,
            macro_recall: r.macro_recall,
            per_class_f1: r.per_class.iter().map(|c| (c.label.clone(), c.f1)).collect(),
        }
    }
}

/// The check that the exported graph reproduces the training-time forward pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParityInfo {
    pub samples: usize,
    pub max_abs_diff: f32,
    pub tolerance: f32,
    pub passed: bool,
}

/// How the ONNX graph looks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnnxInfo {
    pub opset: i64,
    pub precision: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub file_bytes: u64,
}

/// Lexical-model description: how serving must featurize, and how training went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LexicalInfo {
    pub featurizer: crate::lexical::FeaturizerSettings,
    pub settings: crate::lexical::LexicalSettings,
    pub epochs_run: usize,
    pub validation_macro_f1: Vec<f64>,
    pub train_seconds: f64,
}

/// A cascade: the lexical member labels everything, records below `threshold` go to the
/// transformer member. Members live in the `lexical/` and `transformer/` subfolders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CascadeInfo {
    pub threshold: f32,
    pub lexical: String,
    pub transformer: String,
    /// How the threshold was chosen: validation rows, the curve, and the expected share of
    /// records the transformer sees.
    #[serde(default)]
    pub tuning: Option<serde_json::Value>,
}

/// int8 dynamic quantization of a transformer, and what it cost in accuracy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantizationInfo {
    pub method: String,
    pub source_version: String,
    pub rows: usize,
    pub fp32_macro_f1: f64,
    pub int8_macro_f1: f64,
    /// fp32 − int8 macro-F1 (positive = int8 is worse).
    pub macro_f1_drop: f64,
    pub tolerance: f64,
    /// Share of rows where int8 and fp32 predict the same label.
    pub agreement: f64,
    pub max_abs_logit_diff: f32,
}

/// Everything recorded about one registry version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub name: String,
    pub version: String,
    pub model_type: ModelType,
    pub created_at: String,
    pub prodcat_version: String,
    /// Texts are truncated to this many tokens.
    pub max_length: usize,
    pub num_labels: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transformer: Option<TransformerInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<TrainingInfo>,
    /// Metrics on the held-out test split, computed through ONNX Runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_metrics: Option<SplitMetrics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parity: Option<ParityInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lexical: Option<LexicalInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cascade: Option<CascadeInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<QuantizationInfo>,
    pub onnx: OnnxInfo,
}

impl ModelCard {
    /// Reads `card.json`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).at(path)?;
        serde_json::from_str(&text).map_err(|source| Error::Json { path: path.to_path_buf(), source })
    }

    /// Writes `card.json` (pretty-printed).
    pub fn write(&self, path: &Path) -> Result<()> {
        let text =
            serde_json::to_string_pretty(self).map_err(|source| Error::Json { path: path.to_path_buf(), source })?;
        std::fs::write(path, text + "\n").at(path)
    }
}
