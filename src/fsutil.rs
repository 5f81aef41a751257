//! File-system helpers on the ground floor: durable renames and atomic writes, used by the
//! registry, the label store, the relabel manifest and the file sinks alike.
//!
//! A rename is durable when the renamed file's contents were fsynced before the rename and the
//! parent directory was fsynced after it; then the new name and its bytes survive a crash.

use std::fs::File;
use std::io::Write as _;
use std::path::Path;

use crate::error::{IoContext, Result};

/// Flushes a file's contents to disk.
pub fn fsync_file(path: &Path) -> Result<()> {
    File::open(path).and_then(|f| f.sync_all()).at(path)
}

/// Makes the entries of a directory (new, renamed or removed names) durable; best effort on
/// file systems that cannot fsync a directory.
pub fn fsync_dir(dir: &Path) {
    let _ = File::open(dir).and_then(|d| d.sync_all());
}

/// Renames `from` to `to` and makes the rename durable.
pub fn durable_rename(from: &Path, to: &Path) -> Result<()> {
    if from.is_file() {
        fsync_file(from)?;
    }
    std::fs::rename(from, to).at(to)?;
    if let Some(dir) = to.parent() {
        fsync_dir(dir);
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file beside it, fsynced and renamed over, so a
/// reader sees the old contents or the new ones, never half.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(crate::Error::io(&tmp, e));
    }
    durable_rename(&tmp, path)
}

/// Fsyncs every file below `dir` and every directory on the way (a staged registry version
/// before it is renamed into place).
pub fn fsync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).at(dir)? {
        let path = entry.at(dir)?.path();
        if path.is_dir() {
            fsync_tree(&path)?;
        } else {
            fsync_file(&path)?;
        }
    }
    fsync_dir(dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("card.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(write_atomic(&tmp.path().join("missing/x"), b"x").is_err());
    }
}
