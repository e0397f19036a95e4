//! The authorization matrix: alice's device tries every topic of bob's, exact and with
//! wildcards, subscribing and publishing, over MQTT 3.1.1, MQTT 5 and the JSON bridge. None of
//! bob's traffic reaches alice, and nothing alice sends lands on bob's topics.

use e2e::json_ws::JsonClient;
use e2e::mqtt::{Via, V4, V5};
use e2e::TestGateway;
use protocol::envelope::Platform;
use protocol::topics::{self, DeviceAction};
use rumqttc::v5::mqttbytes::v5::{PubAckReason, SubscribeReasonCode as V5Code};
use rumqttc::{QoS, SubscribeReasonCode};
use serde_json::json;

/// Every filter that could reach bob's traffic, or anything beyond alice's own topics.
fn hostile_filters() -> Vec<String> {
    let mut filters: Vec<String> = vec![
        "#",
        "+/#",
        "+/+/#",
        "u/#",
        "u/+",
        "u/+/inbox",
        "u/+/notify",
        "u/+/presence",
        "u/+/d/+/reply",
        "u/+/d/#",
        "u/bob/#",
        "u/bob/+",
        "+/bob/inbox",
        "u/alice/#",
        "u/alice/+",
        "u/alice/d/+/reply",
        "u/alice/d/phone/send",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    filters.extend(topics::own_server_topics("bob", "phone"));
    filters.extend(DeviceAction::ALL.map(|a| topics::device_topic("bob", "phone", a)));
    filters
}

/// Every topic alice must not be able to publish on.
fn hostile_topics() -> Vec<String> {
    let mut list: Vec<String> = topics::own_server_topics("bob", "phone").into();
    list.extend(DeviceAction::ALL.map(|a| topics::device_topic("bob", "phone", a)));
    list.extend(topics::own_server_topics("alice", "phone"));
    list.extend([
        "pub/news".to_string(),
        "u/bob".into(),
        "anything".into(),
        "u/alice/d/tablet/send".into(),
    ]);
    list
}

/// Bob's devices, subscribed to all of bob's topics, and traffic to bob from the backend.
async fn bob_traffic(gw: &TestGateway) -> V4 {
    let mut bob = V4::connect(
        gw,
        Via::Tcp,
        "bob",
        Some(&gw.token("bob", "phone", Platform::Android)),
        |_| {},
    )
    .await
    .unwrap();
    for topic in topics::own_server_topics("bob", "phone") {
        bob.subscribe(&topic, QoS::AtLeastOnce).await;
    }
    bob
}

#[tokio::test]
async fn mqtt_311_device_cannot_reach_another_users_topics() {
    let gw = TestGateway::start().await;
    let mut alice = V4::connect(
        &gw,
        Via::Tcp,
        "alice",
        Some(&gw.token("alice", "phone", Platform::Ios)),
        |_| {},
    )
    .await
    .unwrap();
    for filter in hostile_filters() {
        let codes = alice.subscribe(&filter, QoS::AtLeastOnce).await;
        assert_eq!(
            codes,
            vec![SubscribeReasonCode::Failure],
            "subscribing to {filter}"
        );
    }
    let mut bob = bob_traffic(&gw).await;
    gw.post_message("bob", json!({"private": true})).await;
    bob.message_on("u/bob/inbox").await;
    for topic in hostile_topics() {
        alice
            .publish(
                &topic,
                json!({"to": "bob", "body": {"forged": true}}).to_string(),
                QoS::AtLeastOnce,
            )
            .await;
    }
    // bob sends to himself from another device: a presence/inbox event alice must not see.
    let tablet = V4::connect(
        &gw,
        Via::Tcp,
        "bob2",
        Some(&gw.token("bob", "tablet", Platform::Desktop)),
        |_| {},
    )
    .await
    .unwrap();
    tablet
        .publish(
            "u/bob/d/tablet/send",
            json!({"to": "bob", "body": {}}).to_string(),
            QoS::AtLeastOnce,
        )
        .await;
    bob.message_on("u/bob/presence").await;
    bob.message_on("u/bob/inbox").await;
    alice.no_message_on("#").await;
    bob.no_message_on("u/bob/d/phone/reply").await;
    // Nothing alice published reached bob's inbox: only the two legitimate messages did.
    bob.no_message_on("u/bob/inbox").await;
    assert_eq!(
        gw.metric("gateway_acl_denials_total{kind=\"subscribe\"}")
            .await as usize,
        hostile_filters().len()
    );
    assert_eq!(
        gw.metric("gateway_acl_denials_total{kind=\"publish\"}")
            .await as usize,
        hostile_topics().len()
    );
}

#[tokio::test]
async fn mqtt_5_refusals_carry_reason_codes() {
    let gw = TestGateway::start().await;
    let (mut alice, _) = V5::connect(
        &gw,
        Via::Tcp,
        "alice",
        Some(&gw.token("alice", "phone", Platform::Ios)),
        |_| {},
    )
    .await
    .unwrap();
    use rumqttc::v5::mqttbytes::QoS as Q5;
    for filter in hostile_filters() {
        assert_eq!(
            alice.subscribe(&filter, Q5::AtLeastOnce).await,
            vec![V5Code::NotAuthorized],
            "{filter}"
        );
    }
    let mut bob = bob_traffic(&gw).await;
    for topic in hostile_topics() {
        alice.publish(&topic, "{}", Q5::AtLeastOnce).await;
        assert_eq!(
            alice.puback().await,
            PubAckReason::NotAuthorized,
            "publishing on {topic}"
        );
    }
    bob.no_message_on("#").await;
}

#[tokio::test]
async fn json_bridge_applies_the_same_rules() {
    let gw = TestGateway::start().await;
    let mut alice = JsonClient::authenticated(&gw, &gw.token("alice", "web", Platform::Web)).await;
    for filter in hostile_filters() {
        let answer = alice.request(json!({"op": "sub", "topic": filter})).await;
        assert_eq!(
            answer["code"], "forbidden",
            "subscribing to {filter}: {answer}"
        );
    }
    let mut bob = bob_traffic(&gw).await;
    for topic in hostile_topics() {
        let answer = alice
            .request(json!({"op": "pub", "topic": topic, "payload": {"to": "bob", "body": {}}}))
            .await;
        assert_eq!(
            answer["code"], "forbidden",
            "publishing on {topic}: {answer}"
        );
    }
    gw.post_message("bob", json!({"private": true})).await;
    bob.message_on("u/bob/inbox").await;
    alice.no_message().await;
    bob.no_message_on("u/bob/inbox").await;
}

#[tokio::test]
async fn shared_subscriptions_and_topic_aliases_go_through_the_same_rules() {
    let gw = TestGateway::start().await;
    let (mut alice, _) = V5::connect(
        &gw,
        Via::Tcp,
        "alice",
        Some(&gw.token("alice", "phone", Platform::Ios)),
        |_| {},
    )
    .await
    .unwrap();
    use rumqttc::v5::mqttbytes::v5::PublishProperties;
    use rumqttc::v5::mqttbytes::QoS as Q5;
    for filter in hostile_filters()
        .iter()
        .chain(&["pub/#".to_string(), "u/alice/inbox".to_string()])
    {
        assert_eq!(
            alice
                .subscribe(&format!("$share/g/{filter}"), Q5::AtLeastOnce)
                .await,
            vec![V5Code::NotAuthorized],
            "a device shares no subscription: {filter}"
        );
    }
    let mut bob = bob_traffic(&gw).await;
    // An alias set on bob's topic, then used alone: refused both times.
    let alias = |topic_alias| PublishProperties {
        topic_alias: Some(topic_alias),
        ..Default::default()
    };
    let body = json!({"to": "bob", "body": {}}).to_string();
    for topic in ["u/bob/d/phone/send", ""] {
        alice
            .client
            .publish_with_properties(topic, Q5::AtLeastOnce, true, body.clone(), alias(1))
            .await
            .unwrap();
        assert_eq!(
            alice.puback().await,
            PubAckReason::NotAuthorized,
            "{topic:?}"
        );
    }
    bob.no_message_on("#").await;
}
