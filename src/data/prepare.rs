//! Data preparation shared by every model family: the taxonomy and class ids, the train /
//! validation / test split (stratified and grouped, or the hash-stable one of the learner), the
//! card's description of the data, and re-deriving a trained model's held-out rows.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::{LabeledData, Split, SplitAssignment, stratified_group_split};
use crate::common::TextSpec;
use crate::error::{Error, Result};

/// The split seed when none is given.
pub const DEFAULT_SEED: u64 = 42;
/// Train/validation/test fractions when none are given (and of cards that predate the field).
pub const DEFAULT_SPLIT: [f64; 3] = [0.8, 0.1, 0.1];

/// Where training data came from (recorded in the model card).
#[derive(Debug, Clone, Default)]
pub struct DataSource {
    pub file: String,
    /// The column(s) each text was composed of.
    pub text: TextSpec,
    pub label_column: String,
    pub group_column: Option<String>,
    /// A file that is the validation split as given (`--validation-data`).
    pub validation_file: Option<String>,
    /// A file that is the test split as given (`--test-data`).
    pub test_file: Option<String>,
    /// What separates a row's labels (`--label-separator`), for multi-label data.
    pub label_separator: Option<String>,
}

/// Reads labeled training data: the training file (`spec`, sampled to `spec.max_rows`) and the
/// files, when given, that are the validation and test splits as they are (same columns, never
/// sampled). Rows of those files keep their split whatever the fractions say.
pub async fn read_training_data(
    spec: &super::LabeledDataSpec,
    validation: Option<&Path>,
    test: Option<&Path>,
) -> Result<LabeledData> {
    let mut data = LabeledData::read(spec).await?;
    for (path, split) in [(validation, Split::Validation), (test, Split::Test)] {
        if let Some(path) = path {
            let given = super::LabeledDataSpec { path: path.to_path_buf(), max_rows: None, ..spec.clone() };
            data.append_split(LabeledData::read(&given).await?, split)?;
        }
    }
    Ok(data)
}

/// Checks train/validation/test fractions: non-negative, summing to 1, some training rows.
pub fn check_fractions(fractions: [f64; 3]) -> Result<()> {
    let sum: f64 = fractions.iter().sum();
    if (sum - 1.0).abs() > 1e-6 || fractions.iter().any(|f| !(*f >= 0.0)) || fractions[0] <= 0.0 {
        return Err(Error::config(
            "split",
            format!("fractions {fractions:?} must be non-negative, give training rows, and sum to 1"),
        ));
    }
    Ok(())
}

/// Splits the rows by `fractions` — except rows whose split their file fixed, which stay there;
/// the fractions of splits given as files are then dealt to the others in proportion.
fn split_rows(data: &LabeledData, fractions: [f64; 3], seed: u64, stable: bool) -> SplitAssignment {
    let Some(fixed) = &data.fixed_split else {
        return if stable {
            super::stable_group_split(data.len(), data.groups.as_deref(), fractions, seed)
        } else {
            stratified_group_split(&data.labels, data.groups.as_deref(), fractions, seed)
        };
    };
    let given = |s: Split| fixed.contains(&Some(s));
    let mut share = fractions;
    if given(Split::Validation) {
        share[1] = 0.0;
    }
    if given(Split::Test) {
        share[2] = 0.0;
    }
    let total: f64 = share.iter().sum();
    share.iter_mut().for_each(|f| *f /= total);
    let free: Vec<usize> = (0..data.len()).filter(|&r| fixed[r].is_none()).collect();
    let sub = data.select(&free);
    let inner = split_rows(&LabeledData { fixed_split: None, ..sub }, share, seed, stable);
    let mut out = SplitAssignment {
        train: inner.train.iter().map(|&i| free[i]).collect(),
        validation: inner.validation.iter().map(|&i| free[i]).collect(),
        test: inner.test.iter().map(|&i| free[i]).collect(),
    };
    for (row, split) in fixed.iter().enumerate() {
        match split {
            Some(Split::Validation) => out.validation.push(row),
            Some(Split::Test) => out.test.push(row),
            Some(Split::Train) => out.train.push(row),
            None => {}
        }
    }
    out.train.sort_unstable();
    out.validation.sort_unstable();
    out.test.sort_unstable();
    out
}

/// Counts of each label.
pub fn class_counts<'a>(labels: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for l in labels {
        *counts.entry(l.to_string()).or_default() += 1;
    }
    counts
}

/// The taxonomy (given, or the data's labels sorted), each row's class id, and the stratified
/// grouped split. Every model family splits the same data with the same seed identically, so the
/// members of a cascade never see each other's held-out rows.
pub fn prepare_data(
    data: &LabeledData,
    taxonomy: Option<&[String]>,
    source: &DataSource,
    fractions: [f64; 3],
    seed: u64,
    stable: bool,
) -> Result<(Vec<String>, Vec<usize>, SplitAssignment)> {
    let labels = match taxonomy {
        Some(taxonomy) => {
            if let Some(missing) = data.label_set().into_iter().find(|l| !taxonomy.contains(l)) {
                return Err(Error::Label(format!(
                    "label `{missing}` in the training data is not in the given taxonomy"
                )));
            }
            taxonomy.to_vec()
        }
        None => data.label_set(),
    };
    if labels.len() < 2 {
        return Err(Error::data(
            &source.file,
            format!("column `{}` has fewer than 2 distinct labels", source.label_column),
        ));
    }
    let label_index: HashMap<&str, usize> = labels.iter().enumerate().map(|(i, l)| (l.as_str(), i)).collect();
    // A multi-label row's class here is its first label's (its set: [`crate::eval::truth_of`]).
    let y: Vec<usize> = (0..data.len()).map(|r| label_index[data.labels_of(r)[0]]).collect();
    check_fractions(fractions)?;
    let split = split_rows(data, fractions, seed, stable);
    if split.train.is_empty() || split.validation.is_empty() {
        return Err(Error::data(&source.file, format!("too few rows ({}) for a train/validation split", data.len())));
    }
    Ok((labels, y, split))
}
