//! int8 dynamic quantization of an exported model, as a rewrite of its ONNX graph.
//!
//! Every `MatMul` whose right-hand side is a float weight matrix (both sides ≥ `min_dim`, so the
//! small classification head stays fp32) becomes one `com.microsoft.DynamicQuantizeMatMul`:
//! activations are quantized to u8 per batch at run time, weights are stored as int8 with one
//! symmetric scale per output column. ONNX Runtime runs it on its integer GEMM kernels (VNNI
//! where the CPU has it, AVX2 `vpmaddubsw` otherwise). With `reduce_range` the weights use 7 bits
//! (±63) so the AVX2 path cannot saturate its 16-bit intermediate sums.

use std::collections::HashMap;

use prost::Message;

use super::proto::{ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto, data_type};
use crate::error::{Error, Result};

/// How to quantize.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantizeSettings {
    /// Weights in ±63 instead of ±127 (safe on CPUs without VNNI).
    pub reduce_range: bool,
    /// Only weight matrices with both dimensions at least this large are quantized.
    pub min_dim: usize,
}

impl Default for QuantizeSettings {
    fn default() -> Self {
        Self { reduce_range: true, min_dim: 128 }
    }
}

/// What the rewrite did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantizeSummary {
    pub matmuls_quantized: usize,
    pub bytes_before: usize,
    pub bytes_after: usize,
}

/// Symmetric per-column int8 quantization of a row-major `[rows, cols]` matrix: the quantized
/// values (same layout) and one scale per column.
pub fn quantize_columns(w: &[f32], rows: usize, cols: usize, q_max: f32) -> (Vec<i8>, Vec<f32>) {
    let mut scales = vec![0f32; cols];
    for r in 0..rows {
        for (c, s) in scales.iter_mut().enumerate() {
            *s = s.max(w[r * cols + c].abs());
        }
    }
    for s in &mut scales {
        *s = if *s > 0.0 { *s / q_max } else { 1.0 };
    }
    let q = w.iter().enumerate().map(|(i, &x)| (x / scales[i % cols]).round().clamp(-q_max, q_max) as i8).collect();
    (q, scales)
}

fn tensor(name: &str, elem: i32, dims: &[usize], raw: Vec<u8>) -> TensorProto {
    TensorProto {
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(elem),
        name: Some(name.into()),
        raw_data: Some(raw),
        ..Default::default()
    }
}

/// Rewrites a serialized fp32 model into its dynamically quantized int8 form.
pub fn quantize_dynamic(model: &[u8], settings: QuantizeSettings) -> Result<(Vec<u8>, QuantizeSummary)> {
    let mut proto =
        ModelProto::decode(model).map_err(|e| Error::Onnx(format!("model.onnx is not a valid ONNX model: {e}")))?;
    let graph = proto.graph.as_mut().ok_or_else(|| Error::Onnx("model.onnx has no graph".into()))?;
    let index: HashMap<String, usize> =
        graph.initializer.iter().enumerate().filter_map(|(i, t)| Some((t.name.clone()?, i))).collect();
    let uses: HashMap<&str, usize> = graph.node.iter().flat_map(|n| n.input.iter()).fold(HashMap::new(), |mut m, i| {
        *m.entry(i.as_str()).or_default() += 1;
        m
    });
    let q_max = if settings.reduce_range { 63.0 } else { 127.0 };
    let mut replaced: Vec<(usize, NodeProto, [TensorProto; 3])> = Vec::new();
    for (n, node) in graph.node.iter().enumerate() {
        if node.op_type.as_deref() != Some("MatMul") || node.input.len() != 2 {
            continue;
        }
        let weight_name = &node.input[1];
        let Some(&i) = index.get(weight_name) else { continue };
        let t = &graph.initializer[i];
        let (Some(raw), [rows, cols]) = (t.raw_data.as_ref(), t.dims.as_slice()) else { continue };
        let (rows, cols) = (*rows as usize, *cols as usize);
        if t.data_type != Some(data_type::FLOAT)
            || rows < settings.min_dim
            || cols < settings.min_dim
            || uses.get(weight_name.as_str()) != Some(&1)
        {
            continue;
        }
        let w: Vec<f32> = raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        if w.len() != rows * cols {
            return Err(Error::Onnx(format!(
                "initializer `{weight_name}` has {} values for shape [{rows}, {cols}]",
                w.len()
            )));
        }
        let (q, scales) = quantize_columns(&w, rows, cols, q_max);
        let base = format!("{weight_name}.int8");
        let tensors = [
            tensor(&format!("{base}.quantized"), data_type::INT8, &[rows, cols], q.iter().map(|&v| v as u8).collect()),
            tensor(
                &format!("{base}.scale"),
                data_type::FLOAT,
                &[cols],
                scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
            ),
            tensor(&format!("{base}.zero_point"), data_type::INT8, &[cols], vec![0u8; cols]),
        ];
        let new_node = NodeProto {
            input: vec![
                node.input[0].clone(),
                tensors[0].name.clone().unwrap_or_default(),
                tensors[1].name.clone().unwrap_or_default(),
                tensors[2].name.clone().unwrap_or_default(),
            ],
            output: node.output.clone(),
            name: node.name.as_ref().map(|n| format!("{n}_quant")),
            op_type: Some("DynamicQuantizeMatMul".into()),
            domain: Some("com.microsoft".into()),
            attribute: Vec::new(),
            doc_string: None,
        };
        replaced.push((n, new_node, tensors));
    }
    if replaced.is_empty() {
        return Err(Error::Onnx("the model has no float weight MatMul to quantize".into()));
    }
    let mut drop_names = std::collections::HashSet::new();
    let count = replaced.len();
    for (n, node, tensors) in replaced {
        drop_names.insert(graph.node[n].input[1].clone());
        graph.node[n] = node;
        graph.initializer.extend(tensors);
    }
    graph.initializer.retain(|t| !t.name.as_ref().is_some_and(|n| drop_names.contains(n)));
    if !proto.opset_import.iter().any(|o| o.domain.as_deref() == Some("com.microsoft")) {
        proto.opset_import.push(OperatorSetIdProto { domain: Some("com.microsoft".into()), version: Some(1) });
    }
    proto.metadata_props.retain(|m| m.key.as_deref() != Some("prodcat.precision"));
    proto
        .metadata_props
        .push(StringStringEntryProto { key: Some("prodcat.precision".into()), value: Some("int8".into()) });
    let bytes = proto.encode_to_vec();
    let summary = QuantizeSummary { matmuls_quantized: count, bytes_before: model.len(), bytes_after: bytes.len() };
    Ok((bytes, summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_column_scales_bound_the_error() {
        let (rows, cols) = (4, 3);
        let w: Vec<f32> = (0..rows * cols).map(|i| (i as f32 - 5.0) * [0.01, 1.0, 100.0][i % cols]).collect();
        let (q, scales) = quantize_columns(&w, rows, cols, 63.0);
        for (i, (&x, &qi)) in w.iter().zip(&q).enumerate() {
            let s = scales[i % cols];
            assert!(qi.abs() <= 63);
            assert!((f32::from(qi) * s - x).abs() <= s / 2.0 + 1e-6, "column {} value {x}", i % cols);
        }
        // Each column's largest magnitude maps to ±63.
        assert!((0..cols).all(|c| (0..rows).any(|r| q[r * cols + c].abs() == 63)));
    }
}
