//! Soak benchmark: `prodcat run` (a separate process, as deployed) under steady load through a
//! real broker for `--minutes` (30 by default), with a hot swap every `--swap-secs` (alternating
//! two published versions) and the learner retraining on the trusted labels a tenth of the
//! records carry. Every `--sample-secs` it samples the process's RSS, open file descriptors and
//! threads (from /proc), its per-stage latency and throughput (from /metrics), and each record's
//! end-to-end latency (produced → labeled record produced downstream, read back from the output
//! topic). It prints the table the targets are judged by — RSS / descriptor / thread slopes after
//! the warm-up, p99 latency and throughput of the first five minutes against the last five, records
//! lost and duplicated — and writes `samples.csv` and `soak.png` (the series over time).
//!
//!     bash scripts/kafka-broker.sh start          # KAFKA_PORT=19092
//!     cargo run --example bench_soak -- --brokers 127.0.0.1:19092 --minutes 30
//!
//! Models: two lexical versions trained on PriceRunner when ../shared/data is present, else on the
//! built-in demo catalogue.

#[path = "common.rs"]
mod common;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use common::percentile;
use plotters::prelude::*;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:19092")]
    brokers: String,
    /// Length of the steady load.
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,
    /// Records per second.
    #[arg(long, default_value_t = 400)]
    rate: u32,
    /// Seconds between hot swaps.
    #[arg(long, default_value_t = 60)]
    swap_secs: u64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 5)]
    sample_secs: u64,
    /// Minutes compared first vs last (p99 latency, throughput).
    #[arg(long, default_value_t = 5.0)]
    window_minutes: f64,
    /// Minutes of warm-up left out of the slopes: the label store fills to its retention limit
    /// (`--max-labels` at a tenth of `--rate`: 20,000 labels take 8.3 minutes at 400 records/s).
    #[arg(long, default_value_t = 10.0)]
    warmup_minutes: f64,
    /// The label store's retention (`training.max_records`): the learner's training set stops
    /// growing once it holds this many products, as in a deployment that bounds its store.
    #[arg(long, default_value_t = 20_000)]
    max_labels: usize,
    /// Where samples.csv, soak.png and the pipeline's log go.
    #[arg(long, default_value = "target/soak")]
    out: PathBuf,
}

/// One sample of the process and its metrics.
#[derive(Clone, Debug, Default)]
struct Sample {
    t: f64,
    rss_mib: f64,
    fds: usize,
    threads: usize,
    labeled: f64,
    swaps: f64,
    trainings: f64,
    /// Mean per record of each stage over the last interval (ms): fetch, chunk, engine, produce.
    stages: [f64; 4],
}

fn proc_status(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(key))?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn scrape(port: u16) -> HashMap<String, f64> {
    use std::io::Read;
    let mut out = HashMap::new();
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return out };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else { continue };
        let Ok(v) = value.parse::<f64>() else { continue };
        // Sum over label sets of the metric name without its labels, and keep each labeled one.
        let base = name.split('{').next().unwrap_or(name).to_string();
        *out.entry(base).or_insert(0.0) += v;
        out.insert(name.to_string(), v);
    }
    out
}

fn prodcat_binary() -> PathBuf {
    // target/<profile>/examples/bench_soak → target/<profile>/prodcat
    let exe = std::env::current_exe().expect("own path");
    exe.parent().and_then(Path::parent).map(|d| d.join("prodcat")).expect("target folder")
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let o = cmd.output()?;
    anyhow::ensure!(o.status.success(), "{:?} failed:\n{}", cmd, String::from_utf8_lossy(&o.stderr));
    Ok(())
}

/// Least-squares slope of y over x (per unit of x).
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return f64::NAN;
    }
    let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let cov: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let var: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    cov / var
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if !common::broker_answers(&args.brokers) {
        return Ok(());
    }
    let prodcat = prodcat_binary();
    anyhow::ensure!(prodcat.is_file(), "{} not built (cargo build first)", prodcat.display());
    std::fs::create_dir_all(&args.out)?;
    let work = tempfile::tempdir()?;
    let registry = work.path().join("registry");

    // Data: (title, category) pairs.
    let (csv, text_col, label_col) = match common::pricerunner_csv(root) {
        Some(csv) => (csv, "Product Title", "Category Label"),
        None => (root.join("examples/products.csv"), "title", "category"),
    };
    let rt = tokio::runtime::Runtime::new()?;
    let cols = rt.block_on(prodcat::data::read_string_columns(&csv, &[text_col, label_col]))?;
    let rows: Vec<(String, String)> =
        cols[0].iter().zip(&cols[1]).filter_map(|(t, l)| Some((t.clone()?, l.clone()?))).collect();
    anyhow::ensure!(!rows.is_empty(), "no rows in {}", csv.display());
    // Two versions to swap between (a different regularisation each).
    for c in ["0.5", "1.0"] {
        run(Command::new(&prodcat)
            .args(["train", "--model-type", "lexical", "--no-progress", "--name", "soak"])
            .args([
                "--data",
                &csv.display().to_string(),
                "--text-column",
                text_col,
                "--label-column",
                label_col,
                "--out",
                &registry.display().to_string(),
                "--c-grid",
                c,
            ]))?;
    }

    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
    let (input, output, dead) = (format!("soak-in-{stamp}"), format!("soak-out-{stamp}"), format!("soak-dlq-{stamp}"));
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &args.brokers).create()?;
    let topics = [
        NewTopic::new(&input, 4, TopicReplication::Fixed(1)),
        NewTopic::new(&output, 1, TopicReplication::Fixed(1)),
        NewTopic::new(&dead, 1, TopicReplication::Fixed(1)),
    ];
    for r in rt.block_on(admin.create_topics(&topics, &AdminOptions::new()))? {
        r.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let pipeline = work.path().join("soak.toml");
    std::fs::write(
        &pipeline,
        format!(
            r#"[pipeline]
kind = "kafka"
[model]
path = "{model}"
watch = true
watch_interval_ms = 1000
[kafka]
brokers = "{brokers}"
group_id = "soak-{stamp}"
input_topic = "{input}"
output_topic = "{output}"
dead_letter_topic = "{dead}"
review_topic = ""
[kafka.consumer_properties]
"session.timeout.ms" = "6000"
# The test broker (Tansu) answers a fetch of a long log of small batches only after more than
# 10 ms (prodcat's default max wait), returning nothing: with 10 ms a consumer falls behind for
# good after a minute at 400 records/s (any librdkafka consumer does; measured with
# confluent-kafka: 31 records in 75 s at 10 ms, all 77,888 in 10 s at 50 ms or more).
"fetch.wait.max.ms" = "100"
{debug}
[http]
listen = "127.0.0.1:{port}"
[training]
enabled = true
trusted_label_field = "category"
base_model = "{base}"
state_dir = "{state}"
min_new_labels = 3000
interval_secs = 300
min_examples_per_class = 5
threads = 1
tolerance = 1.0
class_f1_floor = 0.0
class_regression_tolerance = 1.0
max_records = {max_labels}
"#,
            model = registry.join("soak").display(),
            max_labels = args.max_labels,
            brokers = args.brokers,
            base = root.join(".deps/models/all-MiniLM-L6-v2").display(),
            state = work.path().join("state").display(),
            // PRODCAT_SOAK_KAFKA_DEBUG=fetch,consumer: librdkafka's own debug log in pipeline.log.
            debug =
                std::env::var("PRODCAT_SOAK_KAFKA_DEBUG").map(|d| format!("\"debug\" = \"{d}\"")).unwrap_or_default(),
        ),
    )?;
    let log_path = args.out.join("pipeline.log");
    let mut child = Command::new(&prodcat)
        .args(["run", &pipeline.display().to_string()])
        .env(
            "PRODCAT_LOG",
            if std::env::var_os("PRODCAT_SOAK_KAFKA_DEBUG").is_some() { "info,rdkafka=debug" } else { "info" },
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path)?)
        .spawn()?;
    let pid = child.id();
    let started = Instant::now();
    while !scrape(port).contains_key("prodcat_records_received_total") || proc_status(pid, "Threads:").is_nan() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "the pipeline did not come up; see {}",
            log_path.display()
        );
        anyhow::ensure!(child.try_wait()?.is_none(), "the pipeline exited; see {}", log_path.display());
        std::thread::sleep(Duration::from_millis(200));
    }

    // Reader: every labeled record's latency (output record's timestamp − sent time) by arrival.
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<(f64, f64, usize)>>> = Arc::default();
    let epoch = Instant::now();
    let reader = {
        let (stop, seen, brokers, output) = (stop.clone(), seen.clone(), args.brokers.clone(), output.clone());
        std::thread::spawn(move || -> anyhow::Result<()> {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("group.id", format!("soak-reader-{stamp}"))
                // Not shorter than the test broker's answer time on a long log (see above).
                .set("fetch.wait.max.ms", "100")
                .create()?;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&output, 0, Offset::Beginning)?;
            consumer.assign(&tpl)?;
            while !stop.load(Ordering::Relaxed) {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
                    let produced_ms = m.timestamp().to_millis().unwrap_or(0) as f64;
                    let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or_default())?;
                    let sent_us = v["sent_us"].as_f64().unwrap_or(f64::NAN);
                    let id = v["seq"].as_u64().unwrap_or(u64::MAX) as usize;
                    seen.lock().unwrap().push((epoch.elapsed().as_secs_f64(), produced_ms - sent_us / 1e3, id));
                }
            }
            Ok(())
        })
    };
    // Feeder: `rate` records/s; one in ten carries its trusted category.
    let produced = Arc::new(AtomicUsize::new(0));
    let feeding = Arc::new(AtomicBool::new(true));
    let feeder = {
        let (feeding, produced, brokers, input) =
            (feeding.clone(), produced.clone(), args.brokers.clone(), input.clone());
        let rate = args.rate as f64;
        std::thread::spawn(move || -> anyhow::Result<()> {
            let producer: BaseProducer =
                // Batches of about 8 records at 400/s, as a producing service would send them: a
                // log of single-record batches slows the test broker's fetches as it grows.
                ClientConfig::new().set("bootstrap.servers", &brokers).set("linger.ms", "20").create()?;
            let begun = Instant::now();
            let mut i = 0usize;
            while feeding.load(Ordering::Relaxed) {
                let due = (begun.elapsed().as_secs_f64() * rate) as usize;
                while i < due {
                    let (title, category) = &rows[i % rows.len()];
                    let sent_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_micros();
                    let mut v =
                        serde_json::json!({"id": format!("s{i}"), "seq": i, "title": title, "sent_us": sent_us});
                    if i % 10 == 0 {
                        v["category"] = serde_json::json!(category);
                    }
                    let payload = v.to_string();
                    let key = format!("s{i}");
                    common::send_blocking(
                        &producer,
                        BaseRecord::to(&input).key(key.as_bytes()).payload(payload.as_bytes()),
                    );
                    i += 1;
                    produced.store(i, Ordering::Relaxed);
                }
                producer.poll(Duration::from_millis(2));
            }
            producer.flush(Duration::from_secs(60))?;
            Ok(())
        })
    };

    let total = Duration::from_secs_f64(args.minutes * 60.0);
    let reg = prodcat::registry::ModelRegistry::new(&registry);
    let mut samples: Vec<Sample> = Vec::new();
    let mut last_swap = Instant::now();
    let mut flip = false;
    let mut previous: Option<HashMap<String, f64>> = None;
    let stage_names = ["fetch", "chunk", "engine", "produce"];
    while epoch.elapsed() < total {
        std::thread::sleep(Duration::from_secs(args.sample_secs));
        anyhow::ensure!(child.try_wait()?.is_none(), "the pipeline exited during the soak; see {}", log_path.display());
        if last_swap.elapsed() >= Duration::from_secs(args.swap_secs) {
            flip = !flip;
            reg.set_current("soak", if flip { "v1" } else { "v2" })?;
            last_swap = Instant::now();
        }
        let m = scrape(port);
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
        let mut stages = [f64::NAN; 4];
        for (k, name) in stage_names.iter().enumerate() {
            let key = |what: &str| format!("prodcat_record_latency_seconds_{what}{{stage=\"{name}\"}}");
            let (sum, count) =
                (m.get(&key("sum")).copied().unwrap_or(0.0), m.get(&key("count")).copied().unwrap_or(0.0));
            let (psum, pcount) = previous.as_ref().map_or((0.0, 0.0), |p| {
                (p.get(&key("sum")).copied().unwrap_or(0.0), p.get(&key("count")).copied().unwrap_or(0.0))
            });
            if count > pcount {
                stages[k] = 1e3 * (sum - psum) / (count - pcount);
            }
        }
        samples.push(Sample {
            t: epoch.elapsed().as_secs_f64(),
            rss_mib: proc_status(pid, "VmRSS:") / 1024.0,
            fds,
            threads: proc_status(pid, "Threads:") as usize,
            labeled: m.get("prodcat_records_labeled_total").copied().unwrap_or(0.0),
            swaps: m.get("prodcat_model_swaps_total").copied().unwrap_or(0.0),
            trainings: m.get("prodcat_training_runs_total").copied().unwrap_or(0.0),
            stages,
        });
        previous = Some(m);
        let s = samples.last().unwrap();
        eprintln!(
            "{:>6.0} s  rss {:>7.1} MiB  fds {:>4}  threads {:>3}  labeled {:>9.0}  swaps {:>3.0}  training runs {:>3.0}  produced {}",
            s.t,
            s.rss_mib,
            s.fds,
            s.threads,
            s.labeled,
            s.swaps,
            s.trainings,
            produced.load(Ordering::Relaxed)
        );
    }
    feeding.store(false, Ordering::Relaxed);
    feeder.join().map_err(|_| anyhow::anyhow!("feeder panicked"))??;
    let n = produced.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(180);
    let distinct = |seen: &Mutex<Vec<(f64, f64, usize)>>| {
        let mut ids: Vec<usize> = seen.lock().unwrap().iter().map(|r| r.2).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    };
    while distinct(&seen) < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    reader.join().map_err(|_| anyhow::anyhow!("reader panicked"))??;
    Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
    let status = child.wait()?;
    let records = seen.lock().unwrap().clone();
    let got = distinct(&seen);
    let (lost, duplicates) = (n.saturating_sub(got), records.len() - got);

    // Per window: p99 latency and throughput by arrival time.
    let window = args.window_minutes * 60.0;
    let end = total.as_secs_f64();
    let stats = |from: f64, to: f64| {
        let mut lat: Vec<f64> = records.iter().filter(|r| r.0 >= from && r.0 < to).map(|r| r.1).collect();
        lat.sort_by(f64::total_cmp);
        (percentile(&lat, 0.5), percentile(&lat, 0.99), lat.len() as f64 / (to - from))
    };
    let first = stats(0.0, window.min(end));
    let last = stats((end - window).max(0.0), end);
    let after: Vec<&Sample> = samples.iter().filter(|s| s.t >= args.warmup_minutes * 60.0).collect();
    let per_hour = |f: &dyn Fn(&Sample) -> f64| slope(&after.iter().map(|s| (s.t / 3600.0, f(s))).collect::<Vec<_>>());
    let mean = |f: &dyn Fn(&Sample) -> f64| after.iter().map(|s| f(s)).sum::<f64>() / after.len().max(1) as f64;

    let mut csv = std::fs::File::create(args.out.join("samples.csv"))?;
    writeln!(
        csv,
        "t_s,rss_mib,fds,threads,labeled,swaps,training_runs,fetch_ms,chunk_ms,engine_ms,produce_ms,p99_ms,records_per_s"
    )?;
    for (k, s) in samples.iter().enumerate() {
        let from = if k == 0 { 0.0 } else { samples[k - 1].t };
        let (_, p99, rate) = stats(from, s.t);
        writeln!(
            csv,
            "{:.1},{:.1},{},{},{},{},{},{:.2},{:.2},{:.2},{:.2},{:.1},{:.1}",
            s.t,
            s.rss_mib,
            s.fds,
            s.threads,
            s.labeled,
            s.swaps,
            s.trainings,
            s.stages[0],
            s.stages[1],
            s.stages[2],
            s.stages[3],
            p99,
            rate
        )?;
    }
    plot(&args.out.join("soak.png"), &samples, &|from, to| stats(from, to))?;

    let swaps = samples.last().map_or(0.0, |s| s.swaps);
    let trainings = samples.last().map_or(0.0, |s| s.trainings);
    println!(
        "\nSoak: {:.0} min at {} records/s, a hot swap every {} s; pipeline exit: {status}\n",
        args.minutes, args.rate, args.swap_secs
    );
    println!("{:<44} {:>14} {:>14} {:>10}", "measure", "first window", "last window", "change");
    let change = |a: f64, b: f64| format!("{:+.1}%", 100.0 * (b - a) / a);
    println!("{:<44} {:>14.1} {:>14.1} {:>10}", "p50 latency, ms", first.0, last.0, change(first.0, last.0));
    println!("{:<44} {:>14.1} {:>14.1} {:>10}", "p99 latency, ms", first.1, last.1, change(first.1, last.1));
    println!("{:<44} {:>14.1} {:>14.1} {:>10}", "throughput, records/s", first.2, last.2, change(first.2, last.2));
    println!("\n{:<44} {:>14} {:>14}", "after the warm-up", "mean", "slope per hour");
    println!("{:<44} {:>14.1} {:>14.2}", "RSS, MiB", mean(&|s| s.rss_mib), per_hour(&|s| s.rss_mib));
    println!("{:<44} {:>14.1} {:>14.2}", "open file descriptors", mean(&|s| s.fds as f64), per_hour(&|s| s.fds as f64));
    println!("{:<44} {:>14.1} {:>14.2}", "threads", mean(&|s| s.threads as f64), per_hour(&|s| s.threads as f64));
    println!(
        "\nrecords produced {n}, labeled {got}, lost {lost}, duplicates {duplicates}; hot swaps {swaps:.0}, training runs {trainings:.0}"
    );
    println!("samples: {}, plot: {}", args.out.join("samples.csv").display(), args.out.join("soak.png").display());
    Ok(())
}

fn plot(path: &Path, samples: &[Sample], stats: &dyn Fn(f64, f64) -> (f64, f64, f64)) -> anyhow::Result<()> {
    prodcat::eval::plots::register_font();
    let root = BitMapBackend::new(path, (1200, 1000)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((4, 1));
    let minutes: Vec<f64> = samples.iter().map(|s| s.t / 60.0).collect();
    let end = minutes.last().copied().unwrap_or(1.0).max(0.1);
    let windows: Vec<(f64, f64, f64)> = samples
        .iter()
        .enumerate()
        .map(|(k, s)| {
            let from = if k == 0 { 0.0 } else { samples[k - 1].t };
            let (_, p99, rate) = stats(from, s.t);
            (s.t / 60.0, p99, rate)
        })
        .collect();
    let series: [(&str, Vec<(f64, f64)>); 4] = [
        ("RSS (MiB)", samples.iter().zip(&minutes).map(|(s, m)| (*m, s.rss_mib)).collect()),
        ("open fds and threads", samples.iter().zip(&minutes).map(|(s, m)| (*m, s.fds as f64)).collect()),
        ("p99 latency per interval (ms)", windows.iter().filter(|w| w.1.is_finite()).map(|w| (w.0, w.1)).collect()),
        ("throughput per interval (records/s)", windows.iter().map(|w| (w.0, w.2)).collect()),
    ];
    for (panel, (name, points)) in panels.iter().zip(series.iter()) {
        let mut top = points.iter().map(|p| p.1).fold(1.0f64, f64::max) * 1.15;
        if *name == "open fds and threads" {
            top = top.max(samples.iter().map(|s| s.threads as f64).fold(1.0, f64::max) * 1.15);
        }
        let mut chart = ChartBuilder::on(panel)
            .caption(*name, ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..end, 0f64..top)?;
        chart.configure_mesh().x_desc("minutes").draw()?;
        chart.draw_series(LineSeries::new(points.iter().copied(), &BLUE))?;
        if *name == "open fds and threads" {
            chart.draw_series(LineSeries::new(
                samples.iter().zip(&minutes).map(|(s, m)| (*m, s.threads as f64)),
                &RED,
            ))?;
        }
    }
    root.present()?;
    Ok(())
}
