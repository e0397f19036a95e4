//! The WeChat channel against the WeChat double.

use super::{failed_code, is_sent, TIMEOUT};
use broker_config::{WeChat, WeChatApp};
use e2e::redis_server::RedisServer;
use gateway::channel::token_cache::{CachedToken, LocalTokenCache, RedisTokenCache, TokenCache};
use gateway::channel::wechat::callback::{parse_job_finish, JobFinish, JobStatus};
use gateway::channel::wechat::errors::next_quota_day;
use gateway::channel::wechat::WeChatChannel;
use gateway::channel::{Channel, Content, Outcome, Push, Target};
use gateway::infra::redis::{connect, Endpoint};
use gateway::infra::time::millis_of;
use loadtest::mock_channels::wechat::{IdSet, SendKind, DEFAULT_APPID, DEFAULT_SECRET};
use loadtest::mock_channels::WeChatDouble;
use protocol::notification::Provider;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    let connection = connect(&Endpoint::single(&redis.url())).await.unwrap();
    wechat_with(double, TIMEOUT, Arc::new(RedisTokenCache::new(connection)))
}

#[tokio::test]
async fn the_redis_cache_expires_a_token_only_while_it_is_still_the_same() {
    let redis = RedisServer::start();
    let connection = connect(&Endpoint::single(&redis.url())).await.unwrap();
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
