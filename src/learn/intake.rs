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
//! Corrections reach it already resolved: the consumer decodes them
//! ([`crate::pipeline::kafka::decode::KnownTexts`]) and dead-letters those it cannot use.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::store::{LabelSource, LabelStore};
use crate::error::{Error, Result};

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
