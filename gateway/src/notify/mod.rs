//! Notification routing: each notification goes in-app and to WeChat or 球球 push by rules,
//! past dedup, consent, quiet hours and rate limits, through a durable queue with retries.
//!
//! [`Notifications`] is the service the front and the API hand notifications to; [`router`]
//! decides each route, [`dedup`] keeps the same content to one push per window, [`worker`]
//! sends the queued pushes, and [`ledger`] keeps records, the queue and preferences.

pub mod batcher;
pub mod dedup;
pub mod input;
pub mod ledger;
pub mod model;
pub mod quiet_hours;
pub mod router;
pub mod sweeper;
pub mod worker;

use crate::channel::wechat::callback::{JobFinish, JobStatus};
use crate::live::registry::Registry;
use crate::log::accept::Messages;
use crate::observe::metrics::NotifyMetrics;
use crate::store::StoreError;
use batcher::Batcher;
use broker_config::{Channels, Notify};
use futures_util::future::try_join_all;
use ledger::Ledger;
use protocol::notification::{Notification, Record, Route, RouteState, Status};
use router::{RouteError, Router, Submission, UserState};
use std::sync::Arc;

/// The notification service: routing on submission, and the ledger behind it.
pub struct Notifications {
    pub ledger: Arc<dyn Ledger>,
    routing: Arc<Routing>,
    /// Notifications handed in at the same time are routed as one batch.
    decisions: Batcher<Notification, Result<Record, RouteError>>,
}

/// What routing a batch needs.
struct Routing {
    config: Notify,
    channels: Channels,
    ledger: Arc<dyn Ledger>,
    messages: Arc<Messages>,
    registry: Arc<Registry>,
    metrics: NotifyMetrics,
}

impl Notifications {
    pub fn new(
        config: Notify,
        channels: Channels,
        ledger: Arc<dyn Ledger>,
        messages: Arc<Messages>,
        registry: Arc<Registry>,
        metrics: NotifyMetrics,
    ) -> Self {
        let decisions = Batcher::new(
            config.decision_batch,
            config.decision_batches,
            config.max_waiting,
        );
        Self {
            ledger: ledger.clone(),
            routing: Arc::new(Routing {
                config,
                channels,
                ledger,
                messages,
                registry,
                metrics,
            }),
            decisions,
        }
    }

    /// Routes a new notification and returns its record with each route's decision. Routed
    /// together with whatever else is handed in meanwhile (see [`Router::route`]).
    pub async fn submit(&self, notification: Notification) -> Result<Record, RouteError> {
        let mut records = self.submit_all(vec![notification]).await;
        records.pop().expect("one record per notification")
    }

    /// Routes notifications handed in together (a batch request), each as if alone; they
    /// share the router's batches and come back in order.
    pub async fn submit_all(
        &self,
        notifications: Vec<Notification>,
    ) -> Vec<Result<Record, RouteError>> {
        let routing = self.routing.clone();
        let route = move |batch| {
            let routing = routing.clone();
            async move { routing.route(batch).await }
        };
        let results = self.decisions.submit_all(notifications, route).await;
        results
            .into_iter()
            .map(|result| result.map_err(|refused| StoreError::Unavailable(refused.to_string()))?)
            .collect()
    }

    /// Records what WeChat reported of a template message or mass send sent earlier. A report
    /// for a message the gateway does not know (or no longer keeps) is ignored.
    pub async fn record_delivery_report(&self, finish: JobFinish) -> Result<(), StoreError> {
        let ledger = &self.ledger;
        let Some((id, provider)) = ledger.by_provider_id(&finish.msgid).await? else {
            tracing::debug!(msgid = %finish.msgid, "delivery report for an unknown message");
            return Ok(());
        };
        let route = Route::Push(provider);
        let Some(record) = ledger.record(&id).await? else {
            return Ok(());
        };
        let mut state = record
            .routes
            .get(&route)
            .cloned()
            .unwrap_or_else(|| RouteState::new(Status::Sent, None));
        (state.status, state.detail) = match finish.status {
            JobStatus::Delivered => (
                Status::Delivered,
                finish.reach.map(|r| {
                    format!(
                        "sent to {} of {} followers, {} failed",
                        r.sent, r.total, r.errors
                    )
                }),
            ),
            JobStatus::UserBlock => (Status::Failed, Some("user block".into())),
            JobStatus::SystemFailed => (Status::Failed, Some("system failed".into())),
            JobStatus::Other(other) => (Status::Failed, Some(other)),
        };
        ledger.set_route(&id, route, state).await
    }
}

impl Routing {
    async fn route(&self, batch: Vec<Notification>) -> Vec<Result<Record, RouteError>> {
        self.metrics.decision_batch.observe(batch.len() as f64);
        self.metrics.routed.inc_by(batch.len() as u64);
        let users: Vec<String> = batch.iter().map(|n| n.user.clone()).collect();
        let states = match self.user_states(&users).await {
            Ok(states) => states,
            Err(e) => return batch.iter().map(|_| Err(e.clone().into())).collect(),
        };
        let submissions = batch
            .into_iter()
            .zip(states)
            .map(|(notification, user)| Submission { notification, user })
            .collect();
        let wechat = &self.channels.wechat;
        let router = Router {
            config: &self.config,
            ledger: self.ledger.as_ref(),
            messages: &self.messages,
            metrics: &self.metrics,
            can_broadcast: wechat.enabled && !wechat.apps.is_empty(),
        };
        router.route(submissions, chrono::Utc::now()).await
    }

    /// What the routing needs of each user: their preferences in one read, and whether a
    /// device is online on any node.
    async fn user_states(&self, users: &[String]) -> Result<Vec<UserState>, StoreError> {
        let online = try_join_all(users.iter().map(|user| async move {
            Ok::<_, StoreError>(!self.registry.devices_everywhere(user).await?.is_empty())
        }));
        let (online, preferences) = tokio::try_join!(online, self.ledger.preferences(users))?;
        let wechat_apps = &self.channels.wechat.apps;
        Ok(online
            .into_iter()
            .zip(preferences)
            .map(|(online, preferences)| {
                let bindings = &preferences.bindings;
                UserState {
                    online,
                    consent: preferences.consent,
                    quiet_hours: preferences.quiet_hours.clone(),
                    wechat_bound: wechat_apps
                        .iter()
                        .any(|app| bindings.wechat.contains_key(&app.name)),
                    qiuqiu_bound: !bindings.qiuqiu_devices.is_empty()
                        || bindings.qiuqiu_alias.is_some(),
                }
            })
            .collect())
    }
}
