//! The one model abstraction of the data path, in the style of text-embeddings-inference's
//! `Backend`: a loaded model prepares inputs, scores a padded batch, warms up, and says how it
//! wants to be batched. Every kind in [`crate::models`] implements [`Model`]; the engine,
//! evaluation, gates and tuning see only `dyn Model`.
//!
//! [`SingleModel`] is the shared implementation for kinds that are one ONNX graph over
//! `[batch, seq]` ids: a [`Preprocess`] (tokenizer or featurizer) in front of an [`OnnxSession`].

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::session::{ModelOutput, OnnxSession, SessionSettings};
use crate::common::{BatchLimits, Head, Kind, Taxonomy};
use crate::error::Result;
use crate::registry::{ModelCard, ModelVersion, files};
use crate::tokenize::{PaddedBatch, TextTokenizer, TokenizedText};

/// Scores of some rows and the stage that produced each.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scored {
    pub output: ModelOutput,
    pub stages: Vec<Kind>,
}

impl Scored {
    /// Every row from one stage.
    pub fn single(output: ModelOutput, stage: Kind) -> Self {
        let stages = vec![stage; output.rows];
        Self { output, stages }
    }

    /// Copies the rows of `part` to rows `rows` of `self` (`part` row i → `rows[i]`).
    pub fn scatter(&mut self, rows: &[usize], part: &Scored) {
        let c = self.output.classes;
        for (i, &r) in rows.iter().enumerate() {
            self.output.logits[r * c..(r + 1) * c].copy_from_slice(part.output.logits_row(i));
            self.output.probabilities[r * c..(r + 1) * c].copy_from_slice(part.output.probs(i));
            self.stages[r] = part.stages[i];
        }
    }
}

/// Name, version, kind and labels of the model that labeled a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelIdentity {
    pub name: String,
    pub version: String,
    pub kind: String,
    pub labels: Vec<String>,
    /// How a row's probabilities become its label.
    #[serde(default)]
    pub head: Head,
    /// The tree of category paths the labels make, for a taxonomy model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taxonomy: Option<Taxonomy>,
    /// A multi-label model's per-class thresholds (its card's `label_thresholds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<Vec<f32>>,
}

/// The threshold of a multi-label class whose card gives none.
pub const DEFAULT_LABEL_THRESHOLD: f32 = 0.5;

/// A multi-label row's labels: every class whose probability reaches its threshold (`None`:
/// [`DEFAULT_LABEL_THRESHOLD`] for all), most likely first; the most likely class alone when none
/// does (every product has some category).
pub fn labels_above(probs: &[f32], thresholds: Option<&[f32]>) -> Vec<(u32, f32)> {
    let threshold = |c: usize| thresholds.and_then(|t| t.get(c).copied()).unwrap_or(DEFAULT_LABEL_THRESHOLD);
    let mut set: Vec<(u32, f32)> =
        probs.iter().enumerate().filter(|&(c, &p)| p >= threshold(c)).map(|(c, &p)| (c as u32, p)).collect();
    if set.is_empty() {
        set = top_k(probs, 1);
    }
    set.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    set
}

/// The label of one text.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub label_id: u32,
    pub confidence: f32,
    /// The `k` most likely classes, most likely first.
    pub top_k: Vec<(u32, f32)>,
    /// A taxonomy model's path to the label: the label's node at each level above it, top
    /// first, with the node's score (the sum of its leaves' probabilities). Empty when flat.
    pub ancestors: Vec<(u32, f32)>,
    /// A multi-label row's labels with their probabilities, most likely first: each class at or
    /// above its threshold. Empty for a single-label model (its label alone; see
    /// [`Self::label_set`]), so a single-label row allocates nothing for it.
    pub labels: Vec<(u32, f32)>,
    pub stage: Kind,
    pub model: Arc<ModelIdentity>,
}

impl Prediction {
    /// The prediction of one output row of `model`, with its `k` most likely classes.
    pub fn of_row(model: &Arc<ModelIdentity>, probs: &[f32], k: usize, stage: Kind) -> Self {
        match model.head {
            Head::SingleLabel => {
                let best = top_k(probs, k);
                let (label_id, confidence) = best[0];
                let ancestors = model.taxonomy.as_ref().map_or_else(Vec::new, |t| {
                    t.ancestors(label_id as usize)
                        .map(|(level, node)| (node, t.node_score(level, node, probs)))
                        .collect()
                });
                Self { label_id, confidence, top_k: best, ancestors, labels: Vec::new(), stage, model: model.clone() }
            }
            Head::MultiLabel => {
                let best = top_k(probs, k);
                let labels = labels_above(probs, model.thresholds.as_deref());
                let (label_id, confidence) = labels[0];
                Self { label_id, confidence, top_k: best, ancestors: Vec::new(), labels, stage, model: model.clone() }
            }
        }
    }

    /// The predicted label's name.
    pub fn label(&self) -> &str {
        &self.model.labels[self.label_id as usize]
    }

    /// The label and score at each level, top first, ending with the label itself (one level for
    /// a flat model).
    pub fn levels(&self) -> impl Iterator<Item = (&str, f32)> {
        let above = self.model.taxonomy.iter().flat_map(|t| {
            self.ancestors
                .iter()
                .zip(&t.levels)
                .map(|(&(node, score), level)| (level.nodes[node as usize].as_str(), score))
        });
        above.chain(std::iter::once((self.label(), self.confidence)))
    }

    /// The row's labels and their probabilities, most likely first (the label alone for a
    /// single-label model).
    pub fn label_set(&self) -> impl Iterator<Item = (&str, f32)> {
        let alone = self.labels.is_empty().then_some((self.label_id, self.confidence));
        alone
            .into_iter()
            .chain(self.labels.iter().copied())
            .map(|(id, score)| (self.model.labels[id as usize].as_str(), score))
    }

    /// The score at level `level` (1 = the top; past the deepest level, the label's own).
    pub fn score_at(&self, level: usize) -> f32 {
        match level.checked_sub(1).and_then(|l| self.ancestors.get(l)) {
            Some(&(_, score)) => score,
            None => self.confidence,
        }
    }

    /// The parts of the label's path (the label alone when flat).
    pub fn path(&self) -> Vec<&str> {
        match &self.model.taxonomy {
            Some(t) => crate::common::taxonomy::path_parts(self.label(), &t.separator),
            None => vec![self.label()],
        }
    }
}

/// Top `k` (index, probability) pairs of a probability row (at least one), most likely first,
/// ties by index. One pass keeping the best `k` in order: O(classes × k), not a sort of every
/// class (at 2,115 classes the sort was a fifth of a lexical model's relabel time).
pub fn top_k(probs: &[f32], k: usize) -> Vec<(u32, f32)> {
    let k = k.max(1);
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    for (i, &p) in probs.iter().enumerate() {
        if best.len() == k && best[k - 1].1.total_cmp(&p).is_ge() {
            continue;
        }
        // After every kept one at least as likely (earlier indices win ties).
        let at = best.partition_point(|b| b.1.total_cmp(&p).is_ge());
        best.insert(at, (i as u32, p));
        best.truncate(k);
    }
    best
}

/// A loaded model of any kind, as the data path serves it.
pub trait Model: Send + Sync + std::fmt::Debug {
    /// The registry version it was loaded from.
    fn version(&self) -> &ModelVersion;

    /// Class names, by class id.
    fn labels(&self) -> &[String];

    /// Turns texts into model inputs (token ids or feature ids; the batcher's cost is their length).
    fn prepare(&self, texts: &[&str]) -> Result<Vec<TokenizedText>>;

    /// Class probabilities for a padded batch of prepared inputs; `texts` are the batch's texts in
    /// row order (a composite's later stage prepares them again for its own member).
    fn score(&self, batch: &PaddedBatch, texts: &[&str]) -> Result<Scored>;

    /// How this model likes to be batched outside the engine (evaluation, gates).
    fn batch_limits(&self) -> BatchLimits {
        BatchLimits::default()
    }

    /// Runs every part of the model once (every member of a composite), so a broken graph fails
    /// here rather than on the first record.
    fn warm_up(&self) -> Result<()> {
        let text = ["warm up"];
        let prepared = self.prepare(&text)?;
        self.score(&PaddedBatch::from_tokens(prepared.iter()), &text).map(|_| ())
    }

    /// The model's card.
    fn card(&self) -> &ModelCard {
        &self.version().card
    }

    /// Folder the model was loaded from.
    fn dir(&self) -> &Path {
        &self.version().dir
    }

    /// `<name>:<version>`.
    fn id(&self) -> String {
        self.version().id()
    }

    /// Identity recorded on every output row.
    fn identity(&self) -> ModelIdentity {
        let card = self.card();
        ModelIdentity {
            name: card.name.clone(),
            version: card.version.clone(),
            kind: card.model.name().to_string(),
            labels: self.labels().to_vec(),
            head: card.head,
            taxonomy: card.taxonomy.clone(),
            thresholds: card.label_thresholds.clone(),
        }
    }
}

/// Turns texts into a graph's `[batch, seq]` id rows.
pub trait Preprocess: Send + Sync + std::fmt::Debug {
    fn prepare(&self, texts: &[&str]) -> Result<Vec<TokenizedText>>;
}

impl Preprocess for TextTokenizer {
    fn prepare(&self, texts: &[&str]) -> Result<Vec<TokenizedText>> {
        self.encode_batch(texts)
    }
}

/// A model that is one ONNX graph behind a preprocessor (the transformer and lexical kinds).
#[derive(Debug)]
pub struct SingleModel {
    pub version: ModelVersion,
    pub labels: Vec<String>,
    pub session: OnnxSession,
    preprocess: Box<dyn Preprocess>,
    stage: Kind,
    limits: BatchLimits,
}

impl SingleModel {
    /// Opens `version`'s graph behind `preprocess`: the kind's files are checked, labels read and
    /// matched against the card, and the session built.
    pub fn open(
        version: ModelVersion,
        preprocess: Box<dyn Preprocess>,
        stage: Kind,
        limits: BatchLimits,
        settings: &SessionSettings,
    ) -> Result<Self> {
        version.check_files()?;
        let labels = version.labels()?;
        let session = OnnxSession::open(&version.dir.join(files::MODEL), labels.len(), settings)?;
        Ok(Self { version, labels, session, preprocess, stage, limits })
    }

    /// Runs one padded batch through the graph.
    pub fn run(&self, batch: &PaddedBatch) -> Result<ModelOutput> {
        self.session.run(batch)
    }
}

impl Model for SingleModel {
    fn version(&self) -> &ModelVersion {
        &self.version
    }

    fn labels(&self) -> &[String] {
        &self.labels
    }

    fn prepare(&self, texts: &[&str]) -> Result<Vec<TokenizedText>> {
        self.preprocess.prepare(texts)
    }

    fn score(&self, batch: &PaddedBatch, _texts: &[&str]) -> Result<Scored> {
        Ok(Scored::single(self.run(batch)?, self.stage))
    }

    fn batch_limits(&self) -> BatchLimits {
        self.limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taxonomy_prediction_carries_its_path_and_the_score_of_each_level() {
        let labels: Vec<String> = ["A > x > 1", "A > x > 2", "A > y", "B > z > 3"].map(String::from).to_vec();
        let paths = crate::common::PathLabels { separator: " > ".into(), file: None };
        let identity = |taxonomy| {
            Arc::new(ModelIdentity {
                name: "m".into(),
                version: "v1".into(),
                kind: "lexical".into(),
                labels: labels.clone(),
                head: Head::SingleLabel,
                taxonomy,
                thresholds: None,
            })
        };
        let tree = identity(Taxonomy::of_labels(&labels, &paths));
        // The leaf argmax is under B, though A holds more probability: the path is the leaf's.
        let p = Prediction::of_row(&tree, &[0.2, 0.25, 0.15, 0.4], 2, Kind::Lexical);
        assert_eq!(p.label(), "B > z > 3");
        assert_eq!(p.path(), vec!["B", "z", "3"]);
        assert_eq!(p.levels().collect::<Vec<_>>(), vec![("B", 0.4), ("B > z", 0.4), ("B > z > 3", 0.4)]);
        let p = Prediction::of_row(&tree, &[0.3, 0.25, 0.15, 0.3], 2, Kind::Lexical);
        assert_eq!(p.label(), "A > x > 1");
        let levels: Vec<_> = p.levels().collect();
        assert_eq!((levels[0].0, levels[1].0), ("A", "A > x"));
        assert!((levels[0].1 - 0.7).abs() < 1e-6 && (levels[1].1 - 0.55).abs() < 1e-6, "{levels:?}");
        // The review threshold at a level reads that level's score; 0 and past the depth: the leaf's.
        assert!((p.score_at(1) - 0.7).abs() < 1e-6 && (p.score_at(2) - 0.55).abs() < 1e-6);
        assert_eq!((p.score_at(0), p.score_at(3), p.score_at(9)), (0.3, 0.3, 0.3));
        // A flat model: one level, the label itself.
        let flat = Prediction::of_row(&identity(None), &[0.3, 0.25, 0.15, 0.3], 2, Kind::Lexical);
        assert_eq!(flat.path(), vec!["A > x > 1"]);
        // A single-label row's label set is its label alone.
        assert_eq!(flat.label_set().collect::<Vec<_>>(), vec![("A > x > 1", 0.3)]);
        // A multi-label row's: every class at its threshold, most likely first; the best alone
        // when none is.
        let multi = |thresholds: Option<Vec<f32>>| {
            Arc::new(ModelIdentity { head: Head::MultiLabel, thresholds, ..(*identity(None)).clone() })
        };
        let p = Prediction::of_row(&multi(Some(vec![0.5, 0.2, 0.9, 0.5])), &[0.6, 0.3, 0.8, 0.1], 2, Kind::Lexical);
        assert_eq!(p.label_set().collect::<Vec<_>>(), vec![("A > x > 1", 0.6), ("A > x > 2", 0.3)]);
        assert_eq!((p.label(), p.confidence), ("A > x > 1", 0.6));
        let p = Prediction::of_row(&multi(None), &[0.1, 0.3, 0.2, 0.1], 2, Kind::Lexical);
        assert_eq!(p.label_set().collect::<Vec<_>>(), vec![("A > x > 2", 0.3)]);
        assert_eq!(flat.levels().collect::<Vec<_>>(), vec![("A > x > 1", 0.3)]);
        assert_eq!(flat.score_at(1), 0.3);
    }

    #[test]
    fn top_k_is_the_head_of_a_full_sort_ties_by_index() {
        let sorted = |probs: &[f32], k: usize| {
            let mut all: Vec<(u32, f32)> = probs.iter().enumerate().map(|(i, &p)| (i as u32, p)).collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            all.truncate(k.max(1));
            all
        };
        // Many ties (values in tenths), and rows shorter than k.
        let mut x = 17u64;
        for len in [0, 1, 2, 5, 40, 2115] {
            let probs: Vec<f32> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((x >> 33) % 10) as f32 / 10.0
                })
                .collect();
            for k in [0, 1, 3, 7] {
                assert_eq!(top_k(&probs, k), sorted(&probs, k), "len {len} k {k}");
            }
        }
    }
}
