//! Notification routing through the real binary, with the WeChat and 球球 push test doubles as
//! real HTTP servers: the rule of each kind, dedup, quiet hours, consent, retries, token expiry
//! and quota parking, counted at the doubles.
//!
//! It is long because it is one scenario, a test per routing behaviour, all on the same set-up
//! (the binary pointed at both doubles, users made reachable, records awaited until settled).

use e2e::device::Device;
use e2e::redis_cluster::RedisCluster;
use e2e::redis_server::RedisServer;
use e2e::shared_redis::SharedRedis;
use e2e::{Options, TestGateway, PATIENCE};
use loadtest::mock_channels::qiuqiu::{Audience, PushMessage, QiuQiuDouble};
use loadtest::mock_channels::wechat::{self, WeChatDouble};
use protocol::envelope::Platform;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

struct Doubles {
    wechat: WeChatDouble,
    qiuqiu: QiuQiuDouble,
}

impl Doubles {
    async fn start() -> Self {
        let wechat = WeChatDouble::start().await;
        wechat.configure(|c| c.token_overlap = Duration::ZERO);
        Self {
            wechat,
            qiuqiu: QiuQiuDouble::start().await,
        }
    }

    /// Gateway options that point both channels at the doubles, with quick retries.
    fn options(&self) -> Options {
        self.options_with("", "")
    }

    /// As [`Self::options`], with more keys (`, key = value`) in `[channels.wechat]` and
    /// `[channels.qiuqiu]`.
    fn options_with(&self, extra: &str, qiuqiu_extra: &str) -> Options {
        let q = self.qiuqiu.config();
        let templates = "{friend_request = \"T-friend\", payment_success = \"T-pay\", event_preview = \"T-event\", security_alert = \"T-security\"}";
        Options::default()
            .with(
                "CHANNELS__WECHAT",
                &format!(
                    "{{enabled = true, base_url = \"{}\", callback_token = \"{}\", apps = [{{name = \"main\", appid = \"{}\", secret = \"{}\", templates = {templates}}}]{extra}}}",
                    self.wechat.base_url(),
                    wechat::DEFAULT_CALLBACK_TOKEN,
                    wechat::DEFAULT_APPID,
                    wechat::DEFAULT_SECRET
                ),
            )
            .with(
                "CHANNELS__QIUQIU",
                &format!(
                    "{{enabled = true, base_url = \"{}\", app_id = \"{}\", app_key = \"{}\", master_secret = \"{}\"{qiuqiu_extra}}}",
                    self.qiuqiu.base_url(),
                    q.app_id,
                    q.app_key,
                    q.master_secret
                ),
            )
            .with("NOTIFY__POLL_INTERVAL", "20ms")
            .with("NOTIFY__RETRY_BASE", "100ms")
            .with("NOTIFY__RETRY_MAX", "400ms")
            .with("NOTIFY__AGGREGATE_WINDOW", "600ms")
    }
}

/// A user reachable on both channels, who agreed to both.
async fn reachable_user(gw: &TestGateway, user: &str) {
    let (status, body) = gw
        .api(
            Method::PUT,
            &format!("/v1/users/{user}/bindings"),
            Some(json!({"wechat": {"main": format!("o-{user}")}, "qiuqiu_devices": [format!("cid-{user}")]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = gw
        .api(
            Method::PUT,
            &format!("/v1/users/{user}/consent"),
            Some(json!({"wechat": true, "qiuqiu": true})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

async fn notify(gw: &TestGateway, notification: Value) -> Value {
    let (status, body) = gw
        .api(Method::POST, "/v1/notifications", Some(notification))
        .await;
    assert_eq!(status, 202, "{body}");
    body
}

/// Waits until every route of the notification has left `queued` / `held`; returns the record.
async fn settled(gw: &TestGateway, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, record) = gw
            .api(Method::GET, &format!("/v1/notifications/{id}"), None)
            .await;
        assert_eq!(status, 200, "{record}");
        let pending = record["routes"]
            .as_object()
            .unwrap()
            .values()
            .any(|r| r["status"] == "queued" || r["status"] == "held");
        if !pending {
            return record;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not settled: {record}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn status(record: &Value, route: &str) -> String {
    record["routes"][route]["status"]
        .as_str()
        .unwrap_or("absent")
        .to_string()
}

#[tokio::test]
async fn each_kind_follows_its_rule() {
    let doubles = Doubles::start().await;
    let gw = TestGateway::start_with(doubles.options()).await;
    reachable_user(&gw, "ann").await;
    let kinds = [
        "payment_success",
        "event_preview",
        "social_interaction",
        "security_alert",
    ];
    let mut records = Vec::new();
    for kind in kinds {
        let routed = notify(
            &gw,
            json!({"user": "ann", "kind": kind, "title": format!("{kind} title"), "body": "details", "link": "https://app.example/x", "wechat_tag": 7}),
        )
        .await;
        records.push(settled(&gw, routed["id"].as_str().unwrap()).await);
    }
    let [payment, event, social, security] = records.try_into().unwrap();
    // payment_success: the bill on WeChat, a silent balance update on 球球.
    assert_eq!(
        (status(&payment, "wechat"), status(&payment, "qiuqiu")),
        ("sent".into(), "sent".into())
    );
    // event_preview: a broadcast to the tag's followers on WeChat, and the 球球 pop-up (the
    // broadcast does not reach this user for sure).
    assert_eq!(
        (status(&event, "wechat"), status(&event, "qiuqiu")),
        ("sent".into(), "sent".into())
    );
    // social_interaction: 球球 only.
    assert_eq!(
        (status(&social, "wechat"), status(&social, "qiuqiu")),
        ("absent".into(), "sent".into())
    );
    // security_alert: WeChat first, urgent.
    assert_eq!(
        (status(&security, "wechat"), status(&security, "qiuqiu")),
        ("sent".into(), "deduplicated".into())
    );
    for record in [&payment, &event, &social, &security] {
        assert_eq!(status(record, "in_app"), "delivered");
    }

    let sends = doubles.wechat.sends();
    let templates: Vec<&str> = sends.iter().map(|s| s.template_id.as_str()).collect();
    assert_eq!(templates, ["T-pay", "T-security"]);
    let mass = doubles.wechat.mass_sends();
    assert_eq!(mass.len(), 1);
    assert_eq!(
        (mass[0].tag_id, mass[0].text.as_str()),
        (
            Some(7),
            "event_preview title\ndetails\nhttps://app.example/x"
        )
    );
    assert_eq!(sends[0].touser, "o-ann");
    assert_eq!(sends[0].body["url"], "https://app.example/x");
    assert_eq!(
        sends[0].client_msg_id.as_deref(),
        Some(format!("{}-wechat", payment["notification"]["id"].as_str().unwrap()).as_str())
    );
    let pushes = doubles.qiuqiu.pushes();
    assert_eq!(pushes.len(), 3);
    assert!(
        matches!(&pushes[0].message, PushMessage::Transmission(_)),
        "silent balance update"
    );
    assert!(
        matches!(&pushes[1].message, PushMessage::Notification { title, .. } if title == "event_preview title")
    );
    assert!(
        matches!(&pushes[2].message, PushMessage::Notification { title, .. } if title == "social_interaction title")
    );
    assert_eq!(pushes[2].audience, Audience::Cid(vec!["cid-ann".into()]));

    for (sample, expected) in [
        ("routes_total{route=\"wechat\",status=\"sent\"}", 3.0),
        (
            "routes_total{route=\"qiuqiu\",status=\"deduplicated\"}",
            1.0,
        ),
        ("attempts_total{route=\"qiuqiu\",code=\"0\"}", 3.0),
        ("attempt_seconds_count{route=\"wechat\"}", 3.0),
    ] {
        assert_eq!(
            gw.metric(&format!("gateway_notify_{sample}")).await,
            expected,
            "{sample}"
        );
    }
}

/// A deleted user's notifications are forgotten with the user: what was sent, to whom, and the
/// providers' ids of it.
#[tokio::test]
async fn deleting_a_user_forgets_the_users_notifications() {
    let doubles = Doubles::start().await;
    let gw = TestGateway::start_with(doubles.options()).await;
    reachable_user(&gw, "zoe").await;
    let routed = notify(
        &gw,
        json!({"user": "zoe", "kind": "payment_success", "title": "paid", "body": "42 yuan"}),
    )
    .await;
    let id = routed["id"].as_str().unwrap();
    settled(&gw, id).await;

    let (status, _) = gw.api(Method::DELETE, "/v1/users/zoe", None).await;
    assert_eq!(status, 200);
    let (status, body) = gw
        .api(Method::GET, &format!("/v1/notifications/{id}"), None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
}

#[tokio::test]
async fn friend_requests_are_aggregated_on_qiuqiu() {
    let doubles = Doubles::start().await;
    let gw = TestGateway::start_with(doubles.options()).await;
    reachable_user(&gw, "ben").await;
    let mut ids = Vec::new();
    for from in ["cat", "dan", "eve"] {
        let routed = notify(
            &gw,
            json!({"user": "ben", "kind": "friend_request", "title": format!("{from} wants to be friends"), "body": "accept?"}),
        )
        .await;
        ids.push(routed["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        settled(&gw, id).await;
    }
    assert_eq!(
        doubles.wechat.sends().len(),
        3,
        "a strong reminder each on WeChat"
    );
    let pushes = doubles.qiuqiu.pushes();
    assert_eq!(pushes.len(), 1, "one push per window on 球球: {pushes:?}");
    assert!(
        matches!(&pushes[0].message, PushMessage::Notification { title, .. } if title.starts_with("3 new")),
        "{pushes:?}"
    );
}

#[tokio::test]
async fn the_same_content_is_pushed_once_within_the_window() {
    let doubles = Doubles::start().await;
    let gw = TestGateway::start_with(doubles.options()).await;
    reachable_user(&gw, "cal").await;
    let notification = json!({"user": "cal", "kind": "social_interaction", "title": "dee liked your photo", "body": "❤"});
    let first = notify(&gw, notification.clone()).await;
    let second = notify(&gw, notification).await;
    assert_eq!(second["routes"]["qiuqiu"]["status"], "deduplicated");
    assert_eq!(second["routes"]["in_app"]["status"], "deduplicated");
    settled(&gw, first["id"].as_str().unwrap()).await;
    // A given dedup key counts as the same content whatever the text.
    let keyed = |title: &str| json!({"user": "cal", "kind": "social_interaction", "title": title, "body": "", "dedup_key": "like-42"});
    notify(&gw, keyed("one")).await;
    let again = notify(&gw, keyed("two")).await;
    assert_eq!(again["routes"]["qiuqiu"]["status"], "deduplicated");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(doubles.qiuqiu.pushes().len(), 2);
}

#[tokio::test]
async fn a_batch_is_routed_item_by_item_in_one_request() {
    let doubles = Doubles::start().await;
    let gw = TestGateway::start_with(doubles.options().with("NOTIFY__MAX_PER_REQUEST", "5")).await;
    reachable_user(&gw, "bea").await;
    let like = json!({"user": "bea", "kind": "social_interaction", "title": "eve liked your photo", "body": "❤"});
    let batch = json!({"notifications": [
        like,
        {"user": "bea", "kind": "no_such_kind", "title": "t", "body": "b"},
        like,
        {"user": "not a user!", "kind": "social_interaction", "title": "t", "body": "b"},
        {"user": "bea", "kind": "payment_success", "title": "Paid", "body": "¥30"},
    ]});
    let (status, body) = gw
        .api(Method::POST, "/v1/notifications/batch", Some(batch))
        .await;
    assert_eq!(status, 202, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(
        results.len(),
        5,
        "one answer per notification, in order: {body}"
    );
    assert_eq!(results[0]["routes"]["qiuqiu"]["status"], "queued");
    assert_eq!(results[1]["error"]["code"], "invalid_request");
    assert_eq!(
        results[2]["routes"]["qiuqiu"]["status"], "deduplicated",
        "the same content twice in one batch goes out once"
    );
    assert_eq!(results[3]["error"]["code"], "invalid_request");
    assert_eq!(results[4]["routes"]["wechat"]["status"], "queued", "{body}");
    settled(&gw, results[0]["id"].as_str().unwrap()).await;
    settled(&gw, results[4]["id"].as_str().unwrap()).await;
    // The like once, and the payment's silent balance update.
    assert_eq!(doubles.qiuqiu.pushes().len(), 2);
    assert_eq!(doubles.wechat.sends().len(), 1);
    // The four well-formed ones went to the router together (which refused the unknown kind).
    let batches = gw.metric("gateway_notify_decision_batch_size_count").await;
    let routed = gw.metric("gateway_notify_decision_batch_size_sum").await;
    assert_eq!((batches, routed), (1.0, 4.0));

    let six = json!({"notifications": vec![like; 6]});
    let (status, body) = gw
        .api(Method::POST, "/v1/notifications/batch", Some(six))
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "too_large");
    let (status, body) = gw
        .api(
            Method::POST,
            "/v1/notifications/batch",
            Some(json!({"notes": []})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("bad_json")),
        "{body}"
    );
}

#[tokio::test]
async fn an_event_preview_is_broadcast_once_per_tag_and_its_report_counts_the_followers() {
    let doubles = Doubles::start().await;
    // The first answer is lost (later than the gateway waits): the retry must not broadcast
    // again, and WeChat's answer to the repeated clientmsgid names the first send.
    doubles
        .wechat
        .configure(|c| c.mass_retry_gap = Duration::ZERO);
    doubles.wechat.delay_next(1, Duration::from_millis(1500));
    let options = doubles.options().with("CHANNELS__REQUEST_TIMEOUT", "500ms");
    let gw = TestGateway::start_with(options).await;
    let followers = ["fa", "fb", "fc"];
    for user in followers {
        reachable_user(&gw, user).await;
    }
    let preview = |user: &str| json!({"user": user, "kind": "event_preview", "title": "Club night", "body": "Friday 20:00", "wechat_tag": 42});
    let batch = json!({"notifications": followers.map(preview)});
    let (status_code, body) = gw
        .api(Method::POST, "/v1/notifications/batch", Some(batch))
        .await;
    assert_eq!(status_code, 202, "{body}");
    let wechat: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["routes"]["wechat"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(wechat, ["queued", "deduplicated", "deduplicated"], "{body}");
    let first = body["results"][0]["id"].as_str().unwrap();
    let record = settled(&gw, first).await;
    assert_eq!(status(&record, "wechat"), "sent", "{record}");
    let mass = doubles.wechat.mass_sends();
    assert_eq!(mass.len(), 1, "one broadcast, also after the retry");
    assert_eq!(mass[0].tag_id, Some(42));
    assert_eq!(
        mass[0].clientmsgid.as_deref(),
        Some(format!("{first}-wechat").as_str())
    );
    assert_eq!(doubles.wechat.calls("/cgi-bin/message/mass/sendall"), 2);
    // Every follower gets the 球球 pop-up: the broadcast does not count as theirs.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(doubles.qiuqiu.pushes().len(), 3);

    doubles
        .wechat
        .finish_mass_job(
            &gw.url("/v1/callbacks/wechat"),
            mass[0].msg_id,
            "send success",
            (120, 117, 2),
        )
        .await
        .unwrap();
    let (_, record) = gw
        .api(Method::GET, &format!("/v1/notifications/{first}"), None)
        .await;
    assert_eq!(status(&record, "wechat"), "delivered", "{record}");
    assert_eq!(
        record["routes"]["wechat"]["detail"],
        "sent to 117 of 120 followers, 2 failed"
    );

    // Without a tag there is no one to broadcast to; without WeChat, nothing to send it with.
    let untagged = notify(
        &gw,
        json!({"user": "fa", "kind": "event_preview", "title": "Quiz", "body": "Sat"}),
    )
    .await;
    assert_eq!(untagged["routes"]["wechat"]["status"], "skipped");
    assert_eq!(
        untagged["routes"]["wechat"]["detail"],
        "no wechat_tag to broadcast to"
    );
    let without_wechat = TestGateway::start().await;
    let tagged = notify(&without_wechat, preview("fa")).await;
    assert_eq!(
        (
            &tagged["routes"]["wechat"]["status"],
            &tagged["routes"]["wechat"]["detail"]
        ),
        (
            &json!("skipped"),
            &json!("no WeChat app is enabled to broadcast from")
        )
    );
}

#[tokio::test]
async fn quiet_hours_hold_pushes_but_not_urgent_ones() {
    let doubles = Doubles::start().await;
    let gw = TestGateway::start_with(doubles.options()).await;
    reachable_user(&gw, "dot").await;
    // A window around the present moment in Shanghai, crossing midnight when it is late.
    let now = chrono::Utc::now().with_timezone(&chrono_tz::Asia::Shanghai);
    let start = (now - chrono::Duration::hours(1))
        .format("%H:%M")
        .to_string();
    let end = (now + chrono::Duration::hours(2))
        .format("%H:%M")
        .to_string();
    let (status_code, body) = gw
        .api(
            Method::PUT,
            "/v1/users/dot/quiet-hours",
            Some(json!({"time_zone": "Asia/Shanghai", "windows": [{"start": start, "end": end}]})),
        )
        .await;
    assert_eq!(status_code, 200, "{body}");
    let held = notify(
        &gw,
        json!({"user": "dot", "kind": "social_interaction", "title": "late like", "body": ""}),
    )
    .await;
    assert_eq!(held["routes"]["qiuqiu"]["status"], "held");
    assert!(
        held["routes"]["qiuqiu"]["due_at"].as_u64().unwrap()
            > gateway::infra::time::unix_millis() + 3_600_000
    );
    let urgent = notify(&gw, json!({"user": "dot", "kind": "social_interaction", "title": "urgent", "body": "", "priority": "urgent"})).await;
    assert_eq!(
        settled(&gw, urgent["id"].as_str().unwrap()).await["routes"]["qiuqiu"]["status"],
        "sent"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(doubles.qiuqiu.pushes().len(), 1, "only the urgent one");

    for bad in [
        json!({"time_zone": "Mars/Base", "windows": []}),
        json!({"time_zone": "UTC", "windows": [{"start": "25:00", "end": "07:00"}]}),
    ] {
        let (code, body) = gw
            .api(Method::PUT, "/v1/users/dot/quiet-hours", Some(bad))
            .await;
        assert_eq!(
            (code, body["error"]["code"].as_str()),
            (400, Some("invalid_request")),
            "{body}"
        );
    }
}

#[tokio::test]
async fn without_consent_nothing_is_pushed_and_withdrawal_reaches_queued_pushes() {
    let doubles = Doubles::start().await;
    let gw = TestGateway::start_with(
        doubles
            .options()
            .with("NOTIFY__RETRY_BASE", "1s")
            .with("NOTIFY__RETRY_MAX", "1s"),
    )
    .await;
    reachable_user(&gw, "eli").await;
    doubles.qiuqiu.fail_next(1, 2); // "service starting": retried later
    let queued = notify(
        &gw,
        json!({"user": "eli", "kind": "social_interaction", "title": "a", "body": ""}),
    )
    .await;
    let id = queued["id"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, withdrawn) = gw
        .api(
            Method::PUT,
            "/v1/users/eli/consent",
            Some(json!({"wechat": false, "qiuqiu": false})),
        )
        .await;
    assert_eq!(withdrawn["qiuqiu"], false);
    let record = settled(&gw, id).await;
    assert_eq!(record["routes"]["qiuqiu"]["status"], "skipped");
    assert_eq!(record["routes"]["qiuqiu"]["detail"], "consent withdrawn");
    let later = notify(
        &gw,
        json!({"user": "eli", "kind": "social_interaction", "title": "b", "body": ""}),
    )
    .await;
    assert_eq!(later["routes"]["qiuqiu"]["status"], "skipped");
    assert!(doubles.qiuqiu.pushes().is_empty());
}

#[tokio::test]
async fn retries_end_dead_and_permanent_errors_are_not_retried() {
    let doubles = Doubles::start().await;
    let gw = TestGateway::start_with(doubles.options()).await;
    reachable_user(&gw, "fay").await;
    doubles.qiuqiu.fail_next(3, 2);
    let busy = notify(
        &gw,
        json!({"user": "fay", "kind": "social_interaction", "title": "a", "body": ""}),
    )
    .await;
    let record = settled(&gw, busy["id"].as_str().unwrap()).await;
    assert_eq!(record["routes"]["qiuqiu"]["status"], "dead");
    let attempts = record["routes"]["qiuqiu"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{record}");
    assert!(attempts
        .iter()
        .all(|a| a["code"] == "2" && a["latency_ms"].is_u64()));

    doubles.qiuqiu.fail_next(1, 20001);
    let bad = notify(
        &gw,
        json!({"user": "fay", "kind": "social_interaction", "title": "b", "body": ""}),
    )
    .await;
    let record = settled(&gw, bad["id"].as_str().unwrap()).await;
    assert_eq!(record["routes"]["qiuqiu"]["status"], "failed");
    assert_eq!(
        record["routes"]["qiuqiu"]["attempts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_token_that_expires_mid_burst_is_refreshed_once() {
    let doubles = Doubles::start().await;
    let gw = TestGateway::start_with(doubles.options()).await;
    reachable_user(&gw, "gil").await;
    let mut ids = Vec::new();
    for i in 0..20 {
        if i == 10 {
            doubles.wechat.expire_tokens();
        }
        let routed = notify(&gw, json!({"user": "gil", "kind": "payment_success", "title": format!("bill {i}"), "body": "39.8元"})).await;
        ids.push(routed["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        assert_eq!(status(&settled(&gw, id).await, "wechat"), "sent");
    }
    assert_eq!(doubles.wechat.sends().len(), 20);
    assert!(
        doubles.wechat.token_calls() <= 2,
        "{} token calls",
        doubles.wechat.token_calls()
    );
}

#[tokio::test]
async fn a_spent_daily_quota_parks_pushes_until_it_resets() {
    let doubles = Doubles::start().await;
    let gw = TestGateway::start_with(doubles.options()).await;
    reachable_user(&gw, "hal").await;
    doubles.wechat.set_daily_quota(1);
    let first = notify(
        &gw,
        json!({"user": "hal", "kind": "payment_success", "title": "one", "body": ""}),
    )
    .await;
    assert_eq!(
        status(&settled(&gw, first["id"].as_str().unwrap()).await, "wechat"),
        "sent"
    );
    let second = notify(
        &gw,
        json!({"user": "hal", "kind": "payment_success", "title": "two", "body": ""}),
    )
    .await;
    let id = second["id"].as_str().unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, record) = gw
            .api(Method::GET, &format!("/v1/notifications/{id}"), None)
            .await;
        let wechat = &record["routes"]["wechat"];
        if wechat["attempts"].as_array().is_some_and(|a| !a.is_empty()) {
            assert_eq!(wechat["status"], "queued", "{record}");
            assert!(
                wechat["detail"].as_str().unwrap().contains("45009"),
                "{record}"
            );
            let midnight =
                gateway::channel::provider_day::next_provider_midnight(chrono::Utc::now());
            assert_eq!(
                wechat["due_at"].as_u64().unwrap(),
                midnight.timestamp_millis() as u64
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{record}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        doubles.wechat.calls("/cgi-bin/message/template/send"),
        2,
        "never hot-retried"
    );
}

#[tokio::test]
async fn in_app_delivery_is_live_and_an_online_user_is_not_pushed_when_the_rule_says_so() {
    let doubles = Doubles::start().await;
    let gw = TestGateway::start_with(doubles.options()).await;
    reachable_user(&gw, "ivy").await;
    let mut phone = Device::connect(&gw, "ivy", "phone", Platform::Ios).await;
    phone
        .mqtt
        .subscribe("u/ivy/notify", rumqttc::QoS::AtLeastOnce)
        .await;
    let routed = notify(&gw, json!({"user": "ivy", "kind": "social_interaction", "title": "jo commented", "body": "nice"})).await;
    assert_eq!(routed["routes"]["qiuqiu"]["status"], "skipped");
    let live = phone.mqtt.message_on("u/ivy/notify").await;
    assert_eq!(live["body"]["notification"]["title"], "jo commented");
    assert!(
        live["seq"].as_u64().unwrap() >= 1,
        "roamed like any message: {live}"
    );
    // A sync says which of its entries are notifications.
    let message = gw.post_message("ivy", json!({"text": "hi"})).await;
    let pages = phone.sync(json!({"after": 0})).await;
    assert_eq!(pages.len(), 1);
    assert_eq!(pages[0]["notifications"], json!([live["seq"]]));
    let seqs: Vec<&Value> = (pages[0]["messages"].as_array().unwrap().iter())
        .map(|m| &m["seq"])
        .collect();
    assert_eq!(seqs, [&live["seq"], &message["seq"]]);

    let (status_code, body) = gw
        .api(
            Method::POST,
            "/v1/notifications",
            Some(json!({"user": "ivy", "kind": "nope", "title": "", "body": ""})),
        )
        .await;
    assert_eq!(
        (status_code, body["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status_code, _) = gw
        .api(Method::GET, "/v1/notifications/unknown-id", None)
        .await;
    assert_eq!(status_code, 404);
}

#[tokio::test]
async fn wechat_delivery_reports_turn_sent_into_delivered_or_failed() {
    let doubles = Doubles::start().await;
    let gw = TestGateway::start_with(doubles.options()).await;
    reachable_user(&gw, "jay").await;
    let mut sent = Vec::new();
    for title in ["first", "second"] {
        let routed = notify(
            &gw,
            json!({"user": "jay", "kind": "payment_success", "title": title, "body": "9.9元"}),
        )
        .await;
        let record = settled(&gw, routed["id"].as_str().unwrap()).await;
        assert_eq!(status(&record, "wechat"), "sent");
        sent.push(record);
    }
    let callback = gw.url("/v1/callbacks/wechat");
    for (record, report) in sent.iter().zip(["success", "failed:user block"]) {
        let msgid: u64 = record["routes"]["wechat"]["provider_id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        doubles
            .wechat
            .finish_job(&callback, msgid, report)
            .await
            .unwrap();
    }
    let (_, delivered) = gw
        .api(
            Method::GET,
            &format!(
                "/v1/notifications/{}",
                sent[0]["notification"]["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(status(&delivered, "wechat"), "delivered");
    let (_, blocked) = gw
        .api(
            Method::GET,
            &format!(
                "/v1/notifications/{}",
                sent[1]["notification"]["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(status(&blocked, "wechat"), "failed");
    assert_eq!(blocked["routes"]["wechat"]["detail"], "user block");
}

#[tokio::test]
async fn a_kill_9_during_a_burst_loses_nothing_and_sends_nothing_twice() {
    let doubles = Doubles::start().await;
    let options = doubles.options().with("NOTIFY__LEASE", "1s");
    let gw = TestGateway::start_with(options.clone()).await;
    reachable_user(&gw, "kit").await;
    doubles.qiuqiu.delay_next(1000, Duration::from_millis(20));
    let mut ids = Vec::new();
    for i in 0..60 {
        let routed = notify(&gw, json!({"user": "kit", "kind": "social_interaction", "title": format!("like {i}"), "body": "❤"})).await;
        ids.push(routed["id"].as_str().unwrap().to_string());
    }
    let data_dir = gw.stop().await; // SIGKILL while pushes are in flight
    let before = doubles.qiuqiu.pushes().len();
    assert!(
        before < 60,
        "the kill came too late to test anything: {before} pushed"
    );

    let gw = TestGateway::try_start(options, data_dir).await.unwrap();
    for id in &ids {
        assert_eq!(status(&settled(&gw, id).await, "qiuqiu"), "sent", "{id}");
    }
    let pushes = doubles.qiuqiu.pushes();
    let mut keys: Vec<&str> = pushes.iter().map(|p| p.request_id.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(
        (pushes.len(), keys.len()),
        (60, 60),
        "each notification delivered exactly once"
    );
}

#[tokio::test]
async fn a_device_sets_its_users_quiet_hours_on_its_topic() {
    let doubles = Doubles::start().await;
    let gw = TestGateway::start_with(doubles.options()).await;
    reachable_user(&gw, "lou").await;
    let mut phone = Device::connect(&gw, "lou", "phone", Platform::Android).await;
    let now = chrono::Utc::now().with_timezone(&chrono_tz::Europe::Berlin);
    let hours = json!({"time_zone": "Europe/Berlin", "windows": [{
        "start": (now - chrono::Duration::minutes(30)).format("%H:%M").to_string(),
        "end": (now + chrono::Duration::hours(1)).format("%H:%M").to_string(),
    }]});
    phone
        .mqtt
        .publish(
            "u/lou/d/phone/quiet-hours",
            hours.to_string(),
            rumqttc::QoS::AtLeastOnce,
        )
        .await;
    phone
        .mqtt
        .inbox
        .wait_for("PUBACK", |i| match i {
            e2e::mqtt::Incoming::Packet(rumqttc::Packet::PubAck(_)) => Some(()),
            _ => None,
        })
        .await;
    // Offline, so the push is not skipped for an online user.
    phone.mqtt.client.disconnect().await.unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !gw.devices("lou").await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the phone stays online"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let routed = notify(
        &gw,
        json!({"user": "lou", "kind": "social_interaction", "title": "hush", "body": "later"}),
    )
    .await;
    assert_eq!(routed["routes"]["qiuqiu"]["status"], "held");

    let mut tablet = Device::connect(&gw, "lou", "tablet", Platform::Android).await;
    tablet
        .mqtt
        .publish(
            "u/lou/d/tablet/quiet-hours",
            json!({"time_zone": "Nowhere/Land", "windows": []}).to_string(),
            rumqttc::QoS::AtLeastOnce,
        )
        .await;
    let reply = tablet.mqtt.message_on("u/lou/d/tablet/reply").await;
    assert_eq!(
        (reply["type"].as_str(), reply["code"].as_str()),
        (Some("error"), Some("invalid_request")),
        "{reply}"
    );
}

#[tokio::test]
async fn trusted_backends_hand_in_notifications_over_mqtt() {
    use rumqttc::v5::mqttbytes::v5::PubAckReason;
    use rumqttc::v5::mqttbytes::QoS;
    let doubles = Doubles::start().await;
    let gw = TestGateway::start_with(doubles.options()).await;
    reachable_user(&gw, "max").await;
    let (mut backend, _) = e2e::mqtt::V5::connect(
        &gw,
        e2e::mqtt::Via::Tcp,
        "shop-backend",
        Some(&gw.api_key),
        |_| {},
    )
    .await
    .expect("a backend logs in with an API key");
    let notification =
        json!({"user": "max", "kind": "social_interaction", "title": "from mqtt", "body": "hi"});
    backend
        .publish(
            "svc/notifications",
            notification.to_string(),
            QoS::AtLeastOnce,
        )
        .await;
    assert_eq!(backend.puback().await, PubAckReason::Success);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while doubles.qiuqiu.pushes().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "never pushed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bad_kind = json!({"user": "max", "kind": "nope", "title": "", "body": ""});
    backend
        .publish("svc/notifications", bad_kind.to_string(), QoS::AtLeastOnce)
        .await;
    assert_eq!(backend.puback().await, PubAckReason::PayloadFormatInvalid);
    backend.publish("u/max/inbox", "{}", QoS::AtLeastOnce).await;
    assert_eq!(backend.puback().await, PubAckReason::NotAuthorized);
}

#[tokio::test]
async fn two_nodes_submitting_the_same_notification_at_once_push_it_once() {
    the_same_notification_on_two_nodes_at_once_is_pushed_once(RedisServer::start()).await
}

#[tokio::test]
async fn two_nodes_on_a_redis_cluster_push_the_same_notification_once() {
    the_same_notification_on_two_nodes_at_once_is_pushed_once(RedisCluster::start()).await
}

async fn the_same_notification_on_two_nodes_at_once_is_pushed_once(redis: impl SharedRedis) {
    let doubles = Doubles::start().await;
    let (a, b) = two_nodes(&redis, &doubles, "").await;
    reachable_user(&a, "ned").await;

    for round in 0..5 {
        let notification = json!({"user": "ned", "kind": "social_interaction", "title": format!("same {round}"), "body": "once"});
        let (on_a, on_b) = tokio::join!(notify(&a, notification.clone()), notify(&b, notification));
        let statuses = [&on_a, &on_b].map(|r| {
            r["routes"]["qiuqiu"]["status"]
                .as_str()
                .unwrap()
                .to_string()
        });
        assert_eq!(
            statuses.iter().filter(|s| *s == "deduplicated").count(),
            1,
            "round {round}: {statuses:?}"
        );
        let winner = if statuses[0] == "deduplicated" {
            &on_b
        } else {
            &on_a
        };
        let gw = if statuses[0] == "deduplicated" {
            &b
        } else {
            &a
        };
        assert_eq!(
            status(&settled(gw, winner["id"].as_str().unwrap()).await, "qiuqiu"),
            "sent"
        );
    }
    assert_eq!(doubles.qiuqiu.pushes().len(), 5);
}

/// A submission that fails after its content was claimed (here: Redis refuses to write the
/// user's log, so the in-app append fails) gives its claim up: the sender's retry is routed
/// and pushed, not deduplicated against a push that never happened.
#[tokio::test]
async fn a_failed_submissions_retry_is_not_deduplicated() {
    let redis = RedisServer::start();
    let doubles = Doubles::start().await;
    let gw = TestGateway::start_with(
        doubles
            .options()
            .with("STORE__BACKEND", "redis")
            .with("STORE__REDIS_URL", &redis.url()),
    )
    .await;
    reachable_user(&gw, "rita").await;
    let notification = json!({"user": "rita", "kind": "social_interaction", "title": "liked", "body": "your photo"});

    // Everything writable but rita's log and its head: the claims go through, the append not.
    redis.command(&[
        "ACL",
        "SETUSER",
        "default",
        "resetkeys",
        "%R~*",
        "~gw:[^{]*",
        "~gw:{rita}:notify:*",
        "~gw:{rita}:presence",
        "~gw:{rita}:cursors",
    ]);
    let (code, body) = gw
        .api(
            Method::POST,
            "/v1/notifications",
            Some(notification.clone()),
        )
        .await;
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (503, Some("unavailable")),
        "{body}"
    );
    redis.command(&["ACL", "SETUSER", "default", "resetkeys", "~*"]);

    let retried = notify(&gw, notification).await;
    assert_eq!(status(&retried, "in_app"), "delivered", "{retried}");
    let id = retried["id"].as_str().unwrap();
    assert_eq!(status(&settled(&gw, id).await, "qiuqiu"), "sent");
    assert_eq!(doubles.qiuqiu.pushes().len(), 1);
}

/// WeChat's callbacks fail closed: unsigned, forged, stale and replayed callbacks are refused
/// (401 with a JSON body), and the double's, signed as WeChat signs, are taken.
#[tokio::test]
async fn wechat_callbacks_must_be_signed_fresh_and_new() {
    use gateway::channel::wechat::callback::signature;
    let doubles = Doubles::start().await;
    let gw = TestGateway::start_with(doubles.options_with(", callback_window = \"60s\"", "")).await;
    let event = "<xml><Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event><MsgID>1</MsgID><Status><![CDATA[success]]></Status></xml>";
    let client = reqwest::Client::new();
    let post = |query: String| {
        client
            .post(gw.url(&format!("/v1/callbacks/wechat{query}")))
            .body(event)
            .send()
    };
    let signed = |token: &str, timestamp: u64, nonce: &str| {
        let timestamp = timestamp.to_string();
        let signature = signature(token, &timestamp, nonce);
        format!("?signature={signature}&timestamp={timestamp}&nonce={nonce}")
    };
    let now = gateway::infra::time::unix_seconds();
    let token = wechat::DEFAULT_CALLBACK_TOKEN;
    for (what, query, reason) in [
        ("unsigned", String::new(), "missing or malformed"),
        (
            "forged",
            signed("guess", now, "1"),
            "wrong WeChat signature",
        ),
        (
            "stale",
            signed(token, now - 120, "2"),
            "timestamp is outside",
        ),
    ] {
        let refused = post(query).await.unwrap();
        assert_eq!(refused.status().as_u16(), 401, "{what}");
        let body: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized", "{what}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(reason), "{what}: {message}");
    }
    let fresh = signed(token, now, "3");
    let taken = post(fresh.clone()).await.unwrap();
    assert_eq!(taken.status().as_u16(), 200);
    assert_eq!(taken.text().await.unwrap(), "success");
    let replayed = post(fresh).await.unwrap();
    assert_eq!(replayed.status().as_u16(), 401, "replayed");
}

/// WeChat's safe mode (安全模式): with an EncodingAESKey configured, a callback is taken only
/// encrypted, for the configured app, with WeChat's `msg_signature` over the ciphertext.
#[tokio::test]
async fn in_safe_mode_only_encrypted_wechat_callbacks_are_taken() {
    use gateway::channel::wechat::callback::signature;
    use gateway::channel::wechat::safe_mode::{msg_signature, SafeMode};
    const KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
    let doubles = Doubles::start().await;
    let gw = TestGateway::start_with(
        doubles.options_with(&format!(", encoding_aes_key = \"{KEY}\""), ""),
    )
    .await;
    let event = "<xml><Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event><MsgID>1</MsgID><Status><![CDATA[success]]></Status></xml>";
    let mode = SafeMode::new(KEY, vec![wechat::DEFAULT_APPID.into()]).unwrap();
    let token = wechat::DEFAULT_CALLBACK_TOKEN;
    let client = reqwest::Client::new();
    let post = |nonce: &str, encrypted: &str, forged: bool, body: String| {
        let now = gateway::infra::time::unix_seconds().to_string();
        let plain = signature(token, &now, nonce);
        let over = msg_signature(if forged { "guess" } else { token }, &now, nonce, encrypted);
        let query = format!(
            "?signature={plain}&timestamp={now}&nonce={nonce}&encrypt_type=aes&msg_signature={over}"
        );
        client
            .post(gw.url(&format!("/v1/callbacks/wechat{query}")))
            .body(body)
            .send()
    };
    let encrypted = mode.seal(event, wechat::DEFAULT_APPID, [9; 16]);
    let wrapped = format!("<xml><ToUserName><![CDATA[gh_1]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>");

    let taken = post("1", &encrypted, false, wrapped.clone()).await.unwrap();
    assert_eq!(taken.status().as_u16(), 200);
    assert_eq!(taken.text().await.unwrap(), "success");

    let forged = post("2", &encrypted, true, wrapped).await.unwrap();
    assert_eq!(forged.status().as_u16(), 401);
    let plain = post("3", "", false, event.to_string()).await.unwrap();
    assert_eq!(plain.status().as_u16(), 400);
    let body: serde_json::Value = plain.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("must be encrypted"),
        "{body}"
    );
    let foreign = mode.seal(event, "wx-someone-else", [9; 16]);
    let wrapped = format!("<xml><Encrypt><![CDATA[{foreign}]]></Encrypt></xml>");
    let refused = post("4", &foreign, false, wrapped).await.unwrap();
    assert_eq!(refused.status().as_u16(), 401, "another app's callback");
}

/// Two nodes on one Redis, sharing node A's secrets as nodes of one service do, with extra
/// `[channels.qiuqiu]` keys.
async fn two_nodes(
    redis: &impl SharedRedis,
    doubles: &Doubles,
    qiuqiu_extra: &str,
) -> (TestGateway, TestGateway) {
    let on_redis = |node: &str| {
        redis
            .gateway_options(doubles.options_with("", qiuqiu_extra))
            .with("STORE__NODE_ID", node)
    };
    let a = TestGateway::start_with(on_redis("node-a")).await;
    let b = TestGateway::start_beside(&a, on_redis("node-b"))
        .await
        .unwrap();
    (a, b)
}

#[tokio::test]
async fn two_nodes_share_the_providers_rate() {
    let redis = RedisServer::start();
    let doubles = Doubles::start().await;
    let (a, b) = two_nodes(&redis, &doubles, ", per_second = 20").await;
    reachable_user(&a, "ola").await;
    let mut ids = Vec::new();
    for i in 0..60 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let routed = notify(gw, json!({"user": "ola", "kind": "social_interaction", "title": format!("n{i}"), "body": "x"})).await;
        ids.push((i % 2, routed["id"].as_str().unwrap().to_string()));
    }
    for (node, id) in &ids {
        let gw = if *node == 0 { &a } else { &b };
        settled(gw, id).await;
    }
    let pushes = doubles.qiuqiu.pushes();
    assert_eq!(pushes.len(), 60);
    // One bucket of 20 per second for both nodes: 20 at once, then 40 more at 20/s. Two
    // buckets of their own would have finished in about half a second.
    let span = pushes.last().unwrap().at - pushes.first().unwrap().at;
    assert!(
        span >= Duration::from_millis(1500),
        "60 pushes at 20/s shared took {span:?}"
    );
}
