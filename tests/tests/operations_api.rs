//! The routes the operations console reads, as scripts call them (`/v1/stats`, `/v1/nodes`,
//! `/v1/users/{user}/recent`, `/v1/users/{user}/preferences`), and the web pages' switches:
//! `/dev/tokens` only in dev mode, the demo and the console where configured.

use e2e::mqtt::{Via, V4};
use e2e::{Options, TestGateway};
use protocol::envelope::Platform;
use reqwest::Method;
use rumqttc::QoS;
use serde_json::{json, Value};
use std::time::Duration;

async fn get(gw: &TestGateway, path: &str) -> u16 {
    reqwest::get(gw.url(path)).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn dev_tokens_are_refused_outside_dev_mode_and_sign_in_within_it() {
    // A gateway given any setting is outside dev mode unless it asks for it.
    let gw = TestGateway::start().await;
    let asked = json!({"user": "alice", "device": "web", "platform": "web"});
    let refused = reqwest::Client::new()
        .post(gw.url("/dev/tokens"))
        .json(&asked)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 403);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden", "{body}");
    assert_eq!(get(&gw, "/").await, 404, "no demo outside dev mode");
    assert_eq!(
        get(&gw, "/console").await,
        200,
        "the console page is served"
    );

    let dev = TestGateway::start_with(Options::default().with("WEB__DEV_MODE", "true")).await;
    assert_eq!(get(&dev, "/").await, 200);
    assert_eq!(get(&dev, "/web/demo.js").await, 200);
    let client = reqwest::Client::new();
    let signed: Value = client
        .post(dev.url("/dev/tokens"))
        .json(&asked)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = signed["token"].as_str().expect("a token");
    V4::connect(&dev, Via::Tcp, "alice-web", Some(token), |_| {})
        .await
        .expect("the dev token signs in");
    let bad = client
        .post(dev.url("/dev/tokens"))
        .json(&json!({"user": "a/b", "device": "web"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);

    let quiet = TestGateway::start_with(Options::default().with("WEB__CONSOLE", "false")).await;
    assert_eq!(get(&quiet, "/console").await, 404);
}

#[tokio::test]
async fn stats_and_nodes_show_this_node_its_connections_and_queues() {
    let gw = TestGateway::start().await;
    let token = gw.token("alice", "phone", Platform::Ios);
    let _phone = V4::connect(&gw, Via::Tcp, "alice-phone", Some(&token), |_| {})
        .await
        .unwrap();
    gw.post_message("alice", json!({"text": "hi"})).await;

    // Samples are taken every second: wait for the first that saw the message stored.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let stats = loop {
        let (status, stats) = gw.api(Method::GET, "/v1/stats", None).await;
        assert_eq!(status, 200, "{stats}");
        let samples = stats["samples"].as_array().unwrap();
        if samples.iter().any(|s| s["stored"].as_f64() > Some(0.0)) {
            break stats;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no sample saw the message stored: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(stats["connections"]["mqtt"], 1, "{stats}");
    assert_eq!(stats["connections"]["json_ws"], 0, "{stats}");
    assert_eq!(stats["store_queue_max"], 65536);
    assert!(stats["store_queue"].is_u64() && stats["ledger_queue"].is_u64());
    assert_eq!(stats["sample_every_ms"], 1000);
    let samples = stats["samples"].as_array().unwrap();
    assert!(!samples.is_empty(), "{stats}");
    let stored: f64 = samples.iter().map(|s| s["stored"].as_f64().unwrap()).sum();
    assert!(
        stored > 0.0,
        "the stored message shows in a sample: {stats}"
    );

    let (status, nodes) = gw.api(Method::GET, "/v1/nodes", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        nodes,
        json!({"nodes": [{"node": "local", "this": true, "alive": true}]})
    );

    let unauthorized = reqwest::get(gw.url("/v1/stats")).await.unwrap();
    assert_eq!(unauthorized.status().as_u16(), 401);
}

#[tokio::test]
async fn a_users_recent_entries_are_metadata_unless_bodies_are_allowed() {
    let gw = TestGateway::start().await;
    let token = gw.token("bob", "phone", Platform::Android);
    let phone = V4::connect(&gw, Via::Tcp, "bob-phone", Some(&token), |_| {})
        .await
        .unwrap();
    for text in ["one", "two", "three"] {
        gw.post_message("bob", json!({"text": text})).await;
    }
    phone
        .publish(
            "u/bob/d/phone/send",
            json!({"to": "bob", "body": {"text": "four"}}).to_string(),
            QoS::AtLeastOnce,
        )
        .await;
    // The publish returns once sent, the notification once queued: each is waited for in the
    // log, so that they take their sequence numbers in this order.
    wait_for_entry(&gw, "bob", 4).await;
    let notified = gw
        .api(
            Method::POST,
            "/v1/notifications",
            Some(json!({"user": "bob", "kind": "social_interaction", "title": "t", "body": "b"})),
        )
        .await;
    assert_eq!(notified.0, 202, "{}", notified.1);
    wait_for_entry(&gw, "bob", 5).await;

    let (status, recent) = gw
        .api(Method::GET, "/v1/users/bob/recent?limit=3", None)
        .await;
    assert_eq!(status, 200, "{recent}");
    let entries = recent["entries"].as_array().unwrap();
    let seqs: Vec<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [5, 4, 3], "the latest, newest first");
    assert_eq!(entries[0]["kind"], "notification");
    assert_eq!(entries[1]["kind"], "message");
    assert_eq!(entries[1]["from_device"], "phone");
    assert_eq!(
        entries[1]["bytes"],
        json!({"text": "four"}).to_string().len()
    );
    assert!(entries.iter().all(|e| e.get("body").is_none()), "{recent}");
    let (status, refused) = gw
        .api(Method::GET, "/v1/users/bob/recent?limit=0", None)
        .await;
    assert_eq!(
        (status, &refused["error"]["code"]),
        (400, &json!("invalid_request"))
    );
    let (status, _) = gw.api(Method::GET, "/v1/users/b%20b/recent", None).await;
    assert_eq!(status, 400);

    let open = TestGateway::start_with(Options::default().with("WEB__SHOW_BODIES", "true")).await;
    open.post_message("bob", json!({"text": "shown"})).await;
    let (_, recent) = open.api(Method::GET, "/v1/users/bob/recent", None).await;
    assert_eq!(recent["entries"][0]["body"], json!({"text": "shown"}));
}

#[tokio::test]
async fn preferences_read_back_what_was_set() {
    let gw = TestGateway::start().await;
    let (_, none) = gw
        .api(Method::GET, "/v1/users/carol/preferences", None)
        .await;
    assert_eq!(none["quiet_hours"], Value::Null);
    assert_eq!(none["consent"], json!({"wechat": false, "qiuqiu": false}));
    let hours =
        json!({"time_zone": "Asia/Shanghai", "windows": [{"start": "22:00", "end": "07:00"}]});
    for (path, body) in [
        ("quiet-hours", hours.clone()),
        ("consent", json!({"qiuqiu": true})),
        ("bindings", json!({"qiuqiu_devices": ["cid-1"]})),
    ] {
        let (status, answer) = gw
            .api(Method::PUT, &format!("/v1/users/carol/{path}"), Some(body))
            .await;
        assert_eq!(status, 200, "{path}: {answer}");
    }
    let (status, kept) = gw
        .api(Method::GET, "/v1/users/carol/preferences", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(kept["quiet_hours"], hours);
    assert_eq!(kept["consent"], json!({"wechat": false, "qiuqiu": true}));
    assert_eq!(kept["bindings"]["qiuqiu_devices"], json!(["cid-1"]));
}

/// Waits until `user`'s log holds entry `seq`, as `GET /v1/users/{user}/recent` shows it.
async fn wait_for_entry(gw: &TestGateway, user: &str, seq: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, recent) = (gw)
            .api(
                Method::GET,
                &format!("/v1/users/{user}/recent?limit=1"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{recent}");
        if recent["entries"][0]["seq"].as_u64() >= Some(seq) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "entry {seq} of {user}'s log did not come: {recent}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
