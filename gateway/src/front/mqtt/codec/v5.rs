//! MQTT 5 on the wire: our vocabulary to and from rumqttc's v5 packets, with reason codes and
//! the properties the gateway announces.

use super::{
    qos_of, ConnackCode, ConnackInfo, ConnectRequest, DecodeError, DisconnectCode, Inbound,
    PubAckCode, SubscribeRefusal, Version, Will,
};
use crate::live::link::Qos;
use bytes::{Bytes, BytesMut};
use rumqttc::v5::mqttbytes::v5;
use rumqttc::v5::mqttbytes::QoS;

pub(super) fn read_connect(
    buf: &mut BytesMut,
    max: u32,
) -> Result<Option<ConnectRequest>, DecodeError> {
    match v5::Packet::read(buf, Some(max)) {
        Ok(v5::Packet::Connect(c, will, login)) => Ok(Some(ConnectRequest {
            version: Version::V5,
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
        Err(e) => error(e),
    }
}

pub(super) fn read(buf: &mut BytesMut, max: u32) -> Result<Option<Inbound>, DecodeError> {
    match v5::Packet::read(buf, Some(max)) {
        Ok(packet) => Ok(Some(inbound(packet))),
        Err(e) => error(e),
    }
}

fn error<T>(e: rumqttc::v5::mqttbytes::Error) -> Result<Option<T>, DecodeError> {
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

fn inbound(packet: v5::Packet) -> Inbound {
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

fn write(packet: v5::Packet, out: &mut BytesMut) {
    // Only our own, size-checked packets are written; an error here is a bug.
    if let Err(e) = packet.write(out, None) {
        tracing::error!("cannot encode MQTT 5 packet: {e}");
    }
}

fn qos(qos: Qos) -> QoS {
    match qos {
        Qos::AtMostOnce => QoS::AtMostOnce,
        Qos::AtLeastOnce => QoS::AtLeastOnce,
    }
}

pub(super) fn connack(code: ConnackCode, info: ConnackInfo, out: &mut BytesMut) {
    let code = match code {
        ConnackCode::Accepted => v5::ConnectReturnCode::Success,
        ConnackCode::NotAuthorized => v5::ConnectReturnCode::NotAuthorized,
        ConnackCode::UnsupportedVersion => v5::ConnectReturnCode::UnsupportedProtocolVersion,
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
    write(
        v5::Packet::ConnAck(v5::ConnAck {
            session_present: false,
            code,
            properties: Some(properties),
        }),
        out,
    );
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

pub(super) fn publish(topic: &str, payload: Bytes, at: Qos, pkid: u16, out: &mut BytesMut) {
    let publish = v5::Publish {
        dup: false,
        qos: qos(at),
        retain: false,
        topic: Bytes::copy_from_slice(topic.as_bytes()),
        pkid,
        payload,
        properties: None,
    };
    write(v5::Packet::Publish(publish), out);
}

pub(super) fn puback(pkid: u16, code: PubAckCode, out: &mut BytesMut) {
    let reason = match code {
        PubAckCode::Success => v5::PubAckReason::Success,
        PubAckCode::NotAuthorized => v5::PubAckReason::NotAuthorized,
        PubAckCode::TopicNameInvalid => v5::PubAckReason::TopicNameInvalid,
        PubAckCode::PayloadFormatInvalid => v5::PubAckReason::PayloadFormatInvalid,
        PubAckCode::Unavailable => v5::PubAckReason::ImplementationSpecificError,
    };
    write(
        v5::Packet::PubAck(v5::PubAck {
            pkid,
            reason,
            properties: None,
        }),
        out,
    );
}

pub(super) fn pubrec(pkid: u16, out: &mut BytesMut) {
    write(v5::Packet::PubRec(v5::PubRec::new(pkid, None)), out);
}

pub(super) fn pubcomp(pkid: u16, out: &mut BytesMut) {
    write(v5::Packet::PubComp(v5::PubComp::new(pkid, None)), out);
}

pub(super) fn suback(pkid: u16, results: &[Result<Qos, SubscribeRefusal>], out: &mut BytesMut) {
    let codes = results
        .iter()
        .map(|result| match result {
            Ok(granted) => v5::SubscribeReasonCode::Success(qos(*granted)),
            Err(SubscribeRefusal::NotAuthorized) => v5::SubscribeReasonCode::NotAuthorized,
            Err(SubscribeRefusal::FilterInvalid) => v5::SubscribeReasonCode::TopicFilterInvalid,
            Err(SubscribeRefusal::QuotaExceeded) => v5::SubscribeReasonCode::QuotaExceeded,
        })
        .collect();
    write(
        v5::Packet::SubAck(v5::SubAck {
            pkid,
            return_codes: codes,
            properties: None,
        }),
        out,
    );
}

pub(super) fn unsuback(pkid: u16, existed: &[bool], out: &mut BytesMut) {
    let reasons = existed
        .iter()
        .map(|&existed| match existed {
            true => v5::UnsubAckReason::Success,
            false => v5::UnsubAckReason::NoSubscriptionExisted,
        })
        .collect();
    write(
        v5::Packet::UnsubAck(v5::UnsubAck {
            pkid,
            reasons,
            properties: None,
        }),
        out,
    );
}

pub(super) fn pingresp(out: &mut BytesMut) {
    write(v5::Packet::PingResp(v5::PingResp), out);
}

pub(super) fn disconnect(code: DisconnectCode, reason: &str, out: &mut BytesMut) {
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
    write(
        v5::Packet::Disconnect(v5::Disconnect {
            reason_code,
            properties: Some(properties),
        }),
        out,
    );
}
