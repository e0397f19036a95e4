//! The live path from client to client over every transport and both MQTT versions, and between
//! MQTT and the JSON WebSocket bridge.

use e2e::json_ws::JsonClient;
use e2e::mqtt::{Via, V4, V5};
use e2e::{Options, TestGateway};
use protocol::envelope::Platform;
use protocol::topics::{self, DeviceAction};
use reqwest::Method;
use rumqttc::v5::mqttbytes::v5::PubAckReason;
use rumqttc::v5::mqttbytes::QoS as V5QoS;
use rumqttc::QoS;
use serde_json::json;

fn send_payload(to: &str, text: &str) -> Vec<u8> {
    json!({"to": to, "body": {"text": text}})
        .to_string()
        .into_bytes()
}

/// Alice (MQTT 3.1.1) and Bob (MQTT 5) exchange messages both ways over `via`, and the backend
/// reaches both over HTTP.
async fn exchange(gw: &TestGateway, via: Via) {
    let alice_token = gw.token("alice", "phone", Platform::Ios);
    let bob_token = gw.token("bob", "laptop", Platform::Desktop);
    let mut alice = V4::connect(gw, via, "alice-phone", Some(&alice_token), |_| {})
        .await
        .unwrap();
    let (mut bob, _) = V5::connect(gw, via, "bob-laptop", Some(&bob_token), |_| {})
        .await
        .unwrap();
    alice
        .subscribe(&topics::inbox("alice"), QoS::AtLeastOnce)
        .await;
    bob.subscribe(
        &topics::inbox("bob"),
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
    )
    .await;

    let alice_send = topics::device_topic("alice", "phone", DeviceAction::Send);
    alice
        .publish(&alice_send, send_payload("bob", "hi bob"), QoS::AtLeastOnce)
        .await;
    let got = bob.message_on(&topics::inbox("bob")).await;
    assert_eq!(got["body"]["text"], "hi bob");
    assert_eq!(got["from"], "alice");
    assert_eq!(got["from_device"], "phone");
    assert_eq!(got["to"], "bob");

    let bob_send = topics::device_topic("bob", "laptop", DeviceAction::Send);
    bob.publish(
        &bob_send,
        send_payload("alice", "hi alice"),
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
    )
    .await;
    assert_eq!(
        bob.puback().await,
        rumqttc::v5::mqttbytes::v5::PubAckReason::Success
    );
    let got = alice.message_on(&topics::inbox("alice")).await;
    assert_eq!(got["body"]["text"], "hi alice");

    let accepted = gw.post_message("alice", json!({"n": 1})).await;
    let got = alice.message_on(&topics::inbox("alice")).await;
    assert_eq!(got["id"], accepted["id"]);
    assert_eq!(got["body"], json!({"n": 1}));
}

#[tokio::test]
async fn mqtt_over_tcp() {
    let gw = TestGateway::start().await;
    exchange(&gw, Via::Tcp).await;
}

#[tokio::test]
async fn mqtt_over_websocket() {
    let gw = TestGateway::start().await;
    exchange(&gw, Via::Ws).await;
}

#[tokio::test]
async fn mqtt_over_tls_and_secure_websocket() {
    let gw = TestGateway::start_with(Options::default().tls()).await;
    exchange(&gw, Via::Tls).await;
    exchange(&gw, Via::Wss).await;
}

#[tokio::test]
async fn a_device_send_reaches_the_recipient_and_the_senders_other_devices() {
    let gw = TestGateway::start().await;
    let mut phone = V4::connect(
        &gw,
        Via::Tcp,
        "a1",
        Some(&gw.token("alice", "phone", Platform::Ios)),
        |_| {},
    )
    .await
    .unwrap();
    let mut laptop = V4::connect(
        &gw,
        Via::Tcp,
        "a2",
        Some(&gw.token("alice", "laptop", Platform::Desktop)),
        |_| {},
    )
    .await
    .unwrap();
    let mut bob = V4::connect(
        &gw,
        Via::Tcp,
        "b1",
        Some(&gw.token("bob", "phone", Platform::Android)),
        |_| {},
    )
    .await
    .unwrap();
    for (client, user) in [
        (&mut phone, "alice"),
        (&mut laptop, "alice"),
        (&mut bob, "bob"),
    ] {
        client
            .subscribe(&topics::inbox(user), QoS::AtLeastOnce)
            .await;
    }
    phone
        .publish(
            &topics::device_topic("alice", "phone", DeviceAction::Send),
            send_payload("bob", "x"),
            QoS::AtLeastOnce,
        )
        .await;
    assert_eq!(bob.message_on("u/bob/inbox").await["body"]["text"], "x");
    let copy = laptop.message_on("u/alice/inbox").await;
    assert_eq!(
        (copy["to"].as_str(), copy["from_device"].as_str()),
        (Some("bob"), Some("phone"))
    );
    phone.no_message_on("u/alice/inbox").await;
}

#[tokio::test]
async fn json_bridge_and_mqtt_see_each_other_both_ways() {
    let gw = TestGateway::start().await;
    let mut web =
        JsonClient::authenticated(&gw, &gw.token("alice", "browser", Platform::Web)).await;
    let mut phone = V4::connect(
        &gw,
        Via::Tcp,
        "b1",
        Some(&gw.token("bob", "phone", Platform::Android)),
        |_| {},
    )
    .await
    .unwrap();
    phone.subscribe("u/bob/inbox", QoS::AtLeastOnce).await;
    let ok = web
        .request(json!({"op": "sub", "topic": "u/alice/inbox"}))
        .await;
    assert_eq!(ok["op"], "ok", "{ok}");

    // JSON → MQTT
    let ok = web
        .request(json!({"op": "pub", "topic": "u/alice/d/browser/send", "payload": {"to": "bob", "body": {"text": "from web"}}}))
        .await;
    assert_eq!(ok["op"], "ok", "{ok}");
    let got = phone.message_on("u/bob/inbox").await;
    assert_eq!(
        (got["body"]["text"].as_str(), got["from_device"].as_str()),
        (Some("from web"), Some("browser"))
    );

    // MQTT → JSON
    phone
        .publish(
            "u/bob/d/phone/send",
            send_payload("alice", "from phone"),
            QoS::AtLeastOnce,
        )
        .await;
    let got = web.message_on("u/alice/inbox").await;
    assert_eq!(got["body"]["text"], "from phone");
    assert_eq!(got["from"], "bob");
}

#[tokio::test]
async fn live_signals_reach_the_devices_online_now_and_are_never_stored() {
    let gw = TestGateway::start().await;
    let connect = |user: &'static str, device: &'static str, platform| {
        let token = gw.token(user, device, platform);
        let gw = &gw;
        async move {
            let id = format!("{user}-{device}");
            V4::connect(gw, Via::Tcp, &id, Some(&token), |_| {})
                .await
                .unwrap()
        }
    };
    let mut alice_phone = connect("alice", "phone", Platform::Ios).await;
    let mut alice_laptop = connect("alice", "laptop", Platform::Desktop).await;
    let mut bob_phone = connect("bob", "phone", Platform::Android).await;
    let mut bob_web =
        JsonClient::authenticated(&gw, &gw.token("bob", "browser", Platform::Web)).await;
    for (client, user) in [
        (&mut alice_phone, "alice"),
        (&mut alice_laptop, "alice"),
        (&mut bob_phone, "bob"),
    ] {
        client
            .subscribe(&topics::signal(user), QoS::AtMostOnce)
            .await;
    }
    alice_phone
        .subscribe(&topics::reply("alice", "phone"), QoS::AtLeastOnce)
        .await;
    let ok = bob_web
        .request(json!({"op": "sub", "topic": "u/bob/signal"}))
        .await;
    assert_eq!(ok["op"], "ok", "{ok}");

    let signal_topic = topics::device_topic("alice", "phone", DeviceAction::Signal);
    let typing = json!({"to": "bob", "body": {"typing": true}}).to_string();
    alice_phone
        .publish(&signal_topic, typing, QoS::AtLeastOnce)
        .await;
    let expected = json!({"from": "alice", "from_device": "phone", "body": {"typing": true}});
    assert_eq!(bob_phone.message_on("u/bob/signal").await, expected);
    assert_eq!(bob_web.message_on("u/bob/signal").await, expected);

    // To the sender's own user: the other devices get it, the sending one does not.
    let moved = json!({"to": "alice", "body": {"move": "e4"}}).to_string();
    alice_phone
        .publish(&signal_topic, moved, QoS::AtMostOnce)
        .await;
    assert_eq!(
        alice_laptop.message_on("u/alice/signal").await["body"]["move"],
        "e4"
    );
    alice_phone.no_message_on("u/alice/signal").await;

    // From the JSON bridge, the same request on the same topic.
    let ok = bob_web
        .request(json!({"op": "pub", "topic": "u/bob/d/browser/signal", "payload": {"to": "alice", "body": "hi"}}))
        .await;
    assert_eq!(ok["op"], "ok", "{ok}");
    let got = alice_laptop.message_on("u/alice/signal").await;
    assert_eq!(
        (got["from_device"].as_str(), got["body"].as_str()),
        (Some("browser"), Some("hi"))
    );

    // A malformed request is answered on the device's reply topic.
    for bad in [json!({"to": "no/such", "body": 1}), json!({"body": 1})] {
        alice_phone
            .publish(&signal_topic, bad.to_string(), QoS::AtLeastOnce)
            .await;
        let reply = alice_phone.message_on("u/alice/d/phone/reply").await;
        assert_eq!(
            (reply["code"].as_str(), reply["action"].as_str()),
            (Some("invalid_request"), Some("signal")),
            "{reply}"
        );
    }

    // From the backend over HTTP: no device, and `from` only when given.
    let (status, body) = gw
        .api(
            Method::POST,
            "/v1/signals",
            Some(json!({"to": "bob", "from": "game-server", "body": {"round": 3}})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let expected = json!({"from": "game-server", "body": {"round": 3}});
    assert_eq!(bob_phone.message_on("u/bob/signal").await, expected);
    assert_eq!(bob_web.message_on("u/bob/signal").await, expected);
    for (bad, answer) in [
        (
            json!({"to": "no/such", "body": 1}),
            (400, "invalid_request"),
        ),
        (json!({"to": "bob"}), (422, "bad_json")),
    ] {
        let (status, body) = gw.api(Method::POST, "/v1/signals", Some(bad)).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (answer.0, Some(answer.1)),
            "{body}"
        );
    }

    // Nothing went into bob's log: the first message stored for him is number 1.
    let first = gw.post_message("bob", json!({"text": "stored"})).await;
    assert_eq!(first["seq"], 1, "{first}");
    bob_phone.no_message_on("u/bob/inbox").await;
}

#[tokio::test]
async fn json_bridge_authenticates_with_an_auth_frame() {
    let gw = TestGateway::start().await;
    let mut web = JsonClient::connect(&gw, None).await;
    let early = web
        .request(json!({"op": "sub", "topic": "u/alice/inbox"}))
        .await;
    assert_eq!(early["code"], "not_authenticated");
    let token = gw.token("alice", "browser", Platform::Web);
    let ok = web.request(json!({"op": "auth", "token": token})).await;
    assert_eq!(
        (
            ok["op"].as_str(),
            ok["user"].as_str(),
            ok["device"].as_str()
        ),
        (Some("ok"), Some("alice"), Some("browser"))
    );
    assert_eq!(
        web.request(json!({"op": "sub", "topic": "u/alice/inbox"}))
            .await["op"],
        "ok"
    );
    gw.post_message("alice", json!({"k": "v"})).await;
    assert_eq!(web.message_on("u/alice/inbox").await["body"]["k"], "v");
}

#[tokio::test]
async fn anonymous_dev_mode_is_a_plain_broker_outside_user_topics() {
    let gw =
        TestGateway::start_with(Options::default().with("AUTH__ALLOW_ANONYMOUS", "true")).await;
    let mut sub = V4::connect(&gw, Via::Tcp, "sub", None, |_| {})
        .await
        .unwrap();
    let publisher = V4::connect(&gw, Via::Tcp, "pub", None, |_| {})
        .await
        .unwrap();
    let codes = sub.subscribe("sensors/#", QoS::AtLeastOnce).await;
    assert!(matches!(codes[0], rumqttc::SubscribeReasonCode::Success(_)));
    publisher
        .publish("sensors/1", br#"{"t":21}"#.to_vec(), QoS::AtLeastOnce)
        .await;
    assert_eq!(sub.message_on("sensors/1").await["t"], 21);

    // Even `#` never shows an anonymous client what goes to users.
    let mut snoop = V4::connect(&gw, Via::Tcp, "snoop", None, |_| {})
        .await
        .unwrap();
    snoop.subscribe("#", QoS::AtLeastOnce).await;
    assert_eq!(
        snoop.subscribe("u/alice/inbox", QoS::AtLeastOnce).await,
        vec![rumqttc::SubscribeReasonCode::Failure]
    );
    let mut alice = V4::connect(
        &gw,
        Via::Tcp,
        "a",
        Some(&gw.token("alice", "p", Platform::Ios)),
        |_| {},
    )
    .await
    .unwrap();
    alice.subscribe("u/alice/inbox", QoS::AtLeastOnce).await;
    gw.post_message("alice", json!({"secret": 1})).await;
    alice.message_on("u/alice/inbox").await;
    snoop.no_message_on("u/#").await;
    publisher
        .publish("u/alice/inbox", b"{}".to_vec(), QoS::AtLeastOnce)
        .await;
    alice.no_message_on("u/alice/inbox").await;
}

/// Dev mode lets strangers in: they may read `pub/` broadcasts but not send them (only backends
/// and the API broadcast), and one that takes a backend's client id does not take over the
/// backend's connection.
#[tokio::test]
async fn anonymous_clients_neither_broadcast_nor_take_over_a_backend() {
    let gw =
        TestGateway::start_with(Options::default().with("AUTH__ALLOW_ANONYMOUS", "true")).await;
    let mut phone = V4::connect(
        &gw,
        Via::Tcp,
        "phone",
        Some(&gw.token("alice", "phone", Platform::Ios)),
        |_| {},
    )
    .await
    .unwrap();
    phone.subscribe("pub/news", QoS::AtLeastOnce).await;
    let (mut stranger, _) = V5::connect(&gw, Via::Tcp, "orders-1", None, |_| {})
        .await
        .unwrap();
    stranger
        .publish("pub/news", b"{\"fake\":1}".to_vec(), V5QoS::AtLeastOnce)
        .await;
    assert_eq!(stranger.puback().await, PubAckReason::NotAuthorized);
    phone.no_message_on("pub/news").await;

    let (mut backend, _) = V5::connect(&gw, Via::Tcp, "worker", Some(&gw.api_key), |_| {})
        .await
        .unwrap();
    backend.subscribe("svc/orders", V5QoS::AtLeastOnce).await;
    let (_impostor, _) = V5::connect(&gw, Via::Tcp, "worker", None, |_| {})
        .await
        .unwrap();
    phone
        .publish("svc/orders", br#"{"order":1}"#.to_vec(), QoS::AtLeastOnce)
        .await;
    let order = backend.message_on("svc/orders").await;
    assert_eq!(order["order"], 1, "the backend still reads its services");
    assert_eq!(
        gw.metric("gateway_disconnects_total{reason=\"taken_over\"}")
            .await,
        0.0
    );
}
