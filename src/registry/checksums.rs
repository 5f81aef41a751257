//! `SHA256SUMS` of a published version: every file's SHA-256, written when the version is
//! published (in `sha256sum`'s format, so `sha256sum -c SHA256SUMS` checks it by hand too) and
//! checked whenever the version is loaded — a truncated or bit-flipped model file, tokenizer,
//! card or label list is refused naming the file, never served. Versions published before the
//! file existed load unchecked.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};

/// The checksum file's name inside a version folder.
pub const FILE: &str = "SHA256SUMS";

/// The SHA-256 of a file, as lowercase hex.
fn digest(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).at(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).at(path)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// Every file under `dir` (recursively, sorted), relative to it, but the checksum file.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let here = dir.join(&rel);
        for entry in std::fs::read_dir(&here).at(&here)? {
            let entry = entry.at(&here)?;
            let rel = rel.join(entry.file_name());
            let kind = entry.file_type().at(entry.path())?;
            if kind.is_dir() {
                stack.push(rel);
            } else if kind.is_file() && rel != Path::new(FILE) {
                out.push(rel);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Writes `dir/SHA256SUMS` for every file in `dir` (before publishing, or after a command that
/// rewrote a published version's card).
pub fn seal(dir: &Path) -> Result<()> {
    let mut text = String::new();
    for rel in files_under(dir)? {
        text.push_str(&format!("{}  {}\n", digest(&dir.join(&rel))?, rel.display()));
    }
    let path = dir.join(FILE);
    let tmp = dir.join(format!(".{FILE}.tmp"));
    std::fs::write(&tmp, text).at(&tmp)?;
    std::fs::rename(&tmp, &path).at(&path)
}

/// Checks every file `dir/SHA256SUMS` lists (nothing when the version has none).
pub fn verify(dir: &Path) -> Result<()> {
    let path = dir.join(FILE);
    let text = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let text = String::from_utf8(text).map_err(|_| Error::model(&path, "not text: the checksum file is corrupt"))?;
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let Some((want, rel)) = line.split_once("  ").filter(|(h, r)| h.len() == 64 && !r.is_empty()) else {
            return Err(Error::model(
                &path,
                format!("line {}: not `<sha256>  <file>`: the checksum file is corrupt", n + 1),
            ));
        };
        let file = dir.join(rel);
        if !file.is_file() {
            return Err(Error::model(&file, format!("listed in {FILE} but missing")));
        }
        if digest(&file)? != want {
            return Err(Error::model(
                &file,
                format!(
                    "does not match its SHA-256 in {FILE}: the file is corrupt (truncated or changed after publishing); \
                     restore it or publish a new version"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_truncated_or_missing_file_is_named_and_an_intact_version_passes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.onnx"), vec![7u8; 10_000]).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/labels.json"), b"[\"a\"]").unwrap();
        verify(dir.path()).unwrap();
        seal(dir.path()).unwrap();
        verify(dir.path()).unwrap();
        let sums = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert_eq!(sums.lines().count(), 2, "{sums}");
        // One bit flipped.
        let mut bytes = std::fs::read(dir.path().join("model.onnx")).unwrap();
        bytes[5_000] ^= 0x10;
        std::fs::write(dir.path().join("model.onnx"), &bytes).unwrap();
        let err = verify(dir.path()).unwrap_err().to_string();
        assert!(err.contains("model.onnx") && err.contains("corrupt"), "{err}");
        bytes[5_000] ^= 0x10;
        std::fs::write(dir.path().join("model.onnx"), &bytes[..4_000]).unwrap();
        let err = verify(dir.path()).unwrap_err().to_string();
        assert!(err.contains("model.onnx"), "{err}");
        std::fs::write(dir.path().join("model.onnx"), &bytes).unwrap();
        verify(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join("sub/labels.json")).unwrap();
        let err = verify(dir.path()).unwrap_err().to_string();
        assert!(err.contains("labels.json") && err.contains("missing"), "{err}");
        std::fs::write(dir.path().join(FILE), "garbage\n").unwrap();
        assert!(verify(dir.path()).unwrap_err().to_string().contains("checksum file is corrupt"));
    }
}
