//! GPT-2: a decoder — pre-norm blocks (`ln_1` before attention, `ln_2` before the MLP), causal
//! attention, GELU's tanh approximation (`gelu_new`), a final `ln_f`; tensors under `transformer.`
//! (`GPT2LMHeadModel`) or none (`GPT2Model`). Its dense layers are `Conv1D`s (weights stored
//! `[in, out]`) and query, key and value one fused `c_attn`: [`Family::prepare`] transposes and
//! splits them. The causal-mask buffers (`attn.bias`, `attn.masked_bias`) are not read. Pooled by
//! the last non-padding token (`--pooling last`).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use candle_core::Tensor;
use serde_json::Value;

use super::{EmbeddingNames, Family, Keys, LayerNames};
use crate::encoder::config::{Activation, EncoderConfig, EncoderFamily};
use crate::encoder::lora::LoraTarget;
use crate::error::{Error, Result};

pub struct Gpt2;

/// The Conv1D layers besides `c_attn`, under block `h.{i}`.
const CONV1D: [&str; 3] = ["attn.c_proj", "mlp.c_fc", "mlp.c_proj"];

impl Family for Gpt2 {
    fn id(&self) -> EncoderFamily {
        EncoderFamily::Gpt2
    }

    fn model_types(&self) -> &'static [&'static str] {
        &["gpt2"]
    }

    fn prefixes(&self) -> &'static [&'static str] {
        &["transformer."]
    }

    fn config(&self, raw: &Value, path: &Path) -> Result<EncoderConfig> {
        let keys = Keys::new(raw, path);
        keys.only("activation_function", &["gelu_new", "gelu_pytorch_tanh"])?;
        let hidden = keys.usize("n_embd")?;
        EncoderConfig {
            family: EncoderFamily::Gpt2,
            vocab_size: keys.usize("vocab_size")?,
            hidden_size: hidden,
            num_layers: keys.usize("n_layer")?,
            num_heads: keys.usize("n_head")?,
            intermediate_size: keys.optional_usize("n_inner")?.unwrap_or(4 * hidden),
            max_positions: keys.optional_usize("n_positions")?.unwrap_or(1024),
            type_vocab_size: 1,
            layer_norm_eps: keys.optional_f64("layer_norm_epsilon")?.unwrap_or(1e-5),
            pad_token_id: keys.optional_usize("pad_token_id")?.unwrap_or(0) as u32,
            norm_first: true,
            causal: true,
            activation: Activation::GeluTanh,
            norm: Default::default(),
            kv_heads: None,
            head_width: None,
            rope_theta: None,
            qk_norm: false,
            relative_buckets: None,
        }
        .checked(path)
    }

    fn embeddings(&self) -> EmbeddingNames {
        EmbeddingNames { word: "wte", position: Some("wpe"), token_type: None, norm: None }
    }

    fn layer(&self, i: usize) -> LayerNames {
        LayerNames::ungated(
            &format!("h.{i}"),
            ["attn.q", "attn.k", "attn.v", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"],
            "ln_1",
            "ln_2",
        )
    }

    fn lora_modules(&self) -> Vec<(String, Vec<LoraTarget>)> {
        vec![
            ("h.0.attn.c_attn".into(), vec![LoraTarget::Query, LoraTarget::Key, LoraTarget::Value]),
            ("h.0.attn.c_proj".into(), vec![LoraTarget::AttentionOutput]),
            ("h.0.mlp.c_fc".into(), vec![LoraTarget::Intermediate]),
            ("h.0.mlp.c_proj".into(), vec![LoraTarget::Output]),
        ]
    }

    fn final_norm(&self) -> Option<&'static str> {
        Some("ln_f")
    }

    fn prepare(&self, weights: &mut HashMap<String, Tensor>, config: &EncoderConfig) -> Result<()> {
        let h = config.hidden_size;
        let mut take = |name: String| {
            weights.remove(&name).ok_or_else(|| Error::Internal(format!("the GPT-2 checkpoint has no `{name}`")))
        };
        let mut prepared = Vec::new();
        for i in 0..config.num_layers {
            let p = format!("h.{i}");
            // c_attn: [h, 3h] → [3h, h], rows q, k, v.
            let w = take(format!("{p}.attn.c_attn.weight"))?.t()?;
            let b = take(format!("{p}.attn.c_attn.bias"))?;
            for (k, part) in ["q", "k", "v"].into_iter().enumerate() {
                prepared.push((format!("{p}.attn.{part}.weight"), w.narrow(0, k * h, h)?.contiguous()?));
                prepared.push((format!("{p}.attn.{part}.bias"), b.narrow(0, k * h, h)?.contiguous()?));
            }
            for conv in CONV1D {
                let w = take(format!("{p}.{conv}.weight"))?;
                prepared.push((format!("{p}.{conv}.weight"), w.t()?.contiguous()?));
            }
        }
        weights.extend(prepared);
        Ok(())
    }

    fn checkpoint_tensors(&self, config: &EncoderConfig) -> BTreeSet<String> {
        let mut names: BTreeSet<String> =
            ["wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"].map(String::from).into();
        for i in 0..config.num_layers {
            for part in ["ln_1", "ln_2", "attn.c_attn"].into_iter().chain(CONV1D) {
                names.insert(format!("h.{i}.{part}.weight"));
                names.insert(format!("h.{i}.{part}.bias"));
            }
        }
        names
    }

    fn hf_config(&self, config: &EncoderConfig) -> Value {
        serde_json::json!({
            "model_type": "gpt2",
            "architectures": ["GPT2LMHeadModel"],
            "vocab_size": config.vocab_size,
            "n_embd": config.hidden_size,
            "n_layer": config.num_layers,
            "n_head": config.num_heads,
            "n_inner": config.intermediate_size,
            "n_positions": config.max_positions,
            "layer_norm_epsilon": config.layer_norm_eps,
            "activation_function": "gelu_new",
            "bos_token_id": 0,
            "eos_token_id": 0,
        })
    }
}
