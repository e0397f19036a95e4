//! The gateway this tool starts with `--start-gateway`: free ports, a fresh data dir, the
//! environment the run needs.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long the started gateway gets to print its listeners.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A gateway this tool started; killed when stopped or dropped.
pub(super) struct StartedGateway {
    pub(super) child: Child,
    /// Kept so the data dir lives as long as the gateway.
    _data_dir: tempfile::TempDir,
    pub(super) http: String,
    pub(super) api_key: String,
}

impl StartedGateway {
    pub(super) async fn start(binary: &Path, env: &[(String, String)]) -> Result<Self> {
        let data_dir = tempfile::tempdir().context("creating the gateway's data dir")?;
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for listener in ["MQTT", "MQTT_WS", "HTTP"] {
            command.env(format!("GATEWAY__LISTENERS__{listener}"), "127.0.0.1:0");
        }
        command.envs(env.iter().map(|(k, v)| (k, v)));
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().context("the gateway's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(START_TIMEOUT, lines.next_line())
            .await
            .context("the gateway did not print its listeners in time")??
            .context("the gateway exited before listening")?;
        // Keep reading so the gateway never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let listening: Value =
            serde_json::from_str(&line).with_context(|| format!("the listening line {line:?}"))?;
        let http = listening["listening"]["http"]
            .as_str()
            .with_context(|| format!("no HTTP listener in {line}"))?;
        let output = std::process::Command::new(binary)
            .arg("api-key")
            .arg("--data-dir")
            .arg(data_dir.path())
            .output()
            .context("running gateway api-key")?;
        if !output.status.success() {
            bail!(
                "gateway api-key: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(Self {
            http: format!("http://{http}"),
            api_key: String::from_utf8(output.stdout)?.trim().to_owned(),
            child,
            _data_dir: data_dir,
        })
    }

    pub(super) async fn stop(mut self) {
        // An error means it is gone already.
        let _ = self.child.kill().await;
    }
}
