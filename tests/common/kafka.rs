//! Kafka helpers for integration tests: topics, producing, reading, pipeline processes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::Fixture;

/// The test broker's address. Without `PRODCAT_TEST_KAFKA` a Kafka test skips with a message —
/// unless `PRODCAT_REQUIRE_KAFKA=1` (set by `scripts/test.sh`, so by CI), where a missing or
/// unreachable broker fails the test instead of letting it pass without running.
pub fn broker() -> Option<String> {
    let required = std::env::var("PRODCAT_REQUIRE_KAFKA").is_ok_and(|v| v == "1");
    let Some(addr) = std::env::var("PRODCAT_TEST_KAFKA").ok().filter(|s| !s.is_empty()) else {
        assert!(!required, "PRODCAT_REQUIRE_KAFKA=1 but PRODCAT_TEST_KAFKA is not set: the test broker did not start");
        eprintln!(
            "skipped: no Kafka broker (run `bash scripts/test.sh`, which starts one, or set PRODCAT_TEST_KAFKA=host:port)"
        );
        return None;
    };
    // An address was given: the broker must answer (a test that cannot reach it fails).
    let reachable = addr.split(',').any(|a| {
        use std::net::ToSocketAddrs;
        a.to_socket_addrs()
            .ok()
            .into_iter()
            .flatten()
            .any(|sa| std::net::TcpStream::connect_timeout(&sa, std::time::Duration::from_secs(3)).is_ok())
    });
    assert!(reachable, "the Kafka broker at PRODCAT_TEST_KAFKA={addr} is unreachable");
    Some(addr)
}

pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

pub fn create_topics(brokers: &str, topics: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    let new: Vec<NewTopic<'_>> = topics.iter().map(|(t, p)| NewTopic::new(t, *p, TopicReplication::Fixed(1))).collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for result in rt.block_on(admin.create_topics(&new, &AdminOptions::new())).unwrap() {
        result.unwrap();
    }
}

/// Produces messages (key, payload), waiting for every delivery; returns records per partition.
pub fn produce(brokers: &str, topic: &str, messages: &[(String, Vec<u8>)]) -> BTreeMap<i32, i64> {
    let producer: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", brokers).set("linger.ms", "5").create().unwrap();
    for (key, payload) in messages {
        let mut record = BaseRecord::to(topic).key(key.as_bytes()).payload(payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    back,
                )) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => panic!("producing to {topic}: {e}"),
            }
        }
        producer.poll(Duration::from_millis(0));
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    // Partition of each key (the default partitioner is deterministic, so read them back).
    let mut counts = BTreeMap::new();
    for m in read_topic(brokers, topic, messages.len(), Duration::from_secs(30), false) {
        *counts.entry(m.partition).or_insert(0i64) += 1;
    }
    counts
}

#[derive(Debug, Clone)]
pub struct Read {
    pub partition: i32,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: HashMap<String, String>,
}

impl Read {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap()
    }
}

/// Reads a topic from the beginning (no consumer group) until `expected` messages or `timeout`.
pub fn read_topic(brokers: &str, topic: &str, expected: usize, timeout: Duration, read_committed: bool) -> Vec<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", if read_committed { "read_committed" } else { "read_uncommitted" })
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in metadata.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < expected && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
                        .collect()
                })
                .unwrap_or_default();
            out.push(Read {
                partition: m.partition(),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                payload: m.payload().unwrap_or_default().to_vec(),
                headers,
            });
        }
    }
    out
}

/// Committed offsets of `group` on `topic`, per partition.
pub fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", brokers).set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let offsets = consumer.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    offsets
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

pub struct Topics {
    pub input: String,
    pub output: String,
    pub dead: String,
    pub review: String,
    pub group: String,
}

impl Topics {
    pub fn new(brokers: &str, name: &str, partitions: i32) -> Self {
        let t = Topics {
            input: unique(&format!("{name}-in")),
            output: unique(&format!("{name}-out")),
            dead: unique(&format!("{name}-dlq")),
            review: unique(&format!("{name}-review")),
            group: unique(&format!("{name}-group")),
        };
        create_topics(brokers, &[(&t.input, partitions), (&t.output, 1), (&t.dead, 1), (&t.review, 1)]);
        t
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Writes a pipeline file for the test broker and topics.
pub fn pipeline_file(fx: &Fixture, brokers: &str, t: &Topics, model: &Path, extra: &str) -> (PathBuf, u16) {
    let port = free_port();
    let path = fx.path(&format!("pipeline-{port}.toml"));
    let text = format!(
        r#"
[pipeline]
kind = "kafka"
[model]
path = "{model}"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
input_topic = "{input}"
output_topic = "{output}"
dead_letter_topic = "{dead}"
review_topic = "{review}"
review_threshold = 0.6
max_message_bytes = 100000
commit_interval_ms = 200
chunk_wait_ms = 5
{extra}
[kafka.consumer_properties]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
[kafka.producer_properties]
"message.max.bytes" = "150000"
[http]
listen = "127.0.0.1:{port}"
[engine]
window = 64
"#,
        model = model.display(),
        group = t.group,
        input = t.input,
        output = t.output,
        dead = t.dead,
        review = t.review,
    );
    std::fs::write(&path, text).unwrap();
    (path, port)
}

/// Replaces `from` by `to` in a written pipeline file (a setting `pipeline_file` fixes).
pub fn edit_pipeline(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} lacks `{from}`", path.display());
    std::fs::write(path, text.replace(from, to)).unwrap();
}

pub fn start(pipeline: &Path) -> Child {
    start_with_env(pipeline, &[])
}

/// Starts `prodcat run PIPELINE` with extra environment variables (e.g. `PRODCAT_FAULTS`).
pub fn start_with_env(pipeline: &Path, env: &[(&str, &str)]) -> Child {
    // PRODCAT_TEST_VERBOSE=1 shows the pipeline's logs live (with --no-capture).
    let verbose = std::env::var_os("PRODCAT_TEST_VERBOSE").is_some();
    Command::new(env!("CARGO_BIN_EXE_prodcat"))
        .args(["run", &pipeline.display().to_string()])
        .envs(env.iter().copied())
        .env("PRODCAT_LOG", if verbose { "debug,rdkafka=info" } else { "info" })
        .stdout(Stdio::piped())
        .stderr(if verbose { Stdio::inherit() } else { Stdio::piped() })
        .spawn()
        .unwrap()
}

pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read as _, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let status = body.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body))
}

pub fn wait_ready(port: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((200, _)) = http_get(port, "/readyz") {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("pipeline exited early ({status}):\n{err}");
        }
        assert!(Instant::now() < deadline, "pipeline not ready after 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM and wait: the process must exit cleanly.
pub fn stop(child: Child) -> String {
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let output = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    eprintln!("--- pipeline log ---\n{err}");
    assert!(output.status.success(), "pipeline did not stop cleanly: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

pub fn product(fx: &Fixture, i: usize) -> (String, Vec<u8>) {
    let p = &fx.products[i % fx.products.len()];
    let id = format!("p{i}");
    (id.clone(), serde_json::json!({"id": id, "title": p.title, "price": i}).to_string().into_bytes())
}

pub fn ids(reads: &[Read]) -> BTreeSet<String> {
    reads.iter().map(|r| r.json()["id"].as_str().unwrap().to_string()).collect()
}

/// Record `i` of the fixture with its trusted category (field `category`).
pub fn labeled_product(fx: &Fixture, i: usize) -> (String, Vec<u8>) {
    let p = &fx.products[i % fx.products.len()];
    let id = format!("p{i}");
    (id.clone(), serde_json::json!({"id": id, "title": p.title, "category": p.category}).to_string().into_bytes())
}

/// A `[training]` section that keeps trusted labels (`category`) in a label store under the
/// fixture's `state` folder but never has enough of them to train: the label store alone is
/// under test.
pub fn label_store_only(fx: &Fixture) -> String {
    format!(
        "\n[training]\nenabled = true\ntrusted_label_field = \"category\"\nbase_model = \"{}\"\nstate_dir = \"{}\"\nmin_new_labels = 1000000\n",
        fx.base.display(),
        fx.path("state").display()
    )
}

/// Product ids in the label store at `dir` (what a restarted pipeline would find).
pub fn stored_label_ids(dir: &Path) -> BTreeSet<String> {
    let store = prodcat::learn::LabelStore::open(dir, Default::default()).unwrap();
    store.snapshot().unwrap().into_iter().map(|r| r.id).collect()
}

/// How a pipeline that was expected to fail ended.
pub struct Failure {
    /// The first `/healthz` answer with status 503 (`None`: it exited before one was seen).
    pub health: Option<String>,
    /// From that answer to the process's exit.
    pub to_exit: Duration,
    pub logs: String,
}

/// Waits (at most `within`) for a started pipeline to turn unhealthy and exit on its own,
/// draining its logs meanwhile (a full pipe would block the process, not the fault); asserts the
/// exit is non-zero and nothing panicked.
pub fn wait_for_failure(port: u16, mut child: Child, within: Duration) -> Failure {
    let mut stderr = child.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut text).unwrap();
        text
    });
    let deadline = Instant::now() + within;
    let mut health: Option<(String, Instant)> = None;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if health.is_none()
            && let Some((503, body)) = http_get(port, "/healthz")
        {
            health = Some((body, Instant::now()));
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the pipeline did not fail and exit within {within:?}; its log:\n{}", logs.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let logs = logs.join().unwrap();
    assert!(!status.success(), "a failed pipeline must exit non-zero:\n{logs}");
    assert!(!logs.contains("panicked"), "{logs}");
    let to_exit = health.as_ref().map_or(Duration::ZERO, |(_, at)| at.elapsed());
    Failure { health: health.map(|(body, _)| body), to_exit, logs }
}

/// Whether the broker hides the records of aborted transactions from read_committed consumers,
/// as Kafka does. The Tansu test broker does not (they stay visible), so tests that abort count
/// the aborted records in where it shows them.
pub fn broker_hides_aborted_records(brokers: &str) -> bool {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let topic = unique("abort-probe");
    create_topics(brokers, &[(&topic, 1)]);
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("transactional.id", unique("probe"))
        .create()
        .unwrap();
    let limit = Duration::from_secs(10);
    p.init_transactions(limit).unwrap();
    for commit in [false, true] {
        p.begin_transaction().unwrap();
        p.send(BaseRecord::<str, str>::to(&topic).payload(if commit { "committed" } else { "aborted" })).unwrap();
        p.flush(limit).unwrap();
        if commit { p.commit_transaction(limit).unwrap() } else { p.abort_transaction(limit).unwrap() }
    }
    read_topic(brokers, &topic, usize::MAX, Duration::from_secs(3), true).len() == 1
}

/// Input records in the transactions a pipeline log says it aborted.
pub fn aborted_records(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("transaction aborted"))
        .filter_map(|l| l.split("records=").nth(1)?.split_whitespace().next()?.parse::<usize>().ok())
        .sum()
}
