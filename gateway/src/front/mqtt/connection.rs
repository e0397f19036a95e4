//! One MQTT connection, from CONNECT to close: authentication, keepalive, the inbound packet
//! handling, and writing the session's outbox with at most `max_inflight` unacknowledged QoS 1
//! messages.

use super::codec::{
    peek_connect_version, read_connect, Codec, ConnackCode, ConnackInfo, ConnectRequest,
    DecodeError, DisconnectCode, Inbound, PubAckCode, SubscribeRefusal, Version, Will,
};
use crate::auth::identity::Identity;
use crate::auth::Credentials;
use crate::front::client::{Client, Handled};
use crate::front::refusal::Refusal;
use crate::front::stream::MqttStream;
use crate::front::Front;
use crate::live::link::{Delivery, Qos};
use crate::observe::metrics::{RejectReason, TransportLabel};
use bytes::BytesMut;
use futures_util::stream::{FuturesOrdered, StreamExt};
use protocol::envelope::{DisconnectReason, Transport};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

/// Write buffer size above which the connection flushes before taking more from its outbox.
const WRITE_BATCH: usize = 64 * 1024;

/// Reads the CONNECT, authenticates, answers CONNACK and runs the session. The caller bounds
/// this whole call's handshake part by the handshake timeout through `handshake_deadline`.
pub async fn serve(
    front: Arc<Front>,
    mut stream: MqttStream,
    transport: Transport,
    handshake_deadline: Instant,
) {
    let max_packet = front.limits.max_packet_size;
    let mut rbuf = BytesMut::new();
    let connect = match tokio::time::timeout_at(
        handshake_deadline,
        read_first_connect(&mut stream, &mut rbuf, max_packet),
    )
    .await
    {
        Err(_) => return front.metrics.reject(RejectReason::handshake_timeout),
        Ok(Err(ConnectFailure::Closed)) => {
            return front.metrics.reject(RejectReason::handshake_failed)
        }
        Ok(Err(ConnectFailure::Decode(e))) => {
            tracing::debug!("refused CONNECT: {e}");
            if let DecodeError::UnsupportedVersion(_) = e {
                let mut out = BytesMut::new();
                // Answered in 3.1.1 framing, which every MQTT client understands.
                Codec {
                    version: Version::V311,
                    max_packet_size: max_packet,
                }
                .connack(
                    ConnackCode::UnsupportedVersion,
                    ConnackInfo::default(),
                    &mut out,
                );
                let _ = stream.write_all(&out).await;
            }
            return front.metrics.reject(RejectReason::protocol_error);
        }
        Ok(Ok(connect)) => connect,
    };
    let codec = Codec {
        version: connect.version,
        max_packet_size: max_packet,
    };
    let identity = match authenticate(&front, &connect) {
        Ok(identity) => identity,
        Err(reason) => {
            front
                .metrics
                .auth_failures
                .get_or_create(&TransportLabel::from(transport))
                .inc();
            tracing::info!(client_id = %connect.client_id, transport = transport.as_str(), "CONNECT refused: {reason}");
            let mut out = BytesMut::new();
            let info = ConnackInfo {
                reason: Some(reason),
                ..ConnackInfo::default()
            };
            codec.connack(ConnackCode::NotAuthorized, info, &mut out);
            let _ = stream.write_all(&out).await;
            stream.shutdown().await;
            return;
        }
    };
    let (keep_alive, server_keep_alive) = negotiate_keep_alive(
        connect.keep_alive,
        front.limits.max_keepalive,
        connect.version,
    );
    let (client, outbox) = Client::open(&front, identity, transport);
    let mut wbuf = BytesMut::new();
    let info = ConnackInfo {
        server_keep_alive,
        max_packet_size: Some(max_packet),
        reason: None,
    };
    codec.connack(ConnackCode::Accepted, info, &mut wbuf);
    let out_counter = front
        .metrics
        .messages_out
        .get_or_create(&TransportLabel::from(transport))
        .clone();
    let connection = Connection {
        out_counter,
        max_inflight: front.limits.max_inflight as usize,
        client,
        codec,
        stream,
        rbuf,
        wbuf,
        inflight: VecDeque::new(),
        qos2_received: HashSet::new(),
        next_pkid: 0,
        keep_alive,
        will: connect.will,
        answers: FuturesOrdered::new(),
    };
    connection.run(outbox).await;
}

enum ConnectFailure {
    Closed,
    Decode(DecodeError),
}

async fn read_first_connect(
    stream: &mut MqttStream,
    rbuf: &mut BytesMut,
    max_packet: u32,
) -> Result<ConnectRequest, ConnectFailure> {
    loop {
        if let Some(version) =
            peek_connect_version(rbuf, max_packet).map_err(ConnectFailure::Decode)?
        {
            if let Some(connect) =
                read_connect(version, rbuf, max_packet).map_err(ConnectFailure::Decode)?
            {
                return Ok(connect);
            }
        }
        match stream.read_into(rbuf).await {
            Ok(0) | Err(_) => return Err(ConnectFailure::Closed),
            Ok(_) => {}
        }
    }
}

/// The device token is the password (see [`crate::auth::Auth::connect`]).
fn authenticate(front: &Front, connect: &ConnectRequest) -> Result<Identity, String> {
    let credentials = Credentials {
        client_id: &connect.client_id,
        password: connect.password.as_deref(),
        will_topic: connect.will.as_ref().map(|will| will.topic.as_str()),
    };
    let assign_id = || format!("anonymous-{}", front.link_ids.next());
    front.auth.connect(&credentials, assign_id)
}

/// The keepalive to enforce and, for v5, the Server Keep Alive to announce. A client asking for
/// more than allowed (or for none) gets the maximum: dead devices must be noticed. 3.1.1 clients
/// cannot be told, so the maximum is enforced silently for them.
fn negotiate_keep_alive(
    requested: u16,
    max: Duration,
    version: Version,
) -> (Duration, Option<u16>) {
    let max_secs = max.as_secs().min(u16::MAX as u64) as u16;
    if requested == 0 || requested > max_secs {
        let announce = (version == Version::V5).then_some(max_secs);
        (Duration::from_secs(max_secs as u64), announce)
    } else {
        (Duration::from_secs(requested as u64), None)
    }
}

struct Connection {
    client: Client,
    codec: Codec,
    stream: MqttStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Packet ids of QoS 1 deliveries not yet acknowledged, oldest first.
    inflight: VecDeque<u16>,
    /// QoS 2 publishes received and delivered, waiting for their PUBREL.
    qos2_received: HashSet<u16>,
    next_pkid: u16,
    max_inflight: usize,
    keep_alive: Duration,
    will: Option<Will>,
    out_counter: prometheus_client::metrics::counter::Counter,
    /// Answers to publishes still being handled, in the order the publishes came.
    answers: FuturesOrdered<PendingAnswer>,
}

/// Which publish an answer is for.
struct Answer {
    pkid: u16,
    qos: u8,
    topic: String,
}

/// A publish whose answer waits for work still running (a durable append).
type PendingAnswer =
    std::pin::Pin<Box<dyn std::future::Future<Output = (Answer, Result<(), Refusal>)> + Send>>;

/// What handling a packet asks of the loop.
enum Flow {
    Continue,
    /// End the session; the will is sent unless the client disconnected normally.
    End {
        reason: DisconnectReason,
        notice: Option<(DisconnectCode, &'static str)>,
    },
}

impl Connection {
    async fn run(mut self, mut outbox: mpsc::Receiver<Delivery>) {
        // Keepalive is enforced at 1.5 times the negotiated interval (MQTT 3.1.1 §3.1.2.10).
        let keep_alive_window = self.keep_alive + self.keep_alive / 2;
        let keep_alive = sleep_until(Instant::now() + keep_alive_window);
        tokio::pin!(keep_alive);
        let handle = self.client.link.clone();
        let closed = handle.closed();
        tokio::pin!(closed);

        let flow = loop {
            if !self.wbuf.is_empty() {
                if self.stream.write_all(&self.wbuf).await.is_err() {
                    break Flow::End {
                        reason: DisconnectReason::SocketClosed,
                        notice: None,
                    };
                }
                self.recycle_write_buffer();
            }
            let can_send = self.inflight.len() < self.max_inflight;
            tokio::select! {
                biased;
                reason = &mut closed => {
                    if reason.kind == DisconnectReason::Shutdown {
                        // Answer the publishes being stored first: the store commits them
                        // before it closes, and their senders must not send them again.
                        while let Some((answer, result)) = self.answers.next().await {
                            let _ = self.answer(answer, result);
                        }
                    }
                    // Write what was queued before the close (a kick's reason, for instance).
                    while let Ok(delivery) = outbox.try_recv() {
                        self.write_delivery(delivery);
                    }
                    let code = match reason.kind {
                        DisconnectReason::TakenOver => DisconnectCode::TakenOver,
                        DisconnectReason::SlowConsumer => DisconnectCode::QuotaExceeded,
                        DisconnectReason::ApprovalDenied | DisconnectReason::ApprovalTimeout => DisconnectCode::NotAuthorized,
                        DisconnectReason::Shutdown => DisconnectCode::ShuttingDown,
                        _ => DisconnectCode::Administrative,
                    };
                    self.codec.disconnect(code, &reason.message, &mut self.wbuf);
                    break Flow::End { reason: reason.kind, notice: None };
                }
                read = self.stream.read_into(&mut self.rbuf) => {
                    match read {
                        Ok(0) | Err(_) => break Flow::End { reason: DisconnectReason::SocketClosed, notice: None },
                        Ok(_) => {
                            keep_alive.as_mut().reset(Instant::now() + keep_alive_window);
                            self.client.link.touch();
                            if let Flow::End { reason, notice } = self.handle_input() {
                                break Flow::End { reason, notice };
                            }
                        }
                    }
                }
                Some((answer, result)) = self.answers.next(), if !self.answers.is_empty() => {
                    if let Flow::End { reason, notice } = self.answer(answer, result) {
                        break Flow::End { reason, notice };
                    }
                }
                Some(delivery) = outbox.recv(), if can_send => {
                    self.write_delivery(delivery);
                    while self.inflight.len() < self.max_inflight && self.wbuf.len() < WRITE_BATCH {
                        match outbox.try_recv() {
                            Ok(delivery) => self.write_delivery(delivery),
                            Err(_) => break,
                        }
                    }
                }
                () = &mut keep_alive => {
                    break Flow::End {
                        reason: DisconnectReason::KeepaliveTimeout,
                        notice: Some((DisconnectCode::KeepAliveTimeout, "no packet within 1.5 times the keepalive")),
                    };
                }
            }
        };
        let Flow::End { reason, notice } = flow else {
            unreachable!("the loop only breaks with End")
        };
        if let Some((code, text)) = notice {
            self.codec.disconnect(code, text, &mut self.wbuf);
        }
        if !self.wbuf.is_empty() {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.stream.write_all(&self.wbuf))
                .await;
        }
        self.stream.shutdown().await;
        if reason != DisconnectReason::ClientDisconnect {
            self.send_will();
        }
        self.client.set_end_reason(reason);
    }

    /// Drops buffers grown by a burst, so an idle connection holds little memory.
    fn recycle_write_buffer(&mut self) {
        if self.wbuf.capacity() > WRITE_BATCH * 2 {
            self.wbuf = BytesMut::new();
        } else {
            self.wbuf.clear();
        }
        if self.rbuf.is_empty() && self.rbuf.capacity() > WRITE_BATCH {
            self.rbuf = BytesMut::new();
        }
    }

    fn handle_input(&mut self) -> Flow {
        loop {
            match self.codec.read(&mut self.rbuf) {
                Ok(None) => return Flow::Continue,
                Ok(Some(packet)) => {
                    if let flow @ Flow::End { .. } = self.handle_packet(packet) {
                        return flow;
                    }
                }
                Err(DecodeError::TooLarge { size, max }) => {
                    tracing::debug!(link = self.client.link.id, size, max, "packet too large");
                    return Flow::End {
                        reason: DisconnectReason::PacketTooLarge,
                        notice: Some((
                            DisconnectCode::PacketTooLarge,
                            "packet exceeds the maximum packet size",
                        )),
                    };
                }
                Err(e) => {
                    tracing::debug!(link = self.client.link.id, "protocol error: {e}");
                    return Flow::End {
                        reason: DisconnectReason::ProtocolError,
                        notice: Some((DisconnectCode::ProtocolError, "malformed packet")),
                    };
                }
            }
        }
    }

    fn handle_packet(&mut self, packet: Inbound) -> Flow {
        match packet {
            Inbound::Publish {
                topic,
                payload,
                qos,
                pkid,
            } => {
                if qos == 2 && !self.qos2_received.insert(pkid) {
                    // A retransmission of a QoS 2 publish already handled: acknowledge only.
                    self.codec.pubrec(pkid, &mut self.wbuf);
                    return Flow::Continue;
                }
                let delivery_qos = if qos == 0 {
                    Qos::AtMostOnce
                } else {
                    Qos::AtLeastOnce
                };
                let handled = self.client.publish(&topic, payload, delivery_qos);
                let answer = Answer { pkid, qos, topic };
                match handled {
                    // Answers go out in the order the publishes came (MQTT 4.6), so an immediate
                    // result waits behind earlier ones still being stored.
                    Handled::Done(result) if self.answers.is_empty() => {
                        return self.answer(answer, result)
                    }
                    Handled::Done(result) => self
                        .answers
                        .push_back(Box::pin(std::future::ready((answer, result)))),
                    Handled::Later(work) if qos == 0 => {
                        // Nobody waits for the answer, but the work must still run.
                        self.client.finish_later(work);
                    }
                    Handled::Later(work) => self
                        .answers
                        .push_back(Box::pin(async move { (answer, work.await) })),
                }
            }
            Inbound::PubAck(pkid) => {
                if let Some(pos) = self.inflight.iter().position(|&p| p == pkid) {
                    self.inflight.remove(pos);
                }
            }
            Inbound::PubRel(pkid) => {
                self.qos2_received.remove(&pkid);
                self.codec.pubcomp(pkid, &mut self.wbuf);
            }
            Inbound::Subscribe { pkid, filters } => {
                let results: Vec<_> = filters
                    .iter()
                    .map(|(filter, qos)| {
                        self.client
                            .subscribe(filter, *qos)
                            .map_err(|refusal| match refusal {
                                Refusal::InvalidTopic => SubscribeRefusal::FilterInvalid,
                                Refusal::TooManySubscriptions => SubscribeRefusal::QuotaExceeded,
                                _ => SubscribeRefusal::NotAuthorized,
                            })
                    })
                    .collect();
                self.codec.suback(pkid, &results, &mut self.wbuf);
            }
            Inbound::Unsubscribe { pkid, filters } => {
                let existed: Vec<bool> =
                    filters.iter().map(|f| self.client.unsubscribe(f)).collect();
                self.codec.unsuback(pkid, &existed, &mut self.wbuf);
            }
            Inbound::PingReq => self.codec.pingresp(&mut self.wbuf),
            Inbound::Disconnect { with_will } => {
                let reason = if with_will {
                    DisconnectReason::SocketClosed
                } else {
                    self.will = None;
                    DisconnectReason::ClientDisconnect
                };
                return Flow::End {
                    reason,
                    notice: None,
                };
            }
            Inbound::Unexpected(what) => {
                tracing::debug!(link = self.client.link.id, "protocol error: {what}");
                return Flow::End {
                    reason: DisconnectReason::ProtocolError,
                    notice: Some((DisconnectCode::ProtocolError, what)),
                };
            }
        }
        Flow::Continue
    }

    fn write_delivery(&mut self, delivery: Delivery) {
        let pkid = match delivery.qos {
            Qos::AtMostOnce => 0,
            Qos::AtLeastOnce => {
                let pkid = self.allocate_pkid();
                self.inflight.push_back(pkid);
                pkid
            }
        };
        let message = &delivery.message;
        self.codec.publish(
            &message.topic,
            message.payload.clone(),
            delivery.qos,
            pkid,
            &mut self.wbuf,
        );
        self.out_counter.inc();
    }

    fn allocate_pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.wrapping_add(1).max(1);
            if !self.inflight.contains(&self.next_pkid) {
                return self.next_pkid;
            }
        }
    }

    /// Answers a publish once it was handled: PUBACK (with the reason for v5) or PUBREC, and a
    /// reply on the device's reply topic for a refused device request. A 3.1.1 client cannot be
    /// told that the store is unavailable, so it is disconnected without the PUBACK and
    /// sends the message again after reconnecting.
    fn answer(&mut self, answer: Answer, result: Result<(), Refusal>) -> Flow {
        if let Err(refusal) = &result {
            self.client.reply_refusal(&answer.topic, refusal);
            if matches!(refusal, Refusal::StoreUnavailable(_))
                && self.codec.version == Version::V311
                && answer.qos > 0
            {
                return Flow::End {
                    reason: DisconnectReason::StoreUnavailable,
                    notice: None,
                };
            }
        }
        match answer.qos {
            0 => {}
            1 => self
                .codec
                .puback(answer.pkid, puback_code(&result), &mut self.wbuf),
            _ => self.codec.pubrec(answer.pkid, &mut self.wbuf),
        }
        Flow::Continue
    }

    fn send_will(&mut self) {
        if let Some(will) = self.will.take() {
            let id = self.client.link.id;
            let handled = self.client.publish(&will.topic, will.payload, will.qos);
            self.client.finish_later(async move {
                if let Err(refusal) = handled.finish().await {
                    tracing::debug!(link = id, "will refused: {refusal}");
                }
            });
        }
    }
}

fn puback_code(result: &Result<(), Refusal>) -> PubAckCode {
    match result {
        Ok(()) => PubAckCode::Success,
        Err(Refusal::Forbidden | Refusal::ApprovalPending) => PubAckCode::NotAuthorized,
        Err(Refusal::InvalidTopic) => PubAckCode::TopicNameInvalid,
        Err(Refusal::BadPayload(_)) => PubAckCode::PayloadFormatInvalid,
        Err(Refusal::TooManySubscriptions | Refusal::StoreUnavailable(_)) => {
            PubAckCode::Unavailable
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(1200);

    #[test]
    fn keep_alive_is_capped_and_announced_to_v5() {
        assert_eq!(
            negotiate_keep_alive(60, MAX, Version::V5),
            (Duration::from_secs(60), None)
        );
        assert_eq!(
            negotiate_keep_alive(900, MAX, Version::V311),
            (Duration::from_secs(900), None),
            "15-minute mobile heartbeats are accepted"
        );
        assert_eq!(
            negotiate_keep_alive(3600, MAX, Version::V5),
            (MAX, Some(1200))
        );
        assert_eq!(negotiate_keep_alive(0, MAX, Version::V5), (MAX, Some(1200)));
        assert_eq!(negotiate_keep_alive(3600, MAX, Version::V311), (MAX, None));
    }
}
