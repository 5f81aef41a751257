//! Per-epoch training checkpoints, so `--resume` continues an interrupted run where it stopped.
//!
//! A checkpoint folder holds the trainable tensors after the last finished epoch, the best
//! epoch's tensors, the optimizer moments and a small JSON state. It is keyed by a hash of the
//! data snapshot and the settings that shape the run, so a resume never mixes runs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

/// Progress of a run after its last finished epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RunState {
    /// Epochs finished (1-based count).
    pub epochs_done: usize,
    pub optimizer_step: usize,
    pub best_macro_f1: f64,
    pub best_epoch: usize,
    pub epochs_without_improvement: usize,
    pub validation_macro_f1: Vec<f64>,
    pub train_seconds: f64,
    pub train_samples: usize,
}

/// A checkpoint folder.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub dir: PathBuf,
}

const LAST: &str = "last.safetensors";
const BEST: &str = "best.safetensors";
const OPTIMIZER: &str = "optimizer.safetensors";
const STATE: &str = "state.json";

impl Checkpoint {
    /// The checkpoint folder for a run key under `root`.
    pub fn new(root: &Path, key: &str) -> Self {
        Self { dir: root.join(key) }
    }

    /// True when a complete checkpoint exists.
    pub fn exists(&self) -> bool {
        [LAST, BEST, OPTIMIZER, STATE].iter().all(|f| self.dir.join(f).is_file())
    }

    /// Removes the checkpoint (a fresh run).
    pub fn clear(&self) -> Result<()> {
        if self.dir.exists() {
            std::fs::remove_dir_all(&self.dir).at(&self.dir)?;
        }
        Ok(())
    }

    /// Saves a checkpoint atomically (written beside, then renamed over the old one).
    pub fn save(
        &self,
        last: &HashMap<String, Tensor>,
        best: &HashMap<String, Tensor>,
        optimizer: &HashMap<String, Tensor>,
        state: &RunState,
    ) -> Result<()> {
        let parent = self.dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).at(parent)?;
        let tmp =
            parent.join(format!(".{}.tmp", self.dir.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).at(&tmp)?;
        }
        std::fs::create_dir_all(&tmp).at(&tmp)?;
        for (file, tensors) in [(LAST, last), (BEST, best), (OPTIMIZER, optimizer)] {
            let path = tmp.join(file);
            candle_core::safetensors::save(tensors, &path).map_err(|e| Error::model(&path, e.to_string()))?;
        }
        let json =
            serde_json::to_string_pretty(state).map_err(|source| Error::Json { path: tmp.join(STATE), source })?;
        std::fs::write(tmp.join(STATE), json).at(tmp.join(STATE))?;
        self.clear()?;
        std::fs::rename(&tmp, &self.dir).at(&self.dir)
    }

    /// Loads `(last, best, optimizer, state)`.
    #[allow(clippy::type_complexity)]
    pub fn load(
        &self,
    ) -> Result<(HashMap<String, Tensor>, HashMap<String, Tensor>, HashMap<String, Tensor>, RunState)> {
        let read = |file: &str| {
            let path = self.dir.join(file);
            candle_core::safetensors::load(&path, &Device::Cpu).map_err(|e| Error::model(&path, e.to_string()))
        };
        let state_path = self.dir.join(STATE);
        let text = std::fs::read_to_string(&state_path).at(&state_path)?;
        let state = serde_json::from_str(&text).map_err(|source| Error::Json { path: state_path, source })?;
        Ok((read(LAST)?, read(BEST)?, read(OPTIMIZER)?, state))
    }
}
