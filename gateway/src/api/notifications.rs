//! Notifications from the backend, their status, and the users' notification preferences
//! (quiet hours, consent, channel bindings).

use super::devices::check_ids;
use super::error::ApiError;
use super::json::{ApiJson, ApiQuery};
use crate::channel::{parse_job_finish, JobStatus};
use crate::gateway::Gateway;
use crate::notify::model::{Bindings, Consent, QuietHours, Record, Route, RouteState, Status};
use crate::notify::quiet_hours;
use crate::notify::router::RouteError;
use crate::notify::NotificationInput;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use protocol::error_code::ErrorBody;
use protocol::ErrorCode;
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Serialize)]
pub struct Routed {
    id: String,
    routes: BTreeMap<Route, RouteState>,
}

impl From<RouteError> for ApiError {
    fn from(error: RouteError) -> Self {
        match error {
            RouteError::UnknownKind(..) => ApiError::invalid(error.to_string()),
            RouteError::Store(e) => e.into(),
        }
    }
}

pub async fn post(
    State(gw): State<Arc<Gateway>>,
    ApiJson(input): ApiJson<NotificationInput>,
) -> Result<(StatusCode, Json<Routed>), ApiError> {
    let notification = input.into_notification().map_err(ApiError::invalid)?;
    let record = gw.notifications.submit(&gw, notification).await?;
    Ok((StatusCode::ACCEPTED, Json(record.into())))
}

impl From<Record> for Routed {
    fn from(record: Record) -> Self {
        Self {
            id: record.notification.id,
            routes: record.routes,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    notifications: Vec<NotificationInput>,
}

/// One notification's answer inside a batch: its decisions, or why it was refused.
#[derive(Serialize)]
#[serde(untagged)]
pub enum BatchItem {
    Routed(Routed),
    Refused(ErrorBody),
}

#[derive(Serialize)]
pub struct BatchAnswer {
    results: Vec<BatchItem>,
}

/// Many notifications in one request (a backend's fan-out, e.g. an event to every follower):
/// each is routed as if posted alone and answered in order; one refused does not refuse the
/// others. They reach the router together, so they share its batches.
pub async fn post_batch(
    State(gw): State<Arc<Gateway>>,
    ApiJson(batch): ApiJson<Batch>,
) -> Result<(StatusCode, Json<BatchAnswer>), ApiError> {
    let most = gw.config.notify.max_per_request;
    if batch.notifications.len() > most {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            format!(
                "{} notifications in one request; at most {most} (notify.max_per_request)",
                batch.notifications.len()
            ),
        ));
    }
    // The valid ones go to the router together; the others are answered where they stand.
    let mut answers: Vec<Option<BatchItem>> = Vec::with_capacity(batch.notifications.len());
    let mut valid = Vec::new();
    for input in batch.notifications {
        match input.into_notification() {
            Ok(notification) => {
                valid.push(notification);
                answers.push(None);
            }
            Err(why) => answers.push(Some(BatchItem::Refused(ApiError::invalid(why).into_body()))),
        }
    }
    let mut routed = gw.notifications.submit_all(&gw, valid).await.into_iter();
    let results = answers
        .into_iter()
        .map(|answer| {
            answer.unwrap_or_else(|| {
                match routed.next().expect("one record per valid notification") {
                    Ok(record) => BatchItem::Routed(record.into()),
                    Err(refused) => BatchItem::Refused(ApiError::from(refused).into_body()),
                }
            })
        })
        .collect();
    Ok((StatusCode::ACCEPTED, Json(BatchAnswer { results })))
}

pub async fn get(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
) -> Result<Json<Record>, ApiError> {
    match gw.notifications.ledger.record(&id).await? {
        Some(record) => Ok(Json(record)),
        None => Err(ApiError::not_found(format!("no notification {id:?}"))),
    }
}

pub async fn put_quiet_hours(
    State(gw): State<Arc<Gateway>>,
    Path(user): Path<String>,
    ApiJson(hours): ApiJson<QuietHours>,
) -> Result<Json<QuietHours>, ApiError> {
    check_ids(&[&user])?;
    quiet_hours::validate(&hours).map_err(|e| ApiError::invalid(e.to_string()))?;
    gw.notifications
        .ledger
        .set_quiet_hours(&user, &hours)
        .await?;
    Ok(Json(hours))
}

pub async fn put_consent(
    State(gw): State<Arc<Gateway>>,
    Path(user): Path<String>,
    ApiJson(consent): ApiJson<Consent>,
) -> Result<Json<Consent>, ApiError> {
    check_ids(&[&user])?;
    gw.notifications.ledger.set_consent(&user, &consent).await?;
    Ok(Json(consent))
}

pub async fn put_bindings(
    State(gw): State<Arc<Gateway>>,
    Path(user): Path<String>,
    ApiJson(bindings): ApiJson<Bindings>,
) -> Result<Json<Bindings>, ApiError> {
    check_ids(&[&user])?;
    let apps = &gw.config.channels.wechat.apps;
    if let Some(unknown) = bindings
        .wechat
        .keys()
        .find(|name| !apps.iter().any(|app| &app.name == *name))
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            format!("no WeChat app named {unknown:?} in channels.wechat.apps"),
        ));
    }
    gw.notifications
        .ledger
        .set_bindings(&user, &bindings)
        .await?;
    Ok(Json(bindings))
}

/// WeChat's signature on a callback: `signature`, `timestamp` and `nonce` in the query.
#[derive(Deserialize)]
pub struct CallbackSignature {
    signature: Option<String>,
    timestamp: Option<String>,
    nonce: Option<String>,
}

impl CallbackSignature {
    /// SHA-1 over the token, `timestamp` and `nonce`, sorted and joined, as WeChat signs.
    fn is_valid(&self, token: &str) -> bool {
        let (Some(signature), Some(timestamp), Some(nonce)) =
            (&self.signature, &self.timestamp, &self.nonce)
        else {
            return false;
        };
        let mut parts = [token, timestamp.as_str(), nonce.as_str()];
        parts.sort_unstable();
        let digest = Sha1::digest(parts.concat().as_bytes());
        hex::encode(digest).eq_ignore_ascii_case(signature)
    }
}

/// WeChat's `TEMPLATESENDJOBFINISH` event: a template message sent earlier was delivered, or
/// not. WeChat wants `success` back whatever the event was (other events come here too).
pub async fn wechat_callback(
    State(gw): State<Arc<Gateway>>,
    ApiQuery(signed): ApiQuery<CallbackSignature>,
    body: String,
) -> Result<&'static str, ApiError> {
    if let Some(token) = &gw.config.channels.wechat.callback_token {
        if !signed.is_valid(token) {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                "missing or wrong WeChat signature",
            ));
        }
    }
    Ok(record_job_finish(&gw, &body).await)
}

async fn record_job_finish(gw: &Gateway, body: &str) -> &'static str {
    let Some(finish) = parse_job_finish(body) else {
        return "success";
    };
    let ledger = &gw.notifications.ledger;
    let found = match ledger.by_provider_id(&finish.msgid).await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(msgid = %finish.msgid, "delivery report not recorded: {e}");
            return "success";
        }
    };
    let Some((id, route)) = found else {
        tracing::debug!(msgid = %finish.msgid, "delivery report for an unknown message");
        return "success";
    };
    let Ok(Some(record)) = ledger.record(&id).await else {
        return "success";
    };
    let mut state = record
        .routes
        .get(&route)
        .cloned()
        .unwrap_or_else(|| RouteState::new(Status::Sent, None));
    (state.status, state.detail) = match finish.status {
        JobStatus::Delivered => (
            Status::Delivered,
            finish.reach.map(|r| {
                format!(
                    "sent to {} of {} followers, {} failed",
                    r.sent, r.total, r.errors
                )
            }),
        ),
        JobStatus::UserBlock => (Status::Failed, Some("user block".into())),
        JobStatus::SystemFailed => (Status::Failed, Some("system failed".into())),
        JobStatus::Other(other) => (Status::Failed, Some(other)),
    };
    if let Err(e) = ledger.set_route(&id, route, state).await {
        tracing::warn!(msgid = %finish.msgid, "delivery report not recorded: {e}");
    }
    "success"
}
