//! Scenario `connect`: opens many idle MQTT connections at a set rate, holds them, and reports
//! the connect rate, failures by kind, and the broker's memory per idle connection.
//!
//! rumqttc cannot bind a client socket to a chosen local address, and a full rumqttc event
//! loop per connection would make the load generator, not the broker, the memory hog at 100k
//! connections. So each connection here is a raw tokio socket bound to one of
//! 127.0.0.1..127.0.0.K (each source address has its own ~28k ephemeral ports), which sends a
//! CONNECT encoded by rumqttc's codec, reads the CONNACK, and then only answers the keep-alive
//! contract: a PINGREQ every keep-alive interval, and whatever the broker sends is discarded.
//!
//! With `--sessions` each connection is a device keeping a persistent session: its CONNECT has
//! `clean_session = 0`, and once accepted it subscribes to its user's inbox `u/{user}/inbox` at
//! QoS 1, so that the broker's memory per connection covers a kept session.

mod connection;

use crate::pacer::Pacer;
use crate::payload::now_ns;
use crate::procfs;
use crate::progress::{spawn_reporter, Counter};
use crate::report::{
    describe_errors, print_verdict, thousands, ErrorCount, ErrorTally, Failure, Outcome, Table,
};
use crate::target::{Target, TargetArgs, TargetKind};
use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use clap::{Args, ValueEnum};
use connection::Connection;
use rumqttc::mqttbytes::v4::Packet;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout_at, Instant};
use tokio_rustls::TlsConnector;

/// Connections per source address when `--source-ips` is not given: well under the ~28k
/// ephemeral ports Linux hands out per address by default.
const CONNECTIONS_PER_SOURCE: u64 = 20_000;
const MAX_PACKET: usize = 1024;
const DEVICE: &str = "d0";
/// How often the handshake phase looks at the counters.
const WAIT_POLL: Duration = Duration::from_millis(100);
/// How long connection tasks get to close once told to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection load, shared with `compare` (which names the rate flag differently).
#[derive(Args, Clone, Debug)]
pub struct ConnectLoad {
    /// Connections to open and hold.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub connections: u64,
    /// How long to hold all connections idle before measuring memory and closing them.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub hold: Duration,
    /// MQTT keep-alive announced in CONNECT; a PINGREQ is sent at this interval (1s..18h).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub keepalive: Duration,
    /// Spread connections over source addresses 127.0.0.1..127.0.0.K [default: one per 20000
    /// connections].
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=254))]
    pub source_ips: Option<u8>,
    /// Connection i logs in as user PREFIX{i}: load processes aimed at the nodes of one cluster
    /// need prefixes of their own, or each device's newest login takes over the others'.
    #[arg(long, default_value = "lt-u")]
    pub user_prefix: String,
    /// Give up on a TCP connect, and separately on a CONNACK, after this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Connections keep persistent sessions, as devices do: CONNECT with `clean_session = 0`,
    /// then SUBSCRIBE to the user's inbox `u/{user}/inbox` at QoS 1 (MQTT transports only).
    #[arg(long)]
    pub sessions: bool,
}

#[derive(Args, Debug)]
pub struct ConnectCmd {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    load: ConnectLoad,
    /// New connections per second.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..))]
    rate: u64,
    /// How the connections are made.
    #[arg(long, value_enum, default_value_t = ConnectTransport::Mqtt)]
    transport: ConnectTransport,
    /// The MQTT-over-WebSocket listener, for `--transport mqtt-ws` (loopback only).
    #[arg(long, default_value = "127.0.0.1:8083")]
    mqtt_ws: SocketAddr,
    /// The MQTT-over-TLS listener, for `--transport mqtt-tls` (loopback only).
    #[arg(long, default_value = "127.0.0.1:8883")]
    mqtt_tls: SocketAddr,
    /// PEM certificate(s) to trust for `--transport mqtt-tls`, e.g. the `cert.pem` that
    /// `gateway dev-cert` wrote.
    #[arg(long, value_name = "PEM")]
    ca: Option<std::path::PathBuf>,
    /// PID of the broker, to measure its memory per idle connection from /proc [default: the
    /// process listening on the MQTT port].
    #[arg(long)]
    pid: Option<u32>,
}

/// What an idle connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectTransport {
    /// MQTT over TCP.
    Mqtt,
    /// MQTT over TLS, trusting `--ca`.
    MqttTls,
    /// MQTT over WebSocket (`/mqtt`, subprotocol `mqtt`).
    MqttWs,
    /// The gateway's JSON WebSocket bridge (`/ws?token=`).
    JsonWs,
}

/// Where connections of one transport go.
#[derive(Clone)]
pub struct Destination {
    pub transport: ConnectTransport,
    pub addr: SocketAddr,
    /// The WebSocket URL, for the WebSocket transports.
    url: String,
    /// For `mqtt-tls`: who to trust.
    tls: Option<TlsConnector>,
}

impl Destination {
    /// Plain MQTT to `target`.
    pub fn mqtt(target: &Target) -> Self {
        Self {
            transport: ConnectTransport::Mqtt,
            addr: target.addr(),
            url: String::new(),
            tls: None,
        }
    }

    fn of(cmd: &ConnectCmd, target: &Target) -> Result<Self> {
        let addr = match cmd.transport {
            ConnectTransport::Mqtt => return Ok(Self::mqtt(target)),
            ConnectTransport::MqttTls => cmd.mqtt_tls,
            ConnectTransport::MqttWs => cmd.mqtt_ws,
            ConnectTransport::JsonWs => {
                if target.kind() != TargetKind::Gateway {
                    bail!("--transport json-ws needs the gateway target");
                }
                let http = crate::target::loopback_url(&cmd.target.endpoint.http, "--http")?;
                let host = http.host_str().context("--http has no host")?;
                let port = http.port_or_known_default().context("--http has no port")?;
                let host = host.trim_start_matches('[').trim_end_matches(']');
                SocketAddr::new(
                    host.parse().context("--http must name an IP address")?,
                    port,
                )
            }
        };
        if !addr.ip().is_loopback() {
            bail!("{addr}: only loopback targets are allowed");
        }
        let path = match cmd.transport {
            ConnectTransport::JsonWs => "/ws",
            _ => "/mqtt",
        };
        let tls = match cmd.transport {
            ConnectTransport::MqttTls => {
                let ca = cmd
                    .ca
                    .as_deref()
                    .context("--transport mqtt-tls needs --ca PEM")?;
                Some(tls_connector(ca)?)
            }
            _ => None,
        };
        Ok(Self {
            transport: cmd.transport,
            addr,
            url: format!("ws://{addr}{path}"),
            tls,
        })
    }
}

pub async fn run_cmd(cmd: &ConnectCmd) -> Result<ConnectResult> {
    let target = Target::from_args(&cmd.target)?;
    let destination = Destination::of(cmd, &target)?;
    let pid = cmd
        .pid
        .or_else(|| procfs::pid_listening_on(target.addr().port()));
    run(&target, &destination, &cmd.load, cmd.rate, pid).await
}

#[derive(Debug, Serialize)]
pub struct ConnectResult {
    pub target: TargetKind,
    pub transport: ConnectTransport,
    pub addr: SocketAddr,
    pub connections: u64,
    pub rate: u64,
    pub source_ips: u8,
    pub hold_seconds: f64,
    pub keepalive_seconds: u16,
    /// Each connection kept a persistent session subscribed to its user's inbox.
    pub sessions: bool,
    /// Time spent minting the gateway's tokens, before connecting.
    pub token_seconds: Option<f64>,
    pub established: u64,
    pub failed: u64,
    /// Neither established nor failed when the handshake phase ended.
    pub pending: u64,
    pub failures: BTreeMap<String, ErrorCount>,
    /// From the first connect to the last CONNACK.
    pub connect_seconds: f64,
    pub connect_rate: f64,
    /// Established connections the broker closed while they were held.
    pub dropped_during_hold: u64,
    /// Connections open when memory was measured.
    pub held: u64,
    pub broker_pid: Option<u32>,
    pub rss_before_bytes: Option<u64>,
    pub rss_held_bytes: Option<u64>,
    /// (RSS while holding − RSS before) / connections held. Only meaningful on a freshly
    /// started broker: one that already served load reuses the memory it freed, and allocators
    /// rarely give memory back, so the growth shows as ~0 or even negative.
    pub bytes_per_connection: Option<f64>,
    pub failed_checks: Vec<String>,
}

/// Shared by all connection tasks.
struct Stats {
    attempted: Arc<Counter>,
    established: Arc<Counter>,
    failed: Arc<Counter>,
    dropped: Arc<Counter>,
    failures: ErrorTally,
    last_connack_ns: AtomicU64,
}

impl Stats {
    fn fail(&self, failure: Failure) {
        self.failed.add(1);
        self.failures.add(failure);
    }
}

pub async fn run(
    target: &Target,
    destination: &Destination,
    load: &ConnectLoad,
    rate: u64,
    pid: Option<u32>,
) -> Result<ConnectResult> {
    let n = load.connections;
    if load.sessions && destination.transport == ConnectTransport::JsonWs {
        bail!("--sessions needs an MQTT transport: the JSON bridge keeps no MQTT session");
    }
    procfs::ensure_open_files(n)?;
    let keepalive_secs = u16::try_from(load.keepalive.as_secs())
        .ok()
        .filter(|&s| s > 0)
        .context("--keepalive must be between 1s and 65535s")?;
    let keepalive = Duration::from_secs(keepalive_secs.into());
    let source_ips = load.source_ips.unwrap_or_else(|| {
        u8::try_from(n.div_ceil(CONNECTIONS_PER_SOURCE).clamp(1, 254)).expect("clamped")
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let tokens = Counter::new("tokens");
    let stats = Arc::new(Stats {
        attempted: Counter::new("attempted"),
        established: Counter::new("established"),
        failed: Counter::new("failed"),
        dropped: Counter::new("dropped"),
        failures: ErrorTally::default(),
        last_connack_ns: AtomicU64::new(0),
    });
    let mut counters = vec![
        stats.attempted.clone(),
        stats.established.clone(),
        stats.failed.clone(),
        stats.dropped.clone(),
    ];
    if target.kind() == TargetKind::Gateway {
        counters.insert(0, tokens.clone());
    }
    let reporter = spawn_reporter(
        format!("connect {}", target.kind().as_str()),
        counters,
        stop_rx.clone(),
    );

    let devices: Vec<(String, String)> = (0..n)
        .map(|i| (format!("{}{i}", load.user_prefix), DEVICE.to_owned()))
        .collect();
    let minting = Instant::now();
    let credentials = target.credentials(&devices, &tokens).await?;
    drop(devices);
    let token_seconds =
        (target.kind() == TargetKind::Gateway).then(|| minting.elapsed().as_secs_f64());

    let rss_before = pid.map(procfs::rss_bytes).transpose()?;
    let mut ping = BytesMut::new();
    Packet::PingReq
        .write(&mut ping, MAX_PACKET)
        .context("encoding PINGREQ")?;
    let ping = ping.freeze();

    let start_ns = now_ns();
    let mut pacer = Pacer::new(rate);
    let block = next_source_block();
    let mut tasks: Vec<JoinHandle<()>> = Vec::with_capacity(credentials.len());
    for (i, credentials) in credentials.into_iter().enumerate() {
        pacer.wait().await;
        let connection = Connection {
            source: source_addr(destination.addr, block, i as u64 % u64::from(source_ips)),
            destination: destination.clone(),
            keepalive,
            connect_timeout: load.connect_timeout,
            ping: ping.clone(),
            inbox: load
                .sessions
                .then(|| protocol::topics::inbox(&format!("{}{i}", load.user_prefix))),
            stats: stats.clone(),
            stop: stop_rx.clone(),
        };
        stats.attempted.add(1);
        tasks.push(tokio::spawn(connection.run(credentials)));
    }

    // A handshake is bounded by one connect and one CONNACK timeout.
    let handshake_end = Instant::now() + load.connect_timeout * 2;
    while stats.established.get() + stats.failed.get() < n && Instant::now() < handshake_end {
        sleep(WAIT_POLL).await;
    }
    sleep(load.hold).await;
    let held = stats.established.get() - stats.dropped.get();
    let rss_held = pid.map(procfs::rss_bytes).transpose()?;

    let _ = stop_tx.send(true);
    let closing_end = Instant::now() + STOP_TIMEOUT;
    for task in tasks {
        timeout_at(closing_end, task)
            .await
            .context("connections did not close in time")??;
    }
    reporter.await?;
    let (established, failed) = (stats.established.get(), stats.failed.get());
    let connect_seconds = stats
        .last_connack_ns
        .load(Ordering::Relaxed)
        .saturating_sub(start_ns) as f64
        / 1e9;

    let bytes_per_connection = match (rss_before, rss_held) {
        (Some(before), Some(held_rss)) if held > 0 => {
            Some((held_rss as f64 - before as f64) / held as f64)
        }
        _ => None,
    };
    let mut result = ConnectResult {
        target: target.kind(),
        transport: destination.transport,
        addr: destination.addr,
        connections: n,
        rate,
        source_ips,
        hold_seconds: load.hold.as_secs_f64(),
        keepalive_seconds: keepalive_secs,
        sessions: load.sessions,
        token_seconds,
        established,
        failed,
        pending: n - established - failed,
        failures: stats.failures.snapshot(),
        connect_seconds,
        connect_rate: if connect_seconds > 0.0 {
            established as f64 / connect_seconds
        } else {
            0.0
        },
        dropped_during_hold: stats.dropped.get(),
        held,
        broker_pid: pid,
        rss_before_bytes: rss_before,
        rss_held_bytes: rss_held,
        bytes_per_connection,
        failed_checks: Vec::new(),
    };
    result.failed_checks = result.checks();
    Ok(result)
}

/// A loopback block (`127.B.0.x`) for one run. Each run (and each process) takes a different one:
/// the ports an earlier run left in TIME_WAIT stay bound to that run's addresses, and a new run
/// on the same addresses would fail with AddrInUse once the port range is used up.
fn next_source_block() -> u8 {
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    (1 + (std::process::id().wrapping_mul(7).wrapping_add(run)) % 254) as u8
}

/// Source address number `k` of `block` for a connection to `target`: 127.block.0.(k+1), or ::1
/// for IPv6.
fn source_addr(target: SocketAddr, block: u8, k: u64) -> IpAddr {
    match target {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(127, block, 0, 1 + k as u8)),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    }
}

/// A TLS client trusting the certificates in the PEM file `ca`.
fn tls_connector(ca: &std::path::Path) -> Result<TlsConnector> {
    Ok(TlsConnector::from(crate::target::tls_client_config(ca)?))
}

impl ConnectResult {
    fn checks(&self) -> Vec<String> {
        let mut failed = Vec::new();
        if self.failed > 0 {
            failed.push(format!(
                "{} connections failed: {}",
                self.failed,
                describe_errors(&self.failures)
            ));
        }
        if self.pending > 0 {
            failed.push(format!(
                "{} connections still handshaking after the connect timeouts",
                self.pending
            ));
        }
        if self.dropped_during_hold > 0 {
            failed.push(format!(
                "{} connections closed by the broker while held",
                self.dropped_during_hold
            ));
        }
        failed
    }

    /// One line for `compare`'s progress output.
    pub fn summary_line(&self) -> String {
        format!(
            "connect {} of {} at {} conn/s, {} B/conn",
            self.established,
            self.connections,
            thousands(self.connect_rate),
            self.bytes_per_connection.map_or("?".to_owned(), thousands)
        )
    }
}

impl Outcome for ConnectResult {
    fn print(&self) {
        println!(
            "connect {:?}{} against {} {}: {} connections at {}/s from {} source address(es), \
             hold {} s, keepalive {} s",
            self.transport,
            if self.sessions {
                " with persistent sessions subscribed to their inbox"
            } else {
                ""
            },
            self.target.as_str(),
            self.addr,
            thousands(self.connections as f64),
            thousands(self.rate as f64),
            self.source_ips,
            self.hold_seconds,
            self.keepalive_seconds
        );
        let mut table = Table::default();
        if let Some(seconds) = self.token_seconds {
            table.row(["tokens minted".to_owned(), format!("in {seconds:.2} s")]);
        }
        table.row([
            "established".to_owned(),
            thousands(self.established as f64),
            format!("in {:.2} s", self.connect_seconds),
            format!("{} conn/s", thousands(self.connect_rate)),
        ]);
        table.row([
            "failed".to_owned(),
            thousands(self.failed as f64),
            format!("pending {}", self.pending),
            format!("dropped while held {}", self.dropped_during_hold),
        ]);
        for (kind, failure) in &self.failures {
            table.row([
                format!("  {kind}"),
                thousands(failure.count as f64),
                failure.first.clone(),
            ]);
        }
        let mib = |b: Option<u64>| {
            b.map_or("?".to_owned(), |b| {
                format!("{:.1} MiB", b as f64 / 1048576.0)
            })
        };
        match self.broker_pid {
            Some(pid) => table.row([
                format!("broker rss (pid {pid})"),
                format!("before {}", mib(self.rss_before_bytes)),
                format!("held {}", mib(self.rss_held_bytes)),
                format!(
                    "{} B/connection",
                    self.bytes_per_connection.map_or("?".to_owned(), thousands)
                ),
            ]),
            None => table.row(["broker rss", "not measured (no --pid)"]),
        }
        print!("{}", table.render());
        if self.bytes_per_connection.is_some_and(|b| b <= 0.0) {
            println!("note: the broker reused memory freed by earlier load; restart it to measure");
        }
        print_verdict(&self.failed_checks);
    }

    fn passed(&self) -> bool {
        self.failed_checks.is_empty()
    }
}
