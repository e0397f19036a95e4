//! Every HTTP request must be answered within `limits.http_request_timeout`, its body included:
//! the headers have their own timeout in the HTTP listener, but a client that sends them and
//! then trickles its body (the WeChat callback needs no key, so it is the first a stranger would
//! try) would otherwise hold a connection and its task as long as it likes.

use super::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use protocol::ErrorCode;
use std::time::Duration;

/// Runs the request within `limit`; past it, 408 with a JSON body, and the connection closes
/// (what is left of the body is never read).
pub async fn within(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            let message = format!(
                "the request was not complete within limits.http_request_timeout ({})",
                humantime::format_duration(limit)
            );
            let mut response =
                ApiError::new(StatusCode::REQUEST_TIMEOUT, ErrorCode::Timeout, message)
                    .into_response();
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}
