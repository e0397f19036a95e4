//! Notification routing: what each kind of notification does on each channel, and the
//! dedup window, retries and queue that every kind shares.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Notify {
    /// The same content for the same user is pushed at most once across external channels
    /// within this window.
    #[serde(with = "humantime_serde")]
    pub dedup_window: Duration,
    /// Attempts per push before it is dead.
    pub max_attempts: u32,
    /// First retry delay; doubled each attempt, with jitter, up to `retry_max`.
    #[serde(with = "humantime_serde")]
    pub retry_base: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Pushes sent at once by this node.
    pub concurrency: usize,
    /// How often the queue is checked for pushes that came due.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// A push taken by a worker that dies comes back after this long.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Aggregated pushes (friend requests on 球球) go out once per window, with a count.
    #[serde(with = "humantime_serde")]
    pub aggregate_window: Duration,
    /// How long a notification's record (what `GET /v1/notifications/{id}` shows) is kept; the
    /// sweeper then removes it once all its routes are settled (Redis expires it).
    #[serde(with = "humantime_serde")]
    pub record_retention: Duration,
    /// Trusted backends (MQTT password: an API key) publish notifications here, with the JSON
    /// of `POST /v1/notifications`.
    pub mqtt_topic: String,
    /// Notifications handed in at the same time are routed together, up to this many: one
    /// dedup claim and one ledger write (one fsync) for all of them.
    pub decision_batch: usize,
    /// Batches routed at once; what arrives meanwhile waits for the next batch.
    pub decision_batches: usize,
    /// Most notifications in one `POST /v1/notifications/batch`.
    pub max_per_request: usize,
    /// Users whose preferences (quiet hours, consent, bindings) the embedded ledger keeps in
    /// memory, about 300 bytes each; 0 reads them from disk every time.
    pub preferences_cache: usize,
    /// Embedded ledger: bytes each of its keyspaces holds in memory before writing a table. Its
    /// own setting, larger than `store.memtable_size`: every decision writes half a dozen
    /// entries here, and larger memtables mean fewer tables to flush and compact (routing was
    /// ~+5% at 32 MiB and ~+8% at 64 MiB against 8 MiB, for ~100 and ~250 MiB more resident
    /// under load). Fixed when the ledger is created.
    pub ledger_memtable_size: u64,
    /// Embedded ledger: most dedup claims held at once (in memory, ~40 bytes each, for the
    /// window they last). Past that, notifications are refused with 503 until claims expire.
    pub max_dedup_claims: usize,
    /// Most notifications waiting for a routing batch; past that, submissions are refused with
    /// 503 (retry later) instead of piling up in memory.
    pub max_waiting: usize,
    /// What each kind of notification does.
    pub kinds: BTreeMap<String, KindRule>,
}

/// What a WeChat channel does for a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeChatAction {
    None,
    /// A template message (the app's template for the kind), with the link.
    Template,
    /// A subscribe message (the user subscribed to the template).
    Subscribe,
    /// A broadcast (群发, `message/mass/sendall`) of the text to the followers under the
    /// notification's `wechat_tag`, from the first configured app: once per tag and content
    /// within the dedup window, however many followers' notifications carry it. The user's
    /// consent, binding, quiet hours and online devices do not apply: following is the consent.
    MassSend,
}

/// What the 球球 push channel does for a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QiuQiuAction {
    None,
    /// A notification that alerts.
    Push,
    /// A pop-up with a red-dot badge.
    Popup,
    /// A silent transmission for the app (no alert): e.g. a balance update.
    Silent,
    /// One push per `aggregate_window` with the count, e.g. "3 new friend requests".
    Aggregate,
}

/// Inside the user's quiet hours, a notification is held until they end, or dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuietHoursAction {
    #[default]
    Hold,
    Drop,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KindRule {
    pub wechat: WeChatAction,
    pub qiuqiu: QiuQiuAction,
    /// Which channel gets an alerting push first; the other alerting channel is deduplicated
    /// (the same content is not pushed on both), or used when the first cannot be (no consent,
    /// no binding).
    pub prefer: PreferredChannel,
    /// Delivered in the app (stored in the user's log, live on `u/{user}/notify`).
    pub in_app: bool,
    /// Whether external pushes still go out when the user has a device online.
    pub external_when_online: bool,
    /// Every notification of this kind is urgent (bypasses quiet hours).
    pub always_urgent: bool,
    pub quiet_hours: QuietHoursAction,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PreferredChannel {
    #[default]
    Wechat,
    Qiuqiu,
}

impl Default for KindRule {
    fn default() -> Self {
        Self {
            wechat: WeChatAction::None,
            qiuqiu: QiuQiuAction::Push,
            prefer: PreferredChannel::Qiuqiu,
            in_app: true,
            external_when_online: false,
            always_urgent: false,
            quiet_hours: QuietHoursAction::Hold,
        }
    }
}

impl Default for Notify {
    fn default() -> Self {
        let rule = |wechat, qiuqiu, prefer, external_when_online, always_urgent| KindRule {
            wechat,
            qiuqiu,
            prefer,
            in_app: true,
            external_when_online,
            always_urgent,
            quiet_hours: QuietHoursAction::Hold,
        };
        use PreferredChannel::{Qiuqiu, Wechat};
        let kinds = BTreeMap::from([
            // A strong reminder on WeChat; on 球球 an entry in the request list, pushed once per
            // window with a count.
            (
                "friend_request".to_string(),
                rule(
                    WeChatAction::Template,
                    QiuQiuAction::Aggregate,
                    Wechat,
                    true,
                    false,
                ),
            ),
            // The bill on WeChat; only a silent balance update in the app.
            (
                "payment_success".to_string(),
                rule(
                    WeChatAction::Template,
                    QiuQiuAction::Silent,
                    Wechat,
                    true,
                    false,
                ),
            ),
            (
                "event_preview".to_string(),
                rule(
                    WeChatAction::MassSend,
                    QiuQiuAction::Popup,
                    Wechat,
                    false,
                    false,
                ),
            ),
            (
                "social_interaction".to_string(),
                rule(WeChatAction::None, QiuQiuAction::Push, Qiuqiu, false, false),
            ),
            (
                "security_alert".to_string(),
                rule(
                    WeChatAction::Template,
                    QiuQiuAction::Push,
                    Wechat,
                    true,
                    true,
                ),
            ),
        ]);
        Self {
            dedup_window: Duration::from_secs(5 * 60),
            max_attempts: 3,
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(10 * 60),
            concurrency: 32,
            poll_interval: Duration::from_millis(200),
            lease: Duration::from_secs(60),
            aggregate_window: Duration::from_secs(60),
            record_retention: Duration::from_secs(7 * 24 * 3600),
            mqtt_topic: "svc/notifications".into(),
            decision_batch: 2048,
            decision_batches: 4,
            max_per_request: 1000,
            max_waiting: 100_000,
            preferences_cache: 100_000,
            ledger_memtable_size: 32 << 20,
            max_dedup_claims: 5_000_000,
            kinds,
        }
    }
}
