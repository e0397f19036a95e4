//! Scenario `roam`: a reconnect storm. Devices come online and learn where their user's log
//! stands, all drop, messages pile up for their users meanwhile, and then every device
//! reconnects at once and syncs from where it was. Measures the time until the last device has
//! caught up, and checks that each device got exactly the messages it missed: every sequence
//! after its cursor, once, in order.
//!
//! Each run uses fresh users, so the cursor after the first sync is 0 and the missed messages
//! are sequences 1..=missed of each user's log.

use crate::device::{Arrival, Device, DeviceMix, Endpoints, Transport};
use crate::messages_api::MessagesApi;
use crate::pacer::Pacer;
use crate::payload::now_ns;
use crate::progress::{spawn_reporter, Counter, Timeline};
use crate::report::{describe_errors, print_verdict, thousands, ErrorCount, ErrorTally, Failure};
use crate::report::{LatencySummary, Outcome, SharedHistogram, Table};
use crate::seq::check_log_sequence;
use crate::target::{Credentials, EndpointArgs, Target};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use futures_util::{stream, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{timeout, Instant};

const HISTOGRAM_SHARDS: usize = 64;

#[derive(Args, Debug)]
pub struct RoamCmd {
    #[command(flatten)]
    pub endpoint: EndpointArgs,
    /// Devices that drop and reconnect.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    devices: u64,
    /// Devices per user; users = devices / this (rounded up).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=16))]
    devices_per_user: u64,
    /// How many of each user's devices use the JSON WebSocket bridge; the rest use MQTT.
    #[arg(long, default_value_t = 0)]
    ws_devices: u64,
    /// Messages each user gets while its devices are offline.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    missed: u64,
    /// Devices coming online per second before the storm (the storm itself is all at once).
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..))]
    connect_rate: u64,
    /// Reconnects per second in the storm; 0 reconnects every device at once.
    #[arg(long, default_value_t = 0)]
    reconnect_rate: u64,
    /// Messages posted at once while devices are offline.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    post_concurrency: u64,
    /// Give up on one device's login and subscriptions after this long.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,
    /// Give up on one device's catch-up, counted from the storm's start, after this long.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    catchup_timeout: Duration,
}

#[derive(Debug, Serialize)]
pub struct RoamResult {
    pub devices: u64,
    pub users: u64,
    pub devices_per_user: u64,
    pub ws_devices_per_user: u64,
    pub missed_per_user: u64,
    /// Devices online before the storm.
    pub online: u64,
    pub posted: u64,
    pub post_seconds: f64,
    pub post_rate: f64,
    pub reconnect_rate: u64,
    /// Devices that reconnected and got everything they missed, in order.
    pub caught_up: u64,
    /// From the storm's start until the last device caught up.
    pub all_caught_up_seconds: f64,
    /// Messages delivered in sync pages during the storm.
    pub synced: u64,
    /// From the storm's start, per device.
    pub reconnected_us: LatencySummary,
    pub caught_up_us: LatencySummary,
    pub errors: BTreeMap<String, ErrorCount>,
    pub timeline: Timeline,
    #[serde(skip)]
    pub caught_up_latency: Histogram<u64>,
    pub failed_checks: Vec<String>,
}

/// One device of the run: who it is and how it logs in (its token serves both connections).
struct Member {
    user: String,
    device: String,
    transport: Transport,
    credentials: Credentials,
}

/// What the storm's tasks share.
struct Storm {
    start: Instant,
    missed: u64,
    reconnected: Arc<Counter>,
    caught_up: Arc<Counter>,
    synced: Arc<Counter>,
    reconnect_latency: SharedHistogram,
    caught_up_latency: SharedHistogram,
    errors: ErrorTally,
}

pub async fn run_cmd(cmd: &RoamCmd) -> Result<RoamResult> {
    let mix = DeviceMix::new(cmd.devices_per_user, cmd.ws_devices, "--devices-per-user")?;
    crate::procfs::ensure_open_files(cmd.devices)?;
    let target = Target::gateway(&cmd.endpoint)?;
    let endpoints = Endpoints::new(cmd.endpoint.mqtt, &cmd.endpoint.http)?;
    let api = MessagesApi::new(&cmd.endpoint)?;
    let run = format!("ro{:x}", now_ns());
    let users = cmd.devices.div_ceil(cmd.devices_per_user);
    let ids: Vec<(String, String)> = (0..cmd.devices)
        .map(|i| {
            (
                format!("{run}-u{}", i / cmd.devices_per_user),
                format!("d{}", i % cmd.devices_per_user),
            )
        })
        .collect();

    let tokens = Counter::new("tokens");
    let online = Counter::new("online");
    let posted = Counter::new("posted");
    let reconnected = Counter::new("reconnected");
    let synced = Counter::new("synced");
    let caught_up = Counter::new("caught_up");
    let (stop_tx, stop_rx) = watch::channel(false);
    let reporter = spawn_reporter(
        "roam".to_owned(),
        vec![
            tokens.clone(),
            online.clone(),
            posted.clone(),
            reconnected.clone(),
            synced.clone(),
            caught_up.clone(),
        ],
        stop_rx,
    );

    let credentials = target.credentials(&ids, &tokens).await?;
    let members: Vec<Arc<Member>> = ids
        .into_iter()
        .zip(credentials)
        .enumerate()
        .map(|(i, ((user, device), credentials))| {
            Arc::new(Member {
                user,
                device,
                transport: mix.transport(i as u64),
                credentials,
            })
        })
        .collect();

    // Online: every device connects and learns its cursor (0: fresh users), then all drop.
    let mut pacer = Pacer::new(cmd.connect_rate);
    let mut coming_online = Vec::with_capacity(members.len());
    for member in &members {
        pacer.wait().await;
        let (member, endpoints, online) = (member.clone(), endpoints.clone(), online.clone());
        let limit = cmd.connect_timeout;
        coming_online.push(tokio::spawn(async move {
            let mut device = member.connect(&endpoints, limit).await?;
            let (seqs, epoch) = timeout(limit, sync_all(&mut device, 0, None))
                .await
                .map_err(|_| anyhow!("first sync unfinished after {limit:?}"))??;
            if !seqs.is_empty() {
                bail!("a fresh user's log holds {} messages", seqs.len());
            }
            online.add(1);
            Ok::<_, anyhow::Error>((device, epoch))
        }));
    }
    let mut devices = Vec::with_capacity(members.len());
    let mut epochs = Vec::with_capacity(members.len());
    for (task, member) in coming_online.into_iter().zip(&members) {
        let (device, epoch) = task
            .await?
            .with_context(|| format!("{} {} coming online", member.user, member.device))?;
        devices.push(device);
        epochs.push(epoch);
    }
    stream::iter(devices)
        .for_each_concurrent(None, Device::close)
        .await;

    // Offline: messages pile up.
    let posting = Instant::now();
    let concurrency = (cmd.post_concurrency / users.min(cmd.post_concurrency)).max(1) as usize;
    let checks: Vec<Result<()>> = stream::iter(0..users)
        .map(|u| {
            let (api, posted) = (&api, &posted);
            let user = format!("{run}-u{u}");
            async move {
                let seqs = api
                    .fill(&user, cmd.missed, concurrency, || posted.add(1))
                    .await?;
                check_log_sequence(&seqs, cmd.missed)
                    .map_err(|problem| anyhow!("posting to {user}: the log's sequences: {problem}"))
            }
        })
        .buffer_unordered(users.min(cmd.post_concurrency) as usize)
        .collect()
        .await;
    checks.into_iter().collect::<Result<()>>()?;
    let post_seconds = posting.elapsed().as_secs_f64();

    // The storm.
    let storm = Arc::new(Storm {
        start: Instant::now(),
        missed: cmd.missed,
        reconnected,
        caught_up,
        synced,
        reconnect_latency: SharedHistogram::new(HISTOGRAM_SHARDS),
        caught_up_latency: SharedHistogram::new(HISTOGRAM_SHARDS),
        errors: ErrorTally::default(),
    });
    let mut pacer = (cmd.reconnect_rate > 0).then(|| Pacer::new(cmd.reconnect_rate));
    let mut reconnecting = Vec::with_capacity(members.len());
    for (i, (member, epoch)) in members.iter().zip(epochs).enumerate() {
        if let Some(pacer) = &mut pacer {
            pacer.wait().await;
        }
        let (member, endpoints, storm) = (member.clone(), endpoints.clone(), storm.clone());
        let limits = (cmd.connect_timeout, cmd.catchup_timeout);
        reconnecting.push(tokio::spawn(async move {
            let caught_up = storm.catch_up(i, &member, &epoch, &endpoints, limits);
            if let Err(error) = caught_up.await {
                storm.errors.add(error);
            }
        }));
    }
    for task in reconnecting {
        task.await?;
    }
    let all_caught_up_seconds = storm.start.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let timeline = reporter.await?;

    let caught_up_latency = storm.caught_up_latency.merged();
    let mut result = RoamResult {
        devices: cmd.devices,
        users,
        devices_per_user: cmd.devices_per_user,
        ws_devices_per_user: cmd.ws_devices,
        missed_per_user: cmd.missed,
        online: online.get(),
        posted: posted.get(),
        post_seconds,
        post_rate: posted.get() as f64 / post_seconds.max(1e-9),
        reconnect_rate: cmd.reconnect_rate,
        caught_up: storm.caught_up.get(),
        all_caught_up_seconds,
        synced: storm.synced.get(),
        reconnected_us: LatencySummary::from_histogram(&storm.reconnect_latency.merged()),
        caught_up_us: LatencySummary::from_histogram(&caught_up_latency),
        errors: storm.errors.snapshot(),
        timeline,
        caught_up_latency,
        failed_checks: Vec::new(),
    };
    result.failed_checks = result.checks();
    Ok(result)
}

impl Member {
    /// Why this device did not catch up, grouped by `kind` in the report.
    fn failure(&self, kind: &str, error: impl std::fmt::Display) -> Failure {
        Failure::new(kind, format!("{} {}: {error:#}", self.user, self.device))
    }

    async fn connect(&self, endpoints: &Endpoints, limit: Duration) -> Result<Device> {
        Device::connect(
            endpoints,
            self.transport,
            &self.user,
            &self.device,
            self.credentials.clone(),
            limit,
        )
        .await
    }
}

impl Storm {
    /// Reconnects one device, syncs from its cursor (0 of `epoch`) and checks what came.
    async fn catch_up(
        &self,
        index: usize,
        member: &Member,
        epoch: &str,
        endpoints: &Endpoints,
        (connect_timeout, catchup_timeout): (Duration, Duration),
    ) -> Result<(), Failure> {
        let mut device = member
            .connect(endpoints, connect_timeout)
            .await
            .map_err(|e| member.failure("reconnect", e))?;
        self.reconnected.add(1);
        self.reconnect_latency
            .record(index, self.start.elapsed().as_micros() as u64);
        let deadline = self.start + catchup_timeout;
        let synced = tokio::time::timeout_at(deadline, sync_all(&mut device, 0, Some(epoch))).await;
        let at = self.start.elapsed();
        device.close().await;
        let (seqs, _) = synced
            .map_err(|_| member.failure("sync", "unfinished at --catchup-timeout"))?
            .map_err(|e| member.failure("sync", e))?;
        self.synced.add(seqs.len() as u64);
        check_log_sequence(&seqs, self.missed)
            .map_err(|problem| member.failure("sequence", problem))?;
        self.caught_up.add(1);
        self.caught_up_latency.record(index, at.as_micros() as u64);
        Ok(())
    }
}

/// Syncs after `after` until the last page; returns the sequences received and the epoch.
async fn sync_all(
    device: &mut Device,
    after: u64,
    epoch: Option<&str>,
) -> Result<(Vec<u64>, String)> {
    device.sync(after, epoch).await?;
    let mut seqs = Vec::new();
    loop {
        if let Arrival::Page { page, .. } = device.next().await? {
            if let Some(reset) = page.reset {
                bail!("history reset: {reset:?}");
            }
            seqs.extend(page.messages.iter().map(|m| m.seq));
            if !page.more {
                return Ok((seqs, page.epoch));
            }
        }
    }
}

impl RoamResult {
    fn checks(&self) -> Vec<String> {
        let mut failed = Vec::new();
        if self.caught_up < self.devices {
            failed.push(format!(
                "{} of {} devices did not catch up",
                self.devices - self.caught_up,
                self.devices
            ));
        }
        if !self.errors.is_empty() {
            failed.push(describe_errors(&self.errors));
        }
        failed
    }
}

impl Outcome for RoamResult {
    fn print(&self) {
        println!(
            "roam: {} devices ({} users × {}, {} on the JSON bridge) each missing {} messages, \
             reconnecting {}",
            thousands(self.devices as f64),
            thousands(self.users as f64),
            self.devices_per_user,
            self.ws_devices_per_user,
            self.missed_per_user,
            if self.reconnect_rate == 0 {
                "all at once".to_owned()
            } else {
                format!("at {}/s", thousands(self.reconnect_rate as f64))
            }
        );
        let mut table = Table::default();
        table.rate_row(
            "messages missed, posted",
            thousands(self.posted as f64),
            self.post_seconds,
            self.post_rate,
            "msg/s",
        );
        table.row([
            "caught up".to_owned(),
            format!(
                "{} of {}",
                thousands(self.caught_up as f64),
                thousands(self.devices as f64)
            ),
            format!("all within {:.2} s", self.all_caught_up_seconds),
            format!("{} messages synced", thousands(self.synced as f64)),
        ]);
        let millis = |s: &LatencySummary| {
            [s.p50_us, s.p90_us, s.p99_us, s.max_us].map(|us| format!("{:.0}", us as f64 / 1e3))
        };
        table.row(["ms from the storm's start", "p50", "p90", "p99", "max"].map(str::to_owned));
        for (label, summary) in [
            ("reconnected", &self.reconnected_us),
            ("caught up", &self.caught_up_us),
        ] {
            let [p50, p90, p99, max] = millis(summary);
            table.row([label.to_owned(), p50, p90, p99, max]);
        }
        print!("{}", table.render());
        print_verdict(&self.failed_checks);
    }

    fn passed(&self) -> bool {
        self.failed_checks.is_empty()
    }

    fn plot(&self) -> Option<crate::plot::PlotData<'_>> {
        Some(crate::plot::PlotData {
            title: "roam: time from the reconnect storm's start to caught up",
            latency: &self.caught_up_latency,
            timeline: &self.timeline,
            rate_series: "synced",
        })
    }
}
