//! Graceful shutdown: SIGTERM while messages pour in over HTTP and MQTT. The gateway tells its
//! clients it is going away (MQTT 5 DISCONNECT 0x8B, JSON WebSocket close 1001), answers what
//! it stored, and exits 0 within `limits.shutdown_grace`; after a restart on the same data dir
//! every message it acknowledged is in the log, once.

use e2e::device::{messages_of, Device};
use e2e::json_ws::JsonClient;
use e2e::mqtt::{Incoming, Via, V5};
use e2e::raw_v5::RawV5;
use e2e::{Options, TestGateway};
use protocol::envelope::Platform;
use rumqttc::v5::mqttbytes::v5 as v5p;
use rumqttc::v5::mqttbytes::QoS;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const GRACE: Duration = Duration::from_secs(5);

/// Posts to `user` until the gateway stops answering; records each acknowledged (id, seq).
async fn post_until_stopped(
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
            .json(&json!({"to": user, "body": {"http": n}}))
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
        let seq = reply["seq"].as_u64().unwrap();
        acknowledged.lock().unwrap().push((id, seq));
    }
}

#[tokio::test]
async fn sigterm_mid_stream_exits_0_within_the_grace_with_everything_acknowledged_kept() {
    let options = Options::default().with("LIMITS__SHUTDOWN_GRACE", "5s");
    let gw = TestGateway::start_with(options).await;

    // An MQTT 5 device sends to mia at QoS 1; PUBACKs come in the order of the publishes, so
    // the first `pubacks` of its messages are the ones acknowledged.
    let token = gw.token("sam", "phone", Platform::Android);
    let (mut sam, _) = V5::connect(&gw, Via::Tcp, "sam-phone", Some(&token), |_| {})
        .await
        .expect("sam connects");
    let pubacks = Arc::new(AtomicU64::new(0));
    let publisher = {
        let client = sam.client.clone();
        tokio::spawn(async move {
            for n in 0u64.. {
                let body = json!({"to": "mia", "body": {"mqtt": n}}).to_string();
                let sent = client.publish("u/sam/d/phone/send", QoS::AtLeastOnce, false, body);
                if sent.await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let counted = pubacks.clone();
    let told = tokio::spawn(async move {
        loop {
            let seen = sam
                .inbox
                .wait_for("PUBACK or DISCONNECT", |incoming| match incoming {
                    Incoming::Packet(v5p::Packet::PubAck(ack)) => Some(Ok(ack.reason)),
                    Incoming::Packet(v5p::Packet::Disconnect(d)) => Some(Err(d.reason_code)),
                    _ => None,
                })
                .await;
            match seen {
                Ok(v5p::PubAckReason::Success) => {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
                Ok(refused) => panic!("a send was refused: {refused:?}"),
                Err(reason) => return reason,
            }
        }
    });

    let web_token = gw.token("mia", "web", Platform::Web);
    let mut web = JsonClient::authenticated(&gw, &web_token).await;

    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let posters: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(post_until_stopped(
                gw.url("/v1/messages"),
                gw.api_key.clone(),
                "mia",
                acknowledged.clone(),
            ))
        })
        .collect();
    while acknowledged.lock().unwrap().len() < 200 || pubacks.load(Ordering::SeqCst) < 100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let stopped = gw.terminate().await;
    assert!(
        stopped.status.success(),
        "the gateway exits 0 after SIGTERM: {:?}",
        stopped.status
    );
    assert!(
        stopped.took < GRACE,
        "it exits within limits.shutdown_grace ({GRACE:?}): took {:?}",
        stopped.took
    );
    assert_eq!(
        told.await.unwrap(),
        v5p::DisconnectReasonCode::ServerShuttingDown,
        "an MQTT 5 client is told the server is shutting down"
    );
    assert_eq!(
        web.closed().await.code,
        Some(1001),
        "a JSON WebSocket is closed as going away"
    );
    publisher.await.unwrap();
    for poster in posters {
        poster.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    let pubacks = pubacks.load(Ordering::SeqCst);

    let gw = TestGateway::try_start(Default::default(), stopped.data_dir)
        .await
        .expect("restart on the same data dir");
    let mut laptop = Device::connect(&gw, "mia", "laptop", Platform::Desktop).await;
    let everything = messages_of(&laptop.sync(json!({ "after": 0 })).await);
    eprintln!(
        "acknowledged {} over HTTP and {pubacks} over MQTT, stored {}",
        acknowledged.len(),
        everything.len()
    );
    assert_eq!(
        everything.len() as u64,
        acknowledged.len() as u64 + pubacks,
        "every message stored was answered: what was in flight finished before the exit"
    );
    let by_id: HashMap<&str, u64> = everything.iter().map(|m| (m.id.as_str(), m.seq)).collect();
    assert_eq!(by_id.len(), everything.len(), "no message twice");
    for (id, seq) in &acknowledged {
        assert_eq!(
            by_id.get(id.as_str()),
            Some(seq),
            "message {id} (seq {seq}) was acknowledged over HTTP"
        );
    }
    let sent_over_mqtt: Vec<u64> = everything
        .iter()
        .filter_map(|m| m.body["mqtt"].as_u64())
        .collect();
    assert_eq!(
        sent_over_mqtt[..pubacks as usize],
        (0..pubacks).collect::<Vec<_>>(),
        "every message acknowledged with a PUBACK is stored, in order, once"
    );
}

/// A client that is still sending when the server shuts down reads the DISCONNECT that says
/// why, not a reset. Closing a socket with unread data resets the connection, and a client
/// library stops at its first failed write, before it reads what came in: so the gateway drains
/// such a socket for a while after its goodbye, and every write here must go through until the
/// DISCONNECT is read.
#[tokio::test]
async fn a_client_still_sending_at_shutdown_reads_why_instead_of_a_reset() {
    let gw = TestGateway::start_with(Options::default().with("LIMITS__SHUTDOWN_GRACE", "5s")).await;
    let mut client = RawV5::login(&gw, "sam", "phone", Platform::Android).await;
    let stopping = tokio::spawn(gw.terminate());
    let reason = client.disconnect_reason_while_sending().await;
    assert_eq!(reason, v5p::DisconnectReasonCode::ServerShuttingDown);
    drop(client);
    let stopped = stopping.await.unwrap();
    assert!(stopped.status.success(), "{:?}", stopped.status);
}

/// The same for a web client on the JSON WebSocket: still sending when the server shuts down, it
/// reads the close frame that says why (1001, going away), not a reset: the bridge reads on
/// until the client's own close frame.
#[tokio::test]
async fn a_web_client_still_sending_at_shutdown_reads_why_instead_of_a_reset() {
    let gw = TestGateway::start_with(Options::default().with("LIMITS__SHUTDOWN_GRACE", "5s")).await;
    let mut web = JsonClient::authenticated(&gw, &gw.token("sam", "web", Platform::Web)).await;
    let stopping = tokio::spawn(gw.terminate());
    let closed = web.closed_while_sending().await;
    assert_eq!(closed.code, Some(1001), "{}", closed.reason);
    drop(web);
    let stopped = stopping.await.unwrap();
    assert!(stopped.status.success(), "{:?}", stopped.status);
}
