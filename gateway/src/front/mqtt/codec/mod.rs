//! MQTT 3.1.1 and 5 on the wire, behind one vocabulary.
//!
//! The packet encoding itself is rumqttc's `mqttbytes` (symmetric: it reads and writes every
//! packet type, with public fields). This module detects the protocol level from the CONNECT,
//! turns both versions' packets into [`Inbound`], and writes our answers in the client's version,
//! with v5 reason codes and properties where v5 has them: [`v4`] and [`v5`] translate, this file
//! holds the vocabulary and dispatches.

mod v4;
mod v5;

use crate::live::link::Qos;
use crate::live::message::MessageProperties;
use bytes::{Bytes, BytesMut};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V311,
    V5,
}

/// A CONNECT, either version.
#[derive(Debug, Clone)]
pub struct ConnectRequest {
    pub version: Version,
    pub client_id: String,
    pub keep_alive: u16,
    pub password: Option<String>,
    /// 3.1.1 Clean Session, v5 Clean Start: no session is taken up.
    pub clean_start: bool,
    /// v5 Session Expiry Interval in seconds (absent: 0); 3.1.1 has none.
    pub session_expiry: Option<u32>,
    /// How many QoS 1 and 2 messages the client takes unacknowledged (v5; absent: 65,535).
    pub receive_maximum: Option<u16>,
    /// The largest packet the client takes (v5; absent: no limit).
    pub max_packet_size: Option<u32>,
    /// How many topic aliases the client takes from us (v5; absent: 0).
    pub topic_alias_maximum: u16,
    pub will: Option<Will>,
}

#[derive(Debug, Clone)]
pub struct Will {
    pub topic: String,
    pub payload: Bytes,
    pub qos: Qos,
    pub retain: bool,
    pub properties: MessageProperties,
    /// v5 Will Delay Interval, seconds.
    pub delay: u32,
    /// v5 Message Expiry Interval, seconds.
    pub expiry: Option<u32>,
}

/// A PUBLISH from a client.
#[derive(Debug, Clone)]
pub struct PublishIn {
    /// Empty when the client names the topic by its alias only.
    pub topic: String,
    pub payload: Bytes,
    /// 0, 1 or 2, as the client sent it (3 is malformed).
    pub qos: u8,
    pub pkid: u16,
    pub retain: bool,
    pub dup: bool,
    pub properties: MessageProperties,
    /// v5 Message Expiry Interval, seconds.
    pub expiry: Option<u32>,
    pub topic_alias: Option<u16>,
    /// A client may not send Subscription Identifiers (v5 3.3.4): a protocol error.
    pub has_subscription_ids: bool,
}

/// One filter of a SUBSCRIBE, with its options (3.1.1 has only the QoS).
#[derive(Debug, Clone)]
pub struct FilterRequest {
    pub filter: String,
    pub qos: Qos,
    pub no_local: bool,
    pub retain_as_published: bool,
    /// 0: send retained messages at subscribe; 1: only for a new subscription; 2: never.
    pub retain_handling: u8,
}

/// A packet from an established client.
#[derive(Debug)]
pub enum Inbound {
    Publish(PublishIn),
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    Subscribe {
        pkid: u16,
        filters: Vec<FilterRequest>,
        /// The v5 Subscription Identifier given to all of them.
        id: Option<u32>,
    },
    Unsubscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    PingReq,
    /// `with_will`: a v5 client asked for its will to be sent anyway (reason 0x04);
    /// `session_expiry`: it changes its Session Expiry Interval as it leaves.
    Disconnect {
        with_will: bool,
        session_expiry: Option<u32>,
    },
    /// A packet a client must not send now (a second CONNECT, a CONNACK, …).
    Unexpected(&'static str),
}

/// A PUBLISH to a client.
#[derive(Debug, Clone)]
pub struct PublishOut<'a> {
    /// Empty when the client knows the topic by `topic_alias` already.
    pub topic: &'a str,
    pub payload: Bytes,
    pub qos: Qos,
    pub pkid: u16,
    pub dup: bool,
    pub retain: bool,
    pub properties: &'a MessageProperties,
    /// The seconds of the message's expiry interval left.
    pub expiry_left: Option<u32>,
    pub subscription_ids: &'a [u32],
    pub topic_alias: Option<u16>,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("packet of {size} bytes exceeds the limit of {max}")]
    TooLarge { size: usize, max: u32 },
    #[error("unsupported protocol level {0}")]
    UnsupportedVersion(u8),
    #[error("the first packet must be CONNECT")]
    NotConnect,
    #[error("malformed packet: {0}")]
    Malformed(String),
}

/// How a CONNECT is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnackCode {
    Accepted,
    NotAuthorized,
    UnsupportedVersion,
    /// 3.1.1: an empty client id asked for a session to be kept.
    ClientIdRejected,
    /// The session could not be taken up now (its previous connection did not hand it back
    /// in time, or the store is away): retry.
    Unavailable,
}

/// What a CONNACK tells the client about its session and (v5) our limits.
#[derive(Debug, Clone, Default)]
pub struct ConnackInfo {
    pub session_present: bool,
    pub server_keep_alive: Option<u16>,
    pub max_packet_size: Option<u32>,
    pub receive_maximum: Option<u16>,
    pub topic_alias_maximum: Option<u16>,
    /// The session expiry granted, when it is less than asked for.
    pub session_expiry: Option<u32>,
    pub assigned_client_id: Option<String>,
    pub reason: Option<String>,
}

/// How a publish was taken, for the v5 PUBACK or PUBREC reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCode {
    Success,
    NotAuthorized,
    TopicNameInvalid,
    /// The packet id is in use by a QoS 2 publish still waiting for its PUBREL.
    PacketIdInUse,
    QuotaExceeded,
    PayloadFormatInvalid,
    /// The gateway cannot take it now (the store is away): retry later.
    Unavailable,
    /// Refused without saying why (`auth.anonymous_withheld`).
    Unspecified,
}

/// Why the server closes, for the v5 DISCONNECT reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectCode {
    TakenOver,
    KeepAliveTimeout,
    NotAuthorized,
    PacketTooLarge,
    ProtocolError,
    QuotaExceeded,
    ReceiveMaximumExceeded,
    TopicAliasInvalid,
    Administrative,
    ShuttingDown,
}

/// Why one filter of a SUBSCRIBE was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeRefusal {
    NotAuthorized,
    FilterInvalid,
    QuotaExceeded,
    SharedNotSupported,
    /// Refused without saying why (`auth.anonymous_withheld`).
    Unspecified,
}

/// The protocol level of the CONNECT at the start of `buf`, or `None` when more bytes are needed.
pub fn peek_connect_version(
    buf: &[u8],
    max_packet_size: u32,
) -> Result<Option<Version>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first != 0x10 {
        return Err(DecodeError::NotConnect);
    }
    // Remaining length: up to four bytes of 7-bit groups.
    let mut remaining: usize = 0;
    let mut header_len = 1;
    loop {
        let Some(&byte) = buf.get(header_len) else {
            return Ok(None);
        };
        remaining |= ((byte & 0x7f) as usize) << (7 * (header_len - 1));
        header_len += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if header_len > 4 {
            return Err(DecodeError::Malformed("remaining length too long".into()));
        }
    }
    if remaining > max_packet_size as usize {
        return Err(DecodeError::TooLarge {
            size: remaining,
            max: max_packet_size,
        });
    }
    let body = &buf[header_len..];
    if body.len() < 2 {
        return Ok(None);
    }
    let name_len = u16::from_be_bytes([body[0], body[1]]) as usize;
    let Some(&level) = body.get(2 + name_len) else {
        return Ok(None);
    };
    match level {
        4 => Ok(Some(Version::V311)),
        5 => Ok(Some(Version::V5)),
        other => Err(DecodeError::UnsupportedVersion(other)),
    }
}

/// The QoS of a level a client sent, where 3 is malformed (the codec refuses it before).
fn qos_of(level: u8) -> Qos {
    Qos::from_level(level).unwrap_or(Qos::ExactlyOnce)
}

/// Reads the CONNECT once [`peek_connect_version`] found its version. `Ok(None)`: need more bytes.
pub fn read_connect(
    version: Version,
    buf: &mut BytesMut,
    max: u32,
) -> Result<Option<ConnectRequest>, DecodeError> {
    match version {
        Version::V311 => v4::read_connect(buf, max),
        Version::V5 => v5::read_connect(buf, max),
    }
}

/// Whether the packets at the start of `buf` (the last one may be incomplete) include a PUBLISH.
/// Only the fixed headers are read: packet type and remaining length, the same in both versions.
pub fn holds_publish(buf: &[u8]) -> bool {
    const PUBLISH: u8 = 3;
    let mut at = 0;
    while let Some(&first) = buf.get(at) {
        if first >> 4 == PUBLISH {
            return true;
        }
        let (mut remaining, mut shift, mut header) = (0usize, 0, 1);
        loop {
            let Some(&byte) = buf.get(at + header) else {
                return false;
            };
            remaining |= usize::from(byte & 0x7F) << shift;
            header += 1;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 21 {
                return false;
            }
        }
        at += header + remaining;
    }
    false
}

/// Reads and writes packets of one established connection in its protocol version.
#[derive(Debug, Clone, Copy)]
pub struct Codec {
    pub version: Version,
    /// The largest packet the gateway reads.
    pub max_packet_size: u32,
    /// The largest packet the client takes (its v5 Maximum Packet Size): nothing larger is sent.
    pub client_max_packet: Option<u32>,
}

impl Codec {
    /// The next complete packet in `buf`, or `None` when more bytes are needed.
    pub fn read(&self, buf: &mut BytesMut) -> Result<Option<Inbound>, DecodeError> {
        let max = self.max_packet_size;
        let read = match self.version {
            Version::V311 => v4::read(buf, max),
            Version::V5 => v5::read(buf, max),
        };
        match read {
            // rumqttc reads an UNSUBSCRIBE without topic filters (it refuses such a SUBSCRIBE),
            // which MQTT forbids (3.1.1 and 5, 3.10.3): its v5 UNSUBACK would carry no reason
            // code, which clients cannot read.
            Ok(Some(Inbound::Unsubscribe { filters, .. })) if filters.is_empty() => Err(
                DecodeError::Malformed("UNSUBSCRIBE without topic filters".into()),
            ),
            Err(DecodeError::TooLarge { size, .. }) => Err(DecodeError::TooLarge { size, max }),
            other => other,
        }
    }

    pub fn connack(&self, code: ConnackCode, info: ConnackInfo, out: &mut BytesMut) {
        match self.version {
            Version::V311 => v4::connack(code, info.session_present, out),
            Version::V5 => v5::connack(code, info, self.client_max_packet, out),
        }
    }

    /// Writes a PUBLISH; returns its size, or `None` (nothing written) when it is larger than
    /// the client takes.
    pub fn publish(&self, publish: &PublishOut<'_>, out: &mut BytesMut) -> Option<usize> {
        match self.version {
            Version::V311 => v4::publish(publish, out),
            Version::V5 => v5::publish(publish, self.client_max_packet, out),
        }
    }

    pub fn puback(&self, pkid: u16, code: AckCode, out: &mut BytesMut) {
        match self.version {
            Version::V311 => v4::puback(pkid, out),
            Version::V5 => v5::puback(pkid, code, self.client_max_packet, out),
        }
    }

    /// The answer to a QoS 2 publish: it is taken (or refused, v5), and its PUBREL is awaited.
    pub fn pubrec(&self, pkid: u16, code: AckCode, out: &mut BytesMut) {
        match self.version {
            Version::V311 => v4::pubrec(pkid, out),
            Version::V5 => v5::pubrec(pkid, code, self.client_max_packet, out),
        }
    }

    /// The release of a QoS 2 delivery the client received (its PUBREC came).
    pub fn pubrel(&self, pkid: u16, out: &mut BytesMut) {
        match self.version {
            Version::V311 => v4::pubrel(pkid, out),
            Version::V5 => v5::pubrel(pkid, self.client_max_packet, out),
        }
    }

    /// The end of a QoS 2 publish from the client (its PUBREL came); `known` is false when no
    /// publish waited under that packet id (v5: reason 0x92).
    pub fn pubcomp(&self, pkid: u16, known: bool, out: &mut BytesMut) {
        match self.version {
            Version::V311 => v4::pubcomp(pkid, out),
            Version::V5 => v5::pubcomp(pkid, known, self.client_max_packet, out),
        }
    }

    /// One result per filter: the granted QoS, or a refusal (3.1.1: 0x80; v5: its reason).
    /// False when it was not written: one result per filter made it larger than the client
    /// takes (MQTT 5), and it has no part to leave out.
    #[must_use]
    pub fn suback(
        &self,
        pkid: u16,
        results: &[Result<Qos, SubscribeRefusal>],
        out: &mut BytesMut,
    ) -> bool {
        match self.version {
            Version::V311 => {
                v4::suback(pkid, results, out);
                true
            }
            Version::V5 => v5::suback(pkid, results, self.client_max_packet, out),
        }
    }

    /// One answer per filter; false when it was not written, as for [`suback`](Self::suback).
    #[must_use]
    pub fn unsuback(&self, pkid: u16, existed: &[bool], out: &mut BytesMut) -> bool {
        match self.version {
            Version::V311 => {
                v4::unsuback(pkid, out);
                true
            }
            Version::V5 => v5::unsuback(pkid, existed, self.client_max_packet, out),
        }
    }

    pub fn pingresp(&self, out: &mut BytesMut) {
        match self.version {
            Version::V311 => v4::pingresp(out),
            Version::V5 => v5::pingresp(self.client_max_packet, out),
        }
    }

    /// A server DISCONNECT with a reason (v5 only; 3.1.1 has no server DISCONNECT: the socket
    /// just closes).
    pub fn disconnect(&self, code: DisconnectCode, reason: &str, out: &mut BytesMut) {
        if self.version == Version::V5 {
            v5::disconnect(code, reason, self.client_max_packet, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::mqttbytes::v4;

    fn v4_connect(level_bytes: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        let mut connect = v4::Connect::new("c1");
        connect.login = Some(v4::Login::new("u", "token"));
        v4::Packet::Connect(connect)
            .write(&mut out, 1 << 20)
            .unwrap();
        if !level_bytes.is_empty() {
            // protocol level sits after fixed header (2 bytes here) and "MQTT" name (6 bytes)
            out[8] = level_bytes[0];
        }
        out
    }

    #[test]
    fn finds_a_publish_behind_other_packets() {
        let pingreq = [0xC0, 0x00];
        let puback = [0x40, 0x02, 0x00, 0x01];
        let publish = [0x30, 0x03, 0x00, 0x01, b'a'];
        assert!(!holds_publish(&[]));
        assert!(!holds_publish(&[pingreq, pingreq].concat()));
        assert!(holds_publish(&[&pingreq[..], &puback, &publish].concat()));
        assert!(
            holds_publish(&publish[..1]),
            "the type is in the first byte"
        );
        assert!(!holds_publish(&[0x82, 0xFF]), "an incomplete length");
        assert!(
            !holds_publish(&[0x82, 0x80, 0x01, 0x30]),
            "inside a SUBSCRIBE's body"
        );
    }

    #[test]
    fn detects_versions_and_rejects_others() {
        let buf = v4_connect(&[]);
        assert_eq!(
            peek_connect_version(&buf, 1 << 20).unwrap(),
            Some(Version::V311)
        );
        assert_eq!(peek_connect_version(&buf[..5], 1 << 20).unwrap(), None);
        assert!(matches!(
            peek_connect_version(&v4_connect(&[3]), 1 << 20),
            Err(DecodeError::UnsupportedVersion(3))
        ));
        assert!(matches!(
            peek_connect_version(&[0x30, 0], 1 << 20),
            Err(DecodeError::NotConnect)
        ));
    }

    #[test]
    fn reads_connect_password() {
        let mut buf = v4_connect(&[]);
        let connect = read_connect(Version::V311, &mut buf, 1 << 20)
            .unwrap()
            .unwrap();
        assert_eq!(connect.password.as_deref(), Some("token"));
        assert!(buf.is_empty());
    }

    /// Found by the `mqtt` fuzz target: a v5 UNSUBSCRIBE with no topic filter (and a
    /// remaining length in two bytes) was answered with an UNSUBACK without reason codes.
    #[test]
    fn an_unsubscribe_without_filters_is_malformed() {
        let crash =
            b"\x10F\x00\x04MQTT\x05\xd6\x00\x1e\x10\x11\x00?\x0e\x10!\x00\x02'\x00\x00\x01\x00\
            \x22\x00\x03\x00\x02c6\x0a\x18\x00\x00\x00\x05\x02\x00\x00\x00\x1e\x00\x08pub/wi\
            ll\x00\x04gone\x00\x05alice\x00\x03to\x02\xad\x83\x00\x01\x04\x00";
        crate::fuzzing::mqtt(crash);
        for (version, unsubscribe) in [
            (Version::V5, &[0xA2, 0x03, 0x00, 0x01, 0x00][..]),
            (Version::V311, &[0xA2, 0x02, 0x00, 0x01][..]),
        ] {
            let codec = Codec {
                version,
                max_packet_size: 1024,
                client_max_packet: None,
            };
            let mut buf = BytesMut::from(unsubscribe);
            assert!(
                matches!(codec.read(&mut buf), Err(DecodeError::Malformed(_))),
                "{version:?}"
            );
        }
    }

    #[test]
    fn oversized_packets_are_refused_before_reading_them() {
        let codec = Codec {
            version: Version::V311,
            max_packet_size: 1024,
            client_max_packet: None,
        };
        let mut buf = BytesMut::new();
        let publish = v4::Publish::new("t", rumqttc::QoS::AtMostOnce, vec![0u8; 4096]);
        v4::Packet::Publish(publish)
            .write(&mut buf, usize::MAX)
            .unwrap();
        buf.truncate(10); // the header alone is enough to refuse it
        assert!(matches!(
            codec.read(&mut buf),
            Err(DecodeError::TooLarge { max: 1024, .. })
        ));
    }

    #[test]
    fn nothing_larger_than_a_v5_client_takes_is_sent() {
        use rumqttc::v5::mqttbytes::v5 as client;
        let codec = Codec {
            version: Version::V5,
            max_packet_size: 1024,
            client_max_packet: Some(24),
        };
        let read = |out: &mut BytesMut| {
            assert!(out.len() <= 24, "{} bytes", out.len());
            let bytes = out.to_vec();
            client::Packet::read(out, None).unwrap_or_else(|e| panic!("{e:?} reading {bytes:?}"))
        };
        let long_reason = "a reason far longer than the client takes";

        let mut out = BytesMut::new();
        let info = ConnackInfo {
            reason: Some(long_reason.into()),
            ..ConnackInfo::default()
        };
        codec.connack(ConnackCode::NotAuthorized, info, &mut out);
        let client::Packet::ConnAck(connack) = read(&mut out) else {
            panic!("not a CONNACK")
        };
        assert_eq!(connack.code, client::ConnectReturnCode::NotAuthorized);
        assert_eq!(connack.properties.and_then(|p| p.reason_string), None);

        codec.disconnect(DisconnectCode::Administrative, long_reason, &mut out);
        let client::Packet::Disconnect(disconnect) = read(&mut out) else {
            panic!("not a DISCONNECT")
        };
        assert_eq!(
            disconnect.reason_code,
            client::DisconnectReasonCode::AdministrativeAction
        );
        assert_eq!(disconnect.properties.and_then(|p| p.reason_string), None);

        codec.disconnect(DisconnectCode::Administrative, "short", &mut out);
        let client::Packet::Disconnect(disconnect) = read(&mut out) else {
            panic!("not a DISCONNECT")
        };
        let reason = disconnect.properties.and_then(|p| p.reason_string);
        assert_eq!(reason.as_deref(), Some("short"), "kept where it fits");

        // A SUBACK has no part to leave out: one too large is not sent.
        assert!(!codec.suback(1, &[Ok(Qos::AtLeastOnce); 30], &mut out));
        assert!(!codec.unsuback(1, &[true; 30], &mut out));
        assert!(out.is_empty());
        assert!(codec.suback(1, &[Ok(Qos::AtLeastOnce); 3], &mut out));
        assert!(matches!(read(&mut out), client::Packet::SubAck(_)));
    }
}
