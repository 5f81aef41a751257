//! Writing ONNX models from Rust: the protobuf messages, a graph builder, and the exporters for
//! each model type.

pub mod graph;
pub mod half;
pub mod proto;
pub mod quantize;
pub mod transformer;
