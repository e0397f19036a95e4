//! `POST /v1/messages`: the backend sends a message to a user's devices.

use super::error::ApiError;
use super::json::ApiJson;
use crate::gateway::Gateway;
use crate::messages::Sender;
use crate::store::record::hlc_millis;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use protocol::topics::is_valid_id;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostMessage {
    to: String,
    from: Option<String>,
    body: Value,
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

pub async fn post(
    State(gw): State<Arc<Gateway>>,
    ApiJson(request): ApiJson<PostMessage>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    if !is_valid_id(&request.to) {
        return Err(ApiError::invalid(
            "`to` must be a user id (letters, digits, '_', '-', '.'; 1-64)",
        ));
    }
    if let Some(from) = &request.from {
        if !is_valid_id(from) {
            return Err(ApiError::invalid("`from` must be a user id"));
        }
    }
    let sender = Sender::Backend {
        from: request.from.as_deref(),
    };
    let (id, ticket) = gw.messages.accept(sender, &request.to, &request.body);
    let appended = ticket.wait().await?;
    gw.metrics.api_messages.inc();
    let recipient_copy = &appended[0];
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            id,
            seq: recipient_copy.seq,
            ts: hlc_millis(recipient_copy.hlc),
        }),
    ))
}
