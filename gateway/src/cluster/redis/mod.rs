//! Several gateway nodes sharing one Redis, as one service.
//!
//! - **Presence**: each online device is in `gw:{user}:presence` (device → its node and
//!   [`DeviceInfo`]), and in its node's set `gw:node:{node}:devices`, so any node lists a user's
//!   devices on every node, and the devices of a node that died can be found and marked offline.
//!   The two are in different slots of a Redis Cluster, so they are written side by side in one
//!   round trip: into the node's set before presence, out of presence before the node's set.
//! - **Liveness**: each node renews `gw:node:{node}:alive` (with a TTL of `store.node_timeout`)
//!   every `store.node_heartbeat` and is a member of `gw:nodes`. A node whose key expired is dead:
//!   the first node to notice takes a short lock, removes the dead node's devices from presence and
//!   tells their users' other devices they went offline.
//! - **Delivery**: each node subscribes to its own channel `gw:node:{node}` (on a Redis Cluster a
//!   sharded channel, see [`crate::infra::redis::subscribe`]). What is published to a
//!   user's topic (a committed message, a presence event, a reply) goes to the local hub and, on
//!   the channels of the other nodes that hold devices of that user, to theirs — addressed, never
//!   broadcast to every node.
//! - **Sealed relays**: what goes on a channel is sealed with the at-rest keys the nodes share,
//!   with the time it was sent: a Redis writer without them cannot make a node kick, close or
//!   deliver anything (see [`keys::Envelope`]). The outgoing queue is bounded by
//!   `store.relay_queue`; past it, work is dropped and counted.
//! - **Takeover across nodes**: a device that connects to node B while node A still holds it is
//!   taken over: B tells A to close its session. A kick over HTTP on any node reaches the node that
//!   holds the device the same way.
//!
//! Outgoing work (presence updates, relays) goes through one task in order, batched: a burst of
//! messages costs one lookup round trip and one publish round trip per batch. While Redis is
//! away the work is logged and dropped — live delivery across nodes is best effort, the log is
//! not: every device catches up on its next sync.
//!
//! [`keys`] holds what is kept in Redis and sent between nodes, [`relay`] the outgoing task and
//! the inbound subscription, [`liveness`] the heartbeat and the reaping of dead nodes.

mod keys;
mod liveness;
mod relay;

use super::{Membership, NodeHealth};
use crate::infra::cipher::KeyRing;
use crate::infra::redis::{bounded, connect, Endpoint, Redis};
use crate::live::hub::Hub;
use crate::live::message::Published;
use crate::live::nodes::OtherNodes;
use crate::live::registry::{Registry, CONNECTIONS_END};
use crate::live::sessions::Sessions;
use crate::shutdown::Shutdown;
use crate::store::StoreError;
use async_trait::async_trait;
use keys::{alive_key, presence_key, Outgoing, PresenceEntry, Relayed};
use prometheus_client::metrics::counter::Counter;
use protocol::envelope::DeviceInfo;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

pub struct RedisNodes {
    node: String,
    endpoint: Endpoint,
    /// Relays from other nodes waiting to be handled, at most (`store.relay_queue`).
    inbound_capacity: usize,
    redis: Redis,
    outgoing: mpsc::Sender<Outgoing>,
    /// Relays and presence changes dropped because `store.relay_queue` was full.
    dropped: Counter,
    keys: Arc<KeyRing>,
    heartbeat: Duration,
    timeout: Duration,
}

impl RedisNodes {
    /// The user's devices that other nodes hold, as the presence hash has them.
    async fn presence_elsewhere(&self, user: &str) -> Result<Vec<PresenceEntry>, StoreError> {
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
            .filter(|entry| entry.node != self.node)
            .collect())
    }

    /// The other node that holds `user`'s `device`, as the presence hash has it, when `accept`
    /// likes what it says of the device.
    async fn node_elsewhere(
        &self,
        user: &str,
        device: &str,
        accept: impl Fn(&DeviceInfo) -> bool + Send,
    ) -> Result<Option<String>, StoreError> {
        let entry: Option<String> = bounded(
            redis::cmd("HGET")
                .arg(presence_key(user))
                .arg(device)
                .query_async(&mut self.redis.clone()),
        )
        .await?;
        Ok(entry
            .and_then(|entry| serde_json::from_str::<PresenceEntry>(&entry).ok())
            .filter(|entry| entry.node != self.node && accept(&entry.info))
            .map(|entry| entry.node))
    }

    /// Joins the nodes sharing the Redis at `config.redis_url`, as `config.node_id` (or a random
    /// name), and starts the outgoing task.
    pub async fn join(
        config: &broker_config::Store,
        keys: Arc<KeyRing>,
        dropped: Counter,
    ) -> anyhow::Result<Arc<Self>> {
        let endpoint = Endpoint::of(config);
        let redis = connect(&endpoint).await?;
        let node = config
            .node_id
            .clone()
            .unwrap_or_else(|| format!("n{}", crate::store::new_epoch()));
        let (outgoing, queue) = mpsc::channel(config.relay_queue);
        liveness::renew(&redis, &node, config.node_timeout).await?;
        let relay = relay::Relay {
            node: node.clone(),
            redis: redis.clone(),
            keys: keys.clone(),
        };
        // Not a tracked task: it runs until `leave` has flushed it, after the sessions closed.
        tokio::spawn(relay.run(queue));
        tracing::info!(%node, "joined the cluster");
        Ok(Arc::new(Self {
            node,
            endpoint,
            inbound_capacity: config.relay_queue,
            redis,
            outgoing,
            dropped,
            keys,
            heartbeat: config.node_heartbeat,
            timeout: config.node_timeout,
        }))
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Queues work for the other nodes without waiting: when `store.relay_queue` is full (Redis
    /// slow or away) the item is dropped and counted. What is lost is live delivery across
    /// nodes, which the log makes up for, or a presence change, which a reconnect or the reaping
    /// of a dead node sets right.
    fn queue(&self, item: Outgoing) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.outgoing.try_send(item) {
            self.dropped.inc();
        }
    }

    /// Receives what other nodes send this one, reconnecting while Redis is away.
    async fn run_inbound(
        self: Arc<Self>,
        registry: Arc<Registry>,
        hub: Arc<Hub>,
        sessions: Arc<Sessions>,
        shutdown: Shutdown,
    ) {
        loop {
            tokio::select! {
                received = relay::receive(&self.endpoint, self.inbound_capacity, &self.node, &self.keys, &registry, &hub, &sessions) => {
                    if let Err(e) = received {
                        tracing::warn!("cluster channel lost: {e}; reconnecting");
                    }
                }
                () = shutdown.cancelled() => return,
            }
            tokio::select! {
                () = tokio::time::sleep(self.heartbeat) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// Keeps this node alive in Redis and reaps dead nodes, every `store.node_heartbeat`.
    async fn run_heartbeat(self: Arc<Self>, registry: Arc<Registry>, shutdown: Shutdown) {
        shutdown
            .every(self.heartbeat, || async {
                if let Err(e) = liveness::renew(&self.redis, &self.node, self.timeout).await {
                    tracing::warn!("cannot renew this node's liveness in Redis: {e}");
                    return;
                }
                let reaped = liveness::reap(&self.redis, &self.node, self.timeout, &registry);
                if let Err(e) = reaped.await {
                    tracing::warn!("cannot check the other nodes' liveness: {e}");
                }
            })
            .await;
    }
}

#[async_trait]
impl OtherNodes for RedisNodes {
    fn publish_to_user(&self, user: &str, message: &Published) {
        self.queue(Outgoing::ToUser {
            user: user.to_string(),
            topic: message.topic.clone(),
            payload: message.payload.clone(),
            seq: message.seq,
        });
    }

    fn device_online(&self, user: &str, info: DeviceInfo) {
        self.queue(Outgoing::Online {
            user: user.to_string(),
            info,
        });
    }

    fn device_offline(&self, user: &str, device: &str) {
        self.queue(Outgoing::Offline {
            user: user.to_string(),
            device: device.to_string(),
        });
    }

    async fn devices(&self, user: &str) -> Result<Vec<DeviceInfo>, StoreError> {
        Ok(self
            .presence_elsewhere(user)
            .await?
            .into_iter()
            .map(|entry| entry.info)
            .collect())
    }

    async fn kick(&self, user: &str, device: &str, reason: &str) -> Result<bool, StoreError> {
        let Some(node) = self.node_elsewhere(user, device, |_| true).await? else {
            return Ok(false);
        };
        let kick = Relayed::Kick {
            user: user.to_string(),
            device: device.to_string(),
            reason: reason.to_string(),
        };
        relay::publish(&mut self.redis.clone(), &self.keys, &node, kick).await?;
        Ok(true)
    }

    async fn decide(
        &self,
        user: &str,
        device: &str,
        approve: bool,
        by: Option<&str>,
    ) -> Result<bool, StoreError> {
        let waiting = |info: &DeviceInfo| !info.approved;
        let Some(node) = self.node_elsewhere(user, device, waiting).await? else {
            return Ok(false);
        };
        let decide = Relayed::Decide {
            user: user.to_string(),
            device: device.to_string(),
            approve,
            by: by.map(str::to_string),
        };
        relay::publish(&mut self.redis.clone(), &self.keys, &node, decide).await?;
        Ok(true)
    }

    async fn forget_user(&self, user: &str) -> Result<(), StoreError> {
        let nodes: BTreeSet<String> = (self.presence_elsewhere(user).await?)
            .into_iter()
            .map(|entry| entry.node)
            .collect();
        let mut redis = self.redis.clone();
        for node in &nodes {
            let forget = Relayed::ForgetUser {
                user: user.to_string(),
            };
            relay::publish(&mut redis, &self.keys, node, forget).await?;
        }
        // Each of those nodes takes its devices out of presence once their connections ended
        // (see `Registry::forget_user_for_another_node`): wait for that, within bounds.
        let deadline = tokio::time::Instant::now() + CONNECTIONS_END + Duration::from_secs(1);
        while !nodes.is_empty() && !self.presence_elsewhere(user).await?.is_empty() {
            if tokio::time::Instant::now() > deadline {
                tracing::warn!(%user, "another node's connections of a deleted user did not end in time");
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bounded(
            redis::cmd("DEL")
                .arg(presence_key(user))
                .exec_async(&mut redis),
        )
        .await?;
        Ok(())
    }
}

#[async_trait]
impl Membership for RedisNodes {
    fn start(
        self: Arc<Self>,
        registry: Arc<Registry>,
        hub: Arc<Hub>,
        sessions: Arc<Sessions>,
        shutdown: &Shutdown,
    ) {
        shutdown.spawn(
            self.clone()
                .run_inbound(registry.clone(), hub, sessions, shutdown.clone()),
        );
        shutdown.spawn(self.run_heartbeat(registry, shutdown.clone()));
    }

    async fn leave(&self) {
        let (flushed, done) = oneshot::channel();
        // Waits for room: everything queued before is handed on first.
        if self.outgoing.send(Outgoing::Flush(flushed)).await.is_ok() {
            let _ = done.await;
        }
        let mut redis = self.redis.clone();
        let mut gone = redis::cmd("DEL");
        gone.arg(alive_key(&self.node));
        if let Err(e) = bounded(gone.exec_async(&mut redis)).await {
            tracing::warn!("cannot leave the cluster; the others reap this node when its liveness expires: {e}");
        }
    }

    async fn nodes(&self) -> Result<Vec<NodeHealth>, StoreError> {
        liveness::nodes(&self.redis, &self.node).await
    }
}
