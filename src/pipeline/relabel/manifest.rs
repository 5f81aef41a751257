//! The restart manifest of a relabel output folder: which input files are completely and durably
//! written, and with which settings, so an interrupted job continues where it stopped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::fsutil::durable_rename;

/// File name of the manifest inside the output folder.
pub const MANIFEST: &str = "_prodcat_manifest.json";

/// What was written for one completed input file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletedFile {
    pub fingerprint: String,
    pub rows_in: u64,
    pub labeled: u64,
    pub dead_lettered: u64,
    pub outputs: Vec<String>,
    pub dead_letters: Option<String>,
    pub model: String,
    pub label_counts: BTreeMap<String, u64>,
}

/// The manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Manifest {
    /// Settings that change what is written; a restart must use the same.
    pub job: String,
    pub completed: BTreeMap<String, CompletedFile>,
}

impl Manifest {
    /// Reads the manifest of `dir`, or an empty one for `job` when there is none.
    pub fn load(dir: &Path, job: &str) -> Result<Self> {
        let path = dir.join(MANIFEST);
        if !path.exists() {
            return Ok(Self { job: job.to_string(), completed: BTreeMap::new() });
        }
        let text = std::fs::read_to_string(&path).at(&path)?;
        let manifest: Manifest =
            serde_json::from_str(&text).map_err(|source| Error::Json { path: path.clone(), source })?;
        if manifest.job != job {
            return Err(Error::config(
                "--output",
                format!(
                    "{} holds a relabel made with other settings ({}); now: {job}. Use a new output folder",
                    dir.display(),
                    manifest.job
                ),
            ));
        }
        Ok(manifest)
    }

    /// Atomically replaces the manifest in `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(MANIFEST);
        let tmp = dir.join(format!(".{MANIFEST}.tmp"));
        let text = serde_json::to_string_pretty(self).map_err(|source| Error::Json { path: path.clone(), source })?;
        std::fs::write(&tmp, text).at(&tmp)?;
        durable_rename(&tmp, &path)
    }

    /// The completed entry for `file` if its content is unchanged.
    pub fn done(&self, file: &Path, fingerprint: &str) -> Option<&CompletedFile> {
        self.completed.get(&key(file)).filter(|c| c.fingerprint == fingerprint)
    }

    /// Records `file` as complete.
    pub fn complete(&mut self, file: &Path, entry: CompletedFile) {
        self.completed.insert(key(file), entry);
    }
}

/// Manifest key of an input file: its absolute path.
pub fn key(file: &Path) -> String {
    std::fs::canonicalize(file).unwrap_or_else(|_| PathBuf::from(file)).display().to_string()
}

/// Output file prefix of an input file: readable stem plus a short hash of its path.
pub fn output_prefix(file: &Path) -> String {
    use sha2::{Digest, Sha256};
    let stem: String = file
        .file_stem()
        .map(|s| {
            s.to_string_lossy()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
                .collect()
        })
        .unwrap_or_default();
    let hash = format!("{:x}", Sha256::digest(key(file).as_bytes()));
    format!("{stem}-{}", &hash[..8])
}
