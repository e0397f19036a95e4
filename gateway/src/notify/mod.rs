//! Notification routing: each notification goes in-app and to WeChat or 球球 push by rules,
//! past dedup, consent, quiet hours and rate limits, through a durable queue with retries.

pub mod ledger;
pub mod model;
pub mod quiet_hours;
pub mod rate;
pub mod router;
pub mod worker;

use crate::gateway::Gateway;
use crate::store::StoreError;
use ledger::Ledger;
use model::{Notification, Record};
use router::{RouteError, Router, UserState};
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
            created_at: crate::session_handle::unix_millis(),
        })
    }
}

/// The notification service: routing on submission, and the ledger behind it.
pub struct Notifications {
    pub ledger: Arc<dyn Ledger>,
    /// Sends the queued pushes; started with [`Worker::run`] when the gateway serves.
    pub worker: Arc<worker::Worker>,
}

impl Notifications {
    pub fn new(ledger: Arc<dyn Ledger>, worker: Arc<worker::Worker>) -> Self {
        Self { ledger, worker }
    }

    /// Routes a new notification and returns its record with each route's decision.
    pub async fn submit(
        &self,
        gw: &Gateway,
        notification: Notification,
    ) -> Result<Record, RouteError> {
        let user = self.user_state(gw, &notification.user).await?;
        let router = Router {
            config: &gw.config.notify,
            ledger: self.ledger.as_ref(),
            messages: &gw.messages,
            metrics: &gw.metrics.notify,
        };
        router.route(notification, user, chrono::Utc::now()).await
    }

    /// What the routing needs of the user; the reads are independent, so they run together.
    async fn user_state(&self, gw: &Gateway, user: &str) -> Result<UserState, StoreError> {
        let online = async {
            Ok(match &gw.cluster {
                Some(cluster) => !cluster.devices(user).await?.is_empty(),
                None => !gw.sessions.devices(user).is_empty(),
            })
        };
        let (online, bindings, consent, quiet_hours) = tokio::try_join!(
            online,
            self.ledger.bindings(user),
            self.ledger.consent(user),
            self.ledger.quiet_hours(user),
        )?;
        let wechat_apps = &gw.config.channels.wechat.apps;
        Ok(UserState {
            online,
            consent,
            quiet_hours,
            wechat_bound: wechat_apps
                .iter()
                .any(|app| bindings.wechat.contains_key(&app.name)),
            qiuqiu_bound: !bindings.qiuqiu_devices.is_empty() || bindings.qiuqiu_alias.is_some(),
        })
    }
}
