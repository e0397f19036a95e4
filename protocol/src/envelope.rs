//! The JSON carried on the per-user topics.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a device publishes on `u/{user}/d/{device}/send` (and `.../signal`). The gateway reads
/// the body as raw JSON (`Body = &RawValue`) where it only passes it on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendRequest<Body = Value> {
    /// The user the message is for.
    pub to: String,
    /// Application content, opaque to the gateway.
    pub body: Body,
    /// The sender's own id for the message, so that sending it again (after a lost answer, a
    /// reconnect or a crash) stores it once. A signal's is not used: signals are never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<ClientMsgId>,
}

/// A sender's own id for a message (`client_msg_id` of a send, the `Idempotency-Key` header of
/// `POST /v1/messages`): a repeat within the gateway's window is answered as the first send was
/// and stored no second time. 1 to [`ClientMsgId::MAX_LEN`] visible ASCII characters (no spaces),
/// which fits every UUID, ULID and base64 form, and bounds what the store keeps per key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClientMsgId(String);

impl ClientMsgId {
    pub const MAX_LEN: usize = 128;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a string is not a [`ClientMsgId`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidClientMsgId;

impl std::fmt::Display for InvalidClientMsgId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a client message id must be 1-{} visible ASCII characters, without spaces",
            ClientMsgId::MAX_LEN
        )
    }
}

impl TryFrom<String> for ClientMsgId {
    type Error = InvalidClientMsgId;

    fn try_from(id: String) -> Result<Self, Self::Error> {
        let visible = id.bytes().all(|b| b.is_ascii_graphic());
        if visible && (1..=Self::MAX_LEN).contains(&id.len()) {
            Ok(Self(id))
        } else {
            Err(InvalidClientMsgId)
        }
    }
}

impl From<ClientMsgId> for String {
    fn from(id: ClientMsgId) -> Self {
        id.0
    }
}

/// A live signal as delivered on `u/{user}/signal`: no sequence, id or time, since it is not
/// stored and never synced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalMessage<Body = Value> {
    /// The sending user (for a backend's signal, the `from` it gave, if any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The device the sender used (none for a backend's signal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_device: Option<String>,
    /// Application content, as the sender gave it.
    pub body: Body,
}

/// A message as delivered on `u/{user}/inbox`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboxMessage {
    /// Position in the recipient's log: every message to a user gets the next number, and a
    /// device acknowledges and syncs by it.
    #[serde(default)]
    pub seq: u64,
    /// Server time of acceptance, milliseconds since the Unix epoch. It comes from a hybrid
    /// logical clock and never goes backwards along a log, whichever node accepted the message.
    #[serde(default)]
    pub ts: u64,
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
        /// Why the device went offline: a [`DisconnectReason`] name (`client_disconnect`,
        /// `keepalive_timeout`, `taken_over`, …), or words when another node noticed it.
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

/// Why a client's session ended: the `reason` of a presence `offline` event, and the label of
/// the gateway's disconnect metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisconnectReason {
    /// The client said goodbye (MQTT DISCONNECT, WebSocket close).
    ClientDisconnect,
    /// The connection broke or was closed without a goodbye.
    SocketClosed,
    /// Nothing arrived within 1.5 keepalives (MQTT) or two ping intervals (JSON WebSocket).
    KeepaliveTimeout,
    /// The client took nothing of what was sent to it within the write timeout.
    WriteTimeout,
    ProtocolError,
    PacketTooLarge,
    /// The client read too slowly: its outbox filled up.
    SlowConsumer,
    /// A newer connection of the same device took over.
    TakenOver,
    /// Logged out by the device policy or the backend.
    Kicked,
    /// The user's account was deleted: the session ends with the connection, and its will is
    /// not published (it would write into what was deleted).
    AccountDeleted,
    ApprovalDenied,
    ApprovalTimeout,
    /// The gateway is shutting down.
    Shutdown,
    /// A 3.1.1 client's message could not be stored; it is not acknowledged, so the client
    /// sends it again after reconnecting.
    StoreUnavailable,
}

impl DisconnectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientDisconnect => "client_disconnect",
            Self::SocketClosed => "socket_closed",
            Self::KeepaliveTimeout => "keepalive_timeout",
            Self::WriteTimeout => "write_timeout",
            Self::ProtocolError => "protocol_error",
            Self::PacketTooLarge => "packet_too_large",
            Self::SlowConsumer => "slow_consumer",
            Self::TakenOver => "taken_over",
            Self::Kicked => "kicked",
            Self::AccountDeleted => "account_deleted",
            Self::ApprovalDenied => "approval_denied",
            Self::ApprovalTimeout => "approval_timeout",
            Self::Shutdown => "shutdown",
            Self::StoreUnavailable => "store_unavailable",
        }
    }
}

/// What a device publishes on `u/{user}/d/{device}/approve`, and the body of the HTTP approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalDecision {
    /// The device waiting for approval.
    pub device: String,
    pub approve: bool,
}

/// What the server says on a device's reply topic. `M` is how a sync page's messages are held:
/// parsed, as a client reads them, or (in the gateway) the stored JSON passed through as it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply<M = InboxMessage> {
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
        /// For `rate_limited`: when the request may succeed again, in milliseconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// This device is held until another device of the user approves it.
    ApprovalPending,
    /// This device was approved and now receives the user's traffic.
    Approved,
    /// This device was denied; the connection closes.
    Denied,
    /// A page of the user's log, in answer to a sync: pages follow one another, in order, with
    /// `more` set until the device has caught up.
    Sync(SyncPage<M>),
}

/// Sent on `u/{user}/d/{device}/sync` (JSON bridge: `op: "sync"`): everything after `after` in
/// the log of epoch `epoch`. Without `after`, the device's stored cursor is used; a device with
/// neither is new to the user and gets the latest messages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    #[serde(default)]
    pub after: Option<u64>,
    #[serde(default)]
    pub epoch: Option<String>,
}

/// Sent on `u/{user}/d/{device}/ack`: the device holds every message up to `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncPage<M = InboxMessage> {
    /// The log's epoch; the device keeps it for its next sync.
    pub epoch: String,
    pub messages: Vec<M>,
    /// The sequences of the entries among `messages` that are in-app notifications (they go
    /// out live on `u/{user}/notify`); the others are messages. Left out when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<u64>,
    /// The highest sequence this page covers: the device's cursor once it holds the page.
    pub to_seq: u64,
    /// More pages follow.
    pub more: bool,
    /// Set on the first page when history the device asked for is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset: Option<HistoryReset>,
}

/// The device's place in the log no longer exists: it must drop what it holds of the user's
/// history (for `epoch_changed`) or accept a gap (for `trimmed`), and it gets what is left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryReset {
    pub reason: HistoryLoss,
    /// The oldest sequence still available; the sync continues from there.
    pub available_from: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryLoss {
    /// The log was recreated (the store was wiped, or the user deleted): sequences restarted.
    EpochChanged,
    /// Retention cut messages after the device's cursor.
    Trimmed,
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
    fn disconnect_reasons_are_named_as_serialized() {
        use DisconnectReason::*;
        for reason in [
            ClientDisconnect,
            SocketClosed,
            KeepaliveTimeout,
            WriteTimeout,
            ProtocolError,
            PacketTooLarge,
            SlowConsumer,
            TakenOver,
            Kicked,
            AccountDeleted,
            ApprovalDenied,
            ApprovalTimeout,
            Shutdown,
            StoreUnavailable,
        ] {
            assert_eq!(
                serde_json::to_value(reason).unwrap(),
                json!(reason.as_str())
            );
        }
    }

    #[test]
    fn a_client_message_id_is_short_visible_ascii() {
        let request: SendRequest =
            serde_json::from_value(json!({"to": "bob", "body": 1, "client_msg_id": "m-1"}))
                .unwrap();
        assert_eq!(request.client_msg_id.unwrap().as_str(), "m-1");
        let long = "x".repeat(ClientMsgId::MAX_LEN + 1);
        for bad in ["", "two words", "caf\u{e9}", "tab\t", long.as_str()] {
            let refused = serde_json::from_value::<SendRequest>(
                json!({"to": "bob", "body": 1, "client_msg_id": bad}),
            )
            .unwrap_err();
            assert!(refused.to_string().contains("client message id"), "{bad:?}");
        }
        let plain: SendRequest = serde_json::from_value(json!({"to": "bob", "body": 1})).unwrap();
        assert_eq!(plain.client_msg_id, None);
    }

    #[test]
    fn inbox_message_omits_absent_sender() {
        let msg = InboxMessage {
            seq: 3,
            id: "m1".into(),
            from: None,
            from_device: None,
            to: "bob".into(),
            body: json!({"text": "hi"}),
            ts: 1,
        };
        assert_eq!(
            serde_json::to_value(&msg).unwrap(),
            json!({"seq": 3, "id": "m1", "to": "bob", "body": {"text": "hi"}, "ts": 1})
        );
    }
}
