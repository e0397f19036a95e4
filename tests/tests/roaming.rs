//! Message roaming through the real binary: sequencing, roaming to the sender's other devices,
//! cursors and paged sync, lost history, the history API, and deletion.

use e2e::device::{messages_of, seqs, Device};
use e2e::json_ws::JsonClient;
use e2e::{Options, TestGateway};
use futures_util::stream::{self, StreamExt};
use gateway::infra::cipher::KeyRing;
use gateway::store::clock::HybridClock;
use gateway::store::data_keys::DataKeys;
use gateway::store::embedded::EmbeddedStore;
use gateway::store::{Appended, CommitFeed, Settings, Store};
use protocol::envelope::Platform;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

/// Posts `count` messages to `user`, `concurrency` at a time; returns their ids.
async fn post_many(gw: &TestGateway, user: &str, count: usize, concurrency: usize) -> Vec<String> {
    stream::iter(0..count)
        .map(|i| async move {
            let reply = gw.post_message(user, json!({ "n": i })).await;
            reply["id"].as_str().unwrap().to_string()
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

async fn history(gw: &TestGateway, query: &str) -> (u16, Value) {
    gw.api(Method::GET, &format!("/v1/users/{query}"), None)
        .await
}

struct Silent;

impl CommitFeed for Silent {
    fn committed(&self, _: &[Appended], _: std::time::Instant) {}
}

/// What the stopped gateway's store holds for `user`, read from its files directly.
async fn footprint(data_dir: &Path, user: &str) -> Vec<String> {
    let keys = KeyRing::new(&["x:000102030405060708090a0b0c0d0e0f".into()]).unwrap();
    let store = EmbeddedStore::open(
        &data_dir.join("store"),
        Arc::new(DataKeys::new(Arc::new(keys), 16)),
        Arc::new(HybridClock::new()),
        Arc::new(Silent),
        Settings {
            max_batch: 16,
            retention_count: 1000,
            memtable_size: 8 << 20,
            commit_seconds: None,
            budget: Default::default(),
            confirmation: Default::default(),
            max_queued_writes: 65_536,
        },
    )
    .expect("opening the stopped gateway's store");
    store.footprint(user).await.unwrap()
}

#[tokio::test]
async fn a_message_is_sequenced_and_roams_to_the_senders_other_devices() {
    let gw = TestGateway::start().await;
    let mut alice_phone = Device::connect(&gw, "alice", "phone", Platform::Ios).await;
    let mut alice_laptop = Device::connect(&gw, "alice", "laptop", Platform::Desktop).await;
    let mut bob = Device::connect(&gw, "bob", "phone", Platform::Android).await;

    alice_phone.send("bob", json!({"text": "hi bob"})).await;
    let received = bob.next_message().await;
    assert_eq!(received.seq, 1);
    assert_eq!(received.from.as_deref(), Some("alice"));
    assert_eq!(received.from_device.as_deref(), Some("phone"));
    assert_eq!(received.body, json!({"text": "hi bob"}));

    let roamed = alice_laptop.next_message().await;
    assert_eq!((roamed.seq, roamed.id.as_str()), (1, received.id.as_str()));
    assert_eq!(roamed.to, "bob");
    alice_phone.mqtt.no_message_on("u/alice/inbox").await;

    let posted = gw
        .post_message("bob", json!({"text": "from the backend"}))
        .await;
    assert_eq!(posted["seq"], 2);
    let second = bob.next_message().await;
    assert_eq!(second.seq, 2);
    assert!(second.ts >= received.ts);
}

#[tokio::test]
async fn an_offline_device_catches_up_from_its_cursor_in_pages() {
    let gw = TestGateway::start_with(Options::default().with("ROAMING__PAGE_SIZE", "100")).await;
    let mut phone = Device::connect(&gw, "bob", "phone", Platform::Ios).await;
    post_many(&gw, "bob", 5, 1).await;
    for seq in 1..=5 {
        assert_eq!(phone.next_message().await.seq, seq);
    }
    phone.ack(5).await;
    // The ack is stored before the device leaves: a sync with no `after` starts from it.
    let pages = phone.sync(json!({})).await;
    assert_eq!(messages_of(&pages).len(), 0);
    assert_eq!(pages[0]["to_seq"], 5);
    let epoch = pages[0]["epoch"].as_str().unwrap().to_string();
    drop(phone);

    post_many(&gw, "bob", 250, 8).await;
    let mut phone = Device::connect(&gw, "bob", "phone", Platform::Ios).await;
    let pages = phone.sync(json!({ "epoch": epoch })).await;
    let sizes: Vec<usize> = pages
        .iter()
        .map(|p| p["messages"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [100, 100, 50]);
    assert_eq!(seqs(&messages_of(&pages)), (6..=255).collect::<Vec<_>>());
    assert_eq!(pages.last().unwrap()["to_seq"], 255);
    assert!(pages
        .iter()
        .all(|p| p["epoch"] == epoch.as_str() && p.get("reset").is_none()));
}

#[tokio::test]
async fn sync_after_10000_missed_messages_is_complete_and_in_order() {
    let gw = TestGateway::start().await;
    let ids: HashSet<String> = post_many(&gw, "carol", 10_000, 64)
        .await
        .into_iter()
        .collect();
    assert_eq!(ids.len(), 10_000);

    let mut tablet = Device::connect(&gw, "carol", "tablet", Platform::Android).await;
    let pages = tablet.sync(json!({ "after": 0 })).await;
    assert_eq!(pages.len(), 100, "pages of the default 100");
    let messages = messages_of(&pages);
    assert_eq!(seqs(&messages), (1..=10_000).collect::<Vec<_>>());
    let synced: HashSet<String> = messages.into_iter().map(|m| m.id).collect();
    assert_eq!(synced, ids);
    assert_eq!(gw.metric("gateway_sync_pages_total").await, 100.0);
    assert_eq!(gw.metric("gateway_messages_stored_total").await, 10_000.0);
    assert_eq!(
        gw.metric("gateway_store_append_seconds_count").await,
        10_000.0
    );
    // Group commit: the 10,000 appends took at least one durable batch, at most one each.
    let commits = gw.metric("gateway_store_commit_seconds_count").await;
    assert!((1.0..=10_000.0).contains(&commits), "{commits} commits");
}

#[tokio::test]
async fn every_stage_of_a_stored_message_is_accounted_for() {
    let gw = TestGateway::start().await;
    let mut phone = Device::connect(&gw, "zoe", "phone", Platform::Android).await;
    post_many(&gw, "zoe", 5, 1).await;
    for _ in 0..5 {
        phone.next_message().await;
    }
    let stage = |name: &str| format!("gateway_durable_stage_seconds_count{{stage=\"{name}\"}}");
    for name in ["queued", "sealed", "written", "fsynced"] {
        assert_eq!(gw.metric(&stage(name)).await, 5.0, "{name}");
    }
    // Each message was delivered live to the phone, and acknowledged by it (rumqttc sends the
    // PUBACK once it handed the message over, so the count may still be on its way).
    assert_eq!(gw.metric_reaching(&stage("delivered"), 5.0).await, 5.0);
    assert_eq!(gw.metric_reaching(&stage("acknowledged"), 5.0).await, 5.0);
}

#[tokio::test]
async fn a_new_device_gets_the_latest_messages_and_a_cursor() {
    let gw =
        TestGateway::start_with(Options::default().with("ROAMING__NEW_DEVICE_HISTORY", "3")).await;
    post_many(&gw, "dave", 10, 1).await;
    let mut watch = Device::connect(&gw, "dave", "watch", Platform::Android).await;
    let pages = watch.sync(json!({})).await;
    assert_eq!(seqs(&messages_of(&pages)), [8, 9, 10]);
    // Its cursor now exists, just before what it was given.
    let again = watch.sync(json!({})).await;
    assert_eq!(seqs(&messages_of(&again)), [8, 9, 10]);
    watch.ack(10).await;
    let caught_up = watch.sync(json!({})).await;
    assert!(messages_of(&caught_up).is_empty());
    assert_eq!(caught_up[0]["to_seq"], 10);
}

#[tokio::test]
async fn lost_history_is_announced_never_skipped() {
    let gw =
        TestGateway::start_with(Options::default().with("ROAMING__RETENTION_COUNT", "20")).await;
    post_many(&gw, "erin", 50, 4).await;
    let mut phone = Device::connect(&gw, "erin", "phone", Platform::Ios).await;
    let (_, head) = history(&gw, "erin/messages?limit=1").await;
    let epoch = head["epoch"].as_str().unwrap().to_string();
    assert_eq!(head["first_seq"], 31);

    let pages = phone.sync(json!({"after": 5, "epoch": epoch})).await;
    assert_eq!(
        pages[0]["reset"],
        json!({"reason": "trimmed", "available_from": 31})
    );
    assert_eq!(seqs(&messages_of(&pages)), (31..=50).collect::<Vec<_>>());

    // The user's log is deleted and written again: a device holding the old epoch is told.
    let (status, _) = gw.api(Method::DELETE, "/v1/users/erin", None).await;
    assert_eq!(status, 200);
    gw.post_message("erin", json!({"text": "fresh start"}))
        .await;
    let mut laptop = Device::connect(&gw, "erin", "laptop", Platform::Desktop).await;
    let pages = laptop.sync(json!({"after": 50, "epoch": epoch})).await;
    assert_eq!(
        pages[0]["reset"],
        json!({"reason": "epoch_changed", "available_from": 1})
    );
    assert_ne!(pages[0]["epoch"], epoch.as_str());
    assert_eq!(seqs(&messages_of(&pages)), [1]);
}

#[tokio::test]
async fn history_is_readable_over_http_in_pages() {
    let gw = TestGateway::start().await;
    post_many(&gw, "frank", 7, 1).await;
    let (status, page) = history(&gw, "frank/messages?after=2&limit=3").await;
    assert_eq!(status, 200, "{page}");
    let seqs: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [3, 4, 5]);
    assert_eq!(
        (page["to_seq"].clone(), page["more"].clone()),
        (json!(5), json!(true))
    );
    assert_eq!(
        (page["first_seq"].clone(), page["last_seq"].clone()),
        (json!(1), json!(7))
    );

    for bad in [
        "frank/messages?limit=0",
        "frank/messages?limit=100000",
        "frank/messages?after=x",
    ] {
        let (status, body) = history(&gw, bad).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(body["error"]["code"], "invalid_request", "{bad}: {body}");
    }
    let (status, body) = history(&gw, "fr%2Fank/messages").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("invalid_request"))
    );
}

#[tokio::test]
async fn deleting_a_user_leaves_nothing_in_the_store() {
    let gw = TestGateway::start().await;
    let mut phone = Device::connect(&gw, "gina", "phone", Platform::Ios).await;
    let marker = "gina-secret-marker-5c1e";
    gw.post_message("gina", json!({ "text": marker })).await;
    let seq = phone.next_message().await.seq;
    phone.ack(seq).await;
    let mut hank = Device::connect(&gw, "hank", "phone", Platform::Ios).await;
    phone.send("hank", json!({"text": "to hank"})).await;
    assert_eq!(hank.next_message().await.from.as_deref(), Some("gina"));

    let (status, body) = gw.api(Method::DELETE, "/v1/users/gina", None).await;
    assert_eq!((status, body), (200, json!({"deleted": "gina"})));
    phone.mqtt.inbox.closed().await;
    let (_, page) = history(&gw, "gina/messages").await;
    assert_eq!(page["messages"], json!([]));
    assert_eq!(page["last_seq"], 0);
    assert!(gw.devices("gina").await.is_empty());
    let (_, hank_page) = history(&gw, "hank/messages").await;
    assert_eq!(
        hank_page["messages"].as_array().unwrap().len(),
        1,
        "hank keeps his copy"
    );

    let data = gw.stop().await;
    assert_eq!(
        footprint(data.path(), "gina").await,
        ["revocations/gina"],
        "only what keeps the deleted user's tokens refused"
    );
    assert_eq!(
        footprint(data.path(), "hank").await.len(),
        4,
        "hank's message, head, data key and known device"
    );
}

/// A deleted user's connections end before the deletion, without their wills and without
/// keeping their sessions: nothing they leave behind re-creates what was deleted.
#[tokio::test]
async fn a_deleted_users_devices_leave_no_will_and_no_session_behind() {
    use e2e::mqtt::{will_to_self, Via, V4};
    use rumqttc::QoS;
    let gw = TestGateway::start().await;
    let token = gw.token("ivy", "phone", Platform::Android);
    let mut phone = V4::connect(&gw, Via::Tcp, "phone", Some(&token), |o| {
        o.set_clean_session(false);
        o.set_last_will(will_to_self("ivy", "phone"));
    })
    .await
    .unwrap();
    phone.subscribe("u/ivy/inbox", QoS::AtLeastOnce).await;
    gw.post_message("ivy", json!({"text": "before"})).await;
    phone.message_on("u/ivy/inbox").await;

    let (status, _) = gw.api(Method::DELETE, "/v1/users/ivy", None).await;
    assert_eq!(status, 200);
    phone.inbox.closed().await;
    // Time for a will to be stored, were one sent.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (_, page) = history(&gw, "ivy/messages").await;
    assert_eq!(page["messages"], json!([]), "no will re-created the log");
    assert_eq!(
        gw.metric("gateway_disconnects_total{reason=\"account_deleted\"}")
            .await,
        1.0
    );
    let data = gw.stop().await;
    assert_eq!(footprint(data.path(), "ivy").await, ["revocations/ivy"]);
}

#[tokio::test]
async fn message_bodies_are_sealed_at_rest() {
    let gw = TestGateway::start().await;
    let marker = "plain-text-marker-91d3";
    gw.post_message("ivan", json!({ "text": marker })).await;
    let data = gw.stop().await;
    let mut files = vec![data.path().join("store")];
    let mut scanned = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            let bytes = std::fs::read(&path).unwrap();
            scanned += bytes.len();
            assert!(
                !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
                "{} holds the message body in the clear",
                path.display()
            );
        }
    }
    assert!(scanned > 0, "the store wrote files");
}

#[tokio::test]
async fn a_deleted_conversation_is_hidden_at_once_and_purged_by_the_sweeper() {
    let gw =
        TestGateway::start_with(Options::default().with("ROAMING__SWEEP_INTERVAL", "200ms")).await;
    let jade = Device::connect(&gw, "jade", "phone", Platform::Ios).await;
    let kim = Device::connect(&gw, "kim", "phone", Platform::Ios).await;
    jade.send("kim", json!({"text": "jade to kim"})).await;
    kim.send("jade", json!({"text": "kim to jade"})).await;
    gw.post_message("kim", json!({"text": "from the service"}))
        .await;
    let (status, _) = gw
        .api(Method::DELETE, "/v1/users/kim/contacts/jade", None)
        .await;
    assert_eq!(status, 200);
    let (_, kim_page) = history(&gw, "kim/messages").await;
    let texts: Vec<&str> = kim_page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["from the service"]);
    let (_, jade_page) = history(&gw, "jade/messages").await;
    assert_eq!(jade_page["messages"], json!([]));

    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let data = gw.stop().await;
    let kim_left = footprint(data.path(), "kim").await;
    assert_eq!(
        kim_left
            .iter()
            .filter(|e| e.starts_with("messages/"))
            .count(),
        1,
        "{kim_left:?}"
    );
    assert!(!kim_left.iter().any(|e| e.starts_with("forgotten/")));
    let jade_left = footprint(data.path(), "jade").await;
    assert!(
        !jade_left.iter().any(|e| e.starts_with("messages/")),
        "{jade_left:?}"
    );
}

#[tokio::test]
async fn json_clients_send_ack_and_sync() {
    let gw = TestGateway::start().await;
    gw.post_message("lena", json!({"text": "one"})).await;
    let token = gw.token("lena", "browser", Platform::Web);
    let mut web = JsonClient::authenticated(&gw, &token).await;
    let sub = web
        .request(json!({"op": "sub", "topic": "u/lena/d/browser/reply"}))
        .await;
    assert_eq!(sub["op"], "ok");
    let ok = web.request(json!({"op": "sync", "after": 0})).await;
    assert_eq!(ok["op"], "ok");
    let page = web.message_on("u/lena/d/browser/reply").await;
    assert_eq!(
        (page["type"].clone(), page["more"].clone()),
        (json!("sync"), json!(false))
    );
    assert_eq!(page["messages"][0]["body"], json!({"text": "one"}));

    let acked = web.request(json!({"op": "ack", "seq": 1})).await;
    assert_eq!(acked["op"], "ok");
    let sent = web
        .request(json!({"op": "pub", "topic": "u/lena/d/browser/send", "payload": {"to": "lena", "body": {"text": "note to self"}}}))
        .await;
    assert_eq!(sent["op"], "ok");
    let (_, page) = history(&gw, "lena/messages?after=1").await;
    assert_eq!(page["messages"][0]["body"], json!({"text": "note to self"}));
    assert_eq!(page["messages"][0]["from_device"], "browser");
}

/// Rotating `store.encryption_keys`: messages are sealed under each user's data key, which is
/// stored wrapped under the configured keys; the sweeper wraps every data key again under the
/// new key (no message is rewritten), and from then on the old key can go.
#[tokio::test]
async fn the_at_rest_key_rotates_without_losing_old_messages() {
    let gw = TestGateway::start().await;
    gw.post_message("olga", json!({"text": "first key"})).await;
    let old_key = format!("d0:{}", &gw.secret("at_rest_key")[..32]);
    let new_key = "k2:00112233445566778899aabbccddeeff";
    let data = gw.stop().await;

    // Dropping the old key before the data keys are wrapped again is an error naming the key,
    // never a silent gap.
    let only_new = Options::default().with("STORE__ENCRYPTION_KEYS", &format!("[\"{new_key}\"]"));
    let gw = TestGateway::try_start(only_new.clone(), data)
        .await
        .unwrap();
    let (status, body) = history(&gw, "olga/messages").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (500, Some("internal"))
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("\"d0\""), "{body}");
    let data = gw.stop().await;

    // The new key goes first (it seals from now on), the old one stays to open what it sealed
    // until the sweeper has wrapped olga's data key again.
    let keys = format!("[\"{new_key}\", \"{old_key}\"]");
    let rotated = Options::default().with("STORE__ENCRYPTION_KEYS", &keys);
    let gw = TestGateway::try_start(rotated, data).await.unwrap();
    let rewrapped = gw
        .metric_reaching("gateway_store_rewrapped_keys_total", 1.0)
        .await;
    assert_eq!(rewrapped, 1.0);
    gw.post_message("olga", json!({"text": "second key"})).await;
    let data = gw.stop().await;

    let gw = TestGateway::try_start(only_new, data).await.unwrap();
    let (status, page) = history(&gw, "olga/messages").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["messages"][0]["body"]["text"], "first key");
    assert_eq!(page["messages"][1]["body"]["text"], "second key");
}
