//! Notification routing: each notification goes in-app and to WeChat or 球球 push by rules,
//! past dedup, consent, quiet hours and rate limits, through a durable queue with retries.

pub mod ledger;
pub mod model;
pub mod quiet_hours;
pub mod rate;
pub mod router;

use crate::gateway::Gateway;
use crate::store::StoreError;
use ledger::Ledger;
use model::{Notification, Record};
use router::{RouteError, Router, UserState};
use std::sync::Arc;

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

    async fn user_state(&self, gw: &Gateway, user: &str) -> Result<UserState, StoreError> {
        let online = match &gw.cluster {
            Some(cluster) => !cluster.devices(user).await?.is_empty(),
            None => !gw.sessions.devices(user).is_empty(),
        };
        let bindings = self.ledger.bindings(user).await?;
        let wechat_apps = &gw.config.channels.wechat.apps;
        Ok(UserState {
            online,
            consent: self.ledger.consent(user).await?,
            quiet_hours: self.ledger.quiet_hours(user).await?,
            wechat_bound: wechat_apps
                .iter()
                .any(|app| bindings.wechat.contains_key(&app.name)),
            qiuqiu_bound: !bindings.qiuqiu_devices.is_empty() || bindings.qiuqiu_alias.is_some(),
        })
    }
}
pub mod worker;
