//! Accepting a message for a user: seal it, append it to the recipient's log (and, for a
//! device's message, to the sender's own log, so the sender's other devices see it), and answer
//! once it is durable. Live delivery follows the commit (see [`crate::store::CommitFeed`]).
//!
//! A message sent with a client message id is appended with an idempotency key, so that the
//! sender may send it again until it gets an answer: a repeat within `roaming.idempotency_window`
//! is answered with the first one's entries and stored no second time.

use crate::store::data_keys::DataKeys;
use crate::store::record::{self, Content};
use crate::store::{
    AppendTicket, EntryKind, IdempotencyKey, NewMessage, Origin, SharedStore, StoreError, Stored,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use protocol::envelope::ClientMsgId;
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

impl Sender<'_> {
    /// What a client message id is unique within: this sender's messages to `to`. A user's
    /// ids are compared across all of the user's devices, and the backend's across all its API
    /// keys. `to` is part of it because the id is marked in both logs the message goes to, and
    /// the sender's own log must tell apart the same id reused for another recipient (which is
    /// then another message, not half of one). `*` stands for the backend: user ids hold
    /// neither `*` nor `>`.
    fn idempotency_scope(&self, to: &str) -> String {
        match self {
            Self::Backend { .. } => format!("*>{to}"),
            Self::Device { user, .. } => format!("{user}>{to}"),
        }
    }
}

pub struct Messages {
    store: SharedStore,
    /// Each user's data key, which the user's entries are sealed under.
    keys: Arc<DataKeys>,
    /// How long a client message id is remembered (`roaming.idempotency_window`).
    idempotency_window: Duration,
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
    /// The message's entries (the recipient's first), once durable; for a repeated client
    /// message id, those of the message first sent with it.
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
        keys: Arc<DataKeys>,
        idempotency_window: Duration,
        append_seconds: Histogram,
        failures: Counter,
    ) -> Self {
        Self {
            store,
            keys,
            idempotency_window,
            append_seconds,
            failures,
        }
    }

    /// Queues `body` for user `to`'s log and returns its id and what resolves once it is
    /// durable. With a `client_msg_id` the sender has used before, within the window, nothing is
    /// stored and the answer is the first message's ([`Stored::repeat_of`] is its id).
    pub fn accept(
        &self,
        sender: Sender<'_>,
        to: &str,
        body: &Value,
        client_msg_id: Option<&ClientMsgId>,
    ) -> (String, Accepting) {
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
        let key = client_msg_id.map(|key| IdempotencyKey {
            scope: sender.idempotency_scope(to),
            key: key.as_str().to_string(),
            window: self.idempotency_window,
        });
        (id, self.queue(logs, key))
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
        let entry = record::seal_entry(&self.keys, user, &content, None, EntryKind::Notification);
        self.queue(vec![entry], None)
    }

    fn queue(&self, logs: Vec<NewMessage>, key: Option<IdempotencyKey>) -> Accepting {
        Accepting {
            since: Instant::now(),
            ticket: self.store.append(logs, key),
            append_seconds: self.append_seconds.clone(),
            failures: self.failures.clone(),
        }
    }
}
