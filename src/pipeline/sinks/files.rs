//! Rotating Arrow IPC / Parquet output files.
//!
//! Each file is written under a hidden temporary name (`.NAME.tmp`), fsynced, and renamed to its
//! final name when complete, so a reader never sees half a file; a writer dropped before
//! [`RotatingFileWriter::finish`] removes its temporary file. A new file starts when the current
//! one reaches the row or byte limit.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::fsutil::durable_rename;

/// Output file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// Arrow IPC file format (`.arrow`).
    Arrow,
    /// Parquet with zstd compression (`.parquet`).
    #[default]
    Parquet,
}

impl OutputFormat {
    /// File extension without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Arrow => "arrow",
            Self::Parquet => "parquet",
        }
    }
}

impl std::str::FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "arrow" | "ipc" => Ok(Self::Arrow),
            "parquet" => Ok(Self::Parquet),
            _ => Err(format!("unknown output format `{s}`; expected `arrow` or `parquet`")),
        }
    }
}

/// When to start a new file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rotation {
    pub max_rows: usize,
    pub max_bytes: u64,
}

impl Default for Rotation {
    fn default() -> Self {
        Self { max_rows: 1_000_000, max_bytes: 256 * 1024 * 1024 }
    }
}

enum FormatWriter {
    Arrow(arrow::ipc::writer::FileWriter<BufWriter<File>>),
    Parquet(ArrowWriter<File>),
}

struct OpenFile {
    tmp: PathBuf,
    path: PathBuf,
    writer: FormatWriter,
    rows: usize,
    bytes: u64,
}

/// Writes record batches to `DIR/PREFIX-NNNNN.EXT` files, rotating by size.
pub struct RotatingFileWriter {
    dir: PathBuf,
    prefix: String,
    format: OutputFormat,
    rotation: Rotation,
    seq: usize,
    current: Option<OpenFile>,
    finished: Vec<PathBuf>,
}

impl RotatingFileWriter {
    /// A writer that creates files named `PREFIX-00000.EXT` in `dir`.
    pub fn new(dir: &Path, prefix: &str, format: OutputFormat, rotation: Rotation) -> Self {
        Self {
            dir: dir.to_path_buf(),
            prefix: prefix.to_string(),
            format,
            rotation,
            seq: 0,
            current: None,
            finished: Vec::new(),
        }
    }

    fn open(&mut self, schema: &SchemaRef) -> Result<OpenFile> {
        let name = format!("{}-{:05}.{}", self.prefix, self.seq, self.format.extension());
        self.seq += 1;
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let file = File::create(&tmp).at(&tmp)?;
        let writer = match self.format {
            OutputFormat::Arrow => FormatWriter::Arrow(
                arrow::ipc::writer::FileWriter::try_new(BufWriter::new(file), schema)
                    .map_err(|e| Error::table(tmp.display().to_string(), e))?,
            ),
            OutputFormat::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(
                        ZstdLevel::try_new(1).map_err(|e| Error::table("zstd level", e))?,
                    ))
                    // Row groups of 64k rows: the writer buffers one group, so memory stays
                    // bounded however large the output file grows.
                    .set_max_row_group_row_count(Some(65_536))
                    .build();
                FormatWriter::Parquet(
                    ArrowWriter::try_new(file, schema.clone(), Some(props))
                        .map_err(|e| Error::table(tmp.display().to_string(), e))?,
                )
            }
        };
        Ok(OpenFile { tmp, path, writer, rows: 0, bytes: 0 })
    }

    /// Appends a batch, starting a new file first if the current one is full; returns the file
    /// that was closed to make room, if any.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<Option<PathBuf>> {
        if batch.num_rows() == 0 {
            return Ok(None);
        }
        let mut closed = None;
        if self.current.as_ref().is_some_and(|f| f.rows >= self.rotation.max_rows || f.bytes >= self.rotation.max_bytes)
        {
            self.close_current()?;
            closed = self.finished.last().cloned();
        }
        if self.current.is_none() {
            let file = self.open(&batch.schema())?;
            self.current = Some(file);
        }
        let Some(file) = self.current.as_mut() else { return Ok(closed) };
        let context = || file.tmp.display().to_string();
        match &mut file.writer {
            FormatWriter::Arrow(w) => {
                w.write(batch).map_err(|e| Error::table(context(), e))?;
                file.bytes += batch.get_array_memory_size() as u64;
            }
            FormatWriter::Parquet(w) => {
                w.write(batch).map_err(|e| Error::table(context(), e))?;
                file.bytes = (w.bytes_written() + w.in_progress_size()) as u64;
            }
        }
        file.rows += batch.num_rows();
        Ok(closed)
    }

    /// Closes the current file now (if one is open); returns its final path.
    pub fn rotate(&mut self) -> Result<Option<PathBuf>> {
        if self.current.is_none() {
            return Ok(None);
        }
        self.close_current()?;
        Ok(self.finished.last().cloned())
    }

    fn close_current(&mut self) -> Result<()> {
        let Some(file) = self.current.take() else { return Ok(()) };
        let context = file.tmp.display().to_string();
        match file.writer {
            FormatWriter::Arrow(mut w) => {
                w.finish().map_err(|e| Error::table(&context, e))?;
                drop(w.into_inner().map_err(|e| Error::table(&context, e))?);
            }
            FormatWriter::Parquet(w) => {
                w.close().map_err(|e| Error::table(&context, e))?;
            }
        }
        durable_rename(&file.tmp, &file.path)?;
        self.finished.push(file.path);
        Ok(())
    }

    /// Completes the current file; returns every file this writer finished.
    pub fn finish(mut self) -> Result<Vec<PathBuf>> {
        self.close_current()?;
        Ok(std::mem::take(&mut self.finished))
    }
}

impl Drop for RotatingFileWriter {
    fn drop(&mut self) {
        if let Some(file) = self.current.take() {
            drop(file.writer);
            let _ = std::fs::remove_file(&file.tmp);
        }
    }
}

/// A JSON-lines file written under a temporary name and renamed on completion.
pub struct JsonLinesFile {
    tmp: PathBuf,
    path: PathBuf,
    writer: Option<BufWriter<File>>,
    pub lines: usize,
}

impl JsonLinesFile {
    /// Starts `path` (written as `.NAME.tmp` until [`JsonLinesFile::finish`]).
    pub fn create(path: &Path) -> Result<Self> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.tmp"));
        let file = File::create(&tmp).at(&tmp)?;
        Ok(Self { tmp, path: path.to_path_buf(), writer: Some(BufWriter::new(file)), lines: 0 })
    }

    /// Appends one JSON value as a line.
    pub fn append(&mut self, value: &serde_json::Value) -> Result<()> {
        use std::io::Write;
        let Some(w) = self.writer.as_mut() else {
            return Err(Error::Internal("dead-letter file already finished".into()));
        };
        serde_json::to_writer(&mut *w, value).map_err(|e| Error::io(&self.tmp, e.into()))?;
        w.write_all(b"\n").at(&self.tmp)?;
        self.lines += 1;
        Ok(())
    }

    /// Completes the file (nothing is written when no line was appended).
    pub fn finish(mut self) -> Result<Option<PathBuf>> {
        use std::io::Write;
        let Some(mut w) = self.writer.take() else { return Ok(None) };
        w.flush().at(&self.tmp)?;
        drop(w);
        if self.lines == 0 {
            std::fs::remove_file(&self.tmp).at(&self.tmp)?;
            return Ok(None);
        }
        durable_rename(&self.tmp, &self.path)?;
        Ok(Some(self.path.clone()))
    }
}

impl Drop for JsonLinesFile {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
/// Rotating Arrow IPC / Parquet files of a streaming pipeline (`[files]` of a pipeline file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileSinkSettings {
    pub enabled: bool,
    pub path: PathBuf,
    pub format: OutputFormat,
    pub rotation: Rotation,
    /// A file is closed (and its records' offsets become committable) after this many ms.
    pub max_age_ms: u64,
}

impl Default for FileSinkSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            path: PathBuf::from("out/stream"),
            format: OutputFormat::Arrow,
            rotation: Rotation { max_rows: 100_000, max_bytes: 64 * 1024 * 1024 },
            max_age_ms: 5_000,
        }
    }
}
