//! MQTT 3.1.1 and 5 on the wire, behind one vocabulary.
//!
//! The packet encoding itself is rumqttc's `mqttbytes` (symmetric: it reads and writes every
//! packet type, with public fields). This module detects the protocol level from the CONNECT,
//! turns both versions' packets into [`Inbound`], and writes our answers in the client's version,
//! with v5 reason codes where v5 has them: [`v4`] and [`v5`] translate, this file dispatches.

mod v4;
mod v5;

use crate::live::link::Qos;
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

/// The delivery QoS of a packet's QoS level (the gateway delivers at most at QoS 1).
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
        Version::V311 => v4::read_connect(buf, max),
        Version::V5 => v5::read_connect(buf, max),
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
        let read = match self.version {
            Version::V311 => v4::read(buf, max),
            Version::V5 => v5::read(buf, max),
        };
        read.map_err(|e| match e {
            DecodeError::TooLarge { size, .. } => DecodeError::TooLarge { size, max },
            other => other,
        })
    }

    pub fn connack(&self, code: ConnackCode, info: ConnackInfo, out: &mut BytesMut) {
        match self.version {
            Version::V311 => v4::connack(code, out),
            Version::V5 => v5::connack(code, info, out),
        }
    }

    pub fn publish(&self, topic: &str, payload: Bytes, qos: Qos, pkid: u16, out: &mut BytesMut) {
        match self.version {
            Version::V311 => v4::publish(topic, payload, qos, pkid, out),
            Version::V5 => v5::publish(topic, payload, qos, pkid, out),
        }
    }

    pub fn puback(&self, pkid: u16, code: PubAckCode, out: &mut BytesMut) {
        match self.version {
            Version::V311 => v4::puback(pkid, out),
            Version::V5 => v5::puback(pkid, code, out),
        }
    }

    /// QoS 2 from a client: PUBREC on the publish (delivered once), PUBCOMP on its PUBREL.
    pub fn pubrec(&self, pkid: u16, out: &mut BytesMut) {
        match self.version {
            Version::V311 => v4::pubrec(pkid, out),
            Version::V5 => v5::pubrec(pkid, out),
        }
    }

    pub fn pubcomp(&self, pkid: u16, out: &mut BytesMut) {
        match self.version {
            Version::V311 => v4::pubcomp(pkid, out),
            Version::V5 => v5::pubcomp(pkid, out),
        }
    }

    /// One result per filter: the granted QoS, or a refusal (3.1.1: 0x80; v5: its reason).
    pub fn suback(&self, pkid: u16, results: &[Result<Qos, SubscribeRefusal>], out: &mut BytesMut) {
        match self.version {
            Version::V311 => v4::suback(pkid, results, out),
            Version::V5 => v5::suback(pkid, results, out),
        }
    }

    pub fn unsuback(&self, pkid: u16, existed: &[bool], out: &mut BytesMut) {
        match self.version {
            Version::V311 => v4::unsuback(pkid, out),
            Version::V5 => v5::unsuback(pkid, existed, out),
        }
    }

    pub fn pingresp(&self, out: &mut BytesMut) {
        match self.version {
            Version::V311 => v4::pingresp(out),
            Version::V5 => v5::pingresp(out),
        }
    }

    /// A server DISCONNECT with a reason (v5 only; 3.1.1 has no server DISCONNECT: the socket
    /// just closes).
    pub fn disconnect(&self, code: DisconnectCode, reason: &str, out: &mut BytesMut) {
        if self.version == Version::V5 {
            v5::disconnect(code, reason, out);
        }
    }
}

/// Why one filter of a SUBSCRIBE was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeRefusal {
    NotAuthorized,
    FilterInvalid,
    QuotaExceeded,
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
