//! Publishing on a user's topics (inbox, presence, replies) wherever the user's devices are: on
//! this node through the hub, and on the other nodes (when several share a Redis) through the
//! cluster.

use crate::cluster::Cluster;
use crate::hub::Hub;
use crate::session_handle::{Qos, SessionId};
use crate::store::{Appended, LiveFanout, LiveTopic};
use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use protocol::topics;
use std::sync::Arc;

pub struct UserTopics {
    hub: Arc<Hub>,
    cluster: Option<Arc<Cluster>>,
    stored: Counter,
}

impl UserTopics {
    /// `stored` counts the committed log entries that pass through.
    pub fn new(hub: Arc<Hub>, cluster: Option<Arc<Cluster>>, stored: Counter) -> Self {
        Self {
            hub,
            cluster,
            stored,
        }
    }

    /// Publishes on one of `user`'s topics. `exclude` is a session of this node that does not
    /// get it (the sender's own).
    pub fn publish(&self, user: &str, topic: &str, payload: Bytes, exclude: Option<SessionId>) {
        self.hub
            .publish(topic, payload.clone(), Qos::AtLeastOnce, exclude);
        if let Some(cluster) = &self.cluster {
            cluster.publish_to_user(user, topic, payload);
        }
    }
}

/// Committed entries go out on their user's inbox (or notify topic), in log order.
impl LiveFanout for UserTopics {
    fn committed(&self, messages: &[Appended]) {
        self.stored.inc_by(messages.len() as u64);
        for message in messages {
            let topic = match message.live_topic {
                LiveTopic::Inbox => topics::inbox(&message.log),
                LiveTopic::Notify => topics::notify(&message.log),
            };
            self.publish(
                &message.log,
                &topic,
                message.payload.clone(),
                message.exclude_session,
            );
        }
    }
}
