//! The JSON carried on the per-user topics.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a device publishes on `u/{user}/d/{device}/send`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendRequest {
    /// The user the message is for.
    pub to: String,
    /// Application content, opaque to the gateway.
    pub body: Value,
}

/// A message as delivered on `u/{user}/inbox`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboxMessage {
    /// Unique id assigned by the gateway when it accepted the message.
    pub id: String,
    /// The sending user (or the backend's `from` for messages posted over HTTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The device the sender used, so the sender's other devices can show where it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_device: Option<String>,
    pub to: String,
    pub body: Value,
    /// Server time of acceptance, milliseconds since the Unix epoch.
    pub ts: u64,
}

/// The classes of device the login policy counts separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Ios,
    Android,
    Web,
    Desktop,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ios => "ios",
            Self::Android => "android",
            Self::Web => "web",
            Self::Desktop => "desktop",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Ios, Self::Android, Self::Web, Self::Desktop]
            .into_iter()
            .find(|p| p.as_str() == s)
    }
}

/// How a device is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    Mqtt,
    MqttTls,
    MqttWs,
    MqttWss,
    JsonWs,
}

impl Transport {
    pub const ALL: [Transport; 5] = [
        Self::Mqtt,
        Self::MqttTls,
        Self::MqttWs,
        Self::MqttWss,
        Self::JsonWs,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mqtt => "mqtt",
            Self::MqttTls => "mqtt_tls",
            Self::MqttWs => "mqtt_ws",
            Self::MqttWss => "mqtt_wss",
            Self::JsonWs => "json_ws",
        }
    }
}

/// One online device, as listed by `GET /v1/users/{user}/devices` and in presence events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub device: String,
    pub platform: Platform,
    pub transport: Transport,
    /// Milliseconds since the Unix epoch.
    pub connected_at: u64,
    /// Milliseconds since the Unix epoch of the last packet or frame received.
    pub last_seen: u64,
    /// False while the device waits for approval from another of the user's devices.
    pub approved: bool,
}

/// What goes out on `u/{user}/presence`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PresenceEvent {
    Online {
        device: DeviceInfo,
    },
    Offline {
        device: String,
        /// Why the device went offline: `disconnect`, `keepalive_timeout`, `kicked`, `taken_over`, …
        reason: String,
    },
    /// The device was logged out by the server; `reason` is text an app can show.
    Kicked {
        device: String,
        reason: String,
    },
    /// A device the user never used before asks to log in; answer on `.../approve`.
    ApprovalRequest {
        device: String,
        platform: Platform,
    },
    /// The answer to an approval request, sent to all of the user's devices.
    ApprovalResolved {
        device: String,
        approved: bool,
        /// The device that decided, or `null` when the backend decided over HTTP.
        by: Option<String>,
    },
}

/// What a device publishes on `u/{user}/d/{device}/approve`, and the body of the HTTP approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalDecision {
    /// The device waiting for approval.
    pub device: String,
    pub approve: bool,
}

/// What the server says on a device's reply topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// A request on a device topic was accepted; `id` names what it created, if anything.
    Ok {
        action: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// A request on a device topic failed.
    Error {
        action: String,
        code: crate::ErrorCode,
        message: String,
    },
    /// This device is held until another device of the user approves it.
    ApprovalPending,
    /// This device was approved and now receives the user's traffic.
    Approved,
    /// This device was denied; the connection closes.
    Denied,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn presence_events_are_tagged_by_type() {
        let event = PresenceEvent::Kicked {
            device: "p1".into(),
            reason: "logged in on another phone".into(),
        };
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            json!({"type": "kicked", "device": "p1", "reason": "logged in on another phone"})
        );
    }

    #[test]
    fn inbox_message_omits_absent_sender() {
        let msg = InboxMessage {
            id: "m1".into(),
            from: None,
            from_device: None,
            to: "bob".into(),
            body: json!({"text": "hi"}),
            ts: 1,
        };
        assert_eq!(
            serde_json::to_value(&msg).unwrap(),
            json!({"id": "m1", "to": "bob", "body": {"text": "hi"}, "ts": 1})
        );
    }
}
