//! A private mosquitto to compare the gateway against, started on a free loopback port.
//!
//! Starting our own keeps the baseline reproducible: a known config, nobody else's clients, and
//! the PID at hand for memory measurements. The child is killed when this handle is dropped, so
//! an error anywhere in a comparison cannot leave a broker behind.

use anyhow::{bail, Context, Result};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::sleep;

/// Where Debian's `mosquitto` package installs the broker.
const MOSQUITTO: &str = "/usr/sbin/mosquitto";
/// How many times, 100 ms apart, to try connecting before giving up on startup.
const READY_ATTEMPTS: u32 = 50;

pub struct Mosquitto {
    child: Child,
    addr: SocketAddr,
    /// Holds the config and log files for as long as the broker runs.
    dir: TempDir,
}

impl Mosquitto {
    pub async fn start() -> Result<Self> {
        if !Path::new(MOSQUITTO).exists() {
            bail!("{MOSQUITTO} not found: install it with `apt-get install mosquitto`");
        }
        let addr = free_loopback_port()?;
        let dir = tempfile::tempdir().context("creating a directory for mosquitto's config")?;
        let config = dir.path().join("mosquitto.conf");
        std::fs::write(&config, config_text(addr.port()))
            .with_context(|| format!("writing {}", config.display()))?;
        let log = std::fs::File::create(dir.path().join("mosquitto.log"))
            .context("creating mosquitto's log")?;
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("sharing mosquitto's log")?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {MOSQUITTO}"))?;
        let mut broker = Self { child, addr, dir };
        broker.wait_ready().await?;
        Ok(broker)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills the broker and waits for it to exit.
    pub async fn stop(mut self) {
        // It may already be gone; there is nothing else to do either way.
        let _ = self.child.kill().await;
    }

    async fn wait_ready(&mut self) -> Result<()> {
        for _ in 0..READY_ATTEMPTS {
            if let Some(status) = self.child.try_wait()? {
                bail!("mosquitto exited at startup ({status}): {}", self.log());
            }
            if TcpStream::connect(self.addr).await.is_ok() {
                return Ok(());
            }
            sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "mosquitto did not listen on {} in time: {}",
            self.addr,
            self.log()
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

/// Loopback only and anonymous; queues deep enough that a QoS 1 backlog is never dropped;
/// 100 messages in flight per client, like our publishers; TCP_NODELAY so that Nagle's
/// algorithm does not add latency; and no log line per connection at 100k connections.
fn config_text(port: u16) -> String {
    format!(
        "listener {port} 127.0.0.1\n\
         allow_anonymous true\n\
         max_queued_messages 1000000\n\
         max_inflight_messages 100\n\
         set_tcp_nodelay true\n\
         persistence false\n\
         connection_messages false\n\
         log_dest stderr\n\
         log_type error\n\
         log_type warning\n"
    )
}

/// A port nobody listens on right now; the tiny race until mosquitto binds it is acceptable
/// on a test machine.
fn free_loopback_port() -> Result<SocketAddr> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("looking for a free port")?;
    Ok(listener.local_addr()?)
}
