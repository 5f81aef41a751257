//! Reading named columns of a CSV / JSONL / Parquet file as strings, through DataFusion.
//!
//! All three formats go through one code path (a DataFusion scan with a projection), so a column
//! is found by its exact name (names may contain spaces), numbers and booleans are cast to text,
//! and a missing column is reported with the columns that do exist.

use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use datafusion::prelude::{
    CsvReadOptions, JsonReadOptions, ParquetReadOptions, SessionConfig, SessionContext, cast, ident,
};
use sha2::{Digest, Sha256};

use super::Split;
use crate::common::{Head, PathLabels, TaxonomyFile, TextSpec};
use crate::error::{Error, Result};

/// The on-disk formats prodcat reads tables from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Csv,
    Tsv,
    JsonLines,
    Parquet,
}

impl FileFormat {
    /// Chooses the format from the file extension.
    pub fn from_path(path: &Path) -> Result<Self> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Ok(Self::Csv),
            "tsv" => Ok(Self::Tsv),
            "jsonl" | "ndjson" | "json" => Ok(Self::JsonLines),
            "parquet" | "pq" => Ok(Self::Parquet),
            _ => Err(Error::data(
                path,
                format!("unknown file type `.{ext}`: expected .csv, .tsv, .jsonl/.ndjson or .parquet"),
            )),
        }
    }
}

/// Reads `columns` of `path` as optional strings, in file order (one `Vec` per column).
///
/// Missing columns fail with an error that names the file, the column and the columns present.
pub async fn read_string_columns(path: &Path, columns: &[&str]) -> Result<Vec<Vec<Option<String>>>> {
    Ok(read_columns(path, columns).await?.0)
}

/// What separates the items of a list-valued cell (a JSON list in JSONL, a Parquet list) in the
/// strings [`read_columns`] gives: the ASCII unit separator, which no text column holds.
pub const LIST_SEPARATOR: &str = "\u{1f}";

/// [`read_string_columns`], and whether each column holds lists (their items joined by
/// [`LIST_SEPARATOR`]).
pub async fn read_columns(path: &Path, columns: &[&str]) -> Result<(Vec<Vec<Option<String>>>, Vec<bool>)> {
    if !path.is_file() {
        return Err(Error::data(path, "no such file"));
    }
    let format = FileFormat::from_path(path)?;
    // One partition keeps rows in file order, which the seeded split depends on.
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    let location = path.to_str().ok_or_else(|| Error::data(path, "path is not valid UTF-8"))?;
    let ext = path.extension().and_then(|e| e.to_str()).map(|e| format!(".{e}")).unwrap_or_default();
    let read_err = |e: datafusion::error::DataFusionError| Error::data(path, format!("cannot read as {format:?}: {e}"));
    let frame = match format {
        FileFormat::Csv | FileFormat::Tsv => {
            let delimiter = if format == FileFormat::Tsv { b'\t' } else { b',' };
            let options = CsvReadOptions::new()
                .has_header(true)
                .delimiter(delimiter)
                .newlines_in_values(true)
                .schema_infer_max_records(10_000)
                .file_extension(&ext);
            ctx.read_csv(location, options).await.map_err(read_err)?
        }
        FileFormat::JsonLines => {
            ctx.read_json(location, JsonReadOptions::default().file_extension(&ext)).await.map_err(read_err)?
        }
        FileFormat::Parquet => {
            ctx.read_parquet(location, ParquetReadOptions::default().file_extension(&ext)).await.map_err(read_err)?
        }
    };
    let present: Vec<String> = frame.schema().fields().iter().map(|f| f.name().clone()).collect();
    for column in columns {
        if !present.iter().any(|p| p == column) {
            return Err(Error::data(
                path,
                format!("column `{column}` not found; the file has: {}", present.join(", ")),
            ));
        }
    }
    let is_list = |c: &str| {
        frame.schema().field_with_unqualified_name(c).is_ok_and(|f| {
            matches!(f.data_type(), DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..))
        })
    };
    let lists: Vec<bool> = columns.iter().map(|c| is_list(c)).collect();
    let projection = columns
        .iter()
        .zip(&lists)
        .map(|(c, &list)| {
            let column = if list {
                datafusion::functions_nested::expr_fn::array_to_string(
                    ident(*c),
                    datafusion::prelude::lit(LIST_SEPARATOR),
                )
            } else {
                ident(*c)
            };
            cast(column, DataType::Utf8).alias(*c)
        })
        .collect::<Vec<_>>();
    let batches = frame.select(projection).map_err(read_err)?.collect().await.map_err(read_err)?;
    let mut out: Vec<Vec<Option<String>>> = vec![Vec::new(); columns.len()];
    for batch in &batches {
        for (i, column) in out.iter_mut().enumerate() {
            let array = arrow::compute::cast(batch.column(i), &DataType::Utf8)
                .map_err(|e| Error::data(path, format!("column `{}`: {e}", columns[i])))?;
            let strings = array.as_string::<i32>();
            column.extend((0..strings.len()).map(|r| strings.is_valid(r).then(|| strings.value(r).to_string())));
        }
    }
    Ok((out, lists))
}

/// Which columns of which file hold the examples.
#[derive(Debug, Clone)]
pub struct LabeledDataSpec {
    pub path: PathBuf,
    /// The column(s) the text is composed of (one column as it is, by default).
    pub text: TextSpec,
    pub label_column: String,
    pub group_column: Option<String>,
    /// Keep at most this many usable rows: a seeded uniform sample (files are often sorted by
    /// category, so the first rows would be one class), kept in file order.
    pub max_rows: Option<usize>,
    /// Seed of the `max_rows` sample.
    pub sample_seed: u64,
    /// Drop rows with empty text or label (counted) instead of failing on the first one.
    pub skip_invalid: bool,
    /// Labels as category paths: their separator (empty: labels are never paths) and a
    /// taxonomy file every label must name a category of (by path, id or unique last part).
    pub paths: PathSpec,
    /// Several labels per row (`--label-separator`): what separates them in the label column.
    /// A label column of lists (a JSON list in JSONL) is multi-label whatever this says.
    pub label_separator: Option<String>,
}

/// What joins a multi-label row's labels (sorted, distinct) in [`LabeledData::labels`]: the row's
/// label set as one string, which the stratified split deals like a class.
pub const LABEL_SET_SEPARATOR: &str = "\u{1f}";

/// A multi-label cell's labels: split on `separator`, trimmed, empty ones dropped, sorted and
/// distinct, joined by [`LABEL_SET_SEPARATOR`] (None: no label at all).
pub fn label_set_of(cell: &str, separator: &str) -> Option<String> {
    let mut parts: Vec<&str> = cell.split(separator).map(str::trim).filter(|p| !p.is_empty()).collect();
    parts.sort_unstable();
    parts.dedup();
    (!parts.is_empty()).then(|| parts.join(LABEL_SET_SEPARATOR))
}

/// How a label column's values are category paths (`--path-separator`, `--taxonomy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathSpec {
    pub separator: String,
    pub taxonomy: Option<PathBuf>,
}

impl Default for PathSpec {
    fn default() -> Self {
        Self { separator: crate::common::DEFAULT_PATH_SEPARATOR.into(), taxonomy: None }
    }
}

impl PathSpec {
    /// The spec a model's taxonomy was made with (flat models: the default, which finds no paths
    /// in flat labels), reading its taxonomy file at `file` (the version folder's copy, wherever
    /// the model was moved, or the path its card records).
    pub fn of_taxonomy(taxonomy: Option<&crate::common::Taxonomy>, file: Option<PathBuf>) -> Self {
        taxonomy.map_or_else(Self::default, |t| Self { separator: t.separator.clone(), taxonomy: file })
    }

    /// The taxonomy file, read and parsed (None without one).
    pub fn read_file(&self) -> Result<Option<TaxonomyFile>> {
        let Some(path) = &self.taxonomy else { return Ok(None) };
        let text = std::fs::read_to_string(path).map_err(|e| Error::data(path, format!("cannot read: {e}")))?;
        TaxonomyFile::parse(&text, &self.separator).map(Some).map_err(|e| Error::data(path, e))
    }
}

/// Labeled examples read from a file: texts, labels, optional group keys, in file order.
#[derive(Debug, Clone, Default)]
pub struct LabeledData {
    pub texts: Vec<String>,
    pub labels: Vec<String>,
    /// Group key per row (e.g. a product cluster); `None` when no group column was given.
    pub groups: Option<Vec<String>>,
    /// Rows dropped because text or label was empty (only with `skip_invalid`).
    pub rejected: usize,
    /// The split of each row when some rows came from files that *are* a split
    /// (`--validation-data`, `--test-data`): `Some(split)` for those rows, `None` for rows of the
    /// training file (split by fractions). `None` altogether for data from one file.
    pub fixed_split: Option<Vec<Option<Split>>>,
    /// What the labels are: one class per row (`single_label`) is what every reader makes today.
    /// Trainers train for it, and their cards record it.
    pub head: Head,
    /// Set when the labels are category paths (some label has the separator, or a taxonomy file
    /// named them): trainers record the tree they make in the card.
    pub paths: Option<PathLabels>,
}

impl LabeledData {
    /// Reads and validates the examples described by `spec`.
    pub async fn read(spec: &LabeledDataSpec) -> Result<Self> {
        let fields = &spec.text.fields;
        let mut wanted: Vec<&str> = fields.iter().map(String::as_str).collect();
        wanted.push(spec.label_column.as_str());
        if let Some(group) = &spec.group_column {
            wanted.push(group.as_str());
        }
        let (columns, lists) = read_columns(&spec.path, &wanted).await?;
        let mut columns = columns.into_iter();
        let texts: Vec<Vec<Option<String>>> = columns.by_ref().take(fields.len()).collect();
        let labels = columns.next().unwrap_or_default();
        let groups = columns.next();
        let mut data = LabeledData { groups: groups.as_ref().map(|_| Vec::new()), ..Default::default() };
        // Several labels per row: a separator given, or a column of lists.
        let multi = match (lists[fields.len()], &spec.label_separator) {
            (true, _) => Some(LIST_SEPARATOR),
            (false, Some(separator)) if !separator.is_empty() => Some(separator.as_str()),
            _ => None,
        };
        if multi.is_some() {
            data.head = Head::MultiLabel;
            if spec.paths.taxonomy.is_some() {
                return Err(Error::data(
                    &spec.path,
                    "several labels per row (--label-separator or a list column) cannot be read through a taxonomy \
                     file yet: give the labels themselves",
                ));
            }
        }
        let taxonomy = spec.paths.read_file()?;
        for (row, label) in labels.into_iter().enumerate() {
            let text = spec.text.compose(|field| {
                let column = fields.iter().position(|f| f == field)?;
                texts[column][row].as_deref()
            });
            let label = match multi {
                Some(separator) => label.and_then(|l| label_set_of(&l, separator)),
                None => label.map(|l| l.trim().to_string()).filter(|l| !l.is_empty()),
            };
            // With a taxonomy file, a label is the path of the category it names.
            let label = match (label, &taxonomy) {
                (Some(l), Some(file)) => match file.resolve(&l, &spec.paths.separator) {
                    Ok(path) => Some(path.to_string()),
                    Err(e) if spec.skip_invalid => {
                        tracing::debug!(row = row + 1, "{e}");
                        None
                    }
                    Err(e) => {
                        let file = spec.paths.taxonomy.as_deref().unwrap_or(Path::new("")).display();
                        return Err(Error::data(
                            &spec.path,
                            format!("row {}: {e} {file} (use --skip-invalid to drop such rows)", row + 1),
                        ));
                    }
                },
                (label, _) => label,
            };
            let (text, label) = match (text, label) {
                (Ok(t), Some(l)) => (t, l),
                (text, _) => {
                    let column = if text.is_err() { spec.text.primary() } else { &spec.label_column };
                    if spec.skip_invalid {
                        data.rejected += 1;
                        continue;
                    }
                    // Row numbers are 1-based data rows (the CSV header is not counted).
                    return Err(Error::data(
                        &spec.path,
                        format!("row {}: column `{column}` is empty (use --skip-invalid to drop such rows)", row + 1),
                    ));
                }
            };
            data.texts.push(text);
            data.labels.push(label);
            if let (Some(out), Some(groups)) = (data.groups.as_mut(), groups.as_ref()) {
                // A row without a group key is its own group.
                out.push(groups[row].clone().unwrap_or_else(|| format!("\u{0}row{row}")));
            }
        }
        if data.rejected > 0 {
            tracing::warn!(
                file = %spec.path.display(),
                rows = data.rejected,
                "dropped rows with an empty `{}` or `{}`",
                spec.text.primary(),
                spec.label_column
            );
        }
        if data.texts.is_empty() {
            return Err(Error::data(&spec.path, "no usable rows (every row has an empty text or label)"));
        }
        let separator = &spec.paths.separator;
        // A multi-label model's classes are flat (a path in a label set stays one label).
        let paths =
            taxonomy.is_some() || (!separator.is_empty() && data.labels.iter().any(|l| l.contains(separator.as_str())));
        if paths && multi.is_none() {
            data.paths = Some(PathLabels {
                separator: separator.clone(),
                file: spec.paths.taxonomy.as_ref().map(|p| p.display().to_string()),
            });
        }
        if let Some(max) = spec.max_rows.filter(|&m| m < data.len()) {
            data = data.sample(max, spec.sample_seed);
        }
        Ok(data)
    }

    /// Appends the rows of `other` as rows of `split` (a validation or test file given as such).
    /// Both must have group keys or neither.
    pub fn append_split(&mut self, other: LabeledData, split: Split) -> Result<()> {
        if self.groups.is_some() != other.groups.is_some() {
            return Err(Error::Internal("appending data with and without group keys".into()));
        }
        if self.head != other.head {
            return Err(Error::Label(format!(
                "the {} rows' labels are {} and the training file's {}: give both the same way",
                format!("{split:?}").to_lowercase(),
                other.head.name(),
                self.head.name()
            )));
        }
        let fixed = self.fixed_split.get_or_insert_with(|| vec![None; self.texts.len()]);
        fixed.extend(std::iter::repeat_n(Some(split), other.len()));
        self.texts.extend(other.texts);
        self.labels.extend(other.labels);
        if let (Some(mine), Some(theirs)) = (self.groups.as_mut(), other.groups) {
            mine.extend(theirs);
        }
        self.rejected += other.rejected;
        if self.paths.is_none() {
            self.paths = other.paths;
        }
        Ok(())
    }

    /// Rows whose split was given by their file, per split.
    pub fn fixed_rows(&self, split: Split) -> usize {
        self.fixed_split.as_ref().map_or(0, |f| f.iter().filter(|s| **s == Some(split)).count())
    }

    /// A seeded uniform sample of `n` rows, in their original order.
    pub fn sample(&self, n: usize, seed: u64) -> Self {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut keep = rand::seq::index::sample(&mut rng, self.len(), n).into_vec();
        keep.sort_unstable();
        self.select(&keep)
    }

    /// About `n` rows: a seeded sample of each label's (or label set's) rows in proportion, at
    /// least one of each, kept in file order.
    pub fn stratified_sample(&self, n: usize, seed: u64) -> Self {
        use rand::SeedableRng;
        use rand::seq::SliceRandom;
        let mut by_label: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
        for (i, label) in self.labels.iter().enumerate() {
            by_label.entry(label).or_default().push(i);
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let total = self.len().max(1);
        let mut keep = Vec::with_capacity(n + by_label.len());
        for rows in by_label.values_mut() {
            let quota = (rows.len() * n / total).clamp(1, rows.len());
            rows.shuffle(&mut rng);
            keep.extend_from_slice(&rows[..quota]);
        }
        keep.sort_unstable();
        self.select(&keep)
    }

    /// The rows `rows`, in that order.
    pub fn select(&self, rows: &[usize]) -> Self {
        Self {
            texts: rows.iter().map(|&i| self.texts[i].clone()).collect(),
            labels: rows.iter().map(|&i| self.labels[i].clone()).collect(),
            groups: self.groups.as_ref().map(|g| rows.iter().map(|&i| g[i].clone()).collect()),
            rejected: self.rejected,
            fixed_split: self.fixed_split.as_ref().map(|f| rows.iter().map(|&i| f[i]).collect()),
            head: self.head,
            paths: self.paths.clone(),
        }
    }

    /// The taxonomy the class labels `labels` make when this data's labels are paths.
    pub fn taxonomy(&self, labels: &[String]) -> Option<crate::common::Taxonomy> {
        self.paths.as_ref().and_then(|p| crate::common::Taxonomy::of_labels(labels, p))
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    /// True when there are no examples.
    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// A row's labels: the one label, or a multi-label row's set.
    pub fn labels_of(&self, row: usize) -> Vec<&str> {
        let label = self.labels[row].as_str();
        match self.head {
            Head::SingleLabel => vec![label],
            Head::MultiLabel => label.split(LABEL_SET_SEPARATOR).collect(),
        }
    }

    /// The distinct labels, sorted (of a multi-label data set: every label of every row's set).
    pub fn label_set(&self) -> Vec<String> {
        let mut labels: Vec<String> = match self.head {
            Head::SingleLabel => self.labels.clone(),
            Head::MultiLabel => (0..self.len()).flat_map(|r| self.labels_of(r)).map(str::to_string).collect(),
        };
        labels.sort();
        labels.dedup();
        labels
    }

    /// SHA-256 over the examples (text, label, group) in order: identifies a data snapshot.
    pub fn fingerprint(&self) -> String {
        let mut hasher = Sha256::new();
        for i in 0..self.len() {
            hasher.update(self.texts[i].as_bytes());
            hasher.update([0x1f]);
            hasher.update(self.labels[i].as_bytes());
            hasher.update([0x1f]);
            if let Some(groups) = &self.groups {
                hasher.update(groups[i].as_bytes());
            }
            if let Some(split) = self.fixed_split.as_ref().and_then(|f| f[i]) {
                hasher.update([0x1f, split as u8 + 1]);
            }
            hasher.update([0x1e]);
        }
        format!("{:x}", hasher.finalize())
    }
}
