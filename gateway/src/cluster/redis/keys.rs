//! What the nodes keep in Redis and send each other: keys, presence entries, relayed items
//! and the presence scripts.

use bytes::Bytes;
use protocol::envelope::DeviceInfo;
use redis::Script;
use serde::{Deserialize, Serialize};
use std::sync::LazyLock;
use tokio::sync::oneshot;

pub(super) const NODES: &str = "gw:nodes";

/// Most outgoing items handled in one batch.
pub(super) const RELAY_BATCH: usize = 512;

pub(super) fn presence_key(user: &str) -> String {
    format!("gw:{{{user}}}:presence")
}

pub(super) fn alive_key(node: &str) -> String {
    format!("gw:node:{node}:alive")
}

pub(super) fn devices_key(node: &str) -> String {
    format!("gw:node:{node}:devices")
}

pub(super) fn channel(node: &str) -> String {
    format!("gw:node:{node}")
}

/// A device in `gw:{user}:presence`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct PresenceEntry {
    pub node: String,
    pub info: DeviceInfo,
}

/// What is published on a node's channel: a [`Relayed`] and when it was sent, sealed with the
/// at-rest key ring the nodes share (associated data [`RELAY_AAD`]). Whoever can write to Redis
/// but holds no key can neither read relays nor make one a node would act on; a captured relay
/// is acted on again only within [`RELAY_MAX_AGE`].
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Envelope {
    pub at_ms: u64,
    pub relayed: Relayed,
}

pub(super) const RELAY_AAD: &[u8] = b"gw relay";

/// How old (or how far ahead, between clocks) a relay may be and still be acted on.
pub(super) const RELAY_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(60);

/// What one node sends another on its channel.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum Relayed {
    /// Publish on a topic of one of the node's users; `seq` when it is an entry of the user's
    /// log.
    Publish {
        topic: String,
        payload: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    /// A device of the node's connected elsewhere: close the session here.
    TakeOver { user: String, device: String },
    /// A user whose devices the node holds was deleted: close their connections.
    ForgetUser { user: String },
    /// The backend logs a device of the node's out.
    Kick {
        user: String,
        device: String,
        reason: String,
    },
    /// A device of the node's waiting for approval was approved or denied elsewhere.
    Decide {
        user: String,
        device: String,
        approve: bool,
        by: Option<String>,
    },
}

/// Work for the outgoing task, done in order.
pub(super) enum Outgoing {
    ToUser {
        user: String,
        topic: String,
        payload: Bytes,
        seq: Option<u64>,
    },
    Online {
        user: String,
        info: DeviceInfo,
    },
    Offline {
        user: String,
        device: String,
    },
    /// Everything before was handed on: answer.
    Flush(oneshot::Sender<()>),
}

/// Sets the device online here; returns the node that held it before, when another one did.
/// KEYS: the user's presence. ARGV: device, presence entry, this node. (The node's set of
/// devices is another slot's key: it is updated beside the script.)
pub(super) static SET_ONLINE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local before = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if before then
  local node = cjson.decode(before).node
  if node ~= ARGV[3] then return node end
end
return false
",
    )
});

/// Removes the device from presence if `node` still holds it; returns 1 when it did. KEYS: the
/// user's presence. ARGV: device, node.
pub(super) static SET_OFFLINE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current and cjson.decode(current).node == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
",
    )
});
