//! Benchmark: continuous learning on PriceRunner.
//!
//! The serving model starts from 10% of the training clusters (cluster-grouped split, seed 42);
//! the rest of the training rows stream in with trusted labels. The pipeline's own learner (label
//! store, trigger policy, background training on a bounded thread budget, gate, publish) and
//! model watcher (hot swap) run as in `prodcat run`, while a labeling loop keeps scoring titles
//! with whatever model the slot serves. Prints, per training run: store rows, time, gate decision
//! and macro-F1 on the held-out test clusters; labeling throughput while training vs idle; and an
//! offline `fit` on the same data for comparison.
//!
//!     cargo run --example bench_learning -- [--family lexical|transformer] [--every 4000]

#[path = "common.rs"]
mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use prodcat::common::LexicalSettings;
use prodcat::data::{LabeledData, LabeledDataSpec, stratified_group_split};
use prodcat::eval::{evaluate, label_ids};
use prodcat::learn::watch::ModelWatcher;
use prodcat::learn::{LabelSource, Learner, RegistryTarget, TrainingSection};
use prodcat::lexical::{LexicalJob, fit_lexical};
use prodcat::metrics::Metrics;
use prodcat::registry::ModelVersion;
use prodcat::serve::{Model, ModelSlot, SessionSettings};
use prodcat::tokenize::PaddedBatch;
use prodcat::train::{DataSource, TrainJob, TrainSettings, fit};

#[derive(Parser)]
struct Args {
    /// Model family of the serving model (and so of the candidates).
    #[arg(long, default_value = "lexical")]
    family: String,
    /// Trusted labels that trigger a training run.
    #[arg(long, default_value_t = 4000)]
    every: usize,
    /// Trusted labels streamed per second (0 = as fast as possible).
    #[arg(long, default_value_t = 2000)]
    rate: usize,
    /// Trainer threads (the labeling loop keeps the rest).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Stream in file order (sorted by category) instead of a seeded shuffle.
    #[arg(long)]
    file_order: bool,
    /// Transformer family: epochs per run.
    #[arg(long, default_value_t = 1)]
    epochs: usize,
}

fn fit_family(
    args: &Args,
    data: &LabeledData,
    registry: &Path,
    name: &str,
    labels: Option<Vec<String>>,
    stable_split: bool,
) -> anyhow::Result<prodcat::staging::Candidate> {
    let source = DataSource {
        file: "pricerunner".into(),
        text: prodcat::common::TextSpec::column("title"),
        label_column: "label".into(),
        group_column: Some("cluster".into()),
        ..Default::default()
    };
    Ok(if args.family == "lexical" {
        fit_lexical(LexicalJob {
            data,
            source,
            registry: registry.to_path_buf(),
            name: name.into(),
            settings: LexicalSettings::default(),
            split: TrainSettings::default().split,
            stable_split,
            session: SessionSettings::default(),
            labels,
            parity_tolerance: 1e-3,
        })?
    } else {
        fit(TrainJob {
            data,
            source,
            base_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join(".deps/models/all-MiniLM-L6-v2"),
            registry: registry.to_path_buf(),
            name: name.into(),
            settings: TrainSettings { epochs: args.epochs, stable_split, ..Default::default() },
            resume: false,
            session: SessionSettings::default(),
            show_progress: false,
            cancel: None,
            labels,
        })?
    })
}

fn test_f1(model: &dyn Model, test: &LabeledData) -> anyhow::Result<f64> {
    let texts: Vec<&str> = test.texts.iter().map(String::as_str).collect();
    let y = label_ids(model.labels(), &test.labels, "test clusters")?;
    Ok(evaluate(model, &texts, y, None)?.report.macro_f1)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some(csv) = common::pricerunner_csv(root) else { return Ok(()) };
    let runtime = tokio::runtime::Runtime::new()?;
    let spec = LabeledDataSpec {
        path: csv.clone(),
        text: prodcat::common::TextSpec::column("Product Title"),
        label_column: "Category Label".into(),
        group_column: Some("Cluster ID".into()),
        max_rows: None,
        sample_seed: 0,
        skip_invalid: true,
        paths: Default::default(),
        label_separator: None,
    };
    let all = runtime.block_on(LabeledData::read(&spec))?;
    let split = stratified_group_split(&all.labels, all.groups.as_deref(), [0.9, 0.0, 0.1], 42);
    let test = all.select(&split.test);
    // 10% of the training clusters start the model; the rest stream in.
    let start_split = stratified_group_split(
        &all.select(&split.train).labels,
        all.select(&split.train).groups.as_deref(),
        [0.1, 0.0, 0.9],
        7,
    );
    let train = all.select(&split.train);
    let mut initial = train.select(&start_split.train);
    // Keyed like the label store (one id per row), so v1 holds out what the learner holds out.
    initial.groups = Some((0..initial.len()).map(|i| format!("init-{i}")).collect());
    // PriceRunner's file is sorted by category; a catalogue stream interleaves them.
    let mut order = start_split.test.clone();
    if !args.file_order {
        use rand::SeedableRng;
        use rand::seq::SliceRandom;
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(3));
    }
    let stream = train.select(&order);
    println!(
        "PriceRunner: {} rows; test clusters {} rows; initial model {} rows; stream {} rows; family {}",
        all.len(),
        test.len(),
        initial.len(),
        stream.len(),
        args.family
    );

    let work = root.join(".prodcat/bench/learning").join(&args.family);
    let _ = std::fs::remove_dir_all(&work);
    let registry = work.join("registry");
    let taxonomy = all.label_set();
    let first = fit_family(&args, &initial, &registry, "stream", Some(taxonomy.clone()), true)?;
    first.publish(true)?;
    let session = SessionSettings::default();
    let serving = prodcat::models::open(&registry.join("stream"), &session)?;
    let mut table = vec![(
        "v1 (10% of training clusters)".to_string(),
        initial.len(),
        f64::NAN,
        test_f1(&*serving, &test)?,
        "initial".to_string(),
    )];
    let slot = ModelSlot::new(serving);
    let metrics = Arc::new(Metrics::new());
    let settings = TrainingSection {
        enabled: true,
        trusted_label_field: "category".into(),
        state_dir: work.join("state"),
        min_new_labels: args.every,
        min_examples_per_class: 5,
        threads: args.threads,
        settings: TrainSettings { epochs: args.epochs, ..Default::default() },
        ..Default::default()
    };
    let learner = Learner::new(
        settings,
        RegistryTarget::of(&ModelVersion::open(&registry.join("stream"))?)?,
        slot.clone(),
        session.clone(),
        metrics.clone(),
    )?;
    // The initial model's labels are the first trusted labels of the store.
    for (i, (t, l)) in initial.texts.iter().zip(&initial.labels).enumerate() {
        learner.store.append(&format!("init-{i}"), t, l, LabelSource::Record)?;
    }
    learner.store.take_new_labels();
    let stop = Arc::new(AtomicBool::new(false));
    let pause = Arc::new(AtomicBool::new(false));
    let watcher = ModelWatcher::new(&registry.join("stream"), slot.clone(), session.clone(), metrics.clone())
        .spawn(Duration::from_millis(200), stop.clone())?;

    // Labeling loop: batches of 64 test titles with whatever model serves, timed by trainer state.
    let labeler = {
        let (slot, stop, learner, pause) = (slot.clone(), stop.clone(), learner.clone(), pause.clone());
        let titles: Vec<String> = test.texts.clone();
        std::thread::spawn(move || -> anyhow::Result<[(f64, usize); 2]> {
            let mut acc = [(0f64, 0usize); 2]; // [idle, training]
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                if pause.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                let chunk: Vec<&str> = (0..64).map(|k| titles[(i + k) % titles.len()].as_str()).collect();
                i += 64;
                let (model, _) = slot.current();
                let busy = learner.training();
                let t = Instant::now();
                let prepared = model.prepare(&chunk)?;
                let batch = PaddedBatch::from_tokens(prepared.iter());
                model.score(&batch, &chunk)?;
                let slot_i = usize::from(busy && learner.training());
                acc[slot_i].0 += t.elapsed().as_secs_f64();
                acc[slot_i].1 += chunk.len();
            }
            Ok(acc)
        })
    };

    let started = Instant::now();
    let mut seen_runs = 0;
    let mut record = |learner: &Learner,
                      rows: usize,
                      table: &mut Vec<(String, usize, f64, f64, String)>|
     -> anyhow::Result<()> {
        let history = learner.history.lock().map(|h| h.clone()).unwrap_or_default();
        for (outcome, decision) in history.iter().skip(seen_runs) {
            // Let the watcher swap to whatever `current` points at now.
            let pointed = std::fs::read_link(registry.join("stream/current"))
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default();
            let deadline = Instant::now() + Duration::from_secs(30);
            while slot.current().1.version != pointed && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let (model, identity) = slot.current();
            pause.store(true, Ordering::Relaxed); // keep evaluation out of the throughput numbers
            let f1 = test_f1(&*model, &test);
            pause.store(false, Ordering::Relaxed);
            let f1 = f1?;
            let d = decision
                .as_ref()
                .map(|d| {
                    format!("{:?}: candidate {:.4} vs serving {:.4}", outcome, d.candidate_macro_f1, d.serving_macro_f1)
                })
                .unwrap_or(format!("{outcome:?}"));
            table.push((
                format!("run {} → serving {}", seen_runs + 1, identity.version),
                rows,
                started.elapsed().as_secs_f64(),
                f1,
                d,
            ));
            seen_runs += 1;
        }
        Ok(())
    };
    let mut run_seconds = Vec::new();
    // (start, labels in the store when it started) of the run in progress.
    let mut run: Option<(Instant, usize)> = None;
    let mut finish = |run: &mut Option<(Instant, usize)>, table: &mut Vec<_>| -> anyhow::Result<()> {
        if let (Some((s, rows)), false) = (*run, learner.training()) {
            run_seconds.push(s.elapsed().as_secs_f64());
            *run = None;
            record(&learner, rows, table)?;
        }
        Ok(())
    };
    for (i, (t, l)) in stream.texts.iter().zip(&stream.labels).enumerate() {
        learner.store.append(&format!("s-{i}"), t, l, LabelSource::Record)?;
        if i % 100 == 99 {
            if args.rate > 0 {
                std::thread::sleep(Duration::from_secs_f64(100.0 / args.rate as f64));
            }
            finish(&mut run, &mut table)?;
            if run.is_none() && learner.maybe_train()? {
                run = Some((Instant::now(), initial.len() + i + 1));
            }
        }
    }
    // End of the stream: a last run on everything, then wait for it.
    loop {
        finish(&mut run, &mut table)?;
        if run.is_none() {
            if learner.store.new_labels() == 0 || !learner.train_now()? {
                break;
            }
            run = Some((Instant::now(), train.len()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(finish);
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    let throughput = labeler.join().map_err(|_| anyhow::anyhow!("labeler panicked"))??;
    learner.shutdown();

    // Offline: the same data (all training clusters) in one `fit`.
    let offline_started = Instant::now();
    let offline = fit_family(&args, &train, &work.join("offline"), "offline", Some(taxonomy), false)?;
    let offline_secs = offline_started.elapsed().as_secs_f64();
    let offline_dir = offline.publish(true)?;
    let offline_f1 = test_f1(&*prodcat::models::open(&offline_dir, &session)?, &test)?;

    println!(
        "\ncontinuous learning on PriceRunner ({} family, a run every {} labels, {} trainer thread(s))\n",
        args.family, args.every, args.threads
    );
    println!("{:<34} {:>10} {:>9} {:>16}  {}", "serving model", "labels", "at s", "test macro-F1", "gate");
    for (name, rows, at, f1, note) in &table {
        let at = if at.is_nan() { "-".to_string() } else { format!("{at:.1}") };
        println!("{name:<34} {rows:>10} {at:>9} {f1:>16.4}  {note}");
    }
    println!(
        "{:<34} {:>10} {:>9} {:>16.4}  offline fit on the same data ({offline_secs:.1} s)",
        "offline",
        train.len(),
        "-",
        offline_f1
    );
    let final_f1 = table.last().map_or(f64::NAN, |r| r.3);
    println!("\nafter one pass: {final_f1:.4} vs offline {offline_f1:.4} (difference {:+.4})", final_f1 - offline_f1);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    println!(
        "training runs: {}, mean {:.1} s per run (from trigger to gate decision)",
        run_seconds.len(),
        mean(&run_seconds)
    );
    let rate = |(s, n): (f64, usize)| if s > 0.0 { n as f64 / s } else { f64::NAN };
    let (idle, busy) = (rate(throughput[0]), rate(throughput[1]));
    println!(
        "labeling throughput (batches of 64): idle {idle:.0} titles/s, while training {busy:.0} titles/s ({:+.1}%)",
        100.0 * (busy / idle - 1.0)
    );
    println!("peak RSS: {:.0} MiB", common::peak_rss_mib());
    Ok(())
}
