//! What goes between the nodes: the outgoing task (presence changes and relays, in order, in
//! batches) and the inbound subscription to this node's channel.

use super::keys::{
    channel, devices_key, presence_key, Envelope, Outgoing, PresenceEntry, Relayed, RELAY_AAD,
    RELAY_BATCH, RELAY_MAX_AGE, SET_OFFLINE, SET_ONLINE,
};
use crate::infra::cipher::KeyRing;
use crate::infra::redis::{bounded, subscribe, Endpoint, Redis};
use crate::infra::time::unix_millis;
use crate::live::hub::Hub;
use crate::live::link::Qos;
use crate::live::message::Published;
use crate::live::registry::Registry;
use crate::live::sessions::Sessions;
use crate::live::user_topics::cap_of;
use crate::store::sessions::SessionKey;
use crate::store::StoreError;
use bytes::Bytes;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use tokio::sync::mpsc;

/// The outgoing task: presence updates and relays, in order, in batches.
pub(super) struct Relay {
    pub node: String,
    pub redis: Redis,
    pub keys: Arc<KeyRing>,
}

/// A relay as published: sealed, with the time it was sent (see [`Envelope`]).
pub(super) fn seal(keys: &KeyRing, relayed: Relayed) -> Vec<u8> {
    let envelope = Envelope {
        at_ms: unix_millis(),
        relayed,
    };
    keys.seal(
        &serde_json::to_vec(&envelope).expect("relays serialize"),
        RELAY_AAD,
    )
}

/// The relay in what was published on this node's channel, unless it was not sealed with the
/// nodes' keys, is damaged, or is not of now (a replay).
pub(super) fn open(keys: &KeyRing, published: &[u8]) -> Result<Relayed, String> {
    let plain = keys
        .open(published, RELAY_AAD)
        .map_err(|e| format!("not sealed by a node of this service: {e}"))?;
    let envelope: Envelope =
        serde_json::from_slice(&plain).map_err(|e| format!("unreadable: {e}"))?;
    let age = unix_millis().abs_diff(envelope.at_ms);
    if age > RELAY_MAX_AGE.as_millis() as u64 {
        return Err(format!(
            "sent {age} ms away from now: a replay, or clocks apart"
        ));
    }
    Ok(envelope.relayed)
}

impl Relay {
    /// Runs until every sender is gone.
    pub(super) async fn run(self, mut queue: mpsc::Receiver<Outgoing>) {
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
                    // Into the node's set first, so a reaper of this node finds the device.
                    let mut pipe = redis::pipe();
                    pipe.load_script(&SET_ONLINE)
                        .ignore()
                        .sadd(devices_key(me), format!("{user}\0{}", info.device))
                        .ignore()
                        .invoke_script(
                            SET_ONLINE
                                .key(presence_key(user))
                                .arg(&info.device)
                                .arg(serde_json::to_string(&entry).expect("presence serializes"))
                                .arg(me),
                        );
                    let (before,): (Option<String>,) =
                        bounded(pipe.query_async(&mut redis)).await?;
                    if let Some(node) = before {
                        let take_over = Relayed::TakeOver {
                            user: user.clone(),
                            device: info.device.clone(),
                        };
                        publish(&mut redis, &self.keys, &node, take_over).await?;
                    }
                }
                Outgoing::Offline { user, device } => {
                    self.flush(&mut redis, &mut lookups, &mut relays).await?;
                    // Out of presence first: a device still in the node's set is only
                    // looked at again by a reaper.
                    let mut pipe = redis::pipe();
                    pipe.load_script(&SET_OFFLINE)
                        .ignore()
                        .invoke_script(SET_OFFLINE.key(presence_key(user)).arg(device).arg(me))
                        .ignore()
                        .srem(devices_key(me), format!("{user}\0{device}"))
                        .ignore();
                    bounded(pipe.exec_async(&mut redis)).await?;
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
        redis: &mut Redis,
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
            let nodes = nodes_of.get(user).filter(|nodes| !nodes.is_empty());
            let Some(nodes) = nodes else { continue };
            let sealed = seal(&self.keys, relayed);
            for node in nodes {
                sends
                    .add_command(redis.publish(&channel(node), &sealed))
                    .ignore();
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
    redis: &mut Redis,
    keys: &KeyRing,
    node: &str,
    relayed: Relayed,
) -> Result<(), StoreError> {
    let publish = redis.publish(&channel(node), &seal(keys, relayed));
    bounded(publish.exec_async(redis)).await?;
    Ok(())
}

/// Hands what other nodes send this one to the registry and the hub, until the subscription
/// ends (Redis went away) or shutdown.
pub(super) async fn receive(
    endpoint: &Endpoint,
    capacity: usize,
    node: &str,
    keys: &KeyRing,
    registry: &Arc<Registry>,
    hub: &Hub,
    sessions: &Sessions,
) -> anyhow::Result<()> {
    let mut subscription = subscribe(endpoint, &channel(node), capacity).await?;
    while let Some(message) = subscription.next().await {
        let relayed = match open(keys, &message) {
            Ok(relayed) => relayed,
            Err(e) => {
                tracing::warn!("a message on the cluster channel is ignored: {e}");
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
            Relayed::Decide {
                user,
                device,
                approve,
                by,
            } => {
                // Not waited for here: remembering an approved device is a write to the store.
                let registry = registry.clone();
                tokio::spawn(async move {
                    let decided = registry
                        .decide(&user, &device, approve, by.as_deref())
                        .await;
                    if let Err(e) = decided {
                        tracing::debug!(%user, %device, "a decision relayed here found nothing: {e}");
                    }
                });
            }
            Relayed::ForgetUser { user } => {
                // Not waited for here: the channel's other relays go on meanwhile.
                let registry = registry.clone();
                tokio::spawn(async move {
                    let forgotten = registry
                        .forget_user_for_another_node(&user, "account deleted")
                        .await;
                    if let Err(e) = forgotten {
                        tracing::warn!(%user, "a deleted user's devices are not all forgotten here: {e:#}");
                    }
                });
            }
        }
    }
    anyhow::bail!("the subscription ended")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> KeyRing {
        KeyRing::new(&["n1:000102030405060708090a0b0c0d0e0f".into()]).unwrap()
    }

    fn kick() -> Relayed {
        Relayed::Kick {
            user: "alice".into(),
            device: "phone".into(),
            reason: "r".into(),
        }
    }

    #[test]
    fn only_a_fresh_relay_sealed_with_the_nodes_keys_is_acted_on() {
        let keys = keys();
        assert!(matches!(
            open(&keys, &seal(&keys, kick())),
            Ok(Relayed::Kick { .. })
        ));

        // What a Redis writer without the keys can publish: the relay in the clear, or sealed
        // with a key of its own.
        let plain = serde_json::to_vec(&kick()).unwrap();
        assert!(open(&keys, &plain).is_err());
        let stranger = KeyRing::new(&["n1:f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff".into()]).unwrap();
        assert!(open(&keys, &seal(&stranger, kick())).is_err());

        // A relay captured and published again later.
        let stale = Envelope {
            at_ms: unix_millis() - RELAY_MAX_AGE.as_millis() as u64 - 1000,
            relayed: kick(),
        };
        let replayed = keys.seal(&serde_json::to_vec(&stale).unwrap(), RELAY_AAD);
        assert!(open(&keys, &replayed).unwrap_err().contains("replay"));
    }
}
