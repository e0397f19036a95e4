//! Starting and stopping the gateway binary for a test (the process itself is
//! [`loadtest::gateway_process`], shared with the load generator), and what tests ask of it.

use anyhow::Result;
use loadtest::gateway_process::{run_subcommand, GatewayProcess};
use protocol::envelope::Platform;
use serde_json::Value;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// How to start a gateway for a test. Its rate limits are off (tests push in a hurry), unless
/// the test turns them on with [`rate_limited`](Self::rate_limited).
#[derive(Default, Clone)]
pub struct Options {
    /// `GATEWAY__SECTION__KEY` overrides, e.g. `("SESSIONS__DEVICE_POLICY", "one_per_class")`.
    pub env: Vec<(String, String)>,
    /// Variables of the process's own besides, e.g. `LD_PRELOAD`.
    pub process_env: Vec<(String, OsString)>,
    /// Generate a dev certificate and serve the TLS listeners.
    pub tls: bool,
}

impl Options {
    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// `key` set to `value` in the gateway process's environment, as it is named.
    pub fn with_process_env(mut self, key: &str, value: impl Into<OsString>) -> Self {
        self.process_env.push((key.to_string(), value.into()));
        self
    }

    /// The `[rate_limits]` on, at their defaults unless `with` sets them.
    pub fn rate_limited(self) -> Self {
        self.with("RATE_LIMITS__ENABLED", "true")
    }

    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }
}

/// A gateway started for a test: the process (addresses, API key, data dir, read straight off
/// this handle through `Deref`) with what tests add to it, the dev certificate and an HTTP
/// client for the API.
pub struct TestGateway {
    process: GatewayProcess,
    /// The dev certificate (PEM), when started with TLS.
    pub ca_pem: Option<Vec<u8>>,
    http_client: reqwest::Client,
}

impl std::ops::Deref for TestGateway {
    type Target = GatewayProcess;

    fn deref(&self) -> &GatewayProcess {
        &self.process
    }
}

/// The gateway binary under test.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("GATEWAY_BIN") {
        return PathBuf::from(path);
    }
    // target/<profile>/deps/<test binary> → target/<profile>/gateway
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let path = profile_dir.join("gateway");
    assert!(
        path.exists(),
        "{} is missing: build it first with `cargo build -p gateway` (scripts/test does)",
        path.display()
    );
    path
}

/// Runs a `gateway` subcommand with the given data dir and returns its stdout.
pub fn run_cli(data_dir: &Path, args: &[&str]) -> Result<String> {
    run_subcommand(&binary(), data_dir, args)
}

impl TestGateway {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Self {
        Self::try_start(options, tempfile::tempdir().expect("temp dir"))
            .await
            .expect("starting the gateway")
    }

    /// Starts (or restarts) a gateway on an existing data dir.
    pub async fn try_start(options: Options, data_dir: tempfile::TempDir) -> Result<Self> {
        let mut env: Vec<(String, OsString)> = Vec::new();
        let mut ca_pem = None;
        if options.tls {
            run_cli(data_dir.path(), &["dev-cert"])?;
            for (key, file) in [("CERT", "cert.pem"), ("KEY", "key.pem")] {
                env.push((
                    format!("GATEWAY__TLS__{key}"),
                    data_dir.path().join(file).into(),
                ));
            }
            ca_pem = Some(std::fs::read(data_dir.path().join("cert.pem"))?);
        }
        // After the TLS files, so that a test can override them too.
        env.extend(
            options
                .env
                .into_iter()
                .map(|(key, value)| (format!("GATEWAY__{key}"), value.into())),
        );
        env.extend(options.process_env);
        Ok(Self {
            process: GatewayProcess::start(&binary(), data_dir, env).await?,
            ca_pem,
            http_client: reqwest::Client::new(),
        })
    }

    /// Another node of `first`'s service, started with `options`: nodes of one service share
    /// their secrets (token key, API key, at-rest key), here by starting from a copy of
    /// `first`'s.
    pub async fn start_beside(first: &TestGateway, options: Options) -> Result<Self> {
        let data_dir = tempfile::tempdir()?;
        for secret in ["token_secret", "api_key", "at_rest_key"] {
            std::fs::write(data_dir.path().join(secret), first.secret(secret))?;
        }
        Self::try_start(options, data_dir).await
    }

    /// A device token from `gateway token`, as an operator would make one.
    pub fn token(&self, user: &str, device: &str, platform: Platform) -> String {
        run_cli(
            self.data_dir.path(),
            &[
                "token",
                "--user",
                user,
                "--device",
                device,
                "--platform",
                platform.as_str(),
            ],
        )
        .expect("gateway token")
    }

    /// A secret the gateway generated into its data dir (`token_secret`, `at_rest_key`, ...).
    pub fn secret(&self, name: &str) -> String {
        std::fs::read_to_string(self.data_dir.path().join(name))
            .unwrap_or_else(|e| panic!("reading the gateway's {name}: {e}"))
            .trim()
            .to_string()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// An HTTP request to the API with the API key; returns status and JSON body (or Null).
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http_client
            .request(method, self.url(path))
            .bearer_auth(&self.api_key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("HTTP request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `POST /v1/messages`.
    pub async fn post_message(&self, to: &str, body: Value) -> Value {
        let (status, reply) = self
            .api(
                reqwest::Method::POST,
                "/v1/messages",
                Some(serde_json::json!({"to": to, "from": "backend", "body": body})),
            )
            .await;
        assert_eq!(status, 202, "POST /v1/messages: {reply}");
        reply
    }

    /// The devices `GET /v1/users/{user}/devices` lists.
    pub async fn devices(&self, user: &str) -> Vec<String> {
        let (status, body) = self
            .api(
                reqwest::Method::GET,
                &format!("/v1/users/{user}/devices"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let mut devices: Vec<String> = body["devices"]
            .as_array()
            .expect("devices array")
            .iter()
            .map(|d| d["device"].as_str().unwrap().to_string())
            .collect();
        devices.sort();
        devices
    }

    /// The value of one Prometheus sample, e.g. `gateway_acl_denials_total{kind="subscribe"}`.
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = reqwest::get(self.url("/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// The metric `sample` once it reaches `at_least`, or as it is after [`crate::PATIENCE`]:
    /// what a connection's end counts is counted after its socket closed, so a test that saw the
    /// close may still be ahead of the count.
    pub async fn metric_reaching(&self, sample: &str, at_least: f64) -> f64 {
        let deadline = tokio::time::Instant::now() + crate::PATIENCE;
        loop {
            let seen = self.metric(sample).await;
            if seen >= at_least || tokio::time::Instant::now() >= deadline {
                return seen;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Kills the gateway (SIGKILL: nothing is flushed or said), keeping its data dir for a
    /// restart.
    pub async fn stop(self) -> tempfile::TempDir {
        self.process.stop().await
    }

    /// Every message in `user`'s log, through the API, page by page.
    pub async fn whole_log(&self, user: &str) -> Vec<protocol::envelope::InboxMessage> {
        let mut messages = Vec::new();
        let mut after = 0;
        loop {
            let path = format!("/v1/users/{user}/messages?after={after}&limit=500");
            let (status, page) = self.api(reqwest::Method::GET, &path, None).await;
            assert_eq!(status, 200, "{page}");
            let batch: Vec<protocol::envelope::InboxMessage> =
                serde_json::from_value(page["messages"].clone()).expect("a page of messages");
            messages.extend(batch);
            after = page["to_seq"].as_u64().expect("to_seq");
            if page["more"] != serde_json::json!(true) {
                return messages;
            }
        }
    }

    /// Waits for the gateway to exit by itself.
    pub async fn exited(self) -> loadtest::gateway_process::Terminated {
        self.process.exited().await.expect("the gateway exits")
    }

    /// Shuts the gateway down as an operator would (SIGTERM) and waits for it to exit.
    pub async fn terminate(self) -> loadtest::gateway_process::Terminated {
        self.process.terminate().await.expect("the gateway exits")
    }
}
