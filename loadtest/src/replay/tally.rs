//! What the replay counts while it runs, shared by every session task: events fired and failed
//! per kind (with the first failure's words), how late each event fired, messages received.

use crate::progress::Counter;
use crate::report::{latency_histogram, LatencySummary};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

/// One kind of event's count.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KindCount {
    pub replayed: u64,
    pub failed: u64,
    /// The first failure, verbatim.
    pub first_error: Option<String>,
}

impl KindCount {
    /// The failed check for `kind`, when any of its events failed.
    pub fn failure(&self, kind: &str) -> Option<String> {
        (self.failed > 0).then(|| {
            format!(
                "{kind}: {} of {} failed; first: {}",
                self.failed,
                self.replayed.max(self.failed),
                self.first_error.as_deref().unwrap_or_default()
            )
        })
    }
}

pub struct Tally {
    kinds: Mutex<BTreeMap<&'static str, KindCount>>,
    /// How late each event fired after its scaled time, in microseconds.
    lag: Mutex<Histogram<u64>>,
    pub fired: Arc<Counter>,
    pub failures: Arc<Counter>,
    pub received: Arc<Counter>,
}

impl Tally {
    pub fn new() -> Self {
        Self {
            kinds: Mutex::default(),
            lag: Mutex::new(latency_histogram()),
            fired: Counter::new("events"),
            failures: Counter::new("failures"),
            received: Counter::new("received"),
        }
    }

    /// An event of `kind` due at `due` is being sent now.
    pub fn fire(&self, kind: &'static str, due: Instant) {
        let late = Instant::now().saturating_duration_since(due);
        self.lag
            .lock()
            .expect("lag lock")
            .saturating_record(late.as_micros() as u64);
        self.kinds
            .lock()
            .expect("tally lock")
            .entry(kind)
            .or_default()
            .replayed += 1;
        self.fired.add(1);
    }

    /// An event of `kind` failed its check.
    pub fn fail(&self, kind: &'static str, error: String) {
        let mut kinds = self.kinds.lock().expect("tally lock");
        let count = kinds.entry(kind).or_default();
        count.failed += 1;
        count.first_error.get_or_insert(error);
        self.failures.add(1);
    }

    pub fn kinds(&self) -> BTreeMap<&'static str, KindCount> {
        self.kinds.lock().expect("tally lock").clone()
    }

    pub fn lag(&self) -> LatencySummary {
        LatencySummary::from_histogram(&self.lag.lock().expect("lag lock"))
    }
}
