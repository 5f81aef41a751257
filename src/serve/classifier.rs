//! What the data path serves: a registry model of any type behind one interface, the predictions
//! it produces, and the hot-swappable slot the inference thread reads it from.

use std::path::Path;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use super::session::{LoadedModel, ModelOutput, SessionSettings};
use crate::error::{Error, Result};
use crate::registry::{ModelCard, ModelType};
use crate::tokenize::{PaddedBatch, TokenizedText};

/// Name, version and labels of the model that labeled a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelIdentity {
    pub name: String,
    pub version: String,
    pub model_type: ModelType,
    pub labels: Vec<String>,
}

/// Which model of a cascade produced a prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Transformer,
    Lexical,
}

impl Stage {
    /// Lower-case name used in outputs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Transformer => "transformer",
            Stage::Lexical => "lexical",
        }
    }
}

/// The label of one text.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub label_id: u32,
    pub confidence: f32,
    /// The `k` most likely classes, most likely first.
    pub top_k: Vec<(u32, f32)>,
    pub stage: Stage,
    pub model: Arc<ModelIdentity>,
}

impl Prediction {
    /// The predicted label's name.
    pub fn label(&self) -> &str {
        &self.model.labels[self.label_id as usize]
    }
}

/// Top `k` (index, probability) pairs of a probability row, most likely first.
pub fn top_k(probs: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut idx: Vec<(u32, f32)> = probs.iter().enumerate().map(|(i, &p)| (i as u32, p)).collect();
    idx.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    idx.truncate(k.max(1));
    idx
}

/// A served model of any registry type.
#[derive(Debug)]
pub enum Classifier {
    Transformer(LoadedModel),
}

impl Classifier {
    /// Loads a registry model, whatever its type.
    pub fn load(path: &Path, settings: &SessionSettings) -> Result<Self> {
        let model = LoadedModel::load(path, settings)?;
        match model.card.model_type {
            ModelType::Transformer => Ok(Self::Transformer(model)),
            other => Err(Error::model(&model.dir, format!("model type {other:?} cannot be served by this build"))),
        }
    }

    /// The model's card.
    pub fn card(&self) -> &ModelCard {
        match self {
            Self::Transformer(m) => &m.card,
        }
    }

    /// Class names, by class id.
    pub fn labels(&self) -> &[String] {
        match self {
            Self::Transformer(m) => &m.labels,
        }
    }

    /// Folder the model was loaded from.
    pub fn dir(&self) -> &Path {
        match self {
            Self::Transformer(m) => &m.dir,
        }
    }

    /// Identity recorded on every output row.
    pub fn identity(&self) -> ModelIdentity {
        let card = self.card();
        ModelIdentity {
            name: card.name.clone(),
            version: card.version.clone(),
            model_type: card.model_type,
            labels: self.labels().to_vec(),
        }
    }

    /// Turns texts into model inputs (token ids; the batcher's cost is their length).
    pub fn prepare(&self, texts: &[&str]) -> Result<Vec<TokenizedText>> {
        match self {
            Self::Transformer(m) => m.tokenizer.encode_batch(texts),
        }
    }

    /// Class probabilities for a padded batch; `texts` are the batch's texts in row order (used
    /// by models with a second stage).
    pub fn score(&self, batch: &PaddedBatch, _texts: &[&str]) -> Result<(ModelOutput, Vec<Stage>)> {
        match self {
            Self::Transformer(m) => {
                let out = m.run(batch)?;
                let stages = vec![Stage::Transformer; out.rows];
                Ok((out, stages))
            }
        }
    }

    /// Scores texts in length-sorted batches of `batch_size`; rows come back in input order.
    pub fn score_texts(&self, texts: &[&str], batch_size: usize) -> Result<(ModelOutput, Vec<Stage>)> {
        let prepared = self.prepare(texts)?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| prepared[i].len());
        let classes = self.labels().len();
        let mut out = ModelOutput {
            rows: texts.len(),
            classes,
            logits: vec![0.0; texts.len() * classes],
            probabilities: vec![0.0; texts.len() * classes],
        };
        let mut stages = vec![Stage::Transformer; texts.len()];
        let mut batch = PaddedBatch::default();
        for chunk in order.chunks(batch_size.max(1)) {
            batch.fill(chunk.iter().map(|&i| &prepared[i]));
            let chunk_texts: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
            let (result, chunk_stages) = self.score(&batch, &chunk_texts)?;
            for (row, &i) in chunk.iter().enumerate() {
                out.logits[i * classes..(i + 1) * classes].copy_from_slice(result.logits_row(row));
                out.probabilities[i * classes..(i + 1) * classes].copy_from_slice(result.probs(row));
                stages[i] = chunk_stages[row];
            }
        }
        Ok((out, stages))
    }
}

/// The model the inference thread serves, replaceable between batches.
#[derive(Debug, Clone)]
pub struct ModelSlot {
    inner: Arc<RwLock<(Arc<Classifier>, Arc<ModelIdentity>)>>,
}

impl ModelSlot {
    /// A slot serving `model`.
    pub fn new(model: Classifier) -> Self {
        let identity = Arc::new(model.identity());
        Self { inner: Arc::new(RwLock::new((Arc::new(model), identity))) }
    }

    /// The model now serving and its identity.
    pub fn current(&self) -> (Arc<Classifier>, Arc<ModelIdentity>) {
        match self.inner.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the served model; batches already formed finish on the old one.
    pub fn swap(&self, model: Classifier) -> Arc<ModelIdentity> {
        let identity = Arc::new(model.identity());
        let next = (Arc::new(model), identity.clone());
        match self.inner.write() {
            Ok(mut guard) => *guard = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
        identity
    }
}
