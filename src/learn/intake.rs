//! Trusted-label intake: the Kafka consumer hands every trusted label and every correction to
//! this thread through a bounded channel, so label store appends, flushes, compaction and the
//! recent-texts cache never run on the consumer thread. A full channel slows the consumer
//! (backpressure) rather than dropping labels.
//!
//! Durability: before the pipeline commits an offset it asks a [`LabelBarrier`] to wait. The
//! barrier is an event in the same FIFO channel, so when the intake reaches it every label handed
//! over before has been appended; the intake then fsyncs the store's write-ahead segment once
//! (group commit) and answers. An append that failed (disk full, I/O error) makes every later
//! barrier fail, so the offset of a label that is not durable is never committed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::store::{LabelSource, LabelStore};
use crate::error::{Error, Result};

/// What the consumer hands over.
#[derive(Debug)]
pub enum LabelEvent {
    /// A decoded product record: its text (for corrections that name only the id) and its
    /// trusted label, if it carries one.
    Seen { id: String, text: String, trusted: Option<String> },
    /// A message of the feedback topic: a correction `{id, label[, title]}`.
    Feedback { payload: Option<Vec<u8>> },
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

/// Product texts seen recently, so a correction `{id, label}` can find its text.
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

/// Settings of the intake thread.
#[derive(Debug, Clone)]
pub struct IntakeSettings {
    /// Field of a correction holding the product id.
    pub id_field: String,
    /// Keep recent texts for corrections (only when a feedback topic is consumed).
    pub remember_texts: bool,
    /// Recent texts kept.
    pub recent_capacity: usize,
    /// Events buffered between the consumer and the intake thread.
    pub queue: usize,
}

/// The running intake: its sender (the consumer's; the thread ends when it is dropped, after the
/// last event, with a final sync), a barrier for committers, and the thread.
pub struct Intake {
    pub events: flume::Sender<LabelEvent>,
    pub barrier: LabelBarrier,
    pub handle: JoinHandle<()>,
}

/// Starts the intake thread.
pub fn start(store: Arc<LabelStore>, settings: IntakeSettings) -> Result<Intake> {
    let (tx, rx) = flume::bounded::<LabelEvent>(settings.queue.max(1));
    let finished = Arc::new(Mutex::new(None));
    let barrier = LabelBarrier { events: tx.downgrade(), finished: finished.clone() };
    let handle = std::thread::Builder::new()
        .name("prodcat-label-intake".into())
        .spawn(move || {
            let mut recent =
                RecentTexts { map: HashMap::new(), order: VecDeque::new(), capacity: settings.recent_capacity };
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
                    LabelEvent::Seen { id, text, trusted } => {
                        if let Some(label) = trusted {
                            append(&mut broken, &id, &text, &label, LabelSource::Record);
                        }
                        if settings.remember_texts {
                            recent.insert(id, text);
                        }
                    }
                    LabelEvent::Feedback { payload } => {
                        if let Some((id, text, label)) = parse_feedback(payload.as_deref(), &recent, &settings.id_field)
                        {
                            append(&mut broken, &id, &text, &label, LabelSource::Feedback);
                        }
                    }
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

/// The product id, text and label of a correction from the feedback topic (`None`, logged: not
/// usable).
fn parse_feedback(payload: Option<&[u8]>, recent: &RecentTexts, id_field: &str) -> Option<(String, String, String)> {
    let parsed: Option<serde_json::Value> = payload.and_then(|p| serde_json::from_slice(p).ok());
    let field = |v: &serde_json::Value, k: &str| {
        v.get(k).and_then(|x| match x {
            serde_json::Value::String(s) => Some(s.trim().to_string()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
    };
    let Some(v) = parsed else {
        tracing::warn!("feedback message is not a JSON object; ignored");
        return None;
    };
    let (Some(id), Some(label)) = (field(&v, id_field), field(&v, "label")) else {
        tracing::warn!("feedback message without `{id_field}` and `label`; ignored");
        return None;
    };
    let text = field(&v, "title").or_else(|| field(&v, "text")).or_else(|| recent.map.get(&id).cloned());
    match text {
        Some(text) if !text.is_empty() && !label.is_empty() => Some((id, text, label)),
        _ => {
            tracing::warn!(%id, "feedback for a product whose text is unknown (send `title` with it); ignored");
            None
        }
    }
}
