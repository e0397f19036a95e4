//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz; see the README's "Fuzzing"), and
//! for the regression tests of what they found: each takes arbitrary input and runs it through
//! the code the gateway runs on what MQTT clients, JSON WebSocket clients, the backend and
//! WeChat send. An entry point panics where the gateway would, or where an invariant it checks
//! breaks; the fuzzer reports either as a crash.
//!
//! Public only so that the fuzz crate, outside this one, reaches what is private to the
//! gateway's modules (those are `pub(crate)` for it); hidden from the documentation, and used by
//! nothing else.

use crate::api::error::ApiError;
use crate::api::json::ApiJson;
use crate::api::{devices, messages, notifications, tokens};
use crate::auth::token::TokenSigner;
use crate::channel::wechat::callback::{self, CallbackGuard, CallbackRefusal, CallbackSignature};
use crate::channel::wechat::safe_mode::SafeMode;
use crate::front::client::expires_at;
use crate::front::json_ws::{frame_of, read_frame, text_of};
use crate::front::mqtt::codec::{
    peek_connect_version, read_connect, AckCode, Codec, ConnackCode, ConnackInfo, DecodeError,
    DisconnectCode, Inbound, PublishIn, SubscribeRefusal, Version,
};
use crate::front::mqtt::inbound::{self, Admission, InboundState, Violation};
use crate::front::mqtt::outbound::Outbound;
use crate::infra::latency_budget::LatencyBudget;
use crate::infra::time::unix_seconds;
use crate::live::link::{Delivery, Qos};
use crate::live::message::Published;
use crate::notify::quiet_hours;
use axum::extract::FromRequest;
use axum::response::IntoResponse;
use bytes::BytesMut;
use prometheus_client::metrics::counter::Counter;
use protocol::envelope::Platform;
use protocol::notification::{Bindings, Consent, QuietHours};
use protocol::topics;
use serde::de::DeserializeOwned;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// The largest packet the fuzzed MQTT connection takes: small, so that inputs reach the limit.
const MAX_PACKET: u32 = 64 * 1024;

/// The Receive Maximum and Topic Alias Maximum the fuzzed connection announces, and the most
/// subscriptions it keeps: small, so that inputs reach them.
const RECEIVE_MAXIMUM: u16 = 4;
const TOPIC_ALIAS_MAXIMUM: u16 = 4;
const MAX_SUBSCRIPTIONS: usize = 8;

/// The most of our QoS 1 and 2 deliveries in flight to the fuzzed client (`limits.max_inflight`).
const MAX_INFLIGHT: u16 = 8;

/// One MQTT connection's bytes from a client: a CONNECT (3.1.1 or 5, as its protocol level
/// says), then any packets, through the codec and the connection's protocol state — the
/// Receive Maximum, QoS 1 repeats and QoS 2 exchanges both ways ([`InboundState`]), topic
/// aliases both ways, packet ids, our in-flight window and the client's Maximum Packet Size
/// ([`Outbound`]).
///
/// What lies behind the connection (authorization, the store, the hub) needs a running gateway,
/// which `tests/` drives whole; here a small stand-in replaces it, as
/// `front::mqtt::connection` would see it: a publish to a valid topic that is not retained is
/// taken (retained ones are refused), and is delivered back to the client when one of its
/// subscriptions matches; answers wait until reading would stop at the Receive Maximum, or a
/// PINGREQ comes. Everything written to the client must read back as packets of its version.
pub fn mqtt(data: &[u8]) {
    let mut rbuf = BytesMut::from(data);
    let Ok(Some(version)) = peek_connect_version(&rbuf, MAX_PACKET) else {
        return;
    };
    let Ok(Some(connect)) = read_connect(version, &mut rbuf, MAX_PACKET) else {
        return;
    };
    let codec = Codec {
        version,
        max_packet_size: MAX_PACKET,
        client_max_packet: connect.max_packet_size,
    };
    let mut wbuf = BytesMut::new();
    let info = ConnackInfo {
        max_packet_size: Some(MAX_PACKET),
        receive_maximum: Some(RECEIVE_MAXIMUM),
        topic_alias_maximum: Some(TOPIC_ALIAS_MAXIMUM),
        assigned_client_id: connect.client_id.is_empty().then(|| "assigned".to_string()),
        ..ConnackInfo::default()
    };
    codec.connack(ConnackCode::Accepted, info, &mut wbuf);
    let window = MAX_INFLIGHT.min(connect.receive_maximum.unwrap_or(u16::MAX));
    let mut connection = MqttConnection {
        codec,
        inbound: InboundState::new(version, RECEIVE_MAXIMUM, TOPIC_ALIAS_MAXIMUM),
        outbound: Outbound::new(
            codec,
            usize::from(window),
            connect.topic_alias_maximum,
            Counter::default(),
            Counter::default(),
            LatencyBudget::default(),
        ),
        subscriptions: HashMap::new(),
        unanswered: VecDeque::new(),
        wbuf,
    };
    connection.run(&mut rbuf);
    read_back(version, &mut connection.wbuf);
}

/// The fuzzed connection's state; see [`mqtt`].
struct MqttConnection {
    codec: Codec,
    inbound: InboundState,
    outbound: Outbound,
    /// Filter → granted QoS.
    subscriptions: HashMap<String, Qos>,
    /// Publishes handled and not answered yet: QoS, packet id, taken, fingerprint.
    unanswered: VecDeque<(u8, u16, bool, u64)>,
    wbuf: BytesMut,
}

impl MqttConnection {
    fn run(&mut self, rbuf: &mut BytesMut) {
        loop {
            // The connection stops reading at the Receive Maximum until answers go out.
            while self.inbound.is_full() && self.answer_oldest() {}
            assert!(
                !self.inbound.is_full(),
                "reading stopped with no publish left to answer: the connection would hang"
            );
            match self.codec.read(rbuf) {
                Ok(None) => return,
                Ok(Some(packet)) => {
                    if let ControlFlow::Break(Some(violation)) = self.handle(packet) {
                        self.violation(violation);
                    }
                    if self.wbuf.len() > 16 * MAX_PACKET as usize {
                        // What the client would have read by now.
                        read_back(self.codec.version, &mut self.wbuf);
                    }
                }
                Err(DecodeError::TooLarge { .. }) => {
                    return self.violation((DisconnectCode::PacketTooLarge, "too large"))
                }
                Err(_) => return self.violation((DisconnectCode::ProtocolError, "malformed")),
            }
        }
    }

    fn violation(&mut self, (code, text): Violation) {
        self.codec.disconnect(code, text, &mut self.wbuf);
    }

    /// `Break` ends the connection, with a DISCONNECT when it says why.
    fn handle(&mut self, packet: Inbound) -> ControlFlow<Option<Violation>> {
        match packet {
            Inbound::Publish(publish) => self.publish(publish)?,
            Inbound::PubAck(pkid) => {
                self.outbound.acknowledged(pkid);
            }
            Inbound::PubRec(pkid) => {
                self.outbound.received(pkid, false, &mut self.wbuf);
            }
            Inbound::PubComp(pkid) => self.outbound.completed(pkid),
            Inbound::PubRel(pkid) => {
                let known = self.inbound.released(pkid);
                self.codec.pubcomp(pkid, known, &mut self.wbuf);
            }
            Inbound::Subscribe { pkid, filters, .. } => {
                let results: Vec<_> = filters
                    .iter()
                    .map(|f| self.subscribe(&f.filter, f.qos))
                    .collect();
                let _ = self.codec.suback(pkid, &results, &mut self.wbuf);
            }
            Inbound::Unsubscribe { pkid, filters } => {
                let existed: Vec<bool> = (filters.iter())
                    .map(|f| self.subscriptions.remove(f).is_some())
                    .collect();
                let _ = self.codec.unsuback(pkid, &existed, &mut self.wbuf);
            }
            Inbound::PingReq => {
                while self.answer_oldest() {}
                self.codec.pingresp(&mut self.wbuf);
            }
            Inbound::Disconnect { .. } => return ControlFlow::Break(None),
            Inbound::Unexpected(what) => {
                return ControlFlow::Break(Some((DisconnectCode::ProtocolError, what)))
            }
        }
        ControlFlow::Continue(())
    }

    fn publish(&mut self, mut publish: PublishIn) -> ControlFlow<Option<Violation>> {
        if publish.has_subscription_ids {
            return ControlFlow::Break(Some((DisconnectCode::ProtocolError, "subscription ids")));
        }
        if let Err(violation) = self.inbound.resolve_topic(&mut publish) {
            return ControlFlow::Break(Some(violation));
        }
        let (qos, pkid) = (publish.qos, publish.pkid);
        let fingerprint = match qos {
            1 => inbound::fingerprint(&publish.topic, &publish.payload),
            _ => inbound::NOT_REMEMBERED,
        };
        match self.inbound.admit(qos, pkid, publish.dup, fingerprint) {
            Err(violation) => return ControlFlow::Break(Some(violation)),
            Ok(Admission::Repeat) if qos == 1 => {
                self.codec.puback(pkid, AckCode::Success, &mut self.wbuf)
            }
            Ok(Admission::Repeat) => self.codec.pubrec(pkid, AckCode::Success, &mut self.wbuf),
            Ok(Admission::Pending) => {}
            Ok(Admission::InUse) => self
                .codec
                .puback(pkid, AckCode::PacketIdInUse, &mut self.wbuf),
            Ok(Admission::New) => {
                let taken = !publish.retain && topics::is_valid_topic(&publish.topic);
                if taken {
                    self.deliver_back(publish);
                }
                if qos > 0 {
                    self.unanswered.push_back((qos, pkid, taken, fingerprint));
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn subscribe(&mut self, filter: &str, qos: Qos) -> Result<Qos, SubscribeRefusal> {
        if !topics::is_valid_filter(filter) {
            return Err(SubscribeRefusal::FilterInvalid);
        }
        let existed = self.subscriptions.contains_key(filter);
        if !existed && self.subscriptions.len() >= MAX_SUBSCRIPTIONS {
            return Err(SubscribeRefusal::QuotaExceeded);
        }
        self.subscriptions.insert(filter.to_string(), qos);
        Ok(qos)
    }

    /// The publish as a subscription of the client's own gets it, if one matches.
    fn deliver_back(&mut self, publish: PublishIn) {
        let Some(granted) = (self.subscriptions.iter())
            .filter(|(filter, _)| topics::filter_matches(filter, &publish.topic))
            .map(|(_, qos)| *qos)
            .max()
        else {
            return;
        };
        let qos = Qos::from_level(publish.qos).unwrap_or(Qos::ExactlyOnce);
        let message = Published {
            topic: publish.topic,
            payload: publish.payload,
            properties: publish.properties.boxed(),
            expires_at: expires_at(publish.expiry),
            ..Published::default()
        };
        let delivery = Delivery::of(Arc::new(message), qos.min(granted));
        // A delivery the window has no room for stays in the outbox, which is not modelled.
        if self.outbound.takes(&delivery) {
            self.outbound.write(delivery, &mut self.wbuf);
        }
    }

    /// Answers the oldest publish still unanswered; `false` when there is none.
    fn answer_oldest(&mut self) -> bool {
        let Some((qos, pkid, taken, fingerprint)) = self.unanswered.pop_front() else {
            return false;
        };
        // A 3.1.1 client cannot be told a QoS 2 publish was refused: it releases it as usual.
        let released = taken || self.codec.version == Version::V311;
        self.inbound.answered(qos, pkid, released, fingerprint);
        let code = match taken {
            true => AckCode::Success,
            false => AckCode::NotAuthorized,
        };
        match qos {
            1 => self.codec.puback(pkid, code, &mut self.wbuf),
            _ => self.codec.pubrec(pkid, code, &mut self.wbuf),
        }
        true
    }
}

/// Reads what the gateway wrote as the client would: every byte must be a whole packet of
/// the client's version.
fn read_back(version: Version, written: &mut BytesMut) {
    while !written.is_empty() {
        let read = match version {
            Version::V311 => rumqttc::mqttbytes::v4::Packet::read(written, usize::MAX)
                .map(drop)
                .map_err(|e| e.to_string()),
            Version::V5 => rumqttc::v5::mqttbytes::v5::Packet::read(written, None)
                .map(drop)
                .map_err(|e| e.to_string()),
        };
        if let Err(e) = read {
            panic!("the gateway wrote a packet its {version:?} client cannot read: {e}");
        }
    }
}

/// One JSON WebSocket text frame from a client, as the bridge reads it: a frame, or the error
/// frame answering it; and the same text as the payload of a message delivered to a JSON
/// client (JSON, or else base64). Every frame the bridge would send must serialize.
pub fn json_frame(text: &str) {
    if let Err(answer) = read_frame(text) {
        text_of(&answer);
    }
    let message = Published::new("pub/fuzz", bytes::Bytes::copy_from_slice(text.as_bytes()));
    text_of(&frame_of(&Delivery::of(Arc::new(message), Qos::AtMostOnce)));
}

/// The bodies of the HTTP API's calls.
#[derive(Debug, Clone, Copy)]
enum HttpBody {
    /// `POST /v1/messages`
    Message,
    /// `POST /v1/signals`
    Signal,
    /// `POST /v1/notifications`
    Notification,
    /// `POST /v1/notifications/batch`
    NotificationBatch,
    /// `POST /v1/tokens`
    Token,
    /// `PUT /v1/users/{user}/quiet-hours`
    QuietHours,
    /// `PUT /v1/users/{user}/consent`
    Consent,
    /// `PUT /v1/users/{user}/bindings`
    Bindings,
    /// `POST /v1/users/{user}/devices/{device}/approval`
    Approval,
}

impl HttpBody {
    const ALL: [Self; 9] = [
        Self::Message,
        Self::Signal,
        Self::Notification,
        Self::NotificationBatch,
        Self::Token,
        Self::QuietHours,
        Self::Consent,
        Self::Bindings,
        Self::Approval,
    ];
}

/// The content types the API's bodies are fuzzed with: `application/json` (parsed by
/// [`ApiJson`] itself), and the others it leaves to axum's `Json`.
const CONTENT_TYPES: [Option<&str>; 4] = [
    Some("application/json"),
    Some("application/json; charset=utf-8"),
    Some("application/cloudevents+json"),
    None,
];

/// A body for one of the API's calls: the first byte picks the call ([`HttpBody::ALL`]), the
/// second the content type, and the rest is the body; see [`http_body`].
pub fn http_bodies(data: &[u8]) {
    let [call, content_type, body @ ..] = data else {
        return;
    };
    let call = HttpBody::ALL[usize::from(*call) % HttpBody::ALL.len()];
    let content_type = CONTENT_TYPES[usize::from(*content_type) % CONTENT_TYPES.len()];
    http_body(call, content_type, body);
}

/// A body sent to one of the API's calls with `content_type`, through the extractor its
/// handler takes it with ([`ApiJson`]) and the checks the handler makes before it reaches
/// the gateway's state; a refusal is rendered as the API answers it.
fn http_body(call: HttpBody, content_type: Option<&str>, body: &[u8]) {
    let checked =
        match call {
            HttpBody::Message => extract::<messages::PostMessage>(content_type, body)
                .and_then(|message| message.check()),
            HttpBody::Signal => extract::<messages::PostSignal>(content_type, body)
                .and_then(|signal| signal.check()),
            HttpBody::Notification => {
                extract::<crate::notify::input::NotificationInput>(content_type, body).and_then(
                    |input| {
                        input
                            .into_notification()
                            .map(drop)
                            .map_err(ApiError::invalid)
                    },
                )
            }
            HttpBody::NotificationBatch => {
                extract::<notifications::Batch>(content_type, body).map(|batch| {
                    for input in batch.notifications {
                        let _ = input.into_notification();
                    }
                })
            }
            HttpBody::Token => {
                extract::<tokens::TokenRequest>(content_type, body).and_then(|request| {
                    let signer = TokenSigner::new("fuzz");
                    let issued_at = unix_seconds();
                    let (token, claims) = request.sign(&signer, Duration::from_secs(3600))?;
                    assert!(claims.exp > issued_at, "a token issued expired already");
                    // Unless a second passed since, for a token of one second.
                    if claims.exp > unix_seconds() {
                        assert_eq!(
                            signer.verify(&token),
                            Ok(claims),
                            "a token issued is accepted"
                        );
                    }
                    Ok(())
                })
            }
            HttpBody::QuietHours => extract::<QuietHours>(content_type, body).and_then(|hours| {
                quiet_hours::validate(&hours).map_err(|e| ApiError::invalid(e.to_string()))
            }),
            HttpBody::Consent => extract::<Consent>(content_type, body).map(drop),
            HttpBody::Bindings => extract::<Bindings>(content_type, body).map(drop),
            HttpBody::Approval => extract::<devices::ApprovalRequest>(content_type, body).map(drop),
        };
    if let Err(refused) = checked {
        drop(refused.into_response());
    }
}

/// The body as [`ApiJson`] extracts it.
fn extract<T: DeserializeOwned>(content_type: Option<&str>, body: &[u8]) -> Result<T, ApiError> {
    let mut request = axum::http::Request::builder()
        .method("POST")
        .uri("/v1/fuzz");
    if let Some(content_type) = content_type {
        request = request.header(axum::http::header::CONTENT_TYPE, content_type);
    }
    let Ok(request) = request.body(axum::body::Body::from(body.to_vec())) else {
        // Not a header value a client could send.
        return Err(ApiError::invalid("bad content type"));
    };
    let extracted = std::pin::pin!(ApiJson::<T>::from_request(request, &()));
    ready(extracted).map(|ApiJson(value)| value)
}

/// The output of a future that needs no waiting (a body in memory is read at once).
fn ready<T>(mut future: std::pin::Pin<&mut impl Future<Output = T>>) -> T {
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("reading a body in memory waited"),
    }
}

/// A string given as a device token (MQTT password, JSON `auth`): verified, it must be refused
/// or speak for valid ids. And a token signed for ids made of it is accepted, with the same
/// claims, when they are valid ids, and refused to be signed when not; changed by a byte, it
/// is refused.
pub fn device_token(text: &str) {
    let signer = TokenSigner::new("fuzz");
    if let Ok(claims) = signer.verify(text) {
        assert!(topics::is_valid_id(&claims.user) && topics::is_valid_id(&claims.device));
    }
    let (user, device) = text.split_once('/').unwrap_or((text, "phone"));
    let valid = topics::is_valid_id(user) && topics::is_valid_id(device);
    match signer.sign(user, device, Platform::Ios, Duration::from_secs(60)) {
        Ok((token, claims)) => {
            assert!(valid, "signed a token for invalid ids {user:?}, {device:?}");
            assert_eq!(signer.verify(&token).as_ref(), Ok(&claims));
            assert!(TokenSigner::new("other").verify(&token).is_err());
            let mut forged = token.into_bytes();
            let at = text.len() % forged.len();
            forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
            if let Ok(forged) = String::from_utf8(forged) {
                assert!(signer.verify(&forged).is_err(), "a changed token accepted");
            }
        }
        Err(_) => assert!(!valid, "refused to sign for valid ids"),
    }
}

/// The current time the WeChat callback fuzzing takes (Unix seconds).
const WECHAT_NOW: u64 = 1_800_000_000;

/// The EncodingAESKey the safe-mode guard of [`wechat`] opens with.
const WECHAT_AES_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";

/// A WeChat callback: its query string, then a NUL character, then its body (all body
/// without one); see [`wechat`].
pub fn wechat_callback(text: &str) {
    let (query, body) = text.split_once('\0').unwrap_or(("", text));
    wechat(query, body);
}

/// A WeChat callback: its query string (`signature`, `timestamp`, `nonce`, and safe mode's
/// `encrypt_type` and `msg_signature`) through the guard as the API takes it, its body through
/// safe mode's opening and the job-report parser. The same callback signed properly is admitted
/// once, then refused as replayed.
fn wechat(query: &str, body: &str) {
    let safe_mode = SafeMode::new(WECHAT_AES_KEY, vec!["wx-fuzz".into()]).expect("a valid key");
    let guard =
        CallbackGuard::new("fuzz-token", Duration::from_secs(300), 16).in_safe_mode(safe_mode);
    if let Ok(uri) = format!("/wechat/callback?{query}").parse::<axum::http::Uri>() {
        if let Ok(axum::extract::Query(signed)) =
            axum::extract::Query::<CallbackSignature>::try_from_uri(&uri)
        {
            let _ = guard.admit(&signed, WECHAT_NOW);
            if let Ok(xml) = guard.open(&signed, body.to_string()) {
                let _ = callback::parse_job_finish(&xml);
            }
        }
    }
    if let Some(finish) = callback::parse_job_finish(body) {
        assert!(!finish.msgid.is_empty());
    }
    let (timestamp, nonce) = (WECHAT_NOW.to_string(), body);
    let signed = CallbackSignature {
        signature: Some(callback::signature("fuzz-token", &timestamp, nonce)),
        timestamp: Some(timestamp),
        nonce: Some(nonce.to_string()),
        ..CallbackSignature::default()
    };
    let fresh = CallbackGuard::new("fuzz-token", Duration::from_secs(300), 16);
    match fresh.admit(&signed, WECHAT_NOW) {
        Ok(()) => assert_eq!(
            fresh.admit(&signed, WECHAT_NOW),
            Err(CallbackRefusal::Replayed)
        ),
        Err(refusal) => assert_eq!(refusal, CallbackRefusal::Unsigned, "{nonce:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every seed of the fuzz corpora (`fuzz/corpus/TARGET/seed-*`) through its target, so the
    /// entry points are exercised by `cargo test` too.
    #[test]
    fn the_fuzz_seeds_pass() {
        let corpora = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        let mut seeds = 0;
        for target in std::fs::read_dir(&corpora).unwrap() {
            let target = target.unwrap().path();
            let name = target.file_name().unwrap().to_str().unwrap().to_string();
            for seed in std::fs::read_dir(&target).unwrap() {
                let seed = seed.unwrap().path();
                if !seed
                    .file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with("seed-")
                {
                    continue;
                }
                let data = std::fs::read(&seed).unwrap();
                let text = || String::from_utf8(data.clone()).unwrap();
                match name.as_str() {
                    "mqtt" => mqtt(&data),
                    "json_frame" => json_frame(&text()),
                    "http_bodies" => http_bodies(&data),
                    "device_token" => device_token(&text()),
                    "wechat_callback" => wechat_callback(&text()),
                    other => panic!("no fuzz target {other}"),
                }
                seeds += 1;
            }
        }
        assert!(seeds >= 38, "{seeds} seeds");
    }
}
