//! The console's chart: the gateway's own counters sampled every [`SAMPLE_EVERY`], the last
//! five minutes of them kept in memory as rates, so an operator sees what the node does now
//! without a Prometheus server beside it (`GET /v1/stats`).

use super::metrics::Metrics;
use crate::infra::time::unix_millis;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Five minutes of samples.
const KEPT: usize = 300;

/// What the node did over one interval, per second, and its connections at its end.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// Milliseconds since the Unix epoch.
    pub at: u64,
    pub connections: i64,
    /// Log entries made durable (a device's message counts in the recipient's log and the
    /// sender's own).
    pub stored: f64,
    /// Messages written to clients.
    pub delivered: f64,
    /// Notifications routed.
    pub notifications: f64,
    /// Live signals relayed.
    pub signals: f64,
}

/// The counters at one sample, to take the next one's growth from.
struct Totals {
    taken: Instant,
    stored: u64,
    delivered: u64,
    notifications: u64,
    signals: u64,
}

impl Totals {
    fn of(metrics: &Metrics) -> Self {
        Self {
            taken: Instant::now(),
            stored: metrics.stored.get(),
            delivered: metrics.delivered_total(),
            notifications: metrics.notify.routed.get(),
            signals: metrics.signals.get(),
        }
    }
}

pub struct Throughput {
    metrics: Arc<Metrics>,
    state: Mutex<(Totals, VecDeque<Sample>)>,
}

impl Throughput {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        let totals = Totals::of(&metrics);
        Self {
            metrics,
            state: Mutex::new((totals, VecDeque::with_capacity(KEPT))),
        }
    }

    /// Takes a sample: how much each counter grew since the last one, per second.
    pub fn sample(&self) {
        let now = Totals::of(&self.metrics);
        let mut state = self.state.lock().expect("throughput lock");
        let (last, samples) = &mut *state;
        let seconds = now.taken.duration_since(last.taken).as_secs_f64().max(1e-3);
        let rate = |now: u64, last: u64| now.saturating_sub(last) as f64 / seconds;
        if samples.len() == KEPT {
            samples.pop_front();
        }
        samples.push_back(Sample {
            at: unix_millis(),
            connections: self.metrics.connections_now().iter().map(|(_, n)| n).sum(),
            stored: rate(now.stored, last.stored),
            delivered: rate(now.delivered, last.delivered),
            notifications: rate(now.notifications, last.notifications),
            signals: rate(now.signals, last.signals),
        });
        *last = now;
    }

    /// The samples kept, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        let state = self.state.lock().expect("throughput lock");
        state.1.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_holds_the_counters_growth_per_second() {
        let metrics = Arc::new(Metrics::new());
        let throughput = Throughput::new(metrics.clone());
        metrics.stored.inc_by(500);
        metrics.notify.routed.inc_by(20);
        std::thread::sleep(Duration::from_millis(50));
        throughput.sample();
        let [sample] = throughput.samples()[..] else {
            panic!("one sample");
        };
        // 500 in about 50 ms: thousands a second, however slow the machine was.
        assert!(
            sample.stored > 500.0 && sample.stored <= 10_000.0,
            "{sample:?}"
        );
        assert!(sample.notifications > 20.0, "{sample:?}");
        assert_eq!(sample.signals, 0.0);
        for _ in 0..KEPT + 5 {
            throughput.sample();
        }
        let samples = throughput.samples();
        assert_eq!(samples.len(), KEPT, "only the last five minutes are kept");
        assert_eq!(samples.last().unwrap().stored, 0.0);
    }
}
