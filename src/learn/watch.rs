//! Hot swap: watches a registry model's `current` pointer and swaps the serving model when it
//! moves — to a version promoted by this pipeline's trainer or published by another process.
//!
//! The new version is loaded and verified off the data path ([`crate::models::load_verified`]:
//! parity recorded and passed, files and labels consistent, a warm-up through every member), and
//! refused if any check fails; the old model keeps serving then.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::registry::{ModelVersion, files};
use crate::serve::{Model, ModelSlot, SessionSettings};

/// Watches `<registry>/<name>/current`.
pub struct ModelWatcher {
    current: PathBuf,
    slot: ModelSlot,
    session: SessionSettings,
    metrics: Arc<Metrics>,
    refused: Option<String>,
}

impl ModelWatcher {
    /// A watcher for the model folder `model_dir` (the one holding `current`).
    pub fn new(model_dir: &Path, slot: ModelSlot, session: SessionSettings, metrics: Arc<Metrics>) -> Self {
        Self { current: model_dir.join(files::CURRENT), slot, session, metrics, refused: None }
    }

    /// The version `current` points at now.
    fn pointed(&self) -> Option<String> {
        std::fs::read_link(&self.current).ok().map(|t| t.to_string_lossy().into_owned())
    }

    /// Loads `dir` and applies every check a served model must pass.
    fn prepare(&self, dir: &Path) -> Result<Arc<dyn Model>> {
        crate::models::load_verified(ModelVersion::at(dir)?, &self.session)
    }

    /// Swaps if `current` moved to a version not yet serving; returns the new version.
    pub fn check(&mut self) -> Option<String> {
        let target = self.pointed()?;
        let (serving, identity) = self.slot.current();
        if serving.card().version == target || self.refused.as_deref() == Some(target.as_str()) {
            return None;
        }
        let dir = self.current.parent().map(|d| d.join(&target)).unwrap_or_default();
        match self.prepare(&dir) {
            Ok(model) => {
                let new = self.slot.swap(model);
                self.metrics.model_swaps.inc();
                self.metrics.set_model(&new.name, &new.version);
                tracing::info!(from = %identity.version, to = %new.version, "hot swap: new model serving");
                Some(new.version.clone())
            }
            Err(e) => {
                tracing::error!(version = %target, error = %e, "refusing new model version; the old one keeps serving");
                self.refused = Some(target);
                None
            }
        }
    }

    /// Polls every `interval` on a thread until `stop` is set.
    pub fn spawn(mut self, interval: Duration, stop: Arc<AtomicBool>) -> Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("prodcat-model-watch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    self.check();
                    std::thread::sleep(interval);
                }
            })
            .map_err(|e| Error::thread("starting the model watcher", e))
    }
}
