//! `[rate_limits]`: a device that sends faster than its bucket allows is refused with a time to
//! retry on every transport (MQTT 5 PUBACK 0x97 and a `rate_limited` reply, JSON `rate_limited`
//! with `retry_after_ms`), an API key past its bucket gets 429 with `Retry-After`, a device's
//! second sync while its first is answered is refused, and other clients go on unaffected.
//!
//! The rates are small so that a refill takes well under a second; no assertion depends on how
//! fast anything runs: a burst is sent before any token could come back only where the test
//! counts on it, and waits are the ones the gateway names.

use e2e::device::Device;
use e2e::json_ws::JsonClient;
use e2e::mqtt::{Incoming, Via, V5};
use e2e::{Options, TestGateway};
use protocol::envelope::Platform;
use rumqttc::v5::mqttbytes::v5 as v5p;
use rumqttc::v5::mqttbytes::QoS;
use serde_json::{json, Value};
use std::time::Duration;

/// The next reply on `topic` whose `type` is `kind`.
async fn reply_on(client: &mut V5, topic: &str, kind: &str) -> Value {
    loop {
        let reply = client.message_on(topic).await;
        if reply["type"] == kind {
            return reply;
        }
    }
}

#[tokio::test]
async fn an_mqtt_5_device_flooding_sends_is_refused_after_its_burst_and_others_go_on() {
    const BURST: usize = 5;
    const FLOOD: usize = 40;
    let gw = TestGateway::start_with(
        Options::default()
            .rate_limited()
            .with("RATE_LIMITS__SEND", "{ per_second = 2, burst = 5 }"),
    )
    .await;
    let mut bob = Device::connect(&gw, "bob", "phone", Platform::Android).await;
    let token = gw.token("alice", "phone", Platform::Ios);
    let (mut alice, _) = V5::connect(&gw, Via::Tcp, "alice-phone", Some(&token), |_| {})
        .await
        .expect("alice connects");
    let reply = "u/alice/d/phone/reply";
    alice.subscribe(reply, QoS::AtLeastOnce).await;

    // Every send goes out before any PUBACK is read.
    for n in 0..FLOOD {
        let request = json!({"to": "bob", "body": {"n": n}}).to_string();
        alice
            .publish("u/alice/d/phone/send", request, QoS::AtLeastOnce)
            .await;
    }
    let mut answers = Vec::new();
    for _ in 0..FLOOD {
        answers.push(alice.puback().await);
    }
    assert!(
        answers[..BURST]
            .iter()
            .all(|a| *a == v5p::PubAckReason::Success),
        "the burst is taken: {answers:?}"
    );
    let taken = answers
        .iter()
        .filter(|a| **a == v5p::PubAckReason::Success)
        .count();
    let refused = answers
        .iter()
        .filter(|a| **a == v5p::PubAckReason::QuotaExceeded)
        .count();
    assert!(refused > 0, "the rest is refused: {answers:?}");
    assert_eq!(taken + refused, FLOOD, "{answers:?}");
    let error = reply_on(&mut alice, reply, "error").await;
    assert_eq!(error["code"], "rate_limited", "{error}");
    assert_eq!(error["action"], "send", "{error}");
    let retry_after = error["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!((1..=500).contains(&retry_after), "{error}");

    // What was taken reached bob, in order, and nothing else.
    let taken_ns = (answers.iter().enumerate())
        .filter(|(_, a)| **a == v5p::PubAckReason::Success)
        .map(|(n, _)| n as u64);
    for n in taken_ns {
        assert_eq!(bob.next_message().await.body["n"], n);
    }
    // Another device, of alice or of another user, is not held back by alice's phone.
    let carol = Device::connect(&gw, "carol", "phone", Platform::Android).await;
    carol.send("bob", json!({"from": "carol"})).await;
    assert_eq!(bob.next_message().await.body["from"], "carol");
    let laptop = Device::connect(&gw, "alice", "laptop", Platform::Desktop).await;
    laptop.send("bob", json!({"from": "laptop"})).await;
    assert_eq!(bob.next_message().await.body["from"], "laptop");

    // After the wait the gateway named, the phone sends again.
    tokio::time::sleep(Duration::from_millis(retry_after)).await;
    let request = json!({"to": "bob", "body": {"again": true}}).to_string();
    alice
        .publish("u/alice/d/phone/send", request, QoS::AtLeastOnce)
        .await;
    assert_eq!(alice.puback().await, v5p::PubAckReason::Success);
    assert_eq!(bob.next_message().await.body["again"], true);
    assert!(
        gw.metric("gateway_rate_limited_total{kind=\"send\"}").await >= refused as f64,
        "refusals are counted"
    );
}

/// MQTT 3.1.1 has no reason codes: the publish is answered as taken, dropped, and the device
/// told on its reply topic, as for every refused device request.
#[tokio::test]
async fn an_mqtt_3_1_1_device_is_told_on_its_reply_topic() {
    let gw = TestGateway::start_with(
        Options::default()
            .rate_limited()
            .with("RATE_LIMITS__SIGNAL", "{ per_second = 1, burst = 1 }"),
    )
    .await;
    let mut phone = Device::connect(&gw, "alice", "phone", Platform::Android).await;
    for typing in [true, false, true] {
        phone.signal("bob", json!({ "typing": typing })).await;
    }
    let error = phone.mqtt.message_on("u/alice/d/phone/reply").await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["code"], "rate_limited", "{error}");
    assert_eq!(error["action"], "signal", "{error}");
    assert!(error["retry_after_ms"].as_u64().is_some(), "{error}");
}

#[tokio::test]
async fn a_json_device_is_told_rate_limited_with_when_to_retry() {
    let gw = TestGateway::start_with(
        Options::default()
            .rate_limited()
            .with("RATE_LIMITS__SEND", "{ per_second = 4, burst = 2 }")
            .with("RATE_LIMITS__ACK", "{ per_second = 1, burst = 1 }"),
    )
    .await;
    let token = gw.token("alice", "web", Platform::Web);
    let mut web = JsonClient::authenticated(&gw, &token).await;
    let send = || {
        json!({"op": "pub", "topic": "u/alice/d/web/send",
               "payload": {"to": "bob", "body": {"text": "hi"}}})
    };
    for _ in 0..2 {
        let ok = web.request(send()).await;
        assert_eq!(ok["op"], "ok", "{ok}");
    }
    let refused = web.request(send()).await;
    assert_eq!(refused["op"], "error", "{refused}");
    assert_eq!(refused["code"], "rate_limited", "{refused}");
    let retry_after = refused["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!((1..=250).contains(&retry_after), "{refused}");

    // Acks have their own bucket.
    assert_eq!(
        web.request(json!({"op": "ack", "seq": 1})).await["op"],
        "ok"
    );
    let ack = web.request(json!({"op": "ack", "seq": 1})).await;
    assert_eq!(ack["code"], "rate_limited", "{ack}");

    tokio::time::sleep(Duration::from_millis(retry_after)).await;
    let ok = web.request(send()).await;
    assert_eq!(ok["op"], "ok", "sent again after the wait: {ok}");
}

#[tokio::test]
async fn an_api_key_past_its_bucket_gets_429_with_retry_after() {
    let gw = TestGateway::start_with(
        Options::default()
            .rate_limited()
            .with("RATE_LIMITS__API_KEY", "{ per_second = 2, burst = 3 }"),
    )
    .await;
    let http = reqwest::Client::new();
    let get = || {
        http.get(gw.url("/v1/users/alice/devices"))
            .bearer_auth(&gw.api_key)
            .send()
    };
    for _ in 0..3 {
        assert_eq!(get().await.unwrap().status(), 200);
    }
    let refused = get().await.unwrap();
    assert_eq!(refused.status(), 429);
    let retry_after = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(retry_after, "1", "whole seconds, rounded up");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    let retry_after_ms = body["error"]["retry_after_ms"].as_u64().expect("ms");
    assert!((1..=500).contains(&retry_after_ms), "{body}");
    // A key nobody knows is refused as before, not counted against the bucket.
    let unknown = http
        .get(gw.url("/v1/users/alice/devices"))
        .bearer_auth("not-a-key-of-this-gateway")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 401);
    assert!(
        gw.metric("gateway_rate_limited_total{kind=\"api_key\"}")
            .await
            >= 1.0
    );

    tokio::time::sleep(Duration::from_millis(retry_after_ms)).await;
    assert_eq!(get().await.unwrap().status(), 200, "after the wait");
}

/// The first sync cannot finish while its pages wait for the device: one page of one message
/// in flight (the device does not acknowledge it), the outbox full behind it. A second sync
/// meanwhile is refused; once the device took every page, it may sync again.
#[tokio::test]
async fn a_second_sync_while_the_first_is_answered_is_refused() {
    const MESSAGES: usize = 30;
    let gw = TestGateway::start_with(
        Options::default()
            .rate_limited()
            .with("ROAMING__PAGE_SIZE", "1")
            .with("LIMITS__MAX_INFLIGHT", "1")
            .with("LIMITS__OUTBOX_CAPACITY", "16"),
    )
    .await;
    for n in 0..MESSAGES {
        gw.post_message("alice", json!({"n": n})).await;
    }
    let token = gw.token("alice", "phone", Platform::Ios);
    let (mut phone, _) = V5::connect(&gw, Via::Tcp, "alice-phone", Some(&token), |options| {
        options.set_manual_acks(true);
    })
    .await
    .expect("alice connects");
    let reply = "u/alice/d/phone/reply";
    // At QoS 0 the refusal's reply is dropped rather than queued behind the pages (it would
    // overflow the outbox): the PUBACK says it.
    phone.subscribe(reply, QoS::AtMostOnce).await;
    let sync = "u/alice/d/phone/sync";
    phone.publish(sync, "{}", QoS::AtLeastOnce).await;
    assert_eq!(phone.puback().await, v5p::PubAckReason::Success);
    let first_page = next_page(&mut phone).await;

    phone.publish(sync, "{}", QoS::AtLeastOnce).await;
    assert_eq!(
        phone.puback().await,
        v5p::PubAckReason::QuotaExceeded,
        "a sync is being answered"
    );
    assert!(
        gw.metric("gateway_rate_limited_total{kind=\"sync_in_flight\"}")
            .await
            >= 1.0
    );

    // Taking every page ends the first sync.
    let mut page = first_page;
    let mut seen = 0;
    loop {
        seen += 1;
        phone.client.ack(&page).await.unwrap();
        let body: Value = serde_json::from_slice(&page.payload).unwrap();
        if body["more"] == false {
            break;
        }
        page = next_page(&mut phone).await;
    }
    assert!(seen >= MESSAGES, "a page per message: {seen}");
    // The gateway lets go of the sync once its last page is handed on; the device cannot see
    // that moment, so it asks until the answer is not "busy" (as an app would, on its reply).
    let deadline = tokio::time::Instant::now() + e2e::PATIENCE;
    loop {
        phone.publish(sync, "{}", QoS::AtLeastOnce).await;
        match phone.puback().await {
            v5p::PubAckReason::Success => break,
            other => assert!(
                tokio::time::Instant::now() < deadline,
                "still refused: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next sync page on the phone's reply topic, unacknowledged.
async fn next_page(phone: &mut V5) -> v5p::Publish {
    phone
        .inbox
        .wait_for("a sync page", |i| match i {
            Incoming::Packet(v5p::Packet::Publish(p))
                if p.topic == "u/alice/d/phone/reply".as_bytes() =>
            {
                let body: Value = serde_json::from_slice(&p.payload).ok()?;
                (body["type"] == "sync").then(|| p.clone())
            }
            _ => None,
        })
        .await
}
