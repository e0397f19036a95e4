//! Traffic recording (`[record] path`) and `loadtest replay`, against the real gateway: what a
//! recording holds (and never holds), that the shipped sample replays cleanly against a fresh
//! gateway, and that a replay whose checks fail exits non-zero naming the failure.
//!
//! It is long because recording and replay are one round trip: the conversation the recording
//! test makes (`chat`) is what the shipped sample, which the replay tests play back, is recorded
//! from.
//!
//! The sample `loadtest/samples/chat.jsonl` is made by the ignored test `record_the_sample`:
//! `cargo build -p gateway -p loadtest && cargo test -p e2e --test record_replay -- --ignored`.
//! The `loadtest` binary is found beside the gateway's (`scripts/test` builds both).

use e2e::gateway::binary;
use e2e::json_ws::JsonClient;
use e2e::mqtt::{Via, V4};
use e2e::{Options, TestGateway, PATIENCE};
use protocol::envelope::Platform;
use reqwest::Method;
use rumqttc::QoS;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// The shipped sample recording.
fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../loadtest/samples/chat.jsonl")
}

/// A gateway recording its traffic into `path`.
async fn recording_gateway(path: &Path) -> TestGateway {
    TestGateway::start_with(
        Options::default()
            .with("RECORD__PATH", path.to_str().unwrap())
            .with("RECORD__PAYLOADS", "true"),
    )
    .await
}

/// An MQTT 3.1.1 device of `user`, subscribed to `topics` (each must be granted).
async fn mqtt_device(
    gw: &TestGateway,
    via: Via,
    user: &str,
    device: &str,
    platform: Platform,
    topics: &[String],
) -> (V4, String) {
    let token = gw.token(user, device, platform);
    let mut client = V4::connect(gw, via, &format!("{user}-{device}"), Some(&token), |o| {
        o.set_max_packet_size(1 << 20, 1 << 20);
    })
    .await
    .expect("the device connects");
    for topic in topics {
        let granted = client.subscribe(topic, QoS::AtLeastOnce).await;
        assert!(
            matches!(granted[..], [rumqttc::SubscribeReasonCode::Success(_)]),
            "{topic}: {granted:?}"
        );
    }
    (client, token)
}

/// A JSON WebSocket device of `user`, subscribed to `topics`.
async fn web_device(gw: &TestGateway, user: &str, topics: &[String]) -> (JsonClient, String) {
    let token = gw.token(user, "web", Platform::Web);
    let mut client = JsonClient::authenticated(gw, &token).await;
    for topic in topics {
        let answer = client.request(json!({"op": "sub", "topic": topic})).await;
        assert_eq!(answer["op"], "ok", "{topic}: {answer}");
    }
    (client, token)
}

/// Waits for the message whose body says `text` on `topic` (a sender's other devices also get
/// copies of what it sends, so the first message on an inbox may be another).
async fn mqtt_receives(client: &mut V4, topic: &str, text: &str) {
    while client.message_on(topic).await["body"]["text"] != text {}
}

async fn web_receives(client: &mut JsonClient, topic: &str, text: &str) {
    client
        .frame_where(|f| {
            f["op"] == "msg" && f["topic"] == topic && f["payload"]["body"]["text"] == text
        })
        .await;
}

async fn api_accepts(gw: &TestGateway, path: &str, body: Value) {
    let (status, answer) = gw.api(Method::POST, path, Some(body)).await;
    assert_eq!(status, 202, "POST {path}: {answer}");
}

/// A small chat between three users with two devices each (MQTT over TCP and WebSocket, and
/// the JSON WebSocket), device sends, a sync, backend messages and a notification, with `pause`
/// between steps; every device disconnects at the end. Returns the tokens it used.
async fn chat(gw: &TestGateway, pause: Duration) -> Vec<String> {
    let inbox = |user: &str| format!("u/{user}/inbox");
    let (alice_phone, t1) = mqtt_device(
        gw,
        Via::Tcp,
        "alice",
        "phone",
        Platform::Ios,
        &[inbox("alice"), "u/alice/d/phone/reply".into()],
    )
    .await;
    let (mut alice_web, t2) =
        web_device(gw, "alice", &[inbox("alice"), "u/alice/notify".into()]).await;
    let (mut bob_phone, t3) = mqtt_device(
        gw,
        Via::Tcp,
        "bob",
        "phone",
        Platform::Android,
        &[inbox("bob")],
    )
    .await;
    let (bob_laptop, t4) = mqtt_device(
        gw,
        Via::Ws,
        "bob",
        "laptop",
        Platform::Desktop,
        &[inbox("bob"), "u/bob/presence".into()],
    )
    .await;
    let (mut carol_phone, t5) = mqtt_device(
        gw,
        Via::Tcp,
        "carol",
        "phone",
        Platform::Ios,
        &[inbox("carol")],
    )
    .await;
    let (mut carol_web, t6) = web_device(gw, "carol", &[inbox("carol")]).await;
    tokio::time::sleep(pause).await;

    let hi_bob = json!({"to": "bob", "body": {"text": "hi bob"}});
    alice_phone
        .publish("u/alice/d/phone/send", hi_bob.to_string(), QoS::AtLeastOnce)
        .await;
    mqtt_receives(&mut bob_phone, &inbox("bob"), "hi bob").await;
    tokio::time::sleep(pause).await;

    let hi_alice = json!({"to": "alice", "body": {"text": "hi alice"}});
    bob_laptop
        .publish(
            "u/bob/d/laptop/send",
            hi_alice.to_string(),
            QoS::AtLeastOnce,
        )
        .await;
    web_receives(&mut alice_web, &inbox("alice"), "hi alice").await;
    tokio::time::sleep(pause).await;

    let lunch = json!({"op": "pub", "topic": "u/carol/d/web/send", "payload": {"to": "alice", "body": {"text": "lunch?"}}});
    assert_eq!(carol_web.request(lunch).await["op"], "ok");
    web_receives(&mut alice_web, &inbox("alice"), "lunch?").await;
    tokio::time::sleep(pause).await;

    let shipped = json!({"to": "carol", "from": "shop", "body": {"text": "your order shipped"}});
    api_accepts(gw, "/v1/messages", shipped).await;
    mqtt_receives(&mut carol_phone, &inbox("carol"), "your order shipped").await;
    tokio::time::sleep(pause).await;

    let friend_request = json!({"user": "alice", "kind": "friend_request", "title": "carol wants to be friends", "body": "accept?", "data": {"from": "carol"}});
    api_accepts(gw, "/v1/notifications", friend_request).await;
    alice_web.message_on("u/alice/notify").await;
    tokio::time::sleep(pause).await;

    alice_phone
        .publish("u/alice/d/phone/sync", r#"{"after": 0}"#, QoS::AtLeastOnce)
        .await;
    let unsub = json!({"op": "unsub", "topic": inbox("carol")});
    assert_eq!(carol_web.request(unsub).await["op"], "ok");
    tokio::time::sleep(pause).await;

    api_accepts(
        gw,
        "/v1/messages",
        json!({"to": "bob", "from": "game", "body": {"text": "your turn"}}),
    )
    .await;
    mqtt_receives(&mut bob_phone, &inbox("bob"), "your turn").await;
    tokio::time::sleep(pause).await;

    for client in [&alice_phone, &bob_phone, &bob_laptop, &carol_phone] {
        client.client.disconnect().await.expect("disconnect");
    }
    drop((alice_web, carol_web));
    vec![t1, t2, t3, t4, t5, t6]
}

/// The lines of the recording at `path` once it holds a disconnect for every connect and at
/// least `api_calls` API calls (the writer flushes every 100 ms).
async fn recorded(path: &Path, api_calls: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("every line is JSON"))
            .collect();
        let count = |event: &str| lines.iter().filter(|l| l["event"] == event).count();
        if count("connect") > 0
            && count("connect") == count("disconnect")
            && count("api") >= api_calls
        {
            return lines;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the recording is incomplete: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn recording_captures_sessions_publishes_and_api_calls_and_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traffic.jsonl");
    let gw = recording_gateway(&path).await;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "readable by the gateway's user only");

    // What the gateway refuses is not recorded: a subscription to another user's inbox, a
    // publish on another user's topic, a malformed message, an API call with a bad body.
    let (mut mallory, mallory_token) =
        mqtt_device(&gw, Via::Tcp, "mallory", "phone", Platform::Android, &[]).await;
    let refused = mallory.subscribe("u/bob/inbox", QoS::AtLeastOnce).await;
    assert_eq!(refused, [rumqttc::SubscribeReasonCode::Failure]);
    mallory
        .publish(
            "u/bob/d/phone/send",
            r#"{"to": "bob", "body": {}}"#,
            QoS::AtMostOnce,
        )
        .await;
    mallory
        .publish("u/mallory/d/phone/send", "not JSON", QoS::AtLeastOnce)
        .await;
    let (status, _) = gw
        .api(
            Method::POST,
            "/v1/messages",
            Some(json!({"to": "not a user!", "body": {}})),
        )
        .await;
    assert_eq!(status, 400);
    mallory.client.disconnect().await.unwrap();

    let mut tokens = chat(&gw, Duration::from_millis(20)).await;
    tokens.push(mallory_token);
    let lines = recorded(&path, 3).await;

    assert_eq!(lines[0]["recording"], "gateway");
    assert_eq!(lines[0]["version"], 1);
    let events = &lines[1..];
    let times: Vec<u64> = events.iter().map(|e| e["t_ms"].as_u64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    let of = |kind: &str| -> Vec<&Value> { events.iter().filter(|e| e["event"] == kind).collect() };

    let connects = of("connect");
    assert_eq!(connects.len(), 7, "{connects:?}");
    let mut transports: Vec<&str> = connects
        .iter()
        .map(|c| c["transport"].as_str().unwrap())
        .collect();
    transports.sort();
    transports.dedup();
    assert_eq!(transports, ["json_ws", "mqtt", "mqtt_ws"]);
    let mut sessions: Vec<u64> = connects
        .iter()
        .map(|c| c["session"].as_u64().unwrap())
        .collect();
    sessions.sort_unstable();
    sessions.dedup();
    assert_eq!(sessions.len(), 7, "session numbers are unique");
    let laptop = connects.iter().find(|c| c["device"] == "laptop").unwrap();
    assert_eq!(
        (&laptop["user"], &laptop["platform"], &laptop["transport"]),
        (&json!("bob"), &json!("desktop"), &json!("mqtt_ws"))
    );

    let subscribed: Vec<&str> = of("subscribe")
        .iter()
        .map(|s| s["topic"].as_str().unwrap())
        .collect();
    assert!(subscribed.contains(&"u/alice/notify"), "{subscribed:?}");
    let mallory = connects.iter().find(|c| c["user"] == "mallory").unwrap();
    assert!(
        events.iter().all(|e| e["session"] != mallory["session"]
            || e["event"] == "connect"
            || e["event"] == "disconnect"),
        "a refused request of mallory's was recorded"
    );
    assert_eq!(subscribed.len(), 9, "{subscribed:?}");
    assert_eq!(of("unsubscribe")[0]["topic"], "u/carol/inbox");

    let publishes = of("publish");
    let topics: Vec<&str> = publishes
        .iter()
        .map(|p| p["topic"].as_str().unwrap())
        .collect();
    assert_eq!(
        topics,
        [
            "u/alice/d/phone/send",
            "u/bob/d/laptop/send",
            "u/carol/d/web/send",
            "u/alice/d/phone/sync"
        ]
    );
    assert_eq!(
        publishes[0]["payload"],
        json!({"to": "bob", "body": {"text": "hi bob"}})
    );
    assert_eq!(publishes[0]["qos"], 1);

    let calls: Vec<(&str, &str, &Value)> = of("api")
        .iter()
        .map(|c| {
            (
                c["method"].as_str().unwrap(),
                c["path"].as_str().unwrap(),
                &c["payload"],
            )
        })
        .collect();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!(calls[0].1, "/v1/messages");
    assert_eq!(calls[0].2["from"], "shop");
    assert_eq!((calls[1].0, calls[1].1), ("POST", "/v1/notifications"));
    assert_eq!(calls[1].2["kind"], "friend_request");

    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains(&gw.api_key),
        "the API key is in the recording"
    );
    for token in &tokens {
        assert!(
            !text.contains(token.as_str()),
            "a token is in the recording"
        );
    }
    assert!(!text.to_ascii_lowercase().contains("bearer"));
    assert!(
        gw.metric("gateway_record_events_total{status=\"written\"}")
            .await
            >= events.len() as f64
    );
}

/// Runs `loadtest replay` of `recording` against `gw` with `args`; returns its output and the
/// JSON result.
fn replay(gw: &TestGateway, recording: &Path, api_key: &str, args: &[&str]) -> (Output, Value) {
    let loadtest = binary().with_file_name("loadtest");
    assert!(
        loadtest.exists(),
        "{} is missing: build it with `cargo build -p loadtest` (scripts/test does)",
        loadtest.display()
    );
    let json = gw.data_dir.path().join("replay.json");
    let output = Command::new(loadtest)
        .arg("replay")
        .arg(recording)
        .args([
            "--mqtt",
            &gw.mqtt.to_string(),
            "--http",
            &gw.url(""),
            "--api-key",
            api_key,
        ])
        .args(["--timeout", "60s", "--answer-timeout", "10s"])
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("running loadtest");
    let result = std::fs::read(&json)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null);
    (output, result)
}

fn text(output: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn the_shipped_sample_replays_against_a_fresh_gateway() {
    let gw = TestGateway::start().await;
    let mqtt_ws = gw.mqtt_ws.to_string();
    let (output, result) = replay(
        &gw,
        &sample(),
        &gw.api_key,
        &[
            "--speed",
            "4",
            "--user-prefix",
            "t2-",
            "--mqtt-ws",
            &mqtt_ws,
        ],
    );
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("result: PASS"));
    assert_eq!(result["failed_checks"], json!([]), "{result}");
    let replayed = result["events_replayed"].as_u64().unwrap();
    assert!(replayed > 0, "{result}");
    assert_eq!(
        replayed,
        result["events_read"].as_u64().unwrap(),
        "every recorded event is replayed: {result}"
    );
    for kind in ["connect", "subscribe", "publish", "disconnect", "api"] {
        assert!(
            result["events"][kind]["replayed"].as_u64().unwrap_or(0) > 0,
            "{kind}: {result}"
        );
    }
    assert!(
        result["messages_received"].as_u64().unwrap() > 0,
        "{result}"
    );
    let transports = result["transports"].as_object().unwrap();
    assert!(
        transports.keys().all(|t| !t.contains(" as ")) && transports.contains_key("mqtt_ws"),
        "each session on the transport it was recorded on: {result}"
    );

    // The replay's traffic reached the store under the renamed users, and only there.
    let (status, history) = gw
        .api(Method::GET, "/v1/users/t2-bob/messages?after=0", None)
        .await;
    assert_eq!(status, 200, "{history}");
    assert!(
        !history["messages"].as_array().unwrap().is_empty(),
        "{history}"
    );
    let (_, untouched) = gw
        .api(Method::GET, "/v1/users/bob/messages?after=0", None)
        .await;
    assert_eq!(untouched["messages"], json!([]), "{untouched}");
}

#[tokio::test]
async fn a_replay_with_a_wrong_api_key_fails_and_says_why() {
    let gw = TestGateway::start().await;
    let (output, result) = replay(
        &gw,
        &sample(),
        "not-the-gateways-api-key",
        &["--speed", "8"],
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("result: FAIL"), "{stdout}");
    assert!(stdout.contains("401 Unauthorized"), "{stdout}");
    assert!(
        result["events"]["connect"]["failed"].as_u64().unwrap() > 0,
        "{result}"
    );
    assert!(
        result["events"]["api"]["failed"].as_u64().unwrap() > 0,
        "{result}"
    );
}

/// A recording written by hand: a header, then `events`.
fn hand_made(dir: &tempfile::TempDir, events: &[Value]) -> PathBuf {
    let path = dir.path().join("hand-made.jsonl");
    let header =
        json!({"recording": "gateway", "version": 1, "started_at": "2026-01-01T00:00:00.000Z"});
    let lines: Vec<String> = std::iter::once(&header)
        .chain(events)
        .map(Value::to_string)
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

#[tokio::test]
async fn a_device_taken_over_by_its_own_reconnection_replays_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    // As a recording shows a reconnection before the old connection was seen to be gone: the new
    // session connects, then the gateway closes the old one.
    let connect = |session: u64, t_ms: u64, device: &str, transport: &str| json!({"t_ms": t_ms, "event": "connect", "session": session, "user": "dan", "device": device, "transport": transport, "platform": "ios"});
    let disconnect =
        |session: u64, t_ms: u64| json!({"t_ms": t_ms, "event": "disconnect", "session": session});
    let path = hand_made(
        &dir,
        &[
            connect(1, 0, "phone", "mqtt"),
            connect(2, 0, "web", "json_ws"),
            connect(3, 300, "phone", "mqtt"),
            connect(4, 300, "web", "json_ws"),
            // Later than the gateway really records them, so that the replayed takeovers surely
            // come before the old sessions' scheduled ends.
            disconnect(1, 500),
            disconnect(2, 500),
            disconnect(3, 600),
            disconnect(4, 600),
        ],
    );
    let gw = TestGateway::start().await;
    let (output, result) = replay(&gw, &path, &gw.api_key, &[]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(result["events"]["connect"]["replayed"], 4, "{result}");
    assert_eq!(result["events"]["disconnect"]["replayed"], 4, "{result}");
}

#[tokio::test]
async fn sessions_replay_on_the_transport_they_were_recorded_on_when_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let connect = |session: u64, device: &str, transport: &str| json!({"t_ms": 0, "event": "connect", "session": session, "user": "fay", "device": device, "transport": transport, "platform": "ios"});
    let mut events = Vec::new();
    for (session, device, transport) in [
        (1, "a", "mqtt_tls"),
        (2, "b", "mqtt_wss"),
        (3, "c", "mqtt_ws"),
    ] {
        events.extend([
            connect(session, device, transport),
            json!({"t_ms": 10, "event": "subscribe", "session": session, "topic": "u/fay/inbox", "qos": 1}),
            json!({"t_ms": 20, "event": "publish", "session": session, "topic": format!("u/fay/d/{device}/send"), "qos": 1, "payload": {"to": "gus", "body": {"via": transport}}}),
            json!({"t_ms": 200, "event": "disconnect", "session": session}),
        ]);
    }
    events.sort_by_key(|event| event["t_ms"].as_u64());
    let path = hand_made(&dir, &events);
    let gw = TestGateway::start_with(Options::default().tls()).await;
    let ca = gw.data_dir.path().join("cert.pem");
    let (tls, wss) = (gw.mqtt_tls.unwrap(), gw.mqtt_wss.unwrap());
    let (output, result) = replay(
        &gw,
        &path,
        &gw.api_key,
        &[
            "--mqtt-tls",
            &tls.to_string(),
            "--mqtt-wss",
            &wss.to_string(),
            "--ca",
            ca.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(
        result["transports"],
        json!({"mqtt_tls": 1, "mqtt_wss": 1, "mqtt_ws as mqtt": 1}),
        "{result}"
    );
    assert_eq!(result["events"]["publish"]["replayed"], 3, "{result}");
    assert!(
        text(&output).contains("sessions replayed on: mqtt_tls 1, mqtt_ws as mqtt 1, mqtt_wss 1")
    );
    // The gateway saw each publish on the transport it was replayed on.
    for transport in ["mqtt_tls", "mqtt_wss", "mqtt"] {
        let sample = format!("gateway_messages_in_total{{transport=\"{transport}\"}}");
        assert_eq!(gw.metric(&sample).await, 1.0, "{sample}");
    }
}

#[tokio::test]
async fn a_replay_whose_requests_are_refused_fails_naming_each() {
    let dir = tempfile::tempdir().unwrap();
    // Hand-made: a device subscribing to and publishing on another user's topics, which the
    // gateway refuses on both transports.
    let path = hand_made(
        &dir,
        &[
            json!({"t_ms": 0, "event": "connect", "session": 1, "user": "eve", "device": "phone", "transport": "mqtt", "platform": "android"}),
            json!({"t_ms": 0, "event": "connect", "session": 2, "user": "eve", "device": "web", "transport": "json_ws", "platform": "web"}),
            json!({"t_ms": 10, "event": "subscribe", "session": 1, "topic": "u/bob/inbox", "qos": 1}),
            json!({"t_ms": 20, "event": "publish", "session": 1, "topic": "u/bob/d/phone/send", "qos": 1, "payload": {"to": "eve", "body": {}}}),
            json!({"t_ms": 30, "event": "subscribe", "session": 2, "topic": "u/bob/notify", "qos": 1}),
            json!({"t_ms": 40, "event": "disconnect", "session": 1}),
            json!({"t_ms": 40, "event": "disconnect", "session": 2}),
        ],
    );
    let gw = TestGateway::start().await;
    let (output, result) = replay(&gw, &path, &gw.api_key, &[]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("subscribe: 2 of 2 failed"), "{stdout}");
    assert!(stdout.contains("publish: 1 of 1 failed"), "{stdout}");
    assert!(stdout.contains("NotAuthorized"), "{stdout}");
    assert_eq!(result["events"]["connect"]["failed"], 0, "{result}");
}

#[tokio::test]
async fn a_recording_that_cannot_be_replayed_is_refused_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sizes.jsonl");
    std::fs::write(
        &path,
        "{\"recording\":\"gateway\",\"version\":1,\"started_at\":\"\"}\n{\"t_ms\":0,\"event\":\"api\",\"method\":\"POST\",\"path\":\"/v1/messages\",\"bytes\":30}\n",
    )
    .unwrap();
    let gw = TestGateway::start().await;
    let (output, _) = replay(&gw, &path, &gw.api_key, &[]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains("line 2: the recording kept only the payload's size"),
        "{}",
        text(&output)
    );
}

/// Re-records the shipped sample `loadtest/samples/chat.jsonl` from a real gateway running the
/// chat above at a human pace. Run by hand (see the module docs); the replay test then plays it.
#[tokio::test]
#[ignore = "re-records loadtest/samples/chat.jsonl; run by hand"]
async fn record_the_sample() {
    let gw = recording_gateway(&sample()).await;
    chat(&gw, Duration::from_millis(700)).await;
    let lines = recorded(&sample(), 3).await;
    assert!(lines.len() > 20, "{lines:?}");
}
