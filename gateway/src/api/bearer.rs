//! `Authorization: Bearer <api key>` on every `/v1` route, and the key's rate limit.

use super::error::ApiError;
use super::state::Api;
use crate::infra::rate_limiter::NoToken;
use crate::observe::metrics::RateLimited;
use axum::extract::Request;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use protocol::ErrorCode;

pub async fn require_api_key(
    State(api): State<Api>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented.map(|key| api.auth.api_keys.position(key)) {
        Some(Some(key)) => {
            if let Some(rates) = &api.key_rates {
                rates.take(key).await.map_err(|no_token| match no_token {
                    NoToken::Wait(retry_after) => {
                        api.metrics.rate_limit(RateLimited::api_key);
                        ApiError::rate_limited(retry_after)
                    }
                    NoToken::Unavailable(e) => ApiError::unavailable(format!(
                        "the shared rate limit cannot be checked ({e}); retry later"
                    )),
                })?;
            }
            Ok(next.run(request).await)
        }
        Some(None) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "unknown API key",
        )),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "send Authorization: Bearer <api key> (gateway api-key prints it)",
        )),
    }
}
