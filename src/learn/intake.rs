//! Trusted-label intake: the Kafka consumer hands every trusted label and every correction to
//! this thread through a bounded channel, so label store appends, flushes and compaction never
//! run on the consumer thread. A full channel slows the consumer (backpressure) rather than
//! dropping labels.
//!
//! Durability: before the pipeline commits an offset it asks a [`LabelBarrier`] to wait. The
//! barrier is an event in the same FIFO channel, so when the intake reaches it every label handed
//! over before has been appended; the intake then fsyncs the store's write-ahead segment once
//! (group commit) and answers. An append that failed (disk full, I/O error) makes every later
//! barrier fail, so the offset of a label that is not durable is never committed.
//!
//! Corrections (`{id, label[, title]}` on the feedback topic) are resolved on the consumer thread
//! by [`KnownTexts`], so one that cannot be used becomes a dead letter with its reason instead of
//! a log line: the text comes from the correction itself, else from the products this instance
//! read recently, else from the label store (a product labeled before, by any instance sharing
//! it); a product found nowhere is dead-lettered as `unknown_product`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::store::{LabelSource, LabelStore};
use crate::error::{Error, Result};
use crate::pipeline::kafka::decode::Rejection;
use crate::pipeline::text::RejectReason;

/// What the consumer hands over.
#[derive(Debug)]
pub enum LabelEvent {
    /// A trusted label: a record's own category, or a resolved correction.
    Label { id: String, text: String, label: String, source: LabelSource },
    /// Make every label handed over before this event durable, then answer.
    Sync(flume::Sender<std::result::Result<(), String>>),
}

/// Waits until every label handed to the intake so far is durable in the label store. Holds the
/// channel weakly, so the intake still ends when the consumer's sender is dropped; once it has
/// ended, `wait` answers with the result of its final sync.
#[derive(Clone)]
pub struct LabelBarrier {
    events: flume::WeakSender<LabelEvent>,
    finished: Arc<Mutex<Option<std::result::Result<(), String>>>>,
}

impl LabelBarrier {
    /// Blocks until the labels handed over before this call are fsynced (or an append or sync
    /// failed: then an error, and the caller must not commit).
    pub fn wait(&self) -> Result<()> {
        let stopped = || {
            let finished = self.finished.lock().unwrap_or_else(|p| p.into_inner()).clone();
            finished.unwrap_or_else(|| Err("the label intake stopped".into()))
        };
        let answer = match self.events.upgrade() {
            Some(events) => {
                let (tx, rx) = flume::bounded(1);
                match events.send(LabelEvent::Sync(tx)) {
                    Ok(()) => rx.recv().unwrap_or_else(|_| stopped()),
                    Err(_) => stopped(),
                }
            }
            None => stopped(),
        };
        answer.map_err(|message| Error::Pipeline { stage: "label store", message })
    }
}

/// Product texts seen recently, bounded (oldest forgotten first).
struct RecentTexts {
    map: HashMap<String, String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl RecentTexts {
    fn insert(&mut self, id: String, text: String) {
        if self.map.insert(id.clone(), text).is_none() {
            self.order.push_back(id);
            if self.order.len() > self.capacity
                && let Some(old) = self.order.pop_front()
            {
                self.map.remove(&old);
            }
        }
    }
}

/// Where a correction finds its product's text (see the module documentation). Owned by the
/// consumer thread, which both remembers products and resolves corrections.
pub struct KnownTexts {
    recent: RecentTexts,
    store: Arc<LabelStore>,
    id_field: String,
}

/// A usable correction.
#[derive(Debug, Clone, PartialEq)]
pub struct Correction {
    pub id: String,
    pub text: String,
    pub label: String,
}

impl KnownTexts {
    /// Remembers up to `capacity` recent product texts; falls back to `store`.
    pub fn new(store: Arc<LabelStore>, id_field: &str, capacity: usize) -> Self {
        Self {
            recent: RecentTexts { map: HashMap::new(), order: VecDeque::new(), capacity: capacity.max(1) },
            store,
            id_field: id_field.to_string(),
        }
    }

    /// Remembers a product the pipeline read.
    pub fn seen(&mut self, id: &str, text: &str) {
        self.recent.insert(id.to_string(), text.to_string());
    }

    /// The correction in a feedback message, or why it cannot be used (the dead letter's reason).
    pub fn resolve(&self, payload: Option<&[u8]>) -> std::result::Result<Correction, Rejection> {
        let reject = |reason, detail: String| Rejection { reason, detail };
        let bytes = payload.unwrap_or_default();
        let v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| reject(RejectReason::InvalidJson, format!("correction: {e}")))?;
        if !v.is_object() {
            return Err(reject(RejectReason::NotAnObject, "correction: expected a JSON object".into()));
        }
        let field = |k: &str| {
            v.get(k).and_then(|x| match x {
                serde_json::Value::String(s) => Some(s.trim().to_string()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
        };
        let id = field(&self.id_field)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| reject(RejectReason::MissingId, format!("correction without `{}`", self.id_field)))?;
        let label = field("label")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| reject(RejectReason::MissingLabel, format!("correction of `{id}` without `label`")))?;
        let given = field("title").or_else(|| field("text")).filter(|s| !s.is_empty());
        let text = match given {
            Some(text) => Some(text),
            None => self.recent.map.get(&id).cloned(),
        };
        let text = match text {
            Some(text) => text,
            None => self
                .store
                .text_of(&id)
                .map_err(|e| reject(RejectReason::UnknownProduct, format!("label store lookup failed: {e}")))?
                .ok_or_else(|| {
                    reject(
                        RejectReason::UnknownProduct,
                        format!(
                            "no text for product `{id}`: not read recently by this instance, not in the label store \
                             (send `title` with the correction)"
                        ),
                    )
                })?,
        };
        Ok(Correction { id, text, label })
    }
}

/// The running intake: its sender (the consumer's; the thread ends when it is dropped, after the
/// last event, with a final sync), a barrier for committers, and the thread.
pub struct Intake {
    pub events: flume::Sender<LabelEvent>,
    pub barrier: LabelBarrier,
    pub handle: JoinHandle<()>,
}

/// Starts the intake thread; `queue` events are buffered between the consumer and it.
pub fn start(store: Arc<LabelStore>, queue: usize) -> Result<Intake> {
    let (tx, rx) = flume::bounded::<LabelEvent>(queue.max(1));
    let finished = Arc::new(Mutex::new(None));
    let barrier = LabelBarrier { events: tx.downgrade(), finished: finished.clone() };
    let handle = std::thread::Builder::new()
        .name("prodcat-label-intake".into())
        .spawn(move || {
            // The first append that failed: no later barrier may pass.
            let mut broken: Option<String> = None;
            let append = |broken: &mut Option<String>, id: &str, text: &str, label: &str, source: LabelSource| {
                if let Err(e) = store.append(id, text, label, source) {
                    tracing::error!(error = %e, "label store append failed; offsets will not be committed past it");
                    broken.get_or_insert_with(|| format!("append failed: {e}"));
                }
            };
            let durable = |broken: &Option<String>| match broken {
                Some(message) => Err(message.clone()),
                None => store.sync().map_err(|e| format!("fsync of the write-ahead log failed: {e}")),
            };
            for event in rx.iter() {
                match event {
                    LabelEvent::Label { id, text, label, source } => append(&mut broken, &id, &text, &label, source),
                    LabelEvent::Sync(answer) => {
                        let _ = answer.send(durable(&broken));
                    }
                }
            }
            let last = durable(&broken);
            if let Err(e) = &last {
                tracing::error!(error = %e, "label store: the last labels are not durable");
            }
            *finished.lock().unwrap_or_else(|p| p.into_inner()) = Some(last);
        })
        .map_err(|e| Error::thread("starting the label intake", e))?;
    Ok(Intake { events: tx, barrier, handle })
}
