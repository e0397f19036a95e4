//! Accepting a message for a user: seal it, append it to the recipient's log (and, for a
//! device's message, to the sender's own log, so the sender's other devices see it), and answer
//! once it is durable. Live delivery follows the commit (see [`crate::store::LiveFanout`]).

use crate::session_handle::SessionId;
use crate::store::cipher::KeyRing;
use crate::store::record::{self, Content};
use crate::store::{AppendTicket, SharedStore};
use serde_json::Value;
use std::sync::Arc;

/// Who sent a message.
#[derive(Debug, Clone, Copy)]
pub enum Sender<'a> {
    /// The backend, over HTTP, optionally naming a sending user.
    Backend { from: Option<&'a str> },
    /// A device, on its `.../send` topic.
    Device {
        user: &'a str,
        device: &'a str,
        session: SessionId,
    },
}

pub struct Messages {
    store: SharedStore,
    keys: Arc<KeyRing>,
}

impl Messages {
    pub fn new(store: SharedStore, keys: Arc<KeyRing>) -> Self {
        Self { store, keys }
    }

    /// Queues `body` for user `to`'s log and returns its id and the ticket that resolves once
    /// it is durable. The first appended entry is the recipient's copy.
    pub fn accept(&self, sender: Sender<'_>, to: &str, body: &Value) -> (String, AppendTicket) {
        let id = uuid::Uuid::now_v7().to_string();
        let (from, from_device, session) = match sender {
            Sender::Backend { from } => (from, None, None),
            Sender::Device {
                user,
                device,
                session,
            } => (Some(user), Some(device), Some(session)),
        };
        let content = Content {
            id: &id,
            from,
            from_device,
            to,
            body,
        };
        let mut logs = vec![record::seal(&self.keys, to, &content, session)];
        if let Sender::Device { user, .. } = sender {
            if user != to {
                logs.push(record::seal(&self.keys, user, &content, session));
            }
        }
        (id, self.store.append(logs))
    }
}
