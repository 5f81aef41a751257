//! Model kinds: what each kind of registry model is, how it loads, and how it retrains.
//!
//! ```text
//!   card.json  {"model": {"kind": ..., <the kind's section>}}      registry::ModelKind
//!        │ family(kind)                              (FAMILIES: the one list of kinds' behaviour)
//!        ▼
//!   ModelFamily ── load(ModelVersion) ──► Arc<dyn serve::Model> ──► engine, eval, gate, tuning
//!        └──────── candidate(RetrainJob) ─► staging::Candidate   ──► learner's gate, registry
//! ```
//! A kind is its name in [`Kind`], its section in [`crate::registry::ModelKind`], and one module
//! here (`transformer`, `lexical`, `cascade`, `ensemble`; the composites share `pair`)
//! implementing [`ModelFamily`], listed in [`FAMILIES`]. Everything above this module — the
//! CLI, the pipelines, evaluation, the learner — works on `dyn Model` and `ModelVersion` and
//! never matches on the kind.

pub mod auto;
pub mod cascade;
pub mod ensemble;
pub mod lexical;
pub mod pair;
pub mod quantize;
pub mod transformer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::common::{Kind, LexicalSettings};
use crate::data::LabeledData;
use crate::data::prepare::DataSource;
use crate::error::{Error, Result};
use crate::lexical::LexicalJob;
use crate::registry::ModelVersion;
use crate::serve::{Model, SessionSettings};
use crate::staging::Candidate;
use crate::train::{TrainJob, TrainSettings};

/// What every model kind provides besides serving ([`Model`]).
pub trait ModelFamily: Sync {
    /// The kind this family is.
    fn kind(&self) -> Kind;

    /// The kind's name (cards, outputs, the command line).
    fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// The `stage` values its output rows can carry: the kinds whose probabilities a row reports.
    fn stages(&self) -> &'static [Kind];

    /// Loads a version of this kind (files checked, sessions built).
    fn load(&self, version: ModelVersion, settings: &SessionSettings) -> Result<Arc<dyn Model>>;

    /// Trains a candidate of this kind on trusted labels (the in-pipeline learner).
    fn candidate(&self, job: RetrainJob<'_>) -> Result<Candidate>;
}

/// Every family, in [`Kind::ALL`]'s order: the one list of what each kind does. `auto` builds
/// these candidates, the CLI offers these names, serving finds a card's family here.
pub static FAMILIES: [&dyn ModelFamily; 4] =
    [&lexical::Lexical, &transformer::Transformer, &ensemble::EnsembleFamily, &cascade::CascadeFamily];

/// The family of a kind.
pub fn family(kind: Kind) -> &'static dyn ModelFamily {
    FAMILIES.into_iter().find(|f| f.kind() == kind).unwrap_or_else(|| unreachable!("every kind has a family"))
}

/// Loads a resolved version, whatever its kind.
pub fn load(version: ModelVersion, settings: &SessionSettings) -> Result<Arc<dyn Model>> {
    family(version.card.model.kind()).load(version, settings)
}

/// Resolves `path` (version folder, model folder with `current`, one-model registry) and loads it.
pub fn open(path: &Path, settings: &SessionSettings) -> Result<Arc<dyn Model>> {
    load(ModelVersion::open(path)?, settings)
}

/// Loads a version and applies every check a served model must pass: the card records a passed
/// parity check, the kind's files and labels are consistent, and a warm-up runs every part of
/// the model (every member of a cascade). Start-up, relabel and hot swap all use it.
pub fn load_verified(version: ModelVersion, settings: &SessionSettings) -> Result<Arc<dyn Model>> {
    match &version.card.parity {
        Some(p) if p.passed => {}
        Some(p) => {
            return Err(Error::model(&version.dir, format!("parity check failed (max diff {})", p.max_abs_diff)));
        }
        None => return Err(Error::model(&version.dir, "card.json records no parity check")),
    }
    let model = load(version, settings)?;
    model.warm_up().map_err(|e| Error::model(model.dir(), format!("warm-up failed: {e}")))?;
    Ok(model)
}

/// Everything a retraining run needs, whatever the kind: trusted data, the taxonomy, where the
/// candidate goes, and each family's settings.
pub struct RetrainJob<'a> {
    pub data: &'a LabeledData,
    pub source: DataSource,
    /// The taxonomy: the serving labels in their order, then labels new in the data.
    pub labels: Vec<String>,
    pub registry: PathBuf,
    pub name: String,
    /// Transformer settings (their split and seed are shared by every family).
    pub transformer: TrainSettings,
    pub lexical: LexicalSettings,
    /// Hugging Face base model folder transformer candidates are fine-tuned from.
    pub base_model: PathBuf,
    pub session: SessionSettings,
    pub cancel: Arc<AtomicBool>,
}

impl<'a> RetrainJob<'a> {
    /// The lexical fit of this job (the transformer's split and seed, so cascade members share it;
    /// the hash split, so held-out products stay held out as the store grows).
    pub fn lexical_job(&self) -> LexicalJob<'a> {
        LexicalJob {
            data: self.data,
            source: self.source.clone(),
            registry: self.registry.clone(),
            name: self.name.clone(),
            settings: LexicalSettings { seed: self.transformer.seed, ..self.lexical.clone() },
            split: self.transformer.split,
            stable_split: true,
            session: self.session.clone(),
            labels: Some(self.labels.clone()),
            parity_tolerance: self.transformer.parity_tolerance,
        }
    }

    /// The transformer fit of this job.
    pub fn transformer_job(&self) -> TrainJob<'a> {
        TrainJob {
            data: self.data,
            source: self.source.clone(),
            base_dir: self.base_model.clone(),
            registry: self.registry.clone(),
            name: self.name.clone(),
            settings: TrainSettings { stable_split: true, ..self.transformer.clone() },
            resume: false,
            session: self.session.clone(),
            show_progress: false,
            cancel: Some(self.cancel.clone()),
            labels: Some(self.labels.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_one_family_in_order_and_reports_its_stages() {
        assert_eq!(FAMILIES.map(|f| f.kind()), Kind::ALL);
        for kind in Kind::ALL {
            let f = family(kind);
            assert_eq!((f.kind(), f.name()), (kind, kind.name()));
            // Every stage is a kind that scores rows by itself (no row is labeled "cascade").
            assert!(f.stages().iter().all(|s| *s != Kind::Cascade), "{kind}");
        }
        assert_eq!(family(Kind::Cascade).stages(), [Kind::Lexical, Kind::Transformer, Kind::Ensemble]);
    }
}
