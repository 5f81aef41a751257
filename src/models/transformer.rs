//! The transformer kind: a BERT-family encoder with merged LoRA adapters, one ONNX graph over
//! tokenizer ids (fp32, or int8 through [`super::quantize`]). Retraining fine-tunes the base
//! model on the trusted labels ([`crate::train::fit`]).

use std::sync::Arc;

use super::{ModelFamily, RetrainJob};
use crate::common::{BatchLimits, Kind};
use crate::error::Result;
use crate::registry::{ModelVersion, files};
use crate::serve::{Model, SessionSettings, SingleModel};
use crate::staging::Candidate;
use crate::tokenize::TextTokenizer;
use crate::train::fit;

/// The transformer family.
pub struct Transformer;

/// Opens a transformer version as a [`SingleModel`] (its tokenizer in front of its graph).
pub fn open(version: ModelVersion, settings: &SessionSettings) -> Result<SingleModel> {
    version.check_files()?;
    let tokenizer = TextTokenizer::from_file(&version.dir.join(files::TOKENIZER), version.card.max_length)?;
    SingleModel::open(version, Box::new(tokenizer), Kind::Transformer, BatchLimits::default(), settings)
}

impl ModelFamily for Transformer {
    fn kind(&self) -> Kind {
        Kind::Transformer
    }

    fn stages(&self) -> &'static [Kind] {
        &[Kind::Transformer]
    }

    fn load(&self, version: ModelVersion, settings: &SessionSettings) -> Result<Arc<dyn Model>> {
        Ok(Arc::new(open(version, settings)?))
    }

    fn candidate(&self, job: RetrainJob<'_>) -> Result<Candidate> {
        fit(job.transformer_job())
    }
}
