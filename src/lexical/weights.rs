//! The lexical model's weights, stored sparsely: for each feature bucket, the classes it has a
//! weight for and those weights (compressed sparse rows), at most a fixed number of classes per
//! feature. A dense `buckets × classes` matrix is 2 MiB per class at the default 2^19 buckets —
//! past protobuf's 2 GiB at about 1,000 classes — while a trained one-vs-rest model of thousands
//! of classes has few weights worth keeping per feature: the size, the memory and the serving cost
//! grow with the features seen in training times that cap, not with the class count (PECOS
//! XR-Linear and Parabel keep sparse, thresholded weights for the same reason).

pub use crate::common::WeightStats;

/// Weights of a linear layer over hashed features: row `f` holds feature `f`'s (class, weight)
/// pairs, classes ascending. Bucket 0 (no feature) has none.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SparseWeights {
    pub buckets: usize,
    pub classes: usize,
    /// `offsets[f]..offsets[f + 1]` indexes row `f` in `class_ids` / `values` (`buckets + 1` entries).
    offsets: Vec<usize>,
    class_ids: Vec<u32>,
    values: Vec<f32>,
    /// Weights that the per-feature cap dropped when the rows were built.
    pub dropped: usize,
}

impl SparseWeights {
    /// No weights at all.
    pub fn empty(buckets: usize, classes: usize) -> Self {
        Self { buckets, classes, offsets: vec![0; buckets + 1], ..Default::default() }
    }

    /// Rows from per-class columns (feature, weight), each row keeping its `cap` weights of
    /// largest magnitude (0: no cap).
    pub fn from_columns(buckets: usize, columns: &[Vec<(u32, f32)>], cap: usize) -> Self {
        let classes = columns.len();
        let mut counts = vec![0usize; buckets + 1];
        for column in columns {
            for &(f, _) in column {
                counts[f as usize + 1] += 1;
            }
        }
        let mut offsets = counts;
        for f in 0..buckets {
            offsets[f + 1] += offsets[f];
        }
        let nnz = offsets[buckets];
        let mut class_ids = vec![0u32; nnz];
        let mut values = vec![0f32; nnz];
        let mut next = offsets.clone();
        // Classes in ascending order, so every row comes out sorted by class.
        for (k, column) in columns.iter().enumerate() {
            for &(f, w) in column {
                let at = &mut next[f as usize];
                class_ids[*at] = k as u32;
                values[*at] = w;
                *at += 1;
            }
        }
        let mut weights = Self { buckets, classes, offsets, class_ids, values, dropped: 0 };
        if cap > 0 {
            weights.cap(cap);
        }
        weights
    }

    /// Rows from a dense row-major `[buckets, classes]` matrix, zeros left out.
    pub fn from_dense(buckets: usize, classes: usize, dense: &[f32], cap: usize) -> Self {
        let mut columns = vec![Vec::new(); classes];
        for f in 1..buckets {
            for (k, &w) in dense[f * classes..(f + 1) * classes].iter().enumerate() {
                if w != 0.0 {
                    columns[k].push((f as u32, w));
                }
            }
        }
        Self::from_columns(buckets, &columns, cap)
    }

    /// The row-major `[buckets, classes]` matrix of these weights (zeros where none is kept).
    pub fn to_dense(&self) -> Vec<f32> {
        let mut dense = vec![0f32; self.buckets * self.classes];
        for f in 0..self.buckets {
            self.add_row(f, 1.0, &mut dense[f * self.classes..(f + 1) * self.classes]);
        }
        dense
    }

    /// Keeps each row's `cap` largest-magnitude weights (classes still ascending).
    fn cap(&mut self, cap: usize) {
        let (mut offsets, mut class_ids, mut values) = (vec![0usize], Vec::new(), Vec::new());
        let mut dropped = 0;
        let mut row: Vec<(u32, f32)> = Vec::new();
        for f in 0..self.buckets {
            row.clear();
            row.extend(self.row(f));
            if row.len() > cap {
                dropped += row.len() - cap;
                row.select_nth_unstable_by(cap - 1, |a, b| b.1.abs().total_cmp(&a.1.abs()));
                row.truncate(cap);
                row.sort_unstable_by_key(|&(k, _)| k);
            }
            class_ids.extend(row.iter().map(|&(k, _)| k));
            values.extend(row.iter().map(|&(_, w)| w));
            offsets.push(class_ids.len());
        }
        *self = Self {
            buckets: self.buckets,
            classes: self.classes,
            offsets,
            class_ids,
            values,
            dropped: self.dropped + dropped,
        };
    }

    /// Row `f`: its (class, weight) pairs.
    pub fn row(&self, f: usize) -> impl Iterator<Item = (u32, f32)> + '_ {
        let range = self.offsets[f]..self.offsets[f + 1];
        self.class_ids[range.clone()].iter().copied().zip(self.values[range].iter().copied())
    }

    /// Adds `x` × row `f` into `out` (one entry per class).
    #[inline]
    pub fn add_row(&self, f: usize, x: f32, out: &mut [f32]) {
        let range = self.offsets[f]..self.offsets[f + 1];
        for (&k, &w) in self.class_ids[range.clone()].iter().zip(&self.values[range]) {
            out[k as usize] += x * w;
        }
    }

    /// Every weight multiplied by `by` (1 / T folds a calibration temperature in).
    pub fn scale(&mut self, by: f32) {
        self.values.iter_mut().for_each(|w| *w *= by);
    }

    /// Size figures of these weights.
    pub fn stats(&self) -> WeightStats {
        let lengths = self.offsets.windows(2).map(|w| w[1] - w[0]);
        WeightStats {
            features: lengths.clone().filter(|&n| n > 0).count(),
            nonzeros: self.values.len(),
            width: lengths.max().unwrap_or(0),
            dropped: self.dropped,
        }
    }

    /// The padded tables the ONNX graph gathers from: the slot of each bucket (0: no weights),
    /// then per slot `width` class ids and weights (slot 0 and padding: class 0, weight 0).
    pub fn padded(&self) -> PaddedRows {
        let width = self.stats().width.max(1);
        let mut slot_of = vec![0i32; self.buckets];
        let (mut class_ids, mut values) = (vec![0i32; width], vec![0f32; width]);
        let mut slots = 1usize;
        for (f, slot) in slot_of.iter_mut().enumerate() {
            let start = class_ids.len();
            for (k, w) in self.row(f) {
                class_ids.push(k as i32);
                values.push(w);
            }
            if class_ids.len() > start {
                class_ids.resize(start + width, 0);
                values.resize(start + width, 0.0);
                *slot = slots as i32;
                slots += 1;
            }
        }
        PaddedRows { slot_of, slots, width, class_ids, values }
    }
}

/// [`SparseWeights::padded`]: `slot_of[bucket]`, and `slots × width` class ids and weights.
pub struct PaddedRows {
    pub slot_of: Vec<i32>,
    pub slots: usize,
    pub width: usize,
    pub class_ids: Vec<i32>,
    pub values: Vec<f32>,
}

impl PaddedRows {
    /// Bytes of these tables in an ONNX file.
    pub fn bytes(&self) -> u64 {
        (self.slot_of.len() * 4 + self.class_ids.len() * 4 + self.values.len() * 4) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_keep_their_largest_weights_and_say_what_was_dropped() {
        // Feature 1: weights for three classes; feature 3: one; feature 2: none.
        let columns = vec![vec![(1, 0.5), (3, -2.0)], vec![(1, -0.9)], vec![(1, 0.1)]];
        let all = SparseWeights::from_columns(5, &columns, 0);
        assert_eq!(all.row(1).collect::<Vec<_>>(), [(0, 0.5), (1, -0.9), (2, 0.1)]);
        assert_eq!(all.row(2).count(), 0);
        assert_eq!(all.row(3).collect::<Vec<_>>(), [(0, -2.0)]);
        assert_eq!(all.stats(), WeightStats { features: 2, nonzeros: 4, width: 3, dropped: 0 });
        let capped = SparseWeights::from_columns(5, &columns, 2);
        assert_eq!(capped.row(1).collect::<Vec<_>>(), [(0, 0.5), (1, -0.9)], "by magnitude, classes ascending");
        assert_eq!(capped.stats(), WeightStats { features: 2, nonzeros: 3, width: 2, dropped: 1 });
        let mut out = vec![0.0; 3];
        capped.add_row(1, 2.0, &mut out);
        assert_eq!(out, [1.0, -1.8, 0.0]);

        let padded = capped.padded();
        assert_eq!(padded.slot_of, [0, 1, 0, 2, 0]);
        assert_eq!((padded.slots, padded.width), (3, 2));
        assert_eq!(padded.class_ids, [0, 0, 0, 1, 0, 0]);
        assert_eq!(padded.values, [0.0, 0.0, 0.5, -0.9, -2.0, 0.0]);
    }

    #[test]
    fn dense_and_sparse_hold_the_same_weights() {
        let dense = [0.0, 0.0, 1.0, 0.0, 0.0, -3.0];
        let w = SparseWeights::from_dense(3, 2, &dense, 0);
        assert_eq!(w.row(1).collect::<Vec<_>>(), [(0, 1.0)]);
        assert_eq!(w.row(2).collect::<Vec<_>>(), [(1, -3.0)]);
        assert_eq!(w.to_dense(), dense);
    }
}
