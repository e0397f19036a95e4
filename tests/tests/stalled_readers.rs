//! Clients that stop reading: every write to a client has a deadline (`limits.write_timeout`),
//! a stalled reader on each listener (MQTT over TCP, TLS, WebSocket and secure WebSocket, and the
//! JSON bridge) is dropped within it while other clients' round trips go
//! on, and a kick reaches a connection whose write is waiting.
//!
//! A stalled reader here is a real socket with a small receive buffer that subscribes to its
//! user's live signals and then never reads again, while signals of 32 KB each are sent to that
//! user: the kernel's buffers fill, and the gateway's next write waits.

use e2e::mqtt::{Via, V4};
use e2e::{Options, TestGateway, PATIENCE};
use futures_util::{SinkExt, StreamExt};
use protocol::envelope::Platform;
use rumqttc::mqttbytes::v4::{Connect, Login, Packet, Subscribe};
use rumqttc::QoS;
use serde_json::json;
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// Signals sent to the stalled reader's user: 800 × 32 KB, far more than loopback's socket
/// buffers hold, and fewer than the outbox the test gives each client.
const FLOOD: usize = 800;
const SIGNAL_BYTES: usize = 32 * 1024;

/// A socket whose receive window stays small, so it fills after a few writes.
async fn small_window(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(addr).await.unwrap()
}

/// The MQTT CONNECT and SUBSCRIBE of a device of alice that follows her signals (which go out
/// at QoS 0 whatever the subscription asks, so no in-flight window stops the gateway first).
fn mqtt_hello(gw: &TestGateway, device: &str, qos: QoS) -> (Vec<u8>, Vec<u8>) {
    let mut connect = Connect::new(device);
    connect.keep_alive = 600;
    connect.login = Some(Login::new(
        "alice",
        gw.token("alice", device, Platform::Android),
    ));
    let mut hello = bytes::BytesMut::new();
    Packet::Connect(connect).write(&mut hello, 1 << 20).unwrap();
    let mut subscribe = bytes::BytesMut::new();
    Packet::Subscribe(Subscribe::new("u/alice/signal", qos))
        .write(&mut subscribe, 1 << 20)
        .unwrap();
    (hello.to_vec(), subscribe.to_vec())
}

/// An MQTT client over TCP that subscribed and then stops reading.
async fn stalled_mqtt(gw: &TestGateway, device: &str, qos: QoS) -> TcpStream {
    subscribed(small_window(gw.mqtt).await, gw, device, qos).await
}

/// `socket` after an MQTT CONNECT and SUBSCRIBE of alice's `device`, answered.
async fn subscribed<S>(mut socket: S, gw: &TestGateway, device: &str, qos: QoS) -> S
where
    S: AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (connect, subscribe) = mqtt_hello(gw, device, qos);
    socket.write_all(&connect).await.unwrap();
    let mut connack = [0u8; 4];
    socket.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);
    socket.write_all(&subscribe).await.unwrap();
    let mut suback = [0u8; 5];
    socket.read_exact(&mut suback).await.unwrap();
    assert_eq!(suback[0], 0x90, "SUBACK");
    socket
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// A TLS connection with a small receive window to `addr`, trusting the gateway's dev
/// certificate (which names `localhost`).
async fn small_window_tls(gw: &TestGateway, addr: SocketAddr) -> Tls {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    let pem = gw.ca_pem.clone().expect("gateway started with TLS");
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector
        .connect(name, small_window(addr).await)
        .await
        .unwrap()
}

/// An MQTT client over TLS that subscribed and then stops reading.
async fn stalled_mqtt_tls(gw: &TestGateway, device: &str) -> Tls {
    let socket = small_window_tls(gw, gw.mqtt_tls.expect("TLS listener")).await;
    subscribed(socket, gw, device, QoS::AtMostOnce).await
}

type Ws<S = TcpStream> = tokio_tungstenite::WebSocketStream<S>;

/// A WebSocket over `socket` (a connection with a small receive window).
async fn websocket<S>(socket: S, url: &str, subprotocol: Option<&str>) -> Ws<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut request = url.into_client_request().unwrap();
    if let Some(subprotocol) = subprotocol {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", subprotocol.parse().unwrap());
    }
    let (ws, _) = tokio_tungstenite::client_async(request, socket)
        .await
        .unwrap();
    ws
}

/// An MQTT client over WebSocket (over TLS when `socket` is) that subscribed and then stops
/// reading.
async fn stalled_mqtt_ws<S>(gw: &TestGateway, device: &str, socket: S, url: &str) -> Ws<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (connect, subscribe) = mqtt_hello(gw, device, QoS::AtMostOnce);
    let mut ws = websocket(socket, url, Some("mqtt")).await;
    ws.send(Message::binary(connect)).await.unwrap();
    let connack = ws.next().await.unwrap().unwrap().into_data();
    assert_eq!(&connack[..], [0x20, 2, 0, 0]);
    ws.send(Message::binary(subscribe)).await.unwrap();
    let suback = ws.next().await.unwrap().unwrap().into_data();
    assert_eq!(suback[0], 0x90, "SUBACK");
    ws
}

/// A JSON WebSocket client that subscribed and then stops reading.
async fn stalled_json(gw: &TestGateway, device: &str) -> Ws {
    let token = gw.token("alice", device, Platform::Web);
    let url = format!("ws://{}/ws?token={token}", gw.http);
    let mut ws = websocket(small_window(gw.http).await, &url, None).await;
    let ok: serde_json::Value =
        serde_json::from_slice(&ws.next().await.unwrap().unwrap().into_data()).unwrap();
    assert_eq!(ok["op"], "ok", "{ok}");
    let sub = json!({"op": "sub", "id": "1", "topic": "u/alice/signal"});
    ws.send(Message::text(sub.to_string())).await.unwrap();
    let ok: serde_json::Value =
        serde_json::from_slice(&ws.next().await.unwrap().unwrap().into_data()).unwrap();
    assert_eq!(ok["op"], "ok", "{ok}");
    ws
}

/// Sends alice `FLOOD` signals of `SIGNAL_BYTES` each over the API, 16 at a time.
async fn flood_alice(gw: &TestGateway) {
    let body = json!({"to": "alice", "body": {"pad": "x".repeat(SIGNAL_BYTES)}});
    let sends = futures_util::stream::iter(0..FLOOD)
        .map(|_| gw.api(reqwest::Method::POST, "/v1/signals", Some(body.clone())))
        .buffer_unordered(16);
    let statuses: Vec<_> = sends.map(|(status, _)| status).collect().await;
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
}

/// Bob's messages still go round while alice's stalled readers wait: each posted message
/// reaches his phone.
async fn bob_round_trips(gw: &TestGateway, bob: &mut V4, count: usize) {
    for n in 0..count {
        gw.post_message("bob", json!({"n": n})).await;
        let message = bob.message_on("u/bob/inbox").await;
        assert_eq!(message["body"]["n"], n);
    }
}

/// Reads what the gateway had sent until the socket closes; panics if it is still open after
/// `PATIENCE`.
async fn closed_by_gateway(mut socket: impl AsyncRead + Unpin) {
    let mut sink = vec![0u8; 1 << 16];
    let drained = tokio::time::timeout(PATIENCE, async {
        while let Ok(1..) = socket.read(&mut sink).await {}
    })
    .await;
    assert!(drained.is_ok(), "the stalled socket was not closed");
}

/// How many sessions ended for `reason`, once that reaches `count` or `PATIENCE` has passed.
/// Nothing is read from the stalled sockets meanwhile: reading would unblock the write.
async fn disconnects_reaching(gw: &TestGateway, reason: &str, count: f64) -> f64 {
    let sample = format!("gateway_disconnects_total{{reason=\"{reason}\"}}");
    gw.metric_reaching(&sample, count).await
}

#[tokio::test]
async fn a_stalled_reader_on_each_listener_is_dropped_at_its_write_deadline() {
    let gw = TestGateway::start_with(
        Options::default()
            .tls()
            .with("LIMITS__WRITE_TIMEOUT", "2s")
            .with("LIMITS__OUTBOX_CAPACITY", "4096"),
    )
    .await;
    let token = gw.token("bob", "phone", Platform::Ios);
    let mut bob = V4::connect(&gw, Via::Tcp, "bob-phone", Some(&token), |_| {})
        .await
        .unwrap();
    bob.subscribe("u/bob/inbox", QoS::AtLeastOnce).await;

    let mqtt = stalled_mqtt(&gw, "tcp", QoS::AtMostOnce).await;
    let ws_url = format!("ws://{}/mqtt", gw.mqtt_ws);
    let mqtt_ws = stalled_mqtt_ws(&gw, "ws", small_window(gw.mqtt_ws).await, &ws_url).await;
    let json = stalled_json(&gw, "json").await;
    let mqtt_tls = stalled_mqtt_tls(&gw, "tls").await;
    let wss = gw.mqtt_wss.expect("WSS listener");
    let wss_url = format!("wss://localhost:{}/mqtt", wss.port());
    let mqtt_wss = stalled_mqtt_ws(&gw, "wss", small_window_tls(&gw, wss).await, &wss_url).await;
    flood_alice(&gw).await;
    bob_round_trips(&gw, &mut bob, 5).await;

    assert_eq!(
        disconnects_reaching(&gw, "write_timeout", 5.0).await,
        5.0,
        "each stalled reader dropped as write_timeout"
    );
    assert_eq!(gw.devices("alice").await, Vec::<String>::new());
    closed_by_gateway(mqtt).await;
    closed_by_gateway(mqtt_tls).await;
    closed_by_gateway(mqtt_ws.into_inner()).await;
    closed_by_gateway(mqtt_wss.into_inner()).await;
    closed_by_gateway(json.into_inner()).await;
    bob_round_trips(&gw, &mut bob, 5).await;
}

#[tokio::test]
async fn a_kick_reaches_a_connection_whose_write_waits() {
    // A write deadline far beyond the test's patience: only the kick can end the connection.
    let gw = TestGateway::start_with(
        Options::default()
            .with("LIMITS__WRITE_TIMEOUT", "10m")
            .with("LIMITS__OUTBOX_CAPACITY", "4096"),
    )
    .await;
    let mqtt = stalled_mqtt(&gw, "tcp", QoS::AtMostOnce).await;
    let json = stalled_json(&gw, "json").await;
    flood_alice(&gw).await;
    for device in ["tcp", "json"] {
        let (status, _) = gw
            .api(
                reqwest::Method::DELETE,
                &format!("/v1/users/alice/devices/{device}?reason=stolen"),
                None,
            )
            .await;
        assert_eq!(status, 204, "{device}");
    }
    assert_eq!(disconnects_reaching(&gw, "kicked", 2.0).await, 2.0);
    closed_by_gateway(mqtt).await;
    closed_by_gateway(json.into_inner()).await;
    assert_eq!(disconnects_reaching(&gw, "write_timeout", 0.0).await, 0.0);
}

/// Signals go out at QoS 0 whatever the subscription asked: a device whose outbox is full loses
/// them (counted), and is neither disconnected as too slow nor queued for.
#[tokio::test]
async fn a_device_behind_on_signals_loses_them_and_stays_connected() {
    let gw = TestGateway::start_with(
        Options::default()
            .with("LIMITS__WRITE_TIMEOUT", "10m")
            .with("LIMITS__OUTBOX_CAPACITY", "16"),
    )
    .await;
    let _phone = stalled_mqtt(&gw, "tcp", QoS::AtLeastOnce).await;
    flood_alice(&gw).await;
    assert!(
        gw.metric_reaching("gateway_dropped_deliveries_total", 1.0)
            .await
            >= 1.0
    );
    assert_eq!(gw.devices("alice").await, vec!["tcp"]);
    assert_eq!(disconnects_reaching(&gw, "slow_consumer", 0.0).await, 0.0);
}
