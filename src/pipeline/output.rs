//! The labeled output record: the input's columns followed by prodcat's label columns.
//!
//! Output columns (see `schemas/labeled-output.schema.json`): `label`, `label_id`, `confidence`,
//! `top_k` (list of `{label, score}`), `path` (the parts of the label's category path; the label
//! alone for flat labels), `levels` (list of `{label, score}`: the label's node and its score at
//! each level of a taxonomy, top first, ending with the label), `labels` (list of `{label, score}`:
//! the label alone, or a multi-label model's labels at or above their thresholds), `stage`, `model_name`,
//! `model_version`, `labeled_at`, `source_file`, `source_row`. Input columns with those names are
//! replaced.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float32Builder, Int32Builder, Int64Builder, ListBuilder, RecordBatch, StringBuilder, StructBuilder,
    TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

use crate::error::{Error, Result};
use crate::serve::Prediction;

/// Names of the columns prodcat adds.
pub const LABEL_COLUMNS: [&str; 13] = [
    "label",
    "label_id",
    "confidence",
    "top_k",
    "path",
    "levels",
    "labels",
    "stage",
    "model_name",
    "model_version",
    "labeled_at",
    "source_file",
    "source_row",
];

fn top_k_fields() -> Fields {
    Fields::from(vec![Field::new("label", DataType::Utf8, false), Field::new("score", DataType::Float32, false)])
}

fn scored_list() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Struct(top_k_fields()), true)))
}

/// Appends one row's `{label, score}` list.
fn append_scored<'a>(list: &mut ListBuilder<StructBuilder>, items: impl IntoIterator<Item = (&'a str, f32)>) {
    let entries = list.values();
    for (label, score) in items {
        if let Some(b) = entries.field_builder::<StringBuilder>(0) {
            b.append_value(label);
        }
        if let Some(b) = entries.field_builder::<Float32Builder>(1) {
            b.append_value(score);
        }
        entries.append(true);
    }
    list.append(true);
}

/// The Arrow fields prodcat appends to every labeled record.
pub fn label_fields() -> Vec<Field> {
    vec![
        Field::new("label", DataType::Utf8, false),
        Field::new("label_id", DataType::Int32, false),
        Field::new("confidence", DataType::Float32, false),
        Field::new("top_k", scored_list(), false),
        Field::new("path", DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), false),
        Field::new("levels", scored_list(), false),
        Field::new("labels", scored_list(), false),
        Field::new("stage", DataType::Utf8, false),
        Field::new("model_name", DataType::Utf8, false),
        Field::new("model_version", DataType::Utf8, false),
        Field::new("labeled_at", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        Field::new("source_file", DataType::Utf8, true),
        Field::new("source_row", DataType::Int64, true),
    ]
}

/// Output schema for an input schema: input columns (minus replaced ones) + label columns.
pub fn output_schema(input: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = input
        .fields()
        .iter()
        .filter(|f| !LABEL_COLUMNS.contains(&f.name().as_str()))
        .map(|f| f.as_ref().clone())
        .collect();
    fields.extend(label_fields());
    Arc::new(Schema::new(fields))
}

/// Where each labeled row came from.
#[derive(Debug, Clone, Copy)]
pub struct RowSource<'a> {
    pub file: Option<&'a str>,
    pub row: Option<i64>,
}

/// Builds the label columns for `predictions` (one per row).
pub fn label_columns(predictions: &[Prediction], sources: &[RowSource<'_>], labeled_at_ms: i64) -> Vec<ArrayRef> {
    let n = predictions.len();
    let mut label = StringBuilder::with_capacity(n, n * 12);
    let mut label_id = Int32Builder::with_capacity(n);
    let mut confidence = Float32Builder::with_capacity(n);
    let mut top_k = ListBuilder::new(StructBuilder::from_fields(top_k_fields(), n * 3));
    let mut path = ListBuilder::new(StringBuilder::with_capacity(n, n * 12));
    let mut levels = ListBuilder::new(StructBuilder::from_fields(top_k_fields(), n));
    let mut labels = ListBuilder::new(StructBuilder::from_fields(top_k_fields(), n));
    let mut stage = StringBuilder::with_capacity(n, n * 11);
    let mut model_name = StringBuilder::with_capacity(n, n * 8);
    let mut model_version = StringBuilder::with_capacity(n, n * 3);
    let mut labeled_at = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut source_file = StringBuilder::with_capacity(n, n * 16);
    let mut source_row = Int64Builder::with_capacity(n);
    for (p, src) in predictions.iter().zip(sources) {
        label.append_value(p.label());
        label_id.append_value(p.label_id as i32);
        confidence.append_value(p.confidence);
        append_scored(&mut top_k, p.top_k.iter().map(|&(id, score)| (p.model.labels[id as usize].as_str(), score)));
        for part in p.path() {
            path.values().append_value(part);
        }
        path.append(true);
        append_scored(&mut levels, p.levels());
        append_scored(&mut labels, p.label_set());
        stage.append_value(p.stage.name());
        model_name.append_value(&p.model.name);
        model_version.append_value(&p.model.version);
        labeled_at.append_value(labeled_at_ms);
        source_file.append_option(src.file);
        source_row.append_option(src.row);
    }
    vec![
        Arc::new(label.finish()),
        Arc::new(label_id.finish()),
        Arc::new(confidence.finish()),
        Arc::new(top_k.finish()),
        Arc::new(path.finish()),
        Arc::new(levels.finish()),
        Arc::new(labels.finish()),
        Arc::new(stage.finish()),
        Arc::new(model_name.finish()),
        Arc::new(model_version.finish()),
        Arc::new(labeled_at.finish()),
        Arc::new(source_file.finish()),
        Arc::new(source_row.finish()),
    ]
}

/// `input` (rows already limited to the labeled ones) joined with its label columns.
pub fn labeled_batch(
    input: &RecordBatch,
    predictions: &[Prediction],
    sources: &[RowSource<'_>],
    labeled_at_ms: i64,
) -> Result<RecordBatch> {
    if input.num_rows() != predictions.len() {
        return Err(Error::Internal(format!("{} rows but {} predictions", input.num_rows(), predictions.len())));
    }
    let schema = output_schema(input.schema().as_ref());
    let mut columns: Vec<ArrayRef> = input
        .schema()
        .fields()
        .iter()
        .zip(input.columns())
        .filter(|(f, _)| !LABEL_COLUMNS.contains(&f.name().as_str()))
        .map(|(_, c)| c.clone())
        .collect();
    columns.extend(label_columns(predictions, sources, labeled_at_ms));
    RecordBatch::try_new(schema, columns).map_err(|e| Error::table("building labeled output", e))
}

/// Milliseconds since the Unix epoch, now.
pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
