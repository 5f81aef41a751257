//! A stratified, grouped train/validation/test split.
//!
//! Rows sharing a group key (a product cluster, a product id) always land in the same split, so the
//! same product is never both trained on and tested on. Within each label, groups are dealt out in
//! a seeded random order to whichever split is furthest below its share, which keeps every
//! label's proportions close to the requested fractions.

use std::collections::{BTreeMap, HashMap};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// One of the three splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Validation,
    Test,
}

/// Row indices per split.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SplitAssignment {
    pub train: Vec<usize>,
    pub validation: Vec<usize>,
    pub test: Vec<usize>,
}

impl SplitAssignment {
    /// The rows of `split`.
    pub fn rows(&self, split: Split) -> &[usize] {
        match split {
            Split::Train => &self.train,
            Split::Validation => &self.validation,
            Split::Test => &self.test,
        }
    }
}

/// Splits rows into train/validation/test with the given fractions (`fractions` must sum to 1).
///
/// `groups` (one key per row) keeps rows of a group together; `None` treats each row as its own
/// group. A group's stratum is its most frequent label. The same inputs and `seed` always give the
/// same split.
pub fn stratified_group_split(
    labels: &[String],
    groups: Option<&[String]>,
    fractions: [f64; 3],
    seed: u64,
) -> SplitAssignment {
    let mut parts = stratified_group_parts(labels, groups, &fractions, seed).into_iter();
    let mut next = || parts.next().unwrap_or_default();
    SplitAssignment { train: next(), validation: next(), test: next() }
}

/// K folds for cross-validation: the same dealing as [`stratified_group_split`] into `k` equal
/// shares, so every fold has each label's proportions and a group never straddles folds.
pub fn stratified_group_folds(labels: &[String], groups: Option<&[String]>, k: usize, seed: u64) -> Vec<Vec<usize>> {
    let k = k.max(1);
    stratified_group_parts(labels, groups, &vec![1.0 / k as f64; k], seed)
}

/// Deals rows into `shares.len()` parts (sorted row indices per part); see
/// [`stratified_group_split`].
fn stratified_group_parts(labels: &[String], groups: Option<&[String]>, shares: &[f64], seed: u64) -> Vec<Vec<usize>> {
    // Group rows, in first-seen order for determinism.
    let mut group_index: HashMap<&str, usize> = HashMap::new();
    let mut group_rows: Vec<Vec<usize>> = Vec::new();
    for row in 0..labels.len() {
        let key = groups.map(|g| g[row].as_str());
        let slot = match key {
            Some(key) => *group_index.entry(key).or_insert_with(|| {
                group_rows.push(Vec::new());
                group_rows.len() - 1
            }),
            None => {
                group_rows.push(Vec::new());
                group_rows.len() - 1
            }
        };
        group_rows[slot].push(row);
    }
    // Stratum of a group: its most frequent label (ties: the smallest label).
    let mut strata: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (g, rows) in group_rows.iter().enumerate() {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for &r in rows {
            *counts.entry(labels[r].as_str()).or_default() += 1;
        }
        let majority = counts.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))).map(|(l, _)| *l).unwrap_or("");
        strata.entry(majority).or_default().push(g);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = vec![Vec::new(); shares.len()];
    for (_, mut stratum) in strata {
        stratum.shuffle(&mut rng);
        let total: usize = stratum.iter().map(|&g| group_rows[g].len()).sum();
        let mut filled = vec![0usize; shares.len()];
        for g in stratum {
            // The part furthest below its target share (relative to the target) gets the group.
            let pick = (0..shares.len())
                .filter(|&s| shares[s] > 0.0)
                .max_by(|&a, &b| {
                    let deficit = |s: usize| (shares[s] * total as f64 - filled[s] as f64) / (shares[s] * total as f64);
                    deficit(a).total_cmp(&deficit(b)).then(b.cmp(&a))
                })
                .unwrap_or(0);
            filled[pick] += group_rows[g].len();
            out[pick].extend_from_slice(&group_rows[g]);
        }
    }
    out.iter_mut().for_each(|part| part.sort_unstable());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(n: usize, classes: usize) -> Vec<String> {
        (0..n).map(|i| format!("c{}", i % classes)).collect()
    }

    #[test]
    fn proportions_follow_fractions_per_label() {
        let labels = labels(1000, 4);
        let split = stratified_group_split(&labels, None, [0.8, 0.1, 0.1], 7);
        assert_eq!(split.train.len() + split.validation.len() + split.test.len(), 1000);
        for class in ["c0", "c1", "c2", "c3"] {
            let count = |rows: &[usize]| rows.iter().filter(|&&r| labels[r] == class).count();
            assert_eq!(count(&split.train), 200);
            assert_eq!(count(&split.validation), 25);
            assert_eq!(count(&split.test), 25);
        }
    }

    #[test]
    fn groups_never_straddle_splits() {
        let labels = labels(900, 3);
        let groups: Vec<String> = (0..900).map(|i| format!("g{}", i / 6)).collect();
        let split = stratified_group_split(&labels, Some(&groups), [0.8, 0.1, 0.1], 1);
        let where_is = |row: usize| {
            [Split::Train, Split::Validation, Split::Test].into_iter().find(|s| split.rows(*s).contains(&row))
        };
        for g in 0..150 {
            let first = where_is(g * 6);
            assert!(first.is_some());
            for r in g * 6..g * 6 + 6 {
                assert_eq!(where_is(r), first, "group g{g} is split across sets");
            }
        }
        assert!(!split.validation.is_empty() && !split.test.is_empty());
    }

    #[test]
    fn folds_partition_the_rows_stratified_and_grouped() {
        let labels = labels(600, 3);
        let groups: Vec<String> = (0..600).map(|i| format!("g{}", i / 3)).collect();
        let folds = stratified_group_folds(&labels, Some(&groups), 5, 3);
        assert_eq!(folds.len(), 5);
        let mut all: Vec<usize> = folds.concat();
        all.sort_unstable();
        assert_eq!(all, (0..600).collect::<Vec<_>>());
        for fold in &folds {
            assert!((110..=130).contains(&fold.len()), "fold of {} rows", fold.len());
            for g in 0..200 {
                let inside = (g * 3..g * 3 + 3).filter(|r| fold.contains(r)).count();
                assert!(inside == 0 || inside == 3, "group g{g} straddles folds");
            }
        }
    }

    #[test]
    fn same_seed_same_split_other_seed_other_split() {
        let labels = labels(500, 5);
        let a = stratified_group_split(&labels, None, [0.8, 0.1, 0.1], 42);
        let b = stratified_group_split(&labels, None, [0.8, 0.1, 0.1], 42);
        let c = stratified_group_split(&labels, None, [0.8, 0.1, 0.1], 43);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}

/// A split that stays put as data grows: each group (or row, without groups) goes to the split
/// its seeded hash falls in. Not stratified, but a product held out once is held out in every
/// later snapshot, so models trained on earlier snapshots never saw the later held-out rows
/// (what a continuously retrained model needs for a fair gate).
pub fn stable_group_split(rows: usize, groups: Option<&[String]>, fractions: [f64; 3], seed: u64) -> SplitAssignment {
    use sha2::{Digest, Sha256};
    let mut out = SplitAssignment::default();
    for row in 0..rows {
        let key = groups.map_or_else(|| row.to_string(), |g| g[row].clone());
        let mut h = Sha256::new();
        h.update(seed.to_le_bytes());
        h.update(key.as_bytes());
        let digest = h.finalize();
        let x = u64::from_le_bytes(digest[..8].try_into().unwrap_or([0; 8])) as f64 / u64::MAX as f64;
        if x < fractions[0] {
            out.train.push(row);
        } else if x < fractions[0] + fractions[1] {
            out.validation.push(row);
        } else {
            out.test.push(row);
        }
    }
    out
}
