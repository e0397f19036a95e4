//! A replayed session over MQTT 5 (rumqttc), on the transport it was recorded on when the replay
//! was given that listener (TCP, TLS, WebSocket, secure WebSocket), else on TCP. MQTT 5 so that
//! every answer carries a reason code the replay can check (a 3.1.1 PUBACK says nothing about a
//! refused publish).

use super::script::Action;
use super::session::{Ended, Link, Pending};
use super::tally::Tally;
use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode, DisconnectReasonCode, Packet, PubAckReason, PubCompReason, PubRecReason,
    SubscribeReasonCode, UnsubAckReason,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions, StateError};
use rumqttc::{Outgoing, TlsConfiguration, Transport};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_rustls::rustls::ClientConfig;

const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Sync pages run up to the gateway's `roaming.page_max_bytes` (64 KiB by default).
const MAX_PACKET: u32 = 1 << 20;

/// Which kind of packet a packet id was given to: ids of different kinds may coincide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Request {
    Subscribe,
    Unsubscribe,
    Publish,
}

/// Where and how a replayed MQTT session connects.
#[derive(Clone)]
pub enum MqttEndpoint {
    Tcp(SocketAddr),
    Tls(SocketAddr, Arc<ClientConfig>),
    Ws(SocketAddr),
    Wss(SocketAddr, Arc<ClientConfig>),
}

impl MqttEndpoint {
    fn options(&self, client_id: &str) -> MqttOptions {
        let tls = |config: &Arc<ClientConfig>| TlsConfiguration::Rustls(config.clone());
        let (host, addr, transport) = match self {
            Self::Tcp(addr) => (addr.ip().to_string(), addr, Transport::Tcp),
            Self::Tls(addr, config) => (addr.ip().to_string(), addr, Transport::Tls(tls(config))),
            Self::Ws(addr) => (format!("ws://{addr}/mqtt"), addr, Transport::Ws),
            Self::Wss(addr, config) => (
                format!("wss://{addr}/mqtt"),
                addr,
                Transport::Wss(tls(config)),
            ),
        };
        let mut options = MqttOptions::new(client_id, host, addr.port());
        options.set_transport(transport);
        options
    }
}

pub struct MqttLink {
    client: AsyncClient,
    /// What the event-loop task reads, or why the connection ended.
    events: mpsc::UnboundedReceiver<Result<Event, Ended>>,
    /// Sent to the client, waiting for rumqttc to give them a packet id (it does, in order).
    queued: VecDeque<(Request, Pending)>,
    /// Sent with a packet id, waiting for their answer.
    awaiting: HashMap<(Request, u16), Pending>,
}

impl MqttLink {
    /// Connects and waits up to `patience` for a successful CONNACK.
    pub async fn connect(
        endpoint: &MqttEndpoint,
        client_id: &str,
        user: &str,
        token: &str,
        capacity: usize,
        patience: Duration,
    ) -> Result<Self, String> {
        let mut options = endpoint.options(client_id);
        options
            .set_keep_alive(KEEP_ALIVE)
            .set_max_packet_size(Some(MAX_PACKET))
            .set_credentials(user, token);
        // Room for every step, so that sending never waits on the event loop.
        let (client, mut eventloop) = AsyncClient::new(options, capacity.max(10));
        let (tx, mut events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let event = eventloop.poll().await.map_err(describe);
                let ended = event.is_err();
                if tx.send(event).is_err() || ended {
                    return;
                }
            }
        });
        let connack = timeout(patience, async {
            loop {
                match events.recv().await {
                    Some(Ok(Event::Incoming(Packet::ConnAck(ack)))) => return Ok(ack.code),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Err("the connection ended".to_string()),
                }
            }
        })
        .await
        .map_err(|_| format!("no CONNACK within {patience:?}"))??;
        if connack != ConnectReturnCode::Success {
            return Err(format!("CONNACK {connack:?}"));
        }
        Ok(Self {
            client,
            events,
            queued: VecDeque::new(),
            awaiting: HashMap::new(),
        })
    }

    /// Files a request under the packet id rumqttc gave it.
    fn assign(&mut self, request: Request, pkid: u16) -> Result<(), String> {
        match self.queued.pop_front() {
            Some((queued, pending)) if queued == request => {
                self.awaiting.insert((request, pkid), pending);
                Ok(())
            }
            other => Err(format!(
                "rumqttc sent a {request:?} while {other:?} was next"
            )),
        }
    }

    /// The request `pkid` answered; `None` for an answer to nothing the replay sent.
    fn answered(&mut self, request: Request, pkid: u16) -> Result<Pending, String> {
        self.awaiting
            .remove(&(request, pkid))
            .ok_or_else(|| format!("an answer to {request:?} {pkid}, which was never sent"))
    }
}

impl Link for MqttLink {
    async fn send(&mut self, action: &Action) -> Result<(), String> {
        let sent = match action {
            Action::Subscribe { topic, qos } => {
                self.queued
                    .push_back((Request::Subscribe, Pending::of(action)));
                self.client.try_subscribe(topic, qos_of(*qos))
            }
            Action::Unsubscribe { topic } => {
                self.queued
                    .push_back((Request::Unsubscribe, Pending::of(action)));
                self.client.try_unsubscribe(topic)
            }
            Action::Publish { topic, qos, body } => {
                let qos = qos_of(*qos);
                if qos != QoS::AtMostOnce {
                    self.queued
                        .push_back((Request::Publish, Pending::of(action)));
                }
                self.client.try_publish(topic, qos, false, body.to_bytes())
            }
        };
        sent.map_err(|e| format!("{}: {e}", Pending::of(action).what))
    }

    async fn receive(&mut self, tally: &Tally) -> Result<(), Ended> {
        let event = self
            .events
            .recv()
            .await
            .unwrap_or_else(|| Err(Ended::Lost("the connection ended".into())))?;
        match event {
            Event::Outgoing(Outgoing::Subscribe(pkid)) => self.assign(Request::Subscribe, pkid)?,
            Event::Outgoing(Outgoing::Unsubscribe(pkid)) => {
                self.assign(Request::Unsubscribe, pkid)?
            }
            Event::Outgoing(Outgoing::Publish(pkid)) if pkid != 0 => {
                self.assign(Request::Publish, pkid)?
            }
            Event::Incoming(Packet::SubAck(ack)) => {
                let pending = self.answered(Request::Subscribe, ack.pkid)?;
                let refused = ack
                    .return_codes
                    .iter()
                    .find(|code| !matches!(code, SubscribeReasonCode::Success(_)));
                if let Some(code) = refused {
                    tally.fail(pending.kind, format!("{}: SUBACK {code:?}", pending.what));
                }
            }
            Event::Incoming(Packet::UnsubAck(ack)) => {
                let pending = self.answered(Request::Unsubscribe, ack.pkid)?;
                let refused = ack
                    .reasons
                    .iter()
                    .find(|reason| **reason != UnsubAckReason::Success);
                if let Some(reason) = refused {
                    tally.fail(
                        pending.kind,
                        format!("{}: UNSUBACK {reason:?}", pending.what),
                    );
                }
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                let pending = self.answered(Request::Publish, ack.pkid)?;
                if ack.reason != PubAckReason::Success {
                    let words = ack
                        .properties
                        .and_then(|p| p.reason_string)
                        .unwrap_or_default();
                    tally.fail(
                        pending.kind,
                        format!("{}: PUBACK {:?} {words}", pending.what, ack.reason),
                    );
                }
            }
            Event::Incoming(Packet::PubRec(rec)) if rec.reason != PubRecReason::Success => {
                let pending = self.answered(Request::Publish, rec.pkid)?;
                tally.fail(
                    pending.kind,
                    format!("{}: PUBREC {:?}", pending.what, rec.reason),
                );
            }
            Event::Incoming(Packet::PubComp(comp)) => {
                let pending = self.answered(Request::Publish, comp.pkid)?;
                if comp.reason != PubCompReason::Success {
                    tally.fail(
                        pending.kind,
                        format!("{}: PUBCOMP {:?}", pending.what, comp.reason),
                    );
                }
            }
            Event::Incoming(Packet::Publish(_)) => tally.received.add(1),
            _ => {}
        }
        Ok(())
    }

    fn outstanding(&self) -> Vec<Pending> {
        self.queued
            .iter()
            .map(|(_, pending)| pending)
            .chain(self.awaiting.values())
            .cloned()
            .collect()
    }

    async fn close(mut self) {
        if self.client.try_disconnect().is_ok() {
            // The event loop ends once the DISCONNECT is out.
            let _ = timeout(Duration::from_secs(1), async {
                while let Some(Ok(_)) = self.events.recv().await {}
            })
            .await;
        }
    }
}

fn qos_of(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// rumqttc reports a refused CONNECT and a server DISCONNECT as errors: say which.
fn describe(error: ConnectionError) -> Ended {
    match error {
        ConnectionError::ConnectionRefused(code) => Ended::Lost(format!("CONNACK {code:?}")),
        ConnectionError::MqttState(StateError::ServerDisconnect {
            reason_code: DisconnectReasonCode::SessionTakenOver,
            ..
        }) => Ended::TakenOver,
        ConnectionError::MqttState(StateError::ServerDisconnect {
            reason_code,
            reason_string,
        }) => Ended::Lost(format!(
            "the gateway disconnected the session: {reason_code:?} {}",
            reason_string.unwrap_or_default()
        )),
        other => Ended::Lost(other.to_string()),
    }
}
