//! A BERT-family encoder with LoRA adapters and a classification head, in candle.
//!
//! This is the training-time and reference forward pass. The same computation is written out as
//! an ONNX graph by [`crate::onnx::transformer`], and the two are checked against each other
//! (parity) before a model is published.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{D, DType, Device, Result as CandleResult, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::config::{Activation, EncoderConfig, NormKind};
use super::family::relative_bucket;
use super::lora::{AdaptedLinear, DenseUpdate, LoraAdapter, LoraSettings, LoraTarget};
use super::ops::{FrozenLayerNorm, FrozenLinear, Gelu, SoftmaxLastDim};
use crate::error::{Error, Result};
use crate::tokenize::PaddedBatch;

/// Name suffixes of a full update's weight and bias among the trainable variables.
pub const FULL_WEIGHT: &str = "full_weight";
pub const FULL_BIAS: &str = "full_bias";

/// Additive attention bias for padded positions (large enough to zero them, small enough for fp16).
pub const MASK_BIAS: f32 = -10_000.0;

/// How token states become one vector per text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// Mean of the token states under the attention mask (sentence-transformers' default).
    #[default]
    Mean,
    /// The state of the first (`[CLS]`) token.
    Cls,
    /// The state of the last non-padding token, found by the attention mask (decoders, whose last
    /// token is the only one that has seen the whole text).
    Last,
}

impl std::str::FromStr for Pooling {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "mean" => Ok(Self::Mean),
            "cls" => Ok(Self::Cls),
            "last" => Ok(Self::Last),
            _ => Err(format!("unknown pooling `{s}`; expected `mean`, `cls` or `last`")),
        }
    }
}

/// A frozen norm and its parameters (for export): LayerNorm when it has a bias, RMSNorm when not.
#[derive(Debug, Clone)]
pub struct Norm {
    pub weight: Tensor,
    /// None: RMSNorm.
    pub bias: Option<Tensor>,
    pub eps: f64,
    op: Option<FrozenLayerNorm>,
}

impl Norm {
    fn layer_norm(weight: Tensor, bias: Tensor, eps: f64) -> Result<Self> {
        let op = FrozenLayerNorm::new(&weight, &bias, eps)?;
        Ok(Self { weight, bias: Some(bias), eps, op: Some(op) })
    }

    fn rms_norm(weight: Tensor, eps: f64) -> Self {
        Self { weight, bias: None, eps, op: None }
    }

    /// Normalises over the last axis (any rank: RMSNorm also runs on each head's query and key).
    pub fn forward(&self, x: &Tensor) -> CandleResult<Tensor> {
        match &self.op {
            Some(op) => op.forward(x),
            // Composed of candle ops, each with its backward pass (candle's fused rms_norm has none).
            None => {
                let mean_square = x.sqr()?.mean_keepdim(D::Minus1)?;
                x.broadcast_div(&(mean_square + self.eps)?.sqrt()?)?.broadcast_mul(&self.weight)
            }
        }
    }
}

/// The frozen embedding tables and their LayerNorm (none in pre-norm decoders).
#[derive(Debug, Clone)]
pub struct Embeddings {
    pub word: Tensor,
    /// None: rotary positions.
    pub position: Option<Tensor>,
    pub token_type: Tensor,
    pub norm: Option<Norm>,
}

/// One transformer block.
#[derive(Debug, Clone)]
pub struct EncoderLayer {
    pub query: AdaptedLinear,
    pub key: AdaptedLinear,
    pub value: AdaptedLinear,
    pub attention_output: AdaptedLinear,
    /// The gate of a SwiGLU feed-forward block.
    pub gate: Option<AdaptedLinear>,
    pub intermediate: AdaptedLinear,
    pub output: AdaptedLinear,
    pub attention_norm: Norm,
    pub output_norm: Norm,
    /// Each head's query and key RMSNorm (Qwen3).
    pub qk_norm: Option<[Norm; 2]>,
}

impl EncoderLayer {
    /// The dense layer for a LoRA target, if the block has it.
    pub fn dense(&self, target: LoraTarget) -> Option<&AdaptedLinear> {
        match target {
            LoraTarget::Query => Some(&self.query),
            LoraTarget::Key => Some(&self.key),
            LoraTarget::Value => Some(&self.value),
            LoraTarget::AttentionOutput => Some(&self.attention_output),
            LoraTarget::Gate => self.gate.as_ref(),
            LoraTarget::Intermediate => Some(&self.intermediate),
            LoraTarget::Output => Some(&self.output),
        }
    }

    fn dense_mut(&mut self, target: LoraTarget) -> Option<&mut AdaptedLinear> {
        match target {
            LoraTarget::Query => Some(&mut self.query),
            LoraTarget::Key => Some(&mut self.key),
            LoraTarget::Value => Some(&mut self.value),
            LoraTarget::AttentionOutput => Some(&mut self.attention_output),
            LoraTarget::Gate => self.gate.as_mut(),
            LoraTarget::Intermediate => Some(&mut self.intermediate),
            LoraTarget::Output => Some(&mut self.output),
        }
    }
}

/// The trainable classification head (`[classes, hidden]` weight and `[classes]` bias).
#[derive(Debug, Clone)]
pub struct ClassifierHead {
    pub weight: Var,
    pub bias: Var,
}

/// LoRA dropout driven by a seeded generator, so a seed fixes the whole training run.
#[derive(Debug)]
pub struct Dropout {
    rng: ChaCha8Rng,
    p: f32,
}

impl Dropout {
    /// Dropout with probability `p`, seeded.
    pub fn new(p: f32, seed: u64) -> Self {
        Self { rng: ChaCha8Rng::seed_from_u64(seed), p }
    }

    /// `x` with elements zeroed with probability `p` and the rest scaled by `1/(1-p)`.
    pub fn apply(&mut self, x: &Tensor) -> CandleResult<Tensor> {
        if self.p <= 0.0 {
            return Ok(x.clone());
        }
        let keep = 1.0 / (1.0 - self.p);
        let mask: Vec<f32> =
            (0..x.elem_count()).map(|_| if self.rng.random::<f32>() < self.p { 0.0 } else { keep }).collect();
        x * Tensor::from_vec(mask, x.shape(), x.device())?
    }
}

/// Encoder + LoRA + pooling + linear head.
#[derive(Debug, Clone)]
pub struct EncoderClassifier {
    pub config: EncoderConfig,
    pub pooling: Pooling,
    pub lora: LoraSettings,
    pub embeddings: Embeddings,
    pub layers: Vec<EncoderLayer>,
    /// The norm after the last block (pre-norm decoders).
    pub final_norm: Option<Norm>,
    /// The relative position bias table shared by every block (`[buckets, heads]`, MPNet).
    pub relative_bias: Option<Tensor>,
    pub head: ClassifierHead,
    /// Parameters of the frozen base (for the trainable-% report).
    pub base_parameters: usize,
}

/// Reads a Hugging Face `model.safetensors` into f32 tensors, with any family's prefix
/// (`bert.`, `roberta.`, `distilbert.`, ...) removed.
pub fn load_base_weights(path: &Path) -> Result<HashMap<String, Tensor>> {
    if !path.is_file() {
        return Err(Error::model(path, "model.safetensors not found"));
    }
    let raw = candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| Error::model(path, format!("cannot read safetensors: {e}")))?;
    let prefix = super::family::FAMILIES
        .iter()
        .flat_map(|f| f.prefixes().iter().map(move |p| (*p, f.embeddings().word)))
        .find(|(p, word)| raw.contains_key(&format!("{p}{word}.weight")))
        .map_or("", |(p, _)| p);
    raw.into_iter()
        .filter_map(|(name, t)| name.strip_prefix(prefix).map(|n| (n.to_string(), t)))
        .map(|(name, t)| Ok((name, t.to_dtype(DType::F32)?)))
        .collect()
}

impl EncoderClassifier {
    /// Builds the model from base weights, fresh LoRA adapters and a fresh head (all seeded).
    pub fn new(
        config: EncoderConfig,
        weights: &HashMap<String, Tensor>,
        weights_path: &Path,
        lora: LoraSettings,
        pooling: Pooling,
        num_classes: usize,
        seed: u64,
    ) -> Result<Self> {
        let family = super::family::of(config.family);
        // The checkpoint's tensors as the block reads them (GPT-2's Conv1D and fused c_attn).
        let mut prepared = weights.clone();
        family.prepare(&mut prepared, &config).map_err(|e| Error::model(weights_path, e.to_string()))?;
        let get = |name: &str| -> Result<Tensor> {
            prepared.get(name).cloned().ok_or_else(|| Error::model(weights_path, format!("tensor `{name}` is missing")))
        };
        let h = config.hidden_size;
        let eps = config.layer_norm_eps;
        let norm_of = |name: &str| -> Result<Norm> {
            let weight = get(&format!("{name}.weight"))?;
            match config.norm {
                NormKind::LayerNorm => Norm::layer_norm(weight, get(&format!("{name}.bias"))?, eps),
                NormKind::RmsNorm => Ok(Norm::rms_norm(weight, eps)),
            }
        };
        let names = family.embeddings();
        let token_type = match names.token_type.and_then(|t| prepared.get(&format!("{t}.weight"))) {
            Some(t) => t.clone(),
            None => Tensor::zeros((1, h), DType::F32, &Device::Cpu)?,
        };
        let embeddings = Embeddings {
            word: get(&format!("{}.weight", names.word))?,
            position: names.position.map(|p| get(&format!("{p}.weight"))).transpose()?,
            token_type,
            norm: names.norm.map(norm_of).transpose()?,
        };
        let final_norm = family.final_norm().map(norm_of).transpose()?;
        let relative_bias = family.relative_bias().map(|name| get(&format!("{name}.weight"))).transpose()?;
        let dense = |names: &super::family::LayerNames, target: LoraTarget| -> Result<Option<AdaptedLinear>> {
            let Some(name) = names.dense(target) else { return Ok(None) };
            Ok(Some(AdaptedLinear {
                base: FrozenLinear::new(get(&format!("{name}.weight"))?, get(&format!("{name}.bias"))?)?,
                adapter: None,
                update: None,
            }))
        };
        let required = |names: &super::family::LayerNames, target: LoraTarget| -> Result<AdaptedLinear> {
            dense(names, target)?.ok_or_else(|| Error::Internal(format!("the family names no {target} layer")))
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut layers = Vec::with_capacity(config.num_layers);
        for i in 0..config.num_layers {
            let names = family.layer(i);
            let qk_norm = match &names.qk_norm {
                Some([q, k]) => Some([
                    Norm::rms_norm(get(&format!("{q}.weight"))?, eps),
                    Norm::rms_norm(get(&format!("{k}.weight"))?, eps),
                ]),
                None => None,
            };
            let mut layer = EncoderLayer {
                query: required(&names, LoraTarget::Query)?,
                key: required(&names, LoraTarget::Key)?,
                value: required(&names, LoraTarget::Value)?,
                attention_output: required(&names, LoraTarget::AttentionOutput)?,
                gate: dense(&names, LoraTarget::Gate)?,
                intermediate: required(&names, LoraTarget::Intermediate)?,
                output: required(&names, LoraTarget::Output)?,
                attention_norm: norm_of(&names.attention_norm)?,
                output_norm: norm_of(&names.output_norm)?,
                qk_norm,
            };
            if (layer.gate.is_some()) != (config.activation == Activation::SwiGlu) {
                return Err(Error::model(
                    weights_path,
                    "a gate layer goes with a SwiGLU feed-forward block and only with it",
                ));
            }
            for &target in &lora.targets {
                // A target the block does not have (a gate in a BERT block) is skipped.
                let Some(dense) = layer.dense_mut(target) else { continue };
                let (out_f, in_f) = dense.base.weight().dims2()?;
                if lora.full {
                    dense.update = Some(DenseUpdate::zeros(in_f, out_f)?);
                } else {
                    dense.adapter = Some(LoraAdapter::new(in_f, out_f, &lora, &mut rng)?);
                }
            }
            layers.push(layer);
        }
        let head_w: Vec<f32> = (0..num_classes * h).map(|_| normal(&mut rng) * 0.02).collect();
        let head = ClassifierHead {
            weight: Var::from_tensor(&Tensor::from_vec(head_w, (num_classes, h), &Device::Cpu)?)?,
            bias: Var::zeros(num_classes, DType::F32, &Device::Cpu)?,
        };
        let base_parameters = weights
            .iter()
            .filter(|(name, _)| !name.ends_with("position_ids") && !name.starts_with("pooler."))
            .map(|(_, t)| t.elem_count())
            .sum();
        Ok(Self { config, pooling, lora, embeddings, layers, final_norm, relative_bias, head, base_parameters })
    }

    /// Number of classes the head predicts.
    pub fn num_classes(&self) -> usize {
        self.head.bias.as_tensor().dims()[0]
    }

    /// Every trainable variable with a stable name (LoRA `A`/`B` per layer and target, the head).
    pub fn trainable(&self) -> Vec<(String, Var)> {
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            for target in LoraTarget::ALL {
                let Some(dense) = layer.dense(target) else { continue };
                if let Some(adapter) = &dense.adapter {
                    out.push((format!("layer.{i}.{target}.lora_a"), adapter.a.clone()));
                    out.push((format!("layer.{i}.{target}.lora_b"), adapter.b.clone()));
                }
                if let Some(update) = &dense.update {
                    out.push((format!("layer.{i}.{target}.{FULL_WEIGHT}"), update.weight.clone()));
                    out.push((format!("layer.{i}.{target}.{FULL_BIAS}"), update.bias.clone()));
                }
            }
        }
        out.push(("head.weight".into(), self.head.weight.clone()));
        out.push(("head.bias".into(), self.head.bias.clone()));
        out
    }

    /// Count of trainable parameters.
    pub fn trainable_parameters(&self) -> usize {
        self.trainable().iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Overwrites trainable variables from named tensors (a checkpoint); every name must match.
    pub fn load_trainable(&self, tensors: &HashMap<String, Tensor>, origin: &Path) -> Result<()> {
        for (name, var) in self.trainable() {
            let t =
                tensors.get(&name).ok_or_else(|| Error::model(origin, format!("checkpoint has no tensor `{name}`")))?;
            if t.dims() != var.dims() {
                return Err(Error::model(
                    origin,
                    format!("checkpoint tensor `{name}` has shape {:?}, expected {:?}", t.dims(), var.dims()),
                ));
            }
            var.set(t)?;
        }
        Ok(())
    }

    /// Multiplies every logit by `factor` (scales the head's weight and bias): how a calibration
    /// temperature T is folded in, with `factor` = 1 / T.
    pub fn scale_logits(&self, factor: f32) -> Result<()> {
        for var in [&self.head.weight, &self.head.bias] {
            var.set(&(var.as_tensor() * f64::from(factor))?)?;
        }
        Ok(())
    }

    /// Adds `shift` to every logit (a multi-label model's Platt offset, folded into the head's bias).
    pub fn shift_logits(&self, shift: f32) -> Result<()> {
        let bias = &self.head.bias;
        bias.set(&(bias.as_tensor() + f64::from(shift))?)?;
        Ok(())
    }

    /// A copy of the trainable tensors (for checkpoints and best-epoch snapshots).
    pub fn snapshot(&self) -> Result<HashMap<String, Tensor>> {
        self.trainable().into_iter().map(|(n, v)| Ok((n, v.as_tensor().copy()?))).collect()
    }

    /// Logits `[batch, classes]`; `dropout` switches on training-mode LoRA dropout.
    pub fn forward(&self, batch: &PaddedBatch, mut dropout: Option<&mut Dropout>) -> Result<Tensor> {
        let (b, s, h) = (batch.batch, batch.seq, self.config.hidden_size);
        if s > self.config.max_sequence() {
            return Err(Error::Internal(format!(
                "sequence of {s} tokens exceeds the model's {} positions",
                self.config.max_sequence()
            )));
        }
        let dev = Device::Cpu;
        let to_u32 = |v: &[i64]| v.iter().map(|&x| x as u32).collect::<Vec<u32>>();
        let ids = Tensor::from_vec(to_u32(&batch.input_ids), b * s, &dev)?;
        let types = Tensor::from_vec(to_u32(&batch.token_type_ids), b * s, &dev)?;
        let mask: Vec<f32> = batch.attention_mask.iter().map(|&m| m as f32).collect();
        let mask = Tensor::from_vec(mask, (b, s), &dev)?;

        let e = &self.embeddings;
        let type_rows = if e.token_type.dims()[0] == 1 { types.zeros_like()? } else { types };
        let mut x = (e.word.index_select(&ids, 0)? + e.token_type.index_select(&type_rows, 0)?)?;
        if let Some(table) = &e.position {
            let positions = table.narrow(0, self.config.position_offset(), s)?;
            x = (x + positions.unsqueeze(0)?.broadcast_as((b, s, h))?.reshape((b * s, h))?)?;
        }
        if let Some(norm) = &e.norm {
            x = norm.forward(&x)?;
        }
        let rotary = match self.config.rope_theta {
            Some(theta) => Some(rotary_tables(theta, self.config.head_dim(), s)?),
            None => None,
        };

        let mut bias = ((mask.ones_like()? - &mask)? * f64::from(MASK_BIAS))?.reshape((b, 1, 1, s))?;
        if self.config.causal {
            // A later position is masked for every earlier one.
            let later: Vec<f32> = (0..s * s).map(|k| if k % s > k / s { MASK_BIAS } else { 0.0 }).collect();
            bias = bias.broadcast_add(&Tensor::from_vec(later, (1, 1, s, s), &dev)?)?;
        }
        if let Some(table) = &self.relative_bias {
            // Each head's bias for key j seen from query i: its bucket of j − i.
            let buckets = self.config.relative_buckets.unwrap_or(table.dims()[0]);
            let index: Vec<u32> =
                (0..s * s).map(|k| relative_bucket((k % s) as i64 - (k / s) as i64, buckets) as u32).collect();
            let heads = table.dims()[1];
            let relative = table.index_select(&Tensor::from_vec(index, s * s, &dev)?, 0)?;
            let relative = relative.reshape((s, s, heads))?.permute((2, 0, 1))?.unsqueeze(0)?;
            bias = bias.broadcast_add(&relative)?;
        }
        for layer in &self.layers {
            x = self.layer_forward(layer, &x, (b, s), &bias, rotary.as_ref(), dropout.as_deref_mut())?;
        }
        if let Some(norm) = &self.final_norm {
            x = norm.forward(&x)?;
        }
        let pooled = match self.pooling {
            Pooling::Mean => {
                let x = x.reshape((b, s, h))?;
                let summed = x.broadcast_mul(&mask.unsqueeze(2)?)?.sum(1)?;
                summed.broadcast_div(&mask.sum_keepdim(1)?.clamp(1e-9, f64::MAX)?)?
            }
            Pooling::Cls => x.reshape((b, s, h))?.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Last => {
                // Each row's last token under the mask (right padding), never found by pad id.
                let rows: Vec<u32> = batch
                    .attention_mask
                    .chunks(s.max(1))
                    .enumerate()
                    .map(|(r, m)| (r * s + m.iter().filter(|&&v| v != 0).count().max(1) - 1) as u32)
                    .collect();
                x.index_select(&Tensor::from_vec(rows, b, &dev)?, 0)?
            }
        };
        let logits = pooled.matmul(&self.head.weight.as_tensor().t()?)?.broadcast_add(self.head.bias.as_tensor())?;
        Ok(logits)
    }

    fn layer_forward(
        &self,
        layer: &EncoderLayer,
        x: &Tensor,
        (b, s): (usize, usize),
        bias: &Tensor,
        rotary: Option<&(Tensor, Tensor)>,
        mut dropout: Option<&mut Dropout>,
    ) -> Result<Tensor> {
        let (nh, kv, hd) = (self.config.num_heads, self.config.kv_heads(), self.config.head_dim());
        // LoRA dropout acts on the adapter's input (full updates take the input as it is); one
        // mask per distinct input tensor.
        let targets: &[LoraTarget] = if self.lora.full { &[] } else { &self.lora.targets };
        let mut dropped = |input: &Tensor, uses: &[LoraTarget]| -> CandleResult<Tensor> {
            match dropout.as_deref_mut() {
                Some(d) if uses.iter().any(|t| targets.contains(t)) => d.apply(input),
                _ => Ok(input.clone()),
            }
        };
        let pre_norm = self.config.norm_first;
        // Pre-norm: each sub-layer reads its input normalised and adds to it; post-norm (BERT):
        // each sub-layer's sum is normalised.
        let a = if pre_norm { layer.attention_norm.forward(x)? } else { x.clone() };
        let a_in = dropped(&a, &[LoraTarget::Query, LoraTarget::Key, LoraTarget::Value])?;
        let split = |t: Tensor, n: usize| t.reshape((b, s, n, hd));
        let (mut q, mut k) = (split(layer.query.forward(&a, &a_in)?, nh)?, split(layer.key.forward(&a, &a_in)?, kv)?);
        if let Some([q_norm, k_norm]) = &layer.qk_norm {
            (q, k) = (q_norm.forward(&q)?, k_norm.forward(&k)?);
        }
        let heads = |t: Tensor| t.transpose(1, 2)?.contiguous();
        let (mut q, mut k) = (heads(q)?, heads(k)?);
        let v = heads(split(layer.value.forward(&a, &a_in)?, kv)?)?;
        if let Some((cos, sin)) = rotary {
            (q, k) = (rotate(&q, cos, sin)?, rotate(&k, cos, sin)?);
        }
        // Grouped-query attention: each key/value head serves nh / kv query heads in a row.
        let repeat = |t: Tensor| -> CandleResult<Tensor> {
            if kv == nh {
                return Ok(t);
            }
            t.unsqueeze(2)?.broadcast_as((b, kv, nh / kv, s, hd))?.contiguous()?.reshape((b, nh, s, hd))
        };
        let (k, v) = (repeat(k)?, repeat(v)?);
        let scores = (q.matmul(&k.t()?.contiguous()?)? * (1.0 / (hd as f64).sqrt()))?;
        let probs = SoftmaxLastDim::forward(&scores.broadcast_add(bias)?)?;
        let context = probs.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((b * s, nh * hd))?;
        let context_in = dropped(&context, &[LoraTarget::AttentionOutput])?;
        let attended = (layer.attention_output.forward(&context, &context_in)? + x)?;
        let h1 = if pre_norm { attended } else { layer.attention_norm.forward(&attended)? };
        let m = if pre_norm { layer.output_norm.forward(&h1)? } else { h1.clone() };
        let m_in = dropped(&m, &[LoraTarget::Gate, LoraTarget::Intermediate])?;
        let inner = layer.intermediate.forward(&m, &m_in)?;
        let inner = match (self.config.activation, &layer.gate) {
            (Activation::Gelu, _) => Gelu::forward(&inner)?,
            (Activation::GeluTanh, _) => inner.gelu()?,
            (Activation::SwiGlu, Some(gate)) => (gate.forward(&m, &m_in)?.silu()? * inner)?,
            (Activation::SwiGlu, None) => return Err(Error::Internal("a SwiGLU block without a gate".into())),
        };
        let inner_in = dropped(&inner, &[LoraTarget::Output])?;
        let out = (layer.output.forward(&inner, &inner_in)? + h1)?;
        Ok(if pre_norm { out } else { layer.output_norm.forward(&out)? })
    }
}

/// Rotary tables `cos`, `sin` (`[1, 1, seq, head_dim]`) as Hugging Face computes them in f32:
/// frequency `j` is `θ^(−2j/d)`, each repeated for both halves of the head.
fn rotary_tables(theta: f64, head_dim: usize, seq: usize) -> Result<(Tensor, Tensor)> {
    let half = head_dim / 2;
    let inv: Vec<f32> = (0..half).map(|j| (1.0 / theta.powf((2 * j) as f64 / head_dim as f64)) as f32).collect();
    let inv = &inv;
    let angles: Vec<f32> = (0..seq).flat_map(|p| (0..head_dim).map(move |c| (p as f32) * inv[c % half])).collect();
    let table = |f: fn(f32) -> f32| {
        Tensor::from_vec(angles.iter().map(|&a| f(a)).collect::<Vec<_>>(), (1, 1, seq, head_dim), &Device::Cpu)
    };
    Ok((table(f32::cos)?, table(f32::sin)?))
}

/// `x·cos + rotate_half(x)·sin` over the last axis (Llama's rotation, halves not interleaved).
fn rotate(x: &Tensor, cos: &Tensor, sin: &Tensor) -> CandleResult<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let rotated = Tensor::cat(&[&x.narrow(D::Minus1, half, half)?.neg()?, &x.narrow(D::Minus1, 0, half)?], D::Minus1)?;
    x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?
}

/// A standard normal sample (Box–Muller), from the seeded generator.
fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}
