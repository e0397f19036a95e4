//! The external push channels against the providers' test doubles (`loadtest::mock_channels`):
//! real HTTP, the providers' answers and error codes, token caching and refresh, and that a
//! retried push is delivered once.

use broker_config::{QiuQiu, WeChat, WeChatApp};
use e2e::redis_server::RedisServer;
use gateway::channel::qiuqiu::QiuQiuChannel;
use gateway::channel::token_cache::{CachedToken, LocalTokenCache, RedisTokenCache, TokenCache};
use gateway::channel::wechat::callback::{parse_job_finish, JobFinish, JobStatus};
use gateway::channel::wechat::errors::next_quota_day;
use gateway::channel::wechat::WeChatChannel;
use gateway::channel::{Channel, Content, Outcome, Push, Target};
use gateway::infra::time::millis_of;
use loadtest::mock_channels::qiuqiu::{Audience, PushMessage, DEFAULT_APP_ID, DEFAULT_APP_KEY};
use loadtest::mock_channels::qiuqiu::{QiuQiuConfig, DEFAULT_MASTER_SECRET};
use loadtest::mock_channels::wechat::{IdSet, SendKind, DEFAULT_APPID, DEFAULT_SECRET};
use loadtest::mock_channels::{QiuQiuDouble, WeChatDouble};
use protocol::notification::Provider;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TIMEOUT: Duration = Duration::from_secs(5);
const OPENID: &str = "oUser000000000000000000001";

fn wechat_config(double: &WeChatDouble) -> WeChat {
    WeChat {
        enabled: true,
        base_url: double.base_url(),
        apps: vec![WeChatApp {
            name: "shop".into(),
            appid: DEFAULT_APPID.into(),
            secret: DEFAULT_SECRET.into(),
            templates: Default::default(),
            per_second: 100,
            daily_quota: 100_000,
        }],
        ..WeChat::default()
    }
}

fn wechat(double: &WeChatDouble) -> WeChatChannel {
    wechat_with(double, TIMEOUT, Arc::new(LocalTokenCache::new()))
}

fn wechat_with(
    double: &WeChatDouble,
    timeout: Duration,
    cache: Arc<dyn TokenCache>,
) -> WeChatChannel {
    WeChatChannel::new(&wechat_config(double), timeout, cache).unwrap()
}

fn template(key: &str, fields: &[(&str, &str)]) -> Push {
    Push {
        key: key.into(),
        target: Target::WeChat {
            app: "shop".into(),
            openid: OPENID.into(),
        },
        content: Content::WeChatTemplate {
            template_id: "tmpl-shipped".into(),
            url: Some("https://shop.example/orders/8812".into()),
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        },
    }
}

fn subscribe(key: &str, openid: &str, fields: &[(&str, &str)]) -> Push {
    Push {
        key: key.into(),
        target: Target::WeChat {
            app: "shop".into(),
            openid: openid.into(),
        },
        content: Content::WeChatSubscribe {
            template_id: "tmpl-reminder".into(),
            page: Some("pages/order?id=8812".into()),
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        },
    }
}

fn failed_code(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Failed { code, .. } => code,
        other => panic!("not failed: {other:?}"),
    }
}

#[tokio::test]
async fn a_template_message_carries_its_key_and_values_cut_to_their_limits() {
    let double = WeChatDouble::start().await;
    let channel = wechat(&double);
    assert_eq!(channel.provider(), Provider::Wechat);
    assert_eq!(json!(Provider::Wechat), json!(Provider::Wechat.as_str()));
    assert_eq!(json!(Provider::Wechat), "wechat");
    let long_thing = "您的订单已经发货，预计明天送达，请保持电话畅通谢谢";
    let outcome = channel
        .send(&template(
            "order-8812-shipped",
            &[("thing1", long_thing), ("amount2", "39.8元\n")],
        ))
        .await;

    let sends = double.sends();
    assert_eq!(sends.len(), 1);
    let sent = &sends[0];
    assert_eq!(
        outcome,
        Outcome::Sent {
            provider_id: Some(sent.msgid.unwrap().to_string())
        }
    );
    assert_eq!(sent.kind, SendKind::Template);
    assert_eq!(sent.touser, OPENID);
    assert_eq!(sent.client_msg_id.as_deref(), Some("order-8812-shipped"));
    let thing: String = long_thing.chars().take(20).collect();
    assert_eq!(
        sent.data,
        json!({"thing1": {"value": thing}, "amount2": {"value": "39.8元"}})
    );
    assert_eq!(sent.body["url"], "https://shop.example/orders/8812");
}

#[tokio::test]
async fn one_token_serves_many_sends() {
    let double = WeChatDouble::start().await;
    let channel = Arc::new(wechat(&double));
    let outcomes = burst(&channel, "many", 40).await;
    assert!(outcomes.iter().all(is_sent), "{outcomes:?}");
    assert_eq!(double.sends().len(), 40);
    assert_eq!(double.token_calls(), 1);
}

#[tokio::test]
async fn a_token_expiring_mid_burst_is_refreshed_once() {
    let double = WeChatDouble::start().await;
    double.configure(|config| config.token_overlap = Duration::ZERO);
    let channel = Arc::new(wechat(&double));
    assert!(is_sent(&channel.send(&template("before", &[])).await));

    double.expire_tokens();
    // Every send is answered at about the same time, so that all of them find the token
    // rejected while the refresh is under way.
    double.delay_next(30, Duration::from_millis(200));
    let outcomes = burst(&channel, "burst", 30).await;
    assert!(outcomes.iter().all(is_sent), "{outcomes:?}");
    assert_eq!(double.sends().len(), 31);
    assert_eq!(
        double.token_calls(),
        2,
        "one fetch, then exactly one refresh"
    );
}

/// `n` template sends at once, each with its own key.
async fn burst(channel: &Arc<WeChatChannel>, prefix: &str, n: usize) -> Vec<Outcome> {
    let sends = (0..n).map(|i| {
        let channel = channel.clone();
        let push = template(&format!("{prefix}-{i}"), &[("thing1", "hello")]);
        tokio::spawn(async move { channel.send(&push).await })
    });
    let mut outcomes = Vec::new();
    for send in sends.collect::<Vec<_>>() {
        outcomes.push(send.await.unwrap());
    }
    outcomes
}

fn is_sent(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Sent { .. })
}

#[tokio::test]
async fn a_token_rejected_twice_is_retried_later() {
    let double = WeChatDouble::start().await;
    let channel = wechat(&double);
    double.fail_next(2, 40001);
    let outcome = channel.send(&template("rejected", &[])).await;
    assert!(
        matches!(&outcome, Outcome::Retry { code, .. } if code == "40001"),
        "{outcome:?}"
    );
    assert_eq!(double.calls("/cgi-bin/message/template/send"), 2);
    double.fail_next(1, 42001);
    assert!(is_sent(&channel.send(&template("rejected", &[])).await));
}

#[tokio::test]
async fn wechat_errors_become_retries_parks_and_failures() {
    let double = WeChatDouble::start().await;
    let channel = wechat(&double);
    let push = template("errors", &[]);

    double.fail_next(1, -1);
    assert_eq!(
        channel.send(&push).await,
        Outcome::Retry {
            code: "-1".into(),
            after: None
        }
    );

    double.fail_next(1, 45011);
    match channel.send(&push).await {
        Outcome::Retry { code, after } => {
            assert_eq!(code, "45011");
            let after = after.expect("a per-minute limit says when");
            assert!((Duration::from_secs(55)..=Duration::from_secs(65)).contains(&after));
        }
        other => panic!("{other:?}"),
    }

    // The double's own quota, not an injected code: the day's sends are used up.
    double.set_daily_quota(0);
    let before = SystemTime::now();
    let outcome = channel.send(&template("over-quota", &[])).await;
    let after = SystemTime::now();
    match outcome {
        Outcome::Park { code, until } => {
            assert_eq!(code, "45009");
            assert!(until == next_quota_day(before) || until == next_quota_day(after));
            let since_epoch = millis_of(until) / 1000;
            assert_eq!((since_epoch + 8 * 3600) % 86_400, 0, "midnight in UTC+8");
            assert!(until > after && until <= before + Duration::from_secs(86_400));
        }
        other => panic!("{other:?}"),
    }
    double.set_daily_quota(100_000);

    double.configure(|config| config.templates = IdSet::only(["tmpl-reminder"]));
    assert_eq!(failed_code(&channel.send(&push).await), "40037");
    double.configure(|config| config.templates = IdSet::Any);

    double.fail_next(1, 47003);
    assert_eq!(failed_code(&channel.send(&push).await), "47003");

    let stranger = Push {
        target: Target::WeChat {
            app: "shop".into(),
            openid: "xNotAFollower".into(),
        },
        ..push.clone()
    };
    assert_eq!(failed_code(&channel.send(&stranger).await), "43004");

    let elsewhere = Push {
        target: Target::WeChat {
            app: "no-such-app".into(),
            openid: OPENID.into(),
        },
        ..push.clone()
    };
    assert_eq!(failed_code(&channel.send(&elsewhere).await), "unknown_app");
    assert!(double.sends().is_empty());
}

#[tokio::test]
async fn a_subscribe_message_fits_the_limits_of_every_value_type() {
    let double = WeChatDouble::start().await;
    double.configure(|config| {
        config.refused.insert("oRefused".into());
    });
    let channel = wechat(&double);
    let fields = [
        ("thing1", "一二三四五六七八九十一二三四五六七八九十一二"),
        ("character_string2", &"A".repeat(40)),
        ("phone_number3", "+86 138 0013 8000 ext 1234"),
        ("car_number4", "粤B·12345X9"),
        ("name5", "欧阳诸葛司马上官东方西门"),
        ("name6", "Alexander Maximilian Smith"),
        ("phrase7", "已经发货了吗"),
        ("time8", "2025年3月1日 10:00\r\n"),
    ];
    let outcome = channel.send(&subscribe("sub-1", OPENID, &fields)).await;
    assert_eq!(outcome, Outcome::Sent { provider_id: None });

    let sends = double.sends();
    assert_eq!(sends.len(), 1, "the double checks every limit");
    let sent = &sends[0];
    assert_eq!(sent.kind, SendKind::Subscribe);
    assert_eq!(sent.body["page"], "pages/order?id=8812");
    assert_eq!(sent.body["miniprogram_state"], "formal");
    assert_eq!(sent.body["lang"], "zh_CN");
    assert_eq!(sent.data["name5"]["value"], "欧阳诸葛司马上官东方");
    assert_eq!(sent.data["name6"]["value"], "Alexander Maximilian");
    assert_eq!(sent.data["phrase7"]["value"], "已经发货了");
    assert_eq!(sent.data["time8"]["value"], "2025年3月1日 10:00");

    let refused = channel.send(&subscribe("sub-2", "oRefused", &[])).await;
    assert_eq!(failed_code(&refused), "43101");
}

#[tokio::test]
async fn a_timed_out_template_send_retried_with_its_key_is_delivered_once() {
    let double = WeChatDouble::start().await;
    let channel = wechat_with(
        &double,
        Duration::from_millis(300),
        Arc::new(LocalTokenCache::new()),
    );
    let push = template("slow-1", &[("thing1", "hello")]);
    double.delay_next(1, Duration::from_secs(2));
    assert_eq!(
        channel.send(&push).await,
        Outcome::Retry {
            code: "timeout".into(),
            after: None
        }
    );
    let retried = channel.send(&push).await;
    let sends = double.sends();
    assert_eq!(sends.len(), 1);
    assert_eq!(
        retried,
        Outcome::Sent {
            provider_id: Some(sends[0].msgid.unwrap().to_string())
        }
    );
}

#[tokio::test]
async fn nodes_share_one_token_through_redis() {
    let redis = RedisServer::start();
    let double = WeChatDouble::start().await;
    let (a, b) = (
        redis_node(&redis, &double).await,
        redis_node(&redis, &double).await,
    );
    assert!(is_sent(&a.send(&template("node-a", &[])).await));
    assert!(is_sent(&b.send(&template("node-b", &[])).await));
    assert_eq!(double.token_calls(), 1, "node b used node a's token");

    double.configure(|config| config.token_overlap = Duration::ZERO);
    double.expire_tokens();
    assert!(is_sent(&b.send(&template("node-b-2", &[])).await));
    assert!(is_sent(&a.send(&template("node-a-2", &[])).await));
    assert_eq!(double.token_calls(), 2, "node a used node b's new token");
}

/// A WeChat channel as on one node of a cluster: its own connection to the shared Redis.
async fn redis_node(redis: &RedisServer, double: &WeChatDouble) -> WeChatChannel {
    let connection = gateway::infra::redis::connect(&redis.url()).await.unwrap();
    wechat_with(double, TIMEOUT, Arc::new(RedisTokenCache::new(connection)))
}

#[tokio::test]
async fn the_redis_cache_expires_a_token_only_while_it_is_still_the_same() {
    let redis = RedisServer::start();
    let connection = gateway::infra::redis::connect(&redis.url()).await.unwrap();
    let cache = RedisTokenCache::new(connection);
    let now = SystemTime::now();
    let token = |value: &str, lives: Duration| CachedToken {
        value: value.into(),
        expires_at: now + lives,
        refresh_at: now + lives / 2,
    };
    let channel = Provider::Qiuqiu;
    assert_eq!(cache.get(channel, "app").await.unwrap(), None);

    cache
        .put(channel, "app", &token("t1", Duration::from_secs(600)))
        .await
        .unwrap();
    let cached = cache.get(channel, "app").await.unwrap().unwrap();
    assert_eq!(cached.value, "t1");
    let within = |a: SystemTime, b: SystemTime| {
        a.duration_since(b)
            .or_else(|_| b.duration_since(a))
            .unwrap()
            < Duration::from_secs(2)
    };
    assert!(within(cached.expires_at, now + Duration::from_secs(600)));
    assert!(within(cached.refresh_at, now + Duration::from_secs(300)));
    assert_eq!(cache.get(Provider::Wechat, "app").await.unwrap(), None);

    assert!(!cache.expire_if_still(channel, "app", "t0").await.unwrap());
    assert!(cache.get(channel, "app").await.unwrap().is_some());
    assert!(cache.expire_if_still(channel, "app", "t1").await.unwrap());
    assert_eq!(cache.get(channel, "app").await.unwrap(), None);

    cache
        .put(channel, "app", &token("t2", Duration::from_millis(300)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        cache.get(channel, "app").await.unwrap(),
        None,
        "gone at expiry"
    );
}

#[tokio::test]
async fn job_reports_from_the_double_are_read_for_each_status() {
    let double = WeChatDouble::start().await;
    let channel = wechat(&double);
    let Outcome::Sent {
        provider_id: Some(msgid),
    } = channel.send(&template("report-1", &[])).await
    else {
        panic!("not sent");
    };
    for (status, expected) in [
        ("success", JobStatus::Delivered),
        ("failed:user block", JobStatus::UserBlock),
        ("failed: system failed", JobStatus::SystemFailed),
        ("Failed : System  Failed", JobStatus::SystemFailed),
        ("failed:unknown", JobStatus::Other("failed:unknown".into())),
    ] {
        let xml = callback_body(&double, msgid.parse().unwrap(), status).await;
        assert_eq!(
            parse_job_finish(&xml),
            Some(JobFinish {
                msgid: msgid.clone(),
                status: expected,
                reach: None,
            }),
            "{xml}"
        );
    }
}

/// The body the double posts for a job report, caught by a one-shot HTTP endpoint.
async fn callback_body(double: &WeChatDouble, msgid: u64, status: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/v1/callbacks/wechat",
        listener.local_addr().unwrap()
    );
    let receive = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            let n = socket.read(&mut buffer).await.unwrap();
            request.extend_from_slice(&buffer[..n]);
            let text = String::from_utf8_lossy(&request);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    let body = body.to_owned();
                    socket
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nsuccess")
                        .await
                        .unwrap();
                    return body;
                }
            }
            assert!(n > 0, "the double hung up");
        }
    });
    let response = double.finish_job(&url, msgid, status).await.unwrap();
    assert!(response.status().is_success());
    receive.await.unwrap()
}

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
