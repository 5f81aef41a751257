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

/// A cascade: the lexical member labels everything; rows whose confidence is below the
/// threshold are labeled again by the transformer member.
#[derive(Debug)]
pub struct Cascade {
    pub dir: std::path::PathBuf,
    pub card: ModelCard,
    pub threshold: f32,
    pub lexical: LoadedModel,
    pub transformer: LoadedModel,
    /// Transformer class id → cascade (lexical) class id.
    to_cascade: Vec<usize>,
}

impl Cascade {
    /// Loads a cascade version folder (`card.json` with a `cascade` section, members inside).
    pub fn load(dir: &Path, card: ModelCard, settings: &SessionSettings) -> Result<Self> {
        let info = card.cascade.clone().ok_or_else(|| Error::model(dir, "card.json has no `cascade` section"))?;
        let lexical = LoadedModel::load(&dir.join(&info.lexical), settings)?;
        let transformer = LoadedModel::load(&dir.join(&info.transformer), settings)?;
        if lexical.card.model_type != ModelType::Lexical || transformer.card.model_type != ModelType::Transformer {
            return Err(Error::model(dir, "a cascade needs a lexical and a transformer member"));
        }
        let to_cascade = transformer
            .labels
            .iter()
            .map(|l| {
                lexical.labels.iter().position(|x| x == l).ok_or_else(|| {
                    Error::model(
                        dir,
                        format!("label `{l}` of the transformer member is not a label of the lexical member"),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { dir: dir.to_path_buf(), card, threshold: info.threshold, lexical, transformer, to_cascade })
    }

    /// Transformer-member outputs re-indexed to the cascade's classes.
    pub fn to_cascade_classes(&self, scored: &ModelOutput) -> ModelOutput {
        let c = self.lexical.labels.len();
        let mut out = ModelOutput {
            rows: scored.rows,
            classes: c,
            logits: vec![f32::NEG_INFINITY; scored.rows * c],
            probabilities: vec![0.0; scored.rows * c],
        };
        for r in 0..scored.rows {
            for (t, &k) in self.to_cascade.iter().enumerate() {
                out.probabilities[r * c + k] = scored.probs(r)[t];
                out.logits[r * c + k] = scored.logits_row(r)[t];
            }
        }
        out
    }

    /// Lexical scores for the batch; rows below `threshold` re-scored by the transformer.
    pub fn score(&self, batch: &PaddedBatch, texts: &[&str], threshold: f32) -> Result<(ModelOutput, Vec<Stage>)> {
        let mut out = self.lexical.run(batch)?;
        let mut stages = vec![Stage::Lexical; out.rows];
        let unsure: Vec<usize> = (0..out.rows).filter(|&r| out.argmax(r).1 < threshold).collect();
        if unsure.is_empty() {
            return Ok((out, stages));
        }
        let unsure_texts: Vec<&str> = unsure.iter().map(|&r| texts[r]).collect();
        let tokens = self.transformer.prepare(&unsure_texts)?;
        let mut order: Vec<usize> = (0..unsure.len()).collect();
        order.sort_by_key(|&i| tokens[i].len());
        let c = out.classes;
        let mut sub = PaddedBatch::default();
        for chunk in order.chunks(64) {
            sub.fill(chunk.iter().map(|&i| &tokens[i]));
            let scored = self.to_cascade_classes(&self.transformer.run(&sub)?);
            for (row, &i) in chunk.iter().enumerate() {
                let r = unsure[i];
                out.probabilities[r * c..(r + 1) * c].copy_from_slice(scored.probs(row));
                out.logits[r * c..(r + 1) * c].copy_from_slice(scored.logits_row(row));
                stages[r] = Stage::Transformer;
            }
        }
        Ok((out, stages))
    }
}

/// A served model of any registry type.
#[derive(Debug)]
pub enum Classifier {
    /// A transformer or lexical model: one ONNX session.
    Single(LoadedModel),
    Cascade(Box<Cascade>),
}

impl Classifier {
    /// Loads a registry model, whatever its type.
    pub fn load(path: &Path, settings: &SessionSettings) -> Result<Self> {
        let dir = crate::registry::resolve_model_dir(path)?;
        let card_path = dir.join(crate::registry::files::CARD);
        if !card_path.is_file() {
            return Err(Error::model(&dir, "card.json is missing"));
        }
        let card = ModelCard::read(&card_path)?;
        match card.model_type {
            ModelType::Cascade => Ok(Self::Cascade(Box::new(Cascade::load(&dir, card, settings)?))),
            _ => Ok(Self::Single(LoadedModel::load(&dir, settings)?)),
        }
    }

    /// The model's card.
    pub fn card(&self) -> &ModelCard {
        match self {
            Self::Single(m) => &m.card,
            Self::Cascade(c) => &c.card,
        }
    }

    /// Class names, by class id.
    pub fn labels(&self) -> &[String] {
        match self {
            Self::Single(m) => &m.labels,
            Self::Cascade(c) => &c.lexical.labels,
        }
    }

    /// Folder the model was loaded from.
    pub fn dir(&self) -> &Path {
        match self {
            Self::Single(m) => &m.dir,
            Self::Cascade(c) => &c.dir,
        }
    }

    /// `<name>:<version>`.
    pub fn id(&self) -> String {
        format!("{}:{}", self.card().name, self.card().version)
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

    /// Turns texts into model inputs (token ids or features; the batcher's cost is their length).
    pub fn prepare(&self, texts: &[&str]) -> Result<Vec<TokenizedText>> {
        match self {
            Self::Single(m) => m.prepare(texts),
            Self::Cascade(c) => c.lexical.prepare(texts),
        }
    }

    /// Class probabilities for a padded batch; `texts` are the batch's texts in row order (a
    /// cascade's second stage needs them).
    pub fn score(&self, batch: &PaddedBatch, texts: &[&str]) -> Result<(ModelOutput, Vec<Stage>)> {
        match self {
            Self::Single(m) => {
                let out = m.run(batch)?;
                let stage = if m.card.model_type == ModelType::Lexical { Stage::Lexical } else { Stage::Transformer };
                let stages = vec![stage; out.rows];
                Ok((out, stages))
            }
            Self::Cascade(c) => c.score(batch, texts, c.threshold),
        }
    }

    /// Scores texts in length-sorted batches of `batch_size`; rows come back in input order.
    pub fn score_texts(&self, texts: &[&str], batch_size: usize) -> Result<(ModelOutput, Vec<Stage>)> {
        self.score_texts_with(texts, batch_size, |batch, batch_texts| self.score(batch, batch_texts))
    }

    /// [`Classifier::score_texts`] with a custom scorer per batch (e.g. a cascade at another threshold).
    pub fn score_texts_with(
        &self,
        texts: &[&str],
        batch_size: usize,
        mut score: impl FnMut(&PaddedBatch, &[&str]) -> Result<(ModelOutput, Vec<Stage>)>,
    ) -> Result<(ModelOutput, Vec<Stage>)> {
        score_sorted(&self.prepare(texts)?, self.labels().len(), texts, batch_size, &mut score)
    }
}

/// Scores `texts` (already prepared) in length-sorted batches of `batch_size` with `score`;
/// rows come back in input order.
pub(crate) fn score_sorted(
    prepared: &[TokenizedText],
    classes: usize,
    texts: &[&str],
    batch_size: usize,
    score: &mut dyn FnMut(&PaddedBatch, &[&str]) -> Result<(ModelOutput, Vec<Stage>)>,
) -> Result<(ModelOutput, Vec<Stage>)> {
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| prepared[i].len());
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
        let (result, chunk_stages) = score(&batch, &chunk_texts)?;
        for (row, &i) in chunk.iter().enumerate() {
            out.logits[i * classes..(i + 1) * classes].copy_from_slice(result.logits_row(row));
            out.probabilities[i * classes..(i + 1) * classes].copy_from_slice(result.probs(row));
            stages[i] = chunk_stages[row];
        }
    }
    Ok((out, stages))
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
