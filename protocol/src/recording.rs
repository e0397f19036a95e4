//! The traffic recording format: what the gateway writes when `[record] path` is set, and what
//! `loadtest replay` plays back. One definition serves both, so the writer and the reader cannot
//! drift apart.
//!
//! A recording is JSON Lines. The first line is a [`Header`]:
//!
//! ```json
//! {"recording": "gateway", "version": 1, "started_at": "2026-01-02T03:04:05.678Z"}
//! ```
//!
//! and every other line one [`Line`]: `t_ms`, milliseconds since the recording started (a
//! monotonic clock, never decreasing along the file), and an `event`:
//!
//! ```json
//! {"t_ms": 12, "event": "connect", "session": 1, "user": "alice", "device": "phone", "transport": "mqtt", "platform": "ios"}
//! {"t_ms": 15, "event": "subscribe", "session": 1, "topic": "u/alice/inbox", "qos": 1}
//! {"t_ms": 40, "event": "publish", "session": 1, "topic": "u/alice/d/phone/send", "qos": 1, "payload": {"to": "bob", "body": {"text": "hi"}}}
//! {"t_ms": 41, "event": "unsubscribe", "session": 1, "topic": "u/alice/inbox"}
//! {"t_ms": 90, "event": "disconnect", "session": 1}
//! {"t_ms": 95, "event": "api", "method": "POST", "path": "/v1/messages", "body": {"to": "alice", "body": {}}}
//! ```
//!
//! `session` is a number unique within the recording, never a token. Only what the gateway
//! accepted is recorded (a connect once authenticated, a subscribe authorization allowed, a
//! publish once accepted — a device's message once durable —, an API call answered 2xx), so a
//! replay reproduces valid traffic. Secrets never appear:
//! no tokens, API keys or headers are recorded.

use crate::envelope::{Platform, Transport};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `recording` field of a header written by the gateway.
pub const KIND: &str = "gateway";
/// The format version this module reads and writes.
pub const VERSION: u32 = 1;

/// The first line of a recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`KIND`].
    pub recording: String,
    /// Always [`VERSION`] for this format.
    pub version: u32,
    /// Wall-clock time at which the recording started, RFC 3339.
    pub started_at: String,
}

/// One recorded event with its time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line {
    /// Milliseconds since the recording started.
    pub t_ms: u64,
    #[serde(flatten)]
    pub event: Event,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A device session was authenticated and opened.
    Connect {
        session: u64,
        user: String,
        device: String,
        transport: Transport,
        platform: Platform,
    },
    /// A subscription was granted.
    Subscribe {
        session: u64,
        topic: String,
        qos: u8,
    },
    /// A subscription the session held was removed.
    Unsubscribe { session: u64, topic: String },
    /// A publish the gateway accepted, at the time it did.
    Publish {
        session: u64,
        topic: String,
        qos: u8,
        #[serde(flatten)]
        payload: Payload,
    },
    /// The session ended, whatever the reason.
    Disconnect { session: u64 },
    /// A backend API call that carries traffic, answered 2xx.
    Api {
        method: String,
        path: String,
        #[serde(flatten)]
        body: Payload,
    },
}

/// A publish's payload or an API call's body, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Payload {
    /// The content, when it is JSON.
    #[serde(rename = "payload")]
    Json(Value),
    /// Any other content, base64-encoded (standard alphabet, padded).
    #[serde(rename = "payload_base64")]
    Base64(String),
    /// Only the size in bytes: recorded with `record.payloads = false`.
    #[serde(rename = "bytes")]
    Size(usize),
}

impl Event {
    /// The event's name, as in its `event` field.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "connect",
            Self::Subscribe { .. } => "subscribe",
            Self::Unsubscribe { .. } => "unsubscribe",
            Self::Publish { .. } => "publish",
            Self::Disconnect { .. } => "disconnect",
            Self::Api { .. } => "api",
        }
    }

    /// The session the event belongs to; `None` for API calls.
    pub fn session(&self) -> Option<u64> {
        match self {
            Self::Connect { session, .. }
            | Self::Subscribe { session, .. }
            | Self::Unsubscribe { session, .. }
            | Self::Publish { session, .. }
            | Self::Disconnect { session } => Some(*session),
            Self::Api { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lines_read_and_write_the_documented_json() {
        let cases = [
            json!({"t_ms": 12, "event": "connect", "session": 1, "user": "alice", "device": "phone", "transport": "json_ws", "platform": "web"}),
            json!({"t_ms": 40, "event": "publish", "session": 1, "topic": "u/alice/d/phone/send", "qos": 1, "payload": {"to": "bob"}}),
            json!({"t_ms": 41, "event": "publish", "session": 1, "topic": "pub/x", "qos": 0, "payload_base64": "AAE="}),
            json!({"t_ms": 42, "event": "publish", "session": 1, "topic": "pub/x", "qos": 0, "bytes": 7}),
            json!({"t_ms": 90, "event": "disconnect", "session": 1}),
            json!({"t_ms": 95, "event": "api", "method": "POST", "path": "/v1/messages", "payload": {"to": "alice", "body": {}}}),
        ];
        for case in cases {
            let line: Line = serde_json::from_value(case.clone()).expect("parses");
            assert_eq!(serde_json::to_value(&line).unwrap(), case);
        }
    }

    #[test]
    fn kinds_and_sessions() {
        let line: Line = serde_json::from_value(
            json!({"t_ms": 1, "event": "subscribe", "session": 7, "topic": "u/a/inbox", "qos": 1}),
        )
        .unwrap();
        assert_eq!(line.event.kind(), "subscribe");
        assert_eq!(line.event.session(), Some(7));
    }
}
