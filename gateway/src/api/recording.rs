//! Recording the backend's traffic-carrying API calls (`POST /v1/messages`,
//! `POST /v1/notifications`) when `record.path` is set: one layer in front of their handlers,
//! which keeps the body as it came and records the call once it was answered 2xx, so that a
//! replay sends only calls the gateway accepted. The bearer key is checked before this layer and
//! never recorded.

use super::error::ApiError;
use super::state::Api;
use axum::body::Body;
use axum::extract::State;
use axum::extract::{OriginalUri, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use protocol::recording::Event;
use protocol::ErrorCode;

pub async fn record_call(State(api): State<Api>, request: Request, next: Next) -> Response {
    let Some(recorder) = api.recorder.clone() else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let limit = api.config.limits.http_max_body;
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            format!("the body is over limits.http_max_body ({limit} bytes) or was cut short"),
        )
        .into_response();
    };
    // Inside `/v1` the router sees the path without its prefix; the recording keeps the whole.
    let path = match parts.extensions.get::<OriginalUri>() {
        Some(OriginalUri(uri)) => uri.path().to_string(),
        None => parts.uri.path().to_string(),
    };
    let method = parts.method.to_string();
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes.clone())))
        .await;
    if response.status().is_success() {
        recorder.record(Event::Api {
            method,
            path,
            body: recorder.payload(&bytes),
        });
    }
    response
}
