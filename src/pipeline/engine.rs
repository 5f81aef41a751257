//! The labeling engine: the middle of the data path, between a source and the sinks.
//!
//! ```text
//! chunks ──► prep thread ──────────────► inference thread ──► labeled chunks (same order)
//!            tokenize, window,             run the model,
//!            token-budget batches          assemble per chunk
//! ```
//! Both stages run on their own OS threads (as in text-embeddings-inference), connected by
//! bounded channels, so a slow sink slows the source and memory stays bounded.
//!
//! Continuous batching: the prep thread dispatches what it holds the moment the inference thread
//! has nothing to run, so a lone record is labeled at once; while a batch runs, the next one grows
//! (up to `window` texts), so under load batches fill by themselves. The prep thread
//! takes the current model from the [`ModelSlot`] for each window; a batch carries the model it
//! was prepared for, so a hot swap never mixes tokenizers and batches in flight finish on the old
//! model.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::BatchLimits;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::serve::{Model, ModelIdentity, ModelSlot, Prediction, plan_batches};
use crate::tokenize::{PaddedBatch, TokenizedText};

/// Engine tuning.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSettings {
    pub limits: BatchLimits,
    /// Texts collected before sorting and batching.
    pub window: usize,
    /// Windowed batching (`continuous = false`) only: longest a text waits in a window that is
    /// not full. Continuous batching has no deadline: an idle inference thread takes the window at
    /// once, a busy one takes it when it finishes.
    #[serde(with = "millis")]
    pub max_wait: Duration,
    /// Top-k classes kept per prediction.
    pub top_k: usize,
    /// Chunks buffered before the prep thread (backpressure on the source).
    pub input_chunks: usize,
    /// Batches buffered between the prep and inference threads.
    pub queued_batches: usize,
    /// Dispatch as soon as the inference thread is free instead of waiting for the window to
    /// fill or `max_wait` to pass.
    pub continuous: bool,
}

impl EngineSettings {
    /// Texts sorted per window on a GPU (several of [`BatchLimits::gpu`]'s batches).
    pub const GPU_WINDOW: usize = 8192;
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            limits: BatchLimits::default(),
            window: 1024,
            max_wait: Duration::from_millis(20),
            top_k: 3,
            input_chunks: 4,
            queued_batches: 32,
            continuous: true,
        }
    }
}

/// `Duration` as integer milliseconds in config files.
pub mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// Texts to label and whatever the caller needs back with them.
#[derive(Debug)]
pub struct TextChunk<P> {
    pub texts: Vec<String>,
    pub payload: P,
    /// Batch everything waiting now instead of waiting for a full window (end of a file, ...).
    pub flush: bool,
}

/// A chunk with one prediction per text, in text order.
#[derive(Debug)]
pub struct LabeledChunk<P> {
    pub texts: Vec<String>,
    pub payload: P,
    pub predictions: Vec<Prediction>,
}

enum Work<P> {
    Chunk { seq: u64, texts: Vec<String>, payload: P },
    Batch { model: Arc<dyn Model>, identity: Arc<ModelIdentity>, items: Vec<(u64, usize)>, batch: PaddedBatch },
}

/// The running engine. It ends once every sender returned by [`LabelingEngine::start`] is
/// dropped and the chunks sent before are labeled and received.
pub struct LabelingEngine<P> {
    output: flume::Receiver<Result<LabeledChunk<P>>>,
    threads: Vec<JoinHandle<()>>,
}

impl<P: Send + 'static> LabelingEngine<P> {
    /// Starts the prep and inference threads serving whatever `slot` holds; returns the input
    /// side and the engine (whose receiver yields labeled chunks in input order).
    pub fn start(
        slot: ModelSlot,
        settings: EngineSettings,
        metrics: Arc<Metrics>,
    ) -> Result<(flume::Sender<TextChunk<P>>, Self)> {
        let (input_tx, input_rx) = flume::bounded::<TextChunk<P>>(settings.input_chunks.max(1));
        let (work_tx, work_rx) = flume::bounded::<Work<P>>(settings.queued_batches.max(1));
        let (out_tx, out_rx) = flume::bounded::<Result<LabeledChunk<P>>>(settings.input_chunks.max(1));
        let busy = Busy::default();
        let infer_busy = busy.clone();
        let prep_settings = settings.clone();
        let prep_metrics = metrics.clone();
        let prep_out = out_tx.clone();
        let spawn_err = |e: std::io::Error| Error::thread("starting an engine thread", e);
        let prep = std::thread::Builder::new()
            .name("prodcat-prep".into())
            .spawn(move || {
                if let Err(e) = prep_loop(&slot, &prep_settings, &prep_metrics, &input_rx, &work_tx, &busy) {
                    let _ = prep_out.send(Err(e));
                }
            })
            .map_err(spawn_err)?;
        let infer = std::thread::Builder::new()
            .name("prodcat-infer".into())
            .spawn(move || {
                if let Err(e) = infer_loop(&settings, &metrics, &work_rx, &out_tx, &infer_busy) {
                    let _ = out_tx.send(Err(e));
                }
            })
            .map_err(spawn_err)?;
        Ok((input_tx, Self { output: out_rx, threads: vec![prep, infer] }))
    }

    /// The receiving side of labeled chunks.
    pub fn receiver(&self) -> flume::Receiver<Result<LabeledChunk<P>>> {
        self.output.clone()
    }

    /// Waits for the engine threads to end (after the senders are dropped and output drained).
    pub fn join(mut self) {
        drop(self.output);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Batches handed to the inference thread and not yet finished, and a signal when that count
/// drops to zero (the inference thread is free: the prep thread dispatches at once).
#[derive(Clone)]
struct Busy {
    batches: Arc<std::sync::atomic::AtomicUsize>,
    idle_tx: flume::Sender<()>,
    idle_rx: flume::Receiver<()>,
}

impl Default for Busy {
    fn default() -> Self {
        let (idle_tx, idle_rx) = flume::bounded(1);
        Self { batches: Arc::default(), idle_tx, idle_rx }
    }
}

impl Busy {
    fn running(&self) -> bool {
        self.batches.load(std::sync::atomic::Ordering::Acquire) > 0
    }

    fn sent(&self) {
        self.batches.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    fn finished(&self) {
        if self.batches.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
            let _ = self.idle_tx.try_send(());
        }
    }
}

struct Pending {
    seq: u64,
    index: usize,
    tokens: TokenizedText,
}

fn prep_loop<P>(
    slot: &ModelSlot,
    settings: &EngineSettings,
    metrics: &Metrics,
    input: &flume::Receiver<TextChunk<P>>,
    work: &flume::Sender<Work<P>>,
    busy: &Busy,
) -> Result<()> {
    let mut seq = 0u64;
    let mut window: Vec<Pending> = Vec::new();
    let mut window_model: Option<(Arc<dyn Model>, Arc<ModelIdentity>)> = None;
    let mut window_started = Instant::now();
    let closed = || Error::Stopped("the labeling engine's inference thread");
    loop {
        let received = if window.is_empty() {
            input.recv().map_err(|_| flume::RecvTimeoutError::Disconnected)
        } else if settings.continuous && !busy.running() {
            // The inference thread is free: what is here goes now.
            flush(&mut window, &window_model, settings, metrics, work, busy)?;
            continue;
        } else if settings.continuous {
            // A batch is running: grow this window until it finishes (or the window is full). A
            // deadline would only split it: a batch queued behind the running one starts no
            // sooner, and many small batches cost more than one (a transformer at half load
            // fell behind on batches of one or two, cut every `max_wait`). A stale signal is
            // cleared first, then the count looked at again, so a batch that finished in
            // between is not waited for.
            let _ = busy.idle_rx.try_recv();
            if !busy.running() {
                flush(&mut window, &window_model, settings, metrics, work, busy)?;
                continue;
            }
            flume::Selector::new()
                .recv(input, |r| r.map_err(|_| flume::RecvTimeoutError::Disconnected))
                .recv(&busy.idle_rx, |_| Err(flume::RecvTimeoutError::Timeout))
                .wait()
        } else {
            input.recv_deadline(window_started + settings.max_wait)
        };
        let chunk = match received {
            Ok(chunk) => chunk,
            Err(flume::RecvTimeoutError::Timeout) => {
                if !settings.continuous || !busy.running() {
                    flush(&mut window, &window_model, settings, metrics, work, busy)?;
                }
                continue;
            }
            Err(flume::RecvTimeoutError::Disconnected) => {
                flush(&mut window, &window_model, settings, metrics, work, busy)?;
                return Ok(());
            }
        };
        let current = slot.current();
        if window_model.as_ref().is_some_and(|(m, _)| !Arc::ptr_eq(m, &current.0)) {
            // The model changed: batch what was prepared for the old one first.
            flush(&mut window, &window_model, settings, metrics, work, busy)?;
        }
        let started = Instant::now();
        let texts: Vec<&str> = chunk.texts.iter().map(String::as_str).collect();
        let prepared = current.0.prepare(&texts)?;
        metrics.stage_seconds.with_label_values(&["tokenize"]).observe(started.elapsed().as_secs_f64());
        if window.is_empty() {
            window_started = Instant::now();
        }
        window.extend(prepared.into_iter().enumerate().map(|(index, tokens)| Pending { seq, index, tokens }));
        window_model = Some(current);
        let flush_now = chunk.flush || window.len() >= settings.window;
        work.send(Work::Chunk { seq, texts: chunk.texts, payload: chunk.payload }).map_err(|_| closed())?;
        seq += 1;
        if flush_now {
            flush(&mut window, &window_model, settings, metrics, work, busy)?;
        }
    }
}

fn flush<P>(
    window: &mut Vec<Pending>,
    model: &Option<(Arc<dyn Model>, Arc<ModelIdentity>)>,
    settings: &EngineSettings,
    metrics: &Metrics,
    work: &flume::Sender<Work<P>>,
    busy: &Busy,
) -> Result<()> {
    let Some((model, identity)) = model else { return Ok(()) };
    if window.is_empty() {
        return Ok(());
    }
    let lengths: Vec<usize> = window.iter().map(|p| p.tokens.len()).collect();
    for plan in plan_batches(&lengths, settings.limits) {
        let batch = PaddedBatch::from_tokens(plan.iter().map(|&i| &window[i].tokens));
        metrics.batch_records.observe(batch.batch as f64);
        metrics.batch_tokens.observe((batch.batch * batch.seq) as f64);
        let items = plan.iter().map(|&i| (window[i].seq, window[i].index)).collect();
        busy.sent();
        work.send(Work::Batch { model: model.clone(), identity: identity.clone(), items, batch })
            .map_err(|_| Error::Stopped("the labeling engine's inference thread"))?;
    }
    window.clear();
    Ok(())
}

struct Assembly<P> {
    texts: Vec<String>,
    payload: P,
    predictions: Vec<Option<Prediction>>,
    missing: usize,
}

fn infer_loop<P>(
    settings: &EngineSettings,
    metrics: &Metrics,
    work: &flume::Receiver<Work<P>>,
    output: &flume::Sender<Result<LabeledChunk<P>>>,
    busy: &Busy,
) -> Result<()> {
    let mut open: BTreeMap<u64, Assembly<P>> = BTreeMap::new();
    let mut next_out = 0u64;
    for item in work.iter() {
        match item {
            Work::Chunk { seq, texts, payload } => {
                let n = texts.len();
                open.insert(seq, Assembly { texts, payload, predictions: vec![None; n], missing: n });
            }
            Work::Batch { model, identity, items, batch } => {
                let started = Instant::now();
                let texts: Vec<&str> = items
                    .iter()
                    .map(|(seq, i)| open.get(seq).map(|a| a.texts[*i].as_str()).unwrap_or_default())
                    .collect();
                let scored = model.score(&batch, &texts);
                busy.finished();
                let scored = scored?;
                let (scores, stages) = (&scored.output, &scored.stages);
                metrics.stage_seconds.with_label_values(&["infer"]).observe(started.elapsed().as_secs_f64());
                for (row, (seq, index)) in items.into_iter().enumerate() {
                    if let Some(a) = open.get_mut(&seq) {
                        let prediction = Prediction::of_row(&identity, scores.probs(row), settings.top_k, stages[row]);
                        a.predictions[index] = Some(prediction);
                        a.missing -= 1;
                    }
                }
            }
        }
        // Emit finished chunks strictly in arrival order.
        while open.get(&next_out).is_some_and(|a| a.missing == 0) {
            let Some(a) = open.remove(&next_out) else { break };
            let predictions = a.predictions.into_iter().flatten().collect();
            if output.send(Ok(LabeledChunk { texts: a.texts, payload: a.payload, predictions })).is_err() {
                return Ok(());
            }
            next_out += 1;
        }
    }
    Ok(())
}
