//! A message on its way to the links subscribed to its topic: what the publisher sent, with
//! what MQTT 5 lets it attach, shared by every receiver.

use super::link::LinkId;
use crate::infra::time::unix_millis;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// What an MQTT 5 publisher may attach to a message, passed through to its subscribers as sent.
/// A 3.1.1 subscriber cannot be told any of it and gets the payload alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageProperties {
    /// 1: the payload is UTF-8 text; 0 or absent: unspecified bytes.
    pub payload_format_indicator: Option<u8>,
    pub content_type: Option<String>,
    /// Request/response: where the receiver should answer, and what ties the answer to the
    /// request.
    pub response_topic: Option<String>,
    #[serde(with = "base64_bytes")]
    pub correlation_data: Option<Bytes>,
    pub user_properties: Vec<(String, String)>,
}

/// A message without properties.
static NO_PROPERTIES: MessageProperties = MessageProperties {
    payload_format_indicator: None,
    content_type: None,
    response_topic: None,
    correlation_data: None,
    user_properties: Vec::new(),
};

impl MessageProperties {
    pub fn is_empty(&self) -> bool {
        *self == NO_PROPERTIES
    }

    /// As a [`Published`] holds them: nothing for none, which most messages have.
    pub fn boxed(self) -> Option<Box<Self>> {
        (!self.is_empty()).then(|| Box::new(self))
    }
}

/// A message as the fan-out hands it to links.
#[derive(Debug, Default)]
pub struct Published {
    pub topic: String,
    pub payload: Bytes,
    /// Boxed: most messages have none, and every message is allocated once per publish.
    pub properties: Option<Box<MessageProperties>>,
    /// When the message is no longer delivered (its MQTT 5 Message Expiry Interval); a
    /// subscriber gets the time that is left.
    pub expires_at: Option<Instant>,
    /// The publisher's retain flag, which a subscription with Retain As Published sees.
    pub retain: bool,
    /// The link that published it, which a subscription with No Local does not get it back on.
    pub origin: Option<LinkId>,
    /// For an entry of a user's log (inbox, in-app notifications): its sequence, by which a
    /// device following its log sees what it already has and what it missed.
    pub seq: Option<u64>,
    /// For an entry just committed to a user's log: when it became durable, where the stages
    /// of its delivery begin (see [`crate::infra::latency_budget`]).
    pub durable_at: Option<Instant>,
}

impl Published {
    /// A message with nothing but its topic and payload: what the gateway itself publishes.
    pub fn new(topic: impl Into<String>, payload: Bytes) -> Self {
        Self {
            topic: topic.into(),
            payload,
            ..Self::default()
        }
    }

    pub fn properties(&self) -> &MessageProperties {
        self.properties.as_deref().unwrap_or(&NO_PROPERTIES)
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The seconds of its expiry interval left at `now` (rounded up, so a message never goes
    /// out with 0 seconds left while it is still alive).
    pub fn expiry_left(&self, now: Instant) -> Option<u32> {
        let left = self.expires_at?.saturating_duration_since(now);
        Some(u32::try_from(left.as_millis().div_ceil(1000)).unwrap_or(u32::MAX))
    }
}

/// A message as kept while nobody can take it (retained, queued for a session whose client is
/// away, or unacknowledged when its client left): what a subscriber gets, with its expiry as a
/// wall-clock time, since it may outlive this process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeptMessage {
    topic: String,
    #[serde(with = "base64_bytes")]
    payload: Option<Bytes>,
    #[serde(default, skip_serializing_if = "MessageProperties::is_empty")]
    properties: MessageProperties,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at_ms: Option<u64>,
    #[serde(default)]
    retain: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    qos: Option<u8>,
    /// Its place in the user's log, for an entry of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
}

impl Published {
    /// The message as kept, delivered later at `qos`.
    pub fn keep(&self, qos: Option<u8>) -> KeptMessage {
        let now = Instant::now();
        KeptMessage {
            topic: self.topic.clone(),
            payload: Some(self.payload.clone()),
            properties: self.properties().clone(),
            expires_at_ms: self
                .expires_at
                .map(|at| unix_millis() + at.saturating_duration_since(now).as_millis() as u64),
            retain: self.retain,
            qos,
            seq: self.seq,
        }
    }

    /// The message as kept in the store, delivered later at `qos`.
    pub fn encode(&self, qos: Option<u8>) -> Vec<u8> {
        serde_json::to_vec(&self.keep(qos)).expect("a kept message serializes")
    }

    /// A message kept by [`encode`](Self::encode), with the QoS it was kept for; `None` for
    /// bytes that are not one (a damaged entry is skipped, not fatal).
    pub fn decode(bytes: &[u8]) -> Option<(Self, Option<u8>)> {
        let kept: KeptMessage = serde_json::from_slice(bytes).ok()?;
        Some(Self::unkeep(kept))
    }

    /// The message a [`KeptMessage`] holds, with the QoS it was kept for.
    pub fn unkeep(kept: KeptMessage) -> (Self, Option<u8>) {
        let now_ms = unix_millis();
        let expires_at = kept
            .expires_at_ms
            .map(|at| Instant::now() + Duration::from_millis(at.saturating_sub(now_ms)));
        let message = Self {
            topic: kept.topic,
            payload: kept.payload.unwrap_or_default(),
            properties: kept.properties.boxed(),
            expires_at,
            retain: kept.retain,
            origin: None,
            seq: kept.seq,
            durable_at: None,
        };
        (message, kept.qos)
    }
}

/// Bytes as base64 text in JSON.
mod base64_bytes {
    use super::BASE64;
    use base64::Engine;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        bytes: &Option<Bytes>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => serializer.serialize_some(&BASE64.encode(bytes)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Bytes>, D::Error> {
        let text: Option<String> = Option::deserialize(deserializer)?;
        text.map(|text| BASE64.decode(text).map(Bytes::from))
            .transpose()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_message_comes_back_as_it_was_with_its_time_left() {
        let message = Published {
            properties: MessageProperties::boxed(MessageProperties {
                content_type: Some("text/plain".into()),
                correlation_data: Some(Bytes::from_static(&[0, 1, 2])),
                user_properties: vec![("k".into(), "v".into())],
                ..MessageProperties::default()
            }),
            expires_at: Some(Instant::now() + Duration::from_secs(30)),
            retain: true,
            ..Published::new("t/1", Bytes::from_static(b"\x00\xffpayload"))
        };
        let (back, qos) = Published::decode(&message.encode(Some(2))).unwrap();
        assert_eq!(qos, Some(2));
        assert_eq!(
            (back.topic.as_str(), &back.payload[..]),
            ("t/1", &b"\x00\xffpayload"[..])
        );
        assert_eq!(back.properties, message.properties);
        assert!(back.retain);
        let left = back.expiry_left(Instant::now()).unwrap();
        assert!((29..=30).contains(&left), "{left}");
        assert!(Published::decode(b"not a message").is_none());
    }
}
