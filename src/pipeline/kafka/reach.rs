//! Whether the pipeline's Kafka clients reach their brokers, from librdkafka's statistics (every
//! second) and error callbacks. A client is cut off when no broker connection is up, or when its
//! connections have requests waiting for an answer and nothing has been received for
//! [`STALLED_AFTER`] (a stalled network keeps the socket open, so the connection state alone stays
//! `UP` until librdkafka's `socket.timeout.ms`, a minute; a consumer, which always has fetches or
//! heartbeats going, needs a connection that received something within that time). `/readyz` is not ready while a client is
//! cut off; `/healthz` fails once one has been cut off for longer than
//! `kafka.unhealthy_after_disconnected_ms`; both recover on their own when the brokers answer again.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;

use crate::metrics::Metrics;

/// Requests waiting this long without a byte received mark a connection stalled (librdkafka's
/// consumer fetches return within `fetch.wait.max.ms`, 10 ms by prodcat's default; heartbeats
/// every few seconds).
pub const STALLED_AFTER: Duration = Duration::from_secs(5);

/// The librdkafka statistics interval prodcat sets on both clients (a pipeline property overrides
/// it, and with it how soon a cut-off is seen).
pub const STATISTICS_INTERVAL_MS: &str = "1000";

/// When each client lost its brokers (absent: it reaches them).
#[derive(Debug, Default)]
pub struct Reach {
    down_since: Mutex<BTreeMap<&'static str, Instant>>,
}

impl Reach {
    /// How long the longest-cut-off client has been so (None: every client reaches its brokers).
    pub fn disconnected_for(&self) -> Option<Duration> {
        let down = self.down_since.lock().unwrap_or_else(|p| p.into_inner());
        down.values().map(Instant::elapsed).max()
    }

    /// Records whether `client` reaches its brokers (keeping the start of an ongoing cut-off);
    /// true when that changed.
    fn mark(&self, client: &'static str, up: bool) -> bool {
        let mut down = self.down_since.lock().unwrap_or_else(|p| p.into_inner());
        if up {
            down.remove(client).is_some()
        } else if down.contains_key(client) {
            false
        } else {
            down.insert(client, Instant::now());
            true
        }
    }
}

/// Whether a client's statistics show it reaching a broker. `busy_only` (a producer): with nothing
/// to send and no connection up (librdkafka may leave an idle producer's connections down until
/// needed) they say nothing — None, the last state stands — so an idle producer neither flaps nor
/// hides an outage its consumer sees.
pub fn reaches_brokers(stats: &Statistics, busy_only: bool, stalled_after: Duration) -> Option<bool> {
    let stalled_us = stalled_after.as_micros() as i64;
    let brokers = stats.brokers.values().filter(|b| b.nodeid >= 0 || b.source == "configured");
    let mut live = false;
    let mut waiting = false;
    for b in brokers {
        let busy = b.waitresp_cnt > 0 || b.outbuf_cnt > 0;
        waiting |= busy;
        live |= b.state == "UP"
            && if busy_only {
                // A producer's connection is live unless its requests go unanswered.
                !(busy && b.rxidle > stalled_us)
            } else {
                // A consumer always talks to some broker (fetches, heartbeats): only a connection
                // that received something lately is live (an idle bootstrap connection stays
                // `UP` through a stall and says nothing). rxidle is -1 before any receive.
                (0..stalled_us).contains(&b.rxidle)
            };
    }
    if live {
        Some(true)
    } else if busy_only && !waiting && stats.msg_cnt == 0 {
        // Nothing to send and no connection up: no evidence either way (keep the last state).
        None
    } else {
        Some(false)
    }
}

/// The reach of one client (`consumer` or `producer`), shared by its librdkafka context.
#[derive(Debug, Clone)]
pub struct Link {
    client: &'static str,
    reach: Arc<Reach>,
    metrics: Arc<Metrics>,
    busy_only: bool,
    stalled_after: Duration,
}

impl Link {
    pub fn new(client: &'static str, reach: Arc<Reach>, metrics: Arc<Metrics>, busy_only: bool) -> Self {
        metrics.kafka_connected.with_label_values(&[client]).set(1.0);
        Self { client, reach, metrics, busy_only, stalled_after: STALLED_AFTER }
    }

    /// A longer stall limit (a consumer whose `fetch.wait.max.ms` is longer than the default).
    pub fn stalled_after(mut self, limit: Duration) -> Self {
        self.stalled_after = self.stalled_after.max(limit);
        self
    }

    /// From a statistics callback.
    pub fn statistics(&self, stats: &Statistics) {
        if let Some(up) = reaches_brokers(stats, self.busy_only, self.stalled_after) {
            self.update(up, "statistics");
        }
    }

    /// From an error callback: librdkafka says every broker connection is down.
    pub fn error(&self, error: &KafkaError, reason: &str) {
        let all_down = matches!(error, KafkaError::Global(RDKafkaErrorCode::AllBrokersDown));
        if all_down {
            self.update(false, reason);
        } else {
            tracing::warn!(client = self.client, error = %error, reason, "kafka client error");
        }
    }

    fn update(&self, up: bool, why: &str) {
        if !self.reach.mark(self.client, up) {
            return;
        }
        self.metrics.kafka_connected.with_label_values(&[self.client]).set(if up { 1.0 } else { 0.0 });
        if up {
            tracing::info!(client = self.client, "kafka brokers reachable again");
        } else {
            self.metrics.kafka_disconnections.with_label_values(&[self.client]).inc();
            tracing::warn!(client = self.client, why, "kafka brokers unreachable; not ready until they answer");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(brokers: &[(&str, i64, i64)], msg_cnt: u64) -> Statistics {
        let mut s = Statistics { msg_cnt, ..Default::default() };
        for (i, (state, waitresp_cnt, rxidle)) in brokers.iter().enumerate() {
            let broker = rdkafka::statistics::Broker {
                nodeid: i as i32,
                source: "learned".into(),
                state: state.to_string(),
                waitresp_cnt: *waitresp_cnt,
                rxidle: *rxidle,
                ..Default::default()
            };
            s.brokers.insert(format!("127.0.0.1:{i}/{i}"), broker);
        }
        s
    }

    #[test]
    fn a_client_reaches_its_brokers_only_when_a_connection_is_up_and_answering() {
        let limit = Duration::from_secs(5);
        let consumer = |brokers: &[(&str, i64, i64)]| reaches_brokers(&stats(brokers, 0), false, limit);
        assert_eq!(consumer(&[("UP", 1, 2_000)]), Some(true));
        // Up, but requests unanswered for 6 s: stalled.
        assert_eq!(consumer(&[("UP", 1, 6_000_000)]), Some(false));
        // A consumer's connection up but silent for a minute (an idle bootstrap connection beside
        // a stalled one) says nothing for it.
        assert_eq!(consumer(&[("UP", 0, 60_000_000), ("UP", 1, 6_000_000)]), Some(false));
        assert_eq!(consumer(&[("CONNECT", 0, -1), ("DOWN", 0, -1)]), Some(false));
        // One broker of two answering is enough.
        assert_eq!(consumer(&[("DOWN", 0, -1), ("UP", 1, 100)]), Some(true));
        // A producer: an idle connection is fine; unanswered requests are not; idle with every
        // connection down says nothing; messages queued with none up is cut off.
        let producer = |brokers: &[(&str, i64, i64)], queued| reaches_brokers(&stats(brokers, queued), true, limit);
        assert_eq!(producer(&[("UP", 0, 60_000_000)], 0), Some(true));
        assert_eq!(producer(&[("UP", 1, 60_000_000)], 0), Some(false));
        assert_eq!(producer(&[("DOWN", 0, -1)], 0), None);
        assert_eq!(producer(&[("DOWN", 0, -1)], 5), Some(false));
    }

    #[test]
    fn reach_keeps_the_start_of_a_cut_off_and_counts_each_once() {
        let reach = Arc::new(Reach::default());
        let metrics = Arc::new(Metrics::new());
        let link = Link::new("consumer", reach.clone(), metrics.clone(), false);
        assert_eq!(reach.disconnected_for(), None);
        link.update(false, "test");
        std::thread::sleep(Duration::from_millis(20));
        link.update(false, "test");
        assert!(reach.disconnected_for().unwrap() >= Duration::from_millis(20));
        assert_eq!(metrics.kafka_disconnections.with_label_values(&["consumer"]).get(), 1);
        assert_eq!(metrics.kafka_connected.with_label_values(&["consumer"]).get(), 0.0);
        link.update(true, "test");
        assert_eq!(reach.disconnected_for(), None);
        assert_eq!(metrics.kafka_connected.with_label_values(&["consumer"]).get(), 1.0);
        link.error(&KafkaError::Global(RDKafkaErrorCode::AllBrokersDown), "all brokers down");
        assert!(reach.disconnected_for().is_some());
        assert_eq!(metrics.kafka_disconnections.with_label_values(&["consumer"]).get(), 2);
    }
}
