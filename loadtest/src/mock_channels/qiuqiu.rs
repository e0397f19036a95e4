//! A test double of the 球球 push API, shaped like Getui's REST API v2 (RESEARCH §5): signed
//! auth for a token, then single pushes to a device id (`cid`) or an alias.
//!
//! What the gateway's 球球 channel relies on is kept: the sign check, tokens that expire,
//! parameter errors as permanent failures (20001), and above all that a repeated `request_id`
//! is answered with success but delivered only once — which is what makes the channel's retries
//! safe. Answers are HTTP 200 with `code`/`msg`, like the provider's.
//!
//! Codes: 0 success; 2 service starting; 10001 token missing, wrong or expired; 10002 auth
//! rejected (unknown appkey or app id, wrong sign, timestamp more than 10 min off — a
//! configuration error, not worth retrying); 10003 / 10005 per-minute limits; 20001 parameter
//! error.

use super::server::{lock, random_hex, Double, Injection, Provider};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use gateway::infra::time::unix_millis;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The default app id (the `{appId}` in `/v2/{appId}/…`).
pub const DEFAULT_APP_ID: &str = "qiuqiu-double-app";
/// The default app key (`appkey` in auth).
pub const DEFAULT_APP_KEY: &str = "qiuqiu-double-key";
/// The default master secret (only ever part of the sign).
pub const DEFAULT_MASTER_SECRET: &str = "qiuqiu-double-master-secret";

/// Auth rejected: unknown appkey or app id, wrong sign, or a stale timestamp.
pub const AUTH_REJECTED: i64 = 10002;

/// `hex(sha256(appkey + timestamp + mastersecret))`, the `sign` of an auth request.
pub fn sign(app_key: &str, timestamp: &str, master_secret: &str) -> String {
    let digest = Sha256::digest(format!("{app_key}{timestamp}{master_secret}"));
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// How the double behaves; change it while running with [`QiuQiuDouble::configure`].
#[derive(Debug, Clone)]
pub struct QiuQiuConfig {
    pub app_id: String,
    pub app_key: String,
    pub master_secret: String,
    /// Lifetime of a token (a day at Getui).
    pub token_ttl: Duration,
    /// How far an auth request's timestamp may be from the double's clock.
    pub max_clock_skew: Duration,
    /// Most ids in one push's `audience.cid` / `audience.alias` (Getui's single push takes one;
    /// 球球's takes a user's few devices at once). More, or none, is a 20001.
    pub max_targets: usize,
}

impl Default for QiuQiuConfig {
    fn default() -> Self {
        Self {
            app_id: DEFAULT_APP_ID.into(),
            app_key: DEFAULT_APP_KEY.into(),
            master_secret: DEFAULT_MASTER_SECRET.into(),
            token_ttl: Duration::from_secs(24 * 3600),
            max_clock_skew: Duration::from_secs(10 * 60),
            max_targets: 100,
        }
    }
}

/// Who a push was addressed to: device ids or aliases, one or more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    Cid(Vec<String>),
    Alias(Vec<String>),
}

/// What a push carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushMessage {
    /// Shown by the device's system.
    Notification {
        title: String,
        body: String,
        click_type: String,
        url: Option<String>,
    },
    /// A silent payload handed to the app.
    Transmission(String),
}

/// One delivered push (a repeated `request_id` is not recorded again).
#[derive(Debug, Clone)]
pub struct Push {
    pub request_id: String,
    pub audience: Audience,
    pub message: PushMessage,
    /// `settings.ttl` in milliseconds, when given.
    pub ttl_ms: Option<i64>,
    pub task_id: String,
    /// The whole request body.
    pub body: Value,
    pub at: Instant,
}

/// A running 球球 push double on a local port; dropping it stops the server. Its `base_url` is
/// without `/v2/{appId}`: what the gateway's `channels.qiuqiu.base_url` should be.
pub type QiuQiuDouble = Double<QiuQiuState>;

impl Provider for QiuQiuState {
    type Config = QiuQiuConfig;
    const NAME: &'static str = "球球";

    fn new(config: QiuQiuConfig) -> Self {
        Self::new(config)
    }

    fn config(&mut self) -> &mut QiuQiuConfig {
        &mut self.config
    }

    fn injection(&mut self) -> &mut Injection {
        &mut self.injection
    }

    fn routes(state: Arc<Mutex<Self>>) -> Router {
        Router::new()
            .route("/v2/{app_id}/auth", post(auth))
            .route("/v2/{app_id}/push/single/cid", post(push_cid))
            .route("/v2/{app_id}/push/single/alias", post(push_alias))
            .with_state(state)
    }
}

impl Double<QiuQiuState> {
    /// Every token issued so far expires now: the next push with it gets 10001.
    pub fn expire_tokens(&self) {
        let now = Instant::now();
        for expires_at in lock(&self.state).tokens.values_mut() {
            *expires_at = (*expires_at).min(now);
        }
    }

    /// The delivered pushes, oldest first.
    pub fn pushes(&self) -> Vec<Push> {
        lock(&self.state).pushes.clone()
    }

    /// HTTP calls to `path`, failed ones included. Either the full path
    /// (`/v2/{appId}/push/single/cid`) or the part after `/v2/{appId}` (`/push/single/cid`).
    pub fn calls(&self, path: &str) -> u64 {
        if path.starts_with("/v2/") {
            self.counted(path)
        } else {
            let app_id = lock(&self.state).config.app_id.clone();
            self.counted(&format!("/v2/{app_id}{path}"))
        }
    }

    /// Auth calls, rejected ones included.
    pub fn auth_calls(&self) -> u64 {
        self.calls("/auth")
    }
}

#[derive(Debug)]
pub struct QiuQiuState {
    config: QiuQiuConfig,
    /// Token → when it expires. Like Getui, a new token does not invalidate older ones.
    tokens: HashMap<String, Instant>,
    injection: Injection,
    pushes: Vec<Push>,
    /// `request_id` → the answer it got, repeated verbatim for a retry.
    answered: HashMap<String, Value>,
}

type Shared = Arc<Mutex<QiuQiuState>>;

impl QiuQiuState {
    fn new(config: QiuQiuConfig) -> Self {
        Self {
            config,
            tokens: HashMap::new(),
            injection: Injection::default(),
            pushes: Vec::new(),
            answered: HashMap::new(),
        }
    }

    fn auth(&mut self, app_id: &str, body: &[u8]) -> Value {
        let Ok(request) = serde_json::from_slice::<AuthRequest>(body) else {
            return reply(20001, "invalid auth request");
        };
        let timestamp = match &request.timestamp {
            Value::String(text) => text.clone(),
            Value::Number(number) => number.to_string(),
            _ => return reply(20001, "timestamp missing"),
        };
        let Ok(millis) = timestamp.parse::<u64>() else {
            return reply(20001, "timestamp is not a number of milliseconds");
        };
        let config = &self.config;
        if app_id != config.app_id || request.appkey != config.app_key {
            return reply(AUTH_REJECTED, "appId or appkey unknown");
        }
        let skew = Duration::from_millis(millis.abs_diff(unix_millis()));
        if skew > config.max_clock_skew {
            return reply(AUTH_REJECTED, "timestamp expired");
        }
        let expected = sign(&config.app_key, &timestamp, &config.master_secret);
        if !request.sign.eq_ignore_ascii_case(&expected) {
            return reply(AUTH_REJECTED, "sign error");
        }
        let token = random_hex(64);
        let ttl = config.token_ttl;
        let expire_time = unix_millis() + ttl.as_millis() as u64;
        self.tokens.insert(token.clone(), Instant::now() + ttl);
        json!({
            "code": 0,
            "msg": "success",
            "data": {"expire_time": expire_time.to_string(), "token": token},
        })
    }

    fn push(&mut self, app_id: &str, by_alias: bool, headers: &HeaderMap, body: &[u8]) -> Value {
        let now = Instant::now();
        if let Some(code) = self.injection.next_failure() {
            return reply(code, injected_msg(code));
        }
        if app_id != self.config.app_id {
            return reply(AUTH_REJECTED, "appId unknown");
        }
        let token = headers.get("token").and_then(|value| value.to_str().ok());
        let token_ok = token
            .and_then(|token| self.tokens.get(token))
            .is_some_and(|expires_at| now < *expires_at);
        if !token_ok {
            return reply(10001, "token invalid or expired");
        }
        let Ok(raw) = serde_json::from_slice::<Value>(body) else {
            return reply(20001, "body is not JSON");
        };
        let parsed = parse_push(&raw, by_alias, self.config.max_targets);
        let (request_id, audience, message, ttl_ms) = match parsed {
            Ok(parsed) => parsed,
            Err(problem) => return reply(20001, &problem),
        };
        if let Some(answer) = self.answered.get(&request_id) {
            return answer.clone();
        }
        let task_id = format!("RASS_{}", random_hex(24).to_uppercase());
        let targets = match &audience {
            Audience::Cid(ids) | Audience::Alias(ids) => ids,
        };
        let statuses: serde_json::Map<String, Value> = targets
            .iter()
            .map(|id| (id.clone(), json!("successed_online")))
            .collect();
        let answer = json!({
            "code": 0,
            "msg": "success",
            "data": {task_id.clone(): statuses},
        });
        self.answered.insert(request_id.clone(), answer.clone());
        self.pushes.push(Push {
            request_id,
            audience,
            message,
            ttl_ms,
            task_id,
            body: raw,
            at: now,
        });
        answer
    }
}

#[derive(Deserialize)]
struct AuthRequest {
    #[serde(default)]
    sign: String,
    #[serde(default)]
    timestamp: Value,
    #[serde(default)]
    appkey: String,
}

#[derive(Deserialize)]
struct PushRequest {
    request_id: Option<String>,
    settings: Option<Settings>,
    audience: Option<AudienceRequest>,
    push_message: Option<PushMessageRequest>,
}

#[derive(Deserialize)]
struct Settings {
    ttl: Option<i64>,
}

#[derive(Deserialize)]
struct AudienceRequest {
    cid: Option<Vec<String>>,
    alias: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct PushMessageRequest {
    notification: Option<NotificationRequest>,
    transmission: Option<String>,
}

#[derive(Deserialize)]
struct NotificationRequest {
    title: Option<String>,
    body: Option<String>,
    click_type: Option<String>,
    url: Option<String>,
}

/// The checks behind 20001, in the order a reader of the API docs would expect.
fn parse_push(
    raw: &Value,
    by_alias: bool,
    max_targets: usize,
) -> Result<(String, Audience, PushMessage, Option<i64>), String> {
    let request =
        PushRequest::deserialize(raw).map_err(|error| format!("invalid body: {error}"))?;
    let request_id = request.request_id.unwrap_or_default();
    if !(10..=32).contains(&request_id.chars().count()) {
        return Err("request_id must be 10 to 32 characters".into());
    }
    let audience = request.audience.ok_or("audience missing")?;
    let (wanted, other, name) = if by_alias {
        (audience.alias, audience.cid, "alias")
    } else {
        (audience.cid, audience.alias, "cid")
    };
    if other.is_some() {
        return Err(format!("audience must have only {name}"));
    }
    let targets = wanted.unwrap_or_default();
    if targets.is_empty() || targets.len() > max_targets || targets.iter().any(String::is_empty) {
        return Err(format!("audience.{name} must hold 1 to {max_targets} ids"));
    }
    let audience = if by_alias {
        Audience::Alias(targets)
    } else {
        Audience::Cid(targets)
    };
    let push_message = request.push_message.ok_or("push_message missing")?;
    let message = match (push_message.notification, push_message.transmission) {
        (Some(notification), None) => notification_message(notification)?,
        (None, Some(payload)) if !payload.is_empty() => PushMessage::Transmission(payload),
        (None, Some(_)) => return Err("transmission is empty".into()),
        _ => return Err("push_message needs exactly one of notification, transmission".into()),
    };
    let ttl_ms = request.settings.and_then(|settings| settings.ttl);
    Ok((request_id, audience, message, ttl_ms))
}

fn notification_message(notification: NotificationRequest) -> Result<PushMessage, String> {
    let title = notification.title.unwrap_or_default();
    let body = notification.body.unwrap_or_default();
    if title.is_empty() || title.chars().count() > 50 {
        return Err("notification.title must be 1 to 50 characters".into());
    }
    if body.is_empty() || body.chars().count() > 256 {
        return Err("notification.body must be 1 to 256 characters".into());
    }
    let click_type = notification.click_type.unwrap_or_default();
    const CLICK_TYPES: [&str; 6] = [
        "intent",
        "url",
        "payload",
        "payload_custom",
        "startapp",
        "none",
    ];
    if !CLICK_TYPES.contains(&click_type.as_str()) {
        return Err(format!(
            "notification.click_type must be one of {CLICK_TYPES:?}"
        ));
    }
    if click_type == "url" && notification.url.as_deref().is_none_or(str::is_empty) {
        return Err("notification.url is required when click_type is url".into());
    }
    Ok(PushMessage::Notification {
        title,
        body,
        click_type,
        url: notification.url,
    })
}

async fn auth(State(state): State<Shared>, Path(app_id): Path<String>, body: Bytes) -> Json<Value> {
    Json(lock(&state).auth(&app_id, &body))
}

async fn push_cid(
    State(state): State<Shared>,
    Path(app_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Json<Value> {
    push(state, app_id, false, headers, body).await
}

async fn push_alias(
    State(state): State<Shared>,
    Path(app_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Json<Value> {
    push(state, app_id, true, headers, body).await
}

async fn push(
    state: Shared,
    app_id: String,
    by_alias: bool,
    headers: HeaderMap,
    body: Bytes,
) -> Json<Value> {
    let (answer, delay) = {
        let mut state = lock(&state);
        let delay = state.injection.next_delay();
        (state.push(&app_id, by_alias, &headers, &body), delay)
    };
    tokio::time::sleep(delay).await;
    Json(answer)
}

fn reply(code: i64, msg: &str) -> Value {
    json!({"code": code, "msg": msg})
}

fn injected_msg(code: i64) -> &'static str {
    match code {
        2 => "service is starting, try again",
        10001 => "token invalid or expired",
        10003 => "auth calls per minute over limit",
        10005 => "calls per minute over limit",
        20001 => "parameter error",
        _ => "error",
    }
}
