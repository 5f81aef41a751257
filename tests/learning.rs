//! Continuous learning: trusted labels → background training → gate → registry → hot swap, on a
//! tiny model; and the whole loop inside a running Kafka pipeline (real broker).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use prodcat::learn::watch::ModelWatcher;
use prodcat::learn::{Learner, Outcome, RegistryTarget, TrainingSection};
use prodcat::metrics::Metrics;
use prodcat::registry::{ModelCard, ModelVersion, files};
use prodcat::serve::{ModelSlot, SessionSettings, score_texts};
use prodcat::train::{DataSource, TrainJob, TrainSettings, fit};

fn settings() -> TrainSettings {
    TrainSettings { epochs: 3, learning_rate: 1e-2, max_length: 32, ..Default::default() }
}

/// Publishes a first model that has never seen `Books`.
fn model_without_books(fx: &Fixture) -> std::path::PathBuf {
    let all = fixture_data(fx);
    let keep: Vec<usize> = (0..all.len()).filter(|&i| all.labels[i] != "Books").collect();
    let data = all.select(&keep);
    let job = TrainJob {
        data: &data,
        source: DataSource::default(),
        base_dir: fx.base.clone(),
        registry: fx.path("registry"),
        name: "tiny".into(),
        settings: settings(),
        resume: false,
        session: SessionSettings::default(),
        show_progress: false,
        cancel: None,
        labels: None,
    };
    fit(job).unwrap().publish(true).unwrap();
    fx.path("registry/tiny/current")
}

fn training_section(fx: &Fixture, min_new_labels: usize, tolerance: f64) -> TrainingSection {
    TrainingSection {
        enabled: true,
        trusted_label_field: "category".into(),
        base_model: fx.base.clone(),
        state_dir: fx.path("state"),
        min_new_labels,
        min_examples_per_class: 5,
        threads: 1,
        tolerance,
        settings: settings(),
        ..Default::default()
    }
}

fn wait_for_outcome(learner: &Learner) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some((outcome, _)) = learner.history.lock().unwrap().last().cloned() {
            return outcome;
        }
        assert!(Instant::now() < deadline, "no training outcome after 300 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn learner_promotes_a_better_model_and_grows_the_taxonomy() {
    let fx = Fixture::new(600);
    let current = model_without_books(&fx);
    let slot = ModelSlot::new(prodcat::models::open(&current, &SessionSettings::default()).unwrap());
    let old_labels = slot.current().0.labels().to_vec();
    assert!(!old_labels.contains(&"Books".to_string()));
    let metrics = Arc::new(Metrics::new());
    let target = RegistryTarget::of(&ModelVersion::open(&current).unwrap()).unwrap();
    let learner = Learner::new(
        training_section(&fx, 400, 0.0),
        target,
        slot.clone(),
        SessionSettings::default(),
        metrics.clone(),
    )
    .unwrap();
    for (i, p) in fx.products.iter().enumerate().take(500) {
        learner.store.append(&format!("id{i}"), &p.title, &p.category, prodcat::learn::LabelSource::Record).unwrap();
    }
    assert!(learner.maybe_train().unwrap(), "400+ new labels with every class populated should trigger");
    assert!(!learner.maybe_train().unwrap(), "never two runs at once");
    assert_eq!(wait_for_outcome(&learner), Outcome::Promoted);
    let (_, decision) = learner.history.lock().unwrap().last().cloned().unwrap();
    let decision = decision.unwrap();
    assert!(decision.candidate_macro_f1 > decision.serving_macro_f1, "{decision:?}");

    // Published as v2, `current` moved, taxonomy grew with old ids kept.
    assert_eq!(std::fs::read_link(fx.path("registry/tiny/current")).unwrap().to_string_lossy(), "v2");
    let labels = prodcat::registry::read_labels(&fx.path("registry/tiny/v2/labels.json")).unwrap();
    assert_eq!(&labels[..old_labels.len()], &old_labels[..]);
    assert_eq!(labels.last().map(String::as_str), Some("Books"));
    // The card records the learner's stable split, so later tools re-derive its held-out rows.
    let card = ModelCard::read(&fx.path("registry/tiny/v2/card.json")).unwrap();
    assert!(card.training.unwrap().stable_split);
    let rendered = metrics.render();
    assert!(rendered.contains("prodcat_training_runs_total{outcome=\"promoted\"} 1"), "{rendered}");
    assert!(rendered.contains("prodcat_training_eval_macro_f1"));

    // The watcher swaps it in; labels from the new version come with its identity.
    let mut watcher =
        ModelWatcher::new(&fx.path("registry/tiny"), slot.clone(), SessionSettings::default(), metrics.clone());
    assert_eq!(watcher.check().as_deref(), Some("v2"));
    let (model, identity) = slot.current();
    assert_eq!(identity.version, "v2");
    let scores = score_texts(&*model, &["paperback novel illustrated edition"], None).unwrap().output;
    assert_eq!(model.labels()[scores.argmax(0).0], "Books");
    assert!(metrics.render().contains("prodcat_model_swaps_total 1"));
}

#[test]
fn a_rare_class_waits_and_a_candidate_that_could_forget_a_class_is_refused() {
    let fx = Fixture::new(600);
    let current = model_without_books(&fx);
    // A version from before replay samples (and checksums): the candidate can learn from the
    // label store alone.
    std::fs::remove_file(fx.path("registry/tiny/v1/replay.jsonl")).unwrap();
    std::fs::remove_file(fx.path("registry/tiny/v1/SHA256SUMS")).unwrap();
    let slot = ModelSlot::new(prodcat::models::open(&current, &SessionSettings::default()).unwrap());
    let target = RegistryTarget::of(&ModelVersion::open(&current).unwrap()).unwrap();
    let learner = Learner::new(
        training_section(&fx, 10, 1.0),
        target,
        slot,
        SessionSettings::default(),
        Arc::new(Metrics::new()),
    )
    .unwrap();
    // One class alone cannot train: deferred (and, in the code, not re-read until labels arrive).
    let phones: Vec<_> = fx.products.iter().filter(|p| p.category == "Phones").take(20).collect();
    for (i, p) in phones.iter().enumerate() {
        learner.store.append(&format!("p{i}"), &p.title, &p.category, prodcat::learn::LabelSource::Record).unwrap();
    }
    assert!(!learner.maybe_train().unwrap());
    assert!(!learner.maybe_train().unwrap());
    // A second populated class and one Books label (below the minimum of 5): the run starts
    // without Books, which stays in the store for later.
    let laptops: Vec<_> = fx.products.iter().filter(|p| p.category == "Laptops").take(20).collect();
    for (i, p) in laptops.iter().enumerate() {
        learner.store.append(&format!("l{i}"), &p.title, &p.category, prodcat::learn::LabelSource::Record).unwrap();
    }
    let book = fx.products.iter().find(|p| p.category == "Books").unwrap();
    learner.store.append("b0", &book.title, "Books", prodcat::learn::LabelSource::Record).unwrap();
    assert!(learner.maybe_train().unwrap(), "a rare class must not block the others");
    // Labels arrived one category at a time: the candidate knows phones and laptops only, and
    // nothing held out shows it kept fridges and shoes, so it is refused rather than promoted.
    assert_eq!(wait_for_outcome(&learner), Outcome::Rejected);
    let (_, decision) = learner.history.lock().unwrap().last().cloned().unwrap();
    let reason = decision.unwrap().reason;
    assert!(
        reason.contains("could have forgotten") && reason.contains("Fridges") && reason.contains("Shoes"),
        "{reason}"
    );
    assert_eq!(std::fs::read_link(fx.path("registry/tiny/current")).unwrap().to_string_lossy(), "v1");
    assert!(learner.store.training_data().unwrap().labels.contains(&"Books".to_string()));
}

#[test]
fn labels_arriving_one_category_at_a_time_retrain_with_the_replay_sample_and_forget_nothing() {
    let fx = Fixture::new(600);
    let current = model_without_books(&fx);
    let replay =
        prodcat::registry::replay::Replay::read(&fx.path("registry/tiny/v1")).unwrap().expect("a replay sample");
    let replayed: std::collections::BTreeSet<&str> = replay.rows.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(replayed, ["Fridges", "Laptops", "Phones", "Shoes"].into());
    let slot = ModelSlot::new(prodcat::models::open(&current, &SessionSettings::default()).unwrap());
    let target = RegistryTarget::of(&ModelVersion::open(&current).unwrap()).unwrap();
    let learner = Learner::new(
        training_section(&fx, 10, 0.05),
        target,
        slot,
        SessionSettings::default(),
        Arc::new(Metrics::new()),
    )
    .unwrap();
    // A merchant's feed: phones and laptops only.
    for category in ["Phones", "Laptops"] {
        for (i, p) in fx.products.iter().filter(|p| p.category == category).take(100).enumerate() {
            let id = format!("{category}-{i}");
            learner.store.append(&id, &p.title, &p.category, prodcat::learn::LabelSource::Record).unwrap();
        }
    }
    assert!(learner.maybe_train().unwrap());
    let outcome = wait_for_outcome(&learner);
    let (_, decision) = learner.history.lock().unwrap().last().cloned().unwrap();
    let decision = decision.expect("a gate decision");
    eprintln!(
        "one category at a time, with replay: {outcome:?}, candidate {:.4} vs serving {:.4}: {}",
        decision.candidate_macro_f1, decision.serving_macro_f1, decision.reason
    );
    // The held-out rows cover every class the serving model knows (replay rows), so the gate can
    // judge — and the candidate, trained on the replay sample too, did not forget fridges or shoes.
    assert!(!decision.reason.contains("could have forgotten"), "{}", decision.reason);
    assert_eq!(outcome, Outcome::Promoted, "{}", decision.reason);
    let promoted = prodcat::models::open(&fx.path("registry/tiny/current"), &SessionSettings::default()).unwrap();
    for category in ["Fridges", "Shoes", "Phones", "Laptops"] {
        let texts: Vec<&str> =
            fx.products.iter().filter(|p| p.category == category).take(20).map(|p| p.title.as_str()).collect();
        let scores = score_texts(&*promoted, &texts, None).unwrap().output;
        let right = (0..texts.len()).filter(|&r| promoted.labels()[scores.argmax(r).0] == category).count();
        eprintln!("{category}: {right}/{} labeled right by the promoted model", texts.len());
        assert!(right * 10 >= texts.len() * 8, "{category}: only {right}/{} right", texts.len());
    }
}

#[test]
fn a_serving_cascade_is_retrained_as_a_cascade_with_both_members_new() {
    let fx = Fixture::new(600);
    let transformer = model_without_books(&fx);
    let all = fixture_data(&fx);
    let keep: Vec<usize> = (0..all.len()).filter(|&i| all.labels[i] != "Books").collect();
    let data = all.select(&keep);
    let lexical = prodcat::lexical::fit_lexical(prodcat::lexical::LexicalJob {
        data: &data,
        source: DataSource::default(),
        registry: fx.path("lexical"),
        name: "lex".into(),
        settings: Default::default(),
        split: settings().split,
        stable_split: false,
        session: SessionSettings::default(),
        labels: None,
        parity_tolerance: 1e-3,
    })
    .unwrap()
    .publish(true)
    .unwrap();
    let (cascade, _) = prodcat::models::cascade::build_cascade(prodcat::models::cascade::CascadeJob {
        members: prodcat::models::pair::CompositeJob {
            lexical: ModelVersion::open(&lexical).unwrap(),
            transformer: ModelVersion::open(&transformer).unwrap(),
            registry: fx.path("serve"),
            name: "casc".into(),
            validation: None,
            test: None,
            session: SessionSettings::default(),
        },
        threshold: Some(0.9),
        lexical_weight: None,
        bounds: Default::default(),
        level: 0,
    })
    .unwrap();
    let served = cascade.publish(true).unwrap();
    let slot = ModelSlot::new(prodcat::models::open(&served, &SessionSettings::default()).unwrap());
    let metrics = Arc::new(Metrics::new());
    let target = RegistryTarget::of(&ModelVersion::open(&served).unwrap()).unwrap();
    let learner =
        Learner::new(training_section(&fx, 400, 0.0), target, slot, SessionSettings::default(), metrics).unwrap();
    for (i, p) in fx.products.iter().enumerate().take(500) {
        learner.store.append(&format!("id{i}"), &p.title, &p.category, prodcat::learn::LabelSource::Record).unwrap();
    }
    assert!(learner.maybe_train().unwrap());
    assert_eq!(wait_for_outcome(&learner), Outcome::Promoted);
    let v2 = fx.path("serve/casc/v2");
    let card = ModelCard::read(&v2.join(files::CARD)).unwrap();
    let prodcat::registry::ModelKind::Cascade(info) = card.model else { panic!("not a cascade: {:?}", card.model) };
    assert!(info.tuning.is_some(), "the threshold is re-tuned on the label store");
    for member in ["lexical", "transformer"] {
        let labels = prodcat::registry::read_labels(&v2.join(member).join(files::LABELS)).unwrap();
        assert!(labels.contains(&"Books".to_string()), "{member} member did not learn Books");
    }
    let model = prodcat::models::open(&fx.path("serve/casc"), &SessionSettings::default()).unwrap();
    let scores = score_texts(&*model, &["paperback novel illustrated edition"], None).unwrap().output;
    assert_eq!(model.labels()[scores.argmax(0).0], "Books");
}

#[test]
fn gate_rejects_a_candidate_that_is_not_better_and_nothing_changes() {
    let fx = Fixture::new(600);
    let current = model_without_books(&fx);
    let slot = ModelSlot::new(prodcat::models::open(&current, &SessionSettings::default()).unwrap());
    let metrics = Arc::new(Metrics::new());
    let target = RegistryTarget::of(&ModelVersion::open(&current).unwrap()).unwrap();
    // A negative tolerance demands a candidate better by a whole F1 point: impossible.
    let learner =
        Learner::new(training_section(&fx, 100, -1.0), target, slot, SessionSettings::default(), metrics.clone())
            .unwrap();
    for (i, p) in fx.products.iter().enumerate().take(300) {
        learner.store.append(&format!("id{i}"), &p.title, &p.category, prodcat::learn::LabelSource::Record).unwrap();
    }
    assert!(learner.maybe_train().unwrap());
    assert_eq!(wait_for_outcome(&learner), Outcome::Rejected);
    assert_eq!(std::fs::read_link(fx.path("registry/tiny/current")).unwrap().to_string_lossy(), "v1");
    assert!(!fx.path("registry/tiny/v2").exists());
    assert!(metrics.render().contains("prodcat_training_runs_total{outcome=\"rejected\"} 1"));
}

#[test]
fn watcher_refuses_a_version_that_failed_parity() {
    let fx = Fixture::new(300);
    let current = model_without_books(&fx);
    let slot = ModelSlot::new(prodcat::models::open(&current, &SessionSettings::default()).unwrap());
    // Copy v1 to v2 with a failed parity check in its card, and point `current` at it.
    let (v1, v2) = (fx.path("registry/tiny/v1"), fx.path("registry/tiny/v2"));
    std::fs::create_dir_all(&v2).unwrap();
    for f in [files::MODEL, files::TOKENIZER, files::LABELS] {
        std::fs::copy(v1.join(f), v2.join(f)).unwrap();
    }
    let mut card = ModelCard::read(&v1.join(files::CARD)).unwrap();
    card.version = "v2".into();
    card.parity.as_mut().unwrap().passed = false;
    card.write(&v2.join(files::CARD)).unwrap();
    prodcat::registry::ModelRegistry::new(fx.path("registry")).set_current("tiny", "v2").unwrap();
    let mut watcher = ModelWatcher::new(
        &fx.path("registry/tiny"),
        slot.clone(),
        SessionSettings::default(),
        Arc::new(Metrics::new()),
    );
    assert_eq!(watcher.check(), None);
    assert_eq!(slot.current().1.version, "v1", "the old model keeps serving");
}

#[test]
fn a_running_pipeline_learns_a_new_category_and_swaps_mid_stream() {
    use common::kafka::*;
    let Some(brokers) = broker() else { return };
    let fx = Fixture::new(900);
    let current = model_without_books(&fx);
    let t = Topics::new(&brokers, "learn", 2);
    let extra = format!(
        r#"
[training]
enabled = true
trusted_label_field = "category"
base_model = "{base}"
state_dir = "{state}"
min_new_labels = 500
min_examples_per_class = 5
threads = 1
[training.settings]
epochs = 3
learning_rate = 0.01
max_length = 32
"#,
        base = fx.base.display(),
        state = fx.path("state").display()
    );
    let (pipeline, port) = pipeline_file(&fx, &brokers, &t, &current, &extra);
    let mut child = start(&pipeline);
    wait_ready(port, &mut child);
    // Phase 1: records with trusted categories, Books among them (the model has never seen it).
    produce(&brokers, &t.input, &(0..600).map(|i| labeled_product(&fx, i)).collect::<Vec<_>>());
    // Training triggers, the gate promotes, the watcher swaps: wait for v2 to serve.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let metrics = http_get(port, "/metrics").map(|(_, b)| b).unwrap_or_default();
        if metrics.contains("prodcat_model_info{name=\"tiny\",version=\"v2\"} 1") {
            assert!(metrics.contains("prodcat_training_runs_total{outcome=\"promoted\"} 1"), "{metrics}");
            assert!(metrics.contains("prodcat_model_swaps_total 1"));
            assert!(metrics.lines().any(|l| l.starts_with("prodcat_label_store_records ") && !l.ends_with(" 0")));
            break;
        }
        assert!(Instant::now() < deadline, "no promotion and swap within 300 s:\n{metrics}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Phase 2: later records are labeled by the new version, which knows Books.
    let books: Vec<(String, Vec<u8>)> = (0..fx.products.len())
        .filter(|&i| fx.products[i].category == "Books")
        .take(100)
        .map(|i| {
            (
                format!("late{i}"),
                serde_json::json!({"id": format!("late{i}"), "title": fx.products[i].title}).to_string().into_bytes(),
            )
        })
        .collect();
    produce(&brokers, &t.input, &books);
    let out = read_topic(&brokers, &t.output, 700, Duration::from_secs(120), false);
    stop(child);
    assert_eq!(ids(&out).len(), 700, "every input record appears in the output");
    let late: Vec<_> = out.iter().map(|r| r.json()).filter(|v| v["id"].as_str().unwrap().starts_with("late")).collect();
    assert_eq!(late.len(), 100);
    assert!(late.iter().all(|v| v["model_version"] == "v2"), "records after the swap carry the new version");
    let books_right = late.iter().filter(|v| v["label"] == "Books").count();
    assert!(books_right >= 80, "the new model should label books as Books: {books_right}/100");
    let versions: BTreeSet<String> =
        out.iter().map(|r| r.json()["model_version"].as_str().unwrap().to_string()).collect();
    assert!(versions.contains("v1"), "records before the swap were labeled by v1");
}

#[test]
fn trusted_labels_whose_offsets_are_committed_survive_kill_9() {
    use common::kafka::*;
    let Some(brokers) = broker() else { return };
    let fx = Fixture::new(300);
    let current = model_without_books(&fx);
    let t = Topics::new(&brokers, "durable", 2);
    // Learning on, but never enough labels to train: only the label store is exercised. 600
    // labels stay below the 1,000 that make a Parquet partition, so before the write-ahead log
    // every one of them lived only in memory while its offset was committed.
    let extra = label_store_only(&fx);
    let (pipeline, port) = pipeline_file(&fx, &brokers, &t, &current, &extra);
    let mut child = start(&pipeline);
    wait_ready(port, &mut child);
    let records: Vec<(String, Vec<u8>)> = (0..600).map(|i| labeled_product(&fx, i)).collect();
    let ends = produce(&brokers, &t.input, &records);
    // Wait until every offset is committed, then kill -9: no graceful flush of anything.
    let deadline = Instant::now() + Duration::from_secs(120);
    while committed(&brokers, &t.group, &t.input, 2) != ends {
        assert!(Instant::now() < deadline, "offsets not committed within 120 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let stored = stored_label_ids(&fx.path("state/labels"));
    let sent: BTreeSet<String> = records.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(stored.len(), sent.len(), "labels whose offsets were committed were lost by kill -9");
    assert_eq!(stored, sent);
}
