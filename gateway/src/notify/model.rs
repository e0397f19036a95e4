//! A notification, the user's preferences that decide its fate, and the record of what each
//! channel did with it.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    #[default]
    Normal,
    High,
    /// Bypasses quiet hours.
    Urgent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub id: String,
    pub user: String,
    pub kind: String,
    pub title: String,
    pub body: String,
    #[serde(default)]
    pub data: Value,
    #[serde(default)]
    pub priority: Priority,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// The WeChat user tag whose followers a mass send (`mass_send` kinds) goes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wechat_tag: Option<u64>,
    /// Milliseconds since the Unix epoch.
    pub created_at: u64,
}

/// Where a notification goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    InApp,
    Wechat,
    Qiuqiu,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InApp => "in_app",
            Self::Wechat => "wechat",
            Self::Qiuqiu => "qiuqiu",
        }
    }
}

/// Where a notification stands on one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting in the queue to be sent.
    Queued,
    /// Inside the user's quiet hours; sent when they end.
    Held,
    /// Accepted by the provider (WeChat reports delivery later).
    Sent,
    /// Delivered (in the app, or confirmed by the provider).
    Delivered,
    /// Not sent: the same content went out already within the dedup window.
    Deduplicated,
    /// Goes out inside another notification's aggregated push (its `detail` names it).
    Aggregated,
    /// Not sent, by rule or preference (no consent, no binding, user online, quiet hours drop).
    Skipped,
    /// The provider refused it for good.
    Failed,
    /// Every attempt failed.
    Dead,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Held => "held",
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Deduplicated => "deduplicated",
            Self::Aggregated => "aggregated",
            Self::Skipped => "skipped",
            Self::Failed => "failed",
            Self::Dead => "dead",
        }
    }

    /// No further change is expected (but a provider's delivery report may still come).
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Queued | Self::Held)
    }
}

/// One call to a provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub at: u64,
    pub latency_ms: u64,
    /// The provider's code (`"0"` for success), or `timeout`, `network`, `http_502`.
    pub code: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteState {
    pub status: Status,
    /// Why: the provider's error, the reason it was skipped, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// When a queued or held push is due, milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<u64>,
    /// The provider's id for the push (a WeChat template message's msgid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
}

impl RouteState {
    pub fn new(status: Status, detail: Option<String>) -> Self {
        Self {
            status,
            detail,
            due_at: None,
            provider_id: None,
            attempts: Vec::new(),
        }
    }
}

/// A notification and what became of it on each route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub notification: Notification,
    pub routes: BTreeMap<Route, RouteState>,
}

/// A push waiting in the queue: which notification, on which channel, and how far it got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub notification: String,
    pub route: Route,
    pub user: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// For an aggregated push: how many notifications it stands for.
    #[serde(default)]
    pub count: u32,
}

impl Job {
    /// Unique per notification and channel: the provider's idempotency key (WeChat
    /// `client_msg_id`, 球球 `request_id`), the same on every retry.
    pub fn key(&self) -> String {
        format!("{}-{}", self.notification, self.route.as_str())
    }
}

/// A user's quiet hours, in the user's time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    /// An IANA zone, e.g. `Asia/Shanghai`.
    pub time_zone: String,
    /// Windows as `"HH:MM"` local times; a window whose end is before its start crosses midnight.
    pub windows: Vec<QuietWindow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietWindow {
    pub start: String,
    pub end: String,
}

/// Which external channels the user agreed to be pushed on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Consent {
    pub wechat: bool,
    pub qiuqiu: bool,
}

/// Where the user can be reached on each external channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Bindings {
    /// WeChat openid per configured app name.
    pub wechat: BTreeMap<String, String>,
    /// 球球 device ids (`cid`).
    pub qiuqiu_devices: Vec<String>,
    /// 球球 alias (the user's id in the app), used when no device id is bound.
    pub qiuqiu_alias: Option<String>,
}

/// What the routing and the sending need to know of a user's choices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preferences {
    pub quiet_hours: Option<QuietHours>,
    pub consent: Consent,
    pub bindings: Bindings,
}
