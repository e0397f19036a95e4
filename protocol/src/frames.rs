//! The JSON WebSocket protocol (`/ws`): one JSON object per text frame, tagged by `op`.
//!
//! A client request carries an `id` of its choosing (a string or a number); the server answers
//! it with `ok` or `error` carrying the same `id`, as sent. Messages arrive as `msg` frames. See
//! the README for a walk-through.

use crate::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A request's id as the client chose it, echoed unchanged in the answer: `"7"` stays a
/// string, `7` a number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    Text(String),
    Number(serde_json::Number),
}

impl RequestId {
    /// The id of a frame read only as JSON (one we could not parse), when it has a usable one.
    pub fn of(frame: &Value) -> Option<Self> {
        match frame.get("id")? {
            Value::String(text) => Some(Self::Text(text.clone())),
            Value::Number(number) => Some(Self::Number(number.clone())),
            _ => None,
        }
    }
}

impl From<&str> for RequestId {
    fn from(text: &str) -> Self {
        Self::Text(text.to_string())
    }
}

impl From<String> for RequestId {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl From<u64> for RequestId {
    fn from(number: u64) -> Self {
        Self::Number(number.into())
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Text(text) => f.write_str(text),
            Self::Number(number) => write!(f, "{number}"),
        }
    }
}

/// Frames a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Authenticate with a device token (alternative: `?token=` on the URL).
    Auth {
        #[serde(default)]
        id: Option<RequestId>,
        token: String,
    },
    /// Subscribe to `topic`. With `resume` on the device's inbox or notifications, first
    /// everything after the device's cursor arrives, in order, then what comes live.
    Sub {
        #[serde(default)]
        id: Option<RequestId>,
        topic: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        resume: bool,
    },
    Unsub {
        #[serde(default)]
        id: Option<RequestId>,
        topic: String,
    },
    /// Publish `payload` (any JSON) on `topic`, under the same rules as an MQTT PUBLISH.
    Pub {
        #[serde(default)]
        id: Option<RequestId>,
        topic: String,
        payload: Value,
    },
    /// Acknowledge the highest sequence held (cursor).
    Ack {
        #[serde(default)]
        id: Option<RequestId>,
        seq: u64,
    },
    /// Catch up on the user's log: pages arrive on the device's reply topic.
    Sync {
        #[serde(default)]
        id: Option<RequestId>,
        #[serde(default)]
        after: Option<u64>,
        #[serde(default)]
        epoch: Option<String>,
    },
    Ping {
        #[serde(default)]
        id: Option<RequestId>,
    },
    Pong {
        #[serde(default)]
        id: Option<RequestId>,
    },
}

impl ClientFrame {
    /// Every `op` a client may send: a frame with one of these that does not parse is an
    /// invalid request, any other `op` an unknown one.
    pub const OPS: [&'static str; 8] =
        ["auth", "sub", "unsub", "pub", "ack", "sync", "ping", "pong"];

    /// The request id, echoed in the answer.
    pub fn id(&self) -> Option<&RequestId> {
        match self {
            Self::Auth { id, .. }
            | Self::Sub { id, .. }
            | Self::Unsub { id, .. }
            | Self::Pub { id, .. }
            | Self::Ack { id, .. }
            | Self::Sync { id, .. }
            | Self::Ping { id }
            | Self::Pong { id } => id.as_ref(),
        }
    }
}

/// Frames the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The request `id` succeeded. After `auth`, `user` and `device` say who the session is.
    Ok {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<String>,
    },
    /// The request `id` (or the frame, when it had no readable id) failed.
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        code: ErrorCode,
        message: String,
        /// For `rate_limited`: when the request may succeed again, in milliseconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// A message on a subscribed topic. `payload` is the message's JSON; a payload that is not
    /// JSON arrives base64-encoded in `payload_base64` instead.
    Msg {
        topic: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payload: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payload_base64: Option<String>,
    },
    Ping {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
    },
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
    },
}

impl ServerFrame {
    pub fn ok(id: Option<RequestId>) -> Self {
        Self::Ok {
            id,
            user: None,
            device: None,
        }
    }

    pub fn error(id: Option<RequestId>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error {
            id,
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_op_a_client_frame_has_is_listed() {
        let frames = [
            ClientFrame::Auth {
                id: None,
                token: String::new(),
            },
            ClientFrame::Sub {
                id: None,
                topic: String::new(),
                resume: false,
            },
            ClientFrame::Unsub {
                id: None,
                topic: String::new(),
            },
            ClientFrame::Pub {
                id: None,
                topic: String::new(),
                payload: Value::Null,
            },
            ClientFrame::Ack { id: None, seq: 0 },
            ClientFrame::Sync {
                id: None,
                after: None,
                epoch: None,
            },
            ClientFrame::Ping { id: None },
            ClientFrame::Pong { id: None },
        ];
        let ops: Vec<String> = (frames.iter())
            .map(|frame| {
                serde_json::to_value(frame).unwrap()["op"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(ops, ClientFrame::OPS);
    }

    #[test]
    fn client_frames_parse_from_documented_json() {
        let frame: ClientFrame =
            serde_json::from_value(json!({"op": "sub", "id": "1", "topic": "u/a/inbox"})).unwrap();
        assert_eq!(
            frame,
            ClientFrame::Sub {
                id: Some("1".into()),
                topic: "u/a/inbox".into(),
                resume: false,
            }
        );
        let ping: ClientFrame = serde_json::from_value(json!({"op": "ping"})).unwrap();
        assert_eq!(ping.id(), None);
        let resume: ClientFrame =
            serde_json::from_value(json!({"op": "sub", "id": 3, "topic": "t", "resume": true}))
                .unwrap();
        assert_eq!(resume.id(), Some(&RequestId::from(3)));
    }

    #[test]
    fn ids_are_echoed_as_sent() {
        for id in [json!(7), json!("7"), json!(2.5)] {
            let frame: ClientFrame =
                serde_json::from_value(json!({"op": "ping", "id": id})).unwrap();
            let answer = serde_json::to_value(ServerFrame::ok(frame.id().cloned())).unwrap();
            assert_eq!(answer["id"], id);
        }
    }

    #[test]
    fn error_frame_carries_code() {
        let frame = ServerFrame::error(Some("7".into()), ErrorCode::UnknownOp, "no such op");
        assert_eq!(
            serde_json::to_value(frame).unwrap(),
            json!({"op": "error", "id": "7", "code": "unknown_op", "message": "no such op"})
        );
    }
}
