//! Deciding, for one notification, what each route does: in-app at once, and for WeChat and
//! 球球 whether, when and how a push is queued — by the kind's rule, the dedup window, the
//! user's consent, bindings and quiet hours, and whether the user is online.

use super::ledger::Ledger;
use super::model::{
    Consent, Job, Notification, Priority, QuietHours, Record, Route, RouteState, Status,
};
use super::quiet_hours::quiet_until;
use crate::messages::Messages;
use crate::metrics::NotifyMetrics;
use crate::store::StoreError;
use broker_config::{
    KindRule, Notify, PreferredChannel, QiuQiuAction, QuietHoursAction, WeChatAction,
};
use chrono::{DateTime, Utc};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("unknown notification kind {0:?} (configured: {1})")]
    UnknownKind(String, String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the routes' actions are for a rule, the preferred channel first.
pub fn external_routes(rule: &KindRule) -> Vec<Route> {
    let mut routes = Vec::new();
    let wechat = rule.wechat != WeChatAction::None;
    let qiuqiu = rule.qiuqiu != QiuQiuAction::None;
    match rule.prefer {
        PreferredChannel::Wechat => {
            routes.extend(wechat.then_some(Route::Wechat));
            routes.extend(qiuqiu.then_some(Route::Qiuqiu));
        }
        PreferredChannel::Qiuqiu => {
            routes.extend(qiuqiu.then_some(Route::Qiuqiu));
            routes.extend(wechat.then_some(Route::Wechat));
        }
    }
    routes
}

/// Whether the route's action alerts the user with the notification's content: such pushes are
/// what the dedup window keeps to one across channels. A silent update or an aggregate (which
/// says "3 new requests", not this content) is not.
pub fn alerts(rule: &KindRule, route: Route) -> bool {
    match route {
        Route::Wechat => rule.wechat != WeChatAction::None,
        Route::Qiuqiu => matches!(rule.qiuqiu, QiuQiuAction::Push | QiuQiuAction::Popup),
        Route::InApp => false,
    }
}

/// The dedup key: the one given, else a hash of what the user would read.
pub fn dedup_key(notification: &Notification) -> String {
    match &notification.dedup_key {
        Some(key) => format!("k:{key}"),
        None => {
            let mut hash = Sha256::new();
            for part in [&notification.kind, &notification.title, &notification.body] {
                hash.update(part.as_bytes());
                hash.update([0]);
            }
            let digest = hash.finalize();
            format!("h:{}", hex::encode(digest))
        }
    }
}

/// What the routing needs to know about the user at the moment of the decision.
pub struct UserState {
    pub online: bool,
    pub consent: Consent,
    pub quiet_hours: Option<QuietHours>,
    pub wechat_bound: bool,
    pub qiuqiu_bound: bool,
}

pub struct Router<'a> {
    pub config: &'a Notify,
    pub ledger: &'a dyn Ledger,
    pub messages: &'a Messages,
    pub metrics: &'a NotifyMetrics,
}

impl Router<'_> {
    /// Routes one notification and records the decisions; returns the record.
    pub async fn route(
        &self,
        notification: Notification,
        user: UserState,
        now: DateTime<Utc>,
    ) -> Result<Record, RouteError> {
        let rule = self.config.kinds.get(&notification.kind).ok_or_else(|| {
            let known: Vec<&str> = self.config.kinds.keys().map(String::as_str).collect();
            RouteError::UnknownKind(notification.kind.clone(), known.join(", "))
        })?;
        let now_ms = now.timestamp_millis() as u64;
        let fresh = self
            .ledger
            .claim_dedup(
                &notification.user,
                &dedup_key(&notification),
                now_ms,
                self.config.dedup_window.as_millis() as u64,
            )
            .await?;
        let duplicate = || {
            RouteState::new(
                Status::Deduplicated,
                Some("the same content was sent within the dedup window".into()),
            )
        };
        let mut routes = BTreeMap::new();
        let mut jobs = Vec::new();

        if rule.in_app {
            let state = if fresh {
                let body = json!({ "notification": &notification });
                let stored = self
                    .messages
                    .accept_notification(&notification.user, &notification.id, &body)
                    .wait()
                    .await?;
                RouteState::new(Status::Delivered, Some(format!("seq {}", stored[0].seq)))
            } else {
                duplicate()
            };
            routes.insert(Route::InApp, state);
        }

        let urgent = notification.priority == Priority::Urgent || rule.always_urgent;
        let quiet = match (&user.quiet_hours, urgent) {
            (Some(hours), false) => quiet_until(hours, now).ok().flatten(),
            _ => None,
        };
        let mut alerted_on: Option<Route> = None;
        for route in external_routes(rule) {
            let (consented, bound) = match route {
                Route::Wechat => (user.consent.wechat, user.wechat_bound),
                _ => (user.consent.qiuqiu, user.qiuqiu_bound),
            };
            let skip = |why: &str| RouteState::new(Status::Skipped, Some(why.to_string()));
            let state = if !fresh {
                duplicate()
            } else if user.online && !rule.external_when_online {
                skip("a device is online: delivered in the app")
            } else if !consented {
                skip("no consent for this channel")
            } else if !bound {
                skip("no binding for this channel")
            } else if let (true, Some(first)) = (alerts(rule, route), alerted_on) {
                RouteState::new(
                    Status::Deduplicated,
                    Some(format!("the same content goes out on {}", first.as_str())),
                )
            } else if quiet.is_some() && rule.quiet_hours == QuietHoursAction::Drop {
                skip("quiet hours")
            } else {
                if alerts(rule, route) {
                    alerted_on = Some(route);
                }
                let held_until = quiet.map(|t| t.timestamp_millis() as u64);
                let mut due = held_until.unwrap_or(now_ms);
                let mut state = RouteState::new(
                    if held_until.is_some() {
                        Status::Held
                    } else {
                        Status::Queued
                    },
                    held_until.map(|_| "quiet hours".to_string()),
                );
                // An aggregated push is queued (or joined) by the ledger itself; only other pushes
                // are queued with the record.
                let job = if route == Route::Qiuqiu && rule.qiuqiu == QiuQiuAction::Aggregate {
                    due = due.max(now_ms + self.config.aggregate_window.as_millis() as u64);
                    let (job, new) = self
                        .ledger
                        .aggregate(
                            &notification.user,
                            &notification.kind,
                            &notification.id,
                            route,
                            due,
                        )
                        .await?;
                    if !new {
                        state.status = Status::Aggregated;
                        state.detail = Some(format!("aggregated into {}", job.notification));
                    }
                    None
                } else {
                    Some(Job {
                        notification: notification.id.clone(),
                        route,
                        user: notification.user.clone(),
                        attempts: 0,
                        count: 0,
                    })
                };
                state.due_at = Some(due);
                if let Some(job) = job {
                    jobs.push((job, due));
                }
                state
            };
            routes.insert(route, state);
        }
        let record = Record {
            notification,
            routes,
        };
        self.ledger.create(&record, &jobs).await?;
        for (route, state) in &record.routes {
            self.metrics.count(route.as_str(), state.status.as_str());
        }
        Ok(record)
    }
}
