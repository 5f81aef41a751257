//! The model registry on disk: `<registry>/<name>/<version>/{model.onnx, tokenizer.json,
//! labels.json, card.json}` plus a `current` symlink per model name, replaced atomically.
//!
//! A version is written into a hidden staging folder and renamed into place only when complete,
//! so a reader never sees half a model. Version numbers are reserved with an exclusive
//! `create_dir`, so two publishers (the pipeline's trainer and a `prodcat train`) never collide.

pub mod card;
pub mod checksums;
mod held_out;
pub mod replay;

use std::path::{Path, PathBuf};

pub use card::{ModelCard, ModelKind};
pub use held_out::held_out;

use crate::error::{Error, IoContext, Result};

/// File names inside a version folder.
pub mod files {
    pub const MODEL: &str = crate::common::names::MODEL_FILE;
    pub const TOKENIZER: &str = "tokenizer.json";
    pub const LABELS: &str = "labels.json";
    pub const CARD: &str = "card.json";
    /// The weights of a graph past 2 GiB (ONNX external data), when there are any.
    pub const MODEL_DATA: &str = crate::common::names::EXTERNAL_DATA_FILE;
    /// A copy of the taxonomy file a model's labels were checked against, when there was one.
    pub const TAXONOMY: &str = "taxonomy.txt";
    /// Name of the pointer to the serving version.
    pub const CURRENT: &str = "current";
}

/// A registry rooted at a folder.
#[derive(Debug, Clone)]
pub struct ModelRegistry {
    root: PathBuf,
}

/// A version being written; [`ModelRegistry::publish`] moves it into place.
#[derive(Debug)]
pub struct StagedVersion {
    pub dir: PathBuf,
    name: String,
}

impl Drop for StagedVersion {
    fn drop(&mut self) {
        // A staged version that was never published (e.g. parity failed) leaves nothing behind.
        if self.dir.exists() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn parse_version(name: &str) -> Option<u64> {
    name.strip_prefix('v')?.parse().ok()
}

impl ModelRegistry {
    /// Opens (without creating) a registry at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The registry's root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder holding every version of `name`.
    pub fn model_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Published versions of `name`, ascending.
    pub fn versions(&self, name: &str) -> Result<Vec<u64>> {
        let dir = self.model_dir(name);
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut out: Vec<u64> = std::fs::read_dir(&dir)
            .at(&dir)?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join(files::CARD).is_file())
            .filter_map(|e| parse_version(&e.file_name().to_string_lossy()))
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    /// Starts a new version of `name` in a hidden staging folder.
    pub fn stage(&self, name: &str) -> Result<StagedVersion> {
        validate_name(name)?;
        let parent = self.model_dir(name);
        std::fs::create_dir_all(&parent).at(&parent)?;
        let nonce =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let dir = parent.join(format!(".staging-{}-{nonce}", std::process::id()));
        std::fs::create_dir(&dir).at(&dir)?;
        Ok(StagedVersion { dir, name: name.to_string() })
    }

    /// Reserves the next version number of `name` (an empty folder, created exclusively).
    pub fn reserve_version(&self, staged: &StagedVersion) -> Result<String> {
        let parent = self.model_dir(&staged.name);
        loop {
            let next = std::fs::read_dir(&parent)
                .at(&parent)?
                .filter_map(|e| e.ok())
                .filter_map(|e| parse_version(&e.file_name().to_string_lossy()))
                .max()
                .unwrap_or(0)
                + 1;
            let version = format!("v{next}");
            match std::fs::create_dir(parent.join(&version)) {
                Ok(()) => return Ok(version),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(parent.join(&version), e)),
            }
        }
    }

    /// Moves a staged version into its reserved folder and, if asked, points `current` at it.
    /// The staged card names the model's kind, and every file that kind needs must be there;
    /// files and folders are fsynced before the rename, so a published version survives a crash.
    pub fn publish(&self, staged: StagedVersion, version: &str, make_current: bool) -> Result<PathBuf> {
        let parent = self.model_dir(&staged.name);
        let target = parent.join(version);
        let card = ModelCard::read(&staged.dir.join(files::CARD))?;
        for required in card.model.required_files() {
            if !staged.dir.join(required).is_file() {
                return Err(Error::model(&staged.dir, format!("{required} was not written")));
            }
        }
        checksums::seal(&staged.dir)?;
        crate::fsutil::fsync_tree(&staged.dir)?;
        // Replaces the empty reserved folder atomically.
        crate::fsutil::durable_rename(&staged.dir, &target)?;
        if make_current {
            self.set_current(&staged.name, version)?;
        }
        Ok(target)
    }

    /// Points `<name>/current` at `version` (atomic symlink replace).
    pub fn set_current(&self, name: &str, version: &str) -> Result<()> {
        let parent = self.model_dir(name);
        if !parent.join(version).join(files::CARD).is_file() {
            return Err(Error::model(parent.join(version), "no such published version"));
        }
        let tmp = parent.join(format!(".current-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(version, &tmp).at(&tmp)?;
        crate::fsutil::durable_rename(&tmp, &parent.join(files::CURRENT))
    }

    /// The version `current` points at, if any.
    pub fn current(&self, name: &str) -> Result<Option<String>> {
        let link = self.model_dir(name).join(files::CURRENT);
        match std::fs::read_link(&link) {
            Ok(target) => Ok(Some(target.to_string_lossy().into_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(link, e)),
        }
    }
}

fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::config("--name", format!("`{name}` is not a valid model name (letters, digits, - _ .)")))
    }
}

/// Resolves what a user passed as a model: a version folder (has `model.onnx`), a model folder
/// (has `current`), or a registry root holding exactly one model.
pub fn resolve_model_dir(path: &Path) -> Result<PathBuf> {
    if !path.exists() {
        return Err(Error::model(path, "no such folder"));
    }
    if path.join(files::CARD).is_file() || path.join(files::MODEL).is_file() {
        return Ok(path.to_path_buf());
    }
    let current = path.join(files::CURRENT);
    if current.exists() {
        return resolve_model_dir(&current);
    }
    let models: Vec<PathBuf> = std::fs::read_dir(path)
        .at(path)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join(files::CURRENT).exists())
        .collect();
    match models.as_slice() {
        [one] => resolve_model_dir(one),
        [] => Err(Error::model(
            path,
            "not a model folder: expected model.onnx and card.json, a `current` pointer, or a registry with one model",
        )),
        many => Err(Error::model(
            path,
            format!(
                "registry holds several models ({}); name one of them",
                many.iter()
                    .filter_map(|p| p.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// A published model version, resolved once at the edge (CLI or configuration) and passed down:
/// its folder and its card. Nothing below re-resolves the path or re-reads the card.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelVersion {
    /// The version folder (`REG/NAME/vN`; a `current` pointer is followed to the version).
    pub dir: PathBuf,
    pub card: ModelCard,
    /// The model folder whose `current` pointer the given path followed (None when a version
    /// was named directly): the folder a hot-swapping pipeline watches.
    pub follows: Option<PathBuf>,
}

/// The taxonomy file of the model whose card is `card` in the version folder `dir`: the copy in the
/// folder, else the path the card records (versions staged before the copy, or not yet staged).
pub fn taxonomy_file(dir: &Path, card: &ModelCard) -> Option<PathBuf> {
    let recorded = card.taxonomy.as_ref()?.file.as_ref()?;
    let copy = dir.join(files::TAXONOMY);
    Some(if copy.is_file() { copy } else { PathBuf::from(recorded) })
}

/// Copies the taxonomy file of the model `card` describes (as [`taxonomy_file`] finds it in
/// `from`) into the version folder `to`, so that the version reads its labels wherever it is moved.
pub fn copy_taxonomy(from: &Path, card: &ModelCard, to: &Path) -> Result<()> {
    let Some(file) = taxonomy_file(from, card) else { return Ok(()) };
    let copy = to.join(files::TAXONOMY);
    if file != copy {
        std::fs::copy(&file, &copy).at(&file)?;
    }
    Ok(())
}

impl ModelVersion {
    /// The taxonomy file the model's labels were checked against ([`taxonomy_file`]).
    pub fn taxonomy_file(&self) -> Option<PathBuf> {
        taxonomy_file(&self.dir, &self.card)
    }

    /// Resolves what a user passed (a version folder, a model folder with `current`, or a
    /// registry with one model) and reads its card.
    pub fn open(path: &Path) -> Result<Self> {
        let resolved = resolve_model_dir(path)?;
        let through_current = resolved.file_name().is_some_and(|n| n == files::CURRENT);
        let (dir, follows) = if through_current {
            let model_dir = resolved.parent().map(Path::to_path_buf).unwrap_or_default();
            let target = std::fs::read_link(&resolved).at(&resolved)?;
            (model_dir.join(target), Some(model_dir))
        } else {
            (resolved, None)
        };
        Self::at(&dir).map(|v| Self { follows, ..v })
    }

    /// The version in the folder `dir` itself (no resolution).
    pub fn at(dir: &Path) -> Result<Self> {
        let card_path = dir.join(files::CARD);
        if !card_path.is_file() {
            return Err(Error::model(dir, format!("{} is missing", files::CARD)));
        }
        Ok(Self { dir: dir.to_path_buf(), card: ModelCard::read(&card_path)?, follows: None })
    }

    /// Checks that every file the card's kind needs is present, and that every file matches
    /// the checksum it was published with (`SHA256SUMS`).
    pub fn check_files(&self) -> Result<()> {
        for required in self.card.model.required_files() {
            if !self.dir.join(required).is_file() {
                return Err(Error::model(&self.dir, format!("{required} is missing")));
            }
        }
        checksums::verify(&self.dir)
    }

    /// `labels.json`, checked against the card's label count.
    pub fn labels(&self) -> Result<Vec<String>> {
        let labels = read_labels(&self.dir.join(files::LABELS))?;
        if labels.len() != self.card.num_labels {
            return Err(Error::model(
                &self.dir,
                format!("labels.json has {} labels but card.json says {}", labels.len(), self.card.num_labels),
            ));
        }
        if let Some(taxonomy) = &self.card.taxonomy {
            taxonomy.check(labels.len()).map_err(|e| Error::model(&self.dir, format!("card.json: {e}")))?;
        }
        Ok(labels)
    }

    /// The registry and model name this version belongs to (`REG/NAME/vN`).
    pub fn registry_target(&self) -> Result<(PathBuf, String)> {
        let not_inside = || Error::model(&self.dir, "not inside a registry (expected REGISTRY/NAME/VERSION)");
        let model_dir = self.dir.parent().ok_or_else(not_inside)?;
        let name = model_dir.file_name().map(|n| n.to_string_lossy().into_owned()).ok_or_else(not_inside)?;
        let registry = model_dir.parent().ok_or_else(not_inside)?.to_path_buf();
        Ok((registry, name))
    }

    /// `<name>:<version>`.
    pub fn id(&self) -> String {
        format!("{}:{}", self.card.name, self.card.version)
    }
}

/// Reads `labels.json` (a JSON array of label strings, index = class id).
pub fn read_labels(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).at(path)?;
    let labels: Vec<String> =
        serde_json::from_str(&text).map_err(|source| Error::Json { path: path.to_path_buf(), source })?;
    if labels.is_empty() {
        return Err(Error::model(path, "labels.json lists no labels"));
    }
    Ok(labels)
}

/// Writes `labels.json`.
pub fn write_labels(path: &Path, labels: &[String]) -> Result<()> {
    let text =
        serde_json::to_string_pretty(labels).map_err(|source| Error::Json { path: path.to_path_buf(), source })?;
    crate::fsutil::write_atomic(path, (text + "\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish_dummy(registry: &ModelRegistry, name: &str) -> String {
        let staged = registry.stage(name).unwrap();
        for f in [files::MODEL, files::LABELS] {
            std::fs::write(staged.dir.join(f), "x").unwrap();
        }
        dummy_card().write(&staged.dir.join(files::CARD)).unwrap();
        let version = registry.reserve_version(&staged).unwrap();
        registry.publish(staged, &version, true).unwrap();
        version
    }

    fn dummy_card() -> ModelCard {
        serde_json::from_value(serde_json::json!({
            "name": "m", "version": "", "created_at": "", "prodcat_version": "", "max_length": 8, "num_labels": 2,
            "model": {"kind": "lexical", "featurizer": crate::common::FeaturizerSettings::default(),
                      "settings": crate::common::LexicalSettings::default(), "epochs_run": 1,
                      "validation_macro_f1": [], "train_seconds": 0.0}
        }))
        .unwrap()
    }

    #[test]
    fn a_version_missing_a_file_of_its_kind_is_not_published() {
        let tmp = tempfile::tempdir().unwrap();
        let registry = ModelRegistry::new(tmp.path());
        let staged = registry.stage("m").unwrap();
        std::fs::write(staged.dir.join(files::LABELS), "x").unwrap();
        dummy_card().write(&staged.dir.join(files::CARD)).unwrap();
        let version = registry.reserve_version(&staged).unwrap();
        let err = registry.publish(staged, &version, true).unwrap_err();
        assert!(err.to_string().contains("model.onnx was not written"), "{err}");
        assert_eq!(registry.current("m").unwrap(), None);
    }

    #[test]
    fn a_version_opened_through_current_names_the_version_and_the_folder_to_watch() {
        let tmp = tempfile::tempdir().unwrap();
        let registry = ModelRegistry::new(tmp.path());
        publish_dummy(&registry, "m");
        publish_dummy(&registry, "m");
        let version = ModelVersion::open(tmp.path()).unwrap();
        assert_eq!(version.dir, tmp.path().join("m/v2"));
        assert_eq!(version.follows.as_deref(), Some(tmp.path().join("m").as_path()));
        assert_eq!(version.registry_target().unwrap(), (tmp.path().to_path_buf(), "m".to_string()));
        let pinned = ModelVersion::open(&tmp.path().join("m/v1")).unwrap();
        assert_eq!((pinned.dir, pinned.follows), (tmp.path().join("m/v1"), None));
    }

    #[test]
    fn versions_increase_and_current_follows() {
        let tmp = tempfile::tempdir().unwrap();
        let registry = ModelRegistry::new(tmp.path());
        assert_eq!(publish_dummy(&registry, "m"), "v1");
        assert_eq!(publish_dummy(&registry, "m"), "v2");
        assert_eq!(registry.versions("m").unwrap(), vec![1, 2]);
        assert_eq!(registry.current("m").unwrap().as_deref(), Some("v2"));
        assert_eq!(resolve_model_dir(tmp.path()).unwrap(), tmp.path().join("m/current"));
        registry.set_current("m", "v1").unwrap();
        assert_eq!(registry.current("m").unwrap().as_deref(), Some("v1"));
    }

    #[test]
    fn unpublished_stage_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let registry = ModelRegistry::new(tmp.path());
        let staged = registry.stage("m").unwrap();
        let dir = staged.dir.clone();
        drop(staged);
        assert!(!dir.exists());
        assert!(registry.versions("m").unwrap().is_empty());
    }
}
