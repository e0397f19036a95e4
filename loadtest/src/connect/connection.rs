//! One idle client connection of the `connect` scenario: a raw socket bound to its source
//! address, the login on its transport (MQTT over TCP, TLS or WebSocket, or the JSON bridge),
//! and then only the keep-alive until the run stops.

use super::{ConnectTransport, Destination, Stats, MAX_PACKET};
use crate::device::lean_websocket;
use crate::payload::now_ns;
use crate::report::Failure;
use crate::stop::stopped;
use crate::target::Credentials;
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use nix::sys::socket::sockopt::IpBindAddressNoPort;
use protocol::frames::ServerFrame;
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Packet, SubAck, Subscribe, SubscribeReasonCode,
};
use rumqttc::mqttbytes::QoS;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::time::{interval_at, timeout, Instant};
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_tungstenite::client_async_with_config;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A CONNACK is 4 bytes (a SUBACK 5); a broker needing more reads than this is not sending one.
const MAX_HANDSHAKE_READS: usize = 8;
/// The packet id of the inbox subscription (`--sessions`).
const SUBSCRIBE_PKID: u16 = 1;

/// One idle client connection.
pub(super) struct Connection {
    pub(super) source: IpAddr,
    pub(super) destination: Destination,
    pub(super) keepalive: Duration,
    pub(super) connect_timeout: Duration,
    pub(super) ping: Bytes,
    /// `--sessions`: the inbox to subscribe to, with a persistent session.
    pub(super) inbox: Option<String>,
    pub(super) stats: Arc<Stats>,
    pub(super) stop: watch::Receiver<bool>,
}

impl Connection {
    pub(super) async fn run(mut self, credentials: Credentials) {
        let held = match self.handshake(credentials).await {
            Ok(held) => held,
            Err(failure) => return self.stats.fail(failure),
        };
        self.stats.established.add(1);
        self.stats
            .last_connack_ns
            .fetch_max(now_ns(), Ordering::Relaxed);
        self.hold(held).await;
    }

    async fn handshake(&self, credentials: Credentials) -> Result<Held, Failure> {
        let target = self.destination.addr;
        let socket = match self.source {
            IpAddr::V4(_) => TcpSocket::new_v4(),
            IpAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(|e| Failure::io("socket", e))?;
        // Binding a source address picks the port before the destination is known, so without
        // SO_REUSEADDR the ports still in TIME_WAIT from an earlier round are refused (AddrInUse).
        socket
            .set_reuseaddr(true)
            .map_err(|e| Failure::io("socket", e))?;
        // Without this, binding to port 0 picks a free port by scanning every port bound on the
        // address: the tool's own CPU then limited the connect rate (1,000/s at 19,000 held).
        // With it the port is picked at connect time from the 4-tuple, as for unbound sockets.
        if self.source.is_ipv4() {
            nix::sys::socket::setsockopt(&socket, IpBindAddressNoPort, &true)
                .map_err(|e| Failure::io("socket", e.into()))?;
        }
        socket
            .bind(SocketAddr::new(self.source, 0))
            .map_err(|e| Failure::io("bind", e))?;
        let stream = match timeout(self.connect_timeout, socket.connect(target)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(Failure::io("tcp_connect", e)),
            Err(_) => return Err(Failure::new("tcp_connect: timeout", target)),
        };
        // Best effort: a missing TCP_NODELAY only delays the tiny keep-alive packets.
        let _ = stream.set_nodelay(true);
        let login = async {
            match self.destination.transport {
                ConnectTransport::Mqtt => self.mqtt_login(stream, credentials).await,
                ConnectTransport::MqttTls => self.mqtt_tls_login(stream, credentials).await,
                ConnectTransport::MqttWs => self.mqtt_ws_login(stream, credentials).await,
                ConnectTransport::JsonWs => self.json_login(stream, credentials).await,
            }
        };
        match timeout(self.connect_timeout, login).await {
            Ok(held) => held,
            Err(_) => Err(Failure::new("login: timeout", target)),
        }
    }

    fn connect_packet(&self, credentials: Credentials) -> Result<BytesMut, Failure> {
        let mut connect = Connect::new(credentials.client_id);
        connect.keep_alive = self.keepalive.as_secs() as u16;
        connect.clean_session = self.inbox.is_none();
        if let Some((user, password)) = credentials.login {
            connect.set_login(user, password);
        }
        let mut out = BytesMut::new();
        Packet::Connect(connect)
            .write(&mut out, usize::MAX)
            .map_err(|e| Failure::new("encode", e))?;
        Ok(out)
    }

    async fn mqtt_login(
        &self,
        stream: TcpStream,
        credentials: Credentials,
    ) -> Result<Held, Failure> {
        let stream = self.mqtt_handshake(stream, credentials).await?;
        Ok(Held::Mqtt(stream))
    }

    async fn mqtt_tls_login(
        &self,
        stream: TcpStream,
        credentials: Credentials,
    ) -> Result<Held, Failure> {
        let connector = self
            .destination
            .tls
            .as_ref()
            .expect("TLS destinations have one");
        let name = ServerName::IpAddress(self.destination.addr.ip().into());
        let stream = connector
            .connect(name, stream)
            .await
            .map_err(|e| Failure::io("tls", e))?;
        let stream = self.mqtt_handshake(stream, credentials).await?;
        Ok(Held::MqttTls(Box::new(stream)))
    }

    /// The SUBSCRIBE to the inbox, for `--sessions`.
    fn subscribe_packet(&self) -> Result<Option<BytesMut>, Failure> {
        let Some(inbox) = &self.inbox else {
            return Ok(None);
        };
        let mut subscribe = Subscribe::new(inbox.as_str(), QoS::AtLeastOnce);
        subscribe.pkid = SUBSCRIBE_PKID;
        let mut out = BytesMut::new();
        Packet::Subscribe(subscribe)
            .write(&mut out, usize::MAX)
            .map_err(|e| Failure::new("encode", e))?;
        Ok(Some(out))
    }

    /// Sends CONNECT on `stream` and reads the CONNACK, then with `--sessions` subscribes to the
    /// inbox and reads the SUBACK; the stream once the broker accepted.
    async fn mqtt_handshake<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
        credentials: Credentials,
    ) -> Result<S, Failure> {
        let out = self.connect_packet(credentials)?;
        stream
            .write_all(&out)
            .await
            .map_err(|e| Failure::io("write", e))?;
        let mut input = BytesMut::with_capacity(16);
        let ack = read_stream_packet(&mut stream, &mut input, "connack", read_connack).await?;
        accepted(ack)?;
        if let Some(out) = self.subscribe_packet()? {
            stream
                .write_all(&out)
                .await
                .map_err(|e| Failure::io("write", e))?;
            let ack = read_stream_packet(&mut stream, &mut input, "suback", read_suback).await?;
            subscribed(ack)?;
        }
        Ok(stream)
    }

    async fn mqtt_ws_login(
        &self,
        stream: TcpStream,
        credentials: Credentials,
    ) -> Result<Held, Failure> {
        let mut request = self
            .destination
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| Failure::new("websocket", e))?;
        request
            .headers_mut()
            .insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("mqtt"));
        let (mut ws, _) = client_async_with_config(request, stream, Some(lean_websocket()))
            .await
            .map_err(|e| Failure::new("websocket upgrade", e))?;
        let out = self.connect_packet(credentials)?;
        ws.send(Message::Binary(out.freeze()))
            .await
            .map_err(|e| Failure::new("websocket", e))?;
        let mut input = BytesMut::with_capacity(16);
        let ack = read_ws_packet(&mut ws, &mut input, "connack", read_connack).await?;
        accepted(ack)?;
        if let Some(out) = self.subscribe_packet()? {
            ws.send(Message::Binary(out.freeze()))
                .await
                .map_err(|e| Failure::new("websocket", e))?;
            let ack = read_ws_packet(&mut ws, &mut input, "suback", read_suback).await?;
            subscribed(ack)?;
        }
        Ok(Held::MqttWs(Box::new(ws)))
    }

    async fn json_login(
        &self,
        stream: TcpStream,
        credentials: Credentials,
    ) -> Result<Held, Failure> {
        let token = credentials
            .login
            .map(|(_, token)| token)
            .ok_or_else(|| Failure::new("login", "the JSON bridge needs a device token"))?;
        let url = format!("{}?token={token}", self.destination.url);
        let (mut ws, _) = client_async_with_config(url, stream, Some(lean_websocket()))
            .await
            .map_err(|e| Failure::new("websocket upgrade", e))?;
        for _ in 0..MAX_HANDSHAKE_READS {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    return match serde_json::from_str(&text) {
                        Ok(ServerFrame::Ok { .. }) => Ok(Held::JsonWs(Box::new(ws))),
                        Ok(ServerFrame::Error { code, message, .. }) => Err(Failure::new(
                            format!("login: {code:?}"),
                            format!("refused: {message}"),
                        )),
                        _ => Err(Failure::new("protocol", format!("expected ok, got {text}"))),
                    };
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(Failure::new("websocket", e)),
                None => return Err(Failure::new("closed before ok", "socket ended")),
            }
        }
        Err(Failure::new("protocol", "no answer to the login"))
    }

    /// Idles until told to stop: a ping every keep-alive interval (PINGREQ, or a JSON `ping`),
    /// whatever arrives discarded (WebSocket pings are answered as they are read).
    async fn hold(&mut self, mut held: Held) {
        let mut pings = interval_at(Instant::now() + self.keepalive, self.keepalive);
        let mut scratch = [0u8; 16];
        loop {
            let alive = tokio::select! {
                _ = stopped(&mut self.stop) => return,
                _ = pings.tick() => match &mut held {
                    Held::Mqtt(stream) => stream.write_all(&self.ping).await.is_ok(),
                    Held::MqttTls(stream) => stream.write_all(&self.ping).await.is_ok(),
                    Held::MqttWs(ws) => ws.send(Message::Binary(self.ping.clone())).await.is_ok(),
                    Held::JsonWs(ws) => ws.send(Message::Text(JSON_PING.into())).await.is_ok(),
                },
                alive = async {
                    match &mut held {
                        Held::Mqtt(stream) => matches!(stream.read(&mut scratch).await, Ok(n) if n > 0),
                        Held::MqttTls(stream) => matches!(stream.read(&mut scratch).await, Ok(n) if n > 0),
                        Held::MqttWs(ws) | Held::JsonWs(ws) => {
                            !matches!(ws.next().await, None | Some(Err(_)) | Some(Ok(Message::Close(_))))
                        }
                    }
                } => alive,
            };
            if !alive {
                return self.stats.dropped.add(1);
            }
        }
    }
}

/// An established connection, held idle.
enum Held {
    Mqtt(TcpStream),
    MqttTls(Box<TlsStream<TcpStream>>),
    MqttWs(Box<WebSocketStream<TcpStream>>),
    JsonWs(Box<WebSocketStream<TcpStream>>),
}

const JSON_PING: &str = r#"{"op":"ping"}"#;

/// Reads `stream` into `input` until `parse` finds its packet there; `what` names it.
async fn read_stream_packet<S: AsyncRead + Unpin, T>(
    stream: &mut S,
    input: &mut BytesMut,
    what: &str,
    parse: fn(&mut BytesMut) -> Result<Option<T>, Failure>,
) -> Result<T, Failure> {
    for _ in 0..MAX_HANDSHAKE_READS {
        if let Some(packet) = parse(input)? {
            return Ok(packet);
        }
        match stream.read_buf(input).await {
            Ok(0) => {
                return Err(Failure::new(
                    format!("closed before {what}"),
                    "connection closed",
                ))
            }
            Ok(_) => {}
            Err(e) => return Err(Failure::io("read", e)),
        }
    }
    Err(Failure::new("protocol", format!("no complete {what}")))
}

/// The same over MQTT-over-WebSocket: the packets' bytes come in binary messages.
async fn read_ws_packet<T>(
    ws: &mut WebSocketStream<TcpStream>,
    input: &mut BytesMut,
    what: &str,
    parse: fn(&mut BytesMut) -> Result<Option<T>, Failure>,
) -> Result<T, Failure> {
    for _ in 0..MAX_HANDSHAKE_READS {
        if let Some(packet) = parse(input)? {
            return Ok(packet);
        }
        match ws.next().await {
            Some(Ok(Message::Binary(bytes))) => input.extend_from_slice(&bytes),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(Failure::new("websocket", e)),
            None => {
                return Err(Failure::new(
                    format!("closed before {what}"),
                    "socket ended",
                ))
            }
        }
    }
    Err(Failure::new("protocol", format!("no complete {what}")))
}

/// The CONNACK at the start of `input`, `None` until it is complete.
fn read_connack(input: &mut BytesMut) -> Result<Option<ConnAck>, Failure> {
    read_expected(input, "CONNACK", |packet| match packet {
        Packet::ConnAck(ack) => Some(ack.clone()),
        _ => None,
    })
}

/// The SUBACK at the start of `input`, `None` until it is complete.
fn read_suback(input: &mut BytesMut) -> Result<Option<SubAck>, Failure> {
    read_expected(input, "SUBACK", |packet| match packet {
        Packet::SubAck(ack) => Some(ack.clone()),
        _ => None,
    })
}

/// The packet at the start of `input` if `pick` takes it (`expected` names it when not),
/// `None` until it is complete.
fn read_expected<T>(
    input: &mut BytesMut,
    expected: &str,
    pick: fn(&Packet) -> Option<T>,
) -> Result<Option<T>, Failure> {
    match Packet::read(input, MAX_PACKET) {
        Ok(packet) => match pick(&packet) {
            Some(picked) => Ok(Some(picked)),
            None => Err(Failure::new(
                "protocol",
                format!("expected {expected}, got {packet:?}"),
            )),
        },
        Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
        Err(e) => Err(Failure::new("protocol", e)),
    }
}

fn subscribed(ack: SubAck) -> Result<(), Failure> {
    match ack.return_codes.as_slice() {
        [SubscribeReasonCode::Success(_)] if ack.pkid == SUBSCRIBE_PKID => Ok(()),
        codes => Err(Failure::new(
            "suback",
            format!(
                "inbox subscription refused: {codes:?} (packet id {})",
                ack.pkid
            ),
        )),
    }
}

fn accepted(ack: ConnAck) -> Result<(), Failure> {
    if ack.code == ConnectReturnCode::Success {
        return Ok(());
    }
    Err(Failure::new(
        format!("connack: {:?}", ack.code),
        format!("broker refused: {:?}", ack.code),
    ))
}
