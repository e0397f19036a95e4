//! One simulated device of a gateway user, as the `fanout` and `roam` scenarios drive it: over
//! MQTT (a rumqttc client) or over the JSON WebSocket bridge (tokio-tungstenite), logged in with
//! a token minted for it, subscribed to its user's inbox and to its own reply topic.
//!
//! Both transports are behind one type so that a scenario mixes them freely and checks what
//! every device received in the same way: messages from the inbox with their log sequence, and
//! sync pages from the reply topic.

use crate::target::Credentials;
use anyhow::{anyhow, bail, Context, Result};
use clap::ValueEnum;
use futures_util::{SinkExt, StreamExt};
use protocol::envelope::{InboxMessage, Reply, SyncPage};
use protocol::frames::{ClientFrame, RequestId, ServerFrame};
use protocol::topics::{device_topic, inbox, reply, DeviceAction};
use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, MqttOptions, NetworkOptions, Packet, QoS,
    SubscribeFilter, SubscribeReasonCode,
};
use serde::Serialize;
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Sync pages run up to the gateway's `roaming.page_max_bytes` (64 KiB by default): room for
/// them and for larger configured pages.
pub(crate) const MAX_PACKET: usize = 1 << 20;
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Requests a client may queue before `publish` waits.
pub(crate) const REQUEST_CAPACITY: usize = 64;
/// How long closing a connection politely may take before it is simply dropped.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// MQTT 3.1.1 over TCP.
    Mqtt,
    /// The JSON WebSocket bridge on the HTTP listener's `/ws`.
    JsonWs,
}

/// How each user's devices split between the transports: of `devices` per user, the last
/// `ws_devices` use the JSON bridge and the rest MQTT.
#[derive(Clone, Copy, Debug)]
pub struct DeviceMix {
    devices: u64,
    ws_devices: u64,
}

impl DeviceMix {
    /// `devices_flag` names the option that gave `devices`, for the error.
    pub fn new(devices: u64, ws_devices: u64, devices_flag: &str) -> Result<Self> {
        if ws_devices > devices {
            bail!("--ws-devices {ws_devices} exceeds {devices_flag} {devices}");
        }
        Ok(Self {
            devices,
            ws_devices,
        })
    }

    /// The transport of the run's `index`-th device, users' devices being numbered in a row.
    pub fn transport(self, index: u64) -> Transport {
        if index % self.devices < self.devices - self.ws_devices {
            Transport::Mqtt
        } else {
            Transport::JsonWs
        }
    }
}

/// Where devices connect.
#[derive(Clone, Debug)]
pub struct Endpoints {
    pub mqtt: SocketAddr,
    /// `ws://host:port/ws`, derived from the HTTP API's base URL.
    pub json_ws: String,
}

impl Endpoints {
    pub fn new(mqtt: SocketAddr, http_base: &str) -> Result<Self> {
        let http = crate::target::loopback_socket_addr(http_base, "--http")?;
        Ok(Self {
            mqtt,
            json_ws: format!("ws://{http}/ws"),
        })
    }
}

/// What a device receives.
#[derive(Debug)]
pub enum Arrival {
    /// A message of its user's log, live.
    Message(InboxMessage),
    /// A page answering its sync request, and its size on the wire.
    Page { page: SyncPage, bytes: usize },
    /// The gateway acknowledged one of the device's `send`s: the message is durable.
    Accepted,
}

/// Publishes on one MQTT device's `send` topic, alongside the task that reads the device.
#[derive(Clone)]
pub struct SendHandle {
    client: AsyncClient,
    topic: String,
}

impl SendHandle {
    /// Queues a `send` request (JSON `{"to", "body"}`) at QoS 1; its acknowledgement arrives
    /// as [`Arrival::Accepted`].
    pub async fn send(&self, request: Vec<u8>) -> Result<()> {
        self.client
            .publish(&self.topic, QoS::AtLeastOnce, false, request)
            .await
            .context("queueing a send")
    }
}

pub struct Device {
    pub user: String,
    pub device: String,
    /// `u/{user}/inbox` and `u/{user}/d/{device}/reply`, built once: every arrival is matched
    /// against them.
    inbox_topic: String,
    reply_topic: String,
    link: Link,
}

enum Link {
    Mqtt {
        client: AsyncClient,
        /// Boxed: an event loop is several times the size of a WebSocket.
        events: Box<EventLoop>,
    },
    JsonWs {
        socket: Box<WebSocketStream<MaybeTlsStream<TcpStream>>>,
    },
}

impl Device {
    /// Logs in and subscribes to the user's inbox and the device's reply topic; done once both
    /// subscriptions are granted, or failed after `limit`.
    pub async fn connect(
        endpoints: &Endpoints,
        transport: Transport,
        user: &str,
        device: &str,
        credentials: Credentials,
        limit: Duration,
    ) -> Result<Self> {
        let link = timeout(limit, async {
            match transport {
                Transport::Mqtt => {
                    Link::mqtt(endpoints.mqtt, user, device, credentials, limit).await
                }
                Transport::JsonWs => {
                    Link::json_ws(&endpoints.json_ws, user, device, credentials).await
                }
            }
        })
        .await
        .map_err(|_| anyhow!("not logged in and subscribed after {limit:?}"))??;
        Ok(Self {
            user: user.to_owned(),
            device: device.to_owned(),
            inbox_topic: inbox(user),
            reply_topic: reply(user, device),
            link,
        })
    }

    /// Asks for the user's log after `after` (of `epoch`, when known); pages follow as
    /// [`Arrival::Page`].
    pub async fn sync(&mut self, after: u64, epoch: Option<&str>) -> Result<()> {
        match &mut self.link {
            Link::Mqtt { client, .. } => {
                let topic = device_topic(&self.user, &self.device, DeviceAction::Sync);
                let request = json!({ "after": after, "epoch": epoch });
                client
                    .publish(topic, QoS::AtLeastOnce, false, request.to_string())
                    .await
                    .context("queueing the sync request")
            }
            Link::JsonWs { socket } => {
                let frame = ClientFrame::Sync {
                    id: None,
                    after: Some(after),
                    epoch: epoch.map(str::to_owned),
                };
                send_frame(socket, &frame).await
            }
        }
    }

    /// A handle to send messages from this device while another task reads it (MQTT only).
    pub fn sender(&self) -> Result<SendHandle> {
        match &self.link {
            Link::Mqtt { client, .. } => Ok(SendHandle {
                client: client.clone(),
                topic: device_topic(&self.user, &self.device, DeviceAction::Send),
            }),
            Link::JsonWs { .. } => bail!("sending devices are MQTT devices"),
        }
    }

    /// The next message, sync page or acknowledgement; an error when the connection failed or something arrived
    /// that is not what the gateway promises.
    pub async fn next(&mut self) -> Result<Arrival> {
        loop {
            let (topic, payload, bytes) = match &mut self.link {
                Link::Mqtt { events, .. } => match events.poll().await? {
                    Event::Incoming(Packet::Publish(publish)) => (
                        publish.topic,
                        serde_json::from_slice(&publish.payload)?,
                        publish.payload.len(),
                    ),
                    Event::Incoming(Packet::PubAck(_)) => return Ok(Arrival::Accepted),
                    Event::Incoming(Packet::Disconnect) => bail!("the gateway disconnected"),
                    _ => continue,
                },
                Link::JsonWs { socket } => match next_frame(socket).await? {
                    (
                        ServerFrame::Msg {
                            topic,
                            payload: Some(payload),
                            ..
                        },
                        bytes,
                    ) => (topic, payload, bytes),
                    (ServerFrame::Error { code, message, .. }, _) => {
                        bail!("error frame {code:?}: {message}")
                    }
                    _ => continue,
                },
            };
            if topic == self.inbox_topic {
                let message = serde_json::from_value(payload)
                    .with_context(|| format!("not an inbox message on {topic}"))?;
                return Ok(Arrival::Message(message));
            }
            if topic == self.reply_topic {
                match serde_json::from_value(payload)
                    .with_context(|| format!("not a reply on {topic}"))?
                {
                    Reply::Sync(page) => return Ok(Arrival::Page { page, bytes }),
                    Reply::Error { code, message, .. } => {
                        bail!("the gateway refused a request: {code:?}: {message}")
                    }
                    _ => continue,
                }
            }
        }
    }

    /// Disconnects politely (MQTT DISCONNECT, WebSocket close), giving up after a moment.
    pub async fn close(mut self) {
        let closing = async {
            match &mut self.link {
                Link::Mqtt { client, events } => {
                    if client.disconnect().await.is_ok() {
                        while events.poll().await.is_ok() {}
                    }
                }
                Link::JsonWs { socket } => {
                    let _ = SinkExt::close(socket).await;
                }
            }
        };
        let _ = timeout(CLOSE_TIMEOUT, closing).await;
    }
}

impl Link {
    async fn mqtt(
        addr: SocketAddr,
        user: &str,
        device: &str,
        credentials: Credentials,
        limit: Duration,
    ) -> Result<Self> {
        let mut options =
            MqttOptions::new(credentials.client_id, addr.ip().to_string(), addr.port());
        options
            .set_keep_alive(KEEP_ALIVE)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET);
        if let Some((login, password)) = credentials.login {
            options.set_credentials(login, password);
        }
        let (client, mut events) = AsyncClient::new(options, REQUEST_CAPACITY);
        events.set_network_options(network_options(limit));
        client
            .subscribe_many([
                SubscribeFilter::new(inbox(user), QoS::AtLeastOnce),
                SubscribeFilter::new(reply(user, device), QoS::AtLeastOnce),
            ])
            .await
            .context("queueing the subscriptions")?;
        loop {
            match events.poll().await.context("logging in")? {
                Event::Incoming(Packet::ConnAck(ack)) if ack.code != ConnectReturnCode::Success => {
                    bail!("login refused: {:?}", ack.code)
                }
                Event::Incoming(Packet::SubAck(ack)) => {
                    if ack
                        .return_codes
                        .iter()
                        .all(|code| matches!(code, SubscribeReasonCode::Success(_)))
                    {
                        return Ok(Self::Mqtt {
                            client,
                            events: Box::new(events),
                        });
                    }
                    bail!("subscriptions refused: {:?}", ack.return_codes);
                }
                _ => {}
            }
        }
    }

    async fn json_ws(
        url: &str,
        user: &str,
        device: &str,
        credentials: Credentials,
    ) -> Result<Self> {
        let (_, token) = credentials
            .login
            .context("the JSON bridge needs a device token")?;
        let with_token = format!("{url}?token={token}");
        let (socket, _) =
            tokio_tungstenite::connect_async_with_config(with_token, Some(lean_websocket()), false)
                .await
                .with_context(|| format!("opening {url}"))?;
        let mut socket = Box::new(socket);
        expect_ok(&mut socket, None, "login").await?;
        for (id, topic) in [("inbox", inbox(user)), ("reply", reply(user, device))] {
            let frame = ClientFrame::Sub {
                id: Some(id.into()),
                topic,
                resume: false,
            };
            send_frame(&mut socket, &frame).await?;
            expect_ok(&mut socket, Some(id), "subscription").await?;
        }
        Ok(Self::JsonWs { socket })
    }
}

/// TCP_NODELAY, and the TCP connect and CONNACK given up on after `limit`: rumqttc gives up
/// after 5 s by default, and in a reconnect storm a dropped SYN alone costs 1 s + 2 s + 4 s of
/// retransmits.
pub(crate) fn network_options(limit: Duration) -> NetworkOptions {
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(limit.as_secs().max(1));
    network
}

type JsonSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// WebSocket buffers sized for many mostly idle clients: tungstenite's defaults reserve 128 KiB
/// to read into per connection, which made the tool, not the gateway, the memory hog (1.9 GB for
/// 19,000 idle connections). Frames larger than the buffer still arrive; it grows as needed.
pub fn lean_websocket() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
}

async fn send_frame(socket: &mut JsonSocket, frame: &ClientFrame) -> Result<()> {
    let text = serde_json::to_string(frame).context("encoding a frame")?;
    socket
        .send(Message::Text(text.into()))
        .await
        .context("sending a frame")
}

/// The next JSON frame and its length; pings are answered by tungstenite as it reads.
async fn next_frame(socket: &mut JsonSocket) -> Result<(ServerFrame, usize)> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                let frame =
                    serde_json::from_str(&text).context("a server frame that is not JSON")?;
                return Ok((frame, text.len()));
            }
            Some(Ok(Message::Close(frame))) => bail!("the gateway closed the socket: {frame:?}"),
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(error).context("reading the socket"),
            None => bail!("the socket ended"),
        }
    }
}

/// Waits for the `ok` answering request `id` (`None`: the login's), failing on an `error`.
async fn expect_ok(socket: &mut JsonSocket, id: Option<&str>, what: &str) -> Result<()> {
    loop {
        match next_frame(socket).await?.0 {
            ServerFrame::Ok { id: answered, .. } if answered == id.map(RequestId::from) => {
                return Ok(())
            }
            ServerFrame::Error { code, message, .. } => {
                bail!("{what} refused: {code:?}: {message}")
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_devices_of_each_user_use_the_json_bridge() {
        let mix = DeviceMix::new(3, 1, "--devices").unwrap();
        let transports: Vec<Transport> = (0..6).map(|i| mix.transport(i)).collect();
        use Transport::{JsonWs, Mqtt};
        assert_eq!(transports, [Mqtt, Mqtt, JsonWs, Mqtt, Mqtt, JsonWs]);
        assert_eq!(
            DeviceMix::new(2, 0, "--devices").unwrap().transport(1),
            Mqtt
        );
        let error = DeviceMix::new(2, 3, "--devices-per-user").unwrap_err();
        assert_eq!(
            error.to_string(),
            "--ws-devices 3 exceeds --devices-per-user 2"
        );
    }
}
