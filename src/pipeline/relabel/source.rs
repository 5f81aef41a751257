//! The Parquet source of a relabel job: input discovery, up-front checks, and a DataFusion scan per
//! file with the needed columns projected and the `--where` predicate pushed down.

use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext, ident};

use crate::common::RejectReason;
use crate::error::{Error, IoContext, Result};

/// One input file with what its footer says.
#[derive(Debug, Clone, PartialEq)]
pub struct ParquetInput {
    pub path: PathBuf,
    /// Rows in the file (from the footer).
    pub rows: u64,
    /// Size and modification time identify the file's content for the restart manifest.
    pub fingerprint: String,
    /// Column names in the file.
    pub columns: Vec<String>,
}

/// Expands files, folders (every `*.parquet` inside, recursively) and globs, sorted and deduplicated.
pub fn discover(specs: &[String]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for spec in specs {
        let path = Path::new(spec);
        if path.is_dir() {
            collect_dir(path, &mut out)?;
        } else if path.is_file() {
            out.push(path.to_path_buf());
        } else if spec.contains(['*', '?', '[']) {
            let matches = glob::glob(spec).map_err(|e| Error::config("--input", format!("bad glob `{spec}`: {e}")))?;
            let before = out.len();
            for m in matches.flatten() {
                if m.is_file() {
                    out.push(m);
                }
            }
            if out.len() == before {
                return Err(Error::data(spec, "the glob matches no file"));
            }
        } else {
            return Err(Error::data(spec, "no such file or folder"));
        }
    }
    out.sort();
    out.dedup();
    if out.is_empty() {
        return Err(Error::config("--input", "no input files found"));
    }
    Ok(out)
}

fn collect_dir(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).at(dir)? {
        let path = entry.at(dir)?.path();
        let hidden = path.file_name().is_some_and(|n| n.to_string_lossy().starts_with(['.', '_']));
        if hidden {
            continue;
        }
        if path.is_dir() {
            collect_dir(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    Ok(())
}

/// Reads the footer of `path`: fails clearly when it is not a readable Parquet file.
pub fn inspect(path: &Path) -> Result<ParquetInput> {
    let file = std::fs::File::open(path).at(path)?;
    let meta = file.metadata().at(path)?;
    let reader = parquet::file::reader::SerializedFileReader::new(file)
        .map_err(|e| Error::data(path, format!("not a readable Parquet file: {e}")))?;
    use parquet::file::reader::FileReader;
    let md = reader.metadata().file_metadata();
    let columns = md.schema_descr().root_schema().get_fields().iter().map(|f| f.name().to_string()).collect();
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok(ParquetInput {
        path: path.to_path_buf(),
        rows: md.num_rows().max(0) as u64,
        fingerprint: format!("{}:{mtime}", meta.len()),
        columns,
    })
}

/// A DataFusion context for scanning one file in order (one partition keeps row order stable).
pub fn scan_context() -> SessionContext {
    SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1).with_batch_size(4096))
}

/// Streams `input` with `columns` (None = all) where `filter` (SQL) holds.
pub async fn scan(
    ctx: &SessionContext,
    input: &ParquetInput,
    columns: Option<&[String]>,
    filter: Option<&str>,
) -> Result<SendableRecordBatchStream> {
    let path = &input.path;
    let location = path.to_str().ok_or_else(|| Error::data(path, "path is not valid UTF-8"))?;
    let ext = path.extension().and_then(|e| e.to_str()).map(|e| format!(".{e}")).unwrap_or_default();
    let mut frame = ctx
        .read_parquet(location, ParquetReadOptions::default().file_extension(&ext))
        .await
        .map_err(|e| Error::data(path, format!("cannot read: {e}")))?;
    if let Some(sql) = filter {
        let expr = frame
            .parse_sql_expr(sql)
            .map_err(|e| Error::config("--where", format!("`{sql}` on {}: {e}", path.display())))?;
        frame =
            frame.filter(expr).map_err(|e| Error::config("--where", format!("`{sql}` on {}: {e}", path.display())))?;
    }
    if let Some(columns) = columns {
        frame = frame
            .select(columns.iter().map(|c| ident(c.as_str())).collect::<Vec<_>>())
            .map_err(|e| Error::data(path, e.to_string()))?;
    }
    frame.execute_stream().await.map_err(|e| Error::data(path, format!("cannot scan: {e}")))
}

/// Text values of a column as `Ok(Some(text))`, `Ok(None)` for nulls, or `Err(reason)` per row.
/// Non-text column types are an error for the whole file.
pub fn text_values(
    batch: &RecordBatch,
    column: &str,
    file: &Path,
) -> Result<Option<Vec<Result<Option<String>, RejectReason>>>> {
    let Some(array) = batch.column_by_name(column) else { return Ok(None) };
    let n = array.len();
    let values = match array.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let utf8 = arrow::compute::cast(array, &DataType::Utf8)
                .map_err(|e| Error::data(file, format!("column `{column}`: {e}")))?;
            let s = utf8.as_string::<i32>();
            (0..n).map(|i| Ok(s.is_valid(i).then(|| s.value(i).to_string()))).collect()
        }
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
            let bin = arrow::compute::cast(array, &DataType::Binary)
                .map_err(|e| Error::data(file, format!("column `{column}`: {e}")))?;
            let b = bin.as_binary::<i32>();
            (0..n)
                .map(|i| {
                    if b.is_null(i) {
                        Ok(None)
                    } else {
                        std::str::from_utf8(b.value(i))
                            .map(|s| Some(s.to_string()))
                            .map_err(|_| RejectReason::InvalidUtf8)
                    }
                })
                .collect()
        }
        other => {
            return Err(Error::data(file, format!("column `{column}` has type {other}; a text column is needed")));
        }
    };
    Ok(Some(values))
}
