//! At-least-once bookkeeping: which offsets are in flight per partition, and how far each
//! partition may be committed.
//!
//! Offsets are registered in the order the consumer reads them and completed in any order as sinks
//! finish; the committable position of a partition is one past the longest completed prefix, so a
//! commit never skips a record that is not durably written.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A topic partition.
pub type TopicPartition = (String, i32);

#[derive(Debug, Default)]
struct PartitionState {
    /// Offsets read and not yet part of the committable prefix, in read order.
    pending: VecDeque<(i64, bool)>,
    /// Next offset to commit (one past the completed prefix), if anything completed.
    committable: Option<i64>,
    /// Last position handed out by `take_commits`.
    committed: Option<i64>,
}

/// In-flight offsets of every assigned partition.
#[derive(Debug, Default)]
pub struct AckTracker {
    state: Mutex<HashMap<TopicPartition, PartitionState>>,
    changed: Condvar,
    fence: Mutex<Fence>,
    fence_changed: Condvar,
}

/// Exactly-once fencing. A revoke that cannot drain in time starts a new generation: the sink
/// aborts its open transaction and drops chunks read in an older one (their records are read
/// again from the committed offsets, by whichever instance owns them now).
#[derive(Debug, Default)]
struct Fence {
    /// The generation records are read in now.
    current: u64,
    /// The newest generation the sink has honoured (open transaction aborted).
    honoured: u64,
    /// The sink aborted a transaction on its own (its commit was refused, e.g. after the group
    /// moved on during a broker outage): the consumer must read again from the committed offsets.
    rewind: bool,
}

impl AckTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<TopicPartition, PartitionState>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `offset` of `tp` was read and is now in flight.
    pub fn register(&self, tp: &TopicPartition, offset: i64) {
        self.lock().entry(tp.clone()).or_default().pending.push_back((offset, false));
    }

    /// Records that every sink durably wrote `offset` of `tp`.
    pub fn complete(&self, tp: &TopicPartition, offset: i64) {
        let mut state = self.lock();
        let Some(p) = state.get_mut(tp) else { return };
        if let Some(entry) = p.pending.iter_mut().find(|(o, _)| *o == offset) {
            entry.1 = true;
        }
        while let Some(&(o, true)) = p.pending.front() {
            p.committable = Some(o + 1);
            p.pending.pop_front();
        }
        drop(state);
        self.changed.notify_all();
    }

    /// Positions that advanced since the last call, to commit now.
    pub fn take_commits(&self) -> Vec<(TopicPartition, i64)> {
        let mut out = Vec::new();
        for (tp, p) in self.lock().iter_mut() {
            if let Some(c) = p.committable {
                if p.committed != Some(c) {
                    p.committed = Some(c);
                    out.push((tp.clone(), c));
                }
            }
        }
        out.sort();
        out
    }

    /// Records still in flight per partition (for logs and tests).
    pub fn in_flight(&self) -> BTreeMap<TopicPartition, usize> {
        self.lock().iter().map(|(tp, p)| (tp.clone(), p.pending.len())).filter(|(_, n)| *n > 0).collect()
    }

    /// Waits until none of `tps` has records in flight; false on timeout.
    pub fn wait_drained(&self, tps: &[TopicPartition], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            let busy = tps.iter().any(|tp| state.get(tp).is_some_and(|p| !p.pending.is_empty()));
            if !busy {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state =
                self.changed.wait_timeout(state, deadline - now).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// The generation records are read in now.
    pub fn generation(&self) -> u64 {
        self.fence.lock().unwrap_or_else(|p| p.into_inner()).current
    }

    /// Starts a new generation and waits (at most `timeout`) until the sink has aborted its open
    /// transaction; false on timeout.
    pub fn fence_and_wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut fence = self.fence.lock().unwrap_or_else(|p| p.into_inner());
        fence.current += 1;
        let wanted = fence.current;
        while fence.honoured < wanted {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            fence = self
                .fence_changed
                .wait_timeout(fence, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        true
    }

    /// The sink: a newer generation than `seen` to honour, if any.
    pub fn fence_pending(&self, seen: u64) -> Option<u64> {
        let current = self.generation();
        (current > seen).then_some(current)
    }

    /// The sink has aborted its open transaction for `generation`.
    pub fn honoured(&self, generation: u64) {
        let mut fence = self.fence.lock().unwrap_or_else(|p| p.into_inner());
        fence.honoured = fence.honoured.max(generation);
        drop(fence);
        self.fence_changed.notify_all();
    }

    /// The sink aborted its open transaction on its own: starts a new generation (chunks read
    /// before are dropped) and asks the consumer to read again from the committed offsets.
    pub fn request_rewind(&self) -> u64 {
        let mut fence = self.fence.lock().unwrap_or_else(|p| p.into_inner());
        fence.current += 1;
        fence.honoured = fence.current;
        fence.rewind = true;
        let generation = fence.current;
        drop(fence);
        self.fence_changed.notify_all();
        generation
    }

    /// Whether a rewind is waiting for the consumer (records read before it must not be handed on).
    pub fn rewind_requested(&self) -> bool {
        self.fence.lock().unwrap_or_else(|p| p.into_inner()).rewind
    }

    /// The consumer: whether a rewind was asked for since the last call.
    pub fn take_rewind(&self) -> bool {
        std::mem::take(&mut self.fence.lock().unwrap_or_else(|p| p.into_inner()).rewind)
    }

    /// Forgets partitions this instance no longer owns.
    pub fn forget(&self, tps: &[TopicPartition]) {
        let mut state = self.lock();
        for tp in tps {
            state.remove(tp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        ("t".to_string(), p)
    }

    #[test]
    fn commits_only_the_contiguous_completed_prefix() {
        let t = AckTracker::new();
        for o in 10..15 {
            t.register(&tp(0), o);
        }
        t.complete(&tp(0), 12);
        t.complete(&tp(0), 11);
        assert!(t.take_commits().is_empty(), "10 is still in flight");
        t.complete(&tp(0), 10);
        assert_eq!(t.take_commits(), vec![(tp(0), 13)]);
        assert!(t.take_commits().is_empty(), "nothing new");
        t.complete(&tp(0), 14);
        assert!(t.take_commits().is_empty(), "13 is still in flight");
        t.complete(&tp(0), 13);
        assert_eq!(t.take_commits(), vec![(tp(0), 15)]);
        assert!(t.in_flight().is_empty());
    }

    #[test]
    fn partitions_are_independent_and_drain_waits() {
        let t = std::sync::Arc::new(AckTracker::new());
        t.register(&tp(0), 0);
        t.register(&tp(1), 0);
        t.complete(&tp(1), 0);
        assert_eq!(t.take_commits(), vec![(tp(1), 1)]);
        assert!(!t.wait_drained(&[tp(0)], Duration::from_millis(20)));
        let t2 = t.clone();
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            t2.complete(&tp(0), 0);
        });
        assert!(t.wait_drained(&[tp(0), tp(1)], Duration::from_secs(5)));
        h.join().unwrap();
        t.forget(&[tp(0)]);
        assert!(t.take_commits().is_empty(), "a forgotten partition is not committed");
    }

    #[test]
    fn a_rewind_starts_a_new_generation_already_honoured_and_is_taken_once() {
        let t = AckTracker::new();
        let before = t.generation();
        assert!(!t.rewind_requested() && !t.take_rewind());
        let g = t.request_rewind();
        assert!(g > before && t.generation() == g);
        // The sink aborted on its own: no fence is left for it to honour at g.
        assert_eq!(t.fence_pending(g), None);
        assert!(t.rewind_requested());
        assert!(t.take_rewind());
        assert!(!t.rewind_requested() && !t.take_rewind(), "taken once");
        assert_eq!(t.fence_pending(g), None);
    }
}
