//! A device that keeps a persistent MQTT session (3.1.1 `clean_session = 0`, or v5 with a
//! Session Expiry Interval) instead of syncing: subscribed once to its user's inbox at QoS 1,
//! it gets what it missed on reconnecting with nothing but a CONNECT, as ordinary PUBLISHes on
//! the inbox, and acknowledges each (rumqttc's automatic PUBACKs).

use crate::device::{network_options, CLOSE_TIMEOUT, KEEP_ALIVE, MAX_PACKET, REQUEST_CAPACITY};
use crate::target::Credentials;
use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use protocol::topics::inbox;
use rumqttc::v5::mqttbytes::v5 as v5p;
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::{Event, Packet, QoS};
use serde::Serialize;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::timeout;

/// The session expiry a v5 device asks for: well beyond any run.
const SESSION_EXPIRY_SECS: u32 = 3_600;
/// Publishes a v5 device may have in flight: it sends none. rumqttc's v5 client sizes a table
/// by this limit, 65,535 entries by default (~14 MB per client).
const V5_OUTGOING_INFLIGHT: u16 = 16;

/// The MQTT version a session device speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
pub enum MqttVersion {
    /// MQTT 3.1.1, `clean_session = 0`.
    #[value(name = "3.1.1", alias = "4")]
    #[serde(rename = "3.1.1")]
    V311,
    /// MQTT 5, `clean_start = 0` and a Session Expiry Interval of an hour.
    #[value(name = "5")]
    #[serde(rename = "5")]
    V5,
}

impl MqttVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V311 => "3.1.1",
            Self::V5 => "5",
        }
    }
}

/// A connected device with a persistent session.
pub struct SessionDevice {
    inbox_topic: String,
    link: SessionLink,
}

enum SessionLink {
    V311 {
        client: rumqttc::AsyncClient,
        events: Box<rumqttc::EventLoop>,
    },
    V5 {
        client: rumqttc::v5::AsyncClient,
        events: Box<rumqttc::v5::EventLoop>,
    },
}

impl SessionDevice {
    /// Sends a CONNECT asking to keep the session and waits for the CONNACK; the device and the
    /// CONNACK's session-present flag, or an error after `limit`.
    pub async fn connect(
        addr: SocketAddr,
        version: MqttVersion,
        user: &str,
        credentials: Credentials,
        limit: Duration,
    ) -> Result<(Self, bool)> {
        let connecting = async {
            match version {
                MqttVersion::V311 => {
                    let mut options = rumqttc::MqttOptions::new(
                        credentials.client_id,
                        addr.ip().to_string(),
                        addr.port(),
                    );
                    options
                        .set_keep_alive(KEEP_ALIVE)
                        .set_max_packet_size(MAX_PACKET, MAX_PACKET)
                        .set_clean_session(false);
                    if let Some((login, password)) = credentials.login {
                        options.set_credentials(login, password);
                    }
                    let (client, mut events) = rumqttc::AsyncClient::new(options, REQUEST_CAPACITY);
                    events.set_network_options(network_options(limit));
                    loop {
                        if let Event::Incoming(Packet::ConnAck(ack)) =
                            events.poll().await.context("logging in")?
                        {
                            if ack.code != rumqttc::ConnectReturnCode::Success {
                                bail!("login refused: {:?}", ack.code);
                            }
                            let link = SessionLink::V311 {
                                client,
                                events: Box::new(events),
                            };
                            return Ok((link, ack.session_present));
                        }
                    }
                }
                MqttVersion::V5 => {
                    let mut options = rumqttc::v5::MqttOptions::new(
                        credentials.client_id,
                        addr.ip().to_string(),
                        addr.port(),
                    );
                    options
                        .set_keep_alive(KEEP_ALIVE)
                        .set_max_packet_size(Some(MAX_PACKET as u32))
                        .set_clean_start(false)
                        .set_session_expiry_interval(Some(SESSION_EXPIRY_SECS))
                        .set_outgoing_inflight_upper_limit(V5_OUTGOING_INFLIGHT)
                        .set_network_options(network_options(limit));
                    if let Some((login, password)) = credentials.login {
                        options.set_credentials(login, password);
                    }
                    let (client, mut events) =
                        rumqttc::v5::AsyncClient::new(options, REQUEST_CAPACITY);
                    loop {
                        if let rumqttc::v5::Event::Incoming(v5p::Packet::ConnAck(ack)) =
                            events.poll().await.context("logging in")?
                        {
                            if ack.code != v5p::ConnectReturnCode::Success {
                                bail!("login refused: {:?}", ack.code);
                            }
                            let link = SessionLink::V5 {
                                client,
                                events: Box::new(events),
                            };
                            return Ok((link, ack.session_present));
                        }
                    }
                }
            }
        };
        let (link, session_present) = timeout(limit, connecting)
            .await
            .with_context(|| format!("no CONNACK after {limit:?}"))??;
        Ok((
            Self {
                inbox_topic: inbox(user),
                link,
            },
            session_present,
        ))
    }

    /// Subscribes to the user's inbox at QoS 1 and waits until it is granted.
    pub async fn subscribe_inbox(&mut self) -> Result<()> {
        match &mut self.link {
            SessionLink::V311 { client, events } => {
                client
                    .subscribe(&self.inbox_topic, QoS::AtLeastOnce)
                    .await
                    .context("queueing the subscription")?;
                loop {
                    if let Event::Incoming(Packet::SubAck(ack)) =
                        events.poll().await.context("subscribing")?
                    {
                        if ack
                            .return_codes
                            .iter()
                            .all(|code| matches!(code, rumqttc::SubscribeReasonCode::Success(_)))
                        {
                            return Ok(());
                        }
                        bail!("subscription refused: {:?}", ack.return_codes);
                    }
                }
            }
            SessionLink::V5 { client, events } => {
                client
                    .subscribe(&self.inbox_topic, QoS5::AtLeastOnce)
                    .await
                    .context("queueing the subscription")?;
                loop {
                    if let rumqttc::v5::Event::Incoming(v5p::Packet::SubAck(ack)) =
                        events.poll().await.context("subscribing")?
                    {
                        if ack
                            .return_codes
                            .iter()
                            .all(|code| matches!(code, v5p::SubscribeReasonCode::Success(_)))
                        {
                            return Ok(());
                        }
                        bail!("subscription refused: {:?}", ack.return_codes);
                    }
                }
            }
        }
    }

    /// The sequence of the next message published on the inbox (acknowledged as it is read);
    /// an error when the connection ended or something else arrived on the inbox.
    pub async fn next_seq(&mut self) -> Result<u64> {
        loop {
            let payload = match &mut self.link {
                SessionLink::V311 { events, .. } => match events.poll().await? {
                    Event::Incoming(Packet::Publish(publish)) => {
                        if publish.topic != self.inbox_topic {
                            bail!(
                                "a publish on {} where only the inbox is subscribed",
                                publish.topic
                            );
                        }
                        publish.payload
                    }
                    Event::Incoming(Packet::Disconnect) => bail!("the broker disconnected"),
                    _ => continue,
                },
                SessionLink::V5 { events, .. } => match events.poll().await? {
                    rumqttc::v5::Event::Incoming(v5p::Packet::Publish(publish)) => {
                        if publish.topic != self.inbox_topic.as_bytes() {
                            bail!(
                                "a publish on {} where only the inbox is subscribed",
                                String::from_utf8_lossy(&publish.topic)
                            );
                        }
                        publish.payload
                    }
                    rumqttc::v5::Event::Incoming(v5p::Packet::Disconnect(disconnect)) => {
                        bail!("the broker disconnected: {:?}", disconnect.reason_code)
                    }
                    _ => continue,
                },
            };
            let message: Sequenced = serde_json::from_slice(&payload)
                .with_context(|| format!("not an inbox message on {}", self.inbox_topic))?;
            return Ok(message.seq);
        }
    }

    /// Disconnects normally (the session is kept), giving up after a moment.
    pub async fn close(mut self) {
        let closing = async {
            match &mut self.link {
                SessionLink::V311 { client, events } => {
                    if client.disconnect().await.is_ok() {
                        while events.poll().await.is_ok() {}
                    }
                }
                SessionLink::V5 { client, events } => {
                    if client.disconnect().await.is_ok() {
                        while events.poll().await.is_ok() {}
                    }
                }
            }
        };
        let _ = timeout(CLOSE_TIMEOUT, closing).await;
    }
}

/// What a device of the storm reads of an inbox message: its place in the log. The rest is
/// checked to be JSON and skipped, so ten thousand devices cost the load tool little.
#[derive(serde::Deserialize)]
struct Sequenced {
    seq: u64,
}
