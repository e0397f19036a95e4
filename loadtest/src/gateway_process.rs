//! The gateway binary run as a child process, the way a benchmark or an end-to-end test needs
//! it: `gateway serve` on a data dir with every listener on a free loopback port, the bound
//! addresses read from the one JSON line it prints (`{"listening": {...}}`), and the backend
//! API key from `gateway api-key`.
//!
//! `loadtest notify --start-gateway` and the end-to-end tests' `TestGateway` both start the
//! gateway through this, so how it is started and how it announces itself is known in one
//! place.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a starting gateway gets to print its listeners: generous, because a debug build on
/// a shared machine may take long; this bounds a hang, it does not measure anything.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The listeners the gateway is told to bind on free loopback ports (`GATEWAY__LISTENERS__*`).
/// The TLS ones are only bound when TLS is configured (`GATEWAY__TLS__CERT` and `__KEY`).
const LISTENERS: [&str; 5] = ["MQTT", "MQTT_WS", "HTTP", "MQTT_TLS", "MQTT_WSS"];

/// The gateway's per-device and per-API-key rate limits are lifted: the load scenarios push
/// from a few devices and one API key far beyond what a person does, and the tests do the
/// same in a hurry. The tests of the limits set it back.
const RATE_LIMITS_OFF: (&str, &str) = ("GATEWAY__RATE_LIMITS__ENABLED", "false");

/// A running `gateway serve`. Dropping it kills the process (SIGKILL) and then removes its data
/// dir; [`stop`](Self::stop) kills it and keeps the data dir, for a restart on it.
///
/// Its stdout is read on a task for as long as it runs, so the gateway never blocks on a full
/// pipe; its stderr is this process's, so its warnings (`RUST_LOG=warn`) show where the caller's
/// output does.
pub struct GatewayProcess {
    /// Declared before `data_dir`, so the process is killed before its data dir is removed.
    child: Child,
    pub data_dir: TempDir,
    pub mqtt: SocketAddr,
    pub mqtt_ws: SocketAddr,
    pub http: SocketAddr,
    /// Bound only when the gateway was given a certificate and key.
    pub mqtt_tls: Option<SocketAddr>,
    pub mqtt_wss: Option<SocketAddr>,
    /// The backend API key the gateway generated into (or found in) its data dir.
    pub api_key: String,
}

impl GatewayProcess {
    /// Starts `binary serve` on `data_dir` with `env` (full names: `GATEWAY__SECTION__KEY`,
    /// applied after the listeners', `RUST_LOG` and [`RATE_LIMITS_OFF`], so they can override
    /// them) and returns once it listens and its API key is known.
    pub async fn start<K, V>(
        binary: &Path,
        data_dir: TempDir,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self>
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
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
        for listener in LISTENERS {
            command.env(format!("GATEWAY__LISTENERS__{listener}"), "127.0.0.1:0");
        }
        command.env(RATE_LIMITS_OFF.0, RATE_LIMITS_OFF.1);
        command.envs(env);
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
        let addr = |name: &str| -> Option<SocketAddr> {
            listening["listening"][name]
                .as_str()
                .and_then(|addr| addr.parse().ok())
        };
        let bound =
            |name: &str| addr(name).with_context(|| format!("no {name} listener in {line}"));
        Ok(Self {
            mqtt: bound("mqtt")?,
            mqtt_ws: bound("mqtt_ws")?,
            http: bound("http")?,
            mqtt_tls: addr("mqtt_tls"),
            mqtt_wss: addr("mqtt_wss"),
            api_key: run_subcommand(binary, data_dir.path(), &["api-key"])?,
            child,
            data_dir,
        })
    }

    /// The gateway's process id, for measuring its CPU and memory; `None` once it has exited.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills the gateway (SIGKILL: nothing is flushed or said) and waits for it to exit,
    /// keeping its data dir for a restart.
    pub async fn stop(mut self) -> TempDir {
        // An error means it is gone already.
        let _ = self.child.kill().await;
        self.data_dir
    }
}

/// How a gateway ended after [`GatewayProcess::terminate`].
pub struct Terminated {
    pub status: std::process::ExitStatus,
    /// From the signal (or the start of the wait) to the process's exit.
    pub took: Duration,
    /// Kept for a restart on it.
    pub data_dir: TempDir,
}

/// The longest a terminated gateway is waited for before it is killed: beyond any configured
/// shutdown grace a test uses; this bounds a hang, it does not measure anything.
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

impl GatewayProcess {
    /// Asks the gateway to shut down (SIGTERM) and waits for it to exit.
    pub async fn terminate(self) -> Result<Terminated> {
        let pid = self.child.id().context("the gateway has exited already")?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid)?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
            .context("sending SIGTERM to the gateway")?;
        self.exited().await
    }

    /// Waits for the gateway to exit (after a signal, or by itself).
    pub async fn exited(mut self) -> Result<Terminated> {
        let started = std::time::Instant::now();
        let status = match tokio::time::timeout(EXIT_TIMEOUT, self.child.wait()).await {
            Ok(status) => status?,
            Err(_) => {
                let _ = self.child.kill().await;
                bail!("the gateway did not exit within {EXIT_TIMEOUT:?}");
            }
        };
        Ok(Terminated {
            status,
            took: started.elapsed(),
            data_dir: self.data_dir,
        })
    }
}

/// Runs a one-shot `gateway` subcommand (`api-key`, `token`, `dev-cert`, ...) on `data_dir` and
/// returns its stdout, trimmed; its stdout and stderr are the error when it fails.
pub fn run_subcommand(binary: &Path, data_dir: &Path, args: &[&str]) -> Result<String> {
    let output = std::process::Command::new(binary)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .with_context(|| format!("running gateway {}", args.join(" ")))?;
    if !output.status.success() {
        bail!(
            "gateway {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}
