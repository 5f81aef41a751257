//! Labeled example data: reading text/label/group columns from CSV, JSONL or Parquet files, and
//! splitting them into train/validation/test sets.

pub mod prepare;
mod split;
mod table;

pub use split::{Split, SplitAssignment, stable_group_split, stratified_group_folds, stratified_group_split};
pub use table::{FileFormat, LabeledData, LabeledDataSpec, PathSpec, read_string_columns};
