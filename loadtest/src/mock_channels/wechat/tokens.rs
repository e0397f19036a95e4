//! Access tokens as WeChat hands them out: `cgi-bin/token` issues a new one on every call,
//! `cgi-bin/stable_token` keeps the current one until its last overlap; a replaced token works
//! for the overlap only, an expired one gets 42001.

use super::errors::error;
use super::{Shared, WeChatState};
use crate::mock_channels::server::{lock, random_hex};
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Instant;

#[derive(Debug)]
pub(super) struct Token {
    pub(super) value: String,
    pub(super) expires_at: Instant,
    /// Set when a newer token replaced this one: it stops working then (after the overlap).
    retired_at: Option<Instant>,
}

impl Token {
    fn usable(&self, now: Instant) -> bool {
        now < self.expires_at && self.retired_at.is_none_or(|retired| now < retired)
    }
}

impl WeChatState {
    /// The newest token if it still works and has not been replaced.
    pub(super) fn current(&self, now: Instant) -> Option<&Token> {
        self.tokens
            .last()
            .filter(|token| token.retired_at.is_none() && token.usable(now))
    }

    /// Checks the app's credentials; `Err` is the error reply.
    pub(super) fn check_credentials(
        &self,
        grant_type: &str,
        appid: &str,
        secret: &str,
    ) -> Result<(), Value> {
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
    pub(super) fn issue(&mut self, now: Instant) -> Value {
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
    pub(super) fn check_token(&self, token: Option<&String>, now: Instant) -> Result<(), Value> {
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
}

/// The two token endpoints.
pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/cgi-bin/token", get(token))
        .route("/cgi-bin/stable_token", post(stable_token))
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

fn token_reply(token: &Token, now: Instant) -> Value {
    // Whole seconds left, rounded up so that a fresh 7200 s token says 7200.
    let left = token.expires_at.saturating_duration_since(now);
    let expires_in = left.as_millis().div_ceil(1000);
    json!({"access_token": token.value, "expires_in": expires_in})
}
