//! A user's devices: list, kick, and approve or deny a new device.

use super::error::ApiError;
use super::json::{ApiJson, ApiQuery};
use crate::gateway::Gateway;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use protocol::envelope::DeviceInfo;
use protocol::topics::is_valid_id;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

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
    State(gw): State<Arc<Gateway>>,
    Path(user): Path<String>,
) -> Result<Json<DeviceList>, ApiError> {
    check_ids(&[&user])?;
    let devices = match &gw.cluster {
        Some(cluster) => cluster.devices(&user).await?,
        None => gw.sessions.devices(&user),
    };
    Ok(Json(DeviceList { user, devices }))
}

#[derive(Deserialize)]
pub struct KickQuery {
    /// Shown to the user of the kicked device.
    reason: Option<String>,
}

pub async fn kick(
    State(gw): State<Arc<Gateway>>,
    Path((user, device)): Path<(String, String)>,
    ApiQuery(query): ApiQuery<KickQuery>,
) -> Result<StatusCode, ApiError> {
    check_ids(&[&user, &device])?;
    let reason = query
        .reason
        .unwrap_or_else(|| "logged out by the service".to_string());
    let kicked = match &gw.cluster {
        _ if gw.sessions.kick(&user, &device, &reason) => true,
        Some(cluster) => cluster.kick_elsewhere(&user, &device, &reason).await?,
        None => false,
    };
    if kicked {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "{user}/{device} is not online"
        )))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRequest {
    approve: bool,
}

pub async fn approve(
    State(gw): State<Arc<Gateway>>,
    Path((user, device)): Path<(String, String)>,
    ApiJson(request): ApiJson<ApprovalRequest>,
) -> Result<StatusCode, ApiError> {
    check_ids(&[&user, &device])?;
    gw.sessions
        .decide(&user, &device, request.approve, None)
        .map_err(|e| ApiError::not_found(e.to_string()))?;
    Ok(StatusCode::NO_CONTENT)
}
