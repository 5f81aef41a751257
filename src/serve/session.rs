//! ONNX Runtime sessions: [`OnnxSession`] builds a session on the CPU or CUDA execution provider
//! (with a log line saying which one runs) and turns padded id batches into logits and
//! probabilities.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::ep::ExecutionProvider;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;

use crate::error::{Error, Result};
use crate::onnx::transformer::names;
use crate::tokenize::PaddedBatch;

/// Where inference runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionTarget {
    #[default]
    Cpu,
    /// CUDA if this ONNX Runtime build and machine support it, else CPU (with a warning).
    Cuda,
}

impl std::str::FromStr for ExecutionTarget {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            _ => Err(format!("unknown device `{s}`; expected `cpu` or `cuda`")),
        }
    }
}

impl std::fmt::Display for ExecutionTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
        })
    }
}

/// How to build sessions.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSettings {
    pub target: ExecutionTarget,
    /// ONNX Runtime intra-op threads; 0 = one per physical core.
    pub intra_threads: usize,
    /// Explicit ONNX Runtime library path (else the standard search).
    pub ort_library: Option<PathBuf>,
    /// With `target = Cuda`: fail instead of falling back to CPU when CUDA cannot be used.
    pub require_gpu: bool,
    /// With `target = Cuda`: which GPU.
    pub device_id: i32,
    /// Intra-op threads spin while waiting for work (ONNX Runtime's default).
    pub intra_op_spinning: bool,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            target: ExecutionTarget::Cpu,
            intra_threads: 0,
            ort_library: None,
            require_gpu: false,
            device_id: 0,
            intra_op_spinning: true,
        }
    }
}

/// Logits and probabilities of one batch, row-major `[rows, classes]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelOutput {
    pub rows: usize,
    pub classes: usize,
    pub logits: Vec<f32>,
    pub probabilities: Vec<f32>,
}

impl ModelOutput {
    /// Probabilities of row `i`.
    pub fn probs(&self, i: usize) -> &[f32] {
        &self.probabilities[i * self.classes..(i + 1) * self.classes]
    }

    /// Logits of row `i`.
    pub fn logits_row(&self, i: usize) -> &[f32] {
        &self.logits[i * self.classes..(i + 1) * self.classes]
    }

    /// Index and probability of the most likely class of row `i`.
    pub fn argmax(&self, i: usize) -> (usize, f32) {
        self.probs(i)
            .iter()
            .copied()
            .enumerate()
            .fold((0, f32::MIN), |best, (j, p)| if p > best.1 { (j, p) } else { best })
    }
}

/// One ONNX graph in an ONNX Runtime session: `[batch, seq]` ids and mask in, logits and
/// probabilities out. It knows nothing of model kinds; the kinds in [`crate::models`] wrap it.
pub struct OnnxSession {
    path: PathBuf,
    /// ORT's `run` needs `&mut`; the lock is uncontended (one inference thread per model).
    session: Mutex<Session>,
    uses_token_types: bool,
    classes: usize,
    /// The execution provider actually in use.
    pub target: ExecutionTarget,
}

impl std::fmt::Debug for OnnxSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxSession").field("path", &self.path).field("target", &self.target).finish()
    }
}

fn ort_err(context: &str, path: &Path) -> impl Fn(ort::Error<ort::session::builder::SessionBuilder>) -> Error {
    let (context, path) = (context.to_string(), path.to_path_buf());
    move |e| Error::model(&path, format!("{context}: {e}"))
}

impl OnnxSession {
    /// Opens `model` (an ONNX file) for a model with `classes` output classes.
    pub fn open(model: &Path, classes: usize, settings: &SessionSettings) -> Result<Self> {
        let (session, target) = build_session(model, settings)?;
        let uses_token_types = session.inputs().iter().any(|i| i.name() == names::TOKEN_TYPE_IDS);
        for required in [names::INPUT_IDS, names::ATTENTION_MASK] {
            if !session.inputs().iter().any(|i| i.name() == required) {
                return Err(Error::model(model, format!("the graph has no input `{required}`")));
            }
        }
        Ok(Self { path: model.to_path_buf(), session: Mutex::new(session), uses_token_types, classes, target })
    }

    /// Runs one padded batch.
    pub fn run(&self, batch: &PaddedBatch) -> Result<ModelOutput> {
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let shape = [batch.batch as i64, batch.seq as i64];
        let ids = TensorRef::from_array_view((shape, batch.input_ids.as_slice()))?;
        let mask = TensorRef::from_array_view((shape, batch.attention_mask.as_slice()))?;
        let outputs = if self.uses_token_types {
            let types = TensorRef::from_array_view((shape, batch.token_type_ids.as_slice()))?;
            session.run(
                ort::inputs![names::INPUT_IDS => ids, names::ATTENTION_MASK => mask, names::TOKEN_TYPE_IDS => types],
            )?
        } else {
            session.run(ort::inputs![names::INPUT_IDS => ids, names::ATTENTION_MASK => mask])?
        };
        let (logit_shape, logits) = outputs[names::LOGITS].try_extract_tensor::<f32>()?;
        let (_, probabilities) = outputs[names::PROBABILITIES].try_extract_tensor::<f32>()?;
        let classes = logit_shape.last().copied().unwrap_or(0) as usize;
        if classes != self.classes {
            return Err(Error::model(
                &self.path,
                format!("the graph produces {classes} classes but labels.json has {}", self.classes),
            ));
        }
        Ok(ModelOutput { rows: batch.batch, classes, logits: logits.to_vec(), probabilities: probabilities.to_vec() })
    }
}

/// Builds an ORT session for `model`, on CUDA when asked and possible, else on CPU.
pub fn build_session(model: &Path, settings: &SessionSettings) -> Result<(Session, ExecutionTarget)> {
    let env = crate::runtime::environment(settings.ort_library.as_deref())?;
    let threads = if settings.intra_threads == 0 { num_cpus::get_physical().max(1) } else { settings.intra_threads };
    let builder = Session::builder(env)?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(ort_err("setting optimization level", model))?
        .with_intra_threads(threads)
        .map_err(ort_err("setting intra-op threads", model))?
        .with_intra_op_spinning(settings.intra_op_spinning)
        .map_err(ort_err("setting intra-op spinning", model))?;
    let mut target = ExecutionTarget::Cpu;
    // CUDA when asked and possible; otherwise one clear line and CPU — or, with `require_gpu`,
    // an error naming why.
    let fallback = |builder, why: String| -> Result<_> {
        if settings.require_gpu {
            return Err(Error::config("model.require_gpu", format!("CUDA was required but cannot be used: {why}")));
        }
        tracing::warn!("CUDA requested but {why}; using CPU");
        Ok(builder)
    };
    let builder = if settings.target == ExecutionTarget::Cuda {
        match ort::ep::CUDA::is_available() {
            Ok(true) if let Err(why) = crate::runtime::preload_cuda_libraries() => fallback(builder, why)?,
            Ok(true) => {
                let ep = ort::ep::CUDA::default().with_device_id(settings.device_id).build().error_on_failure();
                match builder.clone().with_execution_providers([ep]) {
                    Ok(b) => {
                        target = ExecutionTarget::Cuda;
                        b
                    }
                    Err(e) => fallback(builder, format!("the CUDA execution provider failed to load ({e})"))?,
                }
            }
            _ => fallback(
                builder,
                "this ONNX Runtime build has no CUDA support (`bash scripts/provision.sh gpu` installs one)".into(),
            )?,
        }
    } else {
        builder
    };
    let mut builder = builder;
    let session = builder.commit_from_file(model).map_err(|e| Error::model(model, format!("cannot load: {e}")))?;
    tracing::info!(
        model = %model.display(),
        execution_provider = if target == ExecutionTarget::Cuda { "CUDA" } else { "CPU" },
        intra_threads = threads,
        "ONNX Runtime session ready"
    );
    Ok((session, target))
}
