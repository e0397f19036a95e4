//! MQTT 5 on the wire: our vocabulary to and from rumqttc's v5 packets, with reason codes and
//! the properties a client and the gateway tell each other.

use super::{
    qos_of, AckCode, ConnackCode, ConnackInfo, ConnectRequest, DecodeError, DisconnectCode,
    FilterRequest, Inbound, PublishIn, PublishOut, SubscribeRefusal, Version, Will,
};
use crate::live::link::Qos;
use crate::live::message::MessageProperties;
use bytes::{Bytes, BytesMut};
use rumqttc::v5::mqttbytes::v5;
use rumqttc::v5::mqttbytes::QoS;

pub(super) fn read_connect(
    buf: &mut BytesMut,
    max: u32,
) -> Result<Option<ConnectRequest>, DecodeError> {
    match v5::Packet::read(buf, Some(max)) {
        Ok(v5::Packet::Connect(c, will, login)) => {
            let properties = c.properties.unwrap_or_default();
            Ok(Some(ConnectRequest {
                version: Version::V5,
                client_id: c.client_id,
                keep_alive: c.keep_alive,
                password: login.map(|l| l.password),
                clean_start: c.clean_start,
                session_expiry: properties.session_expiry_interval,
                receive_maximum: properties.receive_maximum,
                max_packet_size: properties.max_packet_size,
                topic_alias_maximum: properties.topic_alias_max.unwrap_or(0),
                will: will.map(|w| {
                    let mut will = Will {
                        topic: String::from_utf8_lossy(&w.topic).into_owned(),
                        payload: w.message,
                        qos: qos_of(w.qos as u8),
                        retain: w.retain,
                        delay: 0,
                        expiry: None,
                        properties: MessageProperties::default(),
                    };
                    if let Some(p) = w.properties {
                        will.delay = p.delay_interval.unwrap_or(0);
                        will.expiry = p.message_expiry_interval;
                        will.properties = MessageProperties {
                            payload_format_indicator: p.payload_format_indicator,
                            content_type: p.content_type,
                            response_topic: p.response_topic,
                            correlation_data: p.correlation_data,
                            user_properties: p.user_properties,
                        };
                    }
                    will
                }),
            }))
        }
        Ok(_) => Err(DecodeError::NotConnect),
        Err(e) => error(e),
    }
}

/// A DISCONNECT with no reason code and no properties: MQTT 5 3.14.2.1 lets a client leave both
/// out for a normal disconnection (Paho and MQTT.js do), which rumqttc's reader refuses as a
/// packet without payload.
const BARE_DISCONNECT: [u8; 2] = [0xE0, 0x00];

pub(super) fn read(buf: &mut BytesMut, max: u32) -> Result<Option<Inbound>, DecodeError> {
    if buf.starts_with(&BARE_DISCONNECT) {
        let _ = buf.split_to(BARE_DISCONNECT.len());
        return Ok(Some(Inbound::Disconnect {
            with_will: false,
            session_expiry: None,
        }));
    }
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
        v5::Packet::Publish(p) => {
            let properties = p.properties.unwrap_or_default();
            Inbound::Publish(PublishIn {
                topic: String::from_utf8_lossy(&p.topic).into_owned(),
                payload: p.payload,
                qos: p.qos as u8,
                pkid: p.pkid,
                retain: p.retain,
                dup: p.dup,
                expiry: properties.message_expiry_interval,
                topic_alias: properties.topic_alias,
                has_subscription_ids: !properties.subscription_identifiers.is_empty(),
                properties: MessageProperties {
                    payload_format_indicator: properties.payload_format_indicator,
                    content_type: properties.content_type,
                    response_topic: properties.response_topic,
                    correlation_data: properties.correlation_data,
                    user_properties: properties.user_properties,
                },
            })
        }
        v5::Packet::PubAck(a) => Inbound::PubAck(a.pkid),
        v5::Packet::PubRec(r) => Inbound::PubRec(r.pkid),
        v5::Packet::PubRel(r) => Inbound::PubRel(r.pkid),
        v5::Packet::PubComp(c) => Inbound::PubComp(c.pkid),
        v5::Packet::Subscribe(s) => Inbound::Subscribe {
            pkid: s.pkid,
            id: s
                .properties
                .and_then(|p| p.id)
                .map(|id| u32::try_from(id).unwrap_or(u32::MAX)),
            filters: s
                .filters
                .into_iter()
                .map(|f| FilterRequest {
                    filter: f.path,
                    qos: qos_of(f.qos as u8),
                    no_local: f.nolocal,
                    retain_as_published: f.preserve_retain,
                    retain_handling: match f.retain_forward_rule {
                        v5::RetainForwardRule::OnEverySubscribe => 0,
                        v5::RetainForwardRule::OnNewSubscribe => 1,
                        v5::RetainForwardRule::Never => 2,
                    },
                })
                .collect(),
        },
        v5::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
            pkid: u.pkid,
            filters: u.filters,
        },
        v5::Packet::PingReq(_) => Inbound::PingReq,
        v5::Packet::Disconnect(d) => Inbound::Disconnect {
            with_will: d.reason_code == v5::DisconnectReasonCode::DisconnectWithWillMessage,
            session_expiry: d.properties.and_then(|p| p.session_expiry_interval),
        },
        v5::Packet::Connect(..) => Inbound::Unexpected("second CONNECT"),
        _ => Inbound::Unexpected("server-to-client packet sent by a client"),
    }
}

/// Writes `packet` unless it is larger than `client_max`, the largest packet the client takes
/// (MQTT-3.1.2-24: the server must not send it a larger one).
fn write(packet: v5::Packet, client_max: Option<u32>, out: &mut BytesMut) -> Option<usize> {
    if let Some(max) = client_max.map(|max| max as usize) {
        if packet.size() > max {
            tracing::debug!(
                size = packet.size(),
                max,
                "not sent: larger than the client takes"
            );
            return None;
        }
    }
    // Only our own, size-checked packets are written; an error here is a bug.
    match packet.write(out, None) {
        Ok(size) => Some(size),
        Err(e) => {
            tracing::error!("cannot encode MQTT 5 packet: {e}");
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

pub(super) fn connack(
    code: ConnackCode,
    info: ConnackInfo,
    client_max: Option<u32>,
    out: &mut BytesMut,
) {
    let code = match code {
        ConnackCode::Accepted => v5::ConnectReturnCode::Success,
        ConnackCode::NotAuthorized => v5::ConnectReturnCode::NotAuthorized,
        ConnackCode::UnsupportedVersion => v5::ConnectReturnCode::UnsupportedProtocolVersion,
        ConnackCode::ClientIdRejected => v5::ConnectReturnCode::ClientIdentifierNotValid,
        ConnackCode::Unavailable => v5::ConnectReturnCode::ServerUnavailable,
    };
    let accepted = code == v5::ConnectReturnCode::Success;
    // What the gateway supports is said only to an accepted client; absent means "yes" for
    // retained messages, wildcards, subscription identifiers and shared subscriptions, and
    // QoS 2 for the maximum QoS.
    let properties = v5::ConnAckProperties {
        session_expiry_interval: info.session_expiry,
        receive_max: info.receive_maximum,
        max_qos: None,
        retain_available: None,
        max_packet_size: info.max_packet_size,
        assigned_client_identifier: info.assigned_client_id,
        topic_alias_max: info.topic_alias_maximum.filter(|_| accepted),
        reason_string: info.reason,
        user_properties: Vec::new(),
        wildcard_subscription_available: None,
        subscription_identifiers_available: None,
        shared_subscription_available: None,
        server_keep_alive: info.server_keep_alive,
        response_information: None,
        server_reference: None,
        authentication_method: None,
        authentication_data: None,
    };
    let mut connack = v5::ConnAck {
        session_present: info.session_present && accepted,
        code,
        properties: Some(properties),
    };
    if client_max.is_some_and(|max| connack.size() > max as usize) {
        // The reason string is left out rather than the CONNACK (MQTT-3.2.2-19).
        if let Some(properties) = connack.properties.as_mut() {
            properties.reason_string = None;
        }
    }
    write(v5::Packet::ConnAck(connack), client_max, out);
}

/// Writes the PUBLISH unless it is larger than `client_max`.
pub(super) fn publish(
    publish: &PublishOut<'_>,
    client_max: Option<u32>,
    out: &mut BytesMut,
) -> Option<usize> {
    let given = publish.properties;
    let properties = v5::PublishProperties {
        payload_format_indicator: given.payload_format_indicator,
        message_expiry_interval: publish.expiry_left,
        topic_alias: publish.topic_alias,
        response_topic: given.response_topic.clone(),
        correlation_data: given.correlation_data.clone(),
        user_properties: given.user_properties.clone(),
        subscription_identifiers: publish
            .subscription_ids
            .iter()
            .map(|&id| id as usize)
            .collect(),
        content_type: given.content_type.clone(),
    };
    let empty = properties == v5::PublishProperties::default();
    let packet = v5::Publish {
        dup: publish.dup,
        qos: qos(publish.qos),
        retain: publish.retain,
        topic: Bytes::copy_from_slice(publish.topic.as_bytes()),
        pkid: publish.pkid,
        payload: publish.payload.clone(),
        properties: (!empty).then_some(properties),
    };
    write(v5::Packet::Publish(packet), client_max, out)
}

pub(super) fn puback(pkid: u16, code: AckCode, client_max: Option<u32>, out: &mut BytesMut) {
    let reason = match code {
        AckCode::Success => v5::PubAckReason::Success,
        AckCode::NotAuthorized => v5::PubAckReason::NotAuthorized,
        AckCode::TopicNameInvalid => v5::PubAckReason::TopicNameInvalid,
        AckCode::PacketIdInUse => v5::PubAckReason::PacketIdentifierInUse,
        AckCode::QuotaExceeded => v5::PubAckReason::QuotaExceeded,
        AckCode::PayloadFormatInvalid => v5::PubAckReason::PayloadFormatInvalid,
        AckCode::Unavailable => v5::PubAckReason::ImplementationSpecificError,
        AckCode::Unspecified => v5::PubAckReason::UnspecifiedError,
    };
    write(
        v5::Packet::PubAck(v5::PubAck {
            pkid,
            reason,
            properties: None,
        }),
        client_max,
        out,
    );
}

pub(super) fn pubrec(pkid: u16, code: AckCode, client_max: Option<u32>, out: &mut BytesMut) {
    let reason = match code {
        AckCode::Success => v5::PubRecReason::Success,
        AckCode::NotAuthorized => v5::PubRecReason::NotAuthorized,
        AckCode::TopicNameInvalid => v5::PubRecReason::TopicNameInvalid,
        AckCode::PacketIdInUse => v5::PubRecReason::PacketIdentifierInUse,
        AckCode::QuotaExceeded => v5::PubRecReason::QuotaExceeded,
        AckCode::PayloadFormatInvalid => v5::PubRecReason::PayloadFormatInvalid,
        AckCode::Unavailable => v5::PubRecReason::ImplementationSpecificError,
        AckCode::Unspecified => v5::PubRecReason::UnspecifiedError,
    };
    write(
        v5::Packet::PubRec(v5::PubRec {
            pkid,
            reason,
            properties: None,
        }),
        client_max,
        out,
    );
}

pub(super) fn pubrel(pkid: u16, client_max: Option<u32>, out: &mut BytesMut) {
    write(
        v5::Packet::PubRel(v5::PubRel::new(pkid, None)),
        client_max,
        out,
    );
}

pub(super) fn pubcomp(pkid: u16, known: bool, client_max: Option<u32>, out: &mut BytesMut) {
    let reason = match known {
        true => v5::PubCompReason::Success,
        false => v5::PubCompReason::PacketIdentifierNotFound,
    };
    write(
        v5::Packet::PubComp(v5::PubComp {
            pkid,
            reason,
            properties: None,
        }),
        client_max,
        out,
    );
}

pub(super) fn suback(
    pkid: u16,
    results: &[Result<Qos, SubscribeRefusal>],
    client_max: Option<u32>,
    out: &mut BytesMut,
) -> bool {
    let codes = results
        .iter()
        .map(|result| match result {
            Ok(granted) => v5::SubscribeReasonCode::Success(qos(*granted)),
            Err(SubscribeRefusal::NotAuthorized) => v5::SubscribeReasonCode::NotAuthorized,
            Err(SubscribeRefusal::FilterInvalid) => v5::SubscribeReasonCode::TopicFilterInvalid,
            Err(SubscribeRefusal::QuotaExceeded) => v5::SubscribeReasonCode::QuotaExceeded,
            Err(SubscribeRefusal::SharedNotSupported) => {
                v5::SubscribeReasonCode::SharedSubscriptionsNotSupported
            }
            Err(SubscribeRefusal::Unspecified) => v5::SubscribeReasonCode::Unspecified,
        })
        .collect();
    write(
        v5::Packet::SubAck(v5::SubAck {
            pkid,
            return_codes: codes,
            properties: None,
        }),
        client_max,
        out,
    )
    .is_some()
}

pub(super) fn unsuback(
    pkid: u16,
    existed: &[bool],
    client_max: Option<u32>,
    out: &mut BytesMut,
) -> bool {
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
        client_max,
        out,
    )
    .is_some()
}

pub(super) fn pingresp(client_max: Option<u32>, out: &mut BytesMut) {
    write(v5::Packet::PingResp(v5::PingResp), client_max, out);
}

pub(super) fn disconnect(
    code: DisconnectCode,
    reason: &str,
    client_max: Option<u32>,
    out: &mut BytesMut,
) {
    use v5::DisconnectReasonCode as R;
    let reason_code = match code {
        DisconnectCode::TakenOver => R::SessionTakenOver,
        DisconnectCode::KeepAliveTimeout => R::KeepAliveTimeout,
        DisconnectCode::NotAuthorized => R::NotAuthorized,
        DisconnectCode::PacketTooLarge => R::PacketTooLarge,
        DisconnectCode::ProtocolError => R::ProtocolError,
        DisconnectCode::QuotaExceeded => R::QuotaExceeded,
        DisconnectCode::ReceiveMaximumExceeded => R::ReceiveMaximumExceeded,
        DisconnectCode::TopicAliasInvalid => R::TopicAliasInvalid,
        DisconnectCode::Administrative => R::AdministrativeAction,
        DisconnectCode::ShuttingDown => R::ServerShuttingDown,
    };
    let properties = v5::DisconnectProperties {
        session_expiry_interval: None,
        reason_string: Some(reason.to_string()),
        user_properties: Vec::new(),
        server_reference: None,
    };
    let disconnect = v5::Disconnect {
        reason_code,
        properties: Some(properties),
    };
    if client_max.is_some_and(|max| disconnect.size() > max as usize) {
        // The reason string is left out rather than the DISCONNECT (MQTT-3.14.2-3): the reason
        // code and an empty property list. Written here because rumqttc 0.25 writes a
        // DISCONNECT with no properties as a normal one, or with a byte its length leaves out.
        let reason_code_alone = [0xE0, 0x02, reason_code as u8, 0x00];
        if client_max.is_some_and(|max| max as usize >= reason_code_alone.len()) {
            out.extend_from_slice(&reason_code_alone);
        }
        return;
    }
    write(v5::Packet::Disconnect(disconnect), client_max, out);
}
