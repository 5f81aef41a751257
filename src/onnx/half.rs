//! fp16 export of a model, as a rewrite of its ONNX graph (the float16 conversion of
//! onnxconverter-common, for the graphs prodcat writes).
//!
//! Every float value becomes float16 — initializers converted (clamped to fp16's finite range, so
//! the attention mask's large negative bias stays finite, and tiny non-zero constants such as the
//! pooling's 1e-9 guard kept non-zero), `Cast(to = FLOAT)` nodes retargeted — except inside the
//! nodes whose op type is in `keep_fp32` (and ScatterElements, which ONNX Runtime's CPU provider
//! cannot add in fp16): those compute in fp32 with `Cast` nodes around them.
//! The graph's inputs (integer ids) and outputs (fp32 logits and probabilities) keep their types,
//! so the serving code is the same for both precisions. Value types are propagated through the
//! graph in node order; an op whose output type is not known is refused rather than guessed.

use std::collections::{HashMap, HashSet};

use prost::Message;

use super::graph::KEEP_FP32;
use super::proto::{
    AttributeProto, ModelProto, NodeProto, StringStringEntryProto, TensorProto, attribute_type, data_type,
};
use crate::error::{Error, Result};

/// How to convert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HalfSettings {
    /// Op types left in fp32 (their float inputs cast up, their outputs cast down).
    pub keep_fp32: Vec<String>,
}

impl HalfSettings {
    /// Everything in fp16 (the CUDA execution provider has fp16 kernels for every op prodcat's
    /// transformer graph uses; LayerNormalization accumulates in fp32 internally).
    pub fn gpu() -> Self {
        Self { keep_fp32: Vec::new() }
    }
}

/// What the rewrite did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HalfSummary {
    pub initializers_converted: usize,
    pub nodes_fp16: usize,
    pub nodes_fp32: usize,
    pub casts_added: usize,
    /// Initializer values outside fp16's range, clamped to ±65504.
    pub values_clamped: usize,
    pub bytes_before: usize,
    pub bytes_after: usize,
}

/// Ops left in fp32 whatever the settings: ONNX Runtime's CPU ScatterElements has no float16
/// kernel with `reduction = add` (a taxonomy graph's level sums).
const ALWAYS_FP32: [&str; 1] = ["ScatterElements"];

const FP16_MAX: f32 = 65504.0;
/// The smallest positive fp16 (a subnormal).
const FP16_TINY: f32 = 5.960_464_5e-8;

fn is_float(t: i32) -> bool {
    t == data_type::FLOAT || t == data_type::FLOAT16
}

/// The element type a node's first output has, given its inputs' types (None = unknown).
fn output_type(node: &NodeProto, types: &HashMap<String, i32>) -> Option<i32> {
    let input = |i: usize| node.input.get(i).and_then(|n| types.get(n)).copied();
    match node.op_type.as_deref()? {
        "Cast" => node.attribute.iter().find(|a| a.name.as_deref() == Some("to")).and_then(|a| a.i).map(|t| t as i32),
        "Shape" => Some(data_type::INT64),
        "Where" => input(1),
        "Greater" | "Less" | "Equal" | "GreaterOrEqual" | "LessOrEqual" | "Not" | "And" | "Or" => Some(data_type::BOOL),
        "Add" | "Sub" | "Mul" | "Div" | "Max" | "Min" | "Pow" | "MatMul" | "Gemm" | "Gather" | "Softmax"
        | "LayerNormalization" | "ReduceSum" | "ReduceMean" | "Reshape" | "Transpose" | "Unsqueeze" | "Squeeze"
        | "Erf" | "Tanh" | "Sqrt" | "Relu" | "Neg" | "Range" | "Concat" | "Slice" | "Expand" | "Identity"
        | "ScatterElements" | "GatherElements" | "Sigmoid" | "Cos" | "Sin" | "Exp" | "Log" => input(0),
        _ => None,
    }
}

fn f32_values(t: &TensorProto) -> Result<Vec<f32>> {
    let raw = t
        .raw_data
        .as_deref()
        .ok_or_else(|| Error::Onnx(format!("initializer `{}` has no raw data", t.name.as_deref().unwrap_or("?"))))?;
    Ok(raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

/// One value converted to fp16: clamped into the finite range, tiny non-zero values kept non-zero.
/// Returns the value and whether it was clamped.
fn to_f16(x: f32) -> (half::f16, bool) {
    let clamped = x.abs() > FP16_MAX;
    let x = if clamped {
        x.signum() * FP16_MAX
    } else if x != 0.0 && x.abs() < FP16_TINY {
        x.signum() * FP16_TINY
    } else {
        x
    };
    (half::f16::from_f32(x), clamped)
}

fn cast_node(input: &str, output: &str, to: i32) -> NodeProto {
    NodeProto {
        input: vec![input.into()],
        output: vec![output.into()],
        name: Some(format!("{output}_cast")),
        op_type: Some("Cast".into()),
        domain: None,
        attribute: vec![AttributeProto {
            name: Some("to".into()),
            r#type: Some(attribute_type::INT),
            i: Some(i64::from(to)),
            ..Default::default()
        }],
        doc_string: None,
    }
}

/// Rewrites a serialized fp32 model into its fp16 form.
pub fn convert_to_fp16(model: &[u8], settings: &HalfSettings) -> Result<(Vec<u8>, HalfSummary)> {
    let mut proto =
        ModelProto::decode(model).map_err(|e| Error::Onnx(format!("model.onnx is not a valid ONNX model: {e}")))?;
    if proto.metadata_props.iter().any(|m| m.key.as_deref() == Some("prodcat.precision")) {
        return Err(Error::Onnx("the model is already converted (int8 or fp16); convert its fp32 source".into()));
    }
    let graph = proto.graph.as_mut().ok_or_else(|| Error::Onnx("model.onnx has no graph".into()))?;
    let mut keep: HashSet<&str> = settings.keep_fp32.iter().map(String::as_str).collect();
    keep.extend(ALWAYS_FP32);
    let mut summary = HalfSummary { bytes_before: model.len(), ..Default::default() };

    // A node computes in fp32 when its op type is kept or the exporter marked it so.
    let in_fp32 = |node: &NodeProto| {
        keep.contains(node.op_type.as_deref().unwrap_or_default()) || node.doc_string.as_deref() == Some(KEEP_FP32)
    };
    // Initializers: float → float16, but for those only fp32 nodes read.
    let read_in_fp16: HashSet<String> =
        graph.node.iter().filter(|n| !in_fp32(n)).flat_map(|n| n.input.iter().cloned()).collect();
    let mut types: HashMap<String, i32> = HashMap::new();
    for t in &mut graph.initializer {
        if t.data_type == Some(data_type::FLOAT) && t.name.as_ref().is_some_and(|n| read_in_fp16.contains(n)) {
            let mut raw = Vec::with_capacity(t.raw_data.as_ref().map_or(0, |r| r.len() / 2));
            for x in f32_values(t)? {
                let (h, clamped) = to_f16(x);
                summary.values_clamped += usize::from(clamped);
                raw.extend(h.to_le_bytes());
            }
            t.raw_data = Some(raw);
            t.data_type = Some(data_type::FLOAT16);
            summary.initializers_converted += 1;
        }
        if let (Some(name), Some(ty)) = (&t.name, t.data_type) {
            types.insert(name.clone(), ty);
        }
    }
    for input in &graph.input {
        let ty = input.r#type.as_ref().and_then(|t| t.tensor_type.as_ref()).and_then(|t| t.elem_type);
        if let (Some(name), Some(ty)) = (&input.name, ty) {
            if ty == data_type::FLOAT {
                return Err(Error::Onnx(format!("graph input `{name}` is float; only integer inputs are supported")));
            }
            types.insert(name.clone(), ty);
        }
    }

    // Nodes, in order: each computes in fp16 unless kept; float inputs cast to that precision.
    let mut nodes = Vec::with_capacity(graph.node.len());
    let mut casts: HashMap<(String, i32), String> = HashMap::new();
    for mut node in std::mem::take(&mut graph.node) {
        let op = node.op_type.clone().unwrap_or_default();
        let precision = if in_fp32(&node) { data_type::FLOAT } else { data_type::FLOAT16 };
        for input in &mut node.input {
            let Some(&ty) = types.get(input.as_str()) else { continue };
            if is_float(ty) && ty != precision {
                let key = (input.clone(), precision);
                let name = match casts.get(&key) {
                    Some(name) => name.clone(),
                    None => {
                        let name = format!("{input}.{}", if precision == data_type::FLOAT { "fp32" } else { "fp16" });
                        nodes.push(cast_node(input, &name, precision));
                        types.insert(name.clone(), precision);
                        summary.casts_added += 1;
                        casts.insert(key, name.clone());
                        name
                    }
                };
                *input = name;
            }
        }
        if op == "Cast" && precision == data_type::FLOAT16 {
            for a in &mut node.attribute {
                if a.name.as_deref() == Some("to") && a.i == Some(i64::from(data_type::FLOAT)) {
                    a.i = Some(i64::from(data_type::FLOAT16));
                }
            }
        }
        let out = output_type(&node, &types).ok_or_else(|| {
            Error::Onnx(format!(
                "cannot convert `{op}` (node {}) to fp16: unknown output type",
                node.name.as_deref().unwrap_or("?")
            ))
        })?;
        if is_float(out) {
            if precision == data_type::FLOAT16 {
                summary.nodes_fp16 += 1;
            } else {
                summary.nodes_fp32 += 1;
            }
        }
        for output in &node.output {
            types.insert(output.clone(), out);
        }
        nodes.push(node);
    }

    // Float outputs leave the graph as fp32: the producer writes `<name>.fp16`, a Cast restores the name.
    let mut renamed: HashMap<String, String> = HashMap::new();
    for output in &graph.output {
        let Some(name) = &output.name else { continue };
        if types.get(name) == Some(&data_type::FLOAT16) {
            renamed.insert(name.clone(), format!("{name}.fp16"));
        }
    }
    for node in &mut nodes {
        for value in node.input.iter_mut().chain(node.output.iter_mut()) {
            if let Some(new) = renamed.get(value) {
                *value = new.clone();
            }
        }
    }
    for output in &graph.output {
        if let Some(name) = &output.name
            && let Some(from) = renamed.get(name)
        {
            nodes.push(cast_node(from, name, data_type::FLOAT));
            summary.casts_added += 1;
        }
    }
    graph.node = nodes;
    // Intermediate type annotations would be stale; ONNX Runtime infers them.
    graph.value_info.clear();
    proto
        .metadata_props
        .push(StringStringEntryProto { key: Some("prodcat.precision".into()), value: Some("fp16".into()) });
    let bytes = proto.encode_to_vec();
    summary.bytes_after = bytes.len();
    Ok((bytes, summary))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::graph::{Attr, Dim, GraphBuilder};

    /// ids → Gather(table) → Mul(scale) → Softmax → output, with a mask cast to float.
    fn toy() -> Vec<u8> {
        let mut g = GraphBuilder::new("toy");
        let ids = g.input("ids", data_type::INT64, &[Dim::Named("n")]);
        let table = g.f32_tensor("table", &[4, 2], &[1.0, -1.0, 2.0, 0.5, -1e9, 3.0, 1e-9, 0.0]);
        let rows = g.op("Gather", &[&table, &ids], &[]);
        let cast = g.op("Cast", &[&ids], &[("to", Attr::Int(i64::from(data_type::FLOAT)))]);
        let axes = g.ints(&[1]);
        let cast = g.op("Unsqueeze", &[&cast, &axes], &[]);
        let scaled = g.op("Mul", &[&rows, &cast], &[]);
        g.op_into("Softmax", &[&scaled], &[("axis", Attr::Int(-1))], "probabilities");
        g.output("probabilities", data_type::FLOAT, &[Dim::Named("n"), Dim::Fixed(2)]);
        g.finish(&[])
    }

    fn decode(bytes: &[u8]) -> ModelProto {
        ModelProto::decode(bytes).unwrap()
    }

    #[test]
    fn floats_become_half_and_outputs_stay_float() {
        let (bytes, s) = convert_to_fp16(&toy(), &HalfSettings::gpu()).unwrap();
        let graph = decode(&bytes).graph.unwrap();
        let table = graph.initializer.iter().find(|t| t.name.as_deref() == Some("table")).unwrap();
        assert_eq!(table.data_type, Some(data_type::FLOAT16));
        let values: Vec<f32> = table
            .raw_data
            .as_ref()
            .unwrap()
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect();
        // −1e9 clamped to fp16's finite minimum; 1e-9 kept non-zero.
        assert_eq!(values[4], -65504.0);
        assert!(values[6] > 0.0 && values[6] < 1e-7);
        assert_eq!(s.values_clamped, 1);
        // The mask cast targets fp16; the softmax writes `probabilities.fp16`, cast back to float.
        let cast_to: Vec<i64> = graph
            .node
            .iter()
            .filter(|n| n.op_type.as_deref() == Some("Cast"))
            .map(|n| n.attribute[0].i.unwrap())
            .collect();
        assert_eq!(cast_to, vec![i64::from(data_type::FLOAT16), i64::from(data_type::FLOAT)]);
        let last = graph.node.last().unwrap();
        assert_eq!((last.input[0].as_str(), last.output[0].as_str()), ("probabilities.fp16", "probabilities"));
        assert_eq!((s.nodes_fp16, s.nodes_fp32, s.casts_added), (5, 0, 1));
    }

    #[test]
    fn kept_ops_compute_in_float_between_casts() {
        let settings = HalfSettings { keep_fp32: vec!["Softmax".into()] };
        let (bytes, s) = convert_to_fp16(&toy(), &settings).unwrap();
        let graph = decode(&bytes).graph.unwrap();
        let softmax = graph.node.iter().find(|n| n.op_type.as_deref() == Some("Softmax")).unwrap();
        assert!(softmax.input[0].ends_with(".fp32"), "{softmax:?}");
        // Its output is float already: no cast after it.
        assert_eq!(softmax.output[0], "probabilities");
        assert_eq!((s.nodes_fp32, s.casts_added), (1, 1));
    }

    #[test]
    fn an_unknown_op_or_a_converted_model_is_refused() {
        let mut g = GraphBuilder::new("odd");
        let ids = g.input("ids", data_type::INT64, &[Dim::Named("n")]);
        let x = g.op("Cast", &[&ids], &[("to", Attr::Int(i64::from(data_type::FLOAT)))]);
        g.op_into("Mystery", &[&x], &[], "out");
        g.output("out", data_type::FLOAT, &[Dim::Named("n")]);
        let err = convert_to_fp16(&g.finish(&[]), &HalfSettings::gpu()).unwrap_err().to_string();
        assert!(err.contains("Mystery"), "{err}");
        let (once, _) = convert_to_fp16(&toy(), &HalfSettings::gpu()).unwrap();
        let err = convert_to_fp16(&once, &HalfSettings::gpu()).unwrap_err().to_string();
        assert!(err.contains("already converted"), "{err}");
    }
}
