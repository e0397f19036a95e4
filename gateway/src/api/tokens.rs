//! `POST /v1/tokens`: the app backend issues a device token when its user logs in.

use super::error::ApiError;
use super::json::ApiJson;
use super::state::Api;
use crate::auth::token::{DeviceClaims, TokenSigner};
use crate::store::revocations::LONGEST_TOKEN_LIFE;
use axum::extract::State;
use axum::Json;
use protocol::envelope::Platform;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    user: String,
    device: String,
    #[serde(default = "default_platform")]
    platform: Platform,
    /// A duration such as `24h` or `30m`; the configured default when absent.
    ttl: Option<String>,
}

impl TokenRequest {
    /// The token asked for, valid for the request's `ttl` or else `default_ttl`.
    pub(crate) fn sign(
        &self,
        signer: &TokenSigner,
        default_ttl: Duration,
    ) -> Result<(String, DeviceClaims), ApiError> {
        let ttl = match &self.ttl {
            Some(text) => parse_ttl(text).map_err(ApiError::invalid)?,
            None => default_ttl,
        };
        signer
            .sign(&self.user, &self.device, self.platform, ttl)
            .map_err(|e| ApiError::invalid(e.to_string()))
    }
}

fn default_platform() -> Platform {
    Platform::Android
}

#[derive(Serialize)]
pub struct TokenResponse {
    token: String,
    /// Milliseconds since the Unix epoch.
    expires_at: u64,
}

pub async fn issue(
    State(api): State<Api>,
    ApiJson(request): ApiJson<TokenRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let (token, claims) = request.sign(&api.auth.signer, api.config.auth.default_token_ttl)?;
    Ok(Json(TokenResponse {
        token,
        expires_at: claims.exp * 1000,
    }))
}

/// Parses a token lifetime such as `24h`; shared with `gateway token --ttl`.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(text).map_err(|e| format!("ttl {text:?}: {e}"))?;
    // Expiry is kept in whole seconds: a token for less than one would be expired when issued.
    if ttl < Duration::from_secs(1) || ttl > LONGEST_TOKEN_LIFE {
        let longest = humantime::format_duration(LONGEST_TOKEN_LIFE);
        return Err(format!("ttl {text:?} must be between 1s and {longest}"));
    }
    Ok(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `http_bodies` fuzz target: `POST /v1/tokens` with a `ttl` under a second
    /// issued a token that had expired already (its expiry is in whole seconds).
    #[test]
    fn a_ttl_under_a_second_is_refused() {
        crate::fuzzing::http_bodies(
            b"\x04\x01{\"user\":\"bob\",\"device\":\"web-bbbbbb1\",\"ttl\":\"3us\"}",
        );
        for ttl in ["3us", "999ms", "0s"] {
            assert!(parse_ttl(ttl).is_err(), "{ttl}");
        }
        assert_eq!(parse_ttl("1s"), Ok(Duration::from_secs(1)));
    }
}
