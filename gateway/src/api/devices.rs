//! A user's devices: list, kick, and approve or deny a new device.

use super::error::ApiError;
use super::json::{ApiJson, ApiQuery};
use super::state::Api;
use crate::infra::time::unix_millis;
use crate::live::registry::DecisionError;
use crate::store::revocations::Revoked;
use axum::extract::Path;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use protocol::envelope::DeviceInfo;
use protocol::topics::is_valid_id;
use serde::{Deserialize, Serialize};

#[derive(Serialize)]
pub struct DeviceList {
    user: String,
    devices: Vec<DeviceInfo>,
}

pub fn check_ids(ids: &[&str]) -> Result<(), ApiError> {
    match ids.iter().find(|id| !is_valid_id(id)) {
        Some(bad) => Err(ApiError::invalid(format!("{bad:?} is not a valid id"))),
        None => Ok(()),
    }
}

pub async fn list(
    State(api): State<Api>,
    Path(user): Path<String>,
) -> Result<Json<DeviceList>, ApiError> {
    check_ids(&[&user])?;
    let devices = api.registry.devices_everywhere(&user).await?;
    Ok(Json(DeviceList { user, devices }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KickQuery {
    /// Shown to the user of the kicked device.
    reason: Option<String>,
    /// Also refuse the tokens the device holds, on every node, so it must sign in again.
    #[serde(default)]
    revoke: bool,
}

/// Logs a device out. With `revoke=true` its tokens are refused from now on, and the answer is
/// 204 whether or not it was online; without, a device that is not online is 404.
pub async fn kick(
    State(api): State<Api>,
    Path((user, device)): Path<(String, String)>,
    ApiQuery(query): ApiQuery<KickQuery>,
) -> Result<StatusCode, ApiError> {
    check_ids(&[&user, &device])?;
    let reason = query
        .reason
        .unwrap_or_else(|| "logged out by the service".to_string());
    if query.revoke {
        revoke_now(
            &api,
            Revoked::Device {
                user: &user,
                device: &device,
            },
        )
        .await?;
    }
    let kicked = api.registry.kick_anywhere(&user, &device, &reason).await?;
    if kicked || query.revoke {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "{user}/{device} is not online"
        )))
    }
}

/// Refuses, from now on, the tokens signed until now for `whose`; returns the moment.
pub async fn revoke_now(api: &Api, whose: Revoked<'_>) -> Result<u64, ApiError> {
    let moment = unix_millis();
    api.store.revoke(whose, moment).await?;
    tracing::info!(?whose, "tokens revoked");
    Ok(moment)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRequest {
    approve: bool,
}

pub async fn approve(
    State(api): State<Api>,
    Path((user, device)): Path<(String, String)>,
    ApiJson(request): ApiJson<ApprovalRequest>,
) -> Result<StatusCode, ApiError> {
    check_ids(&[&user, &device])?;
    api.registry
        .decide(&user, &device, request.approve, None)
        .await
        .map_err(|e| match e {
            DecisionError::NotPending => ApiError::not_found(e.to_string()),
            DecisionError::Unavailable(why) => ApiError::unavailable(why),
        })?;
    Ok(StatusCode::NO_CONTENT)
}
