//! A TCP fault proxy between prodcat and a broker of its own: a broker started to advertise the
//! proxy's address (Tansu's `--advertised-listener-url`), so every connection — bootstrap,
//! partition leaders, group and transaction coordinators — goes through the proxy, and the test
//! breaks the network at will: stall (connections stay open, nothing is forwarded), reset (every
//! connection gets a TCP RST) and refuse (open connections reset, nothing listens on the port).
//! Connections of clients whose Kafka `client.id` starts with `test-` (read from the first
//! request's header) are spared: the test's own producer keeps feeding the broker meanwhile.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const PASS: u8 = 0;
const STALL: u8 = 1;
const REFUSE: u8 = 2;

struct State {
    mode: AtomicU8,
    /// Bumped by a reset: connections of an older epoch close with an RST.
    epoch: AtomicU64,
    stop: AtomicBool,
    connections: AtomicU64,
}

/// The proxy: listens on `port`, forwards to `upstream`.
pub struct FaultProxy {
    pub port: u16,
    state: Arc<State>,
}

impl FaultProxy {
    pub fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            mode: AtomicU8::new(PASS),
            epoch: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            connections: AtomicU64::new(0),
        });
        let s = state.clone();
        std::thread::spawn(move || accept_loop(Some(listener), port, upstream, s));
        FaultProxy { port, state }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Connections stay open; nothing passes either way.
    pub fn stall(&self) {
        self.state.mode.store(STALL, Ordering::SeqCst);
    }

    /// Every open connection (but spared ones) is reset (TCP RST); new ones are accepted.
    pub fn reset(&self) {
        self.state.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Every open connection is reset and nothing listens on the port until [`Self::heal`].
    pub fn refuse(&self) {
        self.state.mode.store(REFUSE, Ordering::SeqCst);
        self.reset();
    }

    /// Back to forwarding (a stalled connection passes what it held).
    pub fn heal(&self) {
        self.state.mode.store(PASS, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        self.reset();
    }
}

fn accept_loop(mut listener: Option<TcpListener>, port: u16, upstream: SocketAddr, state: Arc<State>) {
    while !state.stop.load(Ordering::SeqCst) {
        let refusing = state.mode.load(Ordering::SeqCst) == REFUSE;
        match (&listener, refusing) {
            (Some(_), true) => listener = None,
            (None, false) => {
                // Back on the same port (the address the broker advertises).
                if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
                    listener = Some(l);
                }
            }
            _ => {}
        }
        let Some(l) = &listener else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        l.set_nonblocking(true).unwrap();
        match l.accept() {
            Ok((client, _)) => {
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(upstream) else { continue };
                state.connections.fetch_add(1, Ordering::SeqCst);
                let epoch = state.epoch.load(Ordering::SeqCst);
                let spared = Arc::new(AtomicU8::new(UNKNOWN));
                for (from, to, from_client) in [(&client, &server, true), (&server, &client, false)] {
                    let (from, to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                    let (state, spared) = (state.clone(), spared.clone());
                    std::thread::spawn(move || pump(from, to, epoch, state, spared, from_client));
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

const UNKNOWN: u8 = 0;
const SPARED: u8 = 1;
const FAULTED: u8 = 2;

/// Whether a client's first request names a `test-…` client id (request header: size, api key,
/// api version, correlation id, then the client id as a 16-bit length and its bytes).
fn spared_client(first: &[u8]) -> bool {
    let Some(len) = first.get(12..14).map(|b| i16::from_be_bytes([b[0], b[1]])) else { return false };
    len > 0 && first.get(14..14 + len as usize).is_some_and(|id| id.starts_with(b"test-"))
}

/// Copies `from` to `to` until either side closes or a reset ends this connection's epoch.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    epoch: u64,
    state: Arc<State>,
    spared: Arc<AtomicU8>,
    from_client: bool,
) {
    from.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let close = |from: &TcpStream, to: &TcpStream| {
        // Linger 0: the close sends an RST, not a FIN.
        for s in [from, to] {
            let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
            let _ = s.shutdown(Shutdown::Both);
        }
    };
    let hit = || spared.load(Ordering::SeqCst) != SPARED;
    let cut = || hit() && state.epoch.load(Ordering::SeqCst) != epoch;
    let stalled = || hit() && state.mode.load(Ordering::SeqCst) == STALL;
    loop {
        if cut() {
            return close(&from, &to);
        }
        if stalled() {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                if from_client && spared.load(Ordering::SeqCst) == UNKNOWN {
                    let tag = if spared_client(&buf[..n]) { SPARED } else { FAULTED };
                    spared.store(tag, Ordering::SeqCst);
                }
                // Data read just as a stall began is held until it ends.
                while stalled() && !cut() {
                    std::thread::sleep(Duration::from_millis(10));
                }
                if cut() || to.write_all(&buf[..n]).is_err() {
                    return close(&from, &to);
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

/// The Tansu binary `scripts/kafka-broker.sh` installed (`PRODCAT_TANSU`, set by
/// `scripts/test.sh`). Without it a fault test skips with a message — or fails where
/// `PRODCAT_REQUIRE_KAFKA=1` (CI).
pub fn tansu() -> Option<PathBuf> {
    let required = std::env::var("PRODCAT_REQUIRE_KAFKA").is_ok_and(|v| v == "1");
    match std::env::var_os("PRODCAT_TANSU").map(PathBuf::from).filter(|p| p.is_file()) {
        Some(p) => Some(p),
        None => {
            assert!(!required, "PRODCAT_REQUIRE_KAFKA=1 but PRODCAT_TANSU does not name the broker binary");
            eprintln!(
                "skipped: no broker binary for the fault proxy (run `bash scripts/test.sh`, or set PRODCAT_TANSU)"
            );
            None
        }
    }
}

/// A broker of the test's own behind a [`FaultProxy`]: it advertises the proxy's address.
pub struct ProxiedBroker {
    pub proxy: FaultProxy,
    /// The broker's own address (for the test's producer and readers: never broken).
    pub direct: String,
    child: Child,
    log: PathBuf,
}

impl ProxiedBroker {
    pub fn start(binary: &std::path::Path, log: PathBuf) -> Self {
        let port = super::kafka::free_port();
        let upstream: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let proxy = FaultProxy::start(upstream);
        let child = Command::new(binary)
            .args(["broker", "--listener-url", &format!("tcp://127.0.0.1:{port}")])
            .args(["--advertised-listener-url", &format!("tcp://127.0.0.1:{}", proxy.port)])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(upstream).is_err() {
            assert!(Instant::now() < deadline, "the proxied broker did not listen within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        ProxiedBroker { proxy, direct: format!("127.0.0.1:{port}"), child, log }
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ProxiedBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Records produced by a background thread at a steady rate until stopped (the broker keeps
/// taking records while prodcat's side of the network is broken).
pub struct Feeder {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<usize>>,
}

impl Feeder {
    /// Produces `make(i)` for i = 0.. at `per_second` to `topic` on `brokers`.
    pub fn start(
        brokers: &str,
        topic: &str,
        per_second: u32,
        make: impl Fn(usize) -> (String, Vec<u8>) + Send + 'static,
    ) -> Self {
        use rdkafka::config::ClientConfig;
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
        // `test-` client id: the fault proxy spares this producer's connections.
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("client.id", "test-feeder")
            .set("linger.ms", "5")
            .create()
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let topic = topic.to_string();
        let handle = std::thread::spawn(move || {
            let start = Instant::now();
            let mut sent = 0usize;
            while !flag.load(Ordering::SeqCst) {
                let due = (start.elapsed().as_secs_f64() * per_second as f64) as usize;
                while sent < due {
                    let (key, payload) = make(sent);
                    let record = BaseRecord::to(&topic).key(key.as_bytes()).payload(&payload);
                    if producer.send(record).is_ok() {
                        sent += 1;
                    } else {
                        producer.poll(Duration::from_millis(5));
                    }
                }
                producer.poll(Duration::from_millis(5));
            }
            producer.flush(Duration::from_secs(30)).unwrap();
            sent
        });
        Feeder { stop, handle: Some(handle) }
    }

    /// Stops producing; returns how many records were produced (all delivered).
    pub fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().unwrap().join().unwrap()
    }
}
