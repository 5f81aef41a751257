//! Data preparation shared by every model family: the taxonomy and class ids, the train /
//! validation / test split (stratified and grouped, or the hash-stable one of the learner), the
//! card's description of the data, and re-deriving a trained model's held-out rows.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::{LabeledData, SplitAssignment, stratified_group_split};
use crate::error::{Error, Result};
use crate::registry::card::DataInfo;

/// The split seed when none is given.
pub const DEFAULT_SEED: u64 = 42;
/// Train/validation/test fractions when none are given (and of cards that predate the field).
pub const DEFAULT_SPLIT: [f64; 3] = [0.8, 0.1, 0.1];

/// Where training data came from (recorded in the model card).
#[derive(Debug, Clone, Default)]
pub struct DataSource {
    pub file: String,
    pub text_column: String,
    pub label_column: String,
    pub group_column: Option<String>,
}

/// Counts of each label.
fn class_counts(labels: &[String]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for l in labels {
        *counts.entry(l.clone()).or_default() += 1;
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
    let y: Vec<usize> = data.labels.iter().map(|l| label_index[l.as_str()]).collect();
    let split = if stable {
        super::stable_group_split(data.len(), data.groups.as_deref(), fractions, seed)
    } else {
        stratified_group_split(&data.labels, data.groups.as_deref(), fractions, seed)
    };
    if split.train.is_empty() || split.validation.is_empty() {
        return Err(Error::data(&source.file, format!("too few rows ({}) for a train/validation split", data.len())));
    }
    Ok((labels, y, split))
}

/// The card's description of the training data.
pub fn data_info(source: &DataSource, data: &LabeledData, split: &SplitAssignment) -> DataInfo {
    DataInfo {
        file: source.file.clone(),
        text_column: source.text_column.clone(),
        label_column: source.label_column.clone(),
        group_column: source.group_column.clone(),
        sha256: data.fingerprint(),
        rows: data.len(),
        rows_rejected: data.rejected,
        train_rows: split.train.len(),
        validation_rows: split.validation.len(),
        test_rows: split.test.len(),
        class_counts: class_counts(&data.labels),
    }
}

/// Texts and labels of one split of the data a model was trained on: the file its card names
/// (or `file`, when it moved) read again and split exactly as training did. The data must hash to
/// the card's fingerprint, so the held-out rows are really held out.
pub async fn held_out(
    card: &crate::registry::ModelCard,
    which: super::Split,
    file: Option<&Path>,
) -> Result<(Vec<String>, Vec<String>)> {
    let info = card.data.as_ref().ok_or_else(|| {
        Error::config(
            "--data",
            format!("model {}:{} records no training data; pass labeled rows", card.name, card.version),
        )
    })?;
    let (seed, fractions, stable) =
        card.training.as_ref().map_or((DEFAULT_SEED, DEFAULT_SPLIT, false), |t| (t.seed, t.split, t.stable_split));
    let path = file.map_or_else(|| PathBuf::from(&info.file), Path::to_path_buf);
    let spec = super::LabeledDataSpec {
        path: path.clone(),
        text_column: info.text_column.clone(),
        label_column: info.label_column.clone(),
        group_column: info.group_column.clone(),
        max_rows: Some(info.rows),
        sample_seed: seed,
        skip_invalid: info.rows_rejected > 0,
    };
    let data = LabeledData::read(&spec).await?;
    if data.fingerprint() != info.sha256 {
        return Err(Error::data(
            &path,
            format!(
                "this is not the data {}:{} was trained on (hash differs); pass the original file",
                card.name, card.version
            ),
        ));
    }
    // Exactly the split training made.
    let source = DataSource {
        file: path.display().to_string(),
        text_column: info.text_column.clone(),
        label_column: info.label_column.clone(),
        group_column: info.group_column.clone(),
    };
    let (_, _, split) = prepare_data(&data, None, &source, fractions, seed, stable)?;
    let rows = split.rows(which);
    Ok((rows.iter().map(|&r| data.texts[r].clone()).collect(), rows.iter().map(|&r| data.labels[r].clone()).collect()))
}
