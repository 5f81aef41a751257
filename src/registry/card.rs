//! `card.json`: what a served model is, how it was made, and how good it is.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::common::{FeaturizerSettings, Head, Kind, LexicalSettings, SvmChoice, Taxonomy, TextComposition};
use crate::data::prepare::DataSource;
use crate::data::{LabeledData, SplitAssignment};
use crate::encoder::{EncoderConfig, LoraSettings, Pooling};
use crate::error::{Error, IoContext, Result};

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
    /// The text column (the first, when the text was composed of several).
    pub text_column: String,
    /// How each text was composed, when of more than one column or cut (`--text-column a,b`,
    /// `--max-chars`); serving should compose its texts alike.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextComposition>,
    pub label_column: String,
    pub group_column: Option<String>,
    /// The file that was the validation split as given (`--validation-data`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_file: Option<String>,
    /// The file that was the test split as given (`--test-data`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_file: Option<String>,
    /// SHA-256 over (text, label, group) of every row used.
    pub sha256: String,
    pub rows: usize,
    pub rows_rejected: usize,
    pub train_rows: usize,
    pub validation_rows: usize,
    pub test_rows: usize,
    /// Rows per label (multi-label data: rows carrying each label).
    pub class_counts: BTreeMap<String, usize>,
    /// What separated a multi-label row's labels (`--label-separator`; `None` for one label per
    /// row, or a column of lists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_separator: Option<String>,
}

impl DataInfo {
    /// The card's description of the training data.
    pub fn describe(source: &DataSource, data: &LabeledData, split: &SplitAssignment) -> Self {
        Self {
            file: source.file.clone(),
            text_column: source.text.primary().to_string(),
            text: (!source.text.is_single_column()).then(|| source.text.composition()),
            label_column: source.label_column.clone(),
            group_column: source.group_column.clone(),
            validation_file: source.validation_file.clone(),
            test_file: source.test_file.clone(),
            sha256: data.fingerprint(),
            rows: data.len(),
            rows_rejected: data.rejected,
            train_rows: split.train.len(),
            validation_rows: split.validation.len(),
            test_rows: split.test.len(),
            class_counts: crate::data::prepare::class_counts((0..data.len()).flat_map(|r| data.labels_of(r))),
            label_separator: source.label_separator.clone(),
        }
    }
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
    /// Set when the published model was retrained, after its choices, on train + validation
    /// rows (this many); the validation figures above are those of the choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refit_rows: Option<usize>,
    /// Set when the choices were made by K-fold cross-validation over train + validation (the
    /// validation figures above are then out-of-fold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folds: Option<usize>,
    /// Probabilities are softmax(logits / T) for this T fitted on validation (already folded into
    /// the exported weights); absent = uncalibrated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// The published model learned from the test rows too (`refit_rows` counts them): the test
    /// figures are those of the model of train + validation at the same choices, measured before
    /// that last fit through the trainer's forward pass.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub test_before_final_fit: bool,
    /// The rows the data had when a memory budget made the trainer keep a stratified sample of
    /// them (`data.rows` counts the sample).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampled_from: Option<usize>,
}

/// Serde default of temperatures recorded after the cards that lack them: 1 (no scaling).
pub fn unit_temperature() -> f32 {
    1.0
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
    /// A taxonomy model's figures at each level above the leaves, top first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub levels: Vec<LevelMetrics>,
    /// A taxonomy model's hierarchical F1 (over each row's label with its ancestors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hierarchical_f1: Option<f64>,
    /// A multi-label model's figures over label sets (`accuracy` is then the subset accuracy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multilabel: Option<MultiLabelMetrics>,
}

/// How well predicted label sets match the true ones.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MultiLabelMetrics {
    /// F1 over every (row, label) decision pooled.
    pub micro_f1: f64,
    pub micro_precision: f64,
    pub micro_recall: f64,
    /// The mean of the labels' own F1.
    pub macro_f1: f64,
    /// The share of rows whose predicted set is exactly the true set.
    pub subset_accuracy: f64,
    /// The share of (row, label) decisions that are wrong.
    pub hamming_loss: f64,
}

impl std::fmt::Display for MultiLabelMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "micro_f1={:.4} macro_f1={:.4} subset_accuracy={:.4} hamming_loss={:.4}",
            self.micro_f1, self.macro_f1, self.subset_accuracy, self.hamming_loss
        )
    }
}

/// Accuracy and macro-F1 at one level of a taxonomy (1 = the top).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelMetrics {
    pub level: usize,
    pub nodes: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub weighted_f1: f64,
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
    pub featurizer: FeaturizerSettings,
    pub settings: LexicalSettings,
    /// Epochs (`sgd`) or C values tried (`svm`).
    pub epochs_run: usize,
    /// Validation macro-F1 per epoch (`sgd`) or per C of the grid (`svm`).
    pub validation_macro_f1: Vec<f64>,
    pub train_seconds: f64,
    /// What the `svm` solver chose on validation (C, temperature, passes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub svm: Option<SvmChoice>,
    /// How many weights the model keeps (cards from before sparse weights: absent, dense).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<crate::common::WeightStats>,
    /// A two-level label tree's group classifier (absent: one flat classifier over the classes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_tree: Option<LabelTreeInfo>,
}

/// A lexical label tree's top level, as the card records it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LabelTreeInfo {
    /// Groups (the taxonomy's top-level categories) the classes fall into.
    pub groups: usize,
    /// What the group classifier's solver chose.
    pub svm: Option<SvmChoice>,
    pub weights: crate::common::WeightStats,
}

/// A cascade: the lexical member labels everything, records below `threshold` go to the second
/// stage: the transformer member, its probabilities averaged with the lexical member's at
/// `lexical_weight` (0: the transformer's alone). Members live in the `lexical/` and
/// `transformer/` subfolders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CascadeInfo {
    pub threshold: f32,
    /// Weight of the lexical member's probabilities in the second stage (cards from before this
    /// field: 0).
    #[serde(default)]
    pub lexical_weight: f32,
    pub lexical: String,
    pub transformer: String,
    /// How the threshold was chosen: validation rows, the curve, and the expected share of
    /// records the transformer sees.
    #[serde(default)]
    pub tuning: Option<serde_json::Value>,
    /// How the second stage's weight was chosen (validation rows, macro-F1 per weight).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_tuning: Option<serde_json::Value>,
    /// Rows the first stage keeps report softmax(lexical logits / T) for this T, fitted with the
    /// threshold so their scores rank like the second stage's (cards from before this field: 1).
    #[serde(default = "unit_temperature")]
    pub first_stage_temperature: f32,
    /// For a taxonomy model, the level whose score the threshold applies to (1 = the top
    /// category: rows sure of their category stay with the first stage even when unsure of the
    /// leaf); 0 (and cards from before this field) = the label's own confidence.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub level: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// An ensemble: the average of the members' calibrated probabilities, `lexical_weight` for the
/// lexical member and the rest for the transformer. Members live in subfolders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnsembleInfo {
    pub lexical_weight: f32,
    pub lexical: String,
    pub transformer: String,
    /// How the weight was chosen: validation rows and macro-F1 per weight tried.
    #[serde(default)]
    pub tuning: Option<serde_json::Value>,
}

/// A reduced-precision export of a transformer (int8 dynamic quantization or fp16), and what it
/// cost in accuracy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantizationInfo {
    /// `int8` or `fp16` (cards from before this field: int8).
    #[serde(default = "QuantizationInfo::legacy_precision")]
    pub precision: String,
    pub method: String,
    pub source_version: String,
    pub rows: usize,
    pub fp32_macro_f1: f64,
    /// Macro-F1 of the converted model (`int8_macro_f1` in cards from before fp16).
    #[serde(alias = "int8_macro_f1")]
    pub converted_macro_f1: f64,
    /// fp32 − converted macro-F1 (positive = the converted model is worse).
    pub macro_f1_drop: f64,
    pub tolerance: f64,
    /// Share of rows where the converted model and fp32 predict the same label.
    pub agreement: f64,
    pub max_abs_logit_diff: f32,
    /// Bounds the conversion had to meet besides the macro-F1 drop (fp16: argmax agreement and
    /// logit difference); absent for int8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_agreement: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_logit_diff: Option<f32>,
}

impl QuantizationInfo {
    fn legacy_precision() -> String {
        "int8".into()
    }
}

/// What a version is, with the section that kind needs. Serialized as `"model": {"kind":
/// "transformer", ...}`; a kind's section cannot appear on another kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ModelKind {
    /// A BERT-family encoder with merged LoRA adapters: one ONNX graph over tokenizer ids.
    Transformer(TransformerSection),
    /// Hashed word/character n-grams into a linear classifier: one ONNX graph over feature ids.
    Lexical(LexicalInfo),
    /// Lexical first; low-confidence records go to a transformer. Members in subfolders.
    Cascade(CascadeInfo),
    /// Weighted average of a lexical and a transformer member's probabilities. Members in subfolders.
    Ensemble(EnsembleInfo),
}

/// The transformer kind's section: how the encoder was made, and its precision variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TransformerSection {
    /// Base model, adapters and parameter counts (absent for a graph made elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder: Option<TransformerInfo>,
    /// Present on int8 exports: what quantization cost against fp32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<QuantizationInfo>,
}

impl ModelKind {
    /// The kind this section belongs to.
    pub fn kind(&self) -> Kind {
        match self {
            Self::Transformer(_) => Kind::Transformer,
            Self::Lexical(_) => Kind::Lexical,
            Self::Cascade(_) => Kind::Cascade,
            Self::Ensemble(_) => Kind::Ensemble,
        }
    }

    /// The kind's name as written in cards, outputs and logs.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// Files a published version of this kind must contain (besides what members bring).
    pub fn required_files(&self) -> &'static [&'static str] {
        use super::files::{CARD, LABELS, MODEL, TOKENIZER};
        match self {
            Self::Transformer(_) => &[CARD, LABELS, MODEL, TOKENIZER],
            Self::Lexical(_) => &[CARD, LABELS, MODEL],
            Self::Cascade(_) | Self::Ensemble(_) => &[CARD, LABELS],
        }
    }

    /// What the kind's section says, as `(key, value)` lines for a terminal summary.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::Transformer(t) => {
                let mut lines = Vec::new();
                if let Some(m) = &t.encoder {
                    lines.push(("base", m.base_model.name.clone()));
                    lines.push((
                        "trainable",
                        format!(
                            "{} parameters ({:.2}% of {})",
                            m.trainable_parameters,
                            m.trainable_percent,
                            m.base_parameters_total()
                        ),
                    ));
                    let targets = m.lora.targets.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ");
                    lines.push((
                        "adaptation",
                        match (m.lora.full, m.lora.targets.is_empty()) {
                            (_, true) => "head only".to_string(),
                            (true, false) => format!("full fine-tuning of {targets}"),
                            (false, false) => format!("LoRA rank {} on {targets}", m.lora.rank),
                        },
                    ));
                }
                if let Some(q) = &t.quantization {
                    lines.push((
                        "precision",
                        format!(
                            "{} (macro-F1 drop {:+.4}, agreement {:.4}, max |logit diff| {:.4} vs fp32)",
                            q.precision, q.macro_f1_drop, q.agreement, q.max_abs_logit_diff
                        ),
                    ));
                }
                lines
            }
            Self::Lexical(l) => {
                let mut lines = vec![
                    ("features", format!("{} buckets", l.featurizer.buckets)),
                    ("fit", format!("{:.1} s", l.train_seconds)),
                ];
                if let Some(s) = &l.svm {
                    lines.push((
                        "svm",
                        format!("C {} (validation), temperature {:.3}, {} passes", s.c, s.temperature, s.iterations),
                    ));
                }
                if let Some(tree) = &l.label_tree {
                    let choice =
                        tree.svm.map_or(String::new(), |s| format!(", C {}, temperature {:.3}", s.c, s.temperature));
                    lines.push(("label tree", format!("{} top-level groups{choice}", tree.groups)));
                }
                lines
            }
            Self::Cascade(c) => vec![
                ("threshold", format!("{:.3}", c.threshold)),
                ("second stage", format!("lexical {:.2}, transformer {:.2}", c.lexical_weight, 1.0 - c.lexical_weight)),
            ],
            Self::Ensemble(e) => {
                vec![("weights", format!("lexical {:.2}, transformer {:.2}", e.lexical_weight, 1.0 - e.lexical_weight))]
            }
        }
    }

    /// The transformer section, for transformer-only operations (quantization).
    pub fn transformer(&self) -> Option<&TransformerSection> {
        if let Self::Transformer(t) = self { Some(t) } else { None }
    }
}

/// Everything recorded about one registry version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "CardFile")]
pub struct ModelCard {
    pub name: String,
    pub version: String,
    /// What the model is, with its kind's section.
    pub model: ModelKind,
    /// What its output rows mean (cards from before the field: `single_label`).
    #[serde(default)]
    pub head: Head,
    /// The tree of category paths the classes (leaf paths) make; absent for flat labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taxonomy: Option<Taxonomy>,
    /// A multi-label model's per-class probability thresholds, tuned on the validation rows (a
    /// row's labels are the classes at or above theirs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_thresholds: Option<Vec<f32>>,
    pub created_at: String,
    pub prodcat_version: String,
    /// Texts are truncated to this many tokens.
    pub max_length: usize,
    pub num_labels: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<TrainingInfo>,
    /// Metrics on the held-out test split, computed through ONNX Runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_metrics: Option<SplitMetrics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parity: Option<ParityInfo>,
    /// The ONNX graph (kinds with a graph of their own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onnx: Option<OnnxInfo>,
}

/// `card.json` as read: today's shape (`model`) or the earlier one (`model_type` beside optional
/// `transformer` / `lexical` / `cascade` / `quantization` sections), so old registries keep loading.
#[derive(Deserialize)]
struct CardFile {
    name: String,
    version: String,
    #[serde(default)]
    model: Option<ModelKind>,
    #[serde(default)]
    model_type: Option<String>,
    #[serde(default)]
    head: Head,
    #[serde(default)]
    taxonomy: Option<Taxonomy>,
    #[serde(default)]
    label_thresholds: Option<Vec<f32>>,
    #[serde(default)]
    transformer: Option<TransformerInfo>,
    #[serde(default)]
    lexical: Option<LexicalInfo>,
    #[serde(default)]
    cascade: Option<CascadeInfo>,
    #[serde(default)]
    quantization: Option<QuantizationInfo>,
    created_at: String,
    prodcat_version: String,
    max_length: usize,
    num_labels: usize,
    #[serde(default)]
    data: Option<DataInfo>,
    #[serde(default)]
    training: Option<TrainingInfo>,
    #[serde(default)]
    test_metrics: Option<SplitMetrics>,
    #[serde(default)]
    parity: Option<ParityInfo>,
    #[serde(default)]
    onnx: Option<OnnxInfo>,
}

impl TryFrom<CardFile> for ModelCard {
    type Error = String;

    fn try_from(f: CardFile) -> std::result::Result<Self, String> {
        let model = match (f.model, f.model_type.as_deref()) {
            (Some(model), _) => model,
            (None, Some("transformer")) => {
                ModelKind::Transformer(TransformerSection { encoder: f.transformer, quantization: f.quantization })
            }
            (None, Some("lexical")) => {
                ModelKind::Lexical(f.lexical.ok_or("a lexical card needs its `lexical` section (featurizer settings)")?)
            }
            (None, Some("cascade")) => {
                ModelKind::Cascade(f.cascade.ok_or("a cascade card needs its `cascade` section")?)
            }
            (None, Some(other)) => return Err(format!("unknown model_type `{other}`")),
            (None, None) => return Err("card.json names no model kind (`model.kind`)".into()),
        };
        let onnx = if matches!(model, ModelKind::Cascade(_)) { None } else { f.onnx };
        Ok(Self {
            name: f.name,
            version: f.version,
            model,
            head: f.head,
            taxonomy: f.taxonomy,
            label_thresholds: f.label_thresholds,
            created_at: f.created_at,
            prodcat_version: f.prodcat_version,
            max_length: f.max_length,
            num_labels: f.num_labels,
            data: f.data,
            training: f.training,
            test_metrics: f.test_metrics,
            parity: f.parity,
            onnx,
        })
    }
}

impl ModelCard {
    /// Reads `card.json`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).at(path)?;
        serde_json::from_str(&text).map_err(|source| Error::Json { path: path.to_path_buf(), source })
    }

    /// Writes `card.json` (pretty-printed) durably: a temporary file, fsynced, renamed over.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text =
            serde_json::to_string_pretty(self).map_err(|source| Error::Json { path: path.to_path_buf(), source })?;
        crate::fsutil::write_atomic(path, (text + "\n").as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy(kind: &str, extra: serde_json::Value) -> serde_json::Value {
        let mut card = serde_json::json!({
            "name": "m", "version": "v1", "model_type": kind, "created_at": "", "prodcat_version": "",
            "max_length": 32, "num_labels": 2,
            "onnx": {"opset": 17, "precision": "fp32", "inputs": [], "outputs": [], "file_bytes": 0}
        });
        if let (Some(card), serde_json::Value::Object(extra)) = (card.as_object_mut(), extra) {
            card.extend(extra);
        }
        card
    }

    #[test]
    fn earlier_cards_keep_loading_and_are_written_in_the_new_shape() {
        let cascade = legacy(
            "cascade",
            serde_json::json!({"cascade": {"threshold": 0.5, "lexical": "lexical", "transformer": "transformer"}}),
        );
        let card: ModelCard = serde_json::from_value(cascade).unwrap();
        let ModelKind::Cascade(info) = &card.model else { panic!("not a cascade: {:?}", card.model) };
        assert_eq!(info.threshold, 0.5);
        assert!(card.onnx.is_none(), "a cascade has no graph of its own");
        let written = serde_json::to_value(&card).unwrap();
        assert_eq!(written["model"]["kind"], "cascade");
        assert!(written.get("model_type").is_none() && written.get("cascade").is_none());
        assert_eq!(serde_json::from_value::<ModelCard>(written).unwrap(), card);

        let transformer = legacy("transformer", serde_json::json!({}));
        let card: ModelCard = serde_json::from_value(transformer).unwrap();
        assert_eq!(card.model, ModelKind::Transformer(TransformerSection::default()));
    }

    #[test]
    fn a_kind_without_its_section_is_refused() {
        let err = serde_json::from_value::<ModelCard>(legacy("lexical", serde_json::json!({}))).unwrap_err();
        assert!(err.to_string().contains("lexical"), "{err}");
        let err = serde_json::from_value::<ModelCard>(legacy("ensemble", serde_json::json!({}))).unwrap_err();
        assert!(err.to_string().contains("unknown model_type"), "{err}");
        let mut card = legacy("lexical", serde_json::json!({}));
        card["model"] = serde_json::json!({"kind": "cascade"});
        assert!(serde_json::from_value::<ModelCard>(card).is_err(), "a cascade needs its threshold and members");
    }
}
