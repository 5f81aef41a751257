//! Trusted-label intake: the Kafka consumer hands every trusted label and every correction to
//! this thread through a bounded channel, so label store appends, flushes, compaction and the
//! recent-texts cache never run on the consumer thread. A full channel slows the consumer
//! (backpressure) rather than dropping labels.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
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

/// Starts the intake thread; it ends when every sender is dropped, after the last event.
pub fn start(store: Arc<LabelStore>, settings: IntakeSettings) -> Result<(flume::Sender<LabelEvent>, JoinHandle<()>)> {
    let (tx, rx) = flume::bounded::<LabelEvent>(settings.queue.max(1));
    let handle = std::thread::Builder::new()
        .name("prodcat-label-intake".into())
        .spawn(move || {
            let mut recent =
                RecentTexts { map: HashMap::new(), order: VecDeque::new(), capacity: settings.recent_capacity };
            for event in rx.iter() {
                match event {
                    LabelEvent::Seen { id, text, trusted } => {
                        if let Some(label) = trusted
                            && let Err(e) = store.append(&id, &text, &label, LabelSource::Record)
                        {
                            tracing::warn!(error = %e, "label store append failed");
                        }
                        if settings.remember_texts {
                            recent.insert(id, text);
                        }
                    }
                    LabelEvent::Feedback { payload } => {
                        apply_feedback(payload.as_deref(), &recent, &store, &settings.id_field);
                    }
                }
            }
        })
        .map_err(|e| Error::thread("starting the label intake", e))?;
    Ok((tx, handle))
}

/// Applies one correction from the feedback topic to the label store.
fn apply_feedback(payload: Option<&[u8]>, recent: &RecentTexts, store: &LabelStore, id_field: &str) {
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
        return;
    };
    let (Some(id), Some(label)) = (field(&v, id_field), field(&v, "label")) else {
        tracing::warn!("feedback message without `{id_field}` and `label`; ignored");
        return;
    };
    let text = field(&v, "title").or_else(|| field(&v, "text")).or_else(|| recent.map.get(&id).cloned());
    match text {
        Some(text) if !text.is_empty() && !label.is_empty() => {
            if let Err(e) = store.append(&id, &text, &label, LabelSource::Feedback) {
                tracing::warn!(error = %e, "label store append failed");
            }
        }
        _ => tracing::warn!(%id, "feedback for a product whose text is unknown (send `title` with it); ignored"),
    }
}
