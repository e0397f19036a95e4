//! rumqttc clients (MQTT 3.1.1 and 5) over every transport the gateway serves, with an inbox that
//! lets a test wait for a specific packet without losing the others.

use crate::{TestGateway, PATIENCE, QUIET};
use rumqttc::v5::mqttbytes::v5 as v5p;
use rumqttc::{mqttbytes::v4 as v4p, TlsConfiguration, Transport};
use std::collections::VecDeque;
use tokio::sync::mpsc;

/// The will of a device of `user`: a message to the user itself on the device's `.../send`,
/// which the gateway would store in the user's log if it were published.
pub fn will_to_self(user: &str, device: &str) -> rumqttc::LastWill {
    rumqttc::LastWill::new(
        format!("u/{user}/d/{device}/send"),
        format!(r#"{{"to":"{user}","body":{{"will":"{device} lost"}}}}"#),
        rumqttc::QoS::AtLeastOnce,
        false,
    )
}

/// Which listener a client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Tcp,
    Tls,
    Ws,
    Wss,
}

/// What the event-loop task reports: a packet, or the end of the connection.
#[derive(Debug)]
pub enum Incoming<P> {
    Packet(P),
    Closed(String),
}

/// Received packets, searchable: waiting for one kind keeps the others for later.
pub struct Inbox<P> {
    rx: mpsc::UnboundedReceiver<Incoming<P>>,
    held: VecDeque<Incoming<P>>,
}

impl<P: std::fmt::Debug> Inbox<P> {
    /// The first item (held or arriving within [`PATIENCE`]) that `pick` accepts.
    pub async fn wait_for<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&Incoming<P>) -> Option<T>,
    ) -> T {
        if let Some(pos) = self.held.iter().position(|i| pick(i).is_some()) {
            let item = self.held.remove(pos).unwrap();
            return pick(&item).unwrap();
        }
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(item)) => match pick(&item) {
                    Some(found) => return found,
                    None => self.held.push_back(item),
                },
                Ok(None) => panic!("waiting for {what}: event loop ended; held {:?}", self.held),
                Err(_) => panic!("timed out waiting for {what}; held {:?}", self.held),
            }
        }
    }

    /// Asserts that nothing `pick` accepts arrives within [`QUIET`].
    pub async fn expect_none<T: std::fmt::Debug>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&Incoming<P>) -> Option<T>,
    ) {
        if let Some(found) = self.held.iter().find_map(&mut pick) {
            panic!("expected no {what}, got {found:?}");
        }
        let deadline = tokio::time::Instant::now() + QUIET;
        while let Ok(Some(item)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            if let Some(found) = pick(&item) {
                panic!("expected no {what}, got {found:?}");
            }
            self.held.push_back(item);
        }
    }

    /// Waits until the connection ends; returns the reason.
    pub async fn closed(&mut self) -> String {
        self.wait_for("connection close", |i| match i {
            Incoming::Closed(reason) => Some(reason.clone()),
            _ => None,
        })
        .await
    }
}

fn transport(gw: &TestGateway, via: Via) -> (String, u16, Transport) {
    // The test crate links two rustls providers (through rumqttc and reqwest): pick one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = || TlsConfiguration::Simple {
        ca: gw.ca_pem.clone().expect("gateway started with TLS"),
        alpn: None,
        client_auth: None,
    };
    match via {
        Via::Tcp => ("127.0.0.1".into(), gw.mqtt.port(), Transport::Tcp),
        // The dev certificate names `localhost`.
        Via::Tls => (
            "localhost".into(),
            gw.mqtt_tls.expect("TLS listener").port(),
            Transport::Tls(tls()),
        ),
        Via::Ws => {
            let port = gw.mqtt_ws.port();
            (format!("ws://127.0.0.1:{port}/mqtt"), port, Transport::Ws)
        }
        Via::Wss => {
            let port = gw.mqtt_wss.expect("WSS listener").port();
            (
                format!("wss://localhost:{port}/mqtt"),
                port,
                Transport::Wss(tls()),
            )
        }
    }
}

/// An MQTT 3.1.1 client.
pub struct V4 {
    pub client: rumqttc::AsyncClient,
    pub inbox: Inbox<v4p::Packet>,
    /// What the CONNACK said of the session.
    pub session_present: bool,
}

impl V4 {
    /// Connects and waits for the CONNACK; `Err` carries a refused CONNACK's code.
    pub async fn connect(
        gw: &TestGateway,
        via: Via,
        client_id: &str,
        token: Option<&str>,
        configure: impl FnOnce(&mut rumqttc::MqttOptions),
    ) -> Result<Self, rumqttc::ConnectReturnCode> {
        let (host, port, transport) = transport(gw, via);
        let mut options = rumqttc::MqttOptions::new(client_id, host, port);
        options.set_transport(transport);
        if let Some(token) = token {
            options.set_credentials("device", token);
        }
        configure(&mut options);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 1000);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(packet)) => {
                        if tx.send(Incoming::Packet(packet)).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        // Packets read in the same batch as the close are still queued.
                        for event in eventloop.state.events.drain(..) {
                            if let rumqttc::Event::Incoming(packet) = event {
                                let _ = tx.send(Incoming::Packet(packet));
                            }
                        }
                        let _ = tx.send(Incoming::Closed(format!("{e:?}")));
                        return;
                    }
                }
            }
        });
        let mut inbox = Inbox {
            rx,
            held: VecDeque::new(),
        };
        let connack = inbox
            .wait_for("CONNACK", |i| match i {
                Incoming::Packet(v4p::Packet::ConnAck(ack)) => {
                    Some(Ok((ack.code, ack.session_present)))
                }
                Incoming::Closed(reason) => Some(Err(reason.clone())),
                _ => None,
            })
            .await;
        match connack {
            Ok((rumqttc::ConnectReturnCode::Success, session_present)) => Ok(Self {
                client,
                inbox,
                session_present,
            }),
            Ok((code, _)) => Err(code),
            Err(reason) => match parse_refusal(&reason) {
                Some(code) => Err(code),
                None => panic!("connection failed without CONNACK: {reason}"),
            },
        }
    }

    /// Subscribes and returns the SUBACK's codes.
    pub async fn subscribe(
        &mut self,
        filter: &str,
        qos: rumqttc::QoS,
    ) -> Vec<v4p::SubscribeReasonCode> {
        self.client.subscribe(filter, qos).await.expect("subscribe");
        self.inbox
            .wait_for("SUBACK", |i| match i {
                Incoming::Packet(v4p::Packet::SubAck(ack)) => Some(ack.return_codes.clone()),
                _ => None,
            })
            .await
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>, qos: rumqttc::QoS) {
        self.client
            .publish(topic, qos, false, payload)
            .await
            .expect("publish");
    }

    /// The next message on `topic`, as JSON.
    pub async fn message_on(&mut self, topic: &str) -> serde_json::Value {
        self.inbox
            .wait_for(&format!("a message on {topic}"), |i| match i {
                Incoming::Packet(v4p::Packet::Publish(p)) if p.topic == topic => {
                    Some(serde_json::from_slice(&p.payload).expect("JSON payload"))
                }
                _ => None,
            })
            .await
    }

    /// Asserts that no message on `topic` arrives.
    pub async fn no_message_on(&mut self, topic: &str) {
        let topic = topic.to_string();
        self.inbox
            .expect_none(&format!("message on {topic}"), |i| match i {
                Incoming::Packet(v4p::Packet::Publish(p)) if rumqttc::matches(&p.topic, &topic) => {
                    Some(p.clone())
                }
                _ => None,
            })
            .await
    }
}

/// rumqttc reports a refused CONNACK as an error; this recovers its code.
fn parse_refusal(reason: &str) -> Option<rumqttc::ConnectReturnCode> {
    use rumqttc::ConnectReturnCode::*;
    [
        NotAuthorized,
        BadUserNamePassword,
        RefusedProtocolVersion,
        BadClientId,
        ServiceUnavailable,
    ]
    .into_iter()
    .find(|code| reason.contains(&format!("ConnectionRefused({code:?})")))
}

/// An MQTT 5 client.
pub struct V5 {
    pub client: rumqttc::v5::AsyncClient,
    pub inbox: Inbox<v5p::Packet>,
}

impl V5 {
    /// Connects and waits for the CONNACK; `Err` carries a refused CONNACK's code.
    pub async fn connect(
        gw: &TestGateway,
        via: Via,
        client_id: &str,
        token: Option<&str>,
        configure: impl FnOnce(&mut rumqttc::v5::MqttOptions),
    ) -> Result<(Self, v5p::ConnAck), v5p::ConnectReturnCode> {
        let (host, port, transport) = transport(gw, via);
        let mut options = rumqttc::v5::MqttOptions::new(client_id, host, port);
        options.set_transport(transport);
        if let Some(token) = token {
            options.set_credentials("device", token);
        }
        configure(&mut options);
        let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 1000);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::v5::Event::Incoming(packet)) => {
                        if tx.send(Incoming::Packet(packet)).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        // Packets read in the same batch as the close are still queued.
                        for event in eventloop.state.events.drain(..) {
                            if let rumqttc::v5::Event::Incoming(packet) = event {
                                let _ = tx.send(Incoming::Packet(packet));
                            }
                        }
                        // rumqttc reports a server DISCONNECT as an error: give it back as the packet.
                        if let rumqttc::v5::ConnectionError::MqttState(
                            rumqttc::v5::StateError::ServerDisconnect { reason_code, .. },
                        ) = &e
                        {
                            let disconnect = v5p::Disconnect::new(*reason_code);
                            let _ = tx.send(Incoming::Packet(v5p::Packet::Disconnect(disconnect)));
                        }
                        let _ = tx.send(Incoming::Closed(format!("{e:?}")));
                        return;
                    }
                }
            }
        });
        let mut inbox = Inbox {
            rx,
            held: VecDeque::new(),
        };
        let connack = inbox
            .wait_for("CONNACK", |i| match i {
                Incoming::Packet(v5p::Packet::ConnAck(ack)) => Some(Ok(ack.clone())),
                Incoming::Closed(reason) => Some(Err(reason.clone())),
                _ => None,
            })
            .await;
        match connack {
            Ok(ack) if ack.code == v5p::ConnectReturnCode::Success => {
                Ok((Self { client, inbox }, ack))
            }
            Ok(ack) => Err(ack.code),
            Err(reason) => {
                use v5p::ConnectReturnCode::*;
                [
                    NotAuthorized,
                    BadUserNamePassword,
                    UnsupportedProtocolVersion,
                    ServerUnavailable,
                ]
                .into_iter()
                .find(|code| reason.contains(&format!("ConnectionRefused({code:?})")))
                .map(Err)
                .unwrap_or_else(|| panic!("connection failed without CONNACK: {reason}"))
            }
        }
    }

    pub async fn subscribe(
        &mut self,
        filter: &str,
        qos: rumqttc::v5::mqttbytes::QoS,
    ) -> Vec<v5p::SubscribeReasonCode> {
        self.client.subscribe(filter, qos).await.expect("subscribe");
        self.inbox
            .wait_for("SUBACK", |i| match i {
                Incoming::Packet(v5p::Packet::SubAck(ack)) => Some(ack.return_codes.clone()),
                _ => None,
            })
            .await
    }

    pub async fn publish(
        &self,
        topic: &str,
        payload: impl Into<bytes::Bytes>,
        qos: rumqttc::v5::mqttbytes::QoS,
    ) {
        self.client
            .publish(topic, qos, false, payload.into())
            .await
            .expect("publish");
    }

    pub async fn message_on(&mut self, topic: &str) -> serde_json::Value {
        self.inbox
            .wait_for(&format!("a message on {topic}"), |i| match i {
                Incoming::Packet(v5p::Packet::Publish(p)) if p.topic == topic.as_bytes() => {
                    Some(serde_json::from_slice(&p.payload).expect("JSON payload"))
                }
                _ => None,
            })
            .await
    }

    /// The next PUBACK's reason.
    pub async fn puback(&mut self) -> v5p::PubAckReason {
        self.inbox
            .wait_for("PUBACK", |i| match i {
                Incoming::Packet(v5p::Packet::PubAck(ack)) => Some(ack.reason),
                _ => None,
            })
            .await
    }

    /// The server's DISCONNECT reason.
    pub async fn disconnect_reason(&mut self) -> v5p::DisconnectReasonCode {
        self.inbox
            .wait_for("DISCONNECT", |i| match i {
                Incoming::Packet(v5p::Packet::Disconnect(d)) => Some(d.reason_code),
                _ => None,
            })
            .await
    }
}
