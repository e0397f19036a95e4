//! The WeChat double: tokens, template and subscribe sends, injected failures, job callbacks.

use super::post_json;
use axum::routing::post;
use loadtest::mock_channels::wechat::{IdSet, SendKind};
use loadtest::mock_channels::{WeChatConfig, WeChatDouble};
use serde_json::{json, Value};
use std::time::Duration;

async fn stable_token(wechat: &WeChatDouble, force_refresh: bool) -> Value {
    let config = wechat.config();
    post_json(
        &format!("{}/cgi-bin/stable_token", wechat.base_url()),
        json!({"grant_type": "client_credential", "appid": config.appid,
               "secret": config.secret, "force_refresh": force_refresh}),
    )
    .await
}

async fn token_of(wechat: &WeChatDouble, force_refresh: bool) -> String {
    let reply = stable_token(wechat, force_refresh).await;
    reply["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {reply}"))
        .to_owned()
}

async fn template(wechat: &WeChatDouble, token: &str, body: Value) -> Value {
    post_json(
        &format!(
            "{}/cgi-bin/message/template/send?access_token={token}",
            wechat.base_url()
        ),
        body,
    )
    .await
}

async fn subscribe(wechat: &WeChatDouble, token: &str, body: Value) -> Value {
    post_json(
        &format!(
            "{}/cgi-bin/message/subscribe/send?access_token={token}",
            wechat.base_url()
        ),
        body,
    )
    .await
}

fn order_shipped(client_msg_id: &str) -> Value {
    json!({"touser": "oUser1", "template_id": "TPL_SHIPPED", "url": "https://example.com/x",
           "miniprogram": {"appid": "wxmini", "pagepath": "index?foo=bar"},
           "client_msg_id": client_msg_id,
           "data": {"thing1": {"value": "巧克力"}, "amount2": {"value": "39.8元"}}})
}

fn errcode(reply: &Value) -> i64 {
    reply["errcode"].as_i64().unwrap_or(i64::MIN)
}

#[tokio::test]
async fn wechat_stable_token_is_reused_and_replaced_after_the_overlap() {
    let wechat = WeChatDouble::start().await;
    let reply = stable_token(&wechat, false).await;
    assert_eq!(reply["expires_in"], 7200, "{reply}");
    let first = reply["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        token_of(&wechat, false).await,
        first,
        "no refresh: same token"
    );

    // Forced refresh: a new token, the old one works during the (default 5 min) overlap.
    let second = token_of(&wechat, true).await;
    assert_ne!(second, first);
    assert_eq!(
        errcode(&template(&wechat, &first, order_shipped("a")).await),
        0
    );
    assert_eq!(
        errcode(&template(&wechat, &second, order_shipped("b")).await),
        0
    );

    // Without overlap the replaced token is dead at once.
    wechat.configure(|config| config.token_overlap = Duration::ZERO);
    let third = token_of(&wechat, true).await;
    assert_eq!(
        errcode(&template(&wechat, &second, order_shipped("c")).await),
        40001
    );
    assert_eq!(
        errcode(&template(&wechat, &third, order_shipped("d")).await),
        0
    );
    assert_eq!(
        errcode(&template(&wechat, "bogus", order_shipped("e")).await),
        40001
    );
    assert_eq!(wechat.token_calls(), 4);
    assert_eq!(wechat.current_token(), Some(third.clone()));

    // Expired: 42001, and stable_token then hands out a new one without force_refresh.
    wechat.expire_tokens();
    let reply = template(&wechat, &third, order_shipped("f")).await;
    assert_eq!(errcode(&reply), 42001);
    let fourth = token_of(&wechat, false).await;
    assert_ne!(fourth, third);
    assert_eq!(
        errcode(&template(&wechat, &fourth, order_shipped("g")).await),
        0
    );
}

#[tokio::test]
async fn wechat_stable_token_renews_in_the_last_overlap_of_a_token() {
    let wechat = WeChatDouble::start_with(WeChatConfig {
        token_ttl: Duration::from_secs(301),
        ..WeChatConfig::default()
    })
    .await;
    let first = token_of(&wechat, false).await;
    assert_eq!(token_of(&wechat, false).await, first);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Less than the 5 min overlap left: a new token; the old one works until it expires.
    let second = token_of(&wechat, false).await;
    assert_ne!(second, first);
    assert_eq!(token_of(&wechat, false).await, second);
    assert_eq!(
        errcode(&template(&wechat, &first, order_shipped("a")).await),
        0
    );
    assert_eq!(
        errcode(&template(&wechat, &second, order_shipped("b")).await),
        0
    );
}

#[tokio::test]
async fn wechat_token_errors_and_classic_token_endpoint() {
    let wechat = WeChatDouble::start_with(WeChatConfig {
        token_ttl: Duration::from_secs(60),
        ..WeChatConfig::default()
    })
    .await;
    let config = wechat.config();
    let reply = post_json(
        &format!("{}/cgi-bin/stable_token", wechat.base_url()),
        json!({"grant_type": "client_credential", "appid": config.appid, "secret": "wrong"}),
    )
    .await;
    assert_eq!(errcode(&reply), 40125);
    let errmsg = reply["errmsg"].as_str().unwrap();
    assert!(errmsg.starts_with("invalid appsecret rid: "), "{errmsg}");

    // GET /cgi-bin/token: every call issues a new token, with the configured lifetime.
    let url = format!(
        "{}/cgi-bin/token?grant_type=client_credential&appid={}&secret={}",
        wechat.base_url(),
        config.appid,
        config.secret
    );
    let get = |url: String| async move {
        reqwest::get(url)
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let one = get(url.clone()).await;
    let two = get(url.clone()).await;
    assert_eq!(one["expires_in"], 60, "{one}");
    assert_ne!(one["access_token"], two["access_token"]);
    let bad_app = get(url.replace(&config.appid, "wxother")).await;
    assert_eq!(errcode(&bad_app), 40013);
    assert_eq!(wechat.token_calls(), 4);
    assert_eq!(wechat.calls("/cgi-bin/token"), 3);
}

#[tokio::test]
async fn wechat_template_send_is_idempotent_per_client_msg_id() {
    let wechat = WeChatDouble::start().await;
    let token = token_of(&wechat, false).await;
    let first = template(&wechat, &token, order_shipped("order-8812-shipped")).await;
    assert_eq!(first["errcode"], 0, "{first}");
    assert_eq!(first["errmsg"], "ok");
    let again = template(&wechat, &token, order_shipped("order-8812-shipped")).await;
    assert_eq!(again, first, "a repeat answers the same msgid");
    let other = template(&wechat, &token, order_shipped("order-8813-shipped")).await;
    assert_ne!(other["msgid"], first["msgid"]);

    let sends = wechat.sends();
    assert_eq!(sends.len(), 2, "the repeat is not a second send");
    assert_eq!(sends[0].kind, SendKind::Template);
    assert_eq!(sends[0].touser, "oUser1");
    assert_eq!(sends[0].template_id, "TPL_SHIPPED");
    assert_eq!(
        sends[0].client_msg_id.as_deref(),
        Some("order-8812-shipped")
    );
    assert_eq!(sends[0].msgid, first["msgid"].as_u64());
    assert_eq!(sends[0].data["thing1"]["value"], "巧克力");
    assert_eq!(sends[0].body["miniprogram"]["pagepath"], "index?foo=bar");
    assert_eq!(wechat.calls("/cgi-bin/message/template/send"), 3);
}

#[tokio::test]
async fn wechat_template_send_refusals() {
    let wechat = WeChatDouble::start().await;
    let token = token_of(&wechat, false).await;
    let mut body = order_shipped("x1");
    body["touser"] = json!("xNotAFollower");
    assert_eq!(errcode(&template(&wechat, &token, body).await), 43004);
    let mut body = order_shipped("x2");
    body["touser"] = json!("");
    assert_eq!(errcode(&template(&wechat, &token, body).await), 40003);

    wechat.configure(|config| config.templates = IdSet::only(["TPL_KNOWN"]));
    assert_eq!(
        errcode(&template(&wechat, &token, order_shipped("x3")).await),
        40037
    );
    wechat.configure(|config| config.templates = IdSet::Any);

    wechat.set_daily_quota(1);
    assert_eq!(
        errcode(&template(&wechat, &token, order_shipped("q1")).await),
        0
    );
    assert_eq!(
        errcode(&template(&wechat, &token, order_shipped("q2")).await),
        45009
    );
    assert_eq!(
        errcode(&template(&wechat, &token, order_shipped("q1")).await),
        0,
        "a repeat does not count against the quota"
    );
    wechat.reset_quota();
    assert_eq!(
        errcode(&template(&wechat, &token, order_shipped("q2")).await),
        0
    );
    assert_eq!(wechat.sends().len(), 2);
}

#[tokio::test]
async fn wechat_subscribe_value_limits() {
    let wechat = WeChatDouble::start().await;
    let token = token_of(&wechat, false).await;
    let send = |key: &'static str, value: String| {
        let body = json!({"touser": "oUser2", "template_id": "TPL_SUB", "page": "index",
                          "miniprogram_state": "formal", "lang": "zh_CN",
                          "data": {key: {"value": value}}});
        let (wechat, token) = (&wechat, token.clone());
        async move { errcode(&subscribe(wechat, &token, body).await) }
    };
    let cases: &[(&'static str, String, i64)] = &[
        ("thing1", "巧".repeat(20), 0),
        ("thing1", "a".repeat(21), 47003),
        ("number2", "1".repeat(32), 0),
        ("number2", "1".repeat(33), 47003),
        ("letter3", "a".repeat(33), 47003),
        ("character_string4", "a".repeat(32), 0),
        ("character_string4", "a".repeat(33), 47003),
        ("phone_number5", "1".repeat(17), 0),
        ("phone_number5", "1".repeat(18), 47003),
        ("car_number6", "粤A123456".into(), 0),
        ("car_number6", "粤A1234567".into(), 47003),
        ("name7", "张".repeat(10), 0),
        ("name7", "张".repeat(11), 47003),
        ("name7", "a".repeat(20), 0),
        ("name7", "a".repeat(21), 47003),
        ("phrase8", "已发货完成".into(), 0),
        ("phrase8", "已发货已完成".into(), 47003),
        ("thing9", "two\nlines".into(), 47003),
        ("time10", "2024-01-01 10:00".into(), 0),
    ];
    for (key, value, expected) in cases {
        assert_eq!(
            send(key, value.clone()).await,
            *expected,
            "{key} = {value:?}"
        );
    }
    let accepted = cases.iter().filter(|(_, _, code)| *code == 0).count();
    let sends = wechat.sends();
    assert_eq!(sends.len(), accepted);
    assert!(sends.iter().all(|send| send.kind == SendKind::Subscribe));
    assert!(sends.iter().all(|send| send.msgid.is_none()));

    let reply = subscribe(
        &wechat,
        &token,
        json!({"touser": "oUser2", "template_id": "T", "data": {"thing1": {"value": 5}}}),
    )
    .await;
    assert_eq!(errcode(&reply), 47003, "a value must be a string");
    assert!(reply["errmsg"].as_str().unwrap().contains("thing1"));

    wechat.configure(|config| {
        config.refused.insert("oRefuser".into());
    });
    let reply = subscribe(
        &wechat,
        &token,
        json!({"touser": "oRefuser", "template_id": "T", "data": {}}),
    )
    .await;
    assert_eq!(errcode(&reply), 43101);
}

#[tokio::test]
async fn wechat_injected_failures_and_delays() {
    let wechat = WeChatDouble::start().await;
    let token = token_of(&wechat, false).await;
    wechat.fail_next(2, 45011);
    wechat.fail_next(1, -1);
    assert_eq!(
        errcode(&template(&wechat, &token, order_shipped("f")).await),
        45011
    );
    let reply = subscribe(
        &wechat,
        &token,
        json!({"touser": "oUser", "template_id": "T", "data": {}}),
    )
    .await;
    assert_eq!(errcode(&reply), 45011);
    let reply = template(&wechat, &token, order_shipped("f")).await;
    assert_eq!(errcode(&reply), -1);
    assert!(reply["errmsg"].as_str().unwrap().contains(" rid: "));
    assert!(wechat.sends().is_empty());
    let ok = template(&wechat, &token, order_shipped("f")).await;
    assert_eq!(errcode(&ok), 0);
    assert_eq!(wechat.calls("/cgi-bin/message/template/send"), 3);

    // A delayed answer: the client gives up, but the send happened; the retry is a no-op.
    wechat.delay_next(1, Duration::from_millis(700));
    let timed_out = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap()
        .post(format!(
            "{}/cgi-bin/message/template/send?access_token={token}",
            wechat.base_url()
        ))
        .json(&order_shipped("slow"))
        .send()
        .await;
    assert!(timed_out.is_err_and(|error| error.is_timeout()));
    assert_eq!(wechat.sends().len(), 2);
    let retry = template(&wechat, &token, order_shipped("slow")).await;
    assert_eq!(errcode(&retry), 0);
    assert_eq!(retry["msgid"], json!(wechat.sends()[1].msgid));
    assert_eq!(wechat.sends().len(), 2);

    wechat.fail_next(1, 40001);
    assert_eq!(
        errcode(&template(&wechat, &token, order_shipped("t")).await),
        40001
    );
}

#[tokio::test]
async fn wechat_finish_job_posts_the_xml_event() {
    let (events, mut received) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    let callback = axum::Router::new().route(
        "/v1/callbacks/wechat",
        post(move |headers: axum::http::HeaderMap, body: String| {
            let content_type = headers
                .get("content-type")
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let _ = events.send((content_type, body));
            async { "success" }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let callback_url = format!(
        "http://{}/v1/callbacks/wechat",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, callback).await });

    let wechat = WeChatDouble::start().await;
    let token = token_of(&wechat, false).await;
    let sent = template(&wechat, &token, order_shipped("cb")).await;
    let msgid = sent["msgid"].as_u64().unwrap();
    let response = wechat
        .finish_job(&callback_url, msgid, "failed:user block")
        .await
        .unwrap();
    assert!(response.status().is_success());
    let (content_type, xml) = received.recv().await.unwrap();
    assert_eq!(content_type, "text/xml");
    for part in [
        "<ToUserName><![CDATA[gh_".to_owned(),
        "<FromUserName><![CDATA[oUser1]]></FromUserName>".to_owned(),
        "<MsgType><![CDATA[event]]></MsgType>".to_owned(),
        "<Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event>".to_owned(),
        format!("<MsgID>{msgid}</MsgID>"),
        "<Status><![CDATA[failed:user block]]></Status>".to_owned(),
    ] {
        assert!(xml.contains(&part), "{part} missing from {xml}");
    }
    assert!(xml.starts_with("<xml>") && xml.ends_with("</xml>"));
}
