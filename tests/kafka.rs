//! The Kafka pipeline against a real broker (started by `scripts/test.sh`, address in
//! `PRODCAT_TEST_KAFKA`): N in → N out, every kind of bad record dead-lettered with its reason,
//! low-confidence review, graceful shutdown commits, kill -9 loses nothing, two instances share
//! the partitions, exactly-once, and a chaos run (six kill -9 mid-stream). Fails when the broker
//! `scripts/test.sh` starts is unreachable; skips with a message when none is configured.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::kafka::*;
use common::*;

#[test]
fn labels_every_record_dead_letters_bad_ones_and_commits_on_shutdown() {
    let Some(brokers) = broker() else { return };
    let fx = Fixture::new(300);
    let model = tiny_registry(&fx);
    let t = Topics::new(&brokers, "basic", 3);
    let (pipeline, port) = pipeline_file(&fx, &brokers, &t, &model, "");
    let mut child = start(&pipeline);
    wait_ready(port, &mut child);

    let mut messages: Vec<(String, Vec<u8>)> = (0..200).map(|i| product(&fx, i)).collect();
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("missing_text", b"".to_vec()),
        ("invalid_utf8", b"\xff\xfe\xfd".to_vec()),
        ("invalid_json", b"{\"id\": 1, \"title\": ".to_vec()),
        ("not_an_object", b"[\"phone\"]".to_vec()),
        ("missing_id", br#"{"title": "smartphone 5g"}"#.to_vec()),
        ("missing_text", br#"{"id": "b6", "name": "smartphone"}"#.to_vec()),
        ("empty_text", br#"{"id": "b7", "title": "   "}"#.to_vec()),
        ("wrong_type", br#"{"id": "b8", "title": 1234}"#.to_vec()),
        ("unknown_schema_version", br#"{"id": "b9", "title": "phone", "schema_version": 7}"#.to_vec()),
        // Over max_message_bytes and over what the producer can send: dead-lettered truncated.
        ("oversized", format!(r#"{{"id": "b10", "title": "{}"}}"#, "x".repeat(140_000)).into_bytes()),
    ];
    messages.extend(bad.iter().enumerate().map(|(i, (_, payload))| (format!("bad{i}"), payload.clone())));
    let per_partition = produce(&brokers, &t.input, &messages);

    let out = read_topic(&brokers, &t.output, 200, Duration::from_secs(120), false);
    assert_eq!(ids(&out).len(), 200, "every good record labeled");
    let labels = ["Books", "Fridges", "Laptops", "Phones", "Shoes"];
    for r in &out {
        let v = r.json();
        assert!(labels.contains(&v["label"].as_str().unwrap()));
        let c = v["confidence"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&c));
        assert_eq!(v["model_version"], "v1");
        assert_eq!(r.key.as_deref(), v["id"].as_str(), "key = product id");
        assert_eq!(r.headers.get("prodcat-model-version").map(String::as_str), Some("v1"));
        assert!(v["price"].is_i64(), "input fields pass through");
        assert!(v["source_offset"].is_i64() && v["source_topic"] == t.input.as_str());
    }
    let dead = read_topic(&brokers, &t.dead, bad.len(), Duration::from_secs(60), false);
    assert_eq!(dead.len(), bad.len());
    let reasons: Vec<String> = dead.iter().map(|d| d.headers["prodcat-reason"].clone()).collect();
    // Dead letters carry the original bytes — cut to what the producer can send (its
    // message.max.bytes, 150,000 here, less 32 KiB for headers), with the original size in a header.
    let limit = 150_000 - 32 * 1024;
    for (reason, payload) in &bad {
        assert!(reasons.contains(&reason.to_string()), "no dead letter with reason {reason}: {reasons:?}");
        let kept = &payload[..payload.len().min(limit)];
        let letter = dead.iter().find(|d| d.payload == kept).unwrap_or_else(|| panic!("original bytes for {reason}"));
        let truncated = payload.len() > limit;
        assert_eq!(letter.headers.get("prodcat-truncated").is_some(), truncated, "{reason}");
        if truncated {
            assert_eq!(letter.headers["prodcat-original-bytes"], payload.len().to_string());
        }
    }
    for d in &dead {
        assert_eq!(d.headers["prodcat-source-topic"], t.input);
        assert!(d.headers["prodcat-source-offset"].parse::<i64>().is_ok());
        assert!(!d.headers["prodcat-error"].is_empty());
    }
    // Low-confidence routing: exactly the records below the threshold are in the review topic.
    let low: BTreeSet<String> = out
        .iter()
        .filter(|r| r.json()["confidence"].as_f64().unwrap() < 0.6)
        .map(|r| r.json()["id"].as_str().unwrap().to_string())
        .collect();
    let review = read_topic(&brokers, &t.review, low.len(), Duration::from_secs(30), false);
    assert_eq!(ids(&review), low);
    // Labeled, review and dead-letter records are what schemas/ publishes.
    let json = |records: &[Read]| records.iter().map(Read::json).collect::<Vec<_>>();
    assert_valid("labeled-output.schema.json", &json(&out));
    assert_valid("labeled-output.schema.json", &json(&review));
    let headers: Vec<serde_json::Value> = dead.iter().map(|d| serde_json::json!(d.headers)).collect();
    assert_valid("kafka-dead-letter-headers.schema.json", &headers);

    let (status, metrics) = http_get(port, "/metrics").unwrap();
    assert_eq!(status, 200);
    for name in [
        "prodcat_records_received_total",
        "prodcat_records_labeled_total",
        "prodcat_records_rejected_total",
        "prodcat_stage_seconds",
        "prodcat_model_info",
        "prodcat_batch_records",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }
    assert!(metrics.contains("reason=\"invalid_json\""));
    assert_eq!(http_get(port, "/healthz").unwrap().0, 200);

    stop(child);
    // Graceful shutdown committed everything that was written.
    let commits = committed(&brokers, &t.group, &t.input, 3);
    assert_eq!(commits, per_partition, "committed offsets must reach the end of every partition");
}

#[test]
fn killed_pipeline_restarts_without_losing_records() {
    let Some(brokers) = broker() else { return };
    let fx = Fixture::new(300);
    let model = tiny_registry(&fx);
    let t = Topics::new(&brokers, "kill", 2);
    let (pipeline, port) = pipeline_file(&fx, &brokers, &t, &model, "");
    let messages: Vec<(String, Vec<u8>)> = (0..30_000).map(|i| product(&fx, i)).collect();
    produce(&brokers, &t.input, &messages);
    let mut child = start(&pipeline);
    wait_ready(port, &mut child);
    // Kill -9 once some output exists.
    let deadline = Instant::now() + Duration::from_secs(120);
    while read_topic(&brokers, &t.output, 200, Duration::from_millis(500), false).len() < 200 {
        assert!(Instant::now() < deadline);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = read_topic(&brokers, &t.output, 30_000, Duration::from_secs(2), false).len();
    assert!(before < 30_000, "the pipeline finished before the kill; the test needs more input");

    let (pipeline, port) = pipeline_file(&fx, &brokers, &t, &model, "");
    let mut child = start(&pipeline);
    wait_ready(port, &mut child);
    let out = read_topic(&brokers, &t.output, usize::MAX, Duration::from_secs(5), false);
    let mut all = ids(&out);
    let deadline = Instant::now() + Duration::from_secs(180);
    while all.len() < 30_000 && Instant::now() < deadline {
        all = ids(&read_topic(&brokers, &t.output, usize::MAX, Duration::from_secs(3), false));
    }
    stop(child);
    let expected: BTreeSet<String> = messages.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(all, expected, "records lost across kill -9 and restart");
}

#[test]
fn a_full_disk_fails_the_pipeline_loudly_and_it_exits() {
    let Some(brokers) = broker() else { return };
    let fx = Fixture::new(300);
    let model = tiny_registry(&fx);
    let Some(_disk) = FullDisk::mount(&fx.path("full")) else { return };
    let t = Topics::new(&brokers, "full", 1);
    let files = format!(
        "\n[files]\nenabled = true\npath = \"{}\"\nformat = \"arrow\"\nmax_age_ms = 200\n",
        fx.path("full/stream").display()
    );
    let (pipeline, port) = pipeline_file(&fx, &brokers, &t, &model, &files);
    let messages: Vec<(String, Vec<u8>)> = (0..20_000).map(|i| product(&fx, i)).collect();
    produce(&brokers, &t.input, &messages);
    let mut child = start(&pipeline);
    wait_ready(port, &mut child);
    // The file sink fills the disk: /healthz turns 503 naming the failure, and the process
    // exits non-zero on its own.
    let failure = wait_for_failure(port, child, Duration::from_secs(180));
    eprintln!("/healthz 503 → exit: {:?}; /healthz said: {:?}", failure.to_exit, failure.health);
    assert!(failure.logs.contains("No space left on device"), "{}", failure.logs);
    let body = failure.health.expect("the pipeline exited before /healthz showed the failure");
    assert!(body.contains("failed: ") && body.contains("No space left"), "{body}");
}

#[test]
fn two_instances_share_the_partitions() {
    let Some(brokers) = broker() else { return };
    let fx = Fixture::new(300);
    let model = tiny_registry(&fx);
    let t = Topics::new(&brokers, "pair", 4);
    let (p1, port1) = pipeline_file(&fx, &brokers, &t, &model, "");
    let (p2, port2) = pipeline_file(&fx, &brokers, &t, &model, "");
    let mut a = start(&p1);
    let mut b = start(&p2);
    wait_ready(port1, &mut a);
    wait_ready(port2, &mut b);
    // Both members must hold partitions before records arrive (the group settles first).
    let deadline = Instant::now() + Duration::from_secs(60);
    let received = |port: u16| -> f64 {
        http_get(port, "/metrics")
            .and_then(|(_, body)| {
                body.lines()
                    .find(|l| l.starts_with("prodcat_records_received_total{source=\"kafka\"}"))
                    .and_then(|l| l.split_whitespace().last()?.parse().ok())
            })
            .unwrap_or(0.0)
    };
    let messages: Vec<(String, Vec<u8>)> = (0..400).map(|i| product(&fx, i)).collect();
    std::thread::sleep(Duration::from_secs(4));
    produce(&brokers, &t.input, &messages);
    let mut out = Vec::new();
    while ids(&out).len() < 400 && Instant::now() < deadline {
        out = read_topic(&brokers, &t.output, usize::MAX, Duration::from_secs(3), false);
    }
    assert_eq!(ids(&out).len(), 400);
    let (ra, rb) = (received(port1), received(port2));
    stop(a);
    stop(b);
    assert!(ra > 0.0 && rb > 0.0, "both instances should have consumed: {ra} and {rb}");
    let partitions: BTreeSet<i64> = out.iter().map(|r| r.json()["source_partition"].as_i64().unwrap()).collect();
    assert_eq!(partitions.len(), 4);
}

#[test]
fn exactly_once_writes_each_record_once_across_restarts() {
    let Some(brokers) = broker() else { return };
    let fx = Fixture::new(300);
    let model = tiny_registry(&fx);
    let t = Topics::new(&brokers, "eos", 2);
    let extra = format!("exactly_once = true\ntransactional_id = \"{}\"", unique("txn"));
    let (pipeline, port) = pipeline_file(&fx, &brokers, &t, &model, &extra);
    let mut child = start(&pipeline);
    wait_ready(port, &mut child);
    produce(&brokers, &t.input, &(0..150).map(|i| product(&fx, i)).collect::<Vec<_>>());
    let out = read_topic(&brokers, &t.output, 150, Duration::from_secs(120), true);
    assert_eq!(out.len(), 150);
    stop(child);
    // Restart: nothing already committed is written again; new records are.
    let mut child = start(&pipeline);
    wait_ready(port, &mut child);
    produce(&brokers, &t.input, &(150..200).map(|i| product(&fx, i)).collect::<Vec<_>>());
    let out = read_topic(&brokers, &t.output, 200, Duration::from_secs(120), true);
    std::thread::sleep(Duration::from_secs(2));
    let out_all = read_topic(&brokers, &t.output, usize::MAX, Duration::from_secs(3), true);
    stop(child);
    assert_eq!(out.len(), 200);
    assert_eq!(out_all.len(), 200, "read_committed consumers must see every record exactly once");
    assert_eq!(ids(&out_all).len(), 200);
}

#[test]
fn operator_contract_environment_overrides() {
    let Some(brokers) = broker() else { return };
    let fx = Fixture::new(300);
    let model = tiny_registry(&fx);
    let t = Topics::new(&brokers, "contract", 1);
    let port = free_port();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/catalogue-kafka.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_prodcat"))
        .args(["run", &shipped.display().to_string()])
        .env("PRODCAT__KAFKA__BROKERS", &brokers)
        .env("PRODCAT__KAFKA__GROUP_ID", &t.group)
        .env("PRODCAT__KAFKA__INPUT_TOPIC", &t.input)
        .env("PRODCAT__KAFKA__OUTPUT_TOPIC", &t.output)
        .env("PRODCAT__KAFKA__DEAD_LETTER_TOPIC", &t.dead)
        .env("PRODCAT__KAFKA__REVIEW_TOPIC", &t.review)
        .env("PRODCAT__MODEL__PATH", model.join("tiny/current"))
        .env("PRODCAT__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(port, &mut child);
    produce(&brokers, &t.input, &[product(&fx, 1), ("x".into(), b"not json".to_vec())]);
    let out = read_topic(&brokers, &t.output, 1, Duration::from_secs(60), false);
    let dead = read_topic(&brokers, &t.dead, 1, Duration::from_secs(30), false);
    stop(child);
    assert_eq!(out.len(), 1);
    let v = out[0].json();
    assert!(v["label"].is_string() && v["confidence"].is_f64() && v["model_version"] == "v1");
    assert_eq!(dead.len(), 1);
}

#[test]
fn chaos_repeated_kill_9_loses_no_record_and_no_trusted_label() {
    use rand::{Rng, SeedableRng};
    let Some(brokers) = broker() else { return };
    let fx = Fixture::new(300);
    let model = tiny_registry(&fx);
    let t = Topics::new(&brokers, "chaos", 2);
    // Every record carries a trusted category, so the label store is under the same kills.
    let extra = label_store_only(&fx);
    // Enough input that six short runs cannot finish it (the tiny model labels ~10,000 records/s).
    let n = 60_000;
    let records: Vec<(String, Vec<u8>)> = (0..n).map(|i| labeled_product(&fx, i)).collect();
    let expected: BTreeSet<String> = records.iter().map(|(id, _)| id.clone()).collect();
    produce(&brokers, &t.input, &records);
    // kill -9 at seeded random points after start-up; each kill must land mid-stream.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20261122);
    let mut progress = Vec::new();
    for round in 0..6 {
        let (pipeline, port) = pipeline_file(&fx, &brokers, &t, &model, &extra);
        let mut child = start(&pipeline);
        wait_ready(port, &mut child);
        // Once this run has labeled something (partitions assigned, records flowing), a random
        // moment later.
        let deadline = Instant::now() + Duration::from_secs(60);
        while labeled_so_far(port) == 0 {
            assert!(Instant::now() < deadline, "round {round}: no record labeled within 60 s of start-up");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..300)));
        assert!(child.try_wait().unwrap().is_none(), "the pipeline exited before the kill");
        child.kill().unwrap();
        child.wait().unwrap();
        progress.push(ids(&read_topic(&brokers, &t.output, usize::MAX, Duration::from_secs(1), false)).len());
    }
    let mid_stream = progress.iter().filter(|&&done| 0 < done && done < n).count();
    assert!(mid_stream >= 5, "fewer than 5 kills landed mid-stream (unique outputs after each: {progress:?})");
    // A last run finishes the stream.
    let (pipeline, port) = pipeline_file(&fx, &brokers, &t, &model, &extra);
    let mut child = start(&pipeline);
    wait_ready(port, &mut child);
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut out = read_topic(&brokers, &t.output, usize::MAX, Duration::from_secs(2), false);
    while ids(&out).len() < n && Instant::now() < deadline {
        out = read_topic(&brokers, &t.output, usize::MAX, Duration::from_secs(2), false);
    }
    stop(child);
    let out = read_topic(&brokers, &t.output, usize::MAX, Duration::from_secs(3), false);
    let unique = ids(&out);
    eprintln!(
        "chaos: {} kill -9 mid-stream (unique outputs after each: {progress:?}), {n} records, {} outputs, {} duplicates",
        mid_stream,
        out.len(),
        out.len() - unique.len()
    );
    assert_eq!(unique.len(), n, "records lost across repeated kill -9");
    assert_eq!(unique, expected);
    assert_eq!(stored_label_ids(&fx.path("state/labels")), expected, "trusted labels lost across repeated kill -9");
}

/// Records this pipeline process has labeled (its `/metrics` counter; 0 when unreachable).
fn labeled_so_far(port: u16) -> u64 {
    let metrics = http_get(port, "/metrics").map(|(_, body)| body).unwrap_or_default();
    metrics
        .lines()
        .filter(|l| l.starts_with("prodcat_records_labeled_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[test]
fn a_full_label_store_disk_stops_commits_and_fails_the_pipeline() {
    let Some(brokers) = broker() else { return };
    let fx = Fixture::new(300);
    let model = tiny_registry(&fx);
    let Some(_disk) = FullDisk::mount(&fx.path("state")) else { return };
    // One partition: offset i is record i, so "committed up to C" names the records p0..p(C-1).
    let t = Topics::new(&brokers, "fullstate", 1);
    let extra = label_store_only(&fx);
    let (pipeline, port) = pipeline_file(&fx, &brokers, &t, &model, &extra);
    let n = 5_000;
    let records: Vec<(String, Vec<u8>)> = (0..n).map(|i| labeled_product(&fx, i)).collect();
    produce(&brokers, &t.input, &records);
    let mut child = start(&pipeline);
    wait_ready(port, &mut child);
    // ~1,000 labels fill the 200 KiB store: /healthz turns 503 and the process exits non-zero.
    let failure = wait_for_failure(port, child, Duration::from_secs(120));
    assert!(
        failure.logs.contains("No space left on device") && failure.logs.contains("label store"),
        "{}",
        failure.logs
    );
    let body = failure.health.expect("the pipeline exited before /healthz showed the failure");
    assert!(body.contains("failed: ") && body.contains("No space left"), "{body}");
    // Nothing past the last durable label was committed: every committed record's label is stored.
    let committed = committed(&brokers, &t.group, &t.input, 1).get(&0).copied().unwrap_or(0);
    assert!(committed < n as i64, "every offset was committed although the store is full");
    let copy = fx.path("state-copy");
    let status = Command::new("cp").args(["-r", &fx.path("state/labels").display().to_string()]).arg(&copy).status();
    assert!(status.unwrap().success());
    let stored = stored_label_ids(&copy);
    let missing: Vec<String> = (0..committed).map(|i| format!("p{i}")).filter(|id| !stored.contains(id)).collect();
    eprintln!("full label store: {committed} offsets committed, {} labels stored, /healthz: {body:?}", stored.len());
    assert!(
        missing.is_empty(),
        "committed records without a stored label: {} (first {:?})",
        missing.len(),
        missing.first()
    );
}

/// The stored label of every product in the label store at `dir`.
fn stored_labels(dir: &Path) -> std::collections::BTreeMap<String, (String, String)> {
    let store = prodcat::learn::LabelStore::open(dir, Default::default()).unwrap();
    store.snapshot().unwrap().into_iter().map(|r| (r.id, (r.label, r.text))).collect()
}

#[test]
fn corrections_find_their_text_or_are_dead_lettered_and_commit_inside_the_transaction() {
    let Some(brokers) = broker() else { return };
    let fx = Fixture::new(300);
    let model = tiny_registry(&fx);
    let t = Topics::new(&brokers, "feedback", 1);
    let feedback = unique("feedback-fb");
    create_topics(&brokers, &[(&feedback, 1)]);
    let extra = format!(
        "exactly_once = true\ntransactional_id = \"{}\"\n{}feedback_topic = \"{feedback}\"\n",
        unique("txn"),
        label_store_only(&fx)
    );
    let (pipeline, port) = pipeline_file(&fx, &brokers, &t, &model, &extra);
    let store = fx.path("state/labels");
    let title = |i: usize| fx.products[i % fx.products.len()].title.clone();
    let fb = |v: serde_json::Value| (v["id"].as_str().unwrap_or("x").to_string(), v.to_string().into_bytes());

    // First instance: p0..p19 carry a trusted category, p20..p39 do not.
    let mut child = start(&pipeline);
    wait_ready(port, &mut child);
    let mut records: Vec<(String, Vec<u8>)> = (0..20).map(|i| labeled_product(&fx, i)).collect();
    records.extend((20..40).map(|i| product(&fx, i)));
    produce(&brokers, &t.input, &records);
    assert_eq!(read_topic(&brokers, &t.output, 40, Duration::from_secs(120), true).len(), 40);
    produce(
        &brokers,
        &feedback,
        &[
            fb(serde_json::json!({"id": "p25", "label": "Books"})), // read by this instance
            fb(serde_json::json!({"id": "t1", "label": "Shoes", "title": "leather ankle boots"})),
            fb(serde_json::json!({"id": "nowhere", "label": "Books"})), // never seen
            ("junk".into(), b"{not json".to_vec()),
            fb(serde_json::json!({"id": "p4"})), // no label
        ],
    );
    let dead = read_topic(&brokers, &t.dead, 3, Duration::from_secs(60), true);
    let reasons: BTreeSet<String> = dead.iter().map(|d| d.headers["prodcat-reason"].clone()).collect();
    assert_eq!(reasons, ["invalid_json", "missing_label", "unknown_product"].map(String::from).into());
    for d in &dead {
        assert_eq!(d.headers["prodcat-source-topic"], feedback);
    }
    let unknown = dead.iter().find(|d| d.headers["prodcat-reason"] == "unknown_product").unwrap();
    assert!(unknown.headers["prodcat-error"].contains("`nowhere`"), "{:?}", unknown.headers);
    stop(child);
    // Exactly-once: the feedback offsets were committed inside the transactions.
    assert_eq!(committed(&brokers, &t.group, &feedback, 1).get(&0).copied(), Some(5));
    let labels = stored_labels(&store);
    assert_eq!(labels["p25"], ("Books".to_string(), title(25)));
    assert_eq!(labels["t1"], ("Shoes".to_string(), "leather ankle boots".to_string()));
    assert!(!labels.contains_key("nowhere") && labels.len() == 22, "{labels:?}");

    // A second instance (nothing in memory): a product labeled before is found in the label
    // store; one that was only read by the first instance is an unknown product, dead-lettered.
    let mut child = start(&pipeline);
    wait_ready(port, &mut child);
    produce(
        &brokers,
        &feedback,
        &[
            fb(serde_json::json!({"id": "p7", "label": "Fridges"})),
            fb(serde_json::json!({"id": "p30", "label": "Books"})),
        ],
    );
    let dead = read_topic(&brokers, &t.dead, 4, Duration::from_secs(60), true);
    assert_eq!(dead.len(), 4);
    let headers: Vec<serde_json::Value> = dead.iter().map(|d| serde_json::json!(d.headers)).collect();
    assert_valid("kafka-dead-letter-headers.schema.json", &headers);
    assert!(dead[3].headers["prodcat-error"].contains("`p30`"), "{:?}", dead[3].headers);
    stop(child);
    assert_eq!(committed(&brokers, &t.group, &feedback, 1).get(&0).copied(), Some(7));
    let labels = stored_labels(&store);
    assert_eq!(labels["p7"], ("Fridges".to_string(), title(7)));
    assert!(!labels.contains_key("p30"));
}

#[test]
fn exactly_once_aborts_the_open_transaction_when_a_revoke_cannot_drain() {
    let Some(brokers) = broker() else { return };
    let fx = Fixture::new(300);
    let model = tiny_registry(&fx);
    let t = Topics::new(&brokers, "eos-revoke", 2);
    // Transactions stay open for 15 s and a revoke waits 1 ms: the first instance's revoke cannot
    // drain, so its open transaction must be aborted rather than committed later with the offsets
    // of partitions the second instance owns by then.
    let pipeline_for = |txn: &str| {
        let extra = format!("exactly_once = true\ntransactional_id = \"{txn}\"\ndrain_timeout_ms = 1\n");
        let (path, port) = pipeline_file(&fx, &brokers, &t, &model, &extra);
        edit_pipeline(&path, "commit_interval_ms = 200", "commit_interval_ms = 15000");
        (path, port)
    };
    let (a_file, a_port) = pipeline_for(&unique("txn-a"));
    let (b_file, b_port) = pipeline_for(&unique("txn-b"));
    let hides_aborts = broker_hides_aborted_records(&brokers);
    let mut a = start(&a_file);
    wait_ready(a_port, &mut a);
    let ends = produce(&brokers, &t.input, &(0..200).map(|i| product(&fx, i)).collect::<Vec<_>>());
    // Wait until the first instance has written them all into its open transaction.
    let deadline = Instant::now() + Duration::from_secs(60);
    while labeled_so_far(a_port) < 200 {
        assert!(Instant::now() < deadline, "the first instance did not label the records");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut b = start(&b_file);
    wait_ready(b_port, &mut b);
    // Done when every input offset is committed (by transactions of either instance).
    let deadline = Instant::now() + Duration::from_secs(120);
    while committed(&brokers, &t.group, &t.input, 2) != ends {
        assert!(Instant::now() < deadline, "offsets not committed: {:?}", committed(&brokers, &t.group, &t.input, 2));
        std::thread::sleep(Duration::from_millis(200));
    }
    let logs = [stop(a), stop(b)];
    let aborted: usize = logs.iter().map(|l| aborted_records(l)).sum();
    let all = read_topic(&brokers, &t.output, usize::MAX, Duration::from_secs(3), true);
    eprintln!(
        "after the revoke: {} outputs, {} products, {aborted} records in aborted transactions (broker hides them: {hides_aborts})",
        all.len(),
        ids(&all).len()
    );
    assert!(aborted >= 200, "the first instance did not abort its open transaction");
    assert_eq!(ids(&all).len(), 200, "every record labeled");
    // Each record once in a committed transaction: on Kafka that is all a read_committed
    // consumer sees; the test broker also shows the aborted ones.
    let visible_aborted = if hides_aborts { 0 } else { aborted };
    assert_eq!(all.len(), 200 + visible_aborted, "a record was committed twice");
}

#[test]
fn a_send_failing_mid_transaction_aborts_it_and_a_restart_writes_each_record_once() {
    let Some(brokers) = broker() else { return };
    let fx = Fixture::new(300);
    let model = tiny_registry(&fx);
    let t = Topics::new(&brokers, "eos-fault", 1);
    let extra = format!("exactly_once = true\ntransactional_id = \"{}\"\ncommit_interval_ms = 5000", unique("txn"));
    let (pipeline, port) = pipeline_file(&fx, &brokers, &t, &model, "");
    edit_pipeline(&pipeline, "commit_interval_ms = 200", &extra);
    let n = 600usize;
    produce(&brokers, &t.input, &(0..n).map(|i| product(&fx, i)).collect::<Vec<_>>());
    // The 400th record the sink enqueues (outputs and reviews) fails, inside an open transaction.
    let mut child = start_with_env(&pipeline, &[("PRODCAT_FAULTS", "kafka.send=400")]);
    wait_ready(port, &mut child);
    let failure = wait_for_failure(port, child, Duration::from_secs(60));
    let body = failure.health.expect("the pipeline exited before /healthz showed the failure");
    assert!(body.contains("injected fault"), "{body}");
    assert!(failure.logs.contains("transaction aborted"), "{}", failure.logs);
    let first_run_committed = committed(&brokers, &t.group, &t.input, 1).get(&0).copied().unwrap_or(0);
    let first_run_ended = Instant::now();
    // Restart without the fault: it resumes from the committed offset, so nothing of the aborted
    // transaction was committed.
    let mut child = start(&pipeline);
    wait_ready(port, &mut child);
    let deadline = Instant::now() + Duration::from_secs(120);
    while committed(&brokers, &t.group, &t.input, 1).get(&0).copied() != Some(n as i64) {
        assert!(Instant::now() < deadline, "the restarted pipeline did not commit every record");
        std::thread::sleep(Duration::from_millis(200));
    }
    stop(child);
    let all = read_topic(&brokers, &t.output, usize::MAX, Duration::from_secs(3), true);
    let since = chrono::Utc::now() - chrono::Duration::from_std(first_run_ended.elapsed()).unwrap();
    let second: Vec<i64> = all
        .iter()
        .map(|r| r.json())
        .filter(|v| chrono::DateTime::parse_from_rfc3339(v["labeled_at"].as_str().unwrap()).unwrap() > since)
        .map(|v| v["source_offset"].as_i64().unwrap())
        .collect();
    let committed_first: BTreeSet<i64> =
        all.iter().map(|r| r.json()["source_offset"].as_i64().unwrap()).filter(|o| *o < first_run_committed).collect();
    eprintln!(
        "mid-transaction fault: first run committed {first_run_committed} of {n}, the restart labeled {} records; {} outputs in all",
        second.len(),
        all.len()
    );
    assert_eq!(second.iter().copied().collect::<BTreeSet<_>>(), (first_run_committed..n as i64).collect());
    assert_eq!(second.len(), n - first_run_committed as usize, "the restart wrote a record twice");
    assert_eq!(committed_first.len() as i64, first_run_committed, "a committed record is missing");
    assert!(first_run_committed < n as i64);
    if broker_hides_aborted_records(&brokers) {
        assert_eq!(all.len(), n, "read_committed consumers must see each record once");
    }
}

#[test]
fn a_learner_instance_stores_every_trusted_label_and_writes_nothing() {
    let Some(brokers) = broker() else { return };
    let fx = Fixture::new(300);
    let model = tiny_registry(&fx);
    let t = Topics::new(&brokers, "learner", 2);
    let extra = format!("learn_only = true\n{}", label_store_only(&fx));
    let (pipeline, port) = pipeline_file(&fx, &brokers, &t, &model, &extra);
    for topic in [&t.output, &t.dead, &t.review] {
        edit_pipeline(&pipeline, &format!("\"{topic}\""), "\"\"");
    }
    let mut records: Vec<(String, Vec<u8>)> = (0..300).map(|i| labeled_product(&fx, i)).collect();
    records.push(("bad".into(), b"{not json".to_vec()));
    let ends = produce(&brokers, &t.input, &records);
    let mut child = start(&pipeline);
    wait_ready(port, &mut child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed(&brokers, &t.group, &t.input, 2) != ends {
        assert!(Instant::now() < deadline, "the learner did not commit every record");
        std::thread::sleep(Duration::from_millis(200));
    }
    stop(child);
    assert_eq!(stored_label_ids(&fx.path("state/labels")).len(), 300);
    for topic in [&t.output, &t.dead, &t.review] {
        assert!(read_topic(&brokers, topic, usize::MAX, Duration::from_secs(2), false).is_empty(), "{topic} written");
    }
}

/// Every encoder family (#27) serves through the Kafka pipeline: a tiny checkpoint of each in its
/// Hugging Face layout, trained, published, and run by `prodcat run` — every record labeled. BERT
/// is what the tests above serve; the others run side by side, one pipeline each.
#[test]
fn every_encoder_family_serves_through_kafka() {
    use prodcat::encoder::{EncoderConfig, Pooling};
    use prodcat::testkit::{TinyCheckpoint, tiny_checkpoint};
    let Some(brokers) = broker() else { return };
    let fx = Fixture::new(200);
    let data = fixture_data(&fx);
    let kinds: Vec<TinyCheckpoint> = TinyCheckpoint::ALL.into_iter().filter(|k| *k != TinyCheckpoint::Bert).collect();
    let mut runs = Vec::new();
    for kind in &kinds {
        let name = format!("{kind:?}").to_lowercase();
        let base = fx.path(&format!("base-{name}"));
        tiny_checkpoint(*kind, &base, 7).unwrap();
        let causal = EncoderConfig::from_hf_file(&base.join("config.json")).unwrap().causal;
        let registry = fx.path(&format!("registry-{name}"));
        let job = prodcat::train::TrainJob {
            data: &data,
            source: prodcat::train::DataSource::default(),
            base_dir: base,
            registry: registry.clone(),
            name: "tiny".into(),
            settings: prodcat::train::TrainSettings {
                epochs: 1,
                learning_rate: 1e-2,
                max_length: 32,
                pooling: if causal { Pooling::Last } else { Pooling::Mean },
                ..Default::default()
            },
            resume: false,
            session: prodcat::serve::SessionSettings::default(),
            show_progress: false,
            cancel: None,
            labels: None,
        };
        prodcat::train::fit(job).unwrap().publish(true).unwrap();
        let t = Topics::new(&brokers, &format!("family-{name}"), 2);
        let (pipeline, port) = pipeline_file(&fx, &brokers, &t, &registry, "");
        let mut child = start(&pipeline);
        wait_ready(port, &mut child);
        runs.push((kind, t, child));
    }
    let messages: Vec<(String, Vec<u8>)> = (0..60).map(|i| product(&fx, i)).collect();
    for (_, t, _) in &runs {
        produce(&brokers, &t.input, &messages);
    }
    let labels = ["Books", "Fridges", "Laptops", "Phones", "Shoes"];
    for (kind, t, child) in runs {
        let out = read_topic(&brokers, &t.output, messages.len(), Duration::from_secs(120), false);
        stop(child);
        assert_eq!(ids(&out).len(), messages.len(), "{kind:?}: every record labeled");
        assert!(out.iter().all(|r| labels.contains(&r.json()["label"].as_str().unwrap())), "{kind:?}");
    }
}

#[test]
fn sasl_settings_reach_librdkafka_and_no_secret_is_printed() {
    let Some(brokers) = broker() else { return };
    let fx = Fixture::new(120);
    let model = tiny_registry(&fx);
    let t = Topics::new(&brokers, "secrets", 1);
    let (pipeline, port) = pipeline_file(&fx, &brokers, &t, &model, "");
    let secret = "hunter2-do-not-print";
    let mut text = std::fs::read_to_string(&pipeline).unwrap();
    text += &format!(
        "\n[kafka.properties]\n\"security.protocol\" = \"SASL_PLAINTEXT\"\n\"sasl.mechanism\" = \"PLAIN\"\n\"sasl.username\" = \"prodcat\"\n\"sasl.password\" = \"{secret}\"\n"
    );
    std::fs::write(&pipeline, text).unwrap();
    // `prodcat check` reads the settings and prints none of the secret.
    let o = prodcat(&["check", &pipeline.display().to_string()]);
    let shown = format!("{}{}", stdout(&o), stderr(&o));
    assert!(!shown.contains(secret), "{shown}");
    // A bad value beside it: the error names the key, not the secret.
    let o = prodcat(&["check", &pipeline.display().to_string(), "--set", "kafka.max_message_bytes=5000000"]);
    let shown = format!("{}{}", stdout(&o), stderr(&o));
    assert!(!o.status.success() && !shown.contains(secret), "{shown}");
    // The pipeline passes them to librdkafka (which then speaks SASL to the broker) with every
    // log at debug, librdkafka's own included: the secret appears nowhere.
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_prodcat"))
        .args(["run", &pipeline.display().to_string()])
        .env("PRODCAT_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut endpoints = String::new();
    while Instant::now() < deadline {
        for path in ["/healthz", "/readyz", "/metrics"] {
            if let Some((_, body)) = http_get(port, path) {
                endpoints.push_str(&body);
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let killer = std::thread::spawn({
        let pid = child.id().to_string();
        move || {
            std::thread::sleep(Duration::from_secs(40));
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
    });
    let output = child.wait_with_output().unwrap();
    drop(killer);
    let logs = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(!logs.contains(secret) && !endpoints.contains(secret), "a secret was printed:\n{logs}");
    assert!(logs.to_lowercase().contains("sasl"), "librdkafka did not use the SASL settings:\n{logs}");
    assert!(!logs.contains("panicked"), "{logs}");
}
