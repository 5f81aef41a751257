//! The limits of one batch: what the engine's configuration sets (`[engine.limits]`), what a model
//! says it likes outside the engine, and what the token-budget batcher ([`crate::serve::plan_batches`])
//! cuts by.

/// Limits of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchLimits {
    /// Maximum padded tokens per batch (`longest × count`).
    pub max_tokens: usize,
    /// Maximum texts per batch.
    pub max_records: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self { max_tokens: 4096, max_records: 64 }
    }
}

impl BatchLimits {
    /// Batches for a GPU, which wants thousands of tokens per call: 1,024 titles of up to 64
    /// tokens. (The CPU default above is sized for a few cores, where a batch past ~64 texts
    /// gains nothing and only adds latency.)
    pub fn gpu() -> Self {
        Self { max_tokens: 65_536, max_records: 1024 }
    }
}
