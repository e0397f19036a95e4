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

use super::server::{lock, random_hex, Double, Injection, Provider};
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The default app id the double accepts.
pub const DEFAULT_APPID: &str = "wx00000000d0ub1e00";
/// The default app secret the double accepts.
pub const DEFAULT_SECRET: &str = "wechat-double-secret";
/// The default original id of the account (`ToUserName` of callback events).
pub const DEFAULT_ORIGINAL_ID: &str = "gh_d0ub1e000000";

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
        Router::new()
            .route("/cgi-bin/token", get(token))
            .route("/cgi-bin/stable_token", post(stable_token))
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

    /// Posts the `TEMPLATESENDJOBFINISH` event for `msgid` to `callback_url`, as WeChat does
    /// once a template message has been delivered or has failed. `status` is `success`,
    /// `failed:user block` or `failed: system failed`. `FromUserName` is the openid the message
    /// was sent to (`unknown` for a msgid the double never issued).
    pub async fn finish_job(
        &self,
        callback_url: &str,
        msgid: u64,
        status: &str,
    ) -> reqwest::Result<reqwest::Response> {
        let (original_id, openid) = {
            let state = lock(&self.state);
            let openid = state
                .sends
                .iter()
                .find(|send| send.msgid == Some(msgid))
                .map_or_else(|| "unknown".to_owned(), |send| send.touser.clone());
            (state.config.original_id.clone(), openid)
        };
        let event = format!(
            "<FromUserName><![CDATA[{openid}]]></FromUserName>\
             <Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event>\
             <MsgID>{msgid}</MsgID>\
             <Status><![CDATA[{status}]]></Status>"
        );
        post_event(callback_url, &original_id, &event).await
    }

    /// Posts the `MASSSENDJOBFINISH` event for mass send `msg_id` to `callback_url`, as WeChat
    /// does once it went out: `status` is `send success`, `send fail` or `err(<code>)` (refused
    /// by review); `reach` is (TotalCount, SentCount, ErrorCount), FilterCount their sum.
    pub async fn finish_mass_job(
        &self,
        callback_url: &str,
        msg_id: u64,
        status: &str,
        (total, sent, errors): (u64, u64, u64),
    ) -> reqwest::Result<reqwest::Response> {
        let original_id = lock(&self.state).config.original_id.clone();
        let filtered = sent + errors;
        let event = format!(
            "<FromUserName><![CDATA[oSystem]]></FromUserName>\
             <Event><![CDATA[MASSSENDJOBFINISH]]></Event>\
             <MsgID>{msg_id}</MsgID>\
             <Status><![CDATA[{status}]]></Status>\
             <TotalCount>{total}</TotalCount><FilterCount>{filtered}</FilterCount>\
             <SentCount>{sent}</SentCount><ErrorCount>{errors}</ErrorCount>"
        );
        post_event(callback_url, &original_id, &event).await
    }
}

/// Posts an event to the account's callback URL, in WeChat's XML envelope.
async fn post_event(
    callback_url: &str,
    original_id: &str,
    event: &str,
) -> reqwest::Result<reqwest::Response> {
    let create_time = gateway::infra::time::unix_seconds();
    let xml = format!(
        "<xml><ToUserName><![CDATA[{original_id}]]></ToUserName>\
         <CreateTime>{create_time}</CreateTime>\
         <MsgType><![CDATA[event]]></MsgType>{event}</xml>"
    );
    reqwest::Client::new()
        .post(callback_url)
        .header(reqwest::header::CONTENT_TYPE, "text/xml")
        .body(xml)
        .send()
        .await
}

#[derive(Debug)]
struct Token {
    value: String,
    expires_at: Instant,
    /// Set when a newer token replaced this one: it stops working then (after the overlap).
    retired_at: Option<Instant>,
}

impl Token {
    fn usable(&self, now: Instant) -> bool {
        now < self.expires_at && self.retired_at.is_none_or(|retired| now < retired)
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

    /// The newest token if it still works and has not been replaced.
    fn current(&self, now: Instant) -> Option<&Token> {
        self.tokens
            .last()
            .filter(|token| token.retired_at.is_none() && token.usable(now))
    }

    /// Checks the app's credentials; `Err` is the error reply.
    fn check_credentials(&self, grant_type: &str, appid: &str, secret: &str) -> Result<(), Value> {
        if grant_type != "client_credential" {
            return Err(error(40002));
        }
        if appid != self.config.appid {
            return Err(error(40013));
        }
        if secret != self.config.secret {
            return Err(error(40125));
        }
        Ok(())
    }

    /// Issues a new token; the ones still working keep working for the overlap only.
    fn issue(&mut self, now: Instant) -> Value {
        let retire_at = now + self.config.token_overlap;
        for token in &mut self.tokens {
            if token.usable(now) {
                token.retired_at = Some(token.retired_at.map_or(retire_at, |t| t.min(retire_at)));
            }
        }
        let token = Token {
            value: random_hex(64),
            expires_at: now + self.config.token_ttl,
            retired_at: None,
        };
        let reply = token_reply(&token, now);
        self.tokens.push(token);
        reply
    }

    /// `Err` is the error reply for a missing, unknown, replaced or expired token.
    fn check_token(&self, token: Option<&String>, now: Instant) -> Result<(), Value> {
        let Some(token) = token.filter(|token| !token.is_empty()) else {
            return Err(error(41001));
        };
        match self.tokens.iter().find(|t| &t.value == token) {
            None => Err(error(40001)),
            Some(t) if now >= t.expires_at => Err(error(42001)),
            Some(t) if !t.usable(now) => Err(error(40001)),
            Some(_) => Ok(()),
        }
    }

    fn over_quota(&self, kind: SendKind) -> bool {
        self.quota_used.get(&kind).copied().unwrap_or(0) >= self.config.daily_quota
    }

    /// What both kinds of send check first, in WeChat's order: an injected failure, the token,
    /// the body, the openid and the template. Returns the request and the body as JSON, or the
    /// error answer.
    fn accept_send<R: Addressed>(
        &mut self,
        token: Option<&String>,
        body: &[u8],
        now: Instant,
    ) -> Result<(R, Value), Value> {
        if let Some(code) = self.injection.next_failure() {
            return Err(error(code));
        }
        self.check_token(token, now)?;
        let raw = serde_json::from_slice::<Value>(body).map_err(|_| error(47001))?;
        let request = R::deserialize(&raw).map_err(|_| error(47001))?;
        if !valid_openid(request.touser()) {
            return Err(error(40003));
        }
        if !self.config.templates.contains(request.template_id()) {
            return Err(error(40037));
        }
        Ok((request, raw))
    }

    fn template(&mut self, token: Option<&String>, body: &[u8]) -> Value {
        let now = Instant::now();
        let (request, raw) = match self.accept_send::<TemplateRequest>(token, body, now) {
            Ok(accepted) => accepted,
            Err(reply) => return reply,
        };
        if !self.config.followers.contains(&request.touser) {
            return error(43004);
        }
        let client_msg_id = request.client_msg_id.filter(|id| !id.is_empty());
        if let Some(id) = &client_msg_id {
            let key = (request.touser.clone(), id.clone());
            if let Some((msgid, at)) = self.recent.get(&key) {
                if now.duration_since(*at) < self.config.dedup_window {
                    return json!({"errcode": 0, "errmsg": "ok", "msgid": msgid});
                }
            }
        }
        if self.over_quota(SendKind::Template) {
            return error(45009);
        }
        let msgid = self.next_msgid;
        self.next_msgid += 1;
        *self.quota_used.entry(SendKind::Template).or_default() += 1;
        if let Some(id) = &client_msg_id {
            self.recent
                .insert((request.touser.clone(), id.clone()), (msgid, now));
        }
        self.sends.push(SentMessage {
            kind: SendKind::Template,
            touser: request.touser,
            template_id: request.template_id,
            client_msg_id,
            data: raw.get("data").cloned().unwrap_or(Value::Null),
            body: raw,
            msgid: Some(msgid),
            at: now,
        });
        json!({"errcode": 0, "errmsg": "ok", "msgid": msgid})
    }

    fn subscribe(&mut self, token: Option<&String>, body: &[u8]) -> Value {
        let now = Instant::now();
        let (request, raw) = match self.accept_send::<SubscribeRequest>(token, body, now) {
            Ok(accepted) => accepted,
            Err(reply) => return reply,
        };
        if self.config.refused.contains(&request.touser) {
            return error(43101);
        }
        if let Some(field) = invalid_subscribe_field(&request.data) {
            return error_with(
                47003,
                &format!("argument invalid! data.{field}.value invalid"),
            );
        }
        if self.over_quota(SendKind::Subscribe) {
            return error(45009);
        }
        *self.quota_used.entry(SendKind::Subscribe).or_default() += 1;
        self.sends.push(SentMessage {
            kind: SendKind::Subscribe,
            touser: request.touser,
            template_id: request.template_id,
            client_msg_id: None,
            data: Value::Object(request.data),
            body: raw,
            msgid: None,
            at: now,
        });
        json!({"errcode": 0, "errmsg": "ok"})
    }
}

impl WeChatState {
    /// `message/mass/sendall`: text to a tag's followers (or to all), once per `clientmsgid`.
    fn mass_send(&mut self, token: Option<&String>, body: &[u8]) -> Value {
        let now = Instant::now();
        if let Some(code) = self.injection.next_failure() {
            return error(code);
        }
        if let Err(reply) = self.check_token(token, now) {
            return reply;
        }
        let Ok(raw) = serde_json::from_slice::<Value>(body) else {
            return error(47001);
        };
        let Ok(request) = MassRequest::deserialize(&raw) else {
            return error(47001);
        };
        // The double takes text only; WeChat also takes mpnews, images, voice, video and cards.
        if request.msgtype != "text" {
            return error(40008);
        }
        let text = request.text.map(|t| t.content).unwrap_or_default();
        if text.trim().is_empty() || (!request.filter.is_to_all && request.filter.tag_id.is_none())
        {
            return error(47001);
        }
        let clientmsgid = request.clientmsgid.filter(|id| !id.is_empty());
        if let Some(id) = &clientmsgid {
            if id.len() > 64 {
                return error(45067);
            }
            if let Some(&(msg_id, first)) = self.mass_by_client.get(id) {
                if now.duration_since(first) < self.config.mass_retry_gap {
                    return error(45066);
                }
                return json!({"errcode": 45065, "errmsg": errmsg(45065), "msg_id": msg_id});
            }
        }
        if self.mass_sends.len() as u64 >= self.config.mass_quota {
            return error(45028);
        }
        let msg_id = self.next_msgid;
        self.next_msgid += 1;
        if let Some(id) = &clientmsgid {
            self.mass_by_client.insert(id.clone(), (msg_id, now));
        }
        self.mass_sends.push(MassSend {
            tag_id: request.filter.tag_id,
            is_to_all: request.filter.is_to_all,
            text,
            clientmsgid,
            msg_id,
            body: raw,
            at: now,
        });
        json!({"errcode": 0, "errmsg": "send job submission success", "msg_id": msg_id, "msg_data_id": msg_id + 1_000_000})
    }
}

#[derive(Deserialize)]
struct MassRequest {
    filter: MassFilter,
    #[serde(default)]
    msgtype: String,
    text: Option<MassText>,
    clientmsgid: Option<String>,
}

#[derive(Deserialize)]
struct MassFilter {
    #[serde(default)]
    is_to_all: bool,
    tag_id: Option<u64>,
}

#[derive(Deserialize)]
struct MassText {
    content: String,
}

#[derive(Deserialize)]
struct TokenQuery {
    #[serde(default)]
    grant_type: String,
    #[serde(default)]
    appid: String,
    #[serde(default)]
    secret: String,
}

#[derive(Deserialize)]
struct StableTokenRequest {
    #[serde(default)]
    grant_type: String,
    #[serde(default)]
    appid: String,
    #[serde(default)]
    secret: String,
    #[serde(default)]
    force_refresh: bool,
}

#[derive(Deserialize)]
struct TemplateRequest {
    #[serde(default)]
    touser: String,
    #[serde(default)]
    template_id: String,
    client_msg_id: Option<String>,
}

#[derive(Deserialize)]
struct SubscribeRequest {
    #[serde(default)]
    touser: String,
    #[serde(default)]
    template_id: String,
    #[serde(default)]
    data: Map<String, Value>,
}

/// Who a send is for, which both kinds check alike.
trait Addressed: serde::de::DeserializeOwned {
    fn touser(&self) -> &str;
    fn template_id(&self) -> &str;
}

impl Addressed for TemplateRequest {
    fn touser(&self) -> &str {
        &self.touser
    }

    fn template_id(&self) -> &str {
        &self.template_id
    }
}

impl Addressed for SubscribeRequest {
    fn touser(&self) -> &str {
        &self.touser
    }

    fn template_id(&self) -> &str {
        &self.template_id
    }
}

/// `GET /cgi-bin/token`: like WeChat, every successful call issues a new token (the previous
/// one keeps working for the overlap), unlike `stable_token`.
async fn token(
    State(state): State<Shared>,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Json<Value> {
    let Ok(Query(query)) = query else {
        return Json(error(40002));
    };
    let mut state = lock(&state);
    if let Err(reply) = state.check_credentials(&query.grant_type, &query.appid, &query.secret) {
        return Json(reply);
    }
    Json(state.issue(Instant::now()))
}

/// `POST /cgi-bin/stable_token`: the current token while it works, a new one when it has
/// expired or `force_refresh` is set — or, like WeChat, when less than the overlap is left of
/// it (the old one then works until it expires), so that clients refreshing early get a fresh
/// token rather than the dying one again.
async fn stable_token(State(state): State<Shared>, body: Bytes) -> Json<Value> {
    let Ok(request) = serde_json::from_slice::<StableTokenRequest>(&body) else {
        return Json(error(47001));
    };
    let mut state = lock(&state);
    if let Err(reply) =
        state.check_credentials(&request.grant_type, &request.appid, &request.secret)
    {
        return Json(reply);
    }
    let now = Instant::now();
    if !request.force_refresh {
        let overlap = state.config.token_overlap;
        let current = state
            .current(now)
            .filter(|token| token.expires_at.saturating_duration_since(now) > overlap);
        if let Some(token) = current {
            return Json(token_reply(token, now));
        }
    }
    Json(state.issue(now))
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

fn token_reply(token: &Token, now: Instant) -> Value {
    // Whole seconds left, rounded up so that a fresh 7200 s token says 7200.
    let left = token.expires_at.saturating_duration_since(now);
    let expires_in = left.as_millis().div_ceil(1000);
    json!({"access_token": token.value, "expires_in": expires_in})
}

/// Real openids are 28 characters of `[A-Za-z0-9_-]`; the double only insists on the alphabet.
fn valid_openid(openid: &str) -> bool {
    !openid.is_empty()
        && openid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The first `data` field whose value breaks WeChat's subscribe-message limits, by the field's
/// type (its name without the trailing number: `thing1` is a `thing`).
fn invalid_subscribe_field(data: &Map<String, Value>) -> Option<&str> {
    data.iter()
        .find(|(key, field)| {
            field
                .get("value")
                .and_then(Value::as_str)
                .is_none_or(|value| !subscribe_value_ok(key, value))
        })
        .map(|(key, _)| key.as_str())
}

/// Whether `value` fits the limits of the field named `key` (RESEARCH §4).
pub fn subscribe_value_ok(key: &str, value: &str) -> bool {
    if value.chars().any(char::is_control) {
        return false;
    }
    let kind = key.trim_end_matches(|c: char| c.is_ascii_digit());
    let max = match kind {
        "thing" => 20,
        "number" | "letter" | "character_string" => 32,
        "phone_number" => 17,
        "car_number" => 8,
        // 10 Chinese characters, or 20 when the name is written in letters only.
        "name" if value.is_ascii() => 20,
        "name" => 10,
        "phrase" => 5,
        _ => usize::MAX,
    };
    value.chars().count() <= max
}

fn error(errcode: i64) -> Value {
    error_with(errcode, errmsg(errcode))
}

/// An error reply; like WeChat's, the message ends with ` rid: <request id>`.
fn error_with(errcode: i64, message: &str) -> Value {
    let rid = format!("{}-{}-{}", random_hex(8), random_hex(8), random_hex(8));
    json!({"errcode": errcode, "errmsg": format!("{message} rid: {rid}")})
}

fn errmsg(errcode: i64) -> &'static str {
    match errcode {
        -1 => "system error",
        40001 => "invalid credential, access_token is invalid or not latest",
        40002 => "invalid grant_type",
        40003 => "invalid openid",
        40008 => "invalid message type",
        40013 => "invalid appid",
        40014 => "invalid access_token",
        40037 => "invalid template_id",
        40125 => "invalid appsecret",
        41001 => "access_token missing",
        42001 => "access_token expired",
        43004 => "require subscribe",
        43101 => "user refuse to accept the msg",
        45009 => "reach max api daily quota limit",
        45011 => "api minute-quota reach limit  mustslower  retry next minute",
        45028 => "has no masssend quota",
        45065 => "clientmsgid exist",
        45066 => "clientmsgid retry too fast, please retry after 1 minute",
        45067 => "clientmsgid size out of limit",
        47001 => "data format error",
        47003 => "argument invalid!",
        _ => "error",
    }
}
