//! Standard JWTs from an identity provider as device tokens (RS256 and ES256 against a JWKS URL
//! served by a real HTTP server standing in for the provider, HS256 with a shared secret), on
//! MQTT and the JSON bridge; the provider's key rotation picked up without a restart; a
//! revocation refusing JWTs too; and the rotation of the gateway's own token keys.

use axum::routing::get;
use axum::Router;
use e2e::json_ws::JsonClient;
use e2e::mqtt::{Via, V4};
use e2e::{Options, TestGateway, PATIENCE};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const ISSUER: &str = "https://idp.test/";
const HMAC_SECRET: &str = "the-idp-shares-this-32-char-key!";

/// The identity provider's JWKS endpoint: serves whatever key set it holds now.
struct Provider {
    keys: Arc<Mutex<Vec<Jwk>>>,
    address: SocketAddr,
}

impl Provider {
    async fn start() -> Self {
        let keys: Arc<Mutex<Vec<Jwk>>> = Arc::default();
        let served = keys.clone();
        let app = Router::new().route(
            "/.well-known/jwks.json",
            get(move || {
                let set = json!({ "keys": *served.lock().unwrap() });
                async move { axum::Json(set) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { keys, address }
    }

    fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.address)
    }

    /// Publishes `keys` as the provider's whole key set.
    fn publish(&self, keys: &[&SigningKey]) {
        *self.keys.lock().unwrap() = keys.iter().map(|key| key.public.clone()).collect();
    }
}

/// A key the provider signs with, and its public JWK.
struct SigningKey {
    algorithm: Algorithm,
    id: String,
    private: EncodingKey,
    public: Jwk,
}

impl SigningKey {
    /// An RSA key made by `openssl`, as a provider's would be.
    fn rsa(id: &str) -> Self {
        let der = Command::new("sh")
            .args([
                "-c",
                "openssl genrsa 2048 2>/dev/null | openssl rsa -traditional -outform DER",
            ])
            .output()
            .expect("openssl (scripts/test installs it)");
        assert!(der.status.success(), "openssl failed");
        let private = EncodingKey::from_rsa_der(&der.stdout);
        Self::new(Algorithm::RS256, id, private)
    }

    fn ecdsa(id: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        Self::new(
            Algorithm::ES256,
            id,
            EncodingKey::from_ec_der(&pair.serialize_der()),
        )
    }

    fn new(algorithm: Algorithm, id: &str, private: EncodingKey) -> Self {
        let mut public = Jwk::from_encoding_key(&private, algorithm).unwrap();
        public.common.key_id = Some(id.to_string());
        Self {
            algorithm,
            id: id.to_string(),
            private,
            public,
        }
    }

    /// A token for `user`'s `device`, issued now.
    fn token(&self, user: &str, device: &str) -> String {
        let header = Header {
            kid: Some(self.id.clone()),
            ..Header::new(self.algorithm)
        };
        jsonwebtoken::encode(&header, &claims(user, device), &self.private).unwrap()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(user: &str, device: &str) -> Value {
    json!({
        "iss": ISSUER, "sub": user, "device_id": device, "platform": "web",
        "iat": now(), "exp": now() + 600,
    })
}

async fn gateway(provider: &Provider) -> TestGateway {
    TestGateway::start_with(
        Options::default()
            .with("JWT__ENABLED", "true")
            .with("JWT__ALGORITHMS", r#"["RS256", "ES256", "HS256"]"#)
            .with("JWT__JWKS_URL", &provider.url())
            .with("JWT__JWKS_MIN_REFETCH", "1s")
            .with("JWT__HMAC_SECRET", HMAC_SECRET)
            .with("JWT__ISSUER", ISSUER),
    )
    .await
}

/// The JSON bridge's answer to `token`: who it is, or the error frame.
async fn json_auth(gw: &TestGateway, token: &str) -> Value {
    JsonClient::connect(gw, Some(token))
        .await
        .frame_where(|f| f["op"] == "ok" || f["op"] == "error")
        .await
}

#[tokio::test]
async fn provider_tokens_connect_and_its_key_rotation_needs_no_restart() {
    let provider = Provider::start().await;
    let rsa = SigningKey::rsa("rsa-1");
    provider.publish(&[&rsa]);
    let gw = gateway(&provider).await;

    let ok = json_auth(&gw, &rsa.token("alice", "web")).await;
    assert_eq!(
        (
            ok["op"].as_str(),
            ok["user"].as_str(),
            ok["device"].as_str()
        ),
        (Some("ok"), Some("alice"), Some("web"))
    );
    V4::connect(
        &gw,
        Via::Tcp,
        "any-id",
        Some(&rsa.token("alice", "phone")),
        |_| {},
    )
    .await
    .expect("a provider token as the MQTT password");
    let hmac = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("alice", "tablet"),
        &EncodingKey::from_secret(HMAC_SECRET.as_bytes()),
    )
    .unwrap();
    assert_eq!(json_auth(&gw, &hmac).await["op"], "ok");

    // The provider rotates to a new key: a token naming it is let in once the gateway has
    // fetched the set again (at most `jwks_min_refetch` after its last fetch).
    let ecdsa = SigningKey::ecdsa("ec-2");
    provider.publish(&[&ecdsa]);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let answer = json_auth(&gw, &ecdsa.token("bob", "web")).await;
        if answer["op"] == "ok" {
            break;
        }
        assert_eq!(answer["code"], "unauthorized", "{answer}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new key was never fetched: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let stranger = SigningKey::ecdsa("ec-2");
    let forged = json_auth(&gw, &stranger.token("bob", "web")).await;
    assert_eq!(forged["code"], "unauthorized");
    let foreign_issuer = jsonwebtoken::encode(
        &Header {
            kid: Some("ec-2".into()),
            ..Header::new(Algorithm::ES256)
        },
        &json!({"iss": "https://evil/", "sub": "bob", "device_id": "web", "exp": now() + 600}),
        &ecdsa.private,
    )
    .unwrap();
    let refused = json_auth(&gw, &foreign_issuer).await;
    assert!(
        refused["message"].as_str().unwrap().contains("issuer"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_logout_refuses_the_provider_tokens_issued_before_it() {
    let provider = Provider::start().await;
    let key = SigningKey::ecdsa("ec-1");
    provider.publish(&[&key]);
    let gw = gateway(&provider).await;
    let before = key.token("carol", "web");
    assert_eq!(json_auth(&gw, &before).await["op"], "ok");

    let (status, _) = gw.api(Method::POST, "/v1/users/carol/logout", None).await;
    assert_eq!(status, 200);
    let refused = json_auth(&gw, &before).await;
    assert!(
        refused["message"].as_str().unwrap().contains("revoked"),
        "{refused}"
    );
    // `iat` is in seconds: a token issued in a later second than the logout is let in.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(json_auth(&gw, &key.token("carol", "web")).await["op"], "ok");
}

/// A token from the API, as an app backend gets one at sign-in.
async fn issued(gw: &TestGateway) -> String {
    let request = json!({"user": "dave", "device": "web", "platform": "web"});
    let (status, body) = gw.api(Method::POST, "/v1/tokens", Some(request)).await;
    assert_eq!(status, 200, "{body}");
    body["token"].as_str().unwrap().to_string()
}

/// The gateway's own token key is rotated in three restarts: a new key is added in front
/// (old tokens still connect, new ones are signed with it), then the old key is removed.
#[tokio::test]
async fn the_gateways_own_token_key_rotates_without_logging_anyone_out() {
    const OLD: &str = "old:the-old-secret-of-thirty-two-chars";
    const NEW: &str = "new:the-new-secret-of-thirty-two-chars";
    let keys = |keys: &[&str]| {
        Options::default().with("AUTH__TOKEN_KEYS", &serde_json::to_string(keys).unwrap())
    };
    let gw = TestGateway::start_with(keys(&[OLD])).await;
    let old_token = issued(&gw).await;
    assert!(old_token.starts_with("v1.old."), "{old_token}");

    let data = gw.stop().await;
    let gw = TestGateway::try_start(keys(&[NEW, OLD]), data)
        .await
        .unwrap();
    assert_eq!(json_auth(&gw, &old_token).await["op"], "ok");
    let new_token = issued(&gw).await;
    assert!(new_token.starts_with("v1.new."), "{new_token}");

    let data = gw.stop().await;
    let gw = TestGateway::try_start(keys(&[NEW]), data).await.unwrap();
    assert_eq!(json_auth(&gw, &new_token).await["op"], "ok");
    let refused = json_auth(&gw, &old_token).await;
    assert!(
        refused["message"].as_str().unwrap().contains("key"),
        "{refused}"
    );
}
