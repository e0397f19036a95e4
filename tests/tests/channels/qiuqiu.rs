//! The 球球 channel against the 球球 double.

use super::{failed_code, is_sent, TIMEOUT};
use broker_config::QiuQiu;
use gateway::channel::qiuqiu::QiuQiuChannel;
use gateway::channel::token_cache::LocalTokenCache;
use gateway::channel::{Channel, Content, Outcome, Push, Target};
use loadtest::mock_channels::qiuqiu::{Audience, PushMessage, DEFAULT_APP_ID, DEFAULT_APP_KEY};
use loadtest::mock_channels::qiuqiu::{QiuQiuConfig, DEFAULT_MASTER_SECRET};
use loadtest::mock_channels::QiuQiuDouble;
use protocol::notification::Provider;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

fn qiuqiu_config(double: &QiuQiuDouble) -> QiuQiu {
    QiuQiu {
        enabled: true,
        base_url: double.base_url(),
        app_id: DEFAULT_APP_ID.into(),
        app_key: DEFAULT_APP_KEY.into(),
        master_secret: DEFAULT_MASTER_SECRET.into(),
        ttl: Duration::from_secs(3600),
        ..QiuQiu::default()
    }
}

fn qiuqiu(double: &QiuQiuDouble) -> QiuQiuChannel {
    qiuqiu_with(double, TIMEOUT)
}

fn qiuqiu_with(double: &QiuQiuDouble, timeout: Duration) -> QiuQiuChannel {
    QiuQiuChannel::new(
        &qiuqiu_config(double),
        timeout,
        Arc::new(LocalTokenCache::new()),
    )
    .unwrap()
}

fn notification(key: &str, target: Target, url: Option<&str>) -> Push {
    Push {
        key: key.into(),
        target,
        content: Content::QiuQiuNotification {
            title: "新消息".into(),
            body: "Alice: 在吗？".into(),
            url: url.map(Into::into),
            badge: Some(3),
        },
    }
}

fn device(id: &str) -> Target {
    Target::QiuQiuDevices(vec![id.into()])
}

#[tokio::test]
async fn a_signed_auth_is_accepted_and_notifications_arrive() {
    let double = QiuQiuDouble::start().await;
    let channel = qiuqiu(&double);
    assert_eq!(channel.provider(), Provider::Qiuqiu);
    assert_eq!(json!(Provider::Qiuqiu), "qiuqiu");
    let outcome = channel
        .send(&notification(
            "chat-0001-qiuqiu",
            device("cid-1"),
            Some("qiuqiu://chat/alice"),
        ))
        .await;
    let other = channel
        .send(&notification(
            "chat-0002-qiuqiu",
            Target::QiuQiuAlias("user-bob".into()),
            None,
        ))
        .await;
    assert!(is_sent(&other), "{other:?}");
    assert_eq!(double.auth_calls(), 1, "the token is cached");

    let pushes = double.pushes();
    assert_eq!(pushes.len(), 2);
    let first = &pushes[0];
    assert_eq!(
        outcome,
        Outcome::Sent {
            provider_id: Some(first.task_id.clone())
        }
    );
    assert_eq!(first.request_id, "chat-0001-qiuqiu");
    assert_eq!(first.audience, Audience::Cid(vec!["cid-1".into()]));
    assert_eq!(first.ttl_ms, Some(3_600_000));
    assert_eq!(
        first.message,
        PushMessage::Notification {
            title: "新消息".into(),
            body: "Alice: 在吗？".into(),
            click_type: "url".into(),
            url: Some("qiuqiu://chat/alice".into()),
        }
    );
    assert_eq!(first.body["push_message"]["notification"]["badge"], 3);
    assert_eq!(pushes[1].audience, Audience::Alias(vec!["user-bob".into()]));
    assert!(matches!(
        &pushes[1].message,
        PushMessage::Notification { click_type, url: None, .. } if click_type == "startapp"
    ));
}

#[tokio::test]
async fn a_wrong_master_secret_fails_for_good() {
    let double = QiuQiuDouble::start_with(QiuQiuConfig {
        master_secret: "another-secret".into(),
        ..QiuQiuConfig::default()
    })
    .await;
    let outcome = qiuqiu(&double)
        .send(&notification("chat-0003-qiuqiu", device("cid-1"), None))
        .await;
    assert_eq!(failed_code(&outcome), "10002");
    assert!(double.pushes().is_empty());
}

#[tokio::test]
async fn a_transmission_carries_its_payload_as_json_text() {
    let double = QiuQiuDouble::start().await;
    let payload = json!({"kind": "balance", "cents": 12345});
    let push = Push {
        key: "balance-000001".into(),
        target: device("cid-1"),
        content: Content::QiuQiuTransmission {
            payload: payload.clone(),
        },
    };
    assert!(is_sent(&qiuqiu(&double).send(&push).await));
    let pushes = double.pushes();
    let PushMessage::Transmission(text) = &pushes[0].message else {
        panic!("{:?}", pushes[0].message);
    };
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(text).unwrap(),
        payload
    );
}

#[tokio::test]
async fn a_rejected_token_is_refreshed_and_the_push_retried_once() {
    let double = QiuQiuDouble::start().await;
    let channel = qiuqiu(&double);
    assert!(is_sent(
        &channel
            .send(&notification("refresh-0001", device("cid-1"), None))
            .await
    ));

    double.expire_tokens();
    assert!(is_sent(
        &channel
            .send(&notification("refresh-0002", device("cid-1"), None))
            .await
    ));
    assert_eq!(double.auth_calls(), 2);
    assert_eq!(double.calls("/push/single/cid"), 3);

    double.fail_next(2, 10001);
    let outcome = channel
        .send(&notification("refresh-0003", device("cid-1"), None))
        .await;
    assert!(
        matches!(&outcome, Outcome::Retry { code, .. } if code == "10001"),
        "{outcome:?}"
    );
    assert_eq!(double.auth_calls(), 3, "one refresh, not two");
    assert_eq!(double.pushes().len(), 2);
}

#[tokio::test]
async fn qiuqiu_errors_become_retries_and_failures() {
    let double = QiuQiuDouble::start().await;
    let channel = qiuqiu(&double);
    let push = notification("errors-0001", device("cid-1"), None);

    double.fail_next(1, 2);
    assert_eq!(
        channel.send(&push).await,
        Outcome::Retry {
            code: "2".into(),
            after: None
        }
    );
    for limit in [10003, 10005] {
        double.fail_next(1, limit);
        let outcome = channel.send(&push).await;
        assert!(
            matches!(&outcome, Outcome::Retry { code, after: Some(_) } if *code == limit.to_string()),
            "{outcome:?}"
        );
    }
    double.fail_next(1, 20001);
    assert_eq!(failed_code(&channel.send(&push).await), "20001");

    // A real parameter error from the double: a title it refuses.
    let untitled = Push {
        content: Content::QiuQiuNotification {
            title: String::new(),
            body: "body".into(),
            url: None,
            badge: None,
        },
        ..push.clone()
    };
    assert_eq!(failed_code(&channel.send(&untitled).await), "20001");
    assert!(double.pushes().is_empty());
}

#[tokio::test]
async fn a_push_sent_twice_with_its_key_is_delivered_once() {
    let double = QiuQiuDouble::start().await;
    let channel = qiuqiu_with(&double, Duration::from_millis(300));
    // Longer than 32 characters, like the gateway's keys: the request id is derived from it.
    let push = notification(
        "0198c4f5-7a2e-7c31-9d0b-3f4e5a6b7c8d-qiuqiu",
        device("cid-1"),
        None,
    );

    double.delay_next(1, Duration::from_secs(2));
    assert_eq!(
        channel.send(&push).await,
        Outcome::Retry {
            code: "timeout".into(),
            after: None
        }
    );
    assert!(is_sent(&channel.send(&push).await));
    assert!(is_sent(&channel.send(&push).await));
    let pushes = double.pushes();
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].request_id.len(), 32);
}

#[tokio::test]
async fn a_push_to_several_devices_is_one_push() {
    let double = QiuQiuDouble::start().await;
    let channel = qiuqiu(&double);
    let devices = vec!["cid-1".to_owned(), "cid-2".into(), "cid-3".into()];
    let push = notification("multi-0001", Target::QiuQiuDevices(devices.clone()), None);
    double.fail_next(1, 2);
    assert!(matches!(channel.send(&push).await, Outcome::Retry { .. }));
    assert!(is_sent(&channel.send(&push).await));
    assert!(is_sent(&channel.send(&push).await));
    let pushes = double.pushes();
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].audience, Audience::Cid(devices));
    assert_eq!(pushes[0].request_id, "multi-0001");

    let nobody = notification("multi-0002", Target::QiuQiuDevices(Vec::new()), None);
    assert_eq!(failed_code(&channel.send(&nobody).await), "no_target");
}
