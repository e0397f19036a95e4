//! Redis over TLS with an ACL user: the gateway's store, ledger and cluster all reach a
//! `redis-server` that listens with TLS, trusting the CA named by `store.redis_ca`, as the user
//! and password in `store.redis_url`; a wrong password keeps it from starting.

use e2e::gateway::run_cli;
use e2e::redis_server::RedisServer;
use e2e::{Options, TestGateway};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn the_gateway_works_on_redis_over_tls_as_an_acl_user() {
    // The gateway's development certificate (self-signed, for `localhost`) serves as the
    // server's certificate and as the CA the gateway trusts.
    let certs = tempfile::tempdir().unwrap();
    run_cli(certs.path(), &["dev-cert"]).unwrap();
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let (redis, tls_port) = RedisServer::start_tls(&cert, &key, "gateway", "a-long-acl-password");
    let options = |password: &str| {
        Options::default()
            .with("STORE__BACKEND", "redis")
            .with(
                "STORE__REDIS_URL",
                &format!("rediss://gateway:{password}@localhost:{tls_port}/"),
            )
            .with("STORE__REDIS_CA", cert.to_str().unwrap())
    };

    let gw = TestGateway::start_with(options("a-long-acl-password")).await;
    let (status, body) = gw
        .api(
            Method::POST,
            "/v1/messages",
            Some(json!({"to": "tess", "body": {"text": "hi"}})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(gw.whole_log("tess").await.len(), 1);
    let stored = redis.command(&["EXISTS", "gw:{tess}:log"]);
    assert_eq!(stored, "1", "written to this Redis");

    let refused =
        TestGateway::try_start(options("a-wrong-password"), tempfile::tempdir().unwrap()).await;
    assert!(
        refused.is_err(),
        "a wrong ACL password keeps the gateway from starting"
    );
}
