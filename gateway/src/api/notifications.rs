//! Notifications from the backend, their status, and the users' notification preferences
//! (quiet hours, consent, channel bindings).

use super::devices::check_ids;
use super::error::ApiError;
use super::json::{ApiJson, ApiQuery};
use super::state::Api;
use crate::channel::wechat::callback::{parse_job_finish, CallbackRefusal, CallbackSignature};
use crate::notify::input::NotificationInput;
use crate::notify::model::Preferences;
use crate::notify::quiet_hours;
use crate::notify::router::RouteError;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use protocol::error_code::ErrorBody;
use protocol::notification::{Bindings, Consent, QuietHours, Record, Route, RouteState};
use protocol::ErrorCode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
    State(api): State<Api>,
    ApiJson(input): ApiJson<NotificationInput>,
) -> Result<(StatusCode, Json<Routed>), ApiError> {
    let notification = input.into_notification().map_err(ApiError::invalid)?;
    let record = api.notifications.submit(notification).await?;
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
    pub(crate) notifications: Vec<NotificationInput>,
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
    State(api): State<Api>,
    ApiJson(batch): ApiJson<Batch>,
) -> Result<(StatusCode, Json<BatchAnswer>), ApiError> {
    let most = api.config.notify.max_per_request;
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
    let mut routed = api.notifications.submit_all(valid).await.into_iter();
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

pub async fn get(State(api): State<Api>, Path(id): Path<String>) -> Result<Json<Record>, ApiError> {
    match api.notifications.ledger.record(&id).await? {
        Some(record) => Ok(Json(record)),
        None => Err(ApiError::not_found(format!("no notification {id:?}"))),
    }
}

/// The user's quiet hours, consent and bindings, as the router sees them.
pub async fn get_preferences(
    State(api): State<Api>,
    Path(user): Path<String>,
) -> Result<Json<Preferences>, ApiError> {
    check_ids(&[&user])?;
    let kept = api.notifications.ledger.preferences(&[user]).await?;
    Ok(Json(
        kept.first().map(|p| (**p).clone()).unwrap_or_default(),
    ))
}

pub async fn put_quiet_hours(
    State(api): State<Api>,
    Path(user): Path<String>,
    ApiJson(hours): ApiJson<QuietHours>,
) -> Result<Json<QuietHours>, ApiError> {
    check_ids(&[&user])?;
    quiet_hours::validate(&hours).map_err(|e| ApiError::invalid(e.to_string()))?;
    api.notifications
        .ledger
        .set_quiet_hours(&user, &hours)
        .await?;
    Ok(Json(hours))
}

pub async fn put_consent(
    State(api): State<Api>,
    Path(user): Path<String>,
    ApiJson(consent): ApiJson<Consent>,
) -> Result<Json<Consent>, ApiError> {
    check_ids(&[&user])?;
    api.notifications
        .ledger
        .set_consent(&user, &consent)
        .await?;
    Ok(Json(consent))
}

pub async fn put_bindings(
    State(api): State<Api>,
    Path(user): Path<String>,
    ApiJson(bindings): ApiJson<Bindings>,
) -> Result<Json<Bindings>, ApiError> {
    check_ids(&[&user])?;
    let apps = &api.config.channels.wechat.apps;
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
    api.notifications
        .ledger
        .set_bindings(&user, &bindings)
        .await?;
    Ok(Json(bindings))
}

/// WeChat's `TEMPLATESENDJOBFINISH` and `MASSSENDJOBFINISH` events: a message sent earlier
/// was delivered, or not. WeChat wants `success` back whatever the event was (other events come
/// here too), and whether it could be recorded.
pub async fn wechat_callback(
    State(api): State<Api>,
    ApiQuery(signed): ApiQuery<CallbackSignature>,
    body: String,
) -> Result<&'static str, ApiError> {
    let opened = match &api.wechat_callbacks {
        Some(guard) => guard
            .admit(&signed, crate::infra::time::unix_seconds())
            .and_then(|()| guard.open(&signed, body)),
        None => Err(CallbackRefusal::NotConfigured),
    };
    let body = opened.map_err(|refusal| {
        let (status, code) = match refusal {
            CallbackRefusal::NotConfigured => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            CallbackRefusal::TooMany => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable),
            CallbackRefusal::NotEncrypted | CallbackRefusal::Undecryptable => {
                (StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest)
            }
            _ => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized),
        };
        ApiError::new(status, code, refusal.to_string())
    })?;
    if let Some(finish) = parse_job_finish(&body) {
        let msgid = finish.msgid.clone();
        if let Err(e) = api.notifications.record_delivery_report(finish).await {
            tracing::warn!(%msgid, "delivery report not recorded: {e}");
        }
    }
    Ok("success")
}
