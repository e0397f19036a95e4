//! Starting and stopping the gateway binary.

use anyhow::{bail, Context, Result};
use protocol::envelope::Platform;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How to start a gateway for a test.
#[derive(Default, Clone)]
pub struct Options {
    /// `GATEWAY__SECTION__KEY` overrides, e.g. `("SESSIONS__DEVICE_POLICY", "one_per_class")`.
    pub env: Vec<(String, String)>,
    /// Generate a dev certificate and serve the TLS listeners.
    pub tls: bool,
}

impl Options {
    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }
}

pub struct TestGateway {
    child: Child,
    pub data_dir: tempfile::TempDir,
    pub mqtt: SocketAddr,
    pub mqtt_ws: SocketAddr,
    pub http: SocketAddr,
    pub mqtt_tls: Option<SocketAddr>,
    pub mqtt_wss: Option<SocketAddr>,
    /// The dev certificate (PEM), when started with TLS.
    pub ca_pem: Option<Vec<u8>>,
    pub api_key: String,
    http_client: reqwest::Client,
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
    let output = std::process::Command::new(binary())
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .context("running gateway")?;
    if !output.status.success() {
        bail!(
            "gateway {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?.trim().to_string())
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
        let mut command = Command::new(binary());
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for listener in ["MQTT", "MQTT_WS", "HTTP", "MQTT_TLS", "MQTT_WSS"] {
            command.env(format!("GATEWAY__LISTENERS__{listener}"), "127.0.0.1:0");
        }
        let mut ca_pem = None;
        if options.tls {
            run_cli(data_dir.path(), &["dev-cert"])?;
            command
                .env("GATEWAY__TLS__CERT", data_dir.path().join("cert.pem"))
                .env("GATEWAY__TLS__KEY", data_dir.path().join("key.pem"));
            ca_pem = Some(std::fs::read(data_dir.path().join("cert.pem"))?);
        }
        for (key, value) in &options.env {
            command.env(format!("GATEWAY__{key}"), value);
        }
        let mut child = command.spawn().context("spawning the gateway")?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(crate::PATIENCE * 3, lines.next_line())
            .await
            .context("gateway did not report its listeners in time")??
            .context("gateway exited before listening")?;
        // Keep draining stdout so the gateway never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let listening: Value = serde_json::from_str(&line).context("listening line")?;
        let addr = |name: &str| -> Option<SocketAddr> {
            listening["listening"][name]
                .as_str()
                .and_then(|s| s.parse().ok())
        };
        let api_key = run_cli(data_dir.path(), &["api-key"])?;
        Ok(Self {
            mqtt: addr("mqtt").context("mqtt address")?,
            mqtt_ws: addr("mqtt_ws").context("mqtt_ws address")?,
            http: addr("http").context("http address")?,
            mqtt_tls: addr("mqtt_tls"),
            mqtt_wss: addr("mqtt_wss"),
            child,
            data_dir,
            ca_pem,
            api_key,
            http_client: reqwest::Client::new(),
        })
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

    /// Kills the gateway (SIGKILL: nothing is flushed or said), keeping its data dir for a
    /// restart.
    pub async fn stop(mut self) -> tempfile::TempDir {
        let _ = self.child.kill().await;
        self.data_dir
    }
}
