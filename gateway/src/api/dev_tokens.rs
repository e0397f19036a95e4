//! `POST /dev/tokens`: in dev mode (`web.dev_mode`) the demo page signs itself in as any user
//! and device, without the API key, so the quick start needs no backend. Outside dev mode it is
//! refused, and says where tokens come from instead.

use super::error::ApiError;
use super::json::ApiJson;
use super::state::Api;
use super::tokens::{self, TokenRequest, TokenResponse};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use protocol::ErrorCode;

pub async fn issue(
    State(api): State<Api>,
    ApiJson(request): ApiJson<TokenRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    if !api.config.web.dev_mode() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "dev mode is off (web.dev_mode): device tokens come from POST /v1/tokens with the API key",
        ));
    }
    tokens::issue(State(api), ApiJson(request)).await
}
