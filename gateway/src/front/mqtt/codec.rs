//! MQTT 3.1.1 and 5 on the wire, behind one vocabulary.
//!
//! The packet encoding itself is rumqttc's `mqttbytes` (symmetric: it reads and writes every
//! packet type, with public fields). This module detects the protocol level from the CONNECT,
//! turns both versions' packets into [`Inbound`], and writes our answers in the client's version,
//! with v5 reason codes where v5 has them.

use crate::live::link::Qos;
use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;

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
    pub will: Option<Will>,
}

#[derive(Debug, Clone)]
pub struct Will {
    pub topic: String,
    pub payload: Bytes,
    pub qos: Qos,
}

/// A packet from an established client.
#[derive(Debug)]
pub enum Inbound {
    Publish {
        topic: String,
        payload: Bytes,
        /// 0, 1 or 2, as the client sent it.
        qos: u8,
        pkid: u16,
    },
    PubAck(u16),
    PubRel(u16),
    Subscribe {
        pkid: u16,
        filters: Vec<(String, Qos)>,
    },
    Unsubscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    PingReq,
    /// `with_will`: a v5 client asked for its will to be sent anyway (reason 0x04).
    Disconnect {
        with_will: bool,
    },
    /// A packet a client must not send now (a second CONNECT, a CONNACK, …).
    Unexpected(&'static str),
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
}

/// What a v5 CONNACK tells the client about our limits.
#[derive(Debug, Clone, Default)]
pub struct ConnackInfo {
    pub server_keep_alive: Option<u16>,
    pub max_packet_size: Option<u32>,
    pub reason: Option<String>,
}

/// Why a publish was not taken, for the v5 PUBACK reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubAckCode {
    Success,
    NotAuthorized,
    TopicNameInvalid,
    PayloadFormatInvalid,
    Unavailable,
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
    Administrative,
    ShuttingDown,
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

fn qos_of(level: u8) -> Qos {
    if level == 0 {
        Qos::AtMostOnce
    } else {
        Qos::AtLeastOnce
    }
}

/// Reads the CONNECT once [`peek_connect_version`] found its version. `Ok(None)`: need more bytes.
pub fn read_connect(
    version: Version,
    buf: &mut BytesMut,
    max: u32,
) -> Result<Option<ConnectRequest>, DecodeError> {
    match version {
        Version::V311 => match v4::Packet::read(buf, max as usize) {
            Ok(v4::Packet::Connect(c)) => Ok(Some(ConnectRequest {
                version,
                client_id: c.client_id,
                keep_alive: c.keep_alive,
                password: c.login.map(|l| l.password),
                will: c.last_will.map(|w| Will {
                    topic: w.topic,
                    payload: w.message,
                    qos: qos_of(w.qos as u8),
                }),
            })),
            Ok(_) => Err(DecodeError::NotConnect),
            Err(e) => v4_error(e),
        },
        Version::V5 => match v5::Packet::read(buf, Some(max)) {
            Ok(v5::Packet::Connect(c, will, login)) => Ok(Some(ConnectRequest {
                version,
                client_id: c.client_id,
                keep_alive: c.keep_alive,
                password: login.map(|l| l.password),
                will: will.map(|w| Will {
                    topic: String::from_utf8_lossy(&w.topic).into_owned(),
                    payload: w.message,
                    qos: qos_of(w.qos as u8),
                }),
            })),
            Ok(_) => Err(DecodeError::NotConnect),
            Err(e) => v5_error(e),
        },
    }
}

fn v4_error<T>(e: rumqttc::mqttbytes::Error) -> Result<Option<T>, DecodeError> {
    use rumqttc::mqttbytes::Error;
    match e {
        Error::InsufficientBytes(_) => Ok(None),
        Error::PayloadSizeLimitExceeded(size) => Err(DecodeError::TooLarge { size, max: 0 }),
        other => Err(DecodeError::Malformed(other.to_string())),
    }
}

fn v5_error<T>(e: rumqttc::v5::mqttbytes::Error) -> Result<Option<T>, DecodeError> {
    use rumqttc::v5::mqttbytes::Error;
    match e {
        Error::InsufficientBytes(_) => Ok(None),
        Error::PayloadSizeLimitExceeded { pkt_size, max } => Err(DecodeError::TooLarge {
            size: pkt_size,
            max,
        }),
        other => Err(DecodeError::Malformed(other.to_string())),
    }
}

/// Reads and writes packets of one established connection in its protocol version.
#[derive(Debug, Clone, Copy)]
pub struct Codec {
    pub version: Version,
    pub max_packet_size: u32,
}

impl Codec {
    /// The next complete packet in `buf`, or `None` when more bytes are needed.
    pub fn read(&self, buf: &mut BytesMut) -> Result<Option<Inbound>, DecodeError> {
        let max = self.max_packet_size;
        let too_large = |e: DecodeError| match e {
            DecodeError::TooLarge { size, .. } => DecodeError::TooLarge { size, max },
            other => other,
        };
        match self.version {
            Version::V311 => match v4::Packet::read(buf, max as usize) {
                Ok(p) => Ok(Some(from_v4(p))),
                Err(e) => v4_error(e).map_err(too_large),
            },
            Version::V5 => match v5::Packet::read(buf, Some(max)) {
                Ok(p) => Ok(Some(from_v5(p))),
                Err(e) => v5_error(e).map_err(too_large),
            },
        }
    }

    pub fn connack(&self, code: ConnackCode, info: ConnackInfo, out: &mut BytesMut) {
        match self.version {
            Version::V311 => {
                let code = match code {
                    ConnackCode::Accepted => v4::ConnectReturnCode::Success,
                    ConnackCode::NotAuthorized => v4::ConnectReturnCode::NotAuthorized,
                    ConnackCode::UnsupportedVersion => {
                        v4::ConnectReturnCode::RefusedProtocolVersion
                    }
                };
                write_v4(v4::Packet::ConnAck(v4::ConnAck::new(code, false)), out);
            }
            Version::V5 => {
                let code = match code {
                    ConnackCode::Accepted => v5::ConnectReturnCode::Success,
                    ConnackCode::NotAuthorized => v5::ConnectReturnCode::NotAuthorized,
                    ConnackCode::UnsupportedVersion => {
                        v5::ConnectReturnCode::UnsupportedProtocolVersion
                    }
                };
                let accepted = code == v5::ConnectReturnCode::Success;
                let properties = v5::ConnAckProperties {
                    server_keep_alive: info.server_keep_alive,
                    max_packet_size: info.max_packet_size,
                    reason_string: info.reason,
                    max_qos: accepted.then_some(1),
                    retain_available: accepted.then_some(0),
                    shared_subscription_available: accepted.then_some(0),
                    subscription_identifiers_available: accepted.then_some(0),
                    topic_alias_max: None,
                    ..empty_connack_properties()
                };
                write_v5(
                    v5::Packet::ConnAck(v5::ConnAck {
                        session_present: false,
                        code,
                        properties: Some(properties),
                    }),
                    out,
                );
            }
        }
    }

    pub fn publish(&self, topic: &str, payload: Bytes, qos: Qos, pkid: u16, out: &mut BytesMut) {
        match self.version {
            Version::V311 => {
                let qos = match qos {
                    Qos::AtMostOnce => rumqttc::QoS::AtMostOnce,
                    Qos::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
                };
                let publish = v4::Publish {
                    dup: false,
                    qos,
                    retain: false,
                    topic: topic.to_string(),
                    pkid,
                    payload,
                };
                write_v4(v4::Packet::Publish(publish), out);
            }
            Version::V5 => {
                let qos = match qos {
                    Qos::AtMostOnce => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
                    Qos::AtLeastOnce => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                };
                let publish = v5::Publish {
                    dup: false,
                    qos,
                    retain: false,
                    topic: Bytes::copy_from_slice(topic.as_bytes()),
                    pkid,
                    payload,
                    properties: None,
                };
                write_v5(v5::Packet::Publish(publish), out);
            }
        }
    }

    pub fn puback(&self, pkid: u16, code: PubAckCode, out: &mut BytesMut) {
        match self.version {
            // 3.1.1 has no reason codes: a refused QoS 1 publish is acknowledged and dropped.
            Version::V311 => write_v4(v4::Packet::PubAck(v4::PubAck::new(pkid)), out),
            Version::V5 => {
                let reason = match code {
                    PubAckCode::Success => v5::PubAckReason::Success,
                    PubAckCode::NotAuthorized => v5::PubAckReason::NotAuthorized,
                    PubAckCode::TopicNameInvalid => v5::PubAckReason::TopicNameInvalid,
                    PubAckCode::PayloadFormatInvalid => v5::PubAckReason::PayloadFormatInvalid,
                    PubAckCode::Unavailable => v5::PubAckReason::ImplementationSpecificError,
                };
                write_v5(
                    v5::Packet::PubAck(v5::PubAck {
                        pkid,
                        reason,
                        properties: None,
                    }),
                    out,
                );
            }
        }
    }

    /// QoS 2 from a client: PUBREC on the publish (delivered once), PUBCOMP on its PUBREL.
    pub fn pubrec(&self, pkid: u16, out: &mut BytesMut) {
        match self.version {
            Version::V311 => write_v4(v4::Packet::PubRec(v4::PubRec::new(pkid)), out),
            Version::V5 => write_v5(v5::Packet::PubRec(v5::PubRec::new(pkid, None)), out),
        }
    }

    pub fn pubcomp(&self, pkid: u16, out: &mut BytesMut) {
        match self.version {
            Version::V311 => write_v4(v4::Packet::PubComp(v4::PubComp::new(pkid)), out),
            Version::V5 => write_v5(v5::Packet::PubComp(v5::PubComp::new(pkid, None)), out),
        }
    }

    /// One result per filter: the granted QoS, or a refusal (3.1.1: 0x80; v5: its reason).
    pub fn suback(&self, pkid: u16, results: &[Result<Qos, SubscribeRefusal>], out: &mut BytesMut) {
        match self.version {
            Version::V311 => {
                let codes = results
                    .iter()
                    .map(|r| match r {
                        Ok(Qos::AtMostOnce) => {
                            v4::SubscribeReasonCode::Success(rumqttc::QoS::AtMostOnce)
                        }
                        Ok(Qos::AtLeastOnce) => {
                            v4::SubscribeReasonCode::Success(rumqttc::QoS::AtLeastOnce)
                        }
                        Err(_) => v4::SubscribeReasonCode::Failure,
                    })
                    .collect();
                write_v4(v4::Packet::SubAck(v4::SubAck::new(pkid, codes)), out);
            }
            Version::V5 => {
                use rumqttc::v5::mqttbytes::QoS;
                let codes = results
                    .iter()
                    .map(|r| match r {
                        Ok(Qos::AtMostOnce) => v5::SubscribeReasonCode::Success(QoS::AtMostOnce),
                        Ok(Qos::AtLeastOnce) => v5::SubscribeReasonCode::Success(QoS::AtLeastOnce),
                        Err(SubscribeRefusal::NotAuthorized) => {
                            v5::SubscribeReasonCode::NotAuthorized
                        }
                        Err(SubscribeRefusal::FilterInvalid) => {
                            v5::SubscribeReasonCode::TopicFilterInvalid
                        }
                        Err(SubscribeRefusal::QuotaExceeded) => {
                            v5::SubscribeReasonCode::QuotaExceeded
                        }
                    })
                    .collect();
                write_v5(
                    v5::Packet::SubAck(v5::SubAck {
                        pkid,
                        return_codes: codes,
                        properties: None,
                    }),
                    out,
                );
            }
        }
    }

    pub fn unsuback(&self, pkid: u16, existed: &[bool], out: &mut BytesMut) {
        match self.version {
            Version::V311 => write_v4(v4::Packet::UnsubAck(v4::UnsubAck::new(pkid)), out),
            Version::V5 => {
                let reasons = existed
                    .iter()
                    .map(|&e| {
                        if e {
                            v5::UnsubAckReason::Success
                        } else {
                            v5::UnsubAckReason::NoSubscriptionExisted
                        }
                    })
                    .collect();
                write_v5(
                    v5::Packet::UnsubAck(v5::UnsubAck {
                        pkid,
                        reasons,
                        properties: None,
                    }),
                    out,
                );
            }
        }
    }

    pub fn pingresp(&self, out: &mut BytesMut) {
        match self.version {
            Version::V311 => write_v4(v4::Packet::PingResp, out),
            Version::V5 => write_v5(v5::Packet::PingResp(v5::PingResp), out),
        }
    }

    /// A server DISCONNECT with a reason (v5 only; 3.1.1 has no server DISCONNECT: the socket
    /// just closes).
    pub fn disconnect(&self, code: DisconnectCode, reason: &str, out: &mut BytesMut) {
        if self.version == Version::V311 {
            return;
        }
        use v5::DisconnectReasonCode as R;
        let reason_code = match code {
            DisconnectCode::TakenOver => R::SessionTakenOver,
            DisconnectCode::KeepAliveTimeout => R::KeepAliveTimeout,
            DisconnectCode::NotAuthorized => R::NotAuthorized,
            DisconnectCode::PacketTooLarge => R::PacketTooLarge,
            DisconnectCode::ProtocolError => R::ProtocolError,
            DisconnectCode::QuotaExceeded => R::QuotaExceeded,
            DisconnectCode::Administrative => R::AdministrativeAction,
            DisconnectCode::ShuttingDown => R::ServerShuttingDown,
        };
        let properties = v5::DisconnectProperties {
            session_expiry_interval: None,
            reason_string: Some(reason.to_string()),
            user_properties: Vec::new(),
            server_reference: None,
        };
        write_v5(
            v5::Packet::Disconnect(v5::Disconnect {
                reason_code,
                properties: Some(properties),
            }),
            out,
        );
    }
}

/// Why one filter of a SUBSCRIBE was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeRefusal {
    NotAuthorized,
    FilterInvalid,
    QuotaExceeded,
}

fn empty_connack_properties() -> v5::ConnAckProperties {
    v5::ConnAckProperties {
        session_expiry_interval: None,
        receive_max: None,
        max_qos: None,
        retain_available: None,
        max_packet_size: None,
        assigned_client_identifier: None,
        topic_alias_max: None,
        reason_string: None,
        user_properties: Vec::new(),
        wildcard_subscription_available: None,
        subscription_identifiers_available: None,
        shared_subscription_available: None,
        server_keep_alive: None,
        response_information: None,
        server_reference: None,
        authentication_method: None,
        authentication_data: None,
    }
}

fn write_v4(packet: v4::Packet, out: &mut BytesMut) {
    // Only our own, size-checked packets are written; an error here is a bug.
    if let Err(e) = packet.write(out, usize::MAX) {
        tracing::error!("cannot encode MQTT 3.1.1 packet: {e}");
    }
}

fn write_v5(packet: v5::Packet, out: &mut BytesMut) {
    if let Err(e) = packet.write(out, None) {
        tracing::error!("cannot encode MQTT 5 packet: {e}");
    }
}

fn from_v4(packet: v4::Packet) -> Inbound {
    match packet {
        v4::Packet::Publish(p) => Inbound::Publish {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos as u8,
            pkid: p.pkid,
        },
        v4::Packet::PubAck(a) => Inbound::PubAck(a.pkid),
        v4::Packet::PubRel(r) => Inbound::PubRel(r.pkid),
        v4::Packet::Subscribe(s) => Inbound::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| (f.path, qos_of(f.qos as u8)))
                .collect(),
        },
        v4::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
            pkid: u.pkid,
            filters: u.topics,
        },
        v4::Packet::PingReq => Inbound::PingReq,
        v4::Packet::Disconnect => Inbound::Disconnect { with_will: false },
        v4::Packet::Connect(_) => Inbound::Unexpected("second CONNECT"),
        v4::Packet::PubRec(_) | v4::Packet::PubComp(_) => {
            Inbound::Unexpected("QoS 2 acknowledgement for a message never sent at QoS 2")
        }
        _ => Inbound::Unexpected("server-to-client packet sent by a client"),
    }
}

fn from_v5(packet: v5::Packet) -> Inbound {
    match packet {
        v5::Packet::Publish(p) => Inbound::Publish {
            topic: String::from_utf8_lossy(&p.topic).into_owned(),
            payload: p.payload,
            qos: p.qos as u8,
            pkid: p.pkid,
        },
        v5::Packet::PubAck(a) => Inbound::PubAck(a.pkid),
        v5::Packet::PubRel(r) => Inbound::PubRel(r.pkid),
        v5::Packet::Subscribe(s) => Inbound::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| (f.path, qos_of(f.qos as u8)))
                .collect(),
        },
        v5::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
            pkid: u.pkid,
            filters: u.filters,
        },
        v5::Packet::PingReq(_) => Inbound::PingReq,
        v5::Packet::Disconnect(d) => Inbound::Disconnect {
            with_will: d.reason_code == v5::DisconnectReasonCode::DisconnectWithWillMessage,
        },
        v5::Packet::Connect(..) => Inbound::Unexpected("second CONNECT"),
        v5::Packet::PubRec(_) | v5::Packet::PubComp(_) => {
            Inbound::Unexpected("QoS 2 acknowledgement for a message never sent at QoS 2")
        }
        _ => Inbound::Unexpected("server-to-client packet sent by a client"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn oversized_packets_are_refused_before_reading_them() {
        let codec = Codec {
            version: Version::V311,
            max_packet_size: 1024,
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
}
