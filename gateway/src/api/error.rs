//! HTTP errors: a status and a JSON body `{"error": {"code", "message"}}` with a protocol error
//! code, and `Retry-After` when the client is to wait.

use crate::infra::token_bucket::millis_up;
use crate::store::StoreError;
use axum::extract::rejection::JsonRejection;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use protocol::error_code::ErrorBody;
use protocol::ErrorCode;
use std::time::Duration;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
    /// Seconds for `Retry-After`.
    retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody::new(code, message),
            retry_after: None,
        }
    }

    /// 429: the API key used up its bucket (`rate_limits.api_key`). `Retry-After` has whole
    /// seconds, rounded up so a client that keeps to it is not refused again; the body has
    /// the milliseconds.
    pub fn rate_limited(retry_after: Duration) -> Self {
        let millis = millis_up(retry_after);
        let mut error = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            format!("too many requests with this API key; retry in {millis} ms"),
        );
        error.body.error.retry_after_ms = Some(millis);
        error.retry_after = Some(millis.div_ceil(1000));
        error
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            message,
        )
    }
}

impl ApiError {
    /// The JSON body alone: one item's error inside a batch's answer.
    pub fn into_body(self) -> ErrorBody {
        self.body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(_) => Self::unavailable(format!(
                "{error}; retry later (with the same Idempotency-Key it is stored once)"
            )),
            StoreError::Unreadable(_) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                error.to_string(),
            ),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            ErrorCode::TooLarge
        } else {
            ErrorCode::BadJson
        };
        Self::new(status, code, rejection.body_text())
    }
}
