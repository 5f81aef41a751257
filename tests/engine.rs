//! The labeling engine on its own: order, completeness, the streaming deadline, backpressure.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use prodcat::common::BatchLimits;
use prodcat::metrics::Metrics;
use prodcat::pipeline::{EngineSettings, LabelingEngine, TextChunk};
use prodcat::serve::{ModelSlot, SessionSettings};

fn slot(fx: &Fixture) -> ModelSlot {
    let registry = tiny_registry(fx);
    ModelSlot::new(prodcat::models::open(&registry, &SessionSettings::default()).unwrap())
}

#[test]
fn chunks_come_back_complete_and_in_order() {
    let fx = Fixture::new(300);
    let settings =
        EngineSettings { limits: BatchLimits { max_tokens: 256, max_records: 16 }, window: 100, ..Default::default() };
    let metrics = Arc::new(Metrics::new());
    let (tx, engine) = LabelingEngine::<usize>::start(slot(&fx), settings, metrics.clone()).unwrap();
    let rx = engine.receiver();
    let producer = std::thread::spawn(move || {
        for c in 0..60usize {
            // Chunk sizes vary from 0 to 40 texts; the texts come from the synthetic catalogue.
            let n = (c * 7) % 41;
            let texts = (0..n)
                .map(|i| {
                    format!(
                        "{} {}",
                        ["smartphone 5g", "laptop ssd", "fridge freezer", "running shoe", "paperback novel"]
                            [(c + i) % 5],
                        i
                    )
                })
                .collect();
            tx.send(TextChunk { texts, payload: c, flush: c % 13 == 0 }).unwrap();
        }
    });
    let mut expected = 0usize;
    for labeled in rx.iter() {
        let labeled = labeled.unwrap();
        assert_eq!(labeled.payload, expected, "chunks out of order");
        assert_eq!(labeled.predictions.len(), labeled.texts.len());
        for (text, p) in labeled.texts.iter().zip(&labeled.predictions) {
            assert!(p.confidence > 0.0 && p.confidence <= 1.0);
            assert_eq!(p.top_k.len(), 3);
            assert_eq!(p.top_k[0].0, p.label_id);
            assert!(p.top_k.windows(2).all(|w| w[0].1 >= w[1].1));
            assert_eq!(p.model.version, "v1");
            let _ = text;
        }
        expected += 1;
    }
    producer.join().unwrap();
    assert_eq!(expected, 60);
    engine.join();
    let rendered = metrics.render();
    assert!(rendered.contains("prodcat_batch_records_count"), "{rendered}");
}

#[test]
fn a_lone_record_is_labeled_within_the_wait_bound() {
    let fx = Fixture::new(300);
    let settings = EngineSettings { window: 10_000, max_wait: Duration::from_millis(30), ..Default::default() };
    let (tx, engine) = LabelingEngine::<()>::start(slot(&fx), settings, Arc::new(Metrics::new())).unwrap();
    let started = Instant::now();
    tx.send(TextChunk { texts: vec!["smartphone dual sim".into()], payload: (), flush: false }).unwrap();
    let labeled =
        engine.receiver().recv_timeout(Duration::from_secs(5)).expect("no output without a full window").unwrap();
    assert_eq!(labeled.predictions.len(), 1);
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(tx);
    engine.join();
}

/// A model that records its batch sizes and holds its first batch until released.
#[derive(Debug)]
struct Held {
    inner: Arc<dyn prodcat::serve::Model>,
    sizes: std::sync::Mutex<Vec<usize>>,
    release: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

impl prodcat::serve::Model for Held {
    fn version(&self) -> &prodcat::registry::ModelVersion {
        self.inner.version()
    }
    fn labels(&self) -> &[String] {
        self.inner.labels()
    }
    fn prepare(&self, texts: &[&str]) -> prodcat::error::Result<Vec<prodcat::tokenize::TokenizedText>> {
        self.inner.prepare(texts)
    }
    fn score(
        &self,
        batch: &prodcat::tokenize::PaddedBatch,
        texts: &[&str],
    ) -> prodcat::error::Result<prodcat::serve::Scored> {
        self.sizes.lock().unwrap().push(batch.batch);
        if let Some(release) = self.release.lock().unwrap().take() {
            let _ = release.recv();
        }
        self.inner.score(batch, texts)
    }
}

#[test]
fn records_arriving_while_a_batch_runs_form_one_batch() {
    // Continuous batching: while the inference thread is busy the next window grows until it is
    // free; `max_wait` does not cut it into small batches that would queue behind the running one.
    let fx = Fixture::new(300);
    let inner = prodcat::models::open(&tiny_registry(&fx), &SessionSettings::default()).unwrap();
    let (release_tx, release_rx) = std::sync::mpsc::channel();
    let held = Arc::new(Held { inner, sizes: Default::default(), release: std::sync::Mutex::new(Some(release_rx)) });
    let settings = EngineSettings { window: 1000, max_wait: Duration::from_millis(2), ..Default::default() };
    let (tx, engine) =
        LabelingEngine::<usize>::start(ModelSlot::new(held.clone()), settings, Arc::new(Metrics::new())).unwrap();
    let send =
        |i: usize| tx.send(TextChunk { texts: vec![format!("smartphone dual sim {i}")], payload: i, flush: false });
    send(0).unwrap();
    // The first batch (one record) is running and held: ten more arrive 10 ms apart, five times
    // the wait bound.
    let deadline = Instant::now() + Duration::from_secs(10);
    while held.sizes.lock().unwrap().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    for i in 1..=10 {
        std::thread::sleep(Duration::from_millis(10));
        send(i).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    release_tx.send(()).unwrap();
    let rx = engine.receiver();
    for i in 0..=10 {
        let labeled = rx.recv_timeout(Duration::from_secs(10)).expect("every record comes back").unwrap();
        assert_eq!(labeled.payload, i);
    }
    drop(tx);
    engine.join();
    assert_eq!(*held.sizes.lock().unwrap(), vec![1, 10]);
}
