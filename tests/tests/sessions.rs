//! Sessions and heartbeats: keepalive expiry and wills, presence, the device policy, takeover,
//! kicks, and approval of logins from new devices.

use e2e::json_ws::JsonClient;
use e2e::mqtt::{Via, V4, V5};
use e2e::raw_v5::RawV5;
use e2e::{Options, TestGateway, PATIENCE};
use protocol::envelope::Platform;
use rumqttc::mqttbytes::v4::{Connect, LastWill, Login, Packet};
use rumqttc::v5::mqttbytes::v5::DisconnectReasonCode;
use rumqttc::QoS;
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A device of `user` subscribed to its inbox and presence.
async fn watcher(gw: &TestGateway, user: &str, device: &str, platform: Platform) -> V4 {
    let token = gw.token(user, device, platform);
    let mut client = V4::connect(gw, Via::Tcp, device, Some(&token), |_| {})
        .await
        .unwrap();
    client
        .subscribe(&format!("u/{user}/inbox"), QoS::AtLeastOnce)
        .await;
    client
        .subscribe(&format!("u/{user}/presence"), QoS::AtLeastOnce)
        .await;
    client
}

#[tokio::test]
async fn keepalive_expiry_marks_the_device_offline_and_fires_its_will() {
    let gw = TestGateway::start().await;
    let mut laptop = watcher(&gw, "alice", "laptop", Platform::Desktop).await;

    // A phone that connects with a 1 s keepalive and a will, then goes silent (no PINGREQ).
    let mut connect = Connect::new("phone");
    connect.keep_alive = 1;
    connect.login = Some(Login::new(
        "alice",
        gw.token("alice", "phone", Platform::Ios),
    ));
    connect.last_will = Some(LastWill::new(
        "u/alice/d/phone/send",
        json!({"to": "alice", "body": {"will": "phone lost"}}).to_string(),
        QoS::AtLeastOnce,
        false,
    ));
    let mut buf = bytes::BytesMut::new();
    Packet::Connect(connect).write(&mut buf, 1 << 20).unwrap();
    let mut phone = TcpStream::connect(gw.mqtt).await.unwrap();
    phone.write_all(&buf).await.unwrap();
    let mut connack = [0u8; 4];
    phone.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);
    let online = laptop.message_on("u/alice/presence").await;
    assert_eq!(
        (online["type"].as_str(), online["device"]["device"].as_str()),
        (Some("online"), Some("phone"))
    );

    let offline = laptop.message_on("u/alice/presence").await;
    assert_eq!(
        offline,
        json!({"type": "offline", "device": "phone", "reason": "keepalive_timeout"})
    );
    let will = laptop.message_on("u/alice/inbox").await;
    assert_eq!(
        (will["body"]["will"].as_str(), will["from_device"].as_str()),
        (Some("phone lost"), Some("phone"))
    );
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, phone.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(_)) | Ok(Err(_))),
        "server closed the silent socket"
    );
    assert_eq!(gw.devices("alice").await, vec!["laptop"]);
}

#[tokio::test]
async fn a_normal_disconnect_sends_no_will() {
    let gw = TestGateway::start().await;
    let mut laptop = watcher(&gw, "alice", "laptop", Platform::Desktop).await;
    let phone = V4::connect(
        &gw,
        Via::Tcp,
        "phone",
        Some(&gw.token("alice", "phone", Platform::Ios)),
        |o| {
            o.set_last_will(LastWill::new(
                "u/alice/d/phone/send",
                r#"{"to":"alice","body":{}}"#,
                QoS::AtLeastOnce,
                false,
            ));
        },
    )
    .await
    .unwrap();
    laptop.message_on("u/alice/presence").await;
    phone.client.disconnect().await.unwrap();
    let offline = laptop.message_on("u/alice/presence").await;
    assert_eq!(offline["reason"], "client_disconnect");
    laptop.no_message_on("u/alice/inbox").await;
}

/// MQTT 5 lets a client leave out the reason code and properties of a normal DISCONNECT (two
/// bytes, `E0 00`), as Paho and MQTT.js do: that is a normal disconnection, with no will.
#[tokio::test]
async fn a_bare_v5_disconnect_is_normal_and_sends_no_will() {
    use rumqttc::v5::mqttbytes::v5 as v5p;
    let gw = TestGateway::start().await;
    let mut laptop = watcher(&gw, "alice", "laptop", Platform::Desktop).await;
    let connect = v5p::Connect {
        keep_alive: 60,
        client_id: "phone".into(),
        clean_start: true,
        properties: None,
    };
    let will = v5p::LastWill::new(
        "u/alice/d/phone/send",
        r#"{"to":"alice","body":{"will":"phone lost"}}"#,
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        false,
        None,
    );
    let login = v5p::Login::new("alice", gw.token("alice", "phone", Platform::Ios));
    let mut buf = bytes::BytesMut::new();
    v5p::Packet::Connect(connect, Some(will), Some(login))
        .write(&mut buf, Some(1 << 20))
        .unwrap();
    let mut phone = TcpStream::connect(gw.mqtt).await.unwrap();
    phone.write_all(&buf).await.unwrap();
    let mut connack = [0u8; 2];
    phone.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack[0], 0x20, "CONNACK");
    laptop.message_on("u/alice/presence").await;

    phone.write_all(&[0xE0, 0x00]).await.unwrap();
    let offline = laptop.message_on("u/alice/presence").await;
    assert_eq!(offline["reason"], "client_disconnect");
    laptop.no_message_on("u/alice/inbox").await;
}

#[tokio::test]
async fn long_mobile_keepalives_are_accepted_and_excess_is_capped_for_v5() {
    let gw = TestGateway::start().await;
    let token = gw.token("alice", "phone", Platform::Android);
    let (_, ack) = V5::connect(&gw, Via::Tcp, "p", Some(&token), |o| {
        o.set_keep_alive(Duration::from_secs(15 * 60));
    })
    .await
    .unwrap();
    assert_eq!(
        ack.properties.and_then(|p| p.server_keep_alive),
        None,
        "15 minutes is accepted as asked"
    );
    let (_, ack) = V5::connect(&gw, Via::Tcp, "p", Some(&token), |o| {
        o.set_keep_alive(Duration::from_secs(3600));
    })
    .await
    .unwrap();
    assert_eq!(
        ack.properties.and_then(|p| p.server_keep_alive),
        Some(1200),
        "capped at limits.max_keepalive"
    );
}

#[tokio::test]
async fn presence_and_device_listing() {
    let gw = TestGateway::start().await;
    let mut phone = watcher(&gw, "alice", "phone", Platform::Ios).await;
    let _web = JsonClient::authenticated(&gw, &gw.token("alice", "web", Platform::Web)).await;
    let online = phone.message_on("u/alice/presence").await;
    assert_eq!(online["device"]["device"], "web");
    assert_eq!(online["device"]["transport"], "json_ws");
    assert_eq!(online["device"]["platform"], "web");
    let (status, body) = gw
        .api(reqwest::Method::GET, "/v1/users/alice/devices", None)
        .await;
    assert_eq!(status, 200);
    let devices = body["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2);
    for device in devices {
        assert!(
            device["connected_at"].as_u64().unwrap() > 0
                && device["last_seen"].as_u64().unwrap() > 0
        );
    }
    let (status, body) = gw
        .api(reqwest::Method::GET, "/v1/users/a%2Fb/devices", None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
}

#[tokio::test]
async fn a_second_connection_of_the_same_device_takes_over() {
    let gw = TestGateway::start().await;
    let mut laptop = watcher(&gw, "alice", "laptop", Platform::Desktop).await;
    let token = gw.token("alice", "phone", Platform::Ios);
    let (mut first, _) = V5::connect(&gw, Via::Tcp, "phone-1", Some(&token), |_| {})
        .await
        .unwrap();
    laptop.message_on("u/alice/presence").await;
    let (_second, _) = V5::connect(&gw, Via::Tcp, "phone-2", Some(&token), |_| {})
        .await
        .unwrap();
    assert_eq!(
        first.disconnect_reason().await,
        DisconnectReasonCode::SessionTakenOver
    );
    let online_again = laptop.message_on("u/alice/presence").await;
    assert_eq!(
        online_again["type"], "online",
        "no offline event for a device that stayed online"
    );
    assert_eq!(gw.devices("alice").await, vec!["laptop", "phone"]);
}

#[tokio::test]
async fn one_per_class_policy_kicks_the_older_phone_with_a_reason() {
    let gw = TestGateway::start_with(
        Options::default().with("SESSIONS__DEVICE_POLICY", "one_per_class"),
    )
    .await;
    let mut desktop = watcher(&gw, "alice", "desktop", Platform::Desktop).await;
    let (mut old_phone, _) = V5::connect(
        &gw,
        Via::Tcp,
        "iphone",
        Some(&gw.token("alice", "iphone", Platform::Ios)),
        |_| {},
    )
    .await
    .unwrap();
    old_phone
        .subscribe("u/alice/presence", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await;
    desktop.message_on("u/alice/presence").await;

    let _new_phone = watcher(&gw, "alice", "android", Platform::Android).await;
    let notice = old_phone.message_on("u/alice/presence").await;
    assert_eq!(notice["type"], "kicked");
    assert_eq!(notice["device"], "iphone");
    assert!(
        notice["reason"].as_str().unwrap().contains("another phone"),
        "{notice}"
    );
    assert_eq!(
        old_phone.disconnect_reason().await,
        DisconnectReasonCode::AdministrativeAction
    );
    assert_eq!(
        desktop.message_on("u/alice/presence").await["type"],
        "kicked"
    );
    assert_eq!(
        gw.devices("alice").await,
        vec!["android", "desktop"],
        "the desktop stays"
    );
}

#[tokio::test]
async fn all_active_policy_keeps_every_device() {
    let gw = TestGateway::start().await;
    let _a = watcher(&gw, "alice", "iphone", Platform::Ios).await;
    let _b = watcher(&gw, "alice", "android", Platform::Android).await;
    let _c = watcher(&gw, "alice", "ipad", Platform::Ios).await;
    assert_eq!(gw.devices("alice").await, vec!["android", "ipad", "iphone"]);
}

#[tokio::test]
async fn the_backend_can_kick_a_device() {
    let gw = TestGateway::start().await;
    let mut web = JsonClient::authenticated(&gw, &gw.token("alice", "web", Platform::Web)).await;
    let (status, _) = gw
        .api(
            reqwest::Method::DELETE,
            "/v1/users/alice/devices/web?reason=password%20changed",
            None,
        )
        .await;
    assert_eq!(status, 204);
    let closed = web.closed().await;
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (Some(4001), "password changed")
    );
    let (status, body) = gw
        .api(reqwest::Method::DELETE, "/v1/users/alice/devices/web", None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
}

/// A kicked MQTT 5 client that is still sending reads the DISCONNECT that says why (0x98),
/// not a reset: the gateway drains its socket for a while after the goodbye, as it does for a
/// client in breach and at shutdown.
#[tokio::test]
async fn a_kicked_client_still_sending_reads_why_instead_of_a_reset() {
    let gw = TestGateway::start().await;
    let mut phone = RawV5::login(&gw, "alice", "phone", Platform::Android).await;
    let (status, _) = gw
        .api(
            reqwest::Method::DELETE,
            "/v1/users/alice/devices/phone",
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        phone.disconnect_reason_while_sending().await,
        DisconnectReasonCode::AdministrativeAction
    );
}

/// A kicked web client that is still sending reads the close frame that says why (4001), not a
/// reset: the gateway reads on until the client's own close, as WebSocket's closing handshake
/// asks, for a while.
#[tokio::test]
async fn a_kicked_web_client_still_sending_reads_why_instead_of_a_reset() {
    let gw = TestGateway::start().await;
    let mut web = JsonClient::authenticated(&gw, &gw.token("alice", "web", Platform::Web)).await;
    let (status, _) = gw
        .api(reqwest::Method::DELETE, "/v1/users/alice/devices/web", None)
        .await;
    assert_eq!(status, 204);
    assert_eq!(web.closed_while_sending().await.code, Some(4001));
}

/// Before the store kept known devices, a node kept them in `known_devices.tsv` in its data
/// dir: the first start after the upgrade moves them into the store.
#[tokio::test]
async fn known_devices_kept_in_the_old_file_are_moved_into_the_store() {
    let data_dir = tempfile::tempdir().unwrap();
    let file = data_dir.path().join("known_devices.tsv");
    std::fs::write(&file, "ivy\tphone\nivy\twatch\n").unwrap();
    let gw = TestGateway::try_start(
        Options::default().with("SESSIONS__NEW_DEVICE_APPROVAL", "true"),
        data_dir,
    )
    .await
    .unwrap();
    assert!(!file.exists());
    assert!(file.with_extension("tsv.imported").exists());
    // The watch was known: in at once, not asked to wait.
    let mut watch = watcher(&gw, "ivy", "watch", Platform::Android).await;
    gw.post_message("ivy", json!({"n": 1})).await;
    assert_eq!(watch.message_on("u/ivy/inbox").await["body"]["n"], 1);
    // The user has devices, so a new one waits.
    waiting_for_approval(&gw, "ivy", "laptop", Platform::Desktop).await;
}

/// An approval is durable before it is answered: the gateway killed (SIGKILL) right after its
/// 204 still knows the approved device when it comes back, and lets it in without asking again.
#[tokio::test]
async fn an_approved_device_is_still_known_after_a_kill_9() {
    let options = || Options::default().with("SESSIONS__NEW_DEVICE_APPROVAL", "true");
    let gw = TestGateway::start_with(options()).await;
    let _phone = watcher(&gw, "noa", "phone", Platform::Ios).await;
    let laptop = waiting_for_approval(&gw, "noa", "laptop", Platform::Desktop).await;
    let status = decide_over_http(&gw, "noa", "laptop", true).await;
    assert_eq!(status, 204);
    let data_dir = gw.stop().await;
    drop(laptop);

    let gw = TestGateway::try_start(options(), data_dir).await.unwrap();
    let mut laptop = watcher(&gw, "noa", "laptop", Platform::Desktop).await;
    gw.post_message("noa", json!({"n": 1})).await;
    assert_eq!(laptop.message_on("u/noa/inbox").await["body"]["n"], 1);
}

/// The backend's decision on `user`'s `device` waiting for approval: the HTTP status.
async fn decide_over_http(gw: &TestGateway, user: &str, device: &str, approve: bool) -> u16 {
    let path = format!("/v1/users/{user}/devices/{device}/approval");
    let body = json!({ "approve": approve });
    gw.api(reqwest::Method::POST, &path, Some(body)).await.0
}

/// A device `user` never used before, connected and told to wait for approval.
async fn waiting_for_approval(
    gw: &TestGateway,
    user: &str,
    device: &str,
    platform: Platform,
) -> V4 {
    let token = gw.token(user, device, platform);
    let mut client = V4::connect(gw, Via::Tcp, device, Some(&token), |_| {})
        .await
        .unwrap();
    let reply = format!("u/{user}/d/{device}/reply");
    client.subscribe(&reply, QoS::AtLeastOnce).await;
    assert_eq!(
        client.message_on(&reply).await,
        json!({"type": "approval_pending"})
    );
    client
}

#[tokio::test]
async fn a_new_device_waits_for_approval_from_a_known_one() {
    let gw =
        TestGateway::start_with(Options::default().with("SESSIONS__NEW_DEVICE_APPROVAL", "true"))
            .await;
    // The first device a user ever uses needs no approval.
    let mut phone = watcher(&gw, "alice", "phone", Platform::Ios).await;

    let mut laptop = waiting_for_approval(&gw, "alice", "laptop", Platform::Desktop).await;
    laptop.subscribe("u/alice/inbox", QoS::AtLeastOnce).await;
    let request = phone.message_on("u/alice/presence").await;
    assert_eq!(
        request,
        json!({"type": "approval_request", "device": "laptop", "platform": "desktop"})
    );

    // While pending, the laptop sees none of the user's traffic and cannot send.
    gw.post_message("alice", json!({"n": 1})).await;
    phone.message_on("u/alice/inbox").await;
    laptop.no_message_on("u/alice/inbox").await;
    laptop
        .publish(
            "u/alice/d/laptop/send",
            r#"{"to":"bob","body":{}}"#,
            QoS::AtLeastOnce,
        )
        .await;
    let refused = laptop.message_on("u/alice/d/laptop/reply").await;
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("approval_pending"))
    );

    phone
        .publish(
            "u/alice/d/phone/approve",
            r#"{"device":"laptop","approve":true}"#,
            QoS::AtLeastOnce,
        )
        .await;
    assert_eq!(
        laptop.message_on("u/alice/d/laptop/reply").await,
        json!({"type": "approved"})
    );
    let resolved = phone.message_on("u/alice/presence").await;
    assert_eq!(
        resolved,
        json!({"type": "approval_resolved", "device": "laptop", "approved": true, "by": "phone"})
    );
    gw.post_message("alice", json!({"n": 2})).await;
    assert_eq!(laptop.message_on("u/alice/inbox").await["body"]["n"], 2);

    // Denied over HTTP: the tablet is told and closed.
    let mut tablet = V4::connect(
        &gw,
        Via::Tcp,
        "tablet",
        Some(&gw.token("alice", "tablet", Platform::Android)),
        |_| {},
    )
    .await
    .unwrap();
    tablet
        .subscribe("u/alice/d/tablet/reply", QoS::AtLeastOnce)
        .await;
    tablet.message_on("u/alice/d/tablet/reply").await;
    let status = decide_over_http(&gw, "alice", "tablet", false).await;
    assert_eq!(status, 204);
    assert_eq!(
        tablet.message_on("u/alice/d/tablet/reply").await,
        json!({"type": "denied"})
    );
    tablet.inbox.closed().await;
    let status = decide_over_http(&gw, "alice", "phone", true).await;
    assert_eq!(status, 404, "only waiting devices can be decided");

    // Approval is remembered: the laptop comes back without waiting.
    drop(laptop);
    let mut again = V4::connect(
        &gw,
        Via::Tcp,
        "laptop2",
        Some(&gw.token("alice", "laptop", Platform::Desktop)),
        |_| {},
    )
    .await
    .unwrap();
    again.subscribe("u/alice/inbox", QoS::AtLeastOnce).await;
    gw.post_message("alice", json!({"n": 3})).await;
    assert_eq!(again.message_on("u/alice/inbox").await["body"]["n"], 3);
}

#[tokio::test]
async fn the_device_policy_applies_when_a_new_device_is_approved() {
    let options = Options::default()
        .with("SESSIONS__NEW_DEVICE_APPROVAL", "true")
        .with("SESSIONS__DEVICE_POLICY", "one_per_class");
    let gw = TestGateway::start_with(options).await;
    let mut old_phone = watcher(&gw, "alice", "iphone", Platform::Ios).await;
    let mut new_phone = V4::connect(
        &gw,
        Via::Tcp,
        "android",
        Some(&gw.token("alice", "android", Platform::Android)),
        |_| {},
    )
    .await
    .unwrap();
    new_phone
        .subscribe("u/alice/d/android/reply", QoS::AtLeastOnce)
        .await;
    new_phone.message_on("u/alice/d/android/reply").await;
    assert_eq!(
        old_phone.message_on("u/alice/presence").await["type"],
        "approval_request"
    );
    assert_eq!(
        gw.devices("alice").await,
        vec!["android", "iphone"],
        "a pending login kicks no one"
    );

    old_phone
        .publish(
            "u/alice/d/iphone/approve",
            r#"{"device":"android","approve":true}"#,
            QoS::AtLeastOnce,
        )
        .await;
    assert_eq!(
        new_phone.message_on("u/alice/d/android/reply").await,
        json!({"type": "approved"})
    );
    let kicked = old_phone
        .inbox
        .wait_for("the kick", |i| match i {
            e2e::mqtt::Incoming::Packet(rumqttc::Packet::Publish(p)) => {
                let event: serde_json::Value = serde_json::from_slice(&p.payload).ok()?;
                (event["type"] == "kicked").then_some(event)
            }
            _ => None,
        })
        .await;
    assert_eq!(kicked["device"], "iphone");
    old_phone.inbox.closed().await;
    assert_eq!(gw.devices("alice").await, vec!["android"]);
}
