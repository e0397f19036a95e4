//! Exactly-once sends through the real binary: a message sent again with the same client
//! message id (`client_msg_id` over MQTT and the JSON bridge, `Idempotency-Key` over HTTP)
//! within `roaming.idempotency_window` is answered as the first and stored once, also after
//! the gateway was killed and restarted.

use e2e::device::Device;
use e2e::json_ws::JsonClient;
use e2e::mqtt::{Via, V5};
use e2e::TestGateway;
use protocol::envelope::Platform;
use reqwest::Method;
use rumqttc::v5::mqttbytes::v5::PubAckReason;
use rumqttc::v5::mqttbytes::QoS as Q5;
use rumqttc::QoS;
use serde_json::{json, Value};

/// `POST /v1/messages` from the shop to `to` with `Idempotency-Key: key`: the status, whether
/// the answer says it replays an earlier one, and its body.
async fn post_keyed(gw: &TestGateway, to: &str, text: &str, key: &str) -> (u16, bool, Value) {
    let response = reqwest::Client::new()
        .post(gw.url("/v1/messages"))
        .bearer_auth(&gw.api_key)
        .header("Idempotency-Key", key)
        .json(&json!({"to": to, "from": "shop", "body": {"text": text}}))
        .send()
        .await
        .expect("HTTP request");
    let status = response.status().as_u16();
    let replayed = (response.headers().get("idempotent-replayed")).is_some_and(|v| v == "true");
    (
        status,
        replayed,
        response.json().await.unwrap_or(Value::Null),
    )
}

/// The texts in `user`'s log, as the history API serves them.
async fn texts(gw: &TestGateway, user: &str) -> Vec<String> {
    let path = format!("/v1/users/{user}/messages");
    let (status, page) = gw.api(Method::GET, &path, None).await;
    assert_eq!(status, 200, "{page}");
    let messages = page["messages"].as_array().expect("messages");
    (messages.iter())
        .map(|m| m["body"]["text"].as_str().expect("a text").to_string())
        .collect()
}

/// What a device publishes on its send topic to send `text` to `to` with client message id `id`.
fn send_request(to: &str, text: &str, id: &str) -> String {
    json!({"to": to, "body": {"text": text}, "client_msg_id": id}).to_string()
}

/// An MQTT 5 device, which hears in each PUBACK how its send went.
async fn v5_device(gw: &TestGateway, user: &str, device: &str) -> V5 {
    let token = gw.token(user, device, Platform::Ios);
    let client_id = format!("{user}-{device}");
    let (client, _) = V5::connect(gw, Via::Tcp, &client_id, Some(&token), |_| {})
        .await
        .expect("the device connects");
    client
}

#[tokio::test]
async fn an_idempotency_key_stores_a_posted_message_once() {
    let gw = TestGateway::start().await;
    let (status, replayed, first) = post_keyed(&gw, "nina", "order shipped", "order-42").await;
    assert_eq!((status, replayed), (202, false), "{first}");
    let (status, replayed, again) = post_keyed(&gw, "nina", "order shipped", "order-42").await;
    assert_eq!((status, replayed), (202, true), "{again}");
    assert_eq!(again, first, "the first answer: its id, seq and ts");
    assert_eq!(texts(&gw, "nina").await, ["order shipped"]);

    // The same key to another user is another message.
    let (status, replayed, other) = post_keyed(&gw, "omar", "order shipped", "order-42").await;
    assert_eq!(
        (status, replayed, other["seq"].clone()),
        (202, false, json!(1))
    );

    let too_long = "k".repeat(129);
    for bad in ["", "two words", too_long.as_str()] {
        let (status, _, body) = post_keyed(&gw, "nina", "refused", bad).await;
        let code = body["error"]["code"].as_str();
        assert_eq!(
            (status, code),
            (400, Some("invalid_request")),
            "{bad:?}: {body}"
        );
    }
    assert_eq!(texts(&gw, "nina").await, ["order shipped"]);
}

#[tokio::test]
async fn a_client_msg_id_sent_again_is_stored_once_in_both_logs() {
    let gw = TestGateway::start().await;
    let phone = Device::connect(&gw, "alice", "phone", Platform::Ios).await;
    let mut laptop = Device::connect(&gw, "alice", "laptop", Platform::Desktop).await;
    let mut bob = Device::connect(&gw, "bob", "phone", Platform::Android).await;
    for _ in 0..2 {
        let request = send_request("bob", "hi bob", "c-1");
        (phone
            .mqtt
            .publish("u/alice/d/phone/send", request, QoS::AtLeastOnce))
        .await;
    }
    let received = bob.next_message().await;
    assert_eq!(
        (received.seq, received.body),
        (1, json!({"text": "hi bob"}))
    );
    assert_eq!(laptop.next_message().await.id, received.id);
    bob.mqtt.no_message_on("u/bob/inbox").await;
    laptop.mqtt.no_message_on("u/alice/inbox").await;
    assert_eq!(texts(&gw, "bob").await, ["hi bob"]);
    assert_eq!(texts(&gw, "alice").await, ["hi bob"]);

    // The id is the user's, whichever device sends it again; an id that is not one is refused.
    let mut tablet = v5_device(&gw, "alice", "tablet").await;
    let resent = send_request("bob", "hi bob", "c-1");
    tablet
        .publish("u/alice/d/tablet/send", resent, Q5::AtLeastOnce)
        .await;
    assert_eq!(tablet.puback().await, PubAckReason::Success);
    let bad = send_request("bob", "refused", "two words");
    tablet
        .publish("u/alice/d/tablet/send", bad, Q5::AtLeastOnce)
        .await;
    assert_eq!(tablet.puback().await, PubAckReason::PayloadFormatInvalid);

    // The JSON bridge publishes on the same topics, with the same answers.
    let token = gw.token("alice", "browser", Platform::Web);
    let mut web = JsonClient::authenticated(&gw, &token).await;
    let publish = |id: &str| {
        let payload =
            json!({"to": "bob", "body": {"text": "from the browser"}, "client_msg_id": id});
        json!({"op": "pub", "topic": "u/alice/d/browser/send", "payload": payload})
    };
    for _ in 0..2 {
        assert_eq!(web.request(publish("c-2")).await["op"], "ok");
    }
    let refused = web.request(publish("")).await;
    assert_eq!(
        (refused["op"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("invalid_request")),
        "{refused}"
    );
    assert_eq!(texts(&gw, "bob").await, ["hi bob", "from the browser"]);
    assert_eq!(texts(&gw, "alice").await, ["hi bob", "from the browser"]);
}

#[tokio::test]
async fn a_repeat_after_a_kill_and_restart_is_still_recognized() {
    let gw = TestGateway::start().await;
    let mut phone = v5_device(&gw, "carl", "phone").await;
    let request = send_request("dana", "before the crash", "c-7");
    phone
        .publish("u/carl/d/phone/send", request.clone(), Q5::AtLeastOnce)
        .await;
    assert_eq!(phone.puback().await, PubAckReason::Success);
    let (_, _, posted) = post_keyed(&gw, "dana", "from the shop", "shop-7").await;
    drop(phone);

    let data = gw.stop().await; // SIGKILL: nothing is flushed or said
    let gw = TestGateway::try_start(Default::default(), data)
        .await
        .expect("restart on the same data dir");
    let mut phone = v5_device(&gw, "carl", "phone").await;
    phone
        .publish("u/carl/d/phone/send", request, Q5::AtLeastOnce)
        .await;
    assert_eq!(phone.puback().await, PubAckReason::Success);
    let (status, replayed, again) = post_keyed(&gw, "dana", "from the shop", "shop-7").await;
    assert_eq!((status, replayed, again), (202, true, posted));
    assert_eq!(
        texts(&gw, "dana").await,
        ["before the crash", "from the shop"]
    );
    assert_eq!(texts(&gw, "carl").await, ["before the crash"]);
}
