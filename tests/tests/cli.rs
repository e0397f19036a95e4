//! The `gateway` commands an operator uses besides `serve`.

use e2e::gateway::{binary, run_cli};
use e2e::mqtt::{Via, V4};
use e2e::TestGateway;
use std::process::Command;

#[test]
fn check_config_reports_every_error_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    std::fs::write(
        &file,
        "[limits]\nmax_inflight = \"many\"\nmax_keepalive = \"1m\"\n[auth]\nallow_anonymous = \"yes\"\n[sessions]\ndevice_policy = \"some\"\n[typo]\n",
    )
    .unwrap();
    let output = Command::new(binary())
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let report = String::from_utf8(output.stdout).unwrap();
    for key in [
        "limits.max_inflight",
        "auth.allow_anonymous",
        "sessions.device_policy",
        "typo",
    ] {
        assert!(
            report.contains(&format!(": {key}: ")),
            "{key} missing from:\n{report}"
        );
    }

    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../broker-config/gateway.toml");
    let output = Command::new(binary())
        .arg("check-config")
        .arg(shipped)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn secrets_are_generated_once_into_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let key = run_cli(dir.path(), &["api-key"]).unwrap();
    assert_eq!(key.len(), 64);
    assert_eq!(run_cli(dir.path(), &["api-key"]).unwrap(), key);
    assert!(
        run_cli(dir.path(), &["token", "--user", "a/b", "--device", "d"]).is_err(),
        "ids with topic syntax"
    );
    assert!(run_cli(
        dir.path(),
        &["token", "--user", "a", "--device", "d", "--ttl", "soon"]
    )
    .is_err());
}

#[tokio::test]
async fn tokens_from_the_cli_and_the_api_are_accepted() {
    let gw = TestGateway::start().await;
    let cli_token = run_cli(
        gw.data_dir.path(),
        &[
            "token",
            "--user",
            "alice",
            "--device",
            "phone",
            "--platform",
            "ios",
            "--ttl",
            "1h",
        ],
    )
    .unwrap();
    V4::connect(&gw, Via::Tcp, "a", Some(&cli_token), |_| {})
        .await
        .unwrap();

    let (status, body) = gw
        .api(
            reqwest::Method::POST,
            "/v1/tokens",
            Some(serde_json::json!({"user": "bob", "device": "web", "platform": "web"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    V4::connect(&gw, Via::Tcp, "b", body["token"].as_str(), |_| {})
        .await
        .unwrap();

    let (status, body) = gw
        .api(
            reqwest::Method::POST,
            "/v1/tokens",
            Some(serde_json::json!({"user": "bob", "device": "web", "platform": "fridge"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("bad_json"))
    );

    let unauthenticated = reqwest::Client::new()
        .post(gw.url("/v1/messages"))
        .bearer_auth("wrong-key")
        .json(&serde_json::json!({"to": "bob", "body": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status().as_u16(), 401);
    let body: serde_json::Value = unauthenticated.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, body) = gw.api(reqwest::Method::GET, "/v1/nothing-here", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
}

#[tokio::test]
async fn health_and_metrics_are_served() {
    let gw = TestGateway::start().await;
    let health: serde_json::Value = reqwest::get(gw.url("/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let _client = V4::connect(
        &gw,
        Via::Tcp,
        "a",
        Some(&gw.token("a", "d", protocol::envelope::Platform::Ios)),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(
        gw.metric("gateway_connections{transport=\"mqtt\"}").await,
        1.0
    );
}
