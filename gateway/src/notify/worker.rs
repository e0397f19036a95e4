//! Sending the queued pushes: take what is due, check consent again (a withdrawal applies to
//! what is queued), pace to the provider's rate and daily quota, send, and record the attempt
//! and the push's new state — sent, retried with exponential back-off and jitter, parked until
//! the quota resets, failed for good, or dead after the last attempt.

use super::ledger::Ledger;
use super::model::{Job, Preferences};
use crate::channel::provider_day::{next_provider_midnight, provider_day};
use crate::channel::{Channel, Outcome, Shaping};
use crate::infra::rate_limiter::{NoToken, Rate, RateLimiter};
use crate::infra::time::{millis_of, unix_millis};
use crate::observe::metrics::{AttemptLabel, NotifyMetrics, RouteLabel};
use crate::shutdown::Shutdown;
use crate::store::StoreError;
use broker_config::{Notify, WeChatAction};
use protocol::notification::{Attempt, Provider, RouteState, Status};
use rand::Rng;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

pub struct Worker {
    pub notify: Notify,
    pub ledger: Arc<dyn Ledger>,
    /// The enabled channels.
    pub channels: HashMap<Provider, Arc<dyn Channel>>,
    pub limiter: RateLimiter,
    pub metrics: NotifyMetrics,
}

impl Worker {
    /// Takes due pushes and sends them, up to `notify.concurrency` at once, until shutdown; the
    /// pushes being sent then are finished and settled (they are tracked tasks), those taken but
    /// not yet started come back after `notify.lease`, as a push taken by a process that died.
    ///
    /// Pushes are taken `notify.concurrency` at a time and handed to sending slots as they free
    /// up: taking only as many as were free would, while every slot is busy, cost one take (a
    /// queue scan and a durable write) per push. The ones waiting for a slot hold their lease;
    /// they wait at most as long as that many pushes take.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        let slots = Arc::new(Semaphore::new(self.notify.concurrency));
        let mut taken: VecDeque<Job> = VecDeque::new();
        loop {
            if let Some(claims) = self.ledger.dedup_claims_held() {
                self.metrics.dedup_claims.set(claims as i64);
            }
            let permit = tokio::select! {
                permit = slots.clone().acquire_owned() => permit.expect("never closed"),
                () = shutdown.cancelled() => return,
            };
            if taken.is_empty() {
                let lease = self.notify.lease.as_millis() as u64;
                match (self.ledger)
                    .take_due(unix_millis(), self.notify.concurrency, lease)
                    .await
                {
                    Ok(jobs) => taken.extend(jobs),
                    Err(e) => tracing::warn!("cannot read the notification queue: {e}"),
                }
            }
            let Some(job) = taken.pop_front() else {
                drop(permit);
                if let Ok(depth) = self.ledger.queue_depth().await {
                    self.metrics.queue_depth.set(depth as i64);
                }
                tokio::select! {
                    () = tokio::time::sleep(self.notify.poll_interval) => continue,
                    () = shutdown.cancelled() => return,
                }
            };
            let worker = self.clone();
            shutdown.spawn(async move {
                if let Err(e) = worker.process(job).await {
                    tracing::warn!("notification push not settled (it will come back): {e}");
                }
                drop(permit);
            });
        }
    }

    async fn process(&self, mut job: Job) -> Result<(), StoreError> {
        let Some(record) = self.ledger.record(&job.notification).await? else {
            let gone = RouteState::new(Status::Skipped, Some("notification gone".into()));
            return self.settle_final(&job, gone).await;
        };
        let mut state = record
            .routes
            .get(&job.route())
            .cloned()
            .unwrap_or_else(|| RouteState::new(Status::Queued, None));
        let preferences = self
            .ledger
            .preferences(std::slice::from_ref(&job.user))
            .await?;
        let preferences = preferences.into_iter().next().unwrap_or_default();
        let Preferences {
            consent, bindings, ..
        } = preferences.as_ref();
        let consented = match job.provider {
            Provider::Wechat => consent.wechat,
            Provider::Qiuqiu => consent.qiuqiu,
        };
        let notification = &record.notification;
        let rule = self.notify.kinds.get(&notification.kind);
        // A broadcast goes to the tag's followers, whose following is their consent.
        let broadcast = job.provider == Provider::Wechat
            && rule.is_some_and(|rule| rule.wechat == WeChatAction::MassSend);
        if !consented && !broadcast {
            let withdrawn = RouteState::new(Status::Skipped, Some("consent withdrawn".into()));
            return self.settle_final(&job, withdrawn).await;
        }
        let Some(rule) = rule else {
            let why = format!("kind {:?} is no longer configured", notification.kind);
            let failed = RouteState::new(Status::Failed, Some(why));
            return self.settle_final(&job, failed).await;
        };
        let Some(channel) = self.channels.get(&job.provider) else {
            let off = RouteState::new(Status::Failed, Some("channel not enabled".into()));
            return self.settle_final(&job, off).await;
        };
        let shaping = Shaping {
            notification,
            rule,
            bindings,
            key: job.key(),
            count: job.count,
        };
        let prepared = match channel.prepare(&shaping) {
            Ok(prepared) => prepared,
            Err(why) => {
                let failed = RouteState::new(Status::Failed, Some(why));
                return self.settle_final(&job, failed).await;
            }
        };
        let now = unix_millis();
        // A bucket per channel and app holding at most one second's worth of sends, shared by
        // the nodes of one Redis.
        let pace = Rate {
            per_second: prepared.per_second,
            burst: prepared.per_second,
        };
        if let Err(no_token) = self.limiter.try_acquire(&prepared.pace, pace).await {
            let wait = match no_token {
                NoToken::Wait(wait) => wait,
                NoToken::Unavailable(e) => {
                    tracing::warn!("shared rate limit unavailable, holding pushes: {e}");
                    Duration::from_millis(500)
                }
            };
            // Over the provider's rate: not an attempt, just later.
            state.status = Status::Queued;
            let due = now + wait.as_millis() as u64 + 1;
            return self.ledger.settle(&job, state, Some(due)).await;
        }
        let today = provider_day(chrono::Utc::now());
        if !self
            .ledger
            .count_quota(&prepared.pace, &today, prepared.daily_quota)
            .await?
        {
            let until = next_provider_midnight(chrono::Utc::now());
            state.status = Status::Queued;
            state.detail = Some(format!(
                "daily quota of {} reached; parked until {until}",
                prepared.daily_quota
            ));
            return self
                .ledger
                .settle(&job, state, Some(until.timestamp_millis() as u64))
                .await;
        }
        let started = Instant::now();
        let outcome = channel.send(&prepared.push).await;
        let route = job.provider.as_str();
        let code = outcome.code().unwrap_or("0").to_string();
        self.metrics
            .attempt_seconds
            .get_or_create(&RouteLabel { route })
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .attempts
            .get_or_create(&AttemptLabel {
                route,
                code: code.clone(),
            })
            .inc();
        state.attempts.push(Attempt {
            at: now,
            latency_ms: started.elapsed().as_millis() as u64,
            code,
        });
        let next_due = match outcome {
            Outcome::Sent { provider_id } => {
                state.status = Status::Sent;
                state.detail = None;
                state.due_at = None;
                if let Some(id) = &provider_id {
                    self.ledger
                        .index_provider_id(id, &job.notification, job.provider)
                        .await?;
                }
                state.provider_id = provider_id;
                None
            }
            Outcome::Retry { code, after } => {
                job.attempts += 1;
                if job.attempts >= self.notify.max_attempts {
                    state.status = Status::Dead;
                    state.detail = Some(format!(
                        "{} attempts, the last failed with {code}",
                        job.attempts
                    ));
                    None
                } else {
                    let wait = after.unwrap_or_else(|| self.backoff(job.attempts));
                    state.status = Status::Queued;
                    state.detail = Some(format!("retrying after {code}"));
                    Some(unix_millis() + wait.as_millis() as u64)
                }
            }
            Outcome::Park { code, until } => {
                state.status = Status::Queued;
                state.detail = Some(format!("parked after {code} until the quota resets"));
                Some(millis_of(until))
            }
            Outcome::Failed { code, message } => {
                state.status = Status::Failed;
                state.detail = Some(format!("{code}: {message}"));
                None
            }
        };
        state.due_at = next_due;
        self.metrics.count(route, state.status.as_str());
        self.ledger.settle(&job, state, next_due).await
    }

    /// Records a push's final state (not sent: skipped, failed before any call).
    async fn settle_final(&self, job: &Job, state: RouteState) -> Result<(), StoreError> {
        self.metrics
            .count(job.provider.as_str(), state.status.as_str());
        self.ledger.settle(job, state, None).await
    }

    /// `retry_base` doubled per attempt, capped at `retry_max`, with up to half of it random so
    /// retries from many pushes do not arrive together.
    fn backoff(&self, attempts: u32) -> Duration {
        let base =
            self.notify.retry_base.as_secs_f64() * 2f64.powi(attempts.saturating_sub(1) as i32);
        let capped = base.min(self.notify.retry_max.as_secs_f64());
        let jitter = rand::thread_rng().gen_range(0.0..=capped / 2.0);
        Duration::from_secs_f64(capped / 2.0 + jitter)
    }
}
