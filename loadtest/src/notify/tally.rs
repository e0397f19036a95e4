//! What the submitters saw: each keeps its own tally (no shared lock on the hot path), merged
//! into the run's [`Submission`] at the end.

use super::api::Routed;
use super::report::Submission;
use crate::report::{latency_histogram, LatencySummary};
use anyhow::Result;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;

/// What the submitters saw, merged at the end.
pub(super) struct Tally {
    pub(super) latency: Histogram<u64>,
    pub(super) errors: BTreeMap<String, u64>,
    pub(super) first_error: Option<String>,
    routes: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Tally {
    pub(super) fn count_routes(&mut self, routed: &Routed) {
        for (route, state) in &routed.routes {
            let statuses = match self.routes.get_mut(route) {
                Some(statuses) => statuses,
                None => self.routes.entry(route.clone()).or_default(),
            };
            match statuses.get_mut(&state.status) {
                Some(n) => *n += 1,
                None => {
                    statuses.insert(state.status.clone(), 1);
                }
            }
        }
    }

    pub(super) fn merge(&mut self, other: Tally) -> Result<()> {
        self.latency.add(&other.latency)?;
        for (class, n) in other.errors {
            *self.errors.entry(class).or_default() += n;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        for (route, statuses) in other.routes {
            let mine = self.routes.entry(route).or_default();
            for (status, n) in statuses {
                *mine.entry(status).or_default() += n;
            }
        }
        Ok(())
    }

    pub(super) fn into_submission(self, seconds: f64) -> Submission {
        let decisions = self.latency.len();
        Submission {
            decisions,
            seconds,
            per_second: if seconds > 0.0 {
                decisions as f64 / seconds
            } else {
                0.0
            },
            latency_us: LatencySummary::from_histogram(&self.latency),
            errors: self.errors,
            first_error: self.first_error,
            routes: self.routes,
            gateway: None,
        }
    }
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            latency: latency_histogram(),
            errors: BTreeMap::new(),
            first_error: None,
            routes: BTreeMap::new(),
        }
    }
}
