//! A test double of the WeChat Official Account API: access tokens, template and subscribe
//! messages, mass sends to a tag's followers (`message/mass/sendall`), and the
//! `TEMPLATESENDJOBFINISH` and `MASSSENDJOBFINISH` callbacks (RESEARCH §4).
//!
//! It keeps the provider's rules that the gateway's WeChat channel depends on — token overlap
//! and expiry, once-only `client_msg_id`, the daily quota, the subscribe value limits, errors as
//! HTTP 200 with `errcode` and an `errmsg` ending in ` rid: …` — so that the channel's retry,
//! token refresh and parking logic is tested against the same answers it meets in production.
//! Tests steer it (injected failures, delays, expired tokens) and observe it (accepted sends,
//! calls per path).

mod callbacks;
mod errors;
mod mass;
mod messages;
mod tokens;

pub use messages::subscribe_value_ok;

use super::server::{lock, Double, Injection, Provider};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::routing::{post, MethodRouter};
use axum::{Json, Router};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokens::Token;

/// The default app id the double accepts.
pub const DEFAULT_APPID: &str = "wx00000000d0ub1e00";
/// The default app secret the double accepts.
pub const DEFAULT_SECRET: &str = "wechat-double-secret";
/// The default original id of the account (`ToUserName` of callback events).
pub const DEFAULT_ORIGINAL_ID: &str = "gh_d0ub1e000000";
pub const DEFAULT_CALLBACK_TOKEN: &str = "d0ub1e-callback-token";

/// Which ids (openids, template ids) the double knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdSet {
    /// Every non-empty id.
    Any,
    /// Ids starting with this prefix.
    Prefix(String),
    /// Exactly these ids.
    Only(HashSet<String>),
}

impl IdSet {
    /// `IdSet::Only` from a list.
    pub fn only<I, S>(ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::Only(ids.into_iter().map(Into::into).collect())
    }

    pub fn contains(&self, id: &str) -> bool {
        match self {
            Self::Any => !id.is_empty(),
            Self::Prefix(prefix) => !id.is_empty() && id.starts_with(prefix.as_str()),
            Self::Only(ids) => ids.contains(id),
        }
    }
}

/// How the double behaves; change it while running with [`WeChatDouble::configure`].
#[derive(Debug, Clone)]
pub struct WeChatConfig {
    pub appid: String,
    pub secret: String,
    /// The account's original id (`gh_…`), the `ToUserName` of callback events.
    pub original_id: String,
    /// The token of the account's server configuration, which signs the callbacks the double
    /// posts (the gateway's `channels.wechat.callback_token`).
    pub callback_token: String,
    /// Lifetime of a new token (`expires_in`, 7200 s at WeChat).
    pub token_ttl: Duration,
    /// How long a replaced token keeps working (5 min at WeChat; tests usually want 0).
    pub token_overlap: Duration,
    /// Accepted sends per kind (template, subscribe) before 45009. The double's day never ends:
    /// lower or raise the quota instead.
    pub daily_quota: u64,
    /// How long a `client_msg_id` makes a repeated template send a no-op (10 min at WeChat).
    pub dedup_window: Duration,
    /// Known template ids; others get 40037. Default: any.
    pub templates: IdSet,
    /// Openids that follow the account; template sends to others get 43004.
    /// Default: openids starting with `o`, like real ones.
    pub followers: IdSet,
    /// Openids that refused subscribe messages (43101).
    pub refused: HashSet<String>,
    /// Accepted mass sends before 45028 (no mass send quota left).
    pub mass_quota: u64,
    /// A mass send repeating a `clientmsgid` sooner than this after the first gets 45066
    /// ("retry after a minute"); later, 45065 with the first one's `msg_id`.
    pub mass_retry_gap: Duration,
}

impl Default for WeChatConfig {
    fn default() -> Self {
        Self {
            appid: DEFAULT_APPID.into(),
            secret: DEFAULT_SECRET.into(),
            original_id: DEFAULT_ORIGINAL_ID.into(),
            callback_token: DEFAULT_CALLBACK_TOKEN.into(),
            token_ttl: Duration::from_secs(7200),
            token_overlap: Duration::from_secs(5 * 60),
            daily_quota: 100_000,
            dedup_window: Duration::from_secs(10 * 60),
            templates: IdSet::Any,
            followers: IdSet::Prefix("o".into()),
            refused: HashSet::new(),
            mass_quota: 100,
            mass_retry_gap: Duration::from_secs(60),
        }
    }
}

/// The two kinds of message the double accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SendKind {
    Template,
    Subscribe,
}

/// One accepted send (repeats deduplicated by `client_msg_id` are not recorded again).
#[derive(Debug, Clone)]
pub struct SentMessage {
    pub kind: SendKind,
    pub touser: String,
    pub template_id: String,
    pub client_msg_id: Option<String>,
    /// The `data` object as sent.
    pub data: Value,
    /// The whole request body, for fields not broken out here (`url`, `page`, `miniprogram`…).
    pub body: Value,
    /// Template messages only.
    pub msgid: Option<u64>,
    pub at: Instant,
}

/// One accepted mass send (repeats of a `clientmsgid` are not recorded again).
#[derive(Debug, Clone)]
pub struct MassSend {
    /// The tag whose followers it goes to; `None` with `is_to_all`.
    pub tag_id: Option<u64>,
    pub is_to_all: bool,
    pub text: String,
    pub clientmsgid: Option<String>,
    pub msg_id: u64,
    /// The whole request body.
    pub body: Value,
    pub at: Instant,
}

/// A running WeChat API double on a local port; dropping it stops the server.
pub type WeChatDouble = Double<WeChatState>;

impl Provider for WeChatState {
    type Config = WeChatConfig;
    const NAME: &'static str = "WeChat";

    fn new(config: WeChatConfig) -> Self {
        Self::new(config)
    }

    fn config(&mut self) -> &mut WeChatConfig {
        &mut self.config
    }

    fn injection(&mut self) -> &mut Injection {
        &mut self.injection
    }

    fn routes(state: Arc<Mutex<Self>>) -> Router {
        tokens::routes()
            .route(
                "/cgi-bin/message/template/send",
                send_route(WeChatState::template),
            )
            .route(
                "/cgi-bin/message/subscribe/send",
                send_route(WeChatState::subscribe),
            )
            .route(
                "/cgi-bin/message/mass/sendall",
                send_route(WeChatState::mass_send),
            )
            .with_state(state)
    }
}

impl Double<WeChatState> {
    /// Every token issued so far expires now: the next use gets 42001.
    pub fn expire_tokens(&self) {
        let now = Instant::now();
        for token in &mut lock(&self.state).tokens {
            token.expires_at = token.expires_at.min(now);
        }
    }

    pub fn set_daily_quota(&self, quota: u64) {
        lock(&self.state).config.daily_quota = quota;
    }

    /// Starts a new day: the sends counted against the quota go back to zero.
    pub fn reset_quota(&self) {
        lock(&self.state).quota_used.clear();
    }

    /// The newest token, if it still works and has not been replaced.
    pub fn current_token(&self) -> Option<String> {
        let state = lock(&self.state);
        state
            .current(Instant::now())
            .map(|token| token.value.clone())
    }

    /// The accepted sends, oldest first.
    pub fn sends(&self) -> Vec<SentMessage> {
        lock(&self.state).sends.clone()
    }

    /// The accepted mass sends, oldest first.
    pub fn mass_sends(&self) -> Vec<MassSend> {
        lock(&self.state).mass_sends.clone()
    }

    /// HTTP calls to `path` (e.g. `/cgi-bin/message/template/send`), failed ones included.
    pub fn calls(&self, path: &str) -> u64 {
        self.counted(path)
    }

    /// Calls to both token endpoints, failed ones included.
    pub fn token_calls(&self) -> u64 {
        self.calls("/cgi-bin/token") + self.calls("/cgi-bin/stable_token")
    }
}

#[derive(Debug)]
pub struct WeChatState {
    config: WeChatConfig,
    /// Every token issued, oldest first; the last one is the newest.
    tokens: Vec<Token>,
    injection: Injection,
    sends: Vec<SentMessage>,
    /// `(touser, client_msg_id)` → the msgid it got and when.
    recent: HashMap<(String, String), (u64, Instant)>,
    quota_used: HashMap<SendKind, u64>,
    next_msgid: u64,
    mass_sends: Vec<MassSend>,
    /// `clientmsgid` → the mass send's msg_id and when it was first tried.
    mass_by_client: HashMap<String, (u64, Instant)>,
}

type Shared = Arc<Mutex<WeChatState>>;

impl WeChatState {
    fn new(config: WeChatConfig) -> Self {
        Self {
            config,
            tokens: Vec::new(),
            injection: Injection::default(),
            sends: Vec::new(),
            recent: HashMap::new(),
            quota_used: HashMap::new(),
            next_msgid: 200_000_000,
            mass_sends: Vec::new(),
            mass_by_client: HashMap::new(),
        }
    }
}

/// How one kind of message send answers, given the access token and the body.
type Send = fn(&mut WeChatState, Option<&String>, &[u8]) -> Value;

/// The route of a message send: `send`'s reply, after the delay the injected failures ask for
/// (the state's lock is not held while waiting).
fn send_route(send: Send) -> MethodRouter<Shared> {
    post(
        move |State(state): State<Shared>,
              Query(query): Query<HashMap<String, String>>,
              body: Bytes| async move {
            let (reply, delay) = {
                let mut state = lock(&state);
                let delay = state.injection.next_delay();
                (send(&mut state, query.get("access_token"), &body), delay)
            };
            tokio::time::sleep(delay).await;
            Json(reply)
        },
    )
}
