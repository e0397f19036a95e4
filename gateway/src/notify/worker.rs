//! Sending the queued pushes: take what is due, check consent again (a withdrawal applies to
//! what is queued), pace to the provider's rate and daily quota, send, and record the attempt
//! and the push's new state — sent, retried with exponential back-off and jitter, parked until
//! the quota resets, failed for good, or dead after the last attempt.

use super::ledger::Ledger;
use super::model::{
    Attempt, Bindings, Job, Notification, Preferences, Record, Route, RouteState, Status,
};
use super::rate::{next_provider_midnight, provider_day, RateLimiter};
use crate::channel::{Channel, Content, Outcome, Push, Target};
use crate::metrics::{AttemptLabel, NotifyMetrics, RouteLabel};
use crate::session_handle::unix_millis;
use crate::store::StoreError;
use broker_config::{Channels, KindRule, Notify, QiuQiuAction, WeChatAction};
use rand::Rng;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;

pub struct Worker {
    pub notify: Notify,
    pub channels: Channels,
    pub ledger: Arc<dyn Ledger>,
    pub wechat: Option<Arc<dyn Channel>>,
    pub qiuqiu: Option<Arc<dyn Channel>>,
    pub limiter: RateLimiter,
    pub metrics: NotifyMetrics,
}

/// Where a push goes and the limits that apply to it.
struct Prepared {
    push: Push,
    /// The rate bucket and daily quota it counts against.
    pace: String,
    per_second: u32,
    daily_quota: u64,
}

/// A push notification needs a body; a notification without one shows its title twice rather
/// than being refused.
fn text_or_title(n: &Notification) -> String {
    if n.body.trim().is_empty() {
        n.title.clone()
    } else {
        n.body.clone()
    }
}

fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Worker {
    /// Takes due pushes and sends them, up to `notify.concurrency` at once, until the process
    /// ends. A push taken but not settled (the process died) comes back after `notify.lease`.
    ///
    /// Pushes are taken `notify.concurrency` at a time and handed to sending slots as they free
    /// up: taking only as many as were free would, while every slot is busy, cost one take (a
    /// queue scan and a durable write) per push. The ones waiting for a slot hold their lease;
    /// they wait at most as long as that many pushes take.
    pub async fn run(self: Arc<Self>) {
        let slots = Arc::new(Semaphore::new(self.notify.concurrency));
        let mut taken: VecDeque<Job> = VecDeque::new();
        loop {
            if let Some(claims) = self.ledger.dedup_claims_held() {
                self.metrics.dedup_claims.set(claims as i64);
            }
            let permit = slots.clone().acquire_owned().await.expect("never closed");
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
                tokio::time::sleep(self.notify.poll_interval).await;
                continue;
            };
            let worker = self.clone();
            tokio::spawn(async move {
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
            .get(&job.route)
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
        let consented = match job.route {
            Route::Wechat => consent.wechat,
            _ => consent.qiuqiu,
        };
        // A broadcast goes to the tag's followers, whose following is their consent.
        let broadcast = job.route == Route::Wechat
            && (self.notify.kinds.get(&record.notification.kind))
                .is_some_and(|rule| rule.wechat == WeChatAction::MassSend);
        if !consented && !broadcast {
            let withdrawn = RouteState::new(Status::Skipped, Some("consent withdrawn".into()));
            return self.settle_final(&job, withdrawn).await;
        }
        let prepared = match self.prepare(&record, &job, bindings) {
            Ok(prepared) => prepared,
            Err(why) => {
                let failed = RouteState::new(Status::Failed, Some(why));
                return self.settle_final(&job, failed).await;
            }
        };
        let now = unix_millis();
        if let Err(wait) = self
            .limiter
            .try_acquire(&prepared.pace, prepared.per_second)
            .await
        {
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
        let channel = match job.route {
            Route::Wechat => self.wechat.as_ref(),
            _ => self.qiuqiu.as_ref(),
        };
        let Some(channel) = channel else {
            let off = RouteState::new(Status::Failed, Some("channel not enabled".into()));
            return self.settle_final(&job, off).await;
        };
        let started = Instant::now();
        let outcome = channel.send(&prepared.push).await;
        let route = job.route.as_str();
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
                        .index_provider_id(id, &job.notification, job.route)
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
                Some(millis(until))
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
            .count(job.route.as_str(), state.status.as_str());
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

    /// The push for a job: target from the user's bindings, content from the kind's rule.
    fn prepare(&self, record: &Record, job: &Job, bindings: &Bindings) -> Result<Prepared, String> {
        let n = &record.notification;
        let rule: &KindRule = self
            .notify
            .kinds
            .get(&n.kind)
            .ok_or_else(|| format!("kind {:?} is no longer configured", n.kind))?;
        let key = job.key();
        match job.route {
            Route::Wechat if rule.wechat == WeChatAction::MassSend => {
                let app = (self.channels.wechat.apps.first()).ok_or("no WeChat app configured")?;
                let tag_id = n.wechat_tag.ok_or("no wechat_tag to broadcast to")?;
                let text = [Some(&n.title), Some(&n.body), n.link.as_ref()]
                    .into_iter()
                    .flatten()
                    .filter(|part| !part.trim().is_empty())
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n");
                Ok(Prepared {
                    push: Push {
                        key,
                        target: Target::WeChatTag {
                            app: app.name.clone(),
                            tag_id,
                        },
                        content: Content::WeChatMassText { text },
                    },
                    pace: format!("wechat:{}", app.name),
                    per_second: app.per_second,
                    daily_quota: app.daily_quota,
                })
            }
            Route::Wechat => {
                let (app, openid) = self
                    .channels
                    .wechat
                    .apps
                    .iter()
                    .find_map(|app| bindings.wechat.get(&app.name).map(|openid| (app, openid)))
                    .ok_or("no WeChat binding for a configured app")?;
                let template_id = app
                    .templates
                    .get(&n.kind)
                    .ok_or_else(|| format!("app {:?} has no template for {:?}", app.name, n.kind))?
                    .clone();
                let mut fields = vec![
                    ("thing1".to_string(), n.title.clone()),
                    ("thing2".to_string(), n.body.clone()),
                ];
                if let Some(data) = n.data.as_object() {
                    fields.extend(
                        data.iter()
                            .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string()))),
                    );
                }
                let content = match rule.wechat {
                    WeChatAction::Subscribe => Content::WeChatSubscribe {
                        template_id,
                        page: n.link.clone(),
                        fields,
                    },
                    _ => Content::WeChatTemplate {
                        template_id,
                        url: n.link.clone(),
                        fields,
                    },
                };
                Ok(Prepared {
                    push: Push {
                        key,
                        target: Target::WeChat {
                            app: app.name.clone(),
                            openid: openid.clone(),
                        },
                        content,
                    },
                    pace: format!("wechat:{}", app.name),
                    per_second: app.per_second,
                    daily_quota: app.daily_quota,
                })
            }
            _ => {
                let target = if !bindings.qiuqiu_devices.is_empty() {
                    Target::QiuQiuDevices(bindings.qiuqiu_devices.clone())
                } else if let Some(alias) = &bindings.qiuqiu_alias {
                    Target::QiuQiuAlias(alias.clone())
                } else {
                    return Err("no 球球 binding".into());
                };
                let notification =
                    |title: String, body: String, badge| Content::QiuQiuNotification {
                        title,
                        body,
                        url: n.link.clone(),
                        badge,
                    };
                let content = match rule.qiuqiu {
                    QiuQiuAction::Silent => Content::QiuQiuTransmission {
                        payload: serde_json::json!({"id": n.id, "kind": n.kind, "data": n.data}),
                    },
                    QiuQiuAction::Popup => notification(n.title.clone(), text_or_title(n), Some(1)),
                    QiuQiuAction::Aggregate => notification(
                        format!("{} new {}", job.count.max(1), n.kind.replace('_', " ")),
                        n.title.clone(),
                        Some(job.count.max(1)),
                    ),
                    _ => notification(n.title.clone(), text_or_title(n), None),
                };
                let q = &self.channels.qiuqiu;
                Ok(Prepared {
                    push: Push {
                        key,
                        target,
                        content,
                    },
                    pace: "qiuqiu".into(),
                    per_second: q.per_second,
                    daily_quota: q.daily_quota,
                })
            }
        }
    }
}
