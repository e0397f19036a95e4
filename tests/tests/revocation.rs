//! Revoked tokens: a logout, a revoking kick and an account deletion refuse the tokens issued
//! until then, on MQTT and on the JSON WebSocket, across a restart; a token issued afterwards
//! connects. (Across nodes: `cluster.rs`.)

use e2e::json_ws::JsonClient;
use e2e::mqtt::{Via, V4};
use e2e::{Options, TestGateway};
use protocol::envelope::Platform;
use reqwest::Method;
use rumqttc::ConnectReturnCode;
use serde_json::json;

/// The JSON WebSocket's answer to `token`: `ok`, or the error's code and message.
async fn json_auth(gw: &TestGateway, token: &str) -> Result<(), (String, String)> {
    let mut client = JsonClient::connect(gw, Some(token)).await;
    let answer = client
        .frame_where(|f| f["op"] == "ok" || f["op"] == "error")
        .await;
    match answer["op"].as_str() {
        Some("ok") => Ok(()),
        _ => Err((
            answer["code"].as_str().unwrap_or_default().to_string(),
            answer["message"].as_str().unwrap_or_default().to_string(),
        )),
    }
}

/// Whether an MQTT connection with `token` as `device` is admitted.
async fn mqtt_auth(gw: &TestGateway, device: &str, token: &str) -> Result<(), ConnectReturnCode> {
    V4::connect(gw, Via::Tcp, device, Some(token), |_| {})
        .await
        .map(drop)
}

/// A fresh token from the API, as an app backend gets one at sign-in.
async fn signed_in(gw: &TestGateway, user: &str, device: &str) -> String {
    let (status, body) = gw
        .api(
            Method::POST,
            "/v1/tokens",
            Some(json!({ "user": user, "device": device })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["token"].as_str().unwrap().to_string()
}

fn refused_as_revoked(answer: Result<(), (String, String)>) {
    let (code, message) = answer.expect_err("the revoked token was admitted");
    assert_eq!(code, "unauthorized");
    assert!(message.contains("revoked"), "{message}");
}

#[tokio::test]
async fn a_logout_kicks_every_device_and_refuses_every_token_it_held() {
    let gw = TestGateway::start().await;
    let web_token = gw.token("alice", "web", Platform::Web);
    let phone_token = gw.token("alice", "phone", Platform::Android);
    let mut web = JsonClient::authenticated(&gw, &web_token).await;
    let mut phone = V4::connect(&gw, Via::Tcp, "phone", Some(&phone_token), |_| {})
        .await
        .unwrap();
    let bob = gw.token("bob", "phone", Platform::Android);

    let (status, body) = gw.api(Method::POST, "/v1/users/alice/logout", None).await;
    assert_eq!(status, 200, "{body}");
    let mut devices: Vec<_> = body["devices"].as_array().unwrap().clone();
    devices.sort_by_key(|d| d.to_string());
    assert_eq!(devices, [json!("phone"), json!("web")]);
    assert!(body["revoked_until"].as_u64().unwrap() > 0);
    let closed = web.closed().await;
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (Some(4001), "logged out on all devices")
    );
    phone.inbox.closed().await;

    refused_as_revoked(json_auth(&gw, &web_token).await);
    assert_eq!(
        mqtt_auth(&gw, "phone", &phone_token).await,
        Err(ConnectReturnCode::NotAuthorized)
    );
    json_auth(&gw, &bob)
        .await
        .expect("another user is untouched");

    let fresh = signed_in(&gw, "alice", "web").await;
    json_auth(&gw, &fresh)
        .await
        .expect("a token issued after the logout connects");
    let fresh = signed_in(&gw, "alice", "phone").await;
    mqtt_auth(&gw, "phone", &fresh).await.unwrap();
}

#[tokio::test]
async fn a_revoking_kick_refuses_that_device_only_online_or_not() {
    let gw = TestGateway::start().await;
    let phone = gw.token("carol", "phone", Platform::Ios);
    let tablet = gw.token("carol", "tablet", Platform::Ios);
    let mut online = JsonClient::authenticated(&gw, &phone).await;

    let (status, _) = gw
        .api(
            Method::DELETE,
            "/v1/users/carol/devices/phone?revoke=true&reason=stolen",
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(online.closed().await.reason, "stolen");
    refused_as_revoked(json_auth(&gw, &phone).await);
    json_auth(&gw, &tablet).await.expect("the other device");

    // Offline: still revoked, and still 204 (a plain kick of an offline device is 404).
    let (status, _) = gw
        .api(
            Method::DELETE,
            "/v1/users/carol/devices/tablet?revoke=true",
            None,
        )
        .await;
    assert_eq!(status, 204);
    refused_as_revoked(json_auth(&gw, &tablet).await);
    let (status, body) = gw
        .api(
            Method::DELETE,
            "/v1/users/carol/devices/tablet?revoked=1",
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
}

#[tokio::test]
async fn a_deleted_users_tokens_stay_refused_across_a_restart() {
    let gw = TestGateway::start().await;
    let token = gw.token("dave", "phone", Platform::Android);
    let other = gw.token("erin", "phone", Platform::Android);
    json_auth(&gw, &token).await.unwrap();
    let (status, _) = gw.api(Method::POST, "/v1/users/erin/logout", None).await;
    assert_eq!(status, 200);

    let (status, _) = gw.api(Method::DELETE, "/v1/users/dave", None).await;
    assert_eq!(status, 200);
    refused_as_revoked(json_auth(&gw, &token).await);

    let data = gw.stop().await;
    let gw = TestGateway::try_start(Options::default(), data)
        .await
        .expect("restart on the same data dir");
    refused_as_revoked(json_auth(&gw, &token).await);
    refused_as_revoked(json_auth(&gw, &other).await);
    assert_eq!(
        mqtt_auth(&gw, "phone", &token).await,
        Err(ConnectReturnCode::NotAuthorized)
    );
}
