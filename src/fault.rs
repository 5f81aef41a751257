//! Fault injection for tests: `PRODCAT_FAULTS="point=N[,point=N…]"` makes the N-th pass through a
//! named point fail (1-based), so tests can break a stage at an exact moment (a send in the middle
//! of an exactly-once transaction) that no real broker fault reproduces on demand. Without the
//! variable every point is a cheap no-op. Points: `kafka.send` (the sink enqueues a record),
//! `auto.fold` (`auto --folds` starts a fold).

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

/// Per point: the pass that fails, and passes so far.
type Points = Mutex<HashMap<String, (u64, u64)>>;

/// The points named in the environment.
static FAULTS: LazyLock<Option<Points>> = LazyLock::new(|| {
    let spec = std::env::var("PRODCAT_FAULTS").ok()?;
    let points = spec
        .split(',')
        .filter_map(|p| {
            let (name, n) = p.split_once('=')?;
            Some((name.trim().to_string(), (n.trim().parse().ok()?, 0)))
        })
        .collect();
    Some(Mutex::new(points))
});

/// Whether this pass through `point` is the injected failure.
pub fn hit(point: &str) -> bool {
    let Some(faults) = FAULTS.as_ref() else { return false };
    let mut faults = faults.lock().unwrap_or_else(|p| p.into_inner());
    let Some((at, passes)) = faults.get_mut(point) else { return false };
    *passes += 1;
    *passes == *at
}
