//! The nightly relabel job: a Parquet catalogue in, labeled Arrow IPC or Parquet files out.
//!
//! ```text
//! Parquet files ─► DataFusion scan ─► validate+compose text ─► labeling engine ─► rotating files
//!   (projection,     (per file, in      │ bad rows → dead-letter JSONL              │
//!    --where)         order, sharded)    └──────────────────────────────────────────┴► manifest
//! ```
//! Input files are processed in order; each one's outputs are named after it and finalized when
//! the file ends, then the file is recorded in the manifest. A rerun on the same output folder
//! skips recorded files and rewrites the others from scratch, so the output holds every input row
//! exactly once however often the job was interrupted.

mod manifest;
mod source;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{RecordBatch, UInt32Array};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

pub use manifest::{MANIFEST, Manifest};
pub use source::{ParquetInput, discover, inspect};

use super::engine::{EngineSettings, LabelingEngine, TextChunk};
use super::output::{RowSource, labeled_batch, now_millis};
use super::sinks::{JsonLinesFile, OutputFormat, RotatingFileWriter, Rotation};
use crate::common::{RejectReason, TextSpec};
use crate::error::{Error, IoContext, Result};
use crate::metrics::Metrics;
use crate::registry::ModelVersion;
use crate::serve::{ModelSlot, SessionSettings};

/// `I/N`: this machine's share of a job split across N machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Default for Shard {
    fn default() -> Self {
        Self { index: 0, count: 1 }
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let parsed =
            s.split_once('/').and_then(|(i, n)| Some((i.trim().parse::<u32>().ok()?, n.trim().parse::<u32>().ok()?)));
        match parsed {
            Some((index, count)) if count > 0 && index < count => Ok(Self { index, count }),
            _ => Err(format!("`{s}` is not a shard: expected I/N with 0 <= I < N, e.g. 0/4")),
        }
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// Whether the row at `position` of a file belongs to this shard.
    pub fn owns(&self, position: u64) -> bool {
        position % u64::from(self.count) == u64::from(self.index)
    }
}

/// Everything a relabel run needs.
#[derive(Debug, Clone)]
pub struct RelabelJob {
    /// The model version to label with (resolved once, where the job was built).
    pub model: ModelVersion,
    /// Files, folders or globs of Parquet files.
    pub inputs: Vec<String>,
    pub output: PathBuf,
    pub format: OutputFormat,
    /// SQL predicate pushed down into the scan.
    pub filter: Option<String>,
    pub text: TextSpec,
    /// Input columns to carry into the output (None = all).
    pub keep_columns: Option<Vec<String>>,
    pub shard: Shard,
    pub engine: EngineSettings,
    pub session: SessionSettings,
    pub rotation: Rotation,
    pub show_progress: bool,
    /// Rows per chunk handed to the labeling engine.
    pub chunk_rows: usize,
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RelabelSummary {
    pub files: usize,
    pub files_skipped: usize,
    pub rows_in: u64,
    pub labeled: u64,
    pub dead_lettered: u64,
    pub label_counts: BTreeMap<String, u64>,
    pub rejected: BTreeMap<String, u64>,
    pub elapsed_seconds: f64,
    pub rows_per_second: f64,
    pub model: String,
    pub output: String,
}

impl RelabelSummary {
    /// The summary table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "relabel summary ({} into {})", self.model, self.output);
        let _ = writeln!(s, "  {:<24} {:>12}", "input files", self.files);
        let _ = writeln!(s, "  {:<24} {:>12}", "  already done (skipped)", self.files_skipped);
        let _ = writeln!(s, "  {:<24} {:>12}", "rows in", self.rows_in);
        let _ = writeln!(s, "  {:<24} {:>12}", "labeled", self.labeled);
        let _ = writeln!(s, "  {:<24} {:>12}", "dead-lettered", self.dead_lettered);
        for (reason, n) in &self.rejected {
            let _ = writeln!(s, "    {:<22} {:>12}", reason, n);
        }
        let _ = writeln!(s, "  {:<24} {:>12.1}", "elapsed (s)", self.elapsed_seconds);
        let _ = writeln!(s, "  {:<24} {:>12.0}", "rows/s", self.rows_per_second);
        // Every label of a small label set; the most frequent of a large one.
        let mut counts: Vec<(&String, &u64)> = self.label_counts.iter().collect();
        let shown = crate::eval::READABLE_CLASSES;
        if counts.len() > shown {
            counts.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let _ = writeln!(s, "  per label ({} labels, the {shown} most frequent):", counts.len());
        } else {
            let _ = writeln!(s, "  per label:");
        }
        for (label, n) in counts.into_iter().take(shown) {
            let _ = writeln!(s, "    {:<22} {:>12}", label, n);
        }
        s
    }
}

/// A row that could not be labeled.
#[derive(Debug)]
struct DeadRow {
    row: i64,
    reason: RejectReason,
    record: serde_json::Value,
}

/// What travels through the engine with the texts.
#[derive(Debug)]
enum Part {
    Rows { input: usize, batch: RecordBatch, rows: Vec<i64>, dead: Vec<DeadRow> },
    End { input: usize, rows_in: u64 },
}

/// Rows of `batch` at `indices` as JSON objects.
fn rows_as_json(batch: &RecordBatch, indices: &[usize]) -> Vec<serde_json::Value> {
    let take = UInt32Array::from(indices.iter().map(|&i| i as u32).collect::<Vec<_>>());
    let Ok(rows) = arrow::compute::take_record_batch(batch, &take) else {
        return vec![serde_json::Value::Null; indices.len()];
    };
    let mut buf = Vec::new();
    let mut writer = arrow::json::LineDelimitedWriter::new(&mut buf);
    if writer.write(&rows).and_then(|_| writer.finish()).is_err() {
        return vec![serde_json::Value::Null; indices.len()];
    }
    drop(writer);
    String::from_utf8_lossy(&buf).lines().map(|l| serde_json::from_str(l).unwrap_or(serde_json::Value::Null)).collect()
}

struct FileOutputs {
    rows: RotatingFileWriter,
    dead: Option<JsonLinesFile>,
    labeled: u64,
    dead_lettered: u64,
    label_counts: BTreeMap<String, u64>,
    model: String,
}

/// Checks that `dir` can be created and written, with a clear error naming it.
fn ensure_writable(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::config("--output", format!("cannot create {}: {e}", dir.display())))?;
    let probe = dir.join(".prodcat-write-probe");
    std::fs::write(&probe, b"")
        .map_err(|e| Error::config("--output", format!("{} is not writable: {e}", dir.display())))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Removes outputs of a file that was not completed (and stale temporary files).
fn clean_incomplete(dir: &Path, prefix: &str) -> Result<()> {
    for entry in std::fs::read_dir(dir).at(dir)? {
        let path = entry.at(dir)?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let stale_tmp = name.starts_with('.') && name.ends_with(".tmp") && name != format!(".{MANIFEST}.tmp");
        let ours = name.starts_with(&format!("{prefix}-")) || name == format!("dead-letter-{prefix}.jsonl");
        if stale_tmp || ours {
            std::fs::remove_file(&path).at(&path)?;
        }
    }
    Ok(())
}

/// Runs a relabel job to completion.
pub async fn relabel(job: RelabelJob, metrics: Arc<Metrics>) -> Result<RelabelSummary> {
    let started = Instant::now();
    let paths = discover(&job.inputs)?;
    let inputs: Vec<ParquetInput> = paths.iter().map(|p| inspect(p)).collect::<Result<_>>()?;
    let primary = job.text.primary().to_string();
    for input in &inputs {
        if !input.columns.contains(&primary) {
            return Err(Error::data(
                &input.path,
                format!("text column `{primary}` not found; the file has: {}", input.columns.join(", ")),
            ));
        }
        for column in job.keep_columns.iter().flatten() {
            if !input.columns.contains(column) {
                return Err(Error::data(
                    &input.path,
                    format!(
                        "column `{column}` (from --keep-columns) not found; the file has: {}",
                        input.columns.join(", ")
                    ),
                ));
            }
        }
    }
    ensure_writable(&job.output)?;
    // The watcher's checks: parity passed, files and labels consistent, every member warmed up.
    let model = crate::models::load_verified(job.model.clone(), &job.session)?;
    let identity = model.identity();
    let model_id = format!("{}:{}", identity.name, identity.version);
    metrics.set_model(&identity.name, &identity.version);

    let job_key = format!(
        "shard={} where={} format={} text={} columns={}",
        job.shard,
        job.filter.as_deref().unwrap_or("-"),
        job.format.extension(),
        job.text.fields.join("+"),
        job.keep_columns.as_ref().map(|c| c.join("+")).unwrap_or_else(|| "*".into())
    );
    let manifest = Manifest::load(&job.output, &job_key)?;
    let mut summary = RelabelSummary {
        files: inputs.len(),
        model: model_id.clone(),
        output: job.output.display().to_string(),
        ..Default::default()
    };
    let mut todo = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        if let Some(done) = manifest.done(&input.path, &input.fingerprint) {
            summary.files_skipped += 1;
            if done.model != model_id {
                tracing::warn!(file = %input.path.display(), earlier = %done.model, now = %model_id, "file was labeled by another model version in an earlier run");
            }
            continue;
        }
        clean_incomplete(&job.output, &manifest::output_prefix(&input.path))?;
        todo.push(i);
    }
    if summary.files_skipped > 0 {
        tracing::info!(skipped = summary.files_skipped, remaining = todo.len(), "continuing an interrupted relabel");
    }

    let total_rows: u64 = todo.iter().map(|&i| inputs[i].rows / u64::from(job.shard.count)).sum();
    let progress =
        if job.show_progress { indicatif::ProgressBar::new(total_rows) } else { indicatif::ProgressBar::hidden() };
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} [{bar:36}] {human_pos}/{human_len} rows · {per_sec} · ETA {eta}",
    ) {
        progress.set_style(style.progress_chars("=> "));
    }

    let slot = ModelSlot::new(model);
    let (tx, engine) = LabelingEngine::<Part>::start(slot, job.engine.clone(), metrics.clone())?;
    let receiver = engine.receiver();
    let consumer = {
        let (inputs, job, metrics, progress, job_key) =
            (inputs.clone(), job.clone(), metrics.clone(), progress.clone(), job_key.clone());
        tokio::task::spawn_blocking(move || -> Result<RelabelSummary> {
            let mut outputs: HashMap<usize, FileOutputs> = HashMap::new();
            let mut totals = RelabelSummary::default();
            for message in receiver.iter() {
                let chunk = message?;
                match chunk.payload {
                    Part::Rows { input, batch, rows, dead } => {
                        let sink_started = Instant::now();
                        let file = inputs[input].path.display().to_string();
                        let out = outputs.entry(input).or_insert_with(|| FileOutputs {
                            rows: RotatingFileWriter::new(
                                &job.output,
                                &manifest::output_prefix(&inputs[input].path),
                                job.format,
                                job.rotation,
                            ),
                            dead: None,
                            labeled: 0,
                            dead_lettered: 0,
                            label_counts: BTreeMap::new(),
                            model: String::new(),
                        });
                        if !chunk.predictions.is_empty() {
                            let sources: Vec<RowSource<'_>> =
                                rows.iter().map(|&r| RowSource { file: Some(file.as_str()), row: Some(r) }).collect();
                            let labeled = labeled_batch(&batch, &chunk.predictions, &sources, now_millis())?;
                            out.rows.write(&labeled)?;
                            for p in &chunk.predictions {
                                *out.label_counts.entry(p.label().to_string()).or_default() += 1;
                                metrics.records_labeled.with_label_values(&[p.label()]).inc();
                            }
                            out.labeled += chunk.predictions.len() as u64;
                            if let Some(p) = chunk.predictions.last() {
                                out.model = format!("{}:{}", p.model.name, p.model.version);
                            }
                        }
                        for d in &dead {
                            if out.dead.is_none() {
                                let name =
                                    format!("dead-letter-{}.jsonl", manifest::output_prefix(&inputs[input].path));
                                out.dead = Some(JsonLinesFile::create(&job.output.join(name))?);
                            }
                            if let Some(dl) = out.dead.as_mut() {
                                dl.append(&serde_json::json!({ "reason": d.reason, "source_file": file, "source_row": d.row, "record": d.record }))?;
                            }
                            *totals.rejected.entry(d.reason.as_str().to_string()).or_default() += 1;
                        }
                        out.dead_lettered += dead.len() as u64;
                        metrics
                            .stage_seconds
                            .with_label_values(&["sink"])
                            .observe(sink_started.elapsed().as_secs_f64());
                        progress.inc((chunk.predictions.len() + dead.len()) as u64);
                    }
                    Part::End { input, rows_in } => {
                        let out = outputs.remove(&input);
                        let (files, dead_file, labeled, dead_lettered, label_counts, model) = match out {
                            Some(o) => {
                                let files = o.rows.finish()?;
                                let dead_file = match o.dead {
                                    Some(d) => d.finish()?,
                                    None => None,
                                };
                                (files, dead_file, o.labeled, o.dead_lettered, o.label_counts, o.model)
                            }
                            None => (Vec::new(), None, 0, 0, BTreeMap::new(), String::new()),
                        };
                        let name =
                            |p: &PathBuf| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                        totals.rows_in += rows_in;
                        totals.labeled += labeled;
                        totals.dead_lettered += dead_lettered;
                        for (label, n) in &label_counts {
                            *totals.label_counts.entry(label.clone()).or_default() += n;
                        }
                        manifest_complete(
                            &job.output,
                            &job_key,
                            &inputs[input],
                            manifest::CompletedFile {
                                fingerprint: inputs[input].fingerprint.clone(),
                                rows_in,
                                labeled,
                                dead_lettered,
                                outputs: files.iter().map(name).collect(),
                                dead_letters: dead_file.as_ref().map(name),
                                model,
                                label_counts,
                            },
                        )?;
                    }
                }
            }
            Ok(totals)
        })
    };

    let produced = produce(&job, &inputs, &todo, &tx, &metrics).await;
    drop(tx);
    let consumed = consumer.await.map_err(|e| Error::thread("the relabel writer thread", e))?;
    engine.join();
    progress.finish_and_clear();
    // A writer failure explains a stopped producer better than the producer's own error.
    let totals = consumed?;
    produced?;
    let manifest = Manifest::load(&job.output, &job_key)?;
    // Totals cover every completed file, including those done by earlier runs.
    for entry in manifest.completed.values() {
        summary.rows_in += entry.rows_in;
        summary.labeled += entry.labeled;
        summary.dead_lettered += entry.dead_lettered;
        for (label, n) in &entry.label_counts {
            *summary.label_counts.entry(label.clone()).or_default() += n;
        }
    }
    summary.rejected = totals.rejected;
    summary.elapsed_seconds = started.elapsed().as_secs_f64();
    summary.rows_per_second = (totals.labeled + totals.dead_lettered) as f64 / summary.elapsed_seconds.max(1e-9);
    Ok(summary)
}

/// Reloads, updates and saves the manifest (the writer thread owns no copy between files).
fn manifest_complete(dir: &Path, job: &str, input: &ParquetInput, entry: manifest::CompletedFile) -> Result<()> {
    let mut manifest = Manifest::load(dir, job)?;
    manifest.complete(&input.path, entry);
    manifest.save(dir)
}

/// Reads every file still to do and feeds the engine.
async fn produce(
    job: &RelabelJob,
    inputs: &[ParquetInput],
    todo: &[usize],
    tx: &flume::Sender<TextChunk<Part>>,
    metrics: &Metrics,
) -> Result<()> {
    let ctx = source::scan_context();
    let closed = || Error::Stopped("the labeling engine");
    for &index in todo {
        let input = &inputs[index];
        let mut columns: Option<Vec<String>> = job.keep_columns.clone();
        if let Some(cols) = columns.as_mut() {
            for field in &job.text.fields {
                if input.columns.contains(field) && !cols.contains(field) {
                    cols.push(field.clone());
                }
            }
        }
        let mut stream = source::scan(&ctx, input, columns.as_deref(), job.filter.as_deref()).await?;
        let (mut position, mut rows_in) = (0u64, 0u64);
        while let Some(batch) = stream.next().await {
            let decode_started = Instant::now();
            let batch = batch.map_err(|e| Error::data(&input.path, format!("reading failed: {e}")))?;
            let first = position;
            position += batch.num_rows() as u64;
            let owned: Vec<usize> = (0..batch.num_rows()).filter(|&i| job.shard.owns(first + i as u64)).collect();
            rows_in += owned.len() as u64;
            metrics.records_received.with_label_values(&["parquet"]).inc_by(owned.len() as u64);
            let fields: Vec<Option<Vec<std::result::Result<Option<String>, RejectReason>>>> =
                job.text.fields.iter().map(|f| source::text_values(&batch, f, &input.path)).collect::<Result<_>>()?;
            let (mut texts, mut valid, mut rejected) = (Vec::new(), Vec::new(), Vec::new());
            for &i in &owned {
                let mut bad_utf8 = false;
                let composed = job.text.compose(|name| {
                    let column = job.text.fields.iter().position(|f| f == name).and_then(|c| fields[c].as_ref())?;
                    match &column[i] {
                        Ok(v) => v.as_deref(),
                        Err(_) => {
                            bad_utf8 = true;
                            None
                        }
                    }
                });
                match (bad_utf8, composed) {
                    (false, Ok(text)) => {
                        texts.push(text);
                        valid.push(i);
                    }
                    (true, _) => rejected.push((i, RejectReason::InvalidUtf8)),
                    (false, Err(reason)) => rejected.push((i, reason)),
                }
            }
            let dead_records = rows_as_json(&batch, &rejected.iter().map(|(i, _)| *i).collect::<Vec<_>>());
            let mut dead: Vec<DeadRow> = rejected
                .iter()
                .zip(dead_records)
                .map(|(&(i, reason), record)| {
                    metrics.records_rejected.with_label_values(&[reason.as_str()]).inc();
                    DeadRow { row: (first + i as u64) as i64, reason, record }
                })
                .collect();
            let take = UInt32Array::from(valid.iter().map(|&i| i as u32).collect::<Vec<_>>());
            let labeled_rows = arrow::compute::take_record_batch(&batch, &take)
                .map_err(|e| Error::table(input.path.display().to_string(), e))?;
            metrics.stage_seconds.with_label_values(&["decode"]).observe(decode_started.elapsed().as_secs_f64());
            let step = job.chunk_rows.max(1);
            let mut offset = 0;
            loop {
                let len = step.min(texts.len() - offset);
                let chunk_texts: Vec<String> = texts[offset..offset + len].to_vec();
                let rows: Vec<i64> = valid[offset..offset + len].iter().map(|&i| (first + i as u64) as i64).collect();
                let part = Part::Rows {
                    input: index,
                    batch: labeled_rows.slice(offset, len),
                    rows,
                    dead: std::mem::take(&mut dead),
                };
                tx.send_async(TextChunk { texts: chunk_texts, payload: part, flush: false })
                    .await
                    .map_err(|_| closed())?;
                offset += len;
                if offset >= texts.len() {
                    break;
                }
            }
        }
        tx.send_async(TextChunk { texts: Vec::new(), payload: Part::End { input: index, rows_in }, flush: true })
            .await
            .map_err(|_| closed())?;
    }
    Ok(())
}
