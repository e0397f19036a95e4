//! MQTT 3.1.1 on the wire: our vocabulary to and from rumqttc's v4 packets. 3.1.1 has no reason
//! codes, no properties and no server DISCONNECT; what it cannot say is left out.

use super::{
    qos_of, ConnackCode, ConnectRequest, DecodeError, FilterRequest, Inbound, PublishIn,
    PublishOut, SubscribeRefusal, Version, Will,
};
use crate::live::link::Qos;
use crate::live::message::MessageProperties;
use bytes::BytesMut;
use rumqttc::mqttbytes::v4;
use rumqttc::QoS;

pub(super) fn read_connect(
    buf: &mut BytesMut,
    max: u32,
) -> Result<Option<ConnectRequest>, DecodeError> {
    match v4::Packet::read(buf, max as usize) {
        Ok(v4::Packet::Connect(c)) => Ok(Some(ConnectRequest {
            version: Version::V311,
            client_id: c.client_id,
            keep_alive: c.keep_alive,
            password: c.login.map(|l| l.password),
            clean_start: c.clean_session,
            session_expiry: None,
            receive_maximum: None,
            max_packet_size: None,
            topic_alias_maximum: 0,
            will: c.last_will.map(|w| Will {
                topic: w.topic,
                payload: w.message,
                qos: qos_of(w.qos as u8),
                retain: w.retain,
                properties: MessageProperties::default(),
                delay: 0,
                expiry: None,
            }),
        })),
        Ok(_) => Err(DecodeError::NotConnect),
        Err(e) => error(e),
    }
}

pub(super) fn read(buf: &mut BytesMut, max: u32) -> Result<Option<Inbound>, DecodeError> {
    match v4::Packet::read(buf, max as usize) {
        Ok(packet) => Ok(Some(inbound(packet))),
        Err(e) => error(e),
    }
}

fn error<T>(e: rumqttc::mqttbytes::Error) -> Result<Option<T>, DecodeError> {
    use rumqttc::mqttbytes::Error;
    match e {
        Error::InsufficientBytes(_) => Ok(None),
        Error::PayloadSizeLimitExceeded(size) => Err(DecodeError::TooLarge { size, max: 0 }),
        other => Err(DecodeError::Malformed(other.to_string())),
    }
}

fn inbound(packet: v4::Packet) -> Inbound {
    match packet {
        v4::Packet::Publish(p) => Inbound::Publish(PublishIn {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos as u8,
            pkid: p.pkid,
            retain: p.retain,
            dup: p.dup,
            properties: MessageProperties::default(),
            expiry: None,
            topic_alias: None,
            has_subscription_ids: false,
        }),
        v4::Packet::PubAck(a) => Inbound::PubAck(a.pkid),
        v4::Packet::PubRec(r) => Inbound::PubRec(r.pkid),
        v4::Packet::PubRel(r) => Inbound::PubRel(r.pkid),
        v4::Packet::PubComp(c) => Inbound::PubComp(c.pkid),
        v4::Packet::Subscribe(s) => Inbound::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| FilterRequest {
                    filter: f.path,
                    qos: qos_of(f.qos as u8),
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: 0,
                })
                .collect(),
            id: None,
        },
        v4::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
            pkid: u.pkid,
            filters: u.topics,
        },
        v4::Packet::PingReq => Inbound::PingReq,
        v4::Packet::Disconnect => Inbound::Disconnect {
            with_will: false,
            session_expiry: None,
        },
        v4::Packet::Connect(_) => Inbound::Unexpected("second CONNECT"),
        _ => Inbound::Unexpected("server-to-client packet sent by a client"),
    }
}

fn write(packet: v4::Packet, out: &mut BytesMut) -> Option<usize> {
    // Only our own, size-checked packets are written; an error here is a bug.
    match packet.write(out, usize::MAX) {
        Ok(size) => Some(size),
        Err(e) => {
            tracing::error!("cannot encode MQTT 3.1.1 packet: {e}");
            None
        }
    }
}

fn qos(qos: Qos) -> QoS {
    match qos {
        Qos::AtMostOnce => QoS::AtMostOnce,
        Qos::AtLeastOnce => QoS::AtLeastOnce,
        Qos::ExactlyOnce => QoS::ExactlyOnce,
    }
}

pub(super) fn connack(code: ConnackCode, session_present: bool, out: &mut BytesMut) {
    let code = match code {
        ConnackCode::Accepted => v4::ConnectReturnCode::Success,
        ConnackCode::NotAuthorized => v4::ConnectReturnCode::NotAuthorized,
        ConnackCode::UnsupportedVersion => v4::ConnectReturnCode::RefusedProtocolVersion,
        ConnackCode::ClientIdRejected => v4::ConnectReturnCode::BadClientId,
        ConnackCode::Unavailable => v4::ConnectReturnCode::ServiceUnavailable,
    };
    let present = session_present && code == v4::ConnectReturnCode::Success;
    write(v4::Packet::ConnAck(v4::ConnAck::new(code, present)), out);
}

/// 3.1.1 carries no properties: a message goes out as its topic and payload.
pub(super) fn publish(publish: &PublishOut<'_>, out: &mut BytesMut) -> Option<usize> {
    let packet = v4::Publish {
        dup: publish.dup,
        qos: qos(publish.qos),
        retain: publish.retain,
        topic: publish.topic.to_string(),
        pkid: publish.pkid,
        payload: publish.payload.clone(),
    };
    write(v4::Packet::Publish(packet), out)
}

/// 3.1.1 has no reason codes: a refused QoS 1 publish is acknowledged and dropped.
pub(super) fn puback(pkid: u16, out: &mut BytesMut) {
    write(v4::Packet::PubAck(v4::PubAck::new(pkid)), out);
}

pub(super) fn pubrec(pkid: u16, out: &mut BytesMut) {
    write(v4::Packet::PubRec(v4::PubRec::new(pkid)), out);
}

pub(super) fn pubrel(pkid: u16, out: &mut BytesMut) {
    write(v4::Packet::PubRel(v4::PubRel::new(pkid)), out);
}

pub(super) fn pubcomp(pkid: u16, out: &mut BytesMut) {
    write(v4::Packet::PubComp(v4::PubComp::new(pkid)), out);
}

/// Every refused filter is 0x80, whatever the reason.
pub(super) fn suback(pkid: u16, results: &[Result<Qos, SubscribeRefusal>], out: &mut BytesMut) {
    let codes = results
        .iter()
        .map(|result| match result {
            Ok(granted) => v4::SubscribeReasonCode::Success(qos(*granted)),
            Err(_) => v4::SubscribeReasonCode::Failure,
        })
        .collect();
    write(v4::Packet::SubAck(v4::SubAck::new(pkid, codes)), out);
}

pub(super) fn unsuback(pkid: u16, out: &mut BytesMut) {
    write(v4::Packet::UnsubAck(v4::UnsubAck::new(pkid)), out);
}

pub(super) fn pingresp(out: &mut BytesMut) {
    write(v4::Packet::PingResp, out);
}
