//! A user's history and the user's right to be forgotten: read the log (or, for operators, the
//! latest entries' metadata), delete the user, delete a conversation.

use super::devices::{check_ids, revoke_now};
use super::error::ApiError;
use super::json::ApiQuery;
use super::state::Api;
use crate::store::revocations::Revoked;
use crate::store::EntryKind;
use axum::extract::Path;
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Messages after this sequence; from the oldest kept when absent.
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
}

#[derive(Serialize)]
pub struct History {
    user: String,
    epoch: String,
    /// The oldest sequence kept.
    first_seq: u64,
    /// The newest sequence given out.
    last_seq: u64,
    /// The messages as stored: each is what a sync page holds.
    messages: Vec<Box<RawValue>>,
    /// The highest sequence this answer covers: ask again with `after` set to it while `more`.
    to_seq: u64,
    more: bool,
}

pub async fn history(
    State(api): State<Api>,
    Path(user): Path<String>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Json<History>, ApiError> {
    check_ids(&[&user])?;
    let limit = read_limit(&api, query.limit)?;
    let head = api.store.head(&user).await?;
    let page = api.store.read(&user, query.after, limit).await?;
    let to_seq = if page.covered_to == query.after {
        head.last_seq.max(query.after)
    } else {
        page.covered_to
    };
    Ok(Json(History {
        user,
        epoch: head.epoch,
        first_seq: head.first_seq,
        last_seq: head.last_seq,
        messages: (page.entries.iter())
            .map(|entry| entry.json().map(RawValue::to_owned))
            .collect::<Result<_, _>>()?,
        to_seq,
        more: to_seq < head.last_seq,
    }))
}

/// A read's `limit`, the sync page size when absent.
fn read_limit(api: &Api, limit: Option<usize>) -> Result<usize, ApiError> {
    let max = api.config.roaming.max_read_limit;
    match limit.unwrap_or(api.config.roaming.page_size) {
        limit @ 1.. if limit <= max => Ok(limit),
        _ => Err(ApiError::invalid(format!(
            "limit must be between 1 and {max} (roaming.max_read_limit)"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecentQuery {
    limit: Option<usize>,
}

#[derive(Serialize)]
pub struct Recent {
    user: String,
    epoch: String,
    first_seq: u64,
    last_seq: u64,
    /// Newest first.
    entries: Vec<EntrySummary>,
}

/// An entry of a log as an operator sees it: who, when, what kind and how big; the body only
/// with `web.show_bodies`.
#[derive(Serialize)]
pub struct EntrySummary {
    seq: u64,
    ts: u64,
    id: String,
    kind: EntryKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    from_device: Option<String>,
    /// The body's size as JSON, in bytes.
    bytes: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<serde_json::Value>,
}

/// The latest `limit` entries of the user's log (the sync page size when absent), newest
/// first, as metadata: what the console shows of a user without reading people's messages.
pub async fn recent(
    State(api): State<Api>,
    Path(user): Path<String>,
    ApiQuery(query): ApiQuery<RecentQuery>,
) -> Result<Json<Recent>, ApiError> {
    check_ids(&[&user])?;
    let limit = read_limit(&api, query.limit)?;
    let head = api.store.head(&user).await?;
    let after = head
        .last_seq
        .saturating_sub(limit as u64)
        .max(head.first_seq.saturating_sub(1));
    let page = api.store.read(&user, after, limit).await?;
    let show_bodies = api.config.web.show_bodies;
    let mut entries = Vec::with_capacity(page.entries.len());
    for entry in page.entries.iter().rev() {
        let message = entry.message()?;
        entries.push(EntrySummary {
            seq: message.seq,
            ts: message.ts,
            id: message.id,
            kind: entry.kind,
            from: message.from,
            from_device: message.from_device,
            bytes: message.body.to_string().len(),
            body: show_bodies.then_some(message.body),
        });
    }
    Ok(Json(Recent {
        user,
        epoch: head.epoch,
        first_seq: head.first_seq,
        last_seq: head.last_seq,
        entries,
    }))
}

#[derive(Serialize)]
pub struct Deleted {
    deleted: String,
}

/// Deletes everything kept for the user: log, cursors, presence, known devices, notification
/// preferences, bindings, dedup claims, queued pushes and notification records. The user's tokens are revoked first
/// and the user's online sessions logged out on every node, and waited for, before anything is
/// deleted; the revocation itself is kept, so the deleted user's tokens stay refused.
pub async fn delete_user(
    State(api): State<Api>,
    Path(user): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    check_ids(&[&user])?;
    // Revoked first, so no device of the user signs in again while the rest goes, on any node.
    revoke_now(&api, Revoked::User(&user)).await?;
    // The user's connections end first, without a will or a kept session, and their last
    // writes (a cursor, a session) land before the deletion, so none of it comes back.
    api.registry
        .forget_user(&user, "account deleted")
        .await
        .map_err(|e| ApiError::unavailable(format!("cannot forget the user's devices: {e:#}")))?;
    api.store.delete_user(&user).await?;
    api.notifications.ledger.delete_user(&user).await?;
    tracing::info!(%user, "user deleted");
    Ok(Json(Deleted { deleted: user }))
}

#[derive(Serialize)]
pub struct LoggedOut {
    user: String,
    /// Tokens signed up to this moment (ms since the Unix epoch) are refused.
    revoked_until: u64,
    /// The devices logged out that were online.
    devices: Vec<String>,
}

/// Logs the user out everywhere: every token signed until now is refused on every node, and
/// every online device is kicked with `reason` (the default says why in words an app can show).
pub async fn logout(
    State(api): State<Api>,
    Path(user): Path<String>,
    ApiQuery(query): ApiQuery<LogoutQuery>,
) -> Result<Json<LoggedOut>, ApiError> {
    check_ids(&[&user])?;
    let revoked_until = revoke_now(&api, Revoked::User(&user)).await?;
    let reason = query
        .reason
        .unwrap_or_else(|| "logged out on all devices".to_string());
    let mut devices = Vec::new();
    for online in api.registry.devices_everywhere(&user).await? {
        if api
            .registry
            .kick_anywhere(&user, &online.device, &reason)
            .await?
        {
            devices.push(online.device);
        }
    }
    Ok(Json(LoggedOut {
        user,
        revoked_until,
        devices,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogoutQuery {
    /// Shown to the user of each kicked device.
    reason: Option<String>,
}

/// Deletes the direct messages between two users from both their logs: hidden at once, removed
/// from disk by the sweeper within `roaming.sweep_interval`.
pub async fn delete_contact(
    State(api): State<Api>,
    Path((user, other)): Path<(String, String)>,
) -> Result<Json<Deleted>, ApiError> {
    check_ids(&[&user, &other])?;
    api.store.forget_contact(&user, &other).await?;
    Ok(Json(Deleted {
        deleted: format!("{user}/contacts/{other}"),
    }))
}
