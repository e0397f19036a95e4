//! `POST /v1/messages`: the backend sends a message to a user's devices (once per
//! `Idempotency-Key` within `roaming.idempotency_window`); `POST /v1/signals`: a live signal,
//! not stored.

use super::error::ApiError;
use super::json::ApiJson;
use super::state::Api;
use crate::log::accept::Sender;
use crate::store::record::hlc_millis;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::Json;
use protocol::envelope::{ClientMsgId, SignalMessage};
use protocol::topics::is_valid_id;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostMessage {
    to: String,
    from: Option<String>,
    body: Value,
}

impl PostMessage {
    /// The checks a message passes before it is accepted.
    pub(crate) fn check(&self) -> Result<(), ApiError> {
        check_ids(&self.to, self.from.as_deref())
    }
}

/// The message is in the recipient's log (durably) when this is sent.
#[derive(Serialize)]
pub struct Accepted {
    id: String,
    /// Its place in the recipient's log.
    seq: u64,
    /// Server time of acceptance, milliseconds since the Unix epoch.
    ts: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostSignal {
    to: String,
    from: Option<String>,
    body: Box<RawValue>,
}

impl PostSignal {
    /// The checks a signal passes before it is relayed.
    pub(crate) fn check(&self) -> Result<(), ApiError> {
        check_ids(&self.to, self.from.as_deref())
    }
}

/// Relays a live signal to the devices of `to` online now (see [`crate::live::signals`]); `202 {}`
/// once handed on.
pub async fn post_signal(
    State(api): State<Api>,
    ApiJson(request): ApiJson<PostSignal>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    request.check()?;
    let signal = SignalMessage {
        from: request.from,
        from_device: None,
        body: &*request.body,
    };
    api.signals.relay(&request.to, &signal, None);
    Ok((
        StatusCode::ACCEPTED,
        Json(Value::Object(Default::default())),
    ))
}

/// Checks the recipient and the optional sender of a backend's message or signal.
fn check_ids(to: &str, from: Option<&str>) -> Result<(), ApiError> {
    if !is_valid_id(to) {
        return Err(ApiError::invalid(
            "`to` must be a user id (letters, digits, '_', '-', '.'; 1-64)",
        ));
    }
    if from.is_some_and(|from| !is_valid_id(from)) {
        return Err(ApiError::invalid("`from` must be a user id"));
    }
    Ok(())
}

/// The request header that makes a message's sending safe to retry.
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The answer header that says a request repeated an earlier one's `Idempotency-Key`: the
/// answer is the earlier one's, and nothing was stored.
const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

pub async fn post(
    State(api): State<Api>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<PostMessage>,
) -> Result<(StatusCode, HeaderMap, Json<Accepted>), ApiError> {
    request.check()?;
    let key = idempotency_key(&headers)?;
    let sender = Sender::Backend {
        from: request.from.as_deref(),
    };
    let (id, ticket) = api
        .messages
        .accept(sender, &request.to, &request.body, key.as_ref());
    let stored = ticket.wait().await?;
    api.metrics.api_messages.inc();
    let mut answer = HeaderMap::new();
    if stored.repeat_of.is_some() {
        answer.insert(REPLAYED, HeaderValue::from_static("true"));
    }
    let recipient_copy = &stored.entries[0];
    Ok((
        StatusCode::ACCEPTED,
        answer,
        Json(Accepted {
            id: stored.repeat_of.unwrap_or(id),
            seq: recipient_copy.seq,
            ts: hlc_millis(recipient_copy.hlc),
        }),
    ))
}

/// The request's `Idempotency-Key`, if it has a valid one.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<ClientMsgId>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let text = value.to_str().map(str::to_string).unwrap_or_default();
    ClientMsgId::try_from(text)
        .map(Some)
        .map_err(|e| ApiError::invalid(format!("`Idempotency-Key`: {e}")))
}
