//! Publishing on a user's topics (inbox, notify, presence, signals, replies) wherever the user's
//! devices are: on this node through the hub, and on the other nodes through [`OtherNodes`].
//! Committed log entries arrive here from the store's commit feed, in log order.

use super::hub::Hub;
use super::link::{LinkId, Qos};
use super::message::Published;
use super::nodes::OtherNodes;
use crate::store::{Appended, CommitFeed, EntryKind};
use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use protocol::topics;
use std::sync::Arc;
use std::time::Instant;

pub struct UserTopics {
    hub: Arc<Hub>,
    nodes: Arc<dyn OtherNodes>,
    stored: Counter,
}

impl UserTopics {
    /// `stored` counts the committed log entries that pass through.
    pub fn new(hub: Arc<Hub>, nodes: Arc<dyn OtherNodes>, stored: Counter) -> Self {
        Self { hub, nodes, stored }
    }

    /// Publishes what the gateway says on one of `user`'s topics (presence, replies, signals)
    /// at QoS 1 at most. `exclude` is a link of this node that does not get it (the sender's
    /// own).
    pub fn publish(&self, user: &str, topic: &str, payload: Bytes, exclude: Option<LinkId>) {
        let message = Arc::new(Published::new(topic, payload));
        self.send(user, message, cap_of(topic), exclude);
    }

    /// Hands `message` to the hub here and to the nodes holding the user's devices elsewhere.
    /// Entries of the user's log go out at the QoS each subscription asked for, up to 2.
    pub fn send(&self, user: &str, message: Arc<Published>, cap: Qos, exclude: Option<LinkId>) {
        self.nodes.publish_to_user(user, &message);
        self.hub.publish(message, cap, exclude);
    }

    pub fn nodes(&self) -> &Arc<dyn OtherNodes> {
        &self.nodes
    }
}

/// The highest QoS a message on a user topic that is not an entry of the user's log goes out
/// at: signals at 0 (a signal is worth nothing late, so one that finds its device's outbox
/// full is dropped and counted, never queued or the device disconnected for it), presence and
/// replies at 1. Nodes relaying a message to each other derive it the same way.
pub fn cap_of(topic: &str) -> Qos {
    match topics::is_signal(topic) {
        true => Qos::AtMostOnce,
        false => Qos::AtLeastOnce,
    }
}

/// Committed entries go out on their user's inbox (or notify topic), in log order, to every
/// device but the one that sent them.
impl CommitFeed for UserTopics {
    fn committed(&self, entries: &[Appended], durable_at: Instant) {
        self.stored.inc_by(entries.len() as u64);
        for entry in entries {
            let topic = match entry.kind {
                EntryKind::Message => topics::inbox(&entry.log),
                EntryKind::Notification => topics::notify(&entry.log),
            };
            let message = Arc::new(Published {
                seq: Some(entry.seq),
                durable_at: Some(durable_at),
                ..Published::new(topic, entry.payload.clone())
            });
            let exclude = entry.origin.map(|origin| origin.0);
            self.send(&entry.log, message, Qos::ExactlyOnce, exclude);
        }
    }
}
