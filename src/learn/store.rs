//! The label store: records with a trusted category, appended as Parquet partitions under the
//! pipeline's state folder, deduplicated by product id (the latest label wins), with retention by
//! count and age.
//!
//! Appends are buffered and written as a new partition (`part-NNNNNN.parquet`, temp name then
//! rename) every `flush_records` labels or on [`LabelStore::flush`]; reading merges every partition.
//! When partitions pile up they are compacted into one (deduplicated, retention applied).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, AsArray, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::data::LabeledData;
use crate::error::{Error, IoContext, Result};
use crate::fsutil::durable_rename;

/// Where a trusted label came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelSource {
    /// The record's own category field, marked trusted in the pipeline config.
    Record,
    /// A correction from the feedback topic.
    Feedback,
}

impl LabelSource {
    fn as_str(self) -> &'static str {
        match self {
            Self::Record => "record",
            Self::Feedback => "feedback",
        }
    }
}

/// One trusted example.
#[derive(Debug, Clone, PartialEq)]
pub struct TrustedLabel {
    pub id: String,
    pub text: String,
    pub label: String,
    pub source: String,
    /// Milliseconds since the Unix epoch.
    pub received_at: i64,
}

/// Retention and batching of the store.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoreLimits {
    /// Keep at most this many products (the most recently labeled).
    pub max_records: usize,
    /// Drop labels older than this many days (0 = keep forever).
    pub max_age_days: u64,
    /// Labels buffered before a partition is written.
    pub flush_records: usize,
    /// Partitions before they are compacted into one.
    pub compact_after: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self { max_records: 1_000_000, max_age_days: 365, flush_records: 1000, compact_after: 32 }
    }
}

struct Inner {
    buffer: Vec<TrustedLabel>,
    next_part: u64,
    /// Labels appended since the store was opened or last counted by the trainer.
    new_labels: usize,
}

/// A label store in a folder.
pub struct LabelStore {
    dir: PathBuf,
    limits: StoreLimits,
    inner: Mutex<Inner>,
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
        Field::new("label", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("received_at", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
    ]))
}

fn part_number(path: &Path) -> Option<u64> {
    path.file_name()?.to_str()?.strip_prefix("part-")?.strip_suffix(".parquet")?.parse().ok()
}

impl LabelStore {
    /// Opens (creating) the store at `dir`.
    pub fn open(dir: &Path, limits: StoreLimits) -> Result<Arc<Self>> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::config("training.state_dir", format!("cannot create {}: {e}", dir.display())))?;
        let next_part = Self::partitions_in(dir)?.iter().filter_map(|p| part_number(p)).max().map_or(0, |n| n + 1);
        Ok(Arc::new(Self {
            dir: dir.to_path_buf(),
            limits,
            inner: Mutex::new(Inner { buffer: Vec::new(), next_part, new_labels: 0 }),
        }))
    }

    fn partitions_in(dir: &Path) -> Result<Vec<PathBuf>> {
        let mut parts: Vec<PathBuf> = std::fs::read_dir(dir)
            .at(dir)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| part_number(p).is_some())
            .collect();
        parts.sort();
        Ok(parts)
    }

    /// Adds a trusted label (buffered; written when the buffer is full).
    pub fn append(&self, id: &str, text: &str, label: &str, source: LabelSource) -> Result<()> {
        let full = {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            inner.buffer.push(TrustedLabel {
                id: id.to_string(),
                text: text.to_string(),
                label: label.to_string(),
                source: source.as_str().to_string(),
                received_at: chrono::Utc::now().timestamp_millis(),
            });
            inner.new_labels += 1;
            inner.buffer.len() >= self.limits.flush_records
        };
        if full { self.flush() } else { Ok(()) }
    }

    /// Labels appended since the last [`LabelStore::take_new_labels`].
    pub fn new_labels(&self) -> usize {
        self.inner.lock().map(|i| i.new_labels).unwrap_or(0)
    }

    /// Resets the new-label count (a training run starts from this snapshot).
    pub fn take_new_labels(&self) -> usize {
        self.inner.lock().map(|mut i| std::mem::take(&mut i.new_labels)).unwrap_or(0)
    }

    /// Writes buffered labels as a new partition; compacts when partitions pile up.
    pub fn flush(&self) -> Result<()> {
        let (rows, part) = {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            if inner.buffer.is_empty() {
                return Ok(());
            }
            let part = inner.next_part;
            inner.next_part += 1;
            (std::mem::take(&mut inner.buffer), part)
        };
        self.write_partition(&rows, part)?;
        if Self::partitions_in(&self.dir)?.len() > self.limits.compact_after {
            self.compact()?;
        }
        Ok(())
    }

    fn write_partition(&self, rows: &[TrustedLabel], part: u64) -> Result<PathBuf> {
        let path = self.dir.join(format!("part-{part:06}.parquet"));
        let tmp = self.dir.join(format!(".part-{part:06}.parquet.tmp"));
        let col = |f: fn(&TrustedLabel) -> &str| StringArray::from_iter_values(rows.iter().map(f));
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(col(|r| &r.id)),
                Arc::new(col(|r| &r.text)),
                Arc::new(col(|r| &r.label)),
                Arc::new(col(|r| &r.source)),
                Arc::new(
                    TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.received_at))
                        .with_timezone("UTC"),
                ),
            ],
        )
        .map_err(|e| Error::table("label store", e))?;
        let file = std::fs::File::create(&tmp).at(&tmp)?;
        let mut writer =
            ArrowWriter::try_new(file, schema(), None).map_err(|e| Error::table(tmp.display().to_string(), e))?;
        writer.write(&batch).map_err(|e| Error::table(tmp.display().to_string(), e))?;
        writer.close().map_err(|e| Error::table(tmp.display().to_string(), e))?;
        durable_rename(&tmp, &path)?;
        Ok(path)
    }

    /// Every stored label (unflushed ones included), one per product (the latest), retention applied.
    pub fn snapshot(&self) -> Result<Vec<TrustedLabel>> {
        let mut all: Vec<TrustedLabel> = Vec::new();
        for part in Self::partitions_in(&self.dir)? {
            let file = std::fs::File::open(&part).at(&part)?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .and_then(|b| b.build())
                .map_err(|e| Error::data(&part, format!("label store partition unreadable: {e}")))?;
            for batch in reader {
                let batch = batch.map_err(|e| Error::data(&part, e.to_string()))?;
                let s = |i: usize| batch.column(i).as_string::<i32>().clone();
                let (ids, texts, labels, sources) = (s(0), s(1), s(2), s(3));
                let at = batch.column(4).as_primitive::<arrow::datatypes::TimestampMillisecondType>().clone();
                for r in 0..batch.num_rows() {
                    if ids.is_null(r) {
                        continue;
                    }
                    all.push(TrustedLabel {
                        id: ids.value(r).to_string(),
                        text: texts.value(r).to_string(),
                        label: labels.value(r).to_string(),
                        source: sources.value(r).to_string(),
                        received_at: at.value(r),
                    });
                }
            }
        }
        all.extend(self.inner.lock().map(|i| i.buffer.clone()).unwrap_or_default());
        Ok(self.retain(all))
    }

    fn retain(&self, all: Vec<TrustedLabel>) -> Vec<TrustedLabel> {
        // Latest label per product id (ties: the later append wins).
        let mut latest: HashMap<String, TrustedLabel> = HashMap::new();
        for label in all {
            match latest.get(&label.id) {
                Some(existing) if existing.received_at > label.received_at => {}
                _ => {
                    latest.insert(label.id.clone(), label);
                }
            }
        }
        let mut rows: Vec<TrustedLabel> = latest.into_values().collect();
        if self.limits.max_age_days > 0 {
            let cutoff = chrono::Utc::now().timestamp_millis() - (self.limits.max_age_days as i64) * 86_400_000;
            rows.retain(|r| r.received_at >= cutoff);
        }
        rows.sort_by(|a, b| b.received_at.cmp(&a.received_at).then(a.id.cmp(&b.id)));
        rows.truncate(self.limits.max_records);
        rows.sort_by(|a, b| a.id.cmp(&b.id));
        rows
    }

    /// Rewrites every partition as one (deduplicated, retention applied).
    pub fn compact(&self) -> Result<()> {
        let old = Self::partitions_in(&self.dir)?;
        let part = {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let p = inner.next_part;
            inner.next_part += 1;
            p
        };
        let snapshot = {
            // Only flushed rows: the buffer stays in memory for the next flush.
            let buffered = std::mem::take(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()).buffer);
            let rows = self.snapshot();
            self.inner.lock().unwrap_or_else(|p| p.into_inner()).buffer = buffered;
            rows?
        };
        self.write_partition(&snapshot, part)?;
        for path in old {
            std::fs::remove_file(&path).at(&path)?;
        }
        Ok(())
    }

    /// The snapshot as training data (group = product id, so a product stays in one split).
    pub fn training_data(&self) -> Result<LabeledData> {
        let rows = self.snapshot()?;
        Ok(LabeledData {
            texts: rows.iter().map(|r| r.text.clone()).collect(),
            labels: rows.iter().map(|r| r.label.clone()).collect(),
            groups: Some(rows.iter().map(|r| r.id.clone()).collect()),
            rejected: 0,
            fixed_split: None,
        })
    }

    /// The store's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedups_by_id_latest_wins_and_survives_reopen_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let limits = StoreLimits { flush_records: 2, compact_after: 3, ..Default::default() };
        let store = LabelStore::open(dir.path(), limits).unwrap();
        store.append("a", "iphone 14", "Phones", LabelSource::Record).unwrap();
        store.append("b", "thinkpad", "Laptops", LabelSource::Record).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        store.append("a", "iphone 14", "Mobile Phones", LabelSource::Feedback).unwrap();
        assert_eq!(store.new_labels(), 3);
        let snap = store.snapshot().unwrap();
        assert_eq!(snap.len(), 2, "unflushed labels count too");
        assert_eq!(snap.iter().find(|r| r.id == "a").unwrap().label, "Mobile Phones");
        store.flush().unwrap();
        for i in 0..10 {
            store.append(&format!("x{i}"), "t", "L", LabelSource::Record).unwrap();
        }
        store.flush().unwrap();
        assert!(LabelStore::partitions_in(dir.path()).unwrap().len() <= 4, "compaction keeps partitions few");
        drop(store);
        let reopened = LabelStore::open(dir.path(), limits).unwrap();
        let data = reopened.training_data().unwrap();
        assert_eq!(data.len(), 12);
        let a = data.groups.as_ref().unwrap().iter().position(|g| g == "a").unwrap();
        assert_eq!(data.labels[a], "Mobile Phones");
    }

    #[test]
    fn retention_keeps_the_most_recent_products() {
        let dir = tempfile::tempdir().unwrap();
        let store = LabelStore::open(dir.path(), StoreLimits { max_records: 3, ..Default::default() }).unwrap();
        for i in 0..5 {
            store.append(&format!("p{i}"), "t", "L", LabelSource::Record).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let ids: Vec<String> = store.snapshot().unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, vec!["p2", "p3", "p4"]);
    }
}
