//! The external push channels: WeChat (Official Account template and subscribe messages) and
//! 球球 push. Each is off until configured; base URLs are configurable so tests and
//! `loadtest mock-channels` can stand in for the providers.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Channels {
    /// Longest wait for one provider call; a call that takes longer is retried later.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    pub wechat: WeChat,
    pub qiuqiu: QiuQiu,
}

impl Default for Channels {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(5),
            wechat: WeChat::default(),
            qiuqiu: QiuQiu::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WeChat {
    pub enabled: bool,
    pub base_url: String,
    /// A cached access token is replaced this long before it expires.
    #[serde(with = "humantime_serde")]
    pub refresh_early: Duration,
    /// Where WeChat posts `TEMPLATESENDJOBFINISH` events (on the HTTP listener).
    pub callback_path: String,
    /// The token set in the Official Account's server configuration: a callback must carry
    /// WeChat's `signature` (SHA-1 of the sorted token, `timestamp` and `nonce`) or it is
    /// refused. Required when WeChat is enabled (anyone who finds the path could otherwise mark
    /// messages delivered); without it callbacks are refused.
    pub callback_token: Option<String>,
    /// A callback's `timestamp` must be within this of the gateway's clock, and its nonce is
    /// remembered for twice as long, so a callback seen once is refused when replayed.
    #[serde(with = "humantime_serde")]
    pub callback_window: Duration,
    /// Nonces remembered at most (this node); when they are all within the window, further
    /// callbacks are refused with 503 until the oldest expire.
    pub callback_max_nonces: usize,
    /// The account's EncodingAESKey (43 characters) for WeChat's safe mode (安全模式): when set,
    /// a callback must come encrypted (`encrypt_type=aes`) with a valid `msg_signature`, and
    /// plain callbacks are refused.
    pub encoding_aes_key: Option<String>,
    /// The Official Accounts (or mini programs) the gateway sends as.
    pub apps: Vec<WeChatApp>,
}

impl Default for WeChat {
    fn default() -> Self {
        Self {
            enabled: false,
            base_url: "https://api.weixin.qq.com".into(),
            refresh_early: Duration::from_secs(5 * 60),
            callback_path: "/v1/callbacks/wechat".into(),
            callback_token: None,
            callback_window: Duration::from_secs(5 * 60),
            callback_max_nonces: 1_000_000,
            encoding_aes_key: None,
            apps: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeChatApp {
    /// The name rules and users' bindings refer to.
    pub name: String,
    pub appid: String,
    pub secret: String,
    /// Template id per notification kind.
    #[serde(default)]
    pub templates: BTreeMap<String, String>,
    /// Sends per second across all nodes.
    #[serde(default = "default_wechat_rate")]
    pub per_second: u32,
    /// Sends per day (WeChat's default quota); the day turns at midnight UTC+8.
    #[serde(default = "default_wechat_quota")]
    pub daily_quota: u64,
}

fn default_wechat_rate() -> u32 {
    100
}

fn default_wechat_quota() -> u64 {
    100_000
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QiuQiu {
    pub enabled: bool,
    /// Up to and without `/v2/{app_id}`.
    pub base_url: String,
    pub app_id: String,
    pub app_key: String,
    pub master_secret: String,
    /// A cached auth token is replaced this long before it expires.
    #[serde(with = "humantime_serde")]
    pub refresh_early: Duration,
    /// How long the provider keeps trying to reach an offline device.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Pushes per second across all nodes.
    pub per_second: u32,
    /// Pushes per day.
    pub daily_quota: u64,
}

impl Default for QiuQiu {
    fn default() -> Self {
        Self {
            enabled: false,
            base_url: "https://restapi.qiuqiu.example".into(),
            app_id: String::new(),
            app_key: String::new(),
            master_secret: String::new(),
            refresh_early: Duration::from_secs(5 * 60),
            ttl: Duration::from_secs(2 * 3600),
            per_second: 200,
            daily_quota: 1_000_000,
        }
    }
}
