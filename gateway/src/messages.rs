//! Accepting a message for a user: give it an id and a server time, and deliver it live to every
//! online device of the recipient and to the sender's other devices.

use crate::hub::Hub;
use crate::session_handle::{unix_millis, Qos, SessionId};
use protocol::envelope::InboxMessage;
use protocol::topics;
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
    hub: Arc<Hub>,
}

impl Messages {
    pub fn new(hub: Arc<Hub>) -> Self {
        Self { hub }
    }

    /// Accepts `body` for user `to` and delivers it. Returns the message as delivered and the
    /// number of sessions it reached live.
    pub fn accept(&self, sender: Sender<'_>, to: &str, body: Value) -> (InboxMessage, usize) {
        let (from, from_device, sender_session) = match sender {
            Sender::Backend { from } => (from.map(str::to_string), None, None),
            Sender::Device {
                user,
                device,
                session,
            } => (
                Some(user.to_string()),
                Some(device.to_string()),
                Some(session),
            ),
        };
        let message = InboxMessage {
            id: uuid::Uuid::now_v7().to_string(),
            from,
            from_device,
            to: to.to_string(),
            body,
            ts: unix_millis(),
        };
        let payload: bytes::Bytes = serde_json::to_vec(&message)
            .expect("messages serialize")
            .into();
        let mut reached = self.hub.publish(
            &topics::inbox(to),
            payload.clone(),
            Qos::AtLeastOnce,
            sender_session,
        );
        if let (Sender::Device { user, .. }, Some(session)) = (sender, sender_session) {
            if user != to {
                reached += self.hub.publish(
                    &topics::inbox(user),
                    payload,
                    Qos::AtLeastOnce,
                    Some(session),
                );
            }
        }
        (message, reached)
    }
}
