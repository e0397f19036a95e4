//! Several gateway nodes sharing one Redis, as one service.
//!
//! - **Presence**: each online device is in `gw:{user}:presence` (device → its node and
//!   [`DeviceInfo`]), and in its node's set `gw:node:{node}:devices`, so any node lists a user's
//!   devices on every node, and the devices of a node that died can be found and marked offline.
//! - **Liveness**: each node renews `gw:node:{node}:alive` (with a TTL of `store.node_timeout`)
//!   every `store.node_heartbeat` and is a member of `gw:nodes`. A node whose key expired is dead:
//!   the first node to notice takes a short lock, removes the dead node's devices from presence and
//!   tells their users' other devices they went offline.
//! - **Delivery**: each node subscribes to its own channel `gw:node:{node}`. What is published to a
//!   user's topic (a committed message, a presence event, a reply) goes to the local hub and, on
//!   the channels of the other nodes that hold devices of that user, to theirs — addressed, never
//!   broadcast to every node.
//! - **Takeover across nodes**: a device that connects to node B while node A still holds it is
//!   taken over: B tells A to close its session. A kick over HTTP on any node reaches the node that
//!   holds the device the same way.
//!
//! Outgoing work (presence updates, relays) goes through one task in order, batched: a burst of
//! messages costs one lookup round trip and one publish round trip per batch. While Redis is
//! away the work is logged and dropped — live delivery across nodes is best effort, the log is
//! not: every device catches up on its next sync.

use crate::gateway::Gateway;
use crate::session_handle::Qos;
use crate::store::redis::{bounded, connect};
use bytes::Bytes;
use futures_util::StreamExt;
use protocol::envelope::{DeviceInfo, PresenceEvent};
use redis::aio::ConnectionManager;
use redis::Script;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::sync::mpsc;

const NODES: &str = "gw:nodes";

/// Most outgoing items handled in one batch.
const RELAY_BATCH: usize = 512;

fn presence_key(user: &str) -> String {
    format!("gw:{{{user}}}:presence")
}

fn alive_key(node: &str) -> String {
    format!("gw:node:{node}:alive")
}

fn devices_key(node: &str) -> String {
    format!("gw:node:{node}:devices")
}

fn channel(node: &str) -> String {
    format!("gw:node:{node}")
}

/// A device in `gw:{user}:presence`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PresenceEntry {
    node: String,
    info: DeviceInfo,
}

/// What one node sends another on its channel.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Relayed {
    /// Publish on a topic of one of the node's users.
    Publish { topic: String, payload: String },
    /// A device of the node's connected elsewhere: close the session here.
    TakeOver { user: String, device: String },
    /// The backend logs a device of the node's out.
    Kick {
        user: String,
        device: String,
        reason: String,
    },
}

/// Work for the outgoing task, done in order.
enum Outgoing {
    ToUser {
        user: String,
        topic: String,
        payload: Bytes,
    },
    Online {
        user: String,
        info: DeviceInfo,
    },
    Offline {
        user: String,
        device: String,
    },
}

/// Sets the device online here; returns the node that held it before, when another one did.
static SET_ONLINE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local before = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
if before then
  local node = cjson.decode(before).node
  if node ~= ARGV[4] then return node end
end
return false
",
    )
});

/// Removes the device from presence if `node` still holds it; returns 1 when it did.
static SET_OFFLINE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('SREM', KEYS[2], ARGV[2])
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current and cjson.decode(current).node == ARGV[3] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
",
    )
});

pub struct Cluster {
    node: String,
    url: String,
    redis: ConnectionManager,
    outgoing: mpsc::UnboundedSender<Outgoing>,
    heartbeat: Duration,
    timeout: Duration,
}

impl Cluster {
    /// Joins the nodes sharing the Redis at `config.redis_url`, as `config.node_id` (or a random
    /// name), and starts the outgoing task.
    pub async fn join(config: &broker_config::Store) -> anyhow::Result<Arc<Self>> {
        let redis = connect(&config.redis_url).await?;
        let node = config
            .node_id
            .clone()
            .unwrap_or_else(|| format!("n{}", crate::store::new_epoch()));
        let (outgoing, queue) = mpsc::unbounded_channel();
        let cluster = Arc::new(Self {
            node,
            url: config.redis_url.clone(),
            redis,
            outgoing,
            heartbeat: config.node_heartbeat,
            timeout: config.node_timeout,
        });
        cluster.renew().await?;
        tokio::spawn(
            Relay {
                cluster: cluster.clone(),
            }
            .run(queue),
        );
        tracing::info!(node = %cluster.node, "joined the cluster");
        Ok(cluster)
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Publishes on a user's topic on the other nodes that hold devices of the user.
    pub fn publish_to_user(&self, user: &str, topic: &str, payload: Bytes) {
        let _ = self.outgoing.send(Outgoing::ToUser {
            user: user.to_string(),
            topic: topic.to_string(),
            payload,
        });
    }

    pub fn device_online(&self, user: &str, info: DeviceInfo) {
        let _ = self.outgoing.send(Outgoing::Online {
            user: user.to_string(),
            info,
        });
    }

    pub fn device_offline(&self, user: &str, device: &str) {
        let _ = self.outgoing.send(Outgoing::Offline {
            user: user.to_string(),
            device: device.to_string(),
        });
    }

    /// The user's online devices on every node.
    pub async fn devices(&self, user: &str) -> Result<Vec<DeviceInfo>, crate::store::StoreError> {
        let mut redis = self.redis.clone();
        let entries: HashMap<String, String> = bounded(
            redis::cmd("HGETALL")
                .arg(presence_key(user))
                .query_async(&mut redis),
        )
        .await?;
        Ok(entries
            .values()
            .filter_map(|entry| serde_json::from_str::<PresenceEntry>(entry).ok())
            .map(|entry| entry.info)
            .collect())
    }

    /// Logs out a device held by another node; false when no node holds it.
    pub async fn kick_elsewhere(
        &self,
        user: &str,
        device: &str,
        reason: &str,
    ) -> Result<bool, crate::store::StoreError> {
        let mut redis = self.redis.clone();
        let entry: Option<String> = bounded(
            redis::cmd("HGET")
                .arg(presence_key(user))
                .arg(device)
                .query_async(&mut redis),
        )
        .await?;
        let Some(entry) = entry.and_then(|e| serde_json::from_str::<PresenceEntry>(&e).ok()) else {
            return Ok(false);
        };
        if entry.node == self.node {
            return Ok(false);
        }
        let kick = Relayed::Kick {
            user: user.to_string(),
            device: device.to_string(),
            reason: reason.to_string(),
        };
        publish(&mut redis, &entry.node, &kick).await?;
        Ok(true)
    }

    /// Forgets a deleted user's presence.
    pub async fn forget_user(&self, user: &str) -> Result<(), crate::store::StoreError> {
        let mut redis = self.redis.clone();
        bounded(
            redis::cmd("DEL")
                .arg(presence_key(user))
                .exec_async(&mut redis),
        )
        .await
    }

    /// Renews this node's liveness key and membership.
    async fn renew(&self) -> Result<(), crate::store::StoreError> {
        let mut redis = self.redis.clone();
        bounded(
            redis::pipe()
                .cmd("SET")
                .arg(alive_key(&self.node))
                .arg(1)
                .arg("PX")
                .arg(self.timeout.as_millis() as u64)
                .ignore()
                .cmd("SADD")
                .arg(NODES)
                .arg(&self.node)
                .ignore()
                .exec_async(&mut redis),
        )
        .await
    }

    /// Keeps this node alive in Redis and reaps dead nodes, every `store.node_heartbeat`.
    pub async fn run_heartbeat(self: Arc<Self>, gw: Arc<Gateway>) {
        let mut every = tokio::time::interval(self.heartbeat);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if let Err(e) = self.renew().await {
                tracing::warn!("cannot renew this node's liveness in Redis: {e}");
                continue;
            }
            if let Err(e) = self.reap(&gw).await {
                tracing::warn!("cannot check the other nodes' liveness: {e}");
            }
        }
    }

    /// Marks the devices of dead nodes offline, each dead node once (under a short lock).
    async fn reap(&self, gw: &Gateway) -> Result<(), crate::store::StoreError> {
        let mut redis = self.redis.clone();
        let nodes: Vec<String> =
            bounded(redis::cmd("SMEMBERS").arg(NODES).query_async(&mut redis)).await?;
        for node in nodes.into_iter().filter(|n| *n != self.node) {
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
                    .arg(&self.node)
                    .arg("NX")
                    .arg("PX")
                    .arg(self.timeout.as_millis() as u64)
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
                        .key(devices_key(&node))
                        .arg(device)
                        .arg(member)
                        .arg(&node)
                        .invoke_async(&mut redis),
                )
                .await?;
                if removed == 1 {
                    gw.sessions.announce_elsewhere(
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

    /// Receives what other nodes send this one, reconnecting while Redis is away.
    pub async fn run_inbound(self: Arc<Self>, gw: Arc<Gateway>) {
        loop {
            if let Err(e) = self.receive(&gw).await {
                tracing::warn!("cluster channel lost: {e}; reconnecting");
            }
            tokio::time::sleep(self.heartbeat).await;
        }
    }

    async fn receive(&self, gw: &Gateway) -> anyhow::Result<()> {
        let client = redis::Client::open(self.url.as_str())?;
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel(&self.node)).await?;
        let mut messages = pubsub.on_message();
        while let Some(message) = messages.next().await {
            let relayed: Relayed = match serde_json::from_slice(message.get_payload_bytes()) {
                Ok(relayed) => relayed,
                Err(e) => {
                    tracing::warn!("unreadable message on the cluster channel: {e}");
                    continue;
                }
            };
            match relayed {
                Relayed::Publish { topic, payload } => {
                    gw.hub
                        .publish(&topic, Bytes::from(payload), Qos::AtLeastOnce, None);
                }
                Relayed::TakeOver { user, device } => {
                    gw.sessions.taken_over_elsewhere(&user, &device);
                }
                Relayed::Kick {
                    user,
                    device,
                    reason,
                } => {
                    gw.sessions.kick(&user, &device, &reason);
                }
            }
        }
        anyhow::bail!("the subscription ended")
    }
}

/// The outgoing task: presence updates and relays, in order, in batches.
struct Relay {
    cluster: Arc<Cluster>,
}

impl Relay {
    async fn run(self, mut queue: mpsc::UnboundedReceiver<Outgoing>) {
        let mut batch = Vec::with_capacity(RELAY_BATCH);
        while queue.recv_many(&mut batch, RELAY_BATCH).await > 0 {
            if let Err(e) = self.handle(&batch).await {
                tracing::warn!(items = batch.len(), "cluster relay failed: {e}");
            }
            batch.clear();
        }
    }

    async fn handle(&self, batch: &[Outgoing]) -> Result<(), crate::store::StoreError> {
        let me = &self.cluster.node;
        let mut redis = self.cluster.redis.clone();
        // Presence changes first come in order with the relays around them: they are applied as
        // the batch is walked, and a relay's lookup happens after the changes before it.
        let mut relays: Vec<(&str, Relayed)> = Vec::new();
        let mut lookups: BTreeSet<&str> = BTreeSet::new();
        for item in batch {
            match item {
                Outgoing::Online { user, info } => {
                    self.flush(&mut redis, &mut lookups, &mut relays).await?;
                    let entry = PresenceEntry {
                        node: me.clone(),
                        info: info.clone(),
                    };
                    let before: Option<String> = bounded(
                        SET_ONLINE
                            .key(presence_key(user))
                            .key(devices_key(me))
                            .arg(&info.device)
                            .arg(serde_json::to_string(&entry).expect("presence serializes"))
                            .arg(format!("{user}\0{}", info.device))
                            .arg(me)
                            .invoke_async(&mut redis),
                    )
                    .await?;
                    if let Some(node) = before {
                        let take_over = Relayed::TakeOver {
                            user: user.clone(),
                            device: info.device.clone(),
                        };
                        publish(&mut redis, &node, &take_over).await?;
                    }
                }
                Outgoing::Offline { user, device } => {
                    self.flush(&mut redis, &mut lookups, &mut relays).await?;
                    let _: i64 = bounded(
                        SET_OFFLINE
                            .key(presence_key(user))
                            .key(devices_key(me))
                            .arg(device)
                            .arg(format!("{user}\0{device}"))
                            .arg(me)
                            .invoke_async(&mut redis),
                    )
                    .await?;
                }
                Outgoing::ToUser {
                    user,
                    topic,
                    payload,
                } => {
                    lookups.insert(user);
                    relays.push((
                        user,
                        Relayed::Publish {
                            topic: topic.clone(),
                            payload: String::from_utf8_lossy(payload).into_owned(),
                        },
                    ));
                }
            }
        }
        self.flush(&mut redis, &mut lookups, &mut relays).await
    }

    /// Looks up, in one round trip, which other nodes hold devices of the users relayed to, and
    /// publishes to those nodes in one more.
    async fn flush<'a>(
        &self,
        redis: &mut ConnectionManager,
        lookups: &mut BTreeSet<&'a str>,
        relays: &mut Vec<(&'a str, Relayed)>,
    ) -> Result<(), crate::store::StoreError> {
        if relays.is_empty() {
            return Ok(());
        }
        let users: Vec<&str> = std::mem::take(lookups).into_iter().collect();
        let mut lookup = redis::pipe();
        for user in &users {
            lookup.cmd("HVALS").arg(presence_key(user));
        }
        let entries: Vec<Vec<String>> = bounded(lookup.query_async(redis)).await?;
        let mut nodes_of: HashMap<&str, BTreeSet<String>> = HashMap::new();
        for (user, entries) in users.iter().zip(entries) {
            let nodes = entries
                .iter()
                .filter_map(|e| serde_json::from_str::<PresenceEntry>(e).ok())
                .map(|e| e.node)
                .filter(|node| *node != self.cluster.node)
                .collect();
            nodes_of.insert(user, nodes);
        }
        let mut sends = redis::pipe();
        let mut any = false;
        for (user, relayed) in relays.drain(..) {
            let text = serde_json::to_string(&relayed).expect("relays serialize");
            for node in nodes_of.get(user).into_iter().flatten() {
                sends.cmd("PUBLISH").arg(channel(node)).arg(&text).ignore();
                any = true;
            }
        }
        if any {
            bounded(sends.exec_async(redis)).await?;
        }
        Ok(())
    }
}

async fn publish(
    redis: &mut ConnectionManager,
    node: &str,
    relayed: &Relayed,
) -> Result<(), crate::store::StoreError> {
    let text = serde_json::to_string(relayed).expect("relays serialize");
    bounded(
        redis::cmd("PUBLISH")
            .arg(channel(node))
            .arg(text)
            .exec_async(redis),
    )
    .await
}
