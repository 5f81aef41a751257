//! ONNX Runtime sessions: [`OnnxSession`] builds a session on the CPU or CUDA execution provider
//! (with a log line saying which one runs) and turns padded id batches into logits and
//! probabilities.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::ep::ExecutionProvider;
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{HasSelectedOutputs, OutputSelector, RunOptions, Session};
use ort::value::{Tensor, TensorRef};

use crate::common::names;
use crate::error::{Error, Result};
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
    /// Run through an I/O binding: inputs staged in memory the device reads directly (pinned host
    /// memory on CUDA), outputs bound to host memory and copied back once per batch. `None`: on
    /// for CUDA sessions, off for CPU ones (where plain `run` already reads the caller's buffers).
    pub io_binding: Option<bool>,
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
            io_binding: None,
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

    /// Rows `rows` of this output, in that order.
    pub fn select(&self, rows: &[usize]) -> ModelOutput {
        ModelOutput {
            rows: rows.len(),
            classes: self.classes,
            logits: rows.iter().flat_map(|&r| self.logits_row(r)).copied().collect(),
            probabilities: rows.iter().flat_map(|&r| self.probs(r)).copied().collect(),
        }
    }

    /// Index and probability of the most likely class of row `i`.
    pub fn argmax(&self, i: usize) -> (usize, f32) {
        self.probs(i)
            .iter()
            .copied()
            .enumerate()
            .fold((0, f32::MIN), |best, (j, p)| if p > best.1 { (j, p) } else { best })
    }

    /// Row `i`'s most likely class and the confidence a threshold compares: its probability, or
    /// with `level` = (taxonomy, N ≥ 1) the score of its level-N category (past the deepest
    /// level: its own).
    pub fn confidence(&self, i: usize, level: Option<(&crate::common::Taxonomy, usize)>) -> (usize, f32) {
        let (label, p) = self.argmax(i);
        match level {
            Some((taxonomy, n)) if n >= 1 && n <= taxonomy.levels.len() => {
                let node = taxonomy.levels[n - 1].of_class[label];
                (label, taxonomy.node_score(n - 1, node, self.probs(i)))
            }
            _ => (label, p),
        }
    }
}

/// One ONNX graph in an ONNX Runtime session: `[batch, seq]` ids and mask in, logits and
/// probabilities out. It knows nothing of model kinds; the kinds in [`crate::models`] wrap it.
pub struct OnnxSession {
    path: PathBuf,
    /// ORT's `run` needs `&mut`; the lock is uncontended (one inference thread per model).
    runner: Mutex<Runner>,
    uses_token_types: bool,
    classes: usize,
    /// The execution provider actually in use.
    pub target: ExecutionTarget,
}

struct Runner {
    session: Session,
    /// Where bound inputs are staged and outputs land, when runs go through an I/O binding (ORT's
    /// allocator handle is `Send` but not `Sync`, so it lives behind the lock with the session).
    binding: Option<BindingMemory>,
    /// Unbound runs compute only the outputs the data path reads (`logits`, `probabilities`),
    /// not a taxonomy graph's level scores.
    selected: RunOptions<HasSelectedOutputs>,
}

/// Memory of an I/O-bound session: an allocator for the inputs and where outputs are written.
struct BindingMemory {
    inputs: Allocator,
    outputs: MemoryInfo<'static>,
}

impl BindingMemory {
    /// Pinned host memory on CUDA (the device copies it in and out by DMA, without a staging
    /// copy); the session's own CPU allocator otherwise.
    fn new(session: &Session, target: ExecutionTarget, device_id: i32) -> ort::Result<Self> {
        let (device, id, input, output) = match target {
            ExecutionTarget::Cuda => {
                (AllocationDevice::CUDA_PINNED, device_id, MemoryType::CPUInput, MemoryType::CPUOutput)
            }
            ExecutionTarget::Cpu => (AllocationDevice::CPU, 0, MemoryType::Default, MemoryType::Default),
        };
        Ok(Self {
            inputs: Allocator::new(session, MemoryInfo::new(device.clone(), id, AllocatorType::Device, input)?)?,
            outputs: MemoryInfo::new(device, id, AllocatorType::Device, output)?,
        })
    }
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
        let binding = match settings.io_binding {
            Some(false) => None,
            None if target == ExecutionTarget::Cpu => None,
            asked => match BindingMemory::new(&session, target, settings.device_id) {
                Ok(memory) => Some(memory),
                Err(e) if asked.is_none() => {
                    // The default, not a request: run without the binding and say why.
                    tracing::warn!(model = %model.display(), "no I/O binding ({e}); batches use plain runs");
                    None
                }
                Err(e) => return Err(Error::model(model, format!("setting up the I/O binding: {e}"))),
            },
        };
        if binding.is_some() {
            tracing::info!(model = %model.display(), execution_provider = %target, "batches run through an I/O binding");
        }
        let selected = RunOptions::new()
            .map_err(|e| Error::model(model, format!("run options: {e}")))?
            .with_outputs(OutputSelector::no_default().with(names::LOGITS).with(names::PROBABILITIES));
        let runner = Mutex::new(Runner { session, binding, selected });
        Ok(Self { path: model.to_path_buf(), runner, uses_token_types, classes, target })
    }

    /// Whether runs go through an I/O binding.
    pub fn io_bound(&self) -> bool {
        self.runner.lock().unwrap_or_else(|p| p.into_inner()).binding.is_some()
    }

    /// Runs one padded batch.
    pub fn run(&self, batch: &PaddedBatch) -> Result<ModelOutput> {
        let mut runner = self.runner.lock().unwrap_or_else(|p| p.into_inner());
        let Runner { session, binding, selected } = &mut *runner;
        let shape = [batch.batch as i64, batch.seq as i64];
        let inputs = self.inputs(batch);
        if let Some(memory) = binding {
            let mut binding = session.create_binding()?;
            for (name, data) in inputs {
                let mut tensor = Tensor::<i64>::new(&memory.inputs, shape)?;
                tensor.extract_tensor_mut().1.copy_from_slice(data);
                binding.bind_input(name, &tensor)?;
            }
            for name in [names::LOGITS, names::PROBABILITIES] {
                binding.bind_output_to_device(name, &memory.outputs)?;
            }
            let outputs = session.run_binding(&binding)?;
            self.output(batch, &outputs)
        } else {
            let outputs = session.run_with_options(Self::values(shape, inputs)?, selected)?;
            self.output(batch, &outputs)
        }
    }

    /// The graph's inputs for `batch`, by name.
    fn inputs<'b>(&self, batch: &'b PaddedBatch) -> Vec<(&'static str, &'b Vec<i64>)> {
        let mut inputs = vec![(names::INPUT_IDS, &batch.input_ids), (names::ATTENTION_MASK, &batch.attention_mask)];
        if self.uses_token_types {
            inputs.push((names::TOKEN_TYPE_IDS, &batch.token_type_ids));
        }
        inputs
    }

    /// `inputs` as ORT values of `shape`, borrowing the batch's rows.
    fn values<'b>(
        shape: [i64; 2],
        inputs: Vec<(&'static str, &'b Vec<i64>)>,
    ) -> Result<Vec<(&'static str, TensorRef<'b, i64>)>> {
        inputs
            .into_iter()
            .map(|(name, data)| Ok((name, TensorRef::from_array_view((shape, data.as_slice()))?)))
            .collect()
    }

    /// The named float outputs of one padded batch (row-major), run without an I/O binding: for
    /// checking outputs the data path does not read (a taxonomy graph's level scores).
    pub fn run_outputs(&self, batch: &PaddedBatch, outputs: &[String]) -> Result<Vec<Vec<f32>>> {
        let mut runner = self.runner.lock().unwrap_or_else(|p| p.into_inner());
        let shape = [batch.batch as i64, batch.seq as i64];
        let ran = runner.session.run(Self::values(shape, self.inputs(batch))?)?;
        outputs
            .iter()
            .map(|name| match ran.get(name.as_str()) {
                Some(v) => Ok(v.try_extract_tensor::<f32>()?.1.to_vec()),
                None => Err(Error::model(&self.path, format!("the graph has no output `{name}`"))),
            })
            .collect()
    }

    /// Logits and probabilities of a finished run, checked against the model's class count.
    fn output(&self, batch: &PaddedBatch, outputs: &ort::session::SessionOutputs<'_>) -> Result<ModelOutput> {
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
