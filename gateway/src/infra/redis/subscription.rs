//! Listening on a channel, on one Redis or on a Redis Cluster.
//!
//! One Redis: a subscriber connection of its own (`SUBSCRIBE`); it ends when the connection is
//! lost, and the caller subscribes again. A cluster: a sharded subscription (`SSUBSCRIBE`,
//! Redis 7), held by the node that owns the channel's slot, whose publishers reach it with
//! `SPUBLISH` ([`super::Redis::publish`]) without the message being copied to every node of the
//! cluster as a plain `PUBLISH` is. The redis crate subscribes again by itself when the slot
//! moves or its node fails over; the messages in between are lost, as on one Redis.

use super::{client, Endpoint};
use anyhow::Context;
use futures_util::StreamExt;
use redis::aio::PubSubStream;
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;

/// Messages published on one channel, as they arrive.
pub enum Subscription {
    Single(PubSubStream),
    Cluster {
        /// Holds the subscription: dropping it unsubscribes.
        _connection: ClusterConnection,
        messages: mpsc::Receiver<Vec<u8>>,
    },
}

impl Subscription {
    /// The next message's payload; `None` when the subscription ended (the connection to one
    /// Redis was lost).
    pub async fn next(&mut self) -> Option<Vec<u8>> {
        match self {
            Subscription::Single(stream) => Some(stream.next().await?.get_payload_bytes().to_vec()),
            Subscription::Cluster { messages, .. } => messages.recv().await,
        }
    }
}

/// Subscribes to `channel` at `endpoint`. On a cluster, at most `capacity` messages wait to be
/// read; past it new ones are dropped (with a warning), as a slow subscriber of one Redis would
/// eventually be cut off.
pub async fn subscribe(
    endpoint: &Endpoint,
    channel: &str,
    capacity: usize,
) -> anyhow::Result<Subscription> {
    if !endpoint.cluster {
        let url = endpoint.urls.first().context("no Redis URL")?;
        let mut pubsub = client(url)?.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        return Ok(Subscription::Single(pubsub.into_on_message()));
    }
    let (sender, messages) = mpsc::channel(capacity);
    let deliver = move |push: PushInfo| {
        if push.kind != PushKind::SMessage {
            return Ok(());
        }
        // `[channel, payload]`
        let Some(Value::BulkString(payload)) = push.data.into_iter().nth(1) else {
            return Ok(());
        };
        if sender.try_send(payload).is_err() {
            tracing::warn!("a message on a Redis channel is dropped: its reader is behind");
        }
        Ok::<(), std::convert::Infallible>(())
    };
    let cluster = endpoint.cluster_client(|builder| {
        builder
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(deliver)
    })?;
    let mut connection = cluster.get_async_connection().await?;
    connection.ssubscribe(channel).await?;
    Ok(Subscription::Cluster {
        _connection: connection,
        messages,
    })
}
