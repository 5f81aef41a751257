//! The lexical kind: hashed word and character n-grams into a linear classifier, one ONNX graph
//! over feature ids; the featurizer settings come from the card's section, so serving featurizes
//! exactly as training did. Retraining is [`crate::lexical::fit_lexical`] (seconds).

use std::sync::Arc;

use super::{ModelFamily, RetrainJob};
use crate::common::Kind;
use crate::error::{Error, Result};
use crate::lexical::{Featurizer, fit_lexical};
use crate::registry::{ModelKind, ModelVersion};
use crate::serve::{ExecutionTarget, Model, SessionSettings, SingleModel};
use crate::staging::Candidate;

/// The lexical family.
pub struct Lexical;

/// Opens a lexical version as a [`SingleModel`] (its featurizer in front of its graph).
pub fn open(version: ModelVersion, settings: &SessionSettings) -> Result<SingleModel> {
    let ModelKind::Lexical(info) = &version.card.model else {
        return Err(Error::model(&version.dir, format!("a {} model, not a lexical one", version.card.model.name())));
    };
    let featurizer = Featurizer::new(info.featurizer.clone());
    // An embedding bag costs microseconds per title on a CPU; a GPU call would spend more on the
    // transfer than on the sum. Lexical models (and the lexical stage of a cascade or ensemble on
    // a GPU machine) stay on the CPU whatever the device.
    let cpu = SessionSettings { target: ExecutionTarget::Cpu, ..settings.clone() };
    SingleModel::open(version, Box::new(featurizer), Kind::Lexical, crate::lexical::SERVE_LIMITS, &cpu)
}

impl ModelFamily for Lexical {
    fn kind(&self) -> Kind {
        Kind::Lexical
    }

    fn stages(&self) -> &'static [Kind] {
        &[Kind::Lexical]
    }

    fn load(&self, version: ModelVersion, settings: &SessionSettings) -> Result<Arc<dyn Model>> {
        Ok(Arc::new(open(version, settings)?))
    }

    fn candidate(&self, job: RetrainJob<'_>) -> Result<Candidate> {
        fit_lexical(job.lexical_job())
    }
}
