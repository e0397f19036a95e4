//! The 球球 double: the signed auth, pushes and their dedup, parameter errors, tokens and
//! injected failures.

use super::post_json;
use gateway::infra::time::unix_millis;
use loadtest::mock_channels::qiuqiu::{self, Audience, PushMessage};
use loadtest::mock_channels::QiuQiuDouble;
use serde_json::{json, Value};
use std::time::Duration;

async fn auth_with(qiuqiu: &QiuQiuDouble, sign: String, timestamp: Value) -> Value {
    let config = qiuqiu.config();
    post_json(
        &format!("{}/v2/{}/auth", qiuqiu.base_url(), config.app_id),
        json!({"sign": sign, "timestamp": timestamp, "appkey": config.app_key}),
    )
    .await
}

async fn qiuqiu_token(qiuqiu: &QiuQiuDouble) -> String {
    let config = qiuqiu.config();
    let timestamp = unix_millis().to_string();
    let sign = qiuqiu::sign(&config.app_key, &timestamp, &config.master_secret);
    let reply = auth_with(qiuqiu, sign, json!(timestamp)).await;
    reply["data"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {reply}"))
        .to_owned()
}

async fn push(qiuqiu: &QiuQiuDouble, token: &str, kind: &str, body: Value) -> Value {
    let url = format!(
        "{}/v2/{}/push/single/{kind}",
        qiuqiu.base_url(),
        qiuqiu.config().app_id
    );
    reqwest::Client::new()
        .post(url)
        .header("token", token)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn notification(request_id: &str) -> Value {
    json!({"request_id": request_id, "settings": {"ttl": 7_200_000},
           "audience": {"cid": ["cid-device-1"]},
           "push_message": {"notification": {"title": "新消息", "body": "你有一条好友请求",
                                             "click_type": "url", "url": "https://example.com"}}})
}

fn code(reply: &Value) -> i64 {
    reply["code"].as_i64().unwrap_or(i64::MIN)
}

#[tokio::test]
async fn qiuqiu_auth_checks_the_sign() {
    let qiuqiu = QiuQiuDouble::start().await;
    let config = qiuqiu.config();
    let timestamp = unix_millis();
    let good = qiuqiu::sign(
        &config.app_key,
        &timestamp.to_string(),
        &config.master_secret,
    );

    // The timestamp may be a number or a string.
    let reply = auth_with(&qiuqiu, good.clone(), json!(timestamp)).await;
    assert_eq!(code(&reply), 0, "{reply}");
    assert_eq!(reply["msg"], "success");
    let expire_time: u64 = reply["data"]["expire_time"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(expire_time > timestamp + 23 * 3600 * 1000);
    let reply = auth_with(&qiuqiu, good.to_uppercase(), json!(timestamp.to_string())).await;
    assert_eq!(code(&reply), 0, "{reply}");

    let bad = qiuqiu::sign(&config.app_key, &timestamp.to_string(), "wrong secret");
    let reply = auth_with(&qiuqiu, bad, json!(timestamp)).await;
    assert_eq!(code(&reply), qiuqiu::AUTH_REJECTED);
    let stale = timestamp - 3600 * 1000;
    let sign = qiuqiu::sign(&config.app_key, &stale.to_string(), &config.master_secret);
    let reply = auth_with(&qiuqiu, sign, json!(stale)).await;
    assert_eq!(code(&reply), qiuqiu::AUTH_REJECTED);
    let reply = post_json(
        &format!("{}/v2/other-app/auth", qiuqiu.base_url()),
        json!({"sign": good, "timestamp": timestamp, "appkey": config.app_key}),
    )
    .await;
    assert_eq!(code(&reply), qiuqiu::AUTH_REJECTED);
    assert_eq!(qiuqiu.auth_calls(), 4);
    assert_eq!(qiuqiu.calls("/v2/other-app/auth"), 1);
}

#[tokio::test]
async fn qiuqiu_push_dedups_request_id() {
    let qiuqiu = QiuQiuDouble::start().await;
    let token = qiuqiu_token(&qiuqiu).await;
    let first = push(&qiuqiu, &token, "cid", notification("req-0000000001")).await;
    assert_eq!(code(&first), 0, "{first}");
    let tasks = first["data"].as_object().unwrap();
    assert_eq!(tasks.len(), 1);
    let (task_id, targets) = tasks.iter().next().unwrap();
    assert_eq!(targets["cid-device-1"], "successed_online");

    let retry = push(&qiuqiu, &token, "cid", notification("req-0000000001")).await;
    assert_eq!(retry, first, "a repeated request_id answers success again");
    let pushes = qiuqiu.pushes();
    assert_eq!(pushes.len(), 1, "but is delivered once");
    assert_eq!(&pushes[0].task_id, task_id);
    assert_eq!(pushes[0].request_id, "req-0000000001");
    assert_eq!(
        pushes[0].audience,
        Audience::Cid(vec!["cid-device-1".into()])
    );
    assert_eq!(pushes[0].ttl_ms, Some(7_200_000));
    assert_eq!(
        pushes[0].message,
        PushMessage::Notification {
            title: "新消息".into(),
            body: "你有一条好友请求".into(),
            click_type: "url".into(),
            url: Some("https://example.com".into()),
        }
    );

    let silent = json!({"request_id": "req-0000000002", "audience": {"alias": ["user-42"]},
                        "push_message": {"transmission": "{\"sync\":true}"}});
    let reply = push(&qiuqiu, &token, "alias", silent).await;
    assert_eq!(code(&reply), 0, "{reply}");
    let pushes = qiuqiu.pushes();
    assert_eq!(pushes.len(), 2);
    assert_eq!(pushes[1].audience, Audience::Alias(vec!["user-42".into()]));
    assert_eq!(
        pushes[1].message,
        PushMessage::Transmission("{\"sync\":true}".into())
    );
    assert_eq!(qiuqiu.calls("/push/single/cid"), 2);
    assert_eq!(
        qiuqiu.calls(&format!("/v2/{}/push/single/alias", qiuqiu.config().app_id)),
        1
    );
}

#[tokio::test]
async fn qiuqiu_parameter_errors() {
    let qiuqiu = QiuQiuDouble::start().await;
    let token = qiuqiu_token(&qiuqiu).await;
    let mut short_id = notification("short");
    short_id["request_id"] = json!("123456789");
    let mut long_id = notification("x");
    long_id["request_id"] = json!("a".repeat(33));
    let mut no_audience = notification("req-0000000003");
    no_audience.as_object_mut().unwrap().remove("audience");
    let mut both = notification("req-0000000004");
    both["push_message"]["transmission"] = json!("payload");
    let mut neither = notification("req-0000000005");
    neither["push_message"] = json!({});
    let mut no_cids = notification("req-0000000006");
    no_cids["audience"]["cid"] = json!([]);
    let mut no_title = notification("req-0000000007");
    no_title["push_message"]["notification"]
        .as_object_mut()
        .unwrap()
        .remove("title");
    for body in [
        short_id,
        long_id,
        no_audience,
        both,
        neither,
        no_cids,
        no_title,
    ] {
        let reply = push(&qiuqiu, &token, "cid", body.clone()).await;
        assert_eq!(code(&reply), 20001, "{body} → {reply}");
    }
    let reply = push(&qiuqiu, &token, "alias", notification("req-0000000008")).await;
    assert_eq!(code(&reply), 20001, "cid audience on the alias endpoint");
    qiuqiu.configure(|config| config.max_targets = 2);
    let mut three_cids = notification("req-0000000009");
    three_cids["audience"]["cid"] = json!(["a", "b", "c"]);
    assert_eq!(code(&push(&qiuqiu, &token, "cid", three_cids).await), 20001);
    assert!(qiuqiu.pushes().is_empty());

    let ok = push(&qiuqiu, &token, "cid", notification(&"a".repeat(32))).await;
    assert_eq!(code(&ok), 0, "{ok}");
    let mut two_cids = notification("req-0000000010");
    two_cids["audience"]["cid"] = json!(["a", "b"]);
    let ok = push(&qiuqiu, &token, "cid", two_cids).await;
    let statuses = ok["data"].as_object().unwrap().values().next().unwrap();
    assert_eq!(
        statuses,
        &json!({"a": "successed_online", "b": "successed_online"})
    );
    assert_eq!(
        qiuqiu.pushes()[1].audience,
        Audience::Cid(vec!["a".into(), "b".into()])
    );
}

#[tokio::test]
async fn qiuqiu_tokens_and_injected_failures() {
    let qiuqiu = QiuQiuDouble::start().await;
    let reply = push(
        &qiuqiu,
        "no-such-token",
        "cid",
        notification("req-0000000010"),
    )
    .await;
    assert_eq!(code(&reply), 10001);
    let token = qiuqiu_token(&qiuqiu).await;
    let newer = qiuqiu_token(&qiuqiu).await;
    assert_eq!(
        code(&push(&qiuqiu, &token, "cid", notification("req-0000000011")).await),
        0,
        "a newer token does not invalidate older ones"
    );
    qiuqiu.expire_tokens();
    assert_eq!(
        code(&push(&qiuqiu, &newer, "cid", notification("req-0000000012")).await),
        10001
    );
    let token = qiuqiu_token(&qiuqiu).await;

    qiuqiu.fail_next(1, 2);
    qiuqiu.fail_next(1, 10005);
    assert_eq!(
        code(&push(&qiuqiu, &token, "cid", notification("req-0000000013")).await),
        2
    );
    assert_eq!(
        code(&push(&qiuqiu, &token, "cid", notification("req-0000000013")).await),
        10005
    );
    assert_eq!(qiuqiu.pushes().len(), 1);
    assert_eq!(
        code(&push(&qiuqiu, &token, "cid", notification("req-0000000013")).await),
        0
    );
    assert_eq!(qiuqiu.pushes().len(), 2);

    // A delayed answer: the client gives up, the push happened, and the retry is dropped.
    qiuqiu.delay_next(1, Duration::from_millis(700));
    let timed_out = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap()
        .post(format!(
            "{}/v2/{}/push/single/cid",
            qiuqiu.base_url(),
            qiuqiu.config().app_id
        ))
        .header("token", &token)
        .json(&notification("req-0000000014"))
        .send()
        .await;
    assert!(timed_out.is_err_and(|error| error.is_timeout()));
    assert_eq!(
        code(&push(&qiuqiu, &token, "cid", notification("req-0000000014")).await),
        0
    );
    assert_eq!(qiuqiu.pushes().len(), 3);
    assert_eq!(qiuqiu.auth_calls(), 3);
    assert_eq!(qiuqiu.calls("/push/single/cid"), 8);
}
