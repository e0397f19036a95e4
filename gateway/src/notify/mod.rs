//! Notification routing: each notification goes in-app and to WeChat or 球球 push by rules,
//! past dedup, consent, quiet hours and rate limits, through a durable queue with retries.

pub mod ledger;
pub mod model;
pub mod quiet_hours;
pub mod rate;
pub mod router;
pub mod worker;

use crate::batcher::Batcher;
use crate::gateway::Gateway;
use crate::store::StoreError;
use broker_config::Notify;
use futures_util::future::try_join_all;
use ledger::Ledger;
use model::{Notification, Record};
use router::{RouteError, Router, Submission, UserState};
use std::sync::Arc;

/// Longest title, body, link or dedup key, in characters.
pub const MAX_TEXT: usize = 4096;

/// A notification as a backend hands it in, over HTTP or MQTT.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationInput {
    pub user: String,
    pub kind: String,
    pub title: String,
    pub body: String,
    #[serde(default)]
    pub data: serde_json::Value,
    #[serde(default)]
    pub priority: model::Priority,
    pub dedup_key: Option<String>,
    pub link: Option<String>,
    pub wechat_tag: Option<u64>,
}

impl NotificationInput {
    /// Checks it and gives it an id and a time.
    pub fn into_notification(self) -> Result<Notification, String> {
        if !protocol::topics::is_valid_id(&self.user) {
            return Err(format!("{:?} is not a valid user id", self.user));
        }
        let texts = [
            Some(&self.title),
            Some(&self.body),
            self.link.as_ref(),
            self.dedup_key.as_ref(),
        ];
        if texts.iter().flatten().any(|t| t.chars().count() > MAX_TEXT) {
            return Err(format!(
                "title, body, link and dedup_key hold at most {MAX_TEXT} characters"
            ));
        }
        Ok(Notification {
            id: uuid::Uuid::now_v7().to_string(),
            user: self.user,
            kind: self.kind,
            title: self.title,
            body: self.body,
            data: self.data,
            priority: self.priority,
            dedup_key: self.dedup_key,
            link: self.link,
            wechat_tag: self.wechat_tag,
            created_at: crate::session_handle::unix_millis(),
        })
    }
}

/// The notification service: routing on submission, and the ledger behind it.
pub struct Notifications {
    pub ledger: Arc<dyn Ledger>,
    /// Sends the queued pushes; started with [`Worker::run`] when the gateway serves.
    pub worker: Arc<worker::Worker>,
    /// Notifications handed in at the same time are routed as one batch.
    decisions: Batcher<Notification, Result<Record, RouteError>>,
}

impl Notifications {
    pub fn new(ledger: Arc<dyn Ledger>, worker: Arc<worker::Worker>, config: &Notify) -> Self {
        Self {
            ledger,
            worker,
            decisions: Batcher::new(
                config.decision_batch,
                config.decision_batches,
                config.max_waiting,
            ),
        }
    }

    /// Routes a new notification and returns its record with each route's decision. Routed
    /// together with whatever else is handed in meanwhile (see [`Router::route`]).
    pub async fn submit(
        &self,
        gw: &Arc<Gateway>,
        notification: Notification,
    ) -> Result<Record, RouteError> {
        let mut records = self.submit_all(gw, vec![notification]).await;
        records.pop().expect("one record per notification")
    }

    /// Routes notifications handed in together (a batch request), each as if alone; they
    /// share the router's batches and come back in order.
    pub async fn submit_all(
        &self,
        gw: &Arc<Gateway>,
        notifications: Vec<Notification>,
    ) -> Vec<Result<Record, RouteError>> {
        let gw = gw.clone();
        let route = move |batch| {
            let gw = gw.clone();
            async move { Self::route(&gw, batch).await }
        };
        let results = self.decisions.submit_all(notifications, route).await;
        results
            .into_iter()
            .map(|result| result.map_err(|refused| StoreError::Unavailable(refused.to_string()))?)
            .collect()
    }

    async fn route(gw: &Gateway, batch: Vec<Notification>) -> Vec<Result<Record, RouteError>> {
        gw.metrics.notify.decision_batch.observe(batch.len() as f64);
        let users: Vec<String> = batch.iter().map(|n| n.user.clone()).collect();
        let states = match Self::user_states(gw, &users).await {
            Ok(states) => states,
            Err(e) => return batch.iter().map(|_| Err(e.clone().into())).collect(),
        };
        let submissions = batch
            .into_iter()
            .zip(states)
            .map(|(notification, user)| Submission { notification, user })
            .collect();
        let wechat = &gw.config.channels.wechat;
        let router = Router {
            config: &gw.config.notify,
            ledger: gw.notifications.ledger.as_ref(),
            messages: &gw.messages,
            metrics: &gw.metrics.notify,
            can_broadcast: wechat.enabled && !wechat.apps.is_empty(),
        };
        router.route(submissions, chrono::Utc::now()).await
    }

    /// What the routing needs of each user: their preferences in one read, and whether a
    /// device is online.
    async fn user_states(gw: &Gateway, users: &[String]) -> Result<Vec<UserState>, StoreError> {
        let online = try_join_all(users.iter().map(|user| async move {
            Ok::<_, StoreError>(match &gw.cluster {
                Some(cluster) => !cluster.devices(user).await?.is_empty(),
                None => !gw.sessions.devices(user).is_empty(),
            })
        }));
        let (online, preferences) =
            tokio::try_join!(online, gw.notifications.ledger.preferences(users))?;
        let wechat_apps = &gw.config.channels.wechat.apps;
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
