//! The names every served graph uses for its inputs and outputs: the exporters write them, the
//! sessions bind them, the cards record them.

/// Names of a served graph's inputs and outputs. Every kind's graph takes `[batch, seq]` int64
/// rows (`input_ids`, `attention_mask`, and `token_type_ids` where the graph uses them: a BERT
/// encoder's segment ids, the lexical embedding bag's feature counts) and gives `float [batch,
/// classes]` outputs.
pub mod names {
    pub const INPUT_IDS: &str = "input_ids";
    pub const ATTENTION_MASK: &str = "attention_mask";
    pub const TOKEN_TYPE_IDS: &str = "token_type_ids";
    pub const LOGITS: &str = "logits";
    pub const PROBABILITIES: &str = "probabilities";

    /// A taxonomy model's scores of the nodes of level `level` (1 = the top), `float [batch,
    /// nodes]`: each node's the sum of its leaves' probabilities.
    pub fn level_probabilities(level: usize) -> String {
        format!("level{level}_probabilities")
    }

    /// A version folder's graph.
    pub const MODEL_FILE: &str = "model.onnx";

    /// The file beside `model.onnx` holding the weights of a graph too large for one protobuf
    /// message (ONNX external data).
    pub const EXTERNAL_DATA_FILE: &str = "model.onnx.data";
}
