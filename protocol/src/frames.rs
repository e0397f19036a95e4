//! The JSON WebSocket protocol (`/ws`): one JSON object per text frame, tagged by `op`.
//!
//! A client request carries an `id` of its choosing; the server answers it with `ok` or `error`
//! carrying the same `id`. Messages arrive as `msg` frames. See the README for a walk-through.

use crate::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Frames a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Authenticate with a device token (alternative: `?token=` on the URL).
    Auth {
        #[serde(default)]
        id: Option<String>,
        token: String,
    },
    Sub {
        #[serde(default)]
        id: Option<String>,
        topic: String,
    },
    Unsub {
        #[serde(default)]
        id: Option<String>,
        topic: String,
    },
    /// Publish `payload` (any JSON) on `topic`, under the same rules as an MQTT PUBLISH.
    Pub {
        #[serde(default)]
        id: Option<String>,
        topic: String,
        payload: Value,
    },
    /// Acknowledge the highest sequence held (cursor).
    Ack {
        #[serde(default)]
        id: Option<String>,
        seq: u64,
    },
    /// Catch up on the user's log: pages arrive on the device's reply topic.
    Sync {
        #[serde(default)]
        id: Option<String>,
        #[serde(default)]
        after: Option<u64>,
        #[serde(default)]
        epoch: Option<String>,
    },
    Ping {
        #[serde(default)]
        id: Option<String>,
    },
    Pong {
        #[serde(default)]
        id: Option<String>,
    },
}

impl ClientFrame {
    /// The request id, echoed in the answer.
    pub fn id(&self) -> Option<&str> {
        match self {
            Self::Auth { id, .. }
            | Self::Sub { id, .. }
            | Self::Unsub { id, .. }
            | Self::Pub { id, .. }
            | Self::Ack { id, .. }
            | Self::Sync { id, .. }
            | Self::Ping { id }
            | Self::Pong { id } => id.as_deref(),
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
        id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<String>,
    },
    /// The request `id` (or the frame, when it had no readable id) failed.
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        code: ErrorCode,
        message: String,
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
        id: Option<String>,
    },
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
}

impl ServerFrame {
    pub fn ok(id: Option<String>) -> Self {
        Self::Ok {
            id,
            user: None,
            device: None,
        }
    }

    pub fn error(id: Option<String>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error {
            id,
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn client_frames_parse_from_documented_json() {
        let frame: ClientFrame =
            serde_json::from_value(json!({"op": "sub", "id": "1", "topic": "u/a/inbox"})).unwrap();
        assert_eq!(
            frame,
            ClientFrame::Sub {
                id: Some("1".into()),
                topic: "u/a/inbox".into()
            }
        );
        let ping: ClientFrame = serde_json::from_value(json!({"op": "ping"})).unwrap();
        assert_eq!(ping.id(), None);
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
