//! Persistent MQTT sessions with stock clients (rumqttc, 3.1.1 and 5): a device that keeps its
//! session misses messages while away and gets every one of them, in order, when it comes back,
//! with no sync request — also across a gateway crash and on another node; what it had in
//! flight is sent again; a QoS 2 send is stored once however often it is sent again; a slow
//! device catches up from the log without being cut off; retained messages, shared
//! subscriptions and devices' messages to the backend's services; the JSON bridge resumes from
//! the device's cursor.

use e2e::json_ws::JsonClient;
use e2e::mqtt::{Incoming, Via, V4, V5};
use e2e::redis_server::RedisServer;
use e2e::{Options, TestGateway};
use futures_util::future::join_all;
use protocol::envelope::{InboxMessage, Platform};
use reqwest::Method;
use rumqttc::mqttbytes::v4 as v4p;
use rumqttc::v5::mqttbytes::v5 as v5p;
use rumqttc::QoS;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Posts `count` messages to `user` over HTTP, some at a time; their bodies are `{"n": i}`.
async fn post_messages(gw: &TestGateway, user: &str, from: usize, count: usize) {
    for chunk in (from..from + count).collect::<Vec<_>>().chunks(50) {
        join_all(chunk.iter().map(|n| gw.post_message(user, json!({"n": n})))).await;
    }
}

fn inbox_message_v4(
    topic: &str,
) -> impl FnMut(&Incoming<v4p::Packet>) -> Option<(InboxMessage, u16)> + '_ {
    move |i| match i {
        Incoming::Packet(v4p::Packet::Publish(p)) if p.topic == topic => {
            Some((serde_json::from_slice(&p.payload).unwrap(), p.pkid))
        }
        _ => None,
    }
}

/// The next PUBLISH a 3.1.1 client receives.
async fn next_publish(client: &mut V4, what: &str) -> v4p::Publish {
    client
        .inbox
        .wait_for(what, |i| match i {
            Incoming::Packet(v4p::Packet::Publish(p)) => Some(p.clone()),
            _ => None,
        })
        .await
}

/// The next `count` inbox messages a 3.1.1 client receives.
async fn inbox_v4(client: &mut V4, user: &str, count: usize) -> Vec<InboxMessage> {
    let topic = format!("u/{user}/inbox");
    let mut messages = Vec::with_capacity(count);
    for _ in 0..count {
        let (message, _) = client
            .inbox
            .wait_for("an inbox message", inbox_message_v4(&topic))
            .await;
        messages.push(message);
    }
    messages
}

/// The next `count` inbox messages a v5 client receives.
async fn inbox_v5(client: &mut V5, user: &str, count: usize) -> Vec<InboxMessage> {
    let topic = format!("u/{user}/inbox");
    let mut messages = Vec::with_capacity(count);
    for _ in 0..count {
        let message = client
            .inbox
            .wait_for("an inbox message", |i| match i {
                Incoming::Packet(v5p::Packet::Publish(p)) if p.topic == topic.as_bytes() => {
                    Some(serde_json::from_slice::<InboxMessage>(&p.payload).unwrap())
                }
                _ => None,
            })
            .await;
        messages.push(message);
    }
    messages
}

/// The messages are the log's, one after another, with bodies `from..from+count`.
fn assert_all_in_order(messages: &[InboxMessage], from: usize, count: usize) {
    assert_eq!(messages.len(), count);
    for pair in messages.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1, "in order, none missing");
    }
    let mut bodies: Vec<u64> = messages
        .iter()
        .map(|m| m.body["n"].as_u64().unwrap())
        .collect();
    bodies.sort_unstable();
    let expected: Vec<u64> = (from as u64..(from + count) as u64).collect();
    assert_eq!(bodies, expected);
}

async fn v4_device(gw: &TestGateway, user: &str, device: &str) -> V4 {
    let token = gw.token(user, device, Platform::Android);
    V4::connect(gw, Via::Tcp, device, Some(&token), |o| {
        o.set_clean_session(false);
    })
    .await
    .expect("connects")
}

async fn v5_device(gw: &TestGateway, user: &str, device: &str) -> (V5, bool) {
    let token = gw.token(user, device, Platform::Ios);
    let (client, ack) = V5::connect(gw, Via::Tcp, device, Some(&token), |o| {
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(3600));
    })
    .await
    .expect("connects");
    (client, ack.session_present)
}

#[tokio::test]
async fn a_3_1_1_device_gets_the_1000_messages_it_missed_in_order_without_syncing() {
    let gw = TestGateway::start().await;
    let mut phone = v4_device(&gw, "alice", "phone").await;
    assert!(!phone.session_present);
    phone.subscribe("u/alice/inbox", QoS::AtLeastOnce).await;
    post_messages(&gw, "alice", 0, 3).await;
    assert_all_in_order(&inbox_v4(&mut phone, "alice", 3).await, 0, 3);
    phone.client.disconnect().await.unwrap();
    phone.inbox.closed().await;

    post_messages(&gw, "alice", 3, 1000).await;
    let mut phone = v4_device(&gw, "alice", "phone").await;
    assert!(phone.session_present);
    let missed = inbox_v4(&mut phone, "alice", 1000).await;
    assert_all_in_order(&missed, 3, 1000);
    phone.no_message_on("u/alice/inbox").await;
    // Live again: the next message comes at once, after the last missed one.
    post_messages(&gw, "alice", 1003, 1).await;
    let live = inbox_v4(&mut phone, "alice", 1).await;
    assert_eq!(live[0].seq, missed[999].seq + 1);

    // The acknowledgements moved the device's cursor: the next connection gets nothing again.
    phone.client.disconnect().await.unwrap();
    phone.inbox.closed().await;
    let mut phone = v4_device(&gw, "alice", "phone").await;
    phone.no_message_on("u/alice/inbox").await;
}

#[tokio::test]
async fn a_v5_device_gets_what_it_missed_across_a_gateway_crash() {
    let gw = TestGateway::start().await;
    let (mut phone, present) = v5_device(&gw, "alice", "phone").await;
    assert!(!present);
    phone
        .subscribe("u/alice/inbox", rumqttc::v5::mqttbytes::QoS::ExactlyOnce)
        .await;
    post_messages(&gw, "alice", 0, 500).await;
    // Still connected when the gateway dies: its session was kept as it subscribed.
    let taken = inbox_v5(&mut phone, "alice", 500).await;
    assert_all_in_order(&taken, 0, 500);
    let data_dir = gw.stop().await;
    phone.inbox.closed().await;

    let gw = TestGateway::try_start(Options::default(), data_dir)
        .await
        .expect("restarts");
    post_messages(&gw, "alice", 500, 500).await;
    let (mut phone, present) = v5_device(&gw, "alice", "phone").await;
    assert!(present, "the session outlived the crash");
    // What was acknowledged before the crash may come again (the cursor is stored after the
    // acknowledgements, not with each); nothing is missing and the order holds.
    let mut messages: Vec<InboxMessage> = Vec::new();
    let missing =
        |messages: &[InboxMessage]| (500..1000).any(|n| !messages.iter().any(|m| m.body["n"] == n));
    while missing(&messages) {
        messages.extend(inbox_v5(&mut phone, "alice", 1).await);
    }
    for pair in messages.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1, "in order, none missing");
    }
    let again = messages.iter().filter(|m| m.body["n"].as_u64() < Some(500));
    assert!(
        again.clone().all(|m| taken.contains(m)),
        "only what it had already is sent again"
    );
}

#[tokio::test]
async fn a_device_with_a_kept_session_catches_up_on_another_node() {
    let redis = RedisServer::start();
    let redis_options = |node: &str| {
        Options::default()
            .with("STORE__BACKEND", "redis")
            .with("STORE__REDIS_URL", &redis.url())
            .with("STORE__NODE_ID", node)
    };
    let a = TestGateway::start_with(redis_options("node-a")).await;
    let b = TestGateway::start_beside(&a, redis_options("node-b"))
        .await
        .expect("second node");

    let mut phone = v4_device(&a, "alice", "phone").await;
    phone.subscribe("u/alice/inbox", QoS::AtLeastOnce).await;
    phone.client.disconnect().await.unwrap();
    phone.inbox.closed().await;
    post_messages(&a, "alice", 0, 1000).await;

    let mut phone = v4_device(&b, "alice", "phone").await;
    assert!(
        phone.session_present,
        "node B takes up the session node A kept"
    );
    assert_all_in_order(&inbox_v4(&mut phone, "alice", 1000).await, 0, 1000);
    // Live on node B for what node A accepts.
    post_messages(&a, "alice", 1000, 1).await;
    assert_all_in_order(&inbox_v4(&mut phone, "alice", 1).await, 1000, 1);
}

#[tokio::test]
async fn what_the_device_had_not_acknowledged_is_sent_again_with_dup() {
    let gw = TestGateway::start().await;
    let token = gw.token("alice", "phone", Platform::Android);
    let connect = |manual_acks: bool| {
        let (gw, token) = (&gw, token.clone());
        async move {
            V4::connect(gw, Via::Tcp, "phone", Some(&token), |o| {
                o.set_clean_session(false);
                o.set_manual_acks(manual_acks);
            })
            .await
            .unwrap()
        }
    };
    let mut phone = connect(true).await;
    phone.subscribe("u/alice/inbox", QoS::AtLeastOnce).await;
    post_messages(&gw, "alice", 0, 5).await;
    let unacknowledged = inbox_v4(&mut phone, "alice", 5).await;
    phone.client.disconnect().await.unwrap();
    phone.inbox.closed().await;

    let mut phone = connect(false).await;
    let mut again = Vec::new();
    for _ in 0..5 {
        let publish = next_publish(&mut phone, "a message sent again").await;
        assert!(publish.dup, "sent again with DUP");
        again.push(serde_json::from_slice::<InboxMessage>(&publish.payload).unwrap());
    }
    assert_eq!(again, unacknowledged);
    phone.no_message_on("u/alice/inbox").await;
}

/// One MQTT 3.1.1 packet, encoded.
fn packet(packet: v4p::Packet) -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    packet.write(&mut buf, 1 << 20).unwrap();
    buf.to_vec()
}

/// Reads the next packet from a raw socket.
async fn read_packet(socket: &mut TcpStream, buf: &mut bytes::BytesMut) -> v4p::Packet {
    loop {
        match v4p::Packet::read(buf, 1 << 20) {
            Ok(packet) => return packet,
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {
                let mut chunk = [0u8; 4096];
                let n = tokio::time::timeout(e2e::PATIENCE, socket.read(&mut chunk))
                    .await
                    .expect("a packet in time")
                    .unwrap();
                assert!(n > 0, "the gateway closed the socket");
                buf.extend_from_slice(&chunk[..n]);
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// A raw MQTT 3.1.1 connection of alice's phone with a kept session, after its CONNACK.
async fn raw_phone(gw: &TestGateway) -> (TcpStream, bytes::BytesMut) {
    let mut connect = v4p::Connect::new("phone");
    connect.clean_session = false;
    let token = gw.token("alice", "phone", Platform::Android);
    connect.login = Some(v4p::Login::new("device", token));
    let mut socket = TcpStream::connect(gw.mqtt).await.unwrap();
    socket
        .write_all(&packet(v4p::Packet::Connect(connect)))
        .await
        .unwrap();
    let mut buf = bytes::BytesMut::new();
    assert!(matches!(
        read_packet(&mut socket, &mut buf).await,
        v4p::Packet::ConnAck(_)
    ));
    (socket, buf)
}

/// The texts of the messages in `user`'s log.
async fn stored_texts(gw: &TestGateway, user: &str) -> Vec<serde_json::Value> {
    let (status, history) = gw
        .api(Method::GET, &format!("/v1/users/{user}/messages"), None)
        .await;
    assert_eq!(status, 200, "{history}");
    history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"]["text"].clone())
        .collect()
}

fn send(qos: QoS, pkid: u16, text: &str) -> v4p::Publish {
    let body = json!({"to": "bob", "body": {"text": text}}).to_string();
    let mut publish = v4p::Publish::new("u/alice/d/phone/send", qos, body);
    publish.pkid = pkid;
    publish
}

#[tokio::test]
async fn a_qos_2_send_is_stored_once_however_often_it_is_sent_again() {
    let gw = TestGateway::start().await;
    let mut publish = send(QoS::ExactlyOnce, 7, "once");
    let (mut socket, mut buf) = raw_phone(&gw).await;
    let pubrec = v4p::Packet::PubRec(v4p::PubRec::new(7));
    socket
        .write_all(&packet(v4p::Packet::Publish(publish.clone())))
        .await
        .unwrap();
    assert_eq!(read_packet(&mut socket, &mut buf).await, pubrec);
    // Sent again on the same connection, then after a reconnect, before the release.
    publish.dup = true;
    socket
        .write_all(&packet(v4p::Packet::Publish(publish.clone())))
        .await
        .unwrap();
    assert_eq!(read_packet(&mut socket, &mut buf).await, pubrec);
    drop(socket);
    let (mut socket, mut buf) = raw_phone(&gw).await;
    socket
        .write_all(&packet(v4p::Packet::Publish(publish)))
        .await
        .unwrap();
    assert_eq!(read_packet(&mut socket, &mut buf).await, pubrec);
    socket
        .write_all(&packet(v4p::Packet::PubRel(v4p::PubRel::new(7))))
        .await
        .unwrap();
    assert_eq!(
        read_packet(&mut socket, &mut buf).await,
        v4p::Packet::PubComp(v4p::PubComp::new(7))
    );
    assert_eq!(
        stored_texts(&gw, "bob").await,
        [json!("once")],
        "stored once"
    );
}

#[tokio::test]
async fn a_qos_1_send_whose_answer_was_lost_is_stored_once_when_sent_again_with_dup() {
    let gw = TestGateway::start().await;
    // The phone sends and loses its connection before the PUBACK reaches it.
    let (mut socket, _) = raw_phone(&gw).await;
    socket
        .write_all(&packet(v4p::Packet::Publish(send(
            QoS::AtLeastOnce,
            3,
            "first",
        ))))
        .await
        .unwrap();
    drop(socket);
    // Coming back, it sends it again with DUP, then a new message under the same packet id.
    let (mut socket, mut buf) = raw_phone(&gw).await;
    let mut again = send(QoS::AtLeastOnce, 3, "first");
    again.dup = true;
    let puback = v4p::Packet::PubAck(v4p::PubAck::new(3));
    for publish in [again, send(QoS::AtLeastOnce, 3, "second")] {
        socket
            .write_all(&packet(v4p::Packet::Publish(publish)))
            .await
            .unwrap();
        assert_eq!(read_packet(&mut socket, &mut buf).await, puback);
    }
    assert_eq!(
        stored_texts(&gw, "bob").await,
        [json!("first"), json!("second")],
        "the one sent again is stored once, the new one under the same id too"
    );
}

#[tokio::test]
async fn a_slow_device_catches_up_from_the_log_without_being_cut_off() {
    let gw = TestGateway::start_with(
        Options::default()
            .with("LIMITS__OUTBOX_CAPACITY", "16")
            .with("LIMITS__MAX_INFLIGHT", "4"),
    )
    .await;
    let token = gw.token("alice", "phone", Platform::Android);
    let mut phone = V4::connect(&gw, Via::Tcp, "phone", Some(&token), |o| {
        o.set_clean_session(false);
        o.set_manual_acks(true);
    })
    .await
    .unwrap();
    phone.subscribe("u/alice/inbox", QoS::AtLeastOnce).await;
    // The phone acknowledges nothing while 300 messages come: 4 are in flight, 16 wait in its
    // outbox, the rest are left in the log.
    post_messages(&gw, "alice", 0, 300).await;
    let mut messages = Vec::new();
    while messages.len() < 300 {
        let (message, pkid) = phone
            .inbox
            .wait_for("an inbox message", inbox_message_v4("u/alice/inbox"))
            .await;
        messages.push(message);
        let mut ack = v4p::Publish::new("u/alice/inbox", QoS::AtLeastOnce, "");
        ack.pkid = pkid;
        phone.client.ack(&ack).await.unwrap();
    }
    assert_all_in_order(&messages, 0, 300);
    assert!(
        gw.metric("gateway_deferred_deliveries_total").await > 0.0,
        "the live path gave up and the log was read instead"
    );
    assert_eq!(
        gw.metric("gateway_disconnects_total{reason=\"slow_consumer\"}")
            .await,
        0.0
    );
}

#[tokio::test]
async fn retained_messages_outlive_a_crash_and_shared_subscriptions_take_turns() {
    let options = Options::default().with("AUTH__ALLOW_ANONYMOUS", "true");
    let gw = TestGateway::start_with(options.clone()).await;
    let mut publisher = V4::connect(&gw, Via::Tcp, "station", None, |_| {})
        .await
        .unwrap();
    publisher
        .client
        .publish("weather/paris", QoS::AtLeastOnce, true, "sunny")
        .await
        .unwrap();
    // Answered once retained.
    publisher
        .inbox
        .wait_for("the PUBACK", |i| match i {
            Incoming::Packet(v4p::Packet::PubAck(_)) => Some(()),
            _ => None,
        })
        .await;
    let mut watcher = V4::connect(&gw, Via::Tcp, "watcher", None, |_| {})
        .await
        .unwrap();
    watcher.subscribe("weather/+", QoS::AtLeastOnce).await;
    let retained = next_publish(&mut watcher, "the retained message").await;
    assert_eq!(
        (&retained.payload[..], retained.retain),
        (&b"sunny"[..], true)
    );

    let data_dir = gw.stop().await;
    let gw = TestGateway::try_start(options, data_dir).await.unwrap();
    let mut late = V4::connect(&gw, Via::Tcp, "late", None, |_| {})
        .await
        .unwrap();
    late.subscribe("weather/#", QoS::AtLeastOnce).await;
    let retained = next_publish(&mut late, "the retained message after the crash").await;
    assert_eq!(
        (&retained.payload[..], retained.retain),
        (&b"sunny"[..], true)
    );

    let mut workers = Vec::new();
    for name in ["worker-1", "worker-2"] {
        let mut worker = V4::connect(&gw, Via::Tcp, name, None, |_| {})
            .await
            .unwrap();
        let granted = worker
            .subscribe("$share/pool/jobs/#", QoS::AtLeastOnce)
            .await;
        assert_eq!(
            granted,
            [v4p::SubscribeReasonCode::Success(QoS::AtLeastOnce)]
        );
        workers.push(worker);
    }
    let publisher = V4::connect(&gw, Via::Tcp, "boss", None, |_| {})
        .await
        .unwrap();
    for n in 0..10 {
        publisher
            .publish(&format!("jobs/{n}"), "work", QoS::AtLeastOnce)
            .await;
    }
    for worker in &mut workers {
        for _ in 0..5 {
            worker
                .inbox
                .wait_for("a job", |i| match i {
                    Incoming::Packet(v4p::Packet::Publish(p)) => Some(p.topic.clone()),
                    _ => None,
                })
                .await;
        }
        worker.no_message_on("jobs/#").await;
    }
}

#[tokio::test]
async fn devices_messages_to_services_reach_one_backend_of_a_group_stamped_with_the_sender() {
    let gw = TestGateway::start().await;
    let (mut backend, _) = V5::connect(&gw, Via::Tcp, "orders-1", Some(&gw.api_key), |_| {})
        .await
        .unwrap();
    let granted = backend
        .subscribe(
            "$share/orders/svc/orders/#",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        )
        .await;
    assert_eq!(
        granted,
        [v5p::SubscribeReasonCode::Success(
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce
        )]
    );
    let token = gw.token("alice", "phone", Platform::Ios);
    let (phone, _) = V5::connect(&gw, Via::Tcp, "phone", Some(&token), |_| {})
        .await
        .unwrap();
    let properties = v5p::PublishProperties {
        user_properties: vec![("gw-user".into(), "mallory".into())],
        ..Default::default()
    };
    phone
        .client
        .publish_with_properties(
            "svc/orders/new",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            r#"{"item":42}"#,
            properties,
        )
        .await
        .unwrap();
    let order = backend
        .inbox
        .wait_for("the order", |i| match i {
            Incoming::Packet(v5p::Packet::Publish(p)) => Some(p.clone()),
            _ => None,
        })
        .await;
    assert_eq!(&order.payload[..], br#"{"item":42}"#);
    let stamped = order.properties.unwrap().user_properties;
    assert_eq!(
        stamped,
        [
            ("gw-user".to_string(), "alice".to_string()),
            ("gw-device".to_string(), "phone".to_string())
        ],
        "who sent it, as the gateway knows it"
    );
    // A device may not read the services' traffic.
    let (mut other, _) = V5::connect(
        &gw,
        Via::Tcp,
        "tablet",
        Some(&gw.token("bob", "tablet", Platform::Ios)),
        |_| {},
    )
    .await
    .unwrap();
    let refused = other
        .subscribe("svc/#", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await;
    assert_eq!(refused, [v5p::SubscribeReasonCode::NotAuthorized]);
}

#[tokio::test]
async fn a_web_client_resumes_its_inbox_from_the_device_cursor() {
    let gw = TestGateway::start().await;
    let token = gw.token("alice", "browser", Platform::Web);
    let mut web = JsonClient::authenticated(&gw, &token).await;
    let pong = web.request(json!({"op": "ping"})).await;
    assert_eq!(pong["op"], "pong");
    web.send_text(r#"{"op":"ping","id":7}"#).await;
    let pong = web.frame_where(|f| f["op"] == "pong" && f["id"] == 7).await;
    assert_eq!(pong["id"], json!(7), "a numeric id comes back a number");

    let ok = web
        .request(json!({"op": "sub", "topic": "u/alice/inbox", "resume": true}))
        .await;
    assert_eq!(ok["op"], "ok", "{ok}");
    post_messages(&gw, "alice", 0, 3).await;
    let mut last = 0;
    for _ in 0..3 {
        last = web.message_on("u/alice/inbox").await["seq"]
            .as_u64()
            .unwrap();
    }
    let ok = web.request(json!({"op": "ack", "seq": last})).await;
    assert_eq!(ok["op"], "ok");
    drop(web);

    post_messages(&gw, "alice", 3, 20).await;
    let mut web = JsonClient::authenticated(&gw, &token).await;
    let ok = web
        .request(json!({"op": "sub", "topic": "u/alice/inbox", "resume": true}))
        .await;
    assert_eq!(ok["op"], "ok");
    let mut missed = Vec::new();
    for _ in 0..20 {
        let message: InboxMessage =
            serde_json::from_value(web.message_on("u/alice/inbox").await).unwrap();
        missed.push(message);
    }
    assert_all_in_order(&missed, 3, 20);
    assert_eq!(missed[0].seq, last + 1);
}

#[tokio::test]
async fn an_away_session_queues_other_topics_within_its_bound_across_a_restart() {
    let options = Options::default()
        .with("AUTH__ALLOW_ANONYMOUS", "true")
        .with("SESSIONS__MAX_QUEUED", "3");
    let gw = TestGateway::start_with(options.clone()).await;
    let mut reader = V4::connect(&gw, Via::Tcp, "reader", None, |o| {
        o.set_clean_session(false);
    })
    .await
    .unwrap();
    reader.subscribe("news/#", QoS::AtLeastOnce).await;
    reader.client.disconnect().await.unwrap();
    reader.inbox.closed().await;

    let publish = |gw: &TestGateway, from: u32, to: u32| {
        let gw_mqtt = gw.mqtt;
        async move {
            let mut writer = rumqttc::MqttOptions::new("writer", "127.0.0.1", gw_mqtt.port());
            writer.set_clean_session(true);
            let (client, mut events) = rumqttc::AsyncClient::new(writer, 100);
            for n in from..to {
                client
                    .publish(format!("news/{n}"), QoS::AtLeastOnce, false, n.to_string())
                    .await
                    .unwrap();
            }
            // Until every PUBACK is in: then each was queued.
            let mut acked = 0;
            while acked < to - from {
                if let rumqttc::Event::Incoming(v4p::Packet::PubAck(_)) =
                    events.poll().await.unwrap()
                {
                    acked += 1;
                }
            }
        }
    };
    publish(&gw, 0, 2).await;
    // Stopped as an operator would: what the parked session took is queued before it exits.
    let stopped = gw.terminate().await;
    assert!(
        stopped.status.success(),
        "a parked session does not hold the shutdown up"
    );
    let gw = TestGateway::try_start(options, stopped.data_dir)
        .await
        .unwrap();
    publish(&gw, 2, 5).await;

    let (mut reader, topics) = queued_for_reader(&gw, 3).await;
    assert_eq!(
        topics,
        ["news/2", "news/3", "news/4"],
        "the newest three, in order"
    );
    reader.no_message_on("news/#").await;
    assert_eq!(
        gw.metric("gateway_session_queue_dropped_total").await,
        2.0,
        "the two oldest pushed out after the restart"
    );
}

/// Messages published while a client's connection is ending reach both its connection and the
/// session parked for it: each is queued once, in order.
#[tokio::test]
async fn what_arrives_while_a_session_parks_is_queued_once() {
    let gw = TestGateway::start_with(
        Options::default()
            .with("AUTH__ALLOW_ANONYMOUS", "true")
            .with("SESSIONS__MAX_QUEUED", "1000"),
    )
    .await;
    let mut reader = V4::connect(&gw, Via::Tcp, "reader", None, |o| {
        o.set_clean_session(false);
    })
    .await
    .unwrap();
    reader.subscribe("news/#", QoS::AtLeastOnce).await;
    let writer = V4::connect(&gw, Via::Tcp, "writer", None, |_| {})
        .await
        .unwrap();
    // The reader leaves while the writer publishes: the first ones reach its connection.
    reader.client.disconnect().await.unwrap();
    for n in 0..200 {
        writer
            .publish(&format!("news/{n}"), n.to_string(), QoS::AtLeastOnce)
            .await;
    }
    reader.inbox.closed().await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let (mut reader, topics) = queued_for_reader(&gw, 200).await;
    let expected: Vec<String> = (0..200).map(|n| format!("news/{n}")).collect();
    assert_eq!(topics, expected, "each once, in order");
    reader.no_message_on("news/#").await;
}

/// Reconnects the dev-mode client `reader` to its kept session and reads the topics of the
/// `count` messages queued for it.
async fn queued_for_reader(gw: &TestGateway, count: usize) -> (V4, Vec<String>) {
    let mut reader = V4::connect(gw, Via::Tcp, "reader", None, |o| {
        o.set_clean_session(false);
    })
    .await
    .unwrap();
    assert!(reader.session_present);
    let mut topics = Vec::new();
    for _ in 0..count {
        let publish = reader
            .inbox
            .wait_for("a queued message", |i| match i {
                Incoming::Packet(v4p::Packet::Publish(p)) => Some(p.topic.clone()),
                _ => None,
            })
            .await;
        topics.push(publish);
    }
    (reader, topics)
}
