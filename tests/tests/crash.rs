//! Crash safety: the gateway is killed with SIGKILL while messages pour in; after a restart,
//! every message it acknowledged reaches every device of its user exactly once, in order.

use e2e::device::{messages_of, seqs, Device};
use e2e::TestGateway;
use protocol::envelope::{InboxMessage, Platform};
use serde_json::json;
use std::collections::HashMap;
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
        let seqs = seqs(messages);
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "{device}: every sequence once, in order"
        );
        let by_id: HashMap<&str, u64> = messages.iter().map(|m| (m.id.as_str(), m.seq)).collect();
        assert_eq!(by_id.len(), messages.len(), "{device}: no message twice");
        for (id, seq) in &acknowledged {
            assert_eq!(
                by_id.get(id.as_str()),
                Some(seq),
                "{device}: acknowledged message {id} (seq {seq}) is missing"
            );
        }
    }
}
