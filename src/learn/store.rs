//! The label store: records with a trusted category, appended as Parquet partitions under the
//! pipeline's state folder, deduplicated by product id (the latest label wins), with retention by
//! count and age.
//!
//! Durability: every append is written to a write-ahead segment (`wal-NNNNNN.jsonl`, one JSON
//! label per line) and kept in memory; [`LabelStore::sync`] flushes and fsyncs the segment (group
//! commit: the Kafka path calls it before committing offsets, so a label whose offset is committed
//! survives kill -9). Every `flush_records` labels, or on [`LabelStore::flush`], the buffer is
//! written as a new Parquet partition (`part-NNNNNN.parquet`, temp name, fsync, rename) and the
//! segments it covers are deleted; a failed partition write keeps the labels (buffer and segment)
//! for the next flush. Opening the store replays the segments left by a crash (a torn last line is
//! skipped). Reading merges every partition and the buffer. When partitions pile up they are
//! compacted into one (deduplicated, retention applied) from the partitions alone, so labels
//! appended meanwhile are untouched.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use std::fs::File;
use std::io::{BufRead, BufWriter, Write};

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
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
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
    /// The open write-ahead segment (labels of `buffer` not in an older one) and its number.
    wal: BufWriter<File>,
    wal_number: u64,
    /// Appended since the last sync.
    unsynced: bool,
    next_part: u64,
    /// Labels appended since the store was opened or last counted by the trainer.
    new_labels: usize,
}

/// A label store in a folder.
pub struct LabelStore {
    dir: PathBuf,
    limits: StoreLimits,
    inner: Mutex<Inner>,
    /// Held while the set of partitions changes (a flush moving the buffer into one, a
    /// compaction) and while a reader lists and reads them, so a reader never misses rows that are
    /// between the buffer and a partition, nor reads a partition a compaction is deleting.
    /// Taken before `inner`, never inside it.
    files: Mutex<()>,
    /// Product id → text, built on the first [`LabelStore::text_of`] and kept up to date by
    /// appends. Taken before `files`; appends take it after releasing `inner`.
    texts: Mutex<Option<HashMap<String, String>>>,
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

fn wal_number(path: &Path) -> Option<u64> {
    path.file_name()?.to_str()?.strip_prefix("wal-")?.strip_suffix(".jsonl")?.parse().ok()
}

/// Files of `dir` whose number `number` reads, sorted by it.
fn numbered(dir: &Path, number: fn(&Path) -> Option<u64>) -> Result<Vec<(u64, PathBuf)>> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .at(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| number(&e.path()).map(|n| (n, e.path())))
        .collect();
    found.sort();
    Ok(found)
}

/// The path of write-ahead segment `number`.
fn wal_file(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("wal-{number:06}.jsonl"))
}

/// Creates write-ahead segment `number` (the folder entry made durable at once).
fn create_wal(dir: &Path, number: u64) -> Result<BufWriter<File>> {
    let path = wal_file(dir, number);
    let file = File::options().create(true).append(true).open(&path).at(&path)?;
    crate::fsutil::fsync_dir(dir);
    Ok(BufWriter::new(file))
}

/// The labels of a write-ahead segment; a torn last line (a crash mid-write) is skipped.
fn replay_wal(path: &Path) -> Result<Vec<TrustedLabel>> {
    let file = File::open(path).at(path)?;
    let mut rows = Vec::new();
    // Lines as bytes: a corrupted line (even invalid UTF-8) is skipped, never the whole segment.
    for (n, line) in std::io::BufReader::new(file).split(b'\n').enumerate() {
        let line = line.at(path)?;
        if line.trim_ascii().is_empty() {
            continue;
        }
        match serde_json::from_slice::<TrustedLabel>(&line) {
            Ok(row) => rows.push(row),
            Err(e) => {
                tracing::warn!(file = %path.display(), line = n + 1, error = %e, "label store: unreadable write-ahead line skipped (torn write)")
            }
        }
    }
    Ok(rows)
}

impl LabelStore {
    /// Opens (creating) the store at `dir`.
    pub fn open(dir: &Path, limits: StoreLimits) -> Result<Arc<Self>> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::config("training.state_dir", format!("cannot create {}: {e}", dir.display())))?;
        let next_part = Self::partitions_in(dir)?.iter().filter_map(|p| part_number(p)).max().map_or(0, |n| n + 1);
        // Labels a crash left in write-ahead segments come back into the buffer; their segments
        // stay until a partition holds them.
        let mut buffer = Vec::new();
        let segments = numbered(dir, wal_number)?;
        for (_, path) in &segments {
            buffer.extend(replay_wal(path)?);
        }
        if !buffer.is_empty() {
            tracing::info!(
                labels = buffer.len(),
                segments = segments.len(),
                "label store: replayed the write-ahead log"
            );
        }
        let wal_number = segments.last().map_or(0, |(n, _)| n + 1);
        let wal = create_wal(dir, wal_number)?;
        let new_labels = buffer.len();
        Ok(Arc::new(Self {
            dir: dir.to_path_buf(),
            limits,
            inner: Mutex::new(Inner { buffer, wal, wal_number, unsynced: false, next_part, new_labels }),
            files: Mutex::new(()),
            texts: Mutex::new(None),
        }))
    }

    fn partitions_in(dir: &Path) -> Result<Vec<PathBuf>> {
        Ok(numbered(dir, part_number)?.into_iter().map(|(_, path)| path).collect())
    }

    /// Adds a trusted label: written to the write-ahead segment (durable at the next
    /// [`LabelStore::sync`]) and buffered; the buffer becomes a partition when full.
    pub fn append(&self, id: &str, text: &str, label: &str, source: LabelSource) -> Result<()> {
        let full = {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let row = TrustedLabel {
                id: id.to_string(),
                text: text.to_string(),
                label: label.to_string(),
                source: source.as_str().to_string(),
                received_at: chrono::Utc::now().timestamp_millis(),
            };
            let mut line = serde_json::to_vec(&row).map_err(|e| Error::data(&self.dir, e.to_string()))?;
            line.push(b'\n');
            let path = wal_file(&self.dir, inner.wal_number);
            inner.wal.write_all(&line).at(&path)?;
            inner.unsynced = true;
            inner.buffer.push(row);
            inner.new_labels += 1;
            inner.buffer.len() >= self.limits.flush_records
        };
        if let Some(texts) = self.texts.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            texts.insert(id.to_string(), text.to_string());
        }
        if full { self.flush() } else { Ok(()) }
    }

    /// Makes every appended label durable: the write-ahead segment flushed and fsynced (one
    /// fsync however many labels came since the last call).
    pub fn sync(&self) -> Result<()> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if !inner.unsynced {
            return Ok(());
        }
        let path = wal_file(&self.dir, inner.wal_number);
        inner.wal.flush().at(&path)?;
        inner.wal.get_ref().sync_data().at(&path)?;
        inner.unsynced = false;
        Ok(())
    }

    /// Labels appended since the last [`LabelStore::take_new_labels`].
    pub fn new_labels(&self) -> usize {
        self.inner.lock().map(|i| i.new_labels).unwrap_or(0)
    }

    /// Resets the new-label count (a training run starts from this snapshot).
    pub fn take_new_labels(&self) -> usize {
        self.inner.lock().map(|mut i| std::mem::take(&mut i.new_labels)).unwrap_or(0)
    }

    /// Writes buffered labels as a new partition and deletes the write-ahead segments it covers;
    /// compacts when partitions pile up. If the partition cannot be written the labels stay
    /// buffered (and in their segments) for the next flush.
    pub fn flush(&self) -> Result<()> {
        self.flush_buffer()?;
        if Self::partitions_in(&self.dir)?.len() > self.limits.compact_after {
            self.compact()?;
        }
        Ok(())
    }

    fn flush_buffer(&self) -> Result<()> {
        let _files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        let (rows, part, covered) = {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            if inner.buffer.is_empty() {
                return Ok(());
            }
            // Later appends go to a new segment; this one is complete once the partition is.
            let covered = inner.wal_number;
            let path = wal_file(&self.dir, covered);
            inner.wal.flush().at(&path)?;
            inner.wal = create_wal(&self.dir, covered + 1)?;
            inner.wal_number = covered + 1;
            inner.unsynced = false;
            let part = inner.next_part;
            inner.next_part += 1;
            (std::mem::take(&mut inner.buffer), part, covered)
        };
        if let Err(e) = self.write_partition(&rows, part) {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let newer = std::mem::replace(&mut inner.buffer, rows);
            inner.buffer.extend(newer);
            return Err(e);
        }
        for (number, path) in numbered(&self.dir, wal_number)? {
            if number <= covered {
                std::fs::remove_file(&path).at(&path)?;
            }
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
        let _files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        let mut all = Self::read_partitions(&Self::partitions_in(&self.dir)?)?;
        all.extend(self.inner.lock().map(|i| i.buffer.clone()).unwrap_or_default());
        Ok(self.retain(all))
    }

    /// The rows of these partitions, in order.
    fn read_partitions(parts: &[PathBuf]) -> Result<Vec<TrustedLabel>> {
        let mut all: Vec<TrustedLabel> = Vec::new();
        for part in parts {
            let part = part.as_path();
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
        Ok(all)
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

    /// Rewrites the partitions as one (deduplicated, retention applied). Only partitions are read
    /// and only those are removed: labels appended meanwhile stay in the buffer and its segment,
    /// and a crash leaves either the old partitions or the new one plus some old ones (duplicates
    /// the next read deduplicates).
    pub fn compact(&self) -> Result<()> {
        let _files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        let old = Self::partitions_in(&self.dir)?;
        let part = {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let p = inner.next_part;
            inner.next_part += 1;
            p
        };
        let snapshot = self.retain(Self::read_partitions(&old)?);
        self.write_partition(&snapshot, part)?;
        for path in old {
            std::fs::remove_file(&path).at(&path)?;
        }
        Ok(())
    }

    /// The text stored with product `id` (any label it ever had, retention aside), for corrections
    /// that name only the product. The first call reads the store into an index.
    pub fn text_of(&self, id: &str) -> Result<Option<String>> {
        let mut texts = self.texts.lock().unwrap_or_else(|p| p.into_inner());
        if texts.is_none() {
            let _files = self.files.lock().unwrap_or_else(|p| p.into_inner());
            let mut all = Self::read_partitions(&Self::partitions_in(&self.dir)?)?;
            all.extend(self.inner.lock().map(|i| i.buffer.clone()).unwrap_or_default());
            all.sort_by_key(|r| r.received_at);
            *texts = Some(all.into_iter().map(|r| (r.id, r.text)).collect());
        }
        Ok(texts.as_ref().and_then(|t| t.get(id).cloned()))
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
            head: Default::default(),
            paths: None,
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
    fn synced_labels_survive_a_crash_and_a_torn_write_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let limits = StoreLimits { flush_records: 1000, ..Default::default() };
        let store = LabelStore::open(dir.path(), limits).unwrap();
        for i in 0..5 {
            store.append(&format!("p{i}"), "iphone 14", "Phones", LabelSource::Record).unwrap();
        }
        store.sync().unwrap();
        // A crash: no flush, no drop handler; the process is gone with its buffer.
        std::mem::forget(store);
        // ... and its last write was torn half-way.
        let segment = numbered(dir.path(), wal_number).unwrap().last().unwrap().1.clone();
        let mut f = File::options().append(true).open(&segment).unwrap();
        f.write_all(br#"{"id":"p9","text":"half"#).unwrap();
        drop(f);
        assert!(LabelStore::partitions_in(dir.path()).unwrap().is_empty(), "nothing was flushed to Parquet");
        let reopened = LabelStore::open(dir.path(), limits).unwrap();
        let ids: Vec<String> = reopened.snapshot().unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["p0", "p1", "p2", "p3", "p4"]);
        // A flush moves them into a partition and retires the segments.
        reopened.flush().unwrap();
        assert_eq!(LabelStore::partitions_in(dir.path()).unwrap().len(), 1);
        assert_eq!(numbered(dir.path(), wal_number).unwrap().len(), 1, "only the new, empty segment is left");
        drop(reopened);
        assert_eq!(LabelStore::open(dir.path(), limits).unwrap().snapshot().unwrap().len(), 5);
    }

    #[test]
    fn a_failed_partition_write_keeps_the_labels_for_the_next_flush() {
        let dir = tempfile::tempdir().unwrap();
        let limits = StoreLimits { flush_records: 1000, ..Default::default() };
        let store = LabelStore::open(dir.path(), limits).unwrap();
        store.append("a", "thinkpad", "Laptops", LabelSource::Record).unwrap();
        // The partition's temporary file cannot be created: a folder is in its way.
        let blocker = dir.path().join(".part-000000.parquet.tmp");
        std::fs::create_dir(&blocker).unwrap();
        assert!(store.flush().is_err());
        store.append("b", "iphone", "Phones", LabelSource::Record).unwrap();
        assert_eq!(store.snapshot().unwrap().len(), 2, "the failed flush lost nothing");
        std::fs::remove_dir(&blocker).unwrap();
        store.flush().unwrap();
        store.sync().unwrap();
        std::mem::forget(store);
        let reopened = LabelStore::open(dir.path(), limits).unwrap();
        let ids: Vec<String> = reopened.snapshot().unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["a", "b"]);
    }

    #[test]
    fn compaction_under_concurrent_appends_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let limits = StoreLimits { flush_records: 7, compact_after: 2, ..Default::default() };
        let store = LabelStore::open(dir.path(), limits).unwrap();
        let writers: Vec<_> = (0..3)
            .map(|w| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..400 {
                        store.append(&format!("w{w}-{i}"), "text", "L", LabelSource::Record).unwrap();
                    }
                })
            })
            .collect();
        for _ in 0..20 {
            store.compact().unwrap();
        }
        writers.into_iter().for_each(|w| w.join().unwrap());
        store.compact().unwrap();
        assert_eq!(store.snapshot().unwrap().len(), 1200);
        store.flush().unwrap();
        drop(store);
        assert_eq!(LabelStore::open(dir.path(), limits).unwrap().snapshot().unwrap().len(), 1200);
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
