//! Llama, Qwen2 and Qwen3: decoders of one block — RMSNorm before attention
//! (`input_layernorm`) and before the MLP (`post_attention_layernorm`), rotary positions,
//! grouped-query attention (`num_key_value_heads`), a SwiGLU MLP (`gate_proj`, `up_proj`,
//! `down_proj`), a final `norm`; tensors under `model.` (`*ForCausalLM`) or none (`*Model`); the
//! `lm_head` is not read. The three differ in biases (Qwen2: query, key and value; the others
//! none) and in Qwen3's RMSNorm on each head's query and key (`q_norm`, `k_norm`) and explicit
//! `head_dim`. Pooled by the last token under the attention mask (`--pooling last`), never found
//! by pad id (Llama has none).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use super::{EmbeddingNames, Family, Keys, LayerNames};
use crate::encoder::config::{Activation, EncoderConfig, EncoderFamily, NormKind};
use crate::encoder::lora::LoraTarget;
use crate::error::{Error, Result};

/// One of the Llama-shaped families.
pub struct Llama {
    id: EncoderFamily,
    model_types: &'static [&'static str],
    architecture: &'static str,
    /// Biases on query, key and value (Qwen2).
    qkv_bias: bool,
    /// Per-head query and key RMSNorm (Qwen3).
    qk_norm: bool,
    default_theta: f64,
}

/// Llama (and Mistral, the same block and names).
pub const LLAMA: Llama = Llama {
    id: EncoderFamily::Llama,
    model_types: &["llama", "mistral"],
    architecture: "LlamaForCausalLM",
    qkv_bias: false,
    qk_norm: false,
    default_theta: 10_000.0,
};

/// Qwen2 (and Qwen2.5).
pub const QWEN2: Llama = Llama {
    id: EncoderFamily::Qwen2,
    model_types: &["qwen2"],
    architecture: "Qwen2ForCausalLM",
    qkv_bias: true,
    qk_norm: false,
    default_theta: 1_000_000.0,
};

/// Qwen3 (and Qwen3-Embedding).
pub const QWEN3: Llama = Llama {
    id: EncoderFamily::Qwen3,
    model_types: &["qwen3"],
    architecture: "Qwen3ForCausalLM",
    qkv_bias: false,
    qk_norm: true,
    default_theta: 1_000_000.0,
};

/// The block's dense layers by target.
const DENSE: [(LoraTarget, &str); 7] = [
    (LoraTarget::Query, "self_attn.q_proj"),
    (LoraTarget::Key, "self_attn.k_proj"),
    (LoraTarget::Value, "self_attn.v_proj"),
    (LoraTarget::AttentionOutput, "self_attn.o_proj"),
    (LoraTarget::Gate, "mlp.gate_proj"),
    (LoraTarget::Intermediate, "mlp.up_proj"),
    (LoraTarget::Output, "mlp.down_proj"),
];

impl Llama {
    /// The rotary base: `rope_theta` at the top (Transformers 4) or under `rope_parameters`
    /// (Transformers 5); scaled rotations (`llama3`, `yarn`, ...) are refused, not approximated.
    fn rope_theta(&self, keys: &Keys<'_>, raw: &Value) -> Result<f64> {
        let nested = raw.get("rope_parameters").filter(|v| v.is_object());
        for (key, value) in [("rope_scaling", raw.get("rope_scaling")), ("rope_parameters", nested)] {
            let kind = value.and_then(|v| v.get("rope_type").or_else(|| v.get("type"))).and_then(Value::as_str);
            if let Some(kind) = kind.filter(|k| *k != "default") {
                return Err(Error::model(keys.path(), format!("{key} `{kind}` is not supported (only `default`)")));
            }
        }
        let theta = match nested.and_then(|p| p.get("rope_theta")) {
            Some(v) => v.as_f64(),
            None => keys.optional_f64("rope_theta")?.or(Some(self.default_theta)),
        };
        theta.filter(|t| *t > 0.0).ok_or_else(|| Error::model(keys.path(), "rope_theta is not a positive number"))
    }
}

impl Family for Llama {
    fn id(&self) -> EncoderFamily {
        self.id
    }

    fn model_types(&self) -> &'static [&'static str] {
        self.model_types
    }

    fn prefixes(&self) -> &'static [&'static str] {
        &["model."]
    }

    fn config(&self, raw: &Value, path: &Path) -> Result<EncoderConfig> {
        let keys = Keys::new(raw, path);
        keys.only("hidden_act", &["silu"])?;
        for flag in ["attention_bias", "mlp_bias", "use_sliding_window"] {
            if raw.get(flag).and_then(Value::as_bool) == Some(true) && !(self.qkv_bias && flag == "attention_bias") {
                return Err(Error::model(path, format!("{flag}: true is not supported")));
            }
        }
        let heads = keys.usize("num_attention_heads")?;
        EncoderConfig {
            family: self.id,
            vocab_size: keys.usize("vocab_size")?,
            hidden_size: keys.usize("hidden_size")?,
            num_layers: keys.usize("num_hidden_layers")?,
            num_heads: heads,
            intermediate_size: keys.usize("intermediate_size")?,
            max_positions: keys.optional_usize("max_position_embeddings")?.unwrap_or(2048),
            type_vocab_size: 1,
            layer_norm_eps: keys.optional_f64("rms_norm_eps")?.unwrap_or(1e-6),
            pad_token_id: keys.optional_usize("pad_token_id")?.unwrap_or(0) as u32,
            norm_first: true,
            causal: true,
            activation: Activation::SwiGlu,
            norm: NormKind::RmsNorm,
            kv_heads: keys.optional_usize("num_key_value_heads")?.filter(|&kv| kv != heads),
            head_width: keys.optional_usize("head_dim")?,
            rope_theta: Some(self.rope_theta(&keys, raw)?),
            qk_norm: self.qk_norm,
            relative_buckets: None,
        }
        .checked(path)
    }

    fn embeddings(&self) -> EmbeddingNames {
        EmbeddingNames { word: "embed_tokens", position: None, token_type: None, norm: None }
    }

    fn layer(&self, i: usize) -> LayerNames {
        let block = format!("layers.{i}");
        let mut names = LayerNames::under(&block, &DENSE, "input_layernorm", "post_attention_layernorm");
        if self.qk_norm {
            names.qk_norm = Some([format!("{block}.self_attn.q_norm"), format!("{block}.self_attn.k_norm")]);
        }
        names
    }

    fn final_norm(&self) -> Option<&'static str> {
        Some("norm")
    }

    fn has_bias(&self, target: LoraTarget) -> bool {
        self.qkv_bias && matches!(target, LoraTarget::Query | LoraTarget::Key | LoraTarget::Value)
    }

    /// A zero bias for each dense layer the checkpoint keeps without one.
    fn prepare(&self, weights: &mut HashMap<String, Tensor>, config: &EncoderConfig) -> Result<()> {
        for i in 0..config.num_layers {
            for (target, name) in self.layer(i).dense {
                if self.has_bias(target) {
                    continue;
                }
                let weight = weights
                    .get(&format!("{name}.weight"))
                    .ok_or_else(|| Error::Internal(format!("the checkpoint has no `{name}.weight`")))?;
                let zeros = Tensor::zeros(weight.dims()[0], DType::F32, &Device::Cpu)?;
                weights.insert(format!("{name}.bias"), zeros);
            }
        }
        Ok(())
    }

    fn hf_config(&self, config: &EncoderConfig) -> Value {
        let mut json = serde_json::json!({
            "model_type": self.model_types[0],
            "architectures": [self.architecture],
            "vocab_size": config.vocab_size,
            "hidden_size": config.hidden_size,
            "num_hidden_layers": config.num_layers,
            "num_attention_heads": config.num_heads,
            "num_key_value_heads": config.kv_heads(),
            "intermediate_size": config.intermediate_size,
            "max_position_embeddings": config.max_positions,
            "rms_norm_eps": config.layer_norm_eps,
            "rope_theta": config.rope_theta.unwrap_or(self.default_theta),
            "hidden_act": "silu",
            "tie_word_embeddings": false,
            "bos_token_id": 0,
            "eos_token_id": 0,
        });
        if let Some(width) = config.head_width {
            json["head_dim"] = width.into();
        }
        if self.id != EncoderFamily::Qwen2 {
            json["attention_bias"] = false.into();
        }
        json
    }
}
