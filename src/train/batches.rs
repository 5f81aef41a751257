//! Length-bucketed, shuffled mini-batches: rows are shuffled, cut into windows, sorted by token
//! length inside each window and batched, then the batch order is shuffled. Padding stays close to
//! the real token count while every epoch still sees a different random order.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Batches per sorting window.
const WINDOW_BATCHES: usize = 50;

/// Seeded, length-bucketed batches of `rows` (indices into `lengths`).
pub fn bucketed_batches(rows: &[usize], lengths: &[usize], batch_size: usize, seed: u64) -> Vec<Vec<usize>> {
    let batch_size = batch_size.max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut order = rows.to_vec();
    order.shuffle(&mut rng);
    let mut batches = Vec::with_capacity(order.len().div_ceil(batch_size));
    for window in order.chunks_mut(batch_size * WINDOW_BATCHES) {
        window.sort_by_key(|&r| lengths[r]);
        batches.extend(window.chunks(batch_size).map(<[usize]>::to_vec));
    }
    batches.shuffle(&mut rng);
    batches
}

/// Rows sorted by length and cut into batches (for evaluation, order does not matter).
pub fn sorted_batches(rows: &[usize], lengths: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    let mut order = rows.to_vec();
    order.sort_by_key(|&r| lengths[r]);
    order.chunks(batch_size.max(1)).map(<[usize]>::to_vec).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_once_and_deterministic() {
        let lengths: Vec<usize> = (0..1000).map(|i| (i * 7919) % 41 + 3).collect();
        let rows: Vec<usize> = (0..1000).collect();
        let a = bucketed_batches(&rows, &lengths, 32, 9);
        let b = bucketed_batches(&rows, &lengths, 32, 9);
        assert_eq!(a, b);
        assert_ne!(a, bucketed_batches(&rows, &lengths, 32, 10));
        let mut all: Vec<usize> = a.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, rows);
        // Padding waste is small: within-batch length spread is tiny compared to the global spread.
        let padded: usize = a.iter().map(|b| b.len() * b.iter().map(|&r| lengths[r]).max().unwrap_or(0)).sum();
        let real: usize = lengths.iter().sum();
        assert!((padded as f64) < real as f64 * 1.15, "padded {padded} vs real {real}");
    }
}
