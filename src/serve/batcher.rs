//! Token-budget batching: texts waiting in a window are sorted by length and cut into batches whose
//! padded cost (longest × count) stays under a token budget.
//!
//! With product titles of 5–60 tokens, batching in arrival order pads every batch to its longest
//! title (about twice the real tokens); sorting inside a short window brings padding close to
//! zero, which is most of the speed of transformer inference on CPU.

use super::model::{Model, Scored};
use super::session::ModelOutput;
use crate::common::{BatchLimits, Kind};
use crate::error::Result;
use crate::tokenize::{PaddedBatch, TokenizedText};

/// Cuts items into batches: `lengths[i]` is the token count of item `i`. Returns item indices per
/// batch, shortest texts first; every index appears exactly once.
pub fn plan_batches(lengths: &[usize], limits: BatchLimits) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    let max_records = limits.max_records.max(1);
    let mut batches = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    for i in order {
        // Sorted ascending, so the newcomer is the longest: the cost if it joins is len × (n + 1).
        let cost = lengths[i].max(1) * (current.len() + 1);
        if !current.is_empty() && (cost > limits.max_tokens || current.len() >= max_records) {
            batches.push(std::mem::take(&mut current));
        }
        current.push(i);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// Padded cost of a batch: longest × count.
pub fn padded_tokens(lengths: &[usize], batch: &[usize]) -> usize {
    batch.iter().map(|&i| lengths[i]).max().unwrap_or(0) * batch.len()
}

/// Scores `texts` with `model` in token-budget batches ([`plan_batches`] with the model's
/// [`Model::batch_limits`], or `limits` when given); rows come back in input order. Every scoring
/// path outside the streaming engine (evaluation, gates, tuning, quantization checks) uses this.
pub fn score_texts(model: &dyn Model, texts: &[&str], limits: Option<BatchLimits>) -> Result<Scored> {
    let prepared = model.prepare(texts)?;
    let classes = model.labels().len();
    let lengths: Vec<usize> = prepared.iter().map(TokenizedText::len).collect();
    let mut out = Scored {
        output: ModelOutput {
            rows: texts.len(),
            classes,
            logits: vec![0.0; texts.len() * classes],
            probabilities: vec![0.0; texts.len() * classes],
        },
        stages: vec![Kind::Transformer; texts.len()],
    };
    let mut batch = PaddedBatch::default();
    for plan in plan_batches(&lengths, limits.unwrap_or_else(|| model.batch_limits())) {
        batch.fill(plan.iter().map(|&i| &prepared[i]));
        let batch_texts: Vec<&str> = plan.iter().map(|&i| texts[i]).collect();
        let scored = model.score(&batch, &batch_texts)?;
        out.scatter(&plan, &scored);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn respects_limits_and_keeps_every_item() {
        let lengths: Vec<usize> = (0..500).map(|i| 5 + (i * 37) % 60).collect();
        let limits = BatchLimits { max_tokens: 1024, max_records: 32 };
        let batches = plan_batches(&lengths, limits);
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..500).collect::<Vec<_>>());
        for b in &batches {
            assert!(b.len() <= 32);
            assert!(padded_tokens(&lengths, b) <= 1024 || b.len() == 1);
        }
        // Sorting keeps padding low: padded cost within 10% of the real tokens.
        let padded: usize = batches.iter().map(|b| padded_tokens(&lengths, b)).sum();
        let real: usize = lengths.iter().sum();
        assert!((padded as f64) < 1.1 * real as f64, "padded {padded} real {real}");
    }

    #[test]
    fn an_oversized_text_gets_its_own_batch() {
        let batches = plan_batches(&[10, 10, 5000, 10], BatchLimits { max_tokens: 100, max_records: 8 });
        assert!(batches.contains(&vec![2]));
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 4);
    }
}
