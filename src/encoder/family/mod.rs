//! Encoder families, one file each: a family owns the `config.json` keys it reads (selected by
//! `model_type`), where its checkpoint keeps each tensor, and the `config.json` a tiny checkpoint
//! of it is written with. The block they load into is shared ([`crate::encoder::model`]), as are
//! the ONNX emitter and the LoRA layers.
//!
//! Adding a family: a new file here implementing [`Family`], and one entry in [`FAMILIES`].

mod bert;
mod distilbert;
mod gpt2;
mod llama;
mod mpnet;
mod roberta;

pub use mpnet::relative_bucket;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use candle_core::Tensor;

use serde_json::Value;

use super::config::{EncoderConfig, EncoderFamily, NormKind};
use super::lora::LoraTarget;
use crate::error::{Error, IoContext, Result};

/// Where a checkpoint keeps the embeddings (names without `.weight` / `.bias`, after the family's
/// prefix is stripped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingNames {
    pub word: &'static str,
    /// None: rotary positions, no table.
    pub position: Option<&'static str>,
    /// None: one token type (its row is zeros).
    pub token_type: Option<&'static str>,
    /// None: no norm after the embeddings (pre-norm decoders).
    pub norm: Option<&'static str>,
}

/// Where a checkpoint keeps one block's dense layers and norms (names without `.weight` / `.bias`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerNames {
    /// The block's dense layers by LoRA target, in [`LoraTarget::ALL`] order (a gate only in
    /// gated feed-forward blocks).
    pub dense: Vec<(LoraTarget, String)>,
    /// The norm after attention (post-norm blocks) or before it (pre-norm).
    pub attention_norm: String,
    /// The norm after the feed-forward layers (post-norm) or before them (pre-norm).
    pub output_norm: String,
    /// Each head's query and key norms (Qwen3).
    pub qk_norm: Option<[String; 2]>,
}

/// The six dense layers of a block without a gate, in [`LoraTarget::ALL`] order.
pub(crate) const UNGATED: [LoraTarget; 6] = [
    LoraTarget::Query,
    LoraTarget::Key,
    LoraTarget::Value,
    LoraTarget::AttentionOutput,
    LoraTarget::Intermediate,
    LoraTarget::Output,
];

impl LayerNames {
    /// Block `block`'s names: each dense layer (by target) and norm under it.
    pub(crate) fn under(block: &str, dense: &[(LoraTarget, &str)], attention_norm: &str, output_norm: &str) -> Self {
        Self {
            dense: dense.iter().map(|(t, d)| (*t, format!("{block}.{d}"))).collect(),
            attention_norm: format!("{block}.{attention_norm}"),
            output_norm: format!("{block}.{output_norm}"),
            qk_norm: None,
        }
    }

    /// A block without a gate: its six dense layers in [`UNGATED`] order.
    pub(crate) fn ungated(block: &str, dense: [&str; 6], attention_norm: &str, output_norm: &str) -> Self {
        Self::under(block, &UNGATED.into_iter().zip(dense).collect::<Vec<_>>(), attention_norm, output_norm)
    }

    /// The dense layer of `target`, if the block has one.
    pub fn dense(&self, target: LoraTarget) -> Option<&str> {
        self.dense.iter().find(|(t, _)| *t == target).map(|(_, n)| n.as_str())
    }
}

/// One encoder family.
pub trait Family: Sync {
    /// The family as cards record it.
    fn id(&self) -> EncoderFamily;
    /// The `model_type` values of `config.json` it reads.
    fn model_types(&self) -> &'static [&'static str];
    /// Prefixes its checkpoints put before the tensor names (`bert.`), stripped on load.
    fn prefixes(&self) -> &'static [&'static str];
    /// The architecture from `config.json` (`raw`), or an error naming the key.
    fn config(&self, raw: &Value, path: &Path) -> Result<EncoderConfig>;
    /// The embeddings' tensor names.
    fn embeddings(&self) -> EmbeddingNames;
    /// Block `i`'s tensor names.
    fn layer(&self, i: usize) -> LayerNames;
    /// A `config.json` for `config` in the family's own keys (tiny test checkpoints).
    fn hf_config(&self, config: &EncoderConfig) -> Value;
    /// The norm after the last block (pre-norm decoders), if any.
    fn final_norm(&self) -> Option<&'static str> {
        None
    }
    /// Turns a checkpoint's tensors into those [`Family::layer`] names, in the shapes the block
    /// reads (`[out, in]` dense weights, separate query/key/value): most families store them so.
    fn prepare(&self, _weights: &mut HashMap<String, Tensor>, _config: &EncoderConfig) -> Result<()> {
        Ok(())
    }
    /// Every tensor of a checkpoint of `config` the model reads, as the checkpoint names it.
    fn checkpoint_tensors(&self, config: &EncoderConfig) -> BTreeSet<String> {
        block_tensors(self, config)
    }
    /// Where the checkpoint keeps a relative position bias shared by every block (MPNet), if any.
    fn relative_bias(&self) -> Option<&'static str> {
        None
    }
    /// The checkpoint's dense modules as PEFT's `target_modules` names them (block 0), each with
    /// the LoRA targets it stands for: most families one each, GPT-2's fused `c_attn` three.
    fn lora_modules(&self) -> Vec<(String, Vec<LoraTarget>)> {
        self.layer(0).dense.into_iter().map(|(target, name)| (name, vec![target])).collect()
    }
    /// Whether the checkpoint holds a bias for `target`'s dense layer ([`Family::prepare`] gives
    /// the others a zero bias).
    fn has_bias(&self, _target: LoraTarget) -> bool {
        true
    }
}

impl EncoderConfig {
    /// Reads `config.json` from a Hugging Face model folder, through the family its `model_type`
    /// names.
    pub fn from_hf_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).at(path)?;
        let raw: Value =
            serde_json::from_str(&text).map_err(|source| Error::Json { path: path.to_path_buf(), source })?;
        by_model_type(raw.get("model_type").and_then(Value::as_str), path)?.config(&raw, path)
    }

    /// An HF-style `config.json` in the family's own keys (used by tests that build tiny models).
    pub fn to_hf_json(&self) -> Value {
        of(self.family).hf_config(self)
    }
}

/// Every family prodcat loads.
pub const FAMILIES: [&dyn Family; 8] = [
    &bert::Bert,
    &distilbert::DistilBert,
    &roberta::Roberta,
    &mpnet::Mpnet,
    &gpt2::Gpt2,
    &llama::LLAMA,
    &llama::QWEN2,
    &llama::QWEN3,
];

/// The family of `id`.
pub fn of(id: EncoderFamily) -> &'static dyn Family {
    FAMILIES.into_iter().find(|f| f.id() == id).unwrap_or(&bert::Bert)
}

/// The family that reads `config.json`'s `model_type` (none given: BERT, as sentence-transformers
/// checkpoints of it often omit it); an error listing the supported ones otherwise.
pub fn by_model_type(model_type: Option<&str>, path: &Path) -> Result<&'static dyn Family> {
    let Some(wanted) = model_type else { return Ok(&bert::Bert) };
    FAMILIES.into_iter().find(|f| f.model_types().contains(&wanted)).ok_or_else(|| {
        let known: Vec<&str> = FAMILIES.iter().flat_map(|f| f.model_types().iter().copied()).collect();
        Error::model(path, format!("model_type `{wanted}` is not supported yet (supported: {})", known.join(", ")))
    })
}

/// The LoRA targets `names` select in `family`'s blocks, in block order: prodcat's own names
/// (`query`, `key`, `value`, `attention_output`, `gate`, `intermediate`, `output`) or the
/// checkpoint's module names as PEFT's `target_modules` takes them — a name matches every dense
/// module it ends (`q_proj`, `c_attn`, `attention.self.query`; GPT-2's `c_proj` both projections).
pub fn lora_targets(family: &dyn Family, names: &[String]) -> Result<Vec<LoraTarget>> {
    let modules = family.lora_modules();
    let mut targets = BTreeSet::new();
    for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        if let Ok(target) = name.parse::<LoraTarget>() {
            targets.insert(target);
            continue;
        }
        let matched: Vec<&LoraTarget> = modules
            .iter()
            .filter(|(module, _)| module == name || module.ends_with(&format!(".{name}")))
            .flat_map(|(_, t)| t)
            .collect();
        if matched.is_empty() {
            let ours = LoraTarget::ALL.map(LoraTarget::as_str).join(", ");
            let theirs: Vec<&str> = modules.iter().map(|(m, _)| m.rsplit('.').next().unwrap_or(m)).collect();
            return Err(Error::Config {
                key: "lora_targets".into(),
                message: format!(
                    "`{name}` names no dense layer of a {:?} block (prodcat's names: {ours}; this checkpoint's: {})",
                    family.id(),
                    theirs.join(", ")
                ),
            });
        }
        targets.extend(matched);
    }
    Ok(targets.into_iter().collect())
}

/// Config keys every family reads alike.
pub(crate) struct Keys<'a> {
    raw: &'a Value,
    path: &'a Path,
}

impl<'a> Keys<'a> {
    pub(crate) fn new(raw: &'a Value, path: &'a Path) -> Self {
        Self { raw, path }
    }

    /// A required whole number.
    pub(crate) fn usize(&self, key: &str) -> Result<usize> {
        self.optional_usize(key)?.ok_or_else(|| Error::model(self.path, format!("config.json has no `{key}`")))
    }

    /// An optional whole number (an error when present and not one).
    pub(crate) fn optional_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.raw.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|n| Some(n as usize))
                .ok_or_else(|| Error::model(self.path, format!("config.json `{key}` is not a whole number: {v}"))),
        }
    }

    /// An optional number.
    pub(crate) fn optional_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.raw.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| Error::model(self.path, format!("config.json `{key}` is not a number: {v}"))),
        }
    }

    /// An optional string.
    pub(crate) fn optional_str(&self, key: &str) -> Option<&'a str> {
        self.raw.get(key).and_then(Value::as_str)
    }

    /// An error unless `key` is absent or one of `allowed` (what prodcat's block computes).
    pub(crate) fn only(&self, key: &str, allowed: &[&str]) -> Result<()> {
        match self.optional_str(key) {
            Some(v) if !allowed.contains(&v) => Err(Error::model(
                self.path,
                format!(
                    "{key} `{v}` is not supported (only {})",
                    allowed.iter().map(|a| format!("`{a}`")).collect::<Vec<_>>().join(", ")
                ),
            )),
            _ => Ok(()),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.path
    }
}

/// The block names of BERT's layout (BERT and RoBERTa checkpoints).
pub(crate) fn bert_layer(i: usize) -> LayerNames {
    LayerNames::ungated(
        &format!("encoder.layer.{i}"),
        [
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "intermediate.dense",
            "output.dense",
        ],
        "attention.output.LayerNorm",
        "output.LayerNorm",
    )
}

/// BERT's embedding names (BERT and RoBERTa checkpoints).
pub(crate) const BERT_EMBEDDINGS: EmbeddingNames = EmbeddingNames {
    word: "embeddings.word_embeddings",
    position: Some("embeddings.position_embeddings"),
    token_type: Some("embeddings.token_type_embeddings"),
    norm: Some("embeddings.LayerNorm"),
};

/// The keys a family names its sizes by: width, blocks, heads, feed-forward width.
pub(crate) type SizeKeys = [&'static str; 4];

/// A config from `keys` read under a family's size names (`vocab_size`, `max_position_embeddings`
/// and `pad_token_id` are everyone's), with the token types and LayerNorm epsilon it gives.
pub(crate) fn sized(
    family: EncoderFamily,
    keys: &Keys<'_>,
    [hidden, layers, heads, intermediate]: SizeKeys,
    type_vocab_size: usize,
    layer_norm_eps: f64,
) -> Result<EncoderConfig> {
    EncoderConfig {
        family,
        vocab_size: keys.usize("vocab_size")?,
        hidden_size: keys.usize(hidden)?,
        num_layers: keys.usize(layers)?,
        num_heads: keys.usize(heads)?,
        intermediate_size: keys.usize(intermediate)?,
        max_positions: keys.optional_usize("max_position_embeddings")?.unwrap_or(512),
        type_vocab_size,
        layer_norm_eps,
        pad_token_id: keys.optional_usize("pad_token_id")?.unwrap_or(0) as u32,
        norm_first: false,
        causal: false,
        activation: Default::default(),
        norm: NormKind::LayerNorm,
        kv_heads: None,
        head_width: None,
        rope_theta: None,
        qk_norm: false,
        relative_buckets: None,
    }
    .checked(keys.path())
}

/// The BERT-layout keys of `config.json` (BERT, RoBERTa, XLM-R): sizes, eps, pad id, and the
/// activation and position kind the shared block computes.
pub(crate) fn bert_keys(family: EncoderFamily, keys: &Keys<'_>) -> Result<EncoderConfig> {
    keys.only("hidden_act", &["gelu"])?;
    keys.only("position_embedding_type", &["absolute"])?;
    let sizes = ["hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"];
    let types = keys.optional_usize("type_vocab_size")?.unwrap_or(2);
    sized(family, keys, sizes, types, keys.optional_f64("layer_norm_eps")?.unwrap_or(1e-12))
}

/// BERT-layout `config.json` keys for `config` (`model_type` and `architectures` given).
pub(crate) fn bert_hf_config(config: &EncoderConfig, model_type: &str, architecture: &str) -> Value {
    serde_json::json!({
        "model_type": model_type,
        "architectures": [architecture],
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "intermediate_size": config.intermediate_size,
        "max_position_embeddings": config.max_positions,
        "type_vocab_size": config.type_vocab_size,
        "layer_norm_eps": config.layer_norm_eps,
        "pad_token_id": config.pad_token_id,
        "hidden_act": "gelu",
        "position_embedding_type": "absolute",
    })
}

/// Every tensor a checkpoint of `config` must hold (names after the family's prefix): all a
/// checkpoint should hold besides what no encoder reads (a pooler, MLM heads, buffers such as
/// `position_ids` or GPT-2's causal masks).
pub fn tensor_names(config: &EncoderConfig) -> BTreeSet<String> {
    of(config.family).checkpoint_tensors(config)
}

/// The tensors the shared block reads under `family`'s names: the embeddings, each block's dense
/// layers (weights, and biases where the family has them) and norms (weights, and biases under
/// LayerNorm), the final norm.
fn block_tensors<F: Family + ?Sized>(family: &F, config: &EncoderConfig) -> BTreeSet<String> {
    let e = family.embeddings();
    let tables = [Some(e.word), e.position, e.token_type, family.relative_bias()];
    let mut weights: Vec<String> = tables.into_iter().flatten().map(String::from).collect();
    let mut biases: Vec<String> = Vec::new();
    let mut norms: Vec<String> = e.norm.into_iter().chain(family.final_norm()).map(String::from).collect();
    for i in 0..config.num_layers {
        let layer = family.layer(i);
        for (target, name) in layer.dense {
            if family.has_bias(target) {
                biases.push(name.clone());
            }
            weights.push(name);
        }
        norms.extend([layer.attention_norm, layer.output_norm].into_iter().chain(layer.qk_norm.into_iter().flatten()));
    }
    if config.norm == NormKind::LayerNorm {
        biases.extend(norms.iter().cloned());
    }
    let weights = weights.into_iter().chain(norms).map(|n| format!("{n}.weight"));
    weights.chain(biases.into_iter().map(|n| format!("{n}.bias"))).collect()
}
