//! Live signals (typing, game moves, call set-up): relayed at once to the devices of their
//! recipient that are online now, on this node and the others, and never stored. Devices send
//! them on `.../signal`, backends with `POST /v1/signals`; both go through [`Signals::relay`].

use super::link::LinkId;
use super::user_topics::UserTopics;
use prometheus_client::metrics::counter::Counter;
use protocol::envelope::SignalMessage;
use protocol::topics;
use serde_json::value::RawValue;
use std::sync::Arc;

pub struct Signals {
    topics: Arc<UserTopics>,
    relayed: Counter,
}

impl Signals {
    /// `relayed` counts the signals handed on (each once, however many devices get it).
    pub fn new(topics: Arc<UserTopics>, relayed: Counter) -> Self {
        Self { topics, relayed }
    }

    /// Hands `signal` to the devices of user `to` online now; `exclude` is the sending link,
    /// which does not get its own signal back. The body is passed on as the sender wrote it.
    pub fn relay(&self, to: &str, signal: &SignalMessage<&RawValue>, exclude: Option<LinkId>) {
        let delivered = serde_json::to_vec(signal).expect("a signal serializes");
        self.topics
            .publish(to, &topics::signal(to), delivered.into(), exclude);
        self.relayed.inc();
    }
}
