//! A user's device as a roaming client sees it: an MQTT 3.1.1 connection subscribed to its
//! inbox and reply topics, which sends, acknowledges and syncs.

use crate::mqtt::{Via, V4};
use crate::TestGateway;
use protocol::envelope::{InboxMessage, Platform};
use rumqttc::QoS;
use serde_json::{json, Value};

pub struct Device {
    pub mqtt: V4,
    pub user: String,
    pub name: String,
}

impl Device {
    pub async fn connect(gw: &TestGateway, user: &str, name: &str, platform: Platform) -> Self {
        let token = gw.token(user, name, platform);
        let client_id = format!("{user}-{name}");
        // Sync pages run up to `roaming.page_max_bytes` (64 KiB), above rumqttc's 10 KiB default.
        let mut mqtt = V4::connect(gw, Via::Tcp, &client_id, Some(&token), |options| {
            options.set_max_packet_size(1 << 20, 1 << 20);
        })
        .await
        .expect("device connects");
        mqtt.subscribe(&format!("u/{user}/inbox"), QoS::AtLeastOnce)
            .await;
        mqtt.subscribe(&format!("u/{user}/d/{name}/reply"), QoS::AtLeastOnce)
            .await;
        Self {
            mqtt,
            user: user.to_string(),
            name: name.to_string(),
        }
    }

    fn topic(&self, action: &str) -> String {
        format!("u/{}/d/{}/{action}", self.user, self.name)
    }

    pub async fn send(&self, to: &str, body: Value) {
        let request = json!({"to": to, "body": body}).to_string();
        self.mqtt
            .publish(&self.topic("send"), request, QoS::AtLeastOnce)
            .await;
    }

    /// Relays a live signal to `to`'s online devices (not stored).
    pub async fn signal(&self, to: &str, body: Value) {
        let request = json!({"to": to, "body": body}).to_string();
        self.mqtt
            .publish(&self.topic("signal"), request, QoS::AtLeastOnce)
            .await;
    }

    pub async fn ack(&self, seq: u64) {
        let request = json!({ "seq": seq }).to_string();
        self.mqtt
            .publish(&self.topic("ack"), request, QoS::AtLeastOnce)
            .await;
    }

    /// The next message live on the user's inbox.
    pub async fn next_message(&mut self) -> InboxMessage {
        let inbox = format!("u/{}/inbox", self.user);
        serde_json::from_value(self.mqtt.message_on(&inbox).await).expect("an inbox message")
    }

    /// Asks for a sync and collects its pages until one says there is no more.
    pub async fn sync(&mut self, request: Value) -> Vec<Value> {
        self.mqtt
            .publish(&self.topic("sync"), request.to_string(), QoS::AtLeastOnce)
            .await;
        let reply = self.topic("reply");
        let mut pages = Vec::new();
        loop {
            let page = self.mqtt.message_on(&reply).await;
            assert_eq!(page["type"], "sync", "expected a sync page, got {page}");
            let more = page["more"].as_bool().expect("more");
            pages.push(page);
            if !more {
                return pages;
            }
        }
    }
}

/// The messages of sync pages, in the order received.
pub fn messages_of(pages: &[Value]) -> Vec<InboxMessage> {
    pages
        .iter()
        .flat_map(|page| page["messages"].as_array().expect("messages").clone())
        .map(|m| serde_json::from_value(m).expect("an inbox message"))
        .collect()
}

/// The sequences of messages.
pub fn seqs(messages: &[InboxMessage]) -> Vec<u64> {
    messages.iter().map(|m| m.seq).collect()
}

/// What a log (or what a device holds of it) must be after crashes and outages: every sequence
/// once and in order with no gap, no message twice, and every acknowledged `(id, seq)` in it at
/// its sequence. `what` names it in a failure.
pub fn assert_holds_every_acknowledged_once(
    what: &str,
    messages: &[InboxMessage],
    acknowledged: &[(String, u64)],
) {
    assert_eq!(
        seqs(messages),
        (1..=messages.len() as u64).collect::<Vec<_>>(),
        "{what}: every sequence once, in order"
    );
    let by_id: std::collections::HashMap<&str, u64> =
        messages.iter().map(|m| (m.id.as_str(), m.seq)).collect();
    assert_eq!(by_id.len(), messages.len(), "{what}: no message twice");
    for (id, seq) in acknowledged {
        assert_eq!(
            by_id.get(id.as_str()),
            Some(seq),
            "{what}: acknowledged message {id} (seq {seq}) is missing"
        );
    }
}
