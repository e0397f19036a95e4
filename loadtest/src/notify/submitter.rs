//! One of `--concurrency` loops handing notifications in: numbering them across all loops,
//! spreading them over kinds and users, and tallying each answer.

use super::api::{batch_answers, Api, NewNotification};
use super::tally::Tally;
use super::{user, Mode, BURST_KIND, KINDS};
use crate::progress::Counter;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// One of `--concurrency` loops handing in notifications.
pub(super) struct Submitter {
    pub(super) api: Api,
    pub(super) mode: Mode,
    pub(super) users: u64,
    pub(super) batch: u64,
    pub(super) run: String,
    /// The next notification's number, shared by all submitters.
    pub(super) next: Arc<AtomicU64>,
    pub(super) limit: u64,
    pub(super) end: Instant,
    pub(super) accepted: Arc<Counter>,
    pub(super) failed: Arc<Counter>,
}

impl Submitter {
    pub(super) async fn submit_all(self) -> Tally {
        let mut tally = Tally::default();
        loop {
            let first = self.next.fetch_add(self.batch, Ordering::Relaxed);
            if first >= self.limit || Instant::now() >= self.end {
                return tally;
            }
            let notifications: Vec<NewNotification> = (first..(first + self.batch).min(self.limit))
                .map(|n| self.notification(n))
                .collect();
            let count = notifications.len();
            let started = Instant::now();
            let answers = if self.batch == 1 {
                self.api
                    .post("/v1/notifications", &notifications[0])
                    .await
                    .map(|routed| vec![Ok(routed)])
            } else {
                let batch = json!({ "notifications": notifications });
                self.api
                    .post("/v1/notifications/batch", &batch)
                    .await
                    .map(batch_answers)
            };
            let micros = started.elapsed().as_micros() as u64;
            let answers = answers.unwrap_or_else(|e| (0..count).map(|_| Err(e.clone())).collect());
            for answer in answers {
                match answer {
                    Ok(routed) => {
                        self.accepted.add(1);
                        tally.latency.saturating_record(micros);
                        tally.count_routes(&routed);
                    }
                    Err((class, detail)) => {
                        self.failed.add(1);
                        *tally.errors.entry(class).or_default() += 1;
                        tally.first_error.get_or_insert(detail);
                    }
                }
            }
        }
    }

    /// Consecutive numbers go to different kinds and users; every user sees every kind. A
    /// distinct title per notification, so the dedup window never short-circuits.
    fn notification(&self, n: u64) -> NewNotification {
        let (kind, user) = match self.mode {
            Mode::Decisions => (KINDS[(n % 5) as usize], user((n / 5) % self.users)),
            Mode::Burst => (BURST_KIND, user(n % self.users)),
        };
        let title = format!("lt {} #{n}", self.run);
        NewNotification {
            user,
            kind,
            title,
            body: "load",
        }
    }
}
