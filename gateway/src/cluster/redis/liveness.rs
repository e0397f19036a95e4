//! Liveness: each node renews its key every `store.node_heartbeat`; a node whose key expired
//! is dead, and the first node to notice marks its devices offline.

use super::keys::{alive_key, devices_key, presence_key, NODES, SET_OFFLINE};
use crate::cluster::NodeHealth;
use crate::infra::redis::bounded;
use crate::infra::redis::Redis;
use crate::live::registry::Registry;
use crate::store::StoreError;
use protocol::envelope::PresenceEvent;
use std::time::Duration;

/// Renews `node`'s liveness key (alive for `timeout`) and membership.
pub(super) async fn renew(redis: &Redis, node: &str, timeout: Duration) -> Result<(), StoreError> {
    let mut redis = redis.clone();
    bounded(
        redis::pipe()
            .cmd("SET")
            .arg(alive_key(node))
            .arg(1)
            .arg("PX")
            .arg(timeout.as_millis() as u64)
            .ignore()
            .cmd("SADD")
            .arg(NODES)
            .arg(node)
            .ignore()
            .exec_async(&mut redis),
    )
    .await?;
    Ok(())
}

/// The nodes that joined and were not reaped yet, each with whether its liveness key is there.
pub(super) async fn nodes(redis: &Redis, me: &str) -> Result<Vec<NodeHealth>, StoreError> {
    let mut redis = redis.clone();
    let mut names: Vec<String> =
        bounded(redis::cmd("SMEMBERS").arg(NODES).query_async(&mut redis)).await?;
    if names.is_empty() {
        return Ok(Vec::new());
    }
    names.sort();
    let mut alive = redis::pipe();
    for node in &names {
        alive.cmd("EXISTS").arg(alive_key(node));
    }
    let alive: Vec<bool> = bounded(alive.query_async(&mut redis)).await?;
    Ok(names
        .into_iter()
        .zip(alive)
        .map(|(node, alive)| NodeHealth {
            this: node == me,
            node,
            alive,
        })
        .collect())
}

/// Marks the devices of dead nodes offline, each dead node once (under a short lock), and tells
/// their users' other devices through `registry`.
pub(super) async fn reap(
    redis: &Redis,
    me: &str,
    timeout: Duration,
    registry: &Registry,
) -> Result<(), StoreError> {
    let mut redis = redis.clone();
    let nodes: Vec<String> =
        bounded(redis::cmd("SMEMBERS").arg(NODES).query_async(&mut redis)).await?;
    for node in nodes.into_iter().filter(|n| n != me) {
        let alive: bool = bounded(
            redis::cmd("EXISTS")
                .arg(alive_key(&node))
                .query_async(&mut redis),
        )
        .await?;
        if alive {
            continue;
        }
        let locked: Option<String> = bounded(
            redis::cmd("SET")
                .arg(format!("gw:node:{node}:reaper"))
                .arg(me)
                .arg("NX")
                .arg("PX")
                .arg(timeout.as_millis() as u64)
                .query_async(&mut redis),
        )
        .await?;
        if locked.is_none() {
            continue;
        }
        let devices: Vec<String> = bounded(
            redis::cmd("SMEMBERS")
                .arg(devices_key(&node))
                .query_async(&mut redis),
        )
        .await?;
        for member in &devices {
            let Some((user, device)) = member.split_once('\0') else {
                continue;
            };
            let removed: i64 = bounded(
                SET_OFFLINE
                    .key(presence_key(user))
                    .arg(device)
                    .arg(&node)
                    .invoke_async(&mut redis),
            )
            .await?;
            if removed == 1 {
                registry.announce_elsewhere(
                    user,
                    &PresenceEvent::Offline {
                        device: device.to_string(),
                        reason: format!("node {node} stopped answering"),
                    },
                );
            }
        }
        bounded(
            redis::pipe()
                .cmd("DEL")
                .arg(devices_key(&node))
                .ignore()
                .cmd("SREM")
                .arg(NODES)
                .arg(&node)
                .ignore()
                .exec_async(&mut redis),
        )
        .await?;
        tracing::warn!(%node, devices = devices.len(), "node is gone; its devices are offline");
    }
    Ok(())
}
