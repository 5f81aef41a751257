//! The Kafka pipeline while its network to the broker breaks: a broker of the test's own behind a
//! fault proxy (every connection goes through it), records produced at a steady rate straight to
//! the broker throughout, and the proxy stalling every connection for 10 s and 60 s, resetting
//! them mid-batch and refusing connections for 60 s — at-least-once and exactly-once. Nothing may
//! be lost; `/readyz` must say not ready while cut off and ready again after, `/healthz` fail only
//! past `kafka.unhealthy_after_disconnected_ms`; the pipeline resumes by itself and the metrics
//! count the disconnections. Prints the table docs/failure-modes.md quotes.

mod common;

use std::collections::BTreeMap;
use std::io::Read as _;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::kafka::*;
use common::proxy::*;
use common::*;

#[derive(Clone, Copy, Debug)]
enum Fault {
    Stall(u64),
    Reset,
    Refuse(u64),
}

impl Fault {
    fn name(self) -> String {
        match self {
            Fault::Stall(s) => format!("stall {s} s"),
            Fault::Reset => "reset mid-batch".into(),
            Fault::Refuse(s) => format!("refuse {s} s"),
        }
    }
}

/// What one fault did to the pipeline.
struct Seen {
    fault: Fault,
    /// From the fault to `/readyz` 503 (None: it never said not ready).
    not_ready_after: Option<Duration>,
    /// From healing the network to `/readyz` 200 again.
    ready_again_after: Duration,
    /// From the fault to `/healthz` 503 (None: it stayed healthy).
    unhealthy_after: Option<Duration>,
    /// Records produced before the fault began (to attribute duplicates).
    produced_before: usize,
}

fn readyz(port: u16) -> Option<u16> {
    http_get(port, "/readyz").map(|(s, _)| s)
}

fn metric(port: u16, name: &str) -> f64 {
    let (_, body) = http_get(port, "/metrics").expect("metrics answer");
    body.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

/// Drains a child's stderr on a thread (a long run must not block on a full pipe).
fn drain_logs(child: &mut Child) -> std::thread::JoinHandle<String> {
    let mut stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    })
}

fn run_faults(exactly_once: bool, faults: &[Fault]) {
    let Some(tansu) = tansu() else { return };
    let fx = Fixture::new(300);
    let model = tiny_registry(&fx);
    let b = ProxiedBroker::start(&tansu, fx.path("broker.log"));
    let t = Topics::new(&b.direct, "faults", 2);
    let mode = if exactly_once { "exactly-once" } else { "at-least-once" };
    let limit_s = 45;
    let mut extra = format!("unhealthy_after_disconnected_ms = {}\n", limit_s * 1000);
    if exactly_once {
        extra += &format!("exactly_once = true\ntransactional_id = \"{}\"\n", unique("txn"));
    }
    // prodcat reaches the broker only through the proxy.
    let (pipeline, port) = pipeline_file(&fx, &b.proxy.addr(), &t, &model, &extra);
    let mut child = start(&pipeline);
    wait_ready(port, &mut child);
    let logs = drain_logs(&mut child);
    let products: Vec<(String, Vec<u8>)> = (0..300).map(|i| product(&fx, i)).collect();
    let produced = Arc::new(AtomicUsize::new(0));
    let counter = produced.clone();
    let feeder = Feeder::start(&b.direct, &t.input, 200, move |i| {
        counter.store(i + 1, Ordering::SeqCst);
        let (_, payload) = &products[i % products.len()];
        let mut v: serde_json::Value = serde_json::from_slice(payload).unwrap();
        v["id"] = serde_json::json!(format!("r{i}"));
        (format!("r{i}"), v.to_string().into_bytes())
    });

    // A failure mid-run shows the pipeline's log.
    macro_rules! fail {
        ($($arg:tt)*) => {{
            let _ = std::process::Command::new("kill").args(["-9", &child.id().to_string()]).status();
            let log = logs.join().unwrap_or_default();
            panic!("{}\n--- pipeline log ---\n{log}", format!($($arg)*));
        }};
    }
    let mut seen = Vec::new();
    for &fault in faults {
        // Steady state first: ready and labeling (after a rebalance the previous fault caused,
        // readiness may take a moment; it must come back by itself).
        std::thread::sleep(Duration::from_secs(5));
        let settle = Instant::now();
        while readyz(port) != Some(200) {
            if child.try_wait().unwrap().is_some() {
                fail!("{mode}: the pipeline exited before {}", fault.name());
            }
            if settle.elapsed() > Duration::from_secs(90) {
                fail!("{mode}: not ready 90 s before {}", fault.name());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if settle.elapsed() > Duration::from_millis(500) {
            eprintln!("{mode}: ready again {:.1} s later, before {}", settle.elapsed().as_secs_f64(), fault.name());
        }
        let produced_before = produced.load(Ordering::SeqCst);
        let began = Instant::now();
        let hold = match fault {
            Fault::Stall(s) => {
                b.proxy.stall();
                Duration::from_secs(s)
            }
            Fault::Reset => {
                b.proxy.reset();
                Duration::ZERO
            }
            Fault::Refuse(s) => {
                b.proxy.refuse();
                Duration::from_secs(s)
            }
        };
        let (mut not_ready_after, mut unhealthy_after) = (None, None);
        while began.elapsed() < hold {
            if not_ready_after.is_none() && readyz(port) == Some(503) {
                not_ready_after = Some(began.elapsed());
            }
            if unhealthy_after.is_none() && matches!(http_get(port, "/healthz"), Some((503, _))) {
                unhealthy_after = Some(began.elapsed());
            }
            if child.try_wait().unwrap().is_some() {
                fail!("{mode}: the pipeline exited during {}", fault.name());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        b.proxy.heal();
        let healed = Instant::now();
        // Resumes by itself: ready again, and healthy.
        loop {
            if readyz(port) == Some(200) {
                break;
            }
            if not_ready_after.is_none() {
                not_ready_after = Some(began.elapsed());
            }
            if child.try_wait().unwrap().is_some() {
                fail!("{mode}: the pipeline exited after {}", fault.name());
            }
            if healed.elapsed() > Duration::from_secs(120) {
                fail!("{mode}: not ready 120 s after {} ended", fault.name());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let ready_again_after = healed.elapsed();
        if http_get(port, "/healthz").map(|(s, _)| s) != Some(200) {
            fail!("{mode}: not healthy again after {}", fault.name());
        }
        seen.push(Seen { fault, not_ready_after, ready_again_after, unhealthy_after, produced_before });
    }
    std::thread::sleep(Duration::from_secs(3));
    let total = feeder.finish();
    let out = read_topic(&b.direct, &t.output, total, Duration::from_secs(240), exactly_once);
    // Everything delivered: let late duplicates arrive too before counting.
    std::thread::sleep(Duration::from_secs(3));
    let out = if out.len() >= total {
        read_topic(&b.direct, &t.output, usize::MAX, Duration::from_secs(5), exactly_once)
    } else {
        out
    };
    let disconnections = metric(port, "prodcat_kafka_disconnections_total");
    let by_client = ["consumer", "producer"]
        .map(|c| (c, metric(port, &format!("prodcat_kafka_disconnections_total{{client=\"{c}\"}}"))));
    let retried = metric(port, "prodcat_kafka_transactions_total{outcome=\"retried\"");
    let pid = child.id().to_string();
    std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = child.wait().unwrap();
    let logs = logs.join().unwrap();
    assert!(status.success(), "{mode}: the pipeline did not stop cleanly:\n{logs}");
    assert!(!logs.contains("panicked"), "{logs}");

    let mut copies: BTreeMap<usize, usize> = BTreeMap::new();
    for r in &out {
        let id = r.json()["id"].as_str().unwrap().trim_start_matches('r').parse::<usize>().unwrap();
        *copies.entry(id).or_default() += 1;
    }
    let lost: Vec<usize> = (0..total).filter(|i| !copies.contains_key(i)).collect();
    let aborted_visible =
        if exactly_once && !broker_hides_aborted_records(&b.direct) { aborted_records(&logs) } else { 0 };
    eprintln!(
        "| fault | mode | records | lost | duplicates | not ready after | ready again after healing | /healthz 503 after |"
    );
    for (k, s) in seen.iter().enumerate() {
        let until = seen.get(k + 1).map_or(total, |n| n.produced_before);
        let dups: usize = copies.range(s.produced_before.saturating_sub(2_000)..until).map(|(_, c)| c - 1).sum();
        let show = |d: Option<Duration>| d.map_or("never".to_string(), |d| format!("{:.1} s", d.as_secs_f64()));
        eprintln!(
            "| {} | {mode} | {} | {} | {} | {} | {:.1} s | {} |",
            s.fault.name(),
            until - s.produced_before,
            lost.iter().filter(|i| (s.produced_before..until).contains(i)).count(),
            dups,
            show(s.not_ready_after),
            s.ready_again_after.as_secs_f64(),
            show(s.unhealthy_after),
        );
    }
    eprintln!(
        "{mode}: {total} records, {} lost, {} duplicates ({aborted_visible} of them in aborted transactions the test broker shows), {disconnections} disconnections counted ({by_client:?}), {retried} transaction commits retried",
        lost.len(),
        out.len() - copies.len()
    );
    assert!(
        lost.is_empty(),
        "{mode}: {} records lost (first {:?}); log:\n{logs}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    for s in &seen {
        match s.fault {
            // A stall or refusal is seen: not ready within the stall limit and a little.
            Fault::Stall(_) | Fault::Refuse(_) => {
                let d = s
                    .not_ready_after
                    .unwrap_or_else(|| panic!("{mode}: /readyz stayed ready during {}", s.fault.name()));
                assert!(d < Duration::from_secs(15), "{mode}: not ready only {d:?} into {}", s.fault.name());
            }
            Fault::Reset => {}
        }
        // /healthz fails only past its limit, and does during an outage longer than it.
        match s.fault {
            Fault::Stall(h) | Fault::Refuse(h) if h > limit_s + 10 => {
                let d = s
                    .unhealthy_after
                    .unwrap_or_else(|| panic!("{mode}: /healthz stayed 200 through {}", s.fault.name()));
                assert!(d >= Duration::from_secs(limit_s), "{mode}: /healthz failed before its limit ({d:?})");
            }
            _ => assert!(s.unhealthy_after.is_none(), "{mode}: /healthz failed during the short {}", s.fault.name()),
        }
    }
    let cut_offs = seen.iter().filter(|s| !matches!(s.fault, Fault::Reset)).count() as f64;
    assert!(disconnections >= cut_offs, "{mode}: {disconnections} disconnections counted for {cut_offs} outages");
    if exactly_once {
        // Each record once among committed transactions (the test broker also shows aborted ones).
        assert!(
            out.len() - copies.len() <= aborted_visible,
            "{mode}: {} duplicates but only {aborted_visible} records in aborted transactions",
            out.len() - copies.len()
        );
    }
}

#[test]
fn at_least_once_survives_stalls_resets_and_refused_connections() {
    run_faults(false, &[Fault::Stall(10), Fault::Reset, Fault::Stall(60), Fault::Refuse(60)]);
}

#[test]
fn exactly_once_survives_stalls_resets_and_refused_connections() {
    run_faults(true, &[Fault::Stall(10), Fault::Reset, Fault::Stall(60), Fault::Refuse(60)]);
}
