//! The external push channels: how a push reaches WeChat and 球球 push, and what the provider's
//! answer means for the push (sent, retry later, park until a quota resets, or give up).
//!
//! A channel makes one attempt per [`Channel::send`] (plus at most one internal retry after
//! refreshing a rejected access token); scheduling retries is the caller's business, guided by
//! the [`Outcome`]. Retries are safe because every attempt of a logical message carries the same
//! [`Push::key`], which the providers use to drop repeats.
//!
//! Each provider is a folder that owns everything about it: how a notification is shaped into
//! its push (`content.rs`), how the push is sent, what its error codes mean (`errors.rs`), and
//! for WeChat the reports it posts back (`callback.rs`).

pub mod provider_day;
pub mod qiuqiu;
pub mod token_cache;
pub mod wechat;

mod http;

use broker_config::KindRule;
use protocol::notification::{Bindings, Notification, Provider};
use std::time::{Duration, SystemTime};

/// One message for one channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Push {
    /// Unique per logical message and channel; sent as WeChat `client_msg_id` / 球球 `request_id`,
    /// the same on every retry, which makes retries safe at the provider.
    pub key: String,
    pub target: Target,
    pub content: Content,
}

/// Who receives a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `app` is the configured app's `name` (not its appid); `openid` is the user's id in it.
    WeChat { app: String, openid: String },
    /// The followers under a user tag of the app (`tag_id`), for a mass send.
    WeChatTag { app: String, tag_id: u64 },
    /// 球球 device ids (`cid`).
    QiuQiuDevices(Vec<String>),
    /// The user's 球球 alias (their id in the app), for users without a bound device.
    QiuQiuAlias(String),
}

/// What a push carries. `fields` are WeChat's `data` keys (`thing1`, `time2`…) and their values;
/// the channel cuts the values to the limits of their type.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    WeChatTemplate {
        template_id: String,
        url: Option<String>,
        fields: Vec<(String, String)>,
    },
    WeChatSubscribe {
        template_id: String,
        page: Option<String>,
        fields: Vec<(String, String)>,
    },
    /// A mass send's text message.
    WeChatMassText { text: String },
    QiuQiuNotification {
        title: String,
        body: String,
        url: Option<String>,
        badge: Option<u32>,
    },
    /// A silent payload for the app, sent as JSON text.
    QiuQiuTransmission { payload: serde_json::Value },
}

/// What became of one [`Channel::send`]. A `code` is the provider's error code as text
/// (`"45009"`), or `"timeout"`, `"network"`, `"http_502"`, `"bad_reply"` for failures of the
/// call itself, or a gateway-side reason such as `"unknown_app"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted by the provider. WeChat template messages and mass sends get a message id (the
    /// key of the later delivery report); 球球 pushes a task id.
    Sent { provider_id: Option<String> },
    /// Transient: try again, not before `after` when given (else with the caller's back-off).
    Retry {
        code: String,
        after: Option<Duration>,
    },
    /// A quota is used up: nothing for this app will pass before `until`; never retry sooner.
    Park { code: String, until: SystemTime },
    /// Permanent for this push (or for this user, or a configuration error): retrying cannot help.
    Failed { code: String, message: String },
}

impl Outcome {
    /// The failure's code, `None` when sent.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Sent { .. } => None,
            Self::Retry { code, .. } | Self::Park { code, .. } | Self::Failed { code, .. } => {
                Some(code)
            }
        }
    }
}

/// What a push is shaped from: the notification, its kind's rule, and where the user is bound.
pub struct Shaping<'a> {
    pub notification: &'a Notification,
    pub rule: &'a KindRule,
    pub bindings: &'a Bindings,
    /// The push's [`Push::key`].
    pub key: String,
    /// For an aggregated push: how many notifications it stands for.
    pub count: u32,
}

/// A push ready to send, with the provider limits it counts against.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub push: Push,
    /// The rate bucket and daily quota it counts against.
    pub pace: String,
    pub per_second: u32,
    pub daily_quota: u64,
}

#[async_trait::async_trait]
pub trait Channel: Send + Sync {
    fn provider(&self) -> Provider;

    /// The push for a notification by its kind's rule, or why it cannot be sent (no binding,
    /// no template): a permanent failure for this push.
    fn prepare(&self, shaping: &Shaping<'_>) -> Result<Prepared, String>;

    /// One delivery attempt; never panics, every failure is an [`Outcome`].
    async fn send(&self, push: &Push) -> Outcome;
}
