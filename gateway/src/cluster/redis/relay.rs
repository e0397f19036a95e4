//! What goes between the nodes: the outgoing task (presence changes and relays, in order, in
//! batches) and the inbound subscription to this node's channel.

use super::keys::{
    channel, devices_key, presence_key, Outgoing, PresenceEntry, Relayed, RELAY_BATCH, SET_OFFLINE,
    SET_ONLINE,
};
use crate::infra::redis::bounded;
use crate::live::hub::Hub;
use crate::live::link::Qos;
use crate::live::message::Published;
use crate::live::registry::Registry;
use crate::live::sessions::Sessions;
use crate::live::user_topics::cap_of;
use crate::store::sessions::SessionKey;
use crate::store::StoreError;
use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use tokio::sync::mpsc;

/// The outgoing task: presence updates and relays, in order, in batches.
pub(super) struct Relay {
    pub node: String,
    pub redis: ConnectionManager,
}

impl Relay {
    /// Runs until every sender is gone.
    pub(super) async fn run(self, mut queue: mpsc::UnboundedReceiver<Outgoing>) {
        let mut batch = Vec::with_capacity(RELAY_BATCH);
        while queue.recv_many(&mut batch, RELAY_BATCH).await > 0 {
            if let Err(e) = self.handle(&batch).await {
                tracing::warn!(items = batch.len(), "cluster relay failed: {e}");
            }
            for item in batch.drain(..) {
                if let Outgoing::Flush(done) = item {
                    let _ = done.send(());
                }
            }
        }
    }

    async fn handle(&self, batch: &[Outgoing]) -> Result<(), StoreError> {
        let me = &self.node;
        let mut redis = self.redis.clone();
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
                Outgoing::Flush(_) => {}
                Outgoing::ToUser {
                    user,
                    topic,
                    payload,
                    seq,
                } => {
                    lookups.insert(user);
                    relays.push((
                        user,
                        Relayed::Publish {
                            topic: topic.clone(),
                            payload: String::from_utf8_lossy(payload).into_owned(),
                            seq: *seq,
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
    ) -> Result<(), StoreError> {
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
                .filter(|node| *node != self.node)
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

/// Sends one item to one node's channel.
pub(super) async fn publish(
    redis: &mut ConnectionManager,
    node: &str,
    relayed: &Relayed,
) -> Result<(), StoreError> {
    let text = serde_json::to_string(relayed).expect("relays serialize");
    bounded(
        redis::cmd("PUBLISH")
            .arg(channel(node))
            .arg(text)
            .exec_async(redis),
    )
    .await?;
    Ok(())
}

/// Hands what other nodes send this one to the registry and the hub, until the subscription
/// ends (Redis went away) or shutdown.
pub(super) async fn receive(
    url: &str,
    node: &str,
    registry: &Registry,
    hub: &Hub,
    sessions: &Sessions,
) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel(node)).await?;
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
            Relayed::Publish {
                topic,
                payload,
                seq,
            } => {
                // The sending node capped the QoS already: a log entry may go out at 2.
                let cap = match seq {
                    Some(_) => Qos::ExactlyOnce,
                    None => cap_of(&topic),
                };
                let message = Published {
                    seq,
                    ..Published::new(topic, Bytes::from(payload))
                };
                hub.publish(Arc::new(message), cap, None);
            }
            Relayed::TakeOver { user, device } => {
                registry.taken_over_elsewhere(&user, &device);
                sessions.moved_elsewhere(&SessionKey::Device { user, device });
            }
            Relayed::Kick {
                user,
                device,
                reason,
            } => {
                registry.kick(&user, &device, &reason);
            }
            Relayed::ForgetUser { user } => {
                if let Err(e) = registry.forget_user_here(&user, "account deleted") {
                    tracing::warn!(%user, "a deleted user's devices are not all forgotten here: {e:#}");
                }
            }
        }
    }
    anyhow::bail!("the subscription ended")
}
