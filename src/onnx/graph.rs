//! A small builder for ONNX graphs: named initializers, nodes with attributes, typed inputs and
//! outputs with symbolic (dynamic) dimensions, serialised with prost.

use crate::common::{Head, Taxonomy, names};

use super::proto::{
    AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, TypeProtoTensor, ValueInfoProto, attribute_type, data_location,
    data_type,
};
use prost::Message;

/// The default ONNX opset prodcat targets (LayerNormalization needs 17).
pub const OPSET: i64 = 17;

/// An exported graph as files: `model.onnx` and, for a graph past 2 GiB, its external data.
#[derive(Debug, Clone, Default)]
pub struct OnnxFiles {
    pub model: Vec<u8>,
    /// `model.onnx.data`, when the weights are outside the model file.
    pub data: Option<Vec<u8>>,
}

impl OnnxFiles {
    /// Bytes of both files.
    pub fn bytes(&self) -> usize {
        self.model.len() + self.data.as_ref().map_or(0, Vec::len)
    }

    /// Writes the files into `dir` (the data first, so a model file never points at a missing one).
    pub fn write(&self, dir: &std::path::Path) -> crate::error::Result<()> {
        use crate::error::IoContext;
        if let Some(data) = &self.data {
            let path = dir.join(names::EXTERNAL_DATA_FILE);
            std::fs::write(&path, data).at(&path)?;
        }
        let path = dir.join(names::MODEL_FILE);
        std::fs::write(&path, &self.model).at(&path)
    }
}

/// Moves every initializer of 1 KiB or more into external data (64-byte aligned, ONNX Runtime
/// reads it from beside the model) when the initializers pass `external_above` bytes; returns the
/// data, or None when they stay inside.
fn externalize(graph: &mut GraphProto, external_above: usize) -> Option<Vec<u8>> {
    let total: usize = graph.initializer.iter().map(|t| t.raw_data.as_ref().map_or(0, Vec::len)).sum();
    (total > external_above).then(|| {
        let mut data: Vec<u8> = Vec::with_capacity(total);
        for tensor in &mut graph.initializer {
            let Some(raw) = tensor.raw_data.take_if(|r| r.len() >= 1024) else { continue };
            data.resize(data.len().next_multiple_of(64), 0);
            let entry = |key: &str, value: String| StringStringEntryProto { key: Some(key.into()), value: Some(value) };
            tensor.external_data = vec![
                entry("location", names::EXTERNAL_DATA_FILE.into()),
                entry("offset", data.len().to_string()),
                entry("length", raw.len().to_string()),
            ];
            tensor.data_location = Some(data_location::EXTERNAL);
            data.extend_from_slice(&raw);
        }
        data
    })
}

impl OnnxFiles {
    /// A model's files as one serialized model with every initializer inside (what the int8 and
    /// fp16 conversions read): `model` alone, or with its external `data` (the file beside it,
    /// `data_path` for errors) read back in.
    pub fn inlined(model: Vec<u8>, data: Option<(&[u8], &std::path::Path)>) -> crate::error::Result<Vec<u8>> {
        let Some((data, data_path)) = data else { return Ok(model) };
        let bad = |what: String| crate::error::Error::model(data_path, what);
        let mut proto =
            ModelProto::decode(model.as_slice()).map_err(|e| bad(format!("model.onnx is not ONNX: {e}")))?;
        let graph = proto.graph.as_mut().ok_or_else(|| bad("model.onnx has no graph".into()))?;
        for tensor in &mut graph.initializer {
            if tensor.data_location != Some(data_location::EXTERNAL) {
                continue;
            }
            let field = |key: &str| {
                tensor.external_data.iter().find(|e| e.key.as_deref() == Some(key)).and_then(|e| e.value.clone())
            };
            let number = |key: &str| field(key).and_then(|v| v.parse::<usize>().ok());
            let name = tensor.name.clone().unwrap_or_default();
            let (offset, length) = (number("offset").unwrap_or(0), number("length"));
            let end = length.map(|l| offset + l).unwrap_or(data.len());
            let raw = data.get(offset..end).ok_or_else(|| {
                bad(format!("tensor `{name}` lies at {offset}..{end}, past the file's {} bytes", data.len()))
            })?;
            tensor.raw_data = Some(raw.to_vec());
            tensor.external_data.clear();
            tensor.data_location = None;
        }
        Ok(proto.encode_to_vec())
    }

    /// A serialized model as the files to write, its initializers moved to external data when they
    /// pass `external_above` bytes (as an export does).
    pub fn split(model: Vec<u8>, external_above: usize) -> crate::error::Result<Self> {
        if model.len() <= external_above {
            return Ok(Self { model, data: None });
        }
        let mut proto = ModelProto::decode(model.as_slice())
            .map_err(|e| crate::error::Error::Onnx(format!("a converted model is not valid ONNX: {e}")))?;
        let data = proto.graph.as_mut().and_then(|g| externalize(g, external_above));
        Ok(Self { model: proto.encode_to_vec(), data })
    }
}

/// A node's `doc_string` that keeps it in fp32 through an fp16 conversion ([`GraphBuilder::op_fp32`]).
pub const KEEP_FP32: &str = "prodcat:keep-fp32";

/// Initializer bytes past which an export puts its weights in external data: the
/// `PRODCAT_ONNX_EXTERNAL_BYTES` environment variable, else 1.75 GiB (under protobuf's 2 GiB with
/// room for the graph).
pub fn external_above() -> usize {
    std::env::var("PRODCAT_ONNX_EXTERNAL_BYTES").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(7 << 28)
}

/// IR version matching opset 17.
pub const IR_VERSION: i64 = 8;

/// A graph dimension: fixed or symbolic.
#[derive(Debug, Clone)]
pub enum Dim {
    Fixed(i64),
    Named(&'static str),
}

/// A node attribute value.
#[derive(Debug, Clone)]
pub enum Attr {
    Int(i64),
    Float(f32),
    Ints(Vec<i64>),
    Str(String),
}

/// Builds one ONNX graph.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    graph: GraphProto,
    counter: usize,
    uses_microsoft_domain: bool,
}

impl GraphBuilder {
    /// An empty graph with the given name.
    pub fn new(name: &str) -> Self {
        Self { graph: GraphProto { name: Some(name.into()), ..Default::default() }, ..Default::default() }
    }

    fn value_info(name: &str, elem_type: i32, dims: &[Dim]) -> ValueInfoProto {
        let dim = dims
            .iter()
            .map(|d| match d {
                Dim::Fixed(v) => Dimension { dim_value: Some(*v), dim_param: None },
                Dim::Named(n) => Dimension { dim_value: None, dim_param: Some((*n).into()) },
            })
            .collect();
        ValueInfoProto {
            name: Some(name.into()),
            r#type: Some(TypeProto {
                tensor_type: Some(TypeProtoTensor {
                    elem_type: Some(elem_type),
                    shape: Some(TensorShapeProto { dim }),
                }),
            }),
        }
    }

    /// Declares a graph input.
    pub fn input(&mut self, name: &str, elem_type: i32, dims: &[Dim]) -> String {
        self.graph.input.push(Self::value_info(name, elem_type, dims));
        name.to_string()
    }

    /// Declares a graph output (the value must be produced by a node of the same name).
    pub fn output(&mut self, name: &str, elem_type: i32, dims: &[Dim]) {
        self.graph.output.push(Self::value_info(name, elem_type, dims));
    }

    fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("{hint}_{}", self.counter)
    }

    /// Adds a raw initializer.
    pub fn initializer(&mut self, name: &str, elem_type: i32, dims: &[usize], raw: Vec<u8>) -> String {
        self.graph.initializer.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(elem_type),
            name: Some(name.into()),
            raw_data: Some(raw),
            ..Default::default()
        });
        name.to_string()
    }

    /// Adds an f32 initializer.
    pub fn f32_tensor(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(name, data_type::FLOAT, dims, raw)
    }

    /// Adds an fp16 initializer (values converted from f32).
    pub fn f16_tensor(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        let raw = data.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect();
        self.initializer(name, data_type::FLOAT16, dims, raw)
    }

    /// Adds an i64 initializer.
    pub fn i64_tensor(&mut self, name: &str, dims: &[usize], data: &[i64]) -> String {
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(name, data_type::INT64, dims, raw)
    }

    /// A scalar f32 constant (auto-named).
    pub fn scalar_f32(&mut self, value: f32) -> String {
        let name = self.fresh("const_f");
        self.f32_tensor(&name, &[], &[value])
    }

    /// A 1-D i64 constant (auto-named).
    pub fn ints(&mut self, values: &[i64]) -> String {
        let name = self.fresh("const_i");
        self.i64_tensor(&name, &[values.len()], values)
    }

    /// A scalar i64 constant (auto-named).
    pub fn scalar_i64(&mut self, value: i64) -> String {
        let name = self.fresh("const_i");
        self.i64_tensor(&name, &[], &[value])
    }

    /// Adds a node in the default domain with one output, auto-named after the op.
    pub fn op(&mut self, op_type: &str, inputs: &[&str], attrs: &[(&str, Attr)]) -> String {
        let out = self.fresh(&op_type.to_ascii_lowercase());
        self.op_into(op_type, inputs, attrs, &out);
        out
    }

    /// Adds a node in the default domain whose single output has the given name.
    /// Ends a classifier graph whose `logits` (`[batch, classes]`) are written: `probabilities`
    /// as the head reads logits, and both declared as the graph's outputs; with a taxonomy, also
    /// each level's node scores (`level{N}_probabilities`, the sums of their leaves'
    /// probabilities: scatter-added by each class's node), so whoever runs the graph alone gets
    /// path-consistent scores.
    pub fn head_outputs(&mut self, head: Head, classes: usize, taxonomy: Option<&Taxonomy>) {
        match head {
            Head::SingleLabel => {
                self.op_into("Softmax", &[names::LOGITS], &[("axis", Attr::Int(-1))], names::PROBABILITIES)
            }
            Head::MultiLabel => self.op_into("Sigmoid", &[names::LOGITS], &[], names::PROBABILITIES),
        }
        let dims = [Dim::Named("batch"), Dim::Fixed(classes as i64)];
        self.output(names::LOGITS, data_type::FLOAT, &dims);
        self.output(names::PROBABILITIES, data_type::FLOAT, &dims);
        let Some(taxonomy) = taxonomy else { return };
        let batch = self.op("Shape", &[names::PROBABILITIES], &[("end", Attr::Int(1))]);
        let width = self.ints(&[classes as i64]);
        let class_shape = self.op("Concat", &[&batch, &width], &[("axis", Attr::Int(0))]);
        for (i, level) in taxonomy.levels.iter().enumerate() {
            let nodes = level.nodes.len();
            let name = names::level_probabilities(i + 1);
            // A graph that already computes a level (a label tree's top level) keeps its own.
            if self.produces(&name) {
                self.output(&name, data_type::FLOAT, &[Dim::Named("batch"), Dim::Fixed(nodes as i64)]);
                continue;
            }
            let of_class: Vec<i64> = level.of_class.iter().map(|&n| i64::from(n)).collect();
            let of_class = self.i64_tensor(&format!("level{}_of_class", i + 1), &[classes], &of_class);
            let indices = self.op("Expand", &[&of_class, &class_shape], &[]); // [batch, classes]
            let zeros = self.f32_tensor(&format!("level{}_zeros", i + 1), &[nodes], &vec![0.0; nodes]);
            let width = self.ints(&[nodes as i64]);
            let shape = self.op("Concat", &[&batch, &width], &[("axis", Attr::Int(0))]);
            let base = self.op("Expand", &[&zeros, &shape], &[]); // [batch, nodes]
            self.op_into(
                "ScatterElements",
                &[&base, &indices, names::PROBABILITIES],
                &[("axis", Attr::Int(1)), ("reduction", Attr::Str("add".into()))],
                &name,
            );
            self.output(&name, data_type::FLOAT, &[Dim::Named("batch"), Dim::Fixed(nodes as i64)]);
        }
    }

    /// Whether some node of the graph so far computes `name`.
    pub fn produces(&self, name: &str) -> bool {
        self.graph.node.iter().any(|n| n.output.iter().any(|o| o == name))
    }

    pub fn op_into(&mut self, op_type: &str, inputs: &[&str], attrs: &[(&str, Attr)], output: &str) {
        self.node(op_type, "", inputs, attrs, &[output]);
    }

    /// Adds a node in the default domain that an fp16 conversion must leave in fp32 (rotary angles:
    /// fp16 cannot hold position × frequency to a useful precision), with one fresh output.
    pub fn op_fp32(&mut self, op_type: &str, inputs: &[&str], attrs: &[(&str, Attr)]) -> String {
        let out = self.op(op_type, inputs, attrs);
        if let Some(node) = self.graph.node.last_mut() {
            node.doc_string = Some(KEEP_FP32.into());
        }
        out
    }

    /// Adds a node in the `com.microsoft` domain (ONNX Runtime contrib ops) with one output.
    pub fn ms_op(&mut self, op_type: &str, inputs: &[&str], attrs: &[(&str, Attr)]) -> String {
        self.uses_microsoft_domain = true;
        let out = self.fresh(&op_type.to_ascii_lowercase());
        self.node(op_type, "com.microsoft", inputs, attrs, &[&out]);
        out
    }

    /// Adds a node with any domain and outputs.
    pub fn node(&mut self, op_type: &str, domain: &str, inputs: &[&str], attrs: &[(&str, Attr)], outputs: &[&str]) {
        let attribute = attrs
            .iter()
            .map(|(name, value)| {
                let mut a = AttributeProto { name: Some((*name).into()), ..Default::default() };
                match value {
                    Attr::Int(v) => {
                        a.r#type = Some(attribute_type::INT);
                        a.i = Some(*v);
                    }
                    Attr::Float(v) => {
                        a.r#type = Some(attribute_type::FLOAT);
                        a.f = Some(*v);
                    }
                    Attr::Ints(v) => {
                        a.r#type = Some(attribute_type::INTS);
                        a.ints = v.clone();
                    }
                    Attr::Str(v) => {
                        a.r#type = Some(attribute_type::STRING);
                        a.s = Some(v.as_bytes().to_vec());
                    }
                }
                a
            })
            .collect();
        let name = self.fresh(&format!("n_{op_type}"));
        self.graph.node.push(NodeProto {
            input: inputs.iter().map(|s| (*s).to_string()).collect(),
            output: outputs.iter().map(|s| (*s).to_string()).collect(),
            name: Some(name),
            op_type: Some(op_type.into()),
            domain: (!domain.is_empty()).then(|| domain.to_string()),
            attribute,
            doc_string: None,
        });
    }

    /// Finishes the model as the files to write: `model.onnx`, and where the initializers pass
    /// `external_above` bytes (a protobuf message cannot pass 2 GiB), `model.onnx.data` holding
    /// every initializer of 1 KiB or more (ONNX external data, 64-byte aligned; ONNX Runtime
    /// reads it from beside the model).
    pub fn finish_files(mut self, metadata: &[(&str, String)], external_above: usize) -> OnnxFiles {
        let data = externalize(&mut self.graph, external_above);
        OnnxFiles { model: self.finish(metadata), data }
    }

    /// Finishes the model and serialises it to bytes (every initializer inside).
    pub fn finish(self, metadata: &[(&str, String)]) -> Vec<u8> {
        let mut opset_import = vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(OPSET) }];
        if self.uses_microsoft_domain {
            opset_import.push(OperatorSetIdProto { domain: Some("com.microsoft".into()), version: Some(1) });
        }
        let model = ModelProto {
            ir_version: Some(IR_VERSION),
            opset_import,
            producer_name: Some("prodcat".into()),
            producer_version: Some(env!("CARGO_PKG_VERSION").into()),
            graph: Some(self.graph),
            metadata_props: metadata
                .iter()
                .map(|(k, v)| StringStringEntryProto { key: Some((*k).into()), value: Some(v.clone()) })
                .collect(),
            ..Default::default()
        };
        model.encode_to_vec()
    }
}
