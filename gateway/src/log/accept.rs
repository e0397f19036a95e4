//! Accepting a message for a user: seal it, append it to the recipient's log (and, for a
//! device's message, to the sender's own log, so the sender's other devices see it), and answer
//! once it is durable. Live delivery follows the commit (see [`crate::store::CommitFeed`]).

use crate::infra::cipher::KeyRing;
use crate::store::record::{self, Content};
use crate::store::{AppendTicket, EntryKind, NewMessage, Origin, SharedStore, StoreError, Stored};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;

/// Who sent a message.
#[derive(Debug, Clone, Copy)]
pub enum Sender<'a> {
    /// The backend, over HTTP, optionally naming a sending user.
    Backend { from: Option<&'a str> },
    /// A device, on its `.../send` topic; `origin` tags its connection, which does not get
    /// the message back live.
    Device {
        user: &'a str,
        device: &'a str,
        origin: Origin,
    },
}

pub struct Messages {
    store: SharedStore,
    keys: Arc<KeyRing>,
    append_seconds: Histogram,
    failures: Counter,
}

/// A message on its way into the logs; [`wait`](Self::wait) answers once it is durable.
pub struct Accepting {
    ticket: AppendTicket,
    since: Instant,
    append_seconds: Histogram,
    failures: Counter,
}

impl Accepting {
    /// The message's entries (the recipient's first), once durable.
    pub async fn wait(self) -> Result<Stored, StoreError> {
        let stored = self.ticket.wait().await;
        match &stored {
            Ok(_) => self
                .append_seconds
                .observe(self.since.elapsed().as_secs_f64()),
            Err(_) => {
                self.failures.inc();
            }
        }
        stored
    }
}

impl Messages {
    pub fn new(
        store: SharedStore,
        keys: Arc<KeyRing>,
        append_seconds: Histogram,
        failures: Counter,
    ) -> Self {
        Self {
            store,
            keys,
            append_seconds,
            failures,
        }
    }

    /// Queues `body` for user `to`'s log and returns its id and what resolves once it is
    /// durable.
    pub fn accept(&self, sender: Sender<'_>, to: &str, body: &Value) -> (String, Accepting) {
        let id = uuid::Uuid::now_v7().to_string();
        let (from, from_device, origin) = match sender {
            Sender::Backend { from } => (from, None, None),
            Sender::Device {
                user,
                device,
                origin,
            } => (Some(user), Some(device), Some(origin)),
        };
        let content = Content {
            id: &id,
            from,
            from_device,
            to,
            body,
        };
        let mut logs = vec![record::seal(&self.keys, to, &content, origin)];
        if let Sender::Device { user, .. } = sender {
            if user != to {
                logs.push(record::seal(&self.keys, user, &content, origin));
            }
        }
        (id, self.queue(logs))
    }

    /// Queues an in-app notification into `user`'s log, delivered live on `u/{user}/notify`.
    /// `id` is the notification's id; the body carries the notification.
    pub fn accept_notification(
        &self,
        user: &str,
        id: &str,
        body: &(impl Serialize + ?Sized),
    ) -> Accepting {
        let content = Content {
            id,
            from: None,
            from_device: None,
            to: user,
            body,
        };
        let mut entry = record::seal(&self.keys, user, &content, None);
        entry.kind = EntryKind::Notification;
        self.queue(vec![entry])
    }

    fn queue(&self, logs: Vec<NewMessage>) -> Accepting {
        Accepting {
            since: Instant::now(),
            ticket: self.store.append(logs, None),
            append_seconds: self.append_seconds.clone(),
            failures: self.failures.clone(),
        }
    }
}
