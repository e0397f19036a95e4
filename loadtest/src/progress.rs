//! Named counters shared by the load tasks, and the once-a-second progress line on stderr.
//!
//! Long runs must show that they are alive and how fast they go; the counters are plain atomics
//! so that the hot paths only pay for a relaxed add.

use crate::stop::stopped;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{interval_at, Instant};

pub struct Counter {
    name: &'static str,
    value: AtomicU64,
}

impl Counter {
    pub fn new(name: &'static str) -> Arc<Self> {
        Arc::new(Self {
            name,
            value: AtomicU64::new(0),
        })
    }

    pub fn add(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// Each counter's increase in every second of the run, in order: what the progress line
/// showed, kept for the result file and the throughput plot. The last entry covers the part of
/// a second between the last line and the end of the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timeline {
    pub per_second: BTreeMap<&'static str, Vec<u64>>,
}

/// Prints `label`, elapsed seconds and each counter with its rate over the last second, every
/// second until `stop` turns true or its sender is dropped; then hands back the timeline.
pub fn spawn_reporter(
    label: String,
    counters: Vec<Arc<Counter>>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<Timeline> {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut ticks = interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
        let mut last: Vec<u64> = counters.iter().map(|c| c.get()).collect();
        let mut timeline = Timeline::default();
        let mut sample = |last: &mut Vec<u64>, line: &mut String| {
            for (counter, last) in counters.iter().zip(last.iter_mut()) {
                let now = counter.get();
                let increase = now.saturating_sub(*last);
                line.push_str(&format!(" | {} {now} (+{increase}/s)", counter.name));
                timeline
                    .per_second
                    .entry(counter.name)
                    .or_default()
                    .push(increase);
                *last = now;
            }
        };
        loop {
            let stopping = tokio::select! {
                _ = stopped(&mut stop) => true,
                _ = ticks.tick() => false,
            };
            let mut line = format!("{label} {:>4}s", start.elapsed().as_secs());
            sample(&mut last, &mut line);
            if stopping {
                return timeline;
            }
            eprintln!("{line}");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_timeline_keeps_the_last_partial_second() {
        let sent = Counter::new("sent");
        let (stop_tx, stop_rx) = watch::channel(false);
        let reporter = spawn_reporter("test".into(), vec![sent.clone()], stop_rx);
        // Let the reporter take its starting values, as it does before any load in a run.
        tokio::task::yield_now().await;
        sent.add(42);
        stop_tx.send(true).unwrap();
        let timeline = reporter.await.unwrap();
        assert_eq!(timeline.per_second["sent"], vec![42]);
    }
}
