//! Crash safety: the gateway is killed with SIGKILL while messages pour in; after a restart,
//! every message it acknowledged reaches every device of its user exactly once, in order; and
//! twenty such kills in a row lose nothing acknowledged.

use e2e::device::{assert_holds_every_acknowledged_once, messages_of, Device};
use e2e::TestGateway;
use protocol::envelope::{InboxMessage, Platform};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Posts to `user` until the gateway stops answering; records each acknowledged (id, seq).
async fn post_until_killed(
    url: String,
    api_key: String,
    user: &'static str,
    acknowledged: Arc<Mutex<Vec<(String, u64)>>>,
) {
    let client = reqwest::Client::new();
    for n in 0.. {
        let sent = client
            .post(&url)
            .bearer_auth(&api_key)
            .json(&json!({"to": user, "body": {"n": n}}))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        let Ok(response) = sent else { return };
        if response.status().as_u16() != 202 {
            return;
        }
        let Ok(reply) = response.json::<serde_json::Value>().await else {
            return;
        };
        let id = reply["id"].as_str().unwrap().to_string();
        acknowledged
            .lock()
            .unwrap()
            .push((id, reply["seq"].as_u64().unwrap()));
    }
}

#[tokio::test]
async fn every_acknowledged_message_survives_a_kill_9_exactly_once_in_order() {
    let gw = TestGateway::start().await;
    let mut phone = Device::connect(&gw, "mia", "phone", Platform::Ios).await;
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let posters: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(post_until_killed(
                gw.url("/v1/messages"),
                gw.api_key.clone(),
                "mia",
                acknowledged.clone(),
            ))
        })
        .collect();

    // The phone holds what arrives live until the crash.
    let mut held: Vec<InboxMessage> = Vec::new();
    while held.len() < 300 {
        held.push(phone.next_message().await);
    }
    let data_dir = gw.stop().await; // SIGKILL, mid-stream
    for poster in posters {
        poster.await.unwrap();
    }
    drop(phone);
    let acknowledged = acknowledged.lock().unwrap().clone();
    // Live delivery comes before the answer, so some of the 300 may be unanswered yet.
    assert!(
        acknowledged.len() >= 100,
        "{} acknowledged",
        acknowledged.len()
    );

    let gw = TestGateway::try_start(Default::default(), data_dir)
        .await
        .expect("restart on the same data dir");
    // The phone continues after the last message it holds; a laptop new to the user reads all.
    let mut phone = Device::connect(&gw, "mia", "phone", Platform::Ios).await;
    let last_held = held.last().unwrap().seq;
    held.extend(messages_of(
        &phone.sync(json!({ "after": last_held })).await,
    ));
    let mut laptop = Device::connect(&gw, "mia", "laptop", Platform::Desktop).await;
    let everything = messages_of(&laptop.sync(json!({ "after": 0 })).await);

    eprintln!(
        "acknowledged {}, stored {}",
        acknowledged.len(),
        everything.len()
    );
    for (device, messages) in [("phone", &held), ("laptop", &everything)] {
        assert_holds_every_acknowledged_once(device, messages, &acknowledged);
    }
}

/// The gateway killed 20 times, each time while eight senders pour messages in: after the last
/// restart the log holds every acknowledged message once, at the sequence it was acknowledged
/// with, and its sequences have no gap.
#[tokio::test]
async fn twenty_kill_9_cycles_under_load_lose_nothing_acknowledged() {
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let mut data_dir = tempfile::tempdir().unwrap();
    for cycle in 0..20 {
        let gw = TestGateway::try_start(Default::default(), data_dir)
            .await
            .unwrap_or_else(|e| panic!("restart {cycle}: {e:#}"));
        let before = acknowledged.lock().unwrap().len();
        let posters: Vec<_> = (0..8)
            .map(|_| {
                tokio::spawn(post_until_killed(
                    gw.url("/v1/messages"),
                    gw.api_key.clone(),
                    "noa",
                    acknowledged.clone(),
                ))
            })
            .collect();
        // Killed once messages flow, at a different point of the stream each cycle.
        let deadline = tokio::time::Instant::now() + e2e::PATIENCE;
        while acknowledged.lock().unwrap().len() < before + 20 + cycle * 7 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "cycle {cycle}: no traffic"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        data_dir = gw.stop().await; // SIGKILL
        for poster in posters {
            poster.await.unwrap();
        }
    }

    let gw = TestGateway::try_start(Default::default(), data_dir)
        .await
        .expect("the last restart");
    let log = gw.whole_log("noa").await;
    let acknowledged = acknowledged.lock().unwrap().clone();
    eprintln!("acknowledged {}, stored {}", acknowledged.len(), log.len());
    assert_holds_every_acknowledged_once("noa's log", &log, &acknowledged);
}
