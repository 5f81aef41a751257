//! A published model's held-out rows: the file its card names read again and split exactly as
//! training split it (evaluation, quantization checks, the benchmarks).

use std::path::{Path, PathBuf};

use super::ModelCard;
use crate::common::TextSpec;
use crate::data::prepare::{DEFAULT_SEED, DEFAULT_SPLIT, DataSource, prepare_data, read_training_data};
use crate::data::{LabeledData, LabeledDataSpec, Split};
use crate::error::{Error, Result};

/// Texts and labels of one split of the data a model was trained on: the file its card names
/// (or `file`, when it moved) read again and split exactly as training did. The data must hash to
/// the card's fingerprint, so the held-out rows are really held out. `taxonomy`: the model's
/// taxonomy file (`ModelVersion::taxonomy_file`).
pub async fn held_out(
    card: &ModelCard,
    taxonomy: Option<PathBuf>,
    which: Split,
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
    let (validation, test) =
        (info.validation_file.as_ref().map(PathBuf::from), info.test_file.as_ref().map(PathBuf::from));
    let text = info.text.as_ref().map_or_else(|| TextSpec::column(&info.text_column), |t| t.spec());
    let mut spec = LabeledDataSpec {
        path: path.clone(),
        text: text.clone(),
        label_column: info.label_column.clone(),
        group_column: info.group_column.clone(),
        max_rows: None,
        sample_seed: seed,
        skip_invalid: info.rows_rejected > 0,
        paths: crate::data::PathSpec::of_taxonomy(card.taxonomy.as_ref(), taxonomy),
        label_separator: info.label_separator.clone(),
    };
    // Rows of the training file alone: the card's rows less those of the given split files.
    let mut given_rows = 0;
    for file in [&validation, &test].into_iter().flatten() {
        given_rows += LabeledData::read(&LabeledDataSpec { path: file.clone(), ..spec.clone() }).await?.len();
    }
    spec.max_rows = Some(info.rows.saturating_sub(given_rows));
    let data = read_training_data(&spec, validation.as_deref(), test.as_deref()).await?;
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
        label_separator: info.label_separator.clone(),
        file: path.display().to_string(),
        text,
        label_column: info.label_column.clone(),
        group_column: info.group_column.clone(),
        validation_file: info.validation_file.clone(),
        test_file: info.test_file.clone(),
    };
    let (_, _, split) = prepare_data(&data, None, &source, fractions, seed, stable)?;
    let rows = split.rows(which);
    Ok((rows.iter().map(|&r| data.texts[r].clone()).collect(), rows.iter().map(|&r| data.labels[r].clone()).collect()))
}
