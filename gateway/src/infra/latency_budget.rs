//! Where a stored message's time goes: the durable path cut into stages, each measured per
//! message from the end of the one before, so that the stages of one message add up to its
//! time from being accepted to being acknowledged by a receiving device, and a slow percentile
//! names its stage.
//!
//! `gateway_durable_stage_seconds{stage}` on `/metrics`; `loadtest` reads it before and after a
//! run and reports each stage's percentiles for that run.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Instant;

/// A stage of the durable path, named by the point a message reaches at its end.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Stage {
    /// From being accepted (a PUBLISH read, a `pub` frame, an API call) until the store's writer
    /// takes it into a batch: sealing by the front, and the wait behind earlier batches.
    queued,
    /// Until its batch is assembled: sealing what the front could not, sequences, markers.
    sealed,
    /// Until its batch is written: to the journal's buffers (embedded), or the whole round
    /// trip to Redis, which includes Redis's own fsync (`appendfsync always`) and `WAIT`.
    written,
    /// Until the fsync that covers it returned (embedded only).
    fsynced,
    /// Until a receiving connection wrote it to its socket, after the commit handed it to live
    /// delivery; one observation per receiving connection.
    delivered,
    /// Until the receiving MQTT client acknowledged it (PUBACK, or PUBCOMP at QoS 2).
    acknowledged,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::queued,
        Stage::sealed,
        Stage::written,
        Stage::fsynced,
        Stage::delivered,
        Stage::acknowledged,
    ];

    /// The stage's name, as its label value on `/metrics` says it.
    pub fn name(self) -> &'static str {
        match self {
            Stage::queued => "queued",
            Stage::sealed => "sealed",
            Stage::written => "written",
            Stage::fsynced => "fsynced",
            Stage::delivered => "delivered",
            Stage::acknowledged => "acknowledged",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: Stage,
}

/// One histogram per [`Stage`]; clones record into the same ones. Until registered it records
/// into histograms nobody reads (a store benchmark, a test).
#[derive(Clone, Debug)]
pub struct LatencyBudget {
    stages: Family<StageLabel, Histogram, fn() -> Histogram>,
    /// The family's histograms, looked up once instead of per observation.
    by_stage: [Histogram; Stage::ALL.len()],
}

impl Default for LatencyBudget {
    fn default() -> Self {
        let stages: Family<StageLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(buckets);
        let by_stage = Stage::ALL.map(|stage| stages.get_or_create(&StageLabel { stage }).clone());
        Self { stages, by_stage }
    }
}

/// 10 µs to about 1 s in steps of 1.5×: fine enough to tell a 2 ms stage from a 3 ms one.
fn buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_01, 1.5, 29))
}

impl LatencyBudget {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "durable_stage_seconds",
            "Time a stored message spent in each stage of the durable path, from the end of the stage before",
            self.stages.clone(),
        );
    }

    /// One message went through `stage`, which it began at `from` and ended at `to`.
    pub fn observe(&self, stage: Stage, from: Instant, to: Instant) {
        self.by_stage[stage as usize].observe(to.saturating_duration_since(from).as_secs_f64());
    }

    /// `count` messages ended `stage` together at `to`, having begun it at `from` (a batch).
    pub fn observe_batch(&self, stage: Stage, from: Instant, to: Instant, count: usize) {
        let seconds = to.saturating_duration_since(from).as_secs_f64();
        let histogram = &self.by_stage[stage as usize];
        for _ in 0..count {
            histogram.observe(seconds);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn each_stage_is_reported_under_its_own_name() {
        let budget = LatencyBudget::default();
        let mut registry = Registry::with_prefix("gateway");
        budget.register(&mut registry);
        let start = Instant::now();
        budget.observe(Stage::queued, start, start + Duration::from_micros(50));
        budget.observe_batch(Stage::fsynced, start, start + Duration::from_millis(2), 3);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains(r#"gateway_durable_stage_seconds_count{stage="queued"} 1"#));
        assert!(text.contains(r#"gateway_durable_stage_seconds_count{stage="fsynced"} 3"#));
        assert!(text.contains(r#"gateway_durable_stage_seconds_count{stage="acknowledged"} 0"#));
        for stage in Stage::ALL {
            let label = format!(r#"{{stage="{}"}}"#, stage.name());
            assert!(text.contains(&label), "{label} in {text}");
        }
    }
}
