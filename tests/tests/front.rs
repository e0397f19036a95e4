//! The front's answers to bad or hostile clients: CONNACK codes for bad tokens, idle and stalled
//! sockets, oversized packets, and the configured limits.

use e2e::gateway::run_cli;
use e2e::json_ws::{JsonClient, TOO_BIG};
use e2e::mqtt::{Via, V4, V5};
use e2e::{Options, TestGateway, PATIENCE};
use protocol::envelope::Platform;
use rumqttc::{ConnectReturnCode, QoS};
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A token the gateway did not sign: same format, another secret.
fn forged_token() -> String {
    let elsewhere = tempfile::tempdir().unwrap();
    run_cli(
        elsewhere.path(),
        &["token", "--user", "alice", "--device", "phone"],
    )
    .unwrap()
}

async fn expired_token(gw: &TestGateway) -> String {
    let token = run_cli(
        gw.data_dir.path(),
        &[
            "token", "--user", "alice", "--device", "phone", "--ttl", "1s",
        ],
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    token
}

#[tokio::test]
async fn bad_tokens_get_not_authorized_connacks() {
    let gw = TestGateway::start().await;
    let expired = expired_token(&gw).await;
    for (what, token) in [
        ("forged", Some(forged_token())),
        ("expired", Some(expired)),
        ("garbage", Some("x.y.z".into())),
        ("missing", None),
    ] {
        let refused = V4::connect(&gw, Via::Tcp, "c", token.as_deref(), |_| {})
            .await
            .err();
        assert_eq!(
            refused,
            Some(ConnectReturnCode::NotAuthorized),
            "3.1.1, {what} token: return code 5"
        );
        let refused = V5::connect(&gw, Via::Tcp, "c", token.as_deref(), |_| {})
            .await
            .err();
        assert_eq!(
            refused,
            Some(rumqttc::v5::mqttbytes::v5::ConnectReturnCode::NotAuthorized),
            "5, {what} token: reason 0x87"
        );
    }
    assert_eq!(
        gw.metric("gateway_auth_failures_total{transport=\"mqtt\"}")
            .await,
        8.0
    );

    let mut web = JsonClient::connect(&gw, Some(&forged_token())).await;
    let closed = web.closed().await;
    assert_eq!(closed.code, Some(4003), "{closed:?}");
}

#[tokio::test]
async fn unsupported_protocol_level_is_answered_not_dropped() {
    let gw = TestGateway::start().await;
    let mut socket = TcpStream::connect(gw.mqtt).await.unwrap();
    // CONNECT, "MQTT", level 3, clean session, keepalive 60, client id "c".
    socket
        .write_all(&[
            0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 3, 0x02, 0, 60, 0, 1, b'c',
        ])
        .await
        .unwrap();
    let mut answer = [0u8; 4];
    tokio::time::timeout(PATIENCE, socket.read_exact(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        answer,
        [0x20, 2, 0, 1],
        "CONNACK: unacceptable protocol version"
    );
}

#[tokio::test]
async fn an_idle_socket_on_each_listener_does_not_delay_other_clients() {
    let gw = TestGateway::start_with(
        Options::default()
            .tls()
            .with("LIMITS__HANDSHAKE_TIMEOUT", "60s"),
    )
    .await;
    let mut idle = Vec::new();
    for addr in [
        gw.mqtt,
        gw.mqtt_ws,
        gw.http,
        gw.mqtt_tls.unwrap(),
        gw.mqtt_wss.unwrap(),
    ] {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    // Half a TLS ClientHello on the TLS port: a stalled handshake, not just a silent socket.
    idle.push(TcpStream::connect(gw.mqtt_tls.unwrap()).await.unwrap());
    idle.last_mut()
        .unwrap()
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();

    // Every handshake below must complete while those sockets sit there (the harness bounds
    // each wait; this checks that nothing blocks, not how fast it is).
    for via in [Via::Tcp, Via::Ws, Via::Tls, Via::Wss] {
        let token = gw.token("alice", &format!("{via:?}"), Platform::Ios);
        V4::connect(&gw, via, &format!("{via:?}"), Some(&token), |_| {})
            .await
            .unwrap();
    }
    let _web = JsonClient::authenticated(&gw, &gw.token("alice", "web", Platform::Web)).await;
    assert_eq!(gw.devices("alice").await.len(), 5);
    drop(idle);
}

#[tokio::test]
async fn idle_sockets_are_closed_after_the_handshake_timeout() {
    let gw = TestGateway::start_with(Options::default().with("LIMITS__HANDSHAKE_TIMEOUT", "300ms"))
        .await;
    for addr in [gw.mqtt, gw.mqtt_ws, gw.http] {
        let mut socket = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(PATIENCE, socket.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "{addr}: socket still open"
        );
    }
    assert_eq!(
        gw.metric("gateway_rejected_sockets_total{reason=\"handshake_timeout\"}")
            .await,
        2.0,
        "MQTT and MQTT/WS"
    );
}

/// Every route that takes a body, with the method it takes it on; the WeChat callback needs no
/// key.
const ROUTES_WITH_BODIES: [(&str, &str); 10] = [
    ("POST", "/v1/messages"),
    ("POST", "/v1/signals"),
    ("POST", "/v1/notifications"),
    ("POST", "/v1/notifications/batch"),
    ("POST", "/v1/tokens"),
    ("PUT", "/v1/users/alice/quiet-hours"),
    ("PUT", "/v1/users/alice/consent"),
    ("PUT", "/v1/users/alice/bindings"),
    ("POST", "/v1/users/alice/devices/phone/approval"),
    ("POST", "/v1/callbacks/wechat"),
];

/// The status line and body of what the gateway answered on `socket`, read until it closes.
async fn answer_then_close(socket: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(PATIENCE, socket.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection was not closed");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn trickled_bodies_get_408_on_every_route_and_the_connection_closes() {
    let gw =
        TestGateway::start_with(Options::default().with("LIMITS__HTTP_REQUEST_TIMEOUT", "500ms"))
            .await;
    let mut trickling = Vec::new();
    for (method, path) in ROUTES_WITH_BODIES {
        let mut socket = TcpStream::connect(gw.http).await.unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {}\r\n\
             content-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"to\":",
            gw.api_key
        );
        socket.write_all(head.as_bytes()).await.unwrap();
        trickling.push((path, socket));
    }
    // One byte more now and then, never the whole body.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for (_, socket) in &mut trickling {
            let _ = socket.write_all(b" ").await;
        }
    }
    for (path, mut socket) in trickling {
        let answer = answer_then_close(&mut socket).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
        assert!(answer.contains(r#""code":"timeout""#), "{path}: {answer}");
    }
    let (status, _) = gw
        .api(reqwest::Method::GET, "/v1/users/alice/devices", None)
        .await;
    assert_eq!(status, 200, "the API still answers");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_handshake_timeout() {
    let gw = TestGateway::start_with(Options::default().with("LIMITS__HANDSHAKE_TIMEOUT", "300ms"))
        .await;
    let mut socket = TcpStream::connect(gw.http).await.unwrap();
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: gateway\r\n\r\n")
        .await
        .unwrap();
    let answer = answer_then_close(&mut socket).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn connection_limit_closes_surplus_sockets() {
    let gw = TestGateway::start_with(Options::default().with("LIMITS__MAX_CONNECTIONS", "2")).await;
    let _first = V4::connect(
        &gw,
        Via::Tcp,
        "1",
        Some(&gw.token("a", "1", Platform::Ios)),
        |_| {},
    )
    .await
    .unwrap();
    let _second = V4::connect(
        &gw,
        Via::Tcp,
        "2",
        Some(&gw.token("a", "2", Platform::Ios)),
        |_| {},
    )
    .await
    .unwrap();
    let mut third = TcpStream::connect(gw.mqtt).await.unwrap();
    let mut buf = [0u8; 8];
    let read = tokio::time::timeout(PATIENCE, third.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(read, Ok(0) | Err(_)));
    assert_eq!(
        gw.metric("gateway_rejected_sockets_total{reason=\"connection_limit\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn oversized_packets_close_the_connection() {
    let gw =
        TestGateway::start_with(Options::default().with("LIMITS__MAX_PACKET_SIZE", "1024")).await;
    let mut client = V4::connect(
        &gw,
        Via::Tcp,
        "big",
        Some(&gw.token("a", "d", Platform::Ios)),
        |_| {},
    )
    .await
    .unwrap();
    client
        .publish("u/a/d/d/send", vec![b'x'; 4096], QoS::AtMostOnce)
        .await;
    client.inbox.closed().await;
    assert_eq!(
        gw.metric_reaching(
            "gateway_disconnects_total{reason=\"packet_too_large\"}",
            1.0
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn subscription_limit_refuses_further_filters() {
    let gw =
        TestGateway::start_with(Options::default().with("LIMITS__MAX_SUBSCRIPTIONS", "2")).await;
    let token = gw.token("a", "d", Platform::Ios);
    let (mut client, _) = V5::connect(&gw, Via::Tcp, "subs", Some(&token), |_| {})
        .await
        .unwrap();
    use rumqttc::v5::mqttbytes::{v5::SubscribeReasonCode as Code, QoS as Q};
    assert!(matches!(
        client.subscribe("u/a/inbox", Q::AtLeastOnce).await[0],
        Code::Success(_)
    ));
    assert!(matches!(
        client.subscribe("u/a/notify", Q::AtLeastOnce).await[0],
        Code::Success(_)
    ));
    assert_eq!(
        client.subscribe("u/a/presence", Q::AtLeastOnce).await,
        vec![Code::QuotaExceeded]
    );
    // Re-subscribing to a held filter is not a new subscription.
    assert!(matches!(
        client.subscribe("u/a/inbox", Q::AtMostOnce).await[0],
        Code::Success(_)
    ));
}

/// Topics and filters longer than `limits.max_topic_length` are refused as invalid on MQTT 5
/// (SUBACK 0x8F, PUBACK 0x90) and on the JSON bridge (`invalid_topic`).
#[tokio::test]
async fn overlong_topics_and_filters_are_refused() {
    let gw = TestGateway::start_with(
        Options::default()
            .with("LIMITS__MAX_TOPIC_LENGTH", "64")
            .with("AUTH__ALLOW_ANONYMOUS", "true"),
    )
    .await;
    use rumqttc::v5::mqttbytes::v5::{PubAckReason, SubscribeReasonCode as Code};
    use rumqttc::v5::mqttbytes::QoS as Q;
    let (mut client, _) = V5::connect(&gw, Via::Tcp, "long", None, |_| {})
        .await
        .unwrap();
    let long = format!("sensors/{}", "x".repeat(60));
    assert_eq!(
        client.subscribe(&long, Q::AtLeastOnce).await,
        vec![Code::TopicFilterInvalid]
    );
    assert!(matches!(
        client.subscribe("sensors/+", Q::AtLeastOnce).await[0],
        Code::Success(_)
    ));
    client.publish(&long, b"{}".to_vec(), Q::AtLeastOnce).await;
    assert_eq!(client.puback().await, PubAckReason::TopicNameInvalid);

    let token = gw.token("alice", "web", Platform::Web);
    let mut web = JsonClient::authenticated(&gw, &token).await;
    let answer = web
        .request(json!({"op": "sub", "topic": format!("pub/{}", "x".repeat(61))}))
        .await;
    assert_eq!(answer["code"], "invalid_topic", "{answer}");
}

#[tokio::test]
async fn json_bridge_answers_bad_frames_and_lives_on() {
    let gw =
        TestGateway::start_with(Options::default().with("LIMITS__WS_MAX_MESSAGE", "2048")).await;
    let mut web = JsonClient::authenticated(&gw, &gw.token("alice", "web", Platform::Web)).await;
    web.send_text("{not json").await;
    assert_eq!(
        web.frame_where(|f| f["op"] == "error").await["code"],
        "bad_json"
    );
    let unknown = web.request(json!({"op": "teleport"})).await;
    assert_eq!(unknown["code"], "unknown_op");
    let missing = web.request(json!({"op": "sub"})).await;
    assert_eq!(missing["code"], "invalid_request");
    let bad_sync = web
        .request(json!({"op": "sync", "after": "yesterday"}))
        .await;
    assert_eq!(bad_sync["code"], "invalid_request");
    let bad_send = web
        .request(json!({"op": "pub", "topic": "u/alice/d/web/send", "payload": {"no_to": 1}}))
        .await;
    assert_eq!(bad_send["code"], "invalid_request");
    assert_eq!(
        web.request(json!({"op": "ping"})).await["op"],
        "pong",
        "the socket lives on"
    );

    web.send_text(&format!("\"{}\"", "x".repeat(4096))).await;
    let closed = web.closed().await;
    assert_eq!(closed.code, Some(TOO_BIG), "{closed:?}");
}

#[tokio::test]
async fn json_bridge_drops_sockets_that_stop_answering_pings() {
    let gw =
        TestGateway::start_with(Options::default().with("LIMITS__WS_PING_INTERVAL", "200ms")).await;
    // A raw socket that completes the upgrade and then never reads or answers again.
    let token = gw.token("alice", "web", Platform::Web);
    let mut socket = TcpStream::connect(gw.http).await.unwrap();
    let request = format!(
        "GET /ws?token={token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while gw.devices("alice").await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "never came online");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while !gw.devices("alice").await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "dead socket never dropped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        gw.metric_reaching(
            "gateway_disconnects_total{reason=\"keepalive_timeout\"}",
            1.0
        )
        .await,
        1.0
    );
    drop(socket);
}
