//! Writes a fine-tuned [`EncoderClassifier`] as an ONNX graph with its LoRA deltas merged into the
//! dense weights (`W' = W + (α/r)·B·A`).
//!
//! Inputs: `input_ids`, `attention_mask` and (for BERT) `token_type_ids`, all `int64 [batch, seq]`.
//! Outputs: `logits` and `probabilities`, `float [batch, classes]`. Batch and sequence axes are
//! dynamic. The graph uses standard opset-17 operators only; ONNX Runtime fuses the attention,
//! LayerNorm and GELU patterns at load time.

use candle_core::Tensor;

use super::graph::{Attr, Dim, GraphBuilder};
use super::proto::data_type;
use crate::common::{Head, Taxonomy, names};
use crate::encoder::config::Activation;
use crate::encoder::model::{MASK_BIAS, Norm};
use crate::encoder::{EncoderClassifier, LoraTarget, Pooling};
use crate::error::Result;

fn values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

/// Serialises the model (adapters merged) to ONNX bytes.
pub fn export(
    model: &EncoderClassifier,
    head: Head,
    taxonomy: Option<&Taxonomy>,
    metadata: &[(&str, String)],
) -> Result<super::graph::OnnxFiles> {
    let cfg = &model.config;
    let (h, nh, kv, hd) = (cfg.hidden_size, cfg.num_heads, cfg.kv_heads(), cfg.head_dim());
    let mut g = GraphBuilder::new("prodcat_transformer_classifier");
    let dyn_dims = [Dim::Named("batch"), Dim::Named("sequence")];
    let ids = g.input(names::INPUT_IDS, data_type::INT64, &dyn_dims);
    let mask = g.input(names::ATTENTION_MASK, data_type::INT64, &dyn_dims);
    let uses_token_types = model.embeddings.token_type.dims()[0] > 1;
    let types = uses_token_types.then(|| g.input(names::TOKEN_TYPE_IDS, data_type::INT64, &dyn_dims));

    // Embeddings: word + position + token type, then LayerNorm.
    let e = &model.embeddings;
    let word_table = g.f32_tensor("embeddings.word", &[cfg.vocab_size, h], &values(&e.word)?);
    let mut x = g.op("Gather", &[&word_table, &ids], &[]);
    let shape = g.op("Shape", &[&ids], &[]);
    let one = g.scalar_i64(1);
    let seq_len = g.op("Gather", &[&shape, &one], &[("axis", Attr::Int(0))]);
    if let Some(table) = &e.position {
        let pos_table = g.f32_tensor("embeddings.position", &[table.dims()[0], h], &values(table)?);
        let offset = g.scalar_i64(cfg.position_offset() as i64);
        let end = g.op("Add", &[&seq_len, &offset], &[]);
        let pos_ids = g.op("Range", &[&offset, &end, &one], &[]);
        let pos = g.op("Gather", &[&pos_table, &pos_ids], &[]);
        x = g.op("Add", &[&x, &pos], &[]);
    }
    if let Some(types) = &types {
        let type_table = g.f32_tensor("embeddings.token_type", &[e.token_type.dims()[0], h], &values(&e.token_type)?);
        let typ = g.op("Gather", &[&type_table, types], &[]);
        x = g.op("Add", &[&x, &typ], &[]);
    } else {
        // A single token type: its row is a constant offset.
        let row = g.f32_tensor("embeddings.token_type", &[h], &values(&e.token_type.get(0)?)?);
        x = g.op("Add", &[&x, &row], &[]);
    }
    if let Some(norm) = &e.norm {
        x = emit_norm(&mut g, &x, norm, "embeddings.norm")?;
    }

    // Additive attention bias [batch, 1, 1, seq] from the mask.
    let mask_f = g.op("Cast", &[&mask], &[("to", Attr::Int(data_type::FLOAT as i64))]);
    let one_f = g.scalar_f32(1.0);
    let inverted = g.op("Sub", &[&one_f, &mask_f], &[]);
    let big_neg = g.scalar_f32(MASK_BIAS);
    let bias = g.op("Mul", &[&inverted, &big_neg], &[]);
    let axes_12 = g.ints(&[1, 2]);
    let mut bias = g.op("Unsqueeze", &[&bias, &axes_12], &[]);
    if cfg.causal {
        // [1, 1, seq, seq]: MASK_BIAS where the key comes after the query.
        let zero = g.scalar_i64(0);
        let steps = g.op("Range", &[&zero, &seq_len, &one], &[]);
        let axis_0 = g.ints(&[0]);
        let axis_1 = g.ints(&[1]);
        let keys = g.op("Unsqueeze", &[&steps, &axis_0], &[]); // [1, seq]
        let queries = g.op("Unsqueeze", &[&steps, &axis_1], &[]); // [seq, 1]
        let later = g.op("Greater", &[&keys, &queries], &[]);
        let later = g.op("Cast", &[&later], &[("to", Attr::Int(data_type::FLOAT as i64))]);
        let later = g.op("Mul", &[&later, &big_neg], &[]);
        let later = g.op("Unsqueeze", &[&later, &axis_0], &[]);
        let later = g.op("Unsqueeze", &[&later, &axis_0], &[]);
        bias = g.op("Add", &[&bias, &later], &[]);
    }

    if let Some(table) = &model.relative_bias {
        // [1, heads, seq, seq]: each head's bias for key j seen from query i, by the bucket of
        // j − i (a constant lookup over every distance the positions allow).
        let buckets = cfg.relative_buckets.unwrap_or(table.dims()[0]);
        let longest = cfg.max_sequence() as i64;
        let by_distance: Vec<i64> =
            (-(longest - 1)..longest).map(|d| crate::encoder::family::relative_bucket(d, buckets) as i64).collect();
        let by_distance = g.i64_tensor("relative.bucket_of_distance", &[by_distance.len()], &by_distance);
        let table = g.f32_tensor("relative.bias", &[table.dims()[0], table.dims()[1]], &values(table)?);
        let zero = g.scalar_i64(0);
        let steps = g.op("Range", &[&zero, &seq_len, &one], &[]);
        let (axis_0, axis_1) = (g.ints(&[0]), g.ints(&[1]));
        let keys = g.op("Unsqueeze", &[&steps, &axis_0], &[]);
        let queries = g.op("Unsqueeze", &[&steps, &axis_1], &[]);
        let distance = g.op("Sub", &[&keys, &queries], &[]);
        let shift = g.scalar_i64(longest - 1);
        let distance = g.op("Add", &[&distance, &shift], &[]);
        let buckets = g.op("Gather", &[&by_distance, &distance], &[]);
        let relative = g.op("Gather", &[&table, &buckets], &[]); // [seq, seq, heads]
        let relative = g.op("Transpose", &[&relative], &[("perm", Attr::Ints(vec![2, 0, 1]))]);
        let relative = g.op("Unsqueeze", &[&relative, &axis_0], &[]);
        bias = g.op("Add", &[&bias, &relative], &[]);
    }

    let split_heads = g.ints(&[0, 0, nh as i64, hd as i64]);
    let split_kv = g.ints(&[0, 0, kv as i64, hd as i64]);
    let merge_heads = g.ints(&[0, 0, (nh * hd) as i64]);
    let scale = g.scalar_f32((hd as f32).sqrt());
    let rotary = cfg.rope_theta.map(|theta| rotary_tables(&mut g, theta, hd, &seq_len));
    // Grouped-query attention: each key/value head repeated for the nh / kv query heads it serves.
    let repeat_kv = |g: &mut GraphBuilder, t: &str, shape: &[i64]| -> String {
        if kv == nh {
            return t.to_string();
        }
        let axis_2 = g.ints(&[2]);
        let t = g.op("Unsqueeze", &[t, &axis_2], &[]);
        let times = g.ints(&[1, 1, (nh / kv) as i64, 1, 1]);
        let t = g.op("Expand", &[&t, &times], &[]);
        let shape = g.ints(shape);
        g.op("Reshape", &[&t, &shape], &[])
    };
    for (i, layer) in model.layers.iter().enumerate() {
        let p = format!("layer.{i}");
        let dense = |g: &mut GraphBuilder, x: &str, target: LoraTarget| -> Result<String> {
            let d = layer
                .dense(target)
                .ok_or_else(|| crate::error::Error::Internal(format!("the block has no {target} layer")))?;
            let w = d.merged_weight()?.t()?.contiguous()?;
            let (din, dout) = w.dims2()?;
            let w = g.f32_tensor(&format!("{p}.{target}.weight"), &[din, dout], &values(&w)?);
            let b = g.f32_tensor(&format!("{p}.{target}.bias"), &[dout], &values(&d.merged_bias()?)?);
            let y = g.op("MatMul", &[x, &w], &[]);
            Ok(g.op("Add", &[&y, &b], &[]))
        };
        // Pre-norm: each sub-layer reads its input normalised and adds to it; post-norm (BERT):
        // each sub-layer's sum is normalised.
        let norm =
            |g: &mut GraphBuilder, x: &str, norm: &Norm, name: &str| emit_norm(g, x, norm, &format!("{p}.{name}"));
        let a = if cfg.norm_first { norm(&mut g, &x, &layer.attention_norm, "attention_norm")? } else { x.clone() };
        let q = dense(&mut g, &a, LoraTarget::Query)?;
        let k = dense(&mut g, &a, LoraTarget::Key)?;
        let v = dense(&mut g, &a, LoraTarget::Value)?;
        let mut q = g.op("Reshape", &[&q, &split_heads], &[]);
        let mut k = g.op("Reshape", &[&k, &split_kv], &[]);
        if let Some([q_norm, k_norm]) = &layer.qk_norm {
            q = norm(&mut g, &q, q_norm, "q_norm")?;
            k = norm(&mut g, &k, k_norm, "k_norm")?;
        }
        let mut q = g.op("Transpose", &[&q], &[("perm", Attr::Ints(vec![0, 2, 1, 3]))]);
        let mut k = g.op("Transpose", &[&k], &[("perm", Attr::Ints(vec![0, 2, 1, 3]))]);
        if let Some((cos, sin)) = &rotary {
            q = rotate(&mut g, &q, cos, sin, hd);
            k = rotate(&mut g, &k, cos, sin, hd);
        }
        let k = g.op("Transpose", &[&k], &[("perm", Attr::Ints(vec![0, 1, 3, 2]))]);
        let k = repeat_kv(&mut g, &k, &[0, nh as i64, hd as i64, -1]);
        let v = g.op("Reshape", &[&v, &split_kv], &[]);
        let v = g.op("Transpose", &[&v], &[("perm", Attr::Ints(vec![0, 2, 1, 3]))]);
        let v = repeat_kv(&mut g, &v, &[0, nh as i64, -1, hd as i64]);
        let scores = g.op("MatMul", &[&q, &k], &[]);
        let scores = g.op("Div", &[&scores, &scale], &[]);
        let scores = g.op("Add", &[&scores, &bias], &[]);
        let probs = g.op("Softmax", &[&scores], &[("axis", Attr::Int(-1))]);
        let ctx = g.op("MatMul", &[&probs, &v], &[]);
        let ctx = g.op("Transpose", &[&ctx], &[("perm", Attr::Ints(vec![0, 2, 1, 3]))]);
        let ctx = g.op("Reshape", &[&ctx, &merge_heads], &[]);
        let attended = dense(&mut g, &ctx, LoraTarget::AttentionOutput)?;
        let attended = g.op("Add", &[&attended, &x], &[]);
        let h1 =
            if cfg.norm_first { attended } else { norm(&mut g, &attended, &layer.attention_norm, "attention_norm")? };
        let m = if cfg.norm_first { norm(&mut g, &h1, &layer.output_norm, "output_norm")? } else { h1.clone() };
        let inner = dense(&mut g, &m, LoraTarget::Intermediate)?;
        let inner = match cfg.activation {
            Activation::Gelu => gelu(&mut g, &inner),
            Activation::GeluTanh => gelu_tanh(&mut g, &inner),
            Activation::SwiGlu => {
                // silu(gate·m) ⊙ (up·m)
                let gate = dense(&mut g, &m, LoraTarget::Gate)?;
                let sigmoid = g.op("Sigmoid", &[&gate], &[]);
                let silu = g.op("Mul", &[&gate, &sigmoid], &[]);
                g.op("Mul", &[&silu, &inner], &[])
            }
        };
        let out = dense(&mut g, &inner, LoraTarget::Output)?;
        let out = g.op("Add", &[&out, &h1], &[]);
        x = if cfg.norm_first { out } else { norm(&mut g, &out, &layer.output_norm, "output_norm")? };
    }
    if let Some(norm) = &model.final_norm {
        x = emit_norm(&mut g, &x, norm, "final_norm")?;
    }

    let pooled = match model.pooling {
        Pooling::Mean => {
            let axis_2 = g.ints(&[2]);
            let m3 = g.op("Unsqueeze", &[&mask_f, &axis_2], &[]);
            let masked = g.op("Mul", &[&x, &m3], &[]);
            let axis_1 = g.ints(&[1]);
            let summed = g.op("ReduceSum", &[&masked, &axis_1], &[("keepdims", Attr::Int(0))]);
            let count = g.op("ReduceSum", &[&m3, &axis_1], &[("keepdims", Attr::Int(0))]);
            let tiny = g.scalar_f32(1e-9);
            let count = g.op("Max", &[&count, &tiny], &[]);
            g.op("Div", &[&summed, &count], &[])
        }
        Pooling::Cls => {
            let zero = g.scalar_i64(0);
            g.op("Gather", &[&x, &zero], &[("axis", Attr::Int(1))])
        }
        Pooling::Last => {
            // Each row's last token under the mask (right padding): index Σ mask − 1.
            let axis_1 = g.ints(&[1]);
            let count = g.op("ReduceSum", &[&mask, &axis_1], &[("keepdims", Attr::Int(1))]); // [batch, 1]
            let one = g.scalar_i64(1);
            let last = g.op("Sub", &[&count, &one], &[]);
            let zero = g.scalar_i64(0);
            let last = g.op("Max", &[&last, &zero], &[]);
            let axis_2 = g.ints(&[2]);
            let last = g.op("Unsqueeze", &[&last, &axis_2], &[]); // [batch, 1, 1]
            let x_shape = g.op("Shape", &[&x], &[]);
            let (start, end) = (g.ints(&[0]), g.ints(&[1]));
            let rows_shape = g.op("Slice", &[&x_shape, &start, &end], &[]);
            let width = g.ints(&[1, h as i64]);
            let index_shape = g.op("Concat", &[&rows_shape, &width], &[("axis", Attr::Int(0))]);
            let index = g.op("Expand", &[&last, &index_shape], &[]); // [batch, 1, hidden]
            let picked = g.op("GatherElements", &[&x, &index], &[("axis", Attr::Int(1))]);
            g.op("Squeeze", &[&picked, &axis_1], &[])
        }
    };
    let head_w = model.head.weight.as_tensor().t()?.contiguous()?;
    let classes = model.num_classes();
    let head_w = g.f32_tensor("head.weight", &[h, classes], &values(&head_w)?);
    let head_b = g.f32_tensor("head.bias", &[classes], &values(model.head.bias.as_tensor())?);
    let logits = g.op("MatMul", &[&pooled, &head_w], &[]);
    g.op_into("Add", &[&logits, &head_b], &[], names::LOGITS);
    g.head_outputs(head, classes, taxonomy);
    Ok(g.finish_files(metadata, super::graph::external_above()))
}

/// A norm over the last axis: LayerNormalization, or RMSNorm as `x / √(mean(x²) + ε) · γ` (the
/// pattern ONNX Runtime fuses into SimplifiedLayerNormalization).
fn emit_norm(g: &mut GraphBuilder, x: &str, norm: &Norm, name: &str) -> Result<String> {
    let width = norm.weight.dims()[0];
    let gamma = g.f32_tensor(&format!("{name}.weight"), &[width], &values(&norm.weight)?);
    let eps = norm.eps as f32;
    Ok(match &norm.bias {
        Some(bias) => {
            let beta = g.f32_tensor(&format!("{name}.bias"), &[width], &values(bias)?);
            g.op("LayerNormalization", &[x, &gamma, &beta], &[("axis", Attr::Int(-1)), ("epsilon", Attr::Float(eps))])
        }
        None => {
            let two = g.scalar_f32(2.0);
            let square = g.op("Pow", &[x, &two], &[]);
            let mean = g.op("ReduceMean", &[&square], &[("axes", Attr::Ints(vec![-1])), ("keepdims", Attr::Int(1))]);
            let eps = g.scalar_f32(eps);
            let mean = g.op("Add", &[&mean, &eps], &[]);
            let root = g.op("Sqrt", &[&mean], &[]);
            let normed = g.op("Div", &[x, &root], &[]);
            g.op("Mul", &[&normed, &gamma], &[])
        }
    })
}

/// Rotary tables `cos`, `sin` (`[seq, head_dim]`) computed in the graph for the batch's length,
/// in f32 as Hugging Face does: angle = position · θ^(−2j/d), each frequency for both halves.
fn rotary_tables(g: &mut GraphBuilder, theta: f64, head_dim: usize, seq_len: &str) -> (String, String) {
    let half = head_dim / 2;
    let inv: Vec<f32> =
        (0..head_dim).map(|c| (1.0 / theta.powf((2 * (c % half)) as f64 / head_dim as f64)) as f32).collect();
    let inv = g.f32_tensor("rotary.inv_freq", &[head_dim], &inv);
    let (zero, one) = (g.scalar_i64(0), g.scalar_i64(1));
    let positions = g.op("Range", &[&zero, seq_len, &one], &[]);
    // In fp32 even in an fp16 model (as Hugging Face computes them): fp16 would put a position's
    // angle off by up to half a radian at 1,000.
    let positions = g.op_fp32("Cast", &[&positions], &[("to", Attr::Int(data_type::FLOAT as i64))]);
    let axis_1 = g.ints(&[1]);
    let positions = g.op_fp32("Unsqueeze", &[&positions, &axis_1], &[]);
    let angles = g.op_fp32("Mul", &[&positions, &inv], &[]);
    (g.op_fp32("Cos", &[&angles], &[]), g.op_fp32("Sin", &[&angles], &[]))
}

/// `x·cos + rotate_half(x)·sin` over the last axis of `x` (`[batch, heads, seq, head_dim]`).
fn rotate(g: &mut GraphBuilder, x: &str, cos: &str, sin: &str, head_dim: usize) -> String {
    let half = (head_dim / 2) as i64;
    let axis = g.ints(&[-1]);
    let (lo_start, lo_end) = (g.ints(&[0]), g.ints(&[half]));
    let hi_end = g.ints(&[head_dim as i64]);
    let low = g.op("Slice", &[x, &lo_start, &lo_end, &axis], &[]);
    let high = g.op("Slice", &[x, &lo_end, &hi_end, &axis], &[]);
    let high = g.op("Neg", &[&high], &[]);
    let rotated = g.op("Concat", &[&high, &low], &[("axis", Attr::Int(-1))]);
    let a = g.op("Mul", &[x, cos], &[]);
    let b = g.op("Mul", &[&rotated, sin], &[]);
    g.op("Add", &[&a, &b], &[])
}

/// GELU's tanh approximation (GPT-2's `gelu_new`): `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
fn gelu_tanh(g: &mut GraphBuilder, x: &str) -> String {
    let cube = g.op("Mul", &[x, x], &[]);
    let cube = g.op("Mul", &[&cube, x], &[]);
    let c = g.scalar_f32(0.044715);
    let cube = g.op("Mul", &[&cube, &c], &[]);
    let inner = g.op("Add", &[x, &cube], &[]);
    let k = g.scalar_f32((2.0 / std::f32::consts::PI).sqrt());
    let inner = g.op("Mul", &[&inner, &k], &[]);
    let t = g.op("Tanh", &[&inner], &[]);
    let one = g.scalar_f32(1.0);
    let t = g.op("Add", &[&t, &one], &[]);
    let prod = g.op("Mul", &[x, &t], &[]);
    let half = g.scalar_f32(0.5);
    g.op("Mul", &[&prod, &half], &[])
}

/// Exact GELU: `0.5·x·(1 + erf(x/√2))` (ONNX Runtime fuses this into one Gelu kernel).
fn gelu(g: &mut GraphBuilder, x: &str) -> String {
    let sqrt2 = g.scalar_f32(std::f32::consts::SQRT_2);
    let scaled = g.op("Div", &[x, &sqrt2], &[]);
    let erf = g.op("Erf", &[&scaled], &[]);
    let one = g.scalar_f32(1.0);
    let shifted = g.op("Add", &[&erf, &one], &[]);
    let prod = g.op("Mul", &[x, &shifted], &[]);
    let half = g.scalar_f32(0.5);
    g.op("Mul", &[&prod, &half], &[])
}
