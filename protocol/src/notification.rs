//! Notifications on the wire: what a backend's notification becomes, the record of what each
//! route did with it (`GET /v1/notifications/{id}`), and the user's preferences that decide its
//! fate (`PUT /v1/users/{user}/quiet-hours`, `consent`, `bindings`).

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

/// An external push provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// WeChat Official Account messages.
    Wechat,
    /// 球球, the app's own push.
    Qiuqiu,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Wechat => "wechat",
            Self::Qiuqiu => "qiuqiu",
        }
    }
}

/// Where a notification goes: in the app (the user's log), or out through a push provider.
/// On the wire it is the route's name: `in_app`, `wechat`, `qiuqiu`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Route {
    InApp,
    Push(Provider),
}

impl Route {
    pub const WECHAT: Route = Route::Push(Provider::Wechat);
    pub const QIUQIU: Route = Route::Push(Provider::Qiuqiu);

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InApp => "in_app",
            Self::Push(provider) => provider.as_str(),
        }
    }

    /// The route named `name`, as [`as_str`](Self::as_str) writes it.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::InApp, Self::WECHAT, Self::QIUQIU]
            .into_iter()
            .find(|route| route.as_str() == name)
    }
}

impl Serialize for Route {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Route {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&name).ok_or_else(|| {
            serde::de::Error::unknown_variant(&name, &["in_app", "wechat", "qiuqiu"])
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_named_on_the_wire() {
        for route in [Route::InApp, Route::WECHAT, Route::QIUQIU] {
            let json = serde_json::to_string(&route).unwrap();
            assert_eq!(json, format!("\"{}\"", route.as_str()));
            assert_eq!(serde_json::from_str::<Route>(&json).unwrap(), route);
        }
        let routes: BTreeMap<Route, u8> = [(Route::QIUQIU, 1), (Route::InApp, 2)].into();
        assert_eq!(
            serde_json::to_string(&routes).unwrap(),
            r#"{"in_app":2,"qiuqiu":1}"#
        );
        assert!(serde_json::from_str::<Route>("\"sms\"").is_err());
    }
}
