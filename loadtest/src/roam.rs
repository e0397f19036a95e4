//! Scenario `roam`: a reconnect storm. Devices come online and learn where their user's log
//! stands, all drop, messages pile up for their users meanwhile, and then every device
//! reconnects at once and syncs from where it was. Measures the time until the last device has
//! caught up, and checks that each device got exactly the messages it missed: every sequence
//! after its cursor, once, in order.
//!
//! Each run uses fresh users, so the cursor after the first sync is 0 and the missed messages
//! are sequences 1..=missed of each user's log.
//!
//! With `--sessions` the devices keep persistent MQTT sessions instead of syncing: each
//! connects once asking to keep its session, subscribes to its inbox at QoS 1 and drops; in
//! the storm it sends nothing but a CONNECT, must be told its session is present, and must get
//! exactly the messages it missed as PUBLISHes on its inbox, acknowledging each. The devices stay
//! connected for `--linger` after the last one caught up, so that a message sent again, or one
//! beyond those missed, is seen.

use crate::device::{Arrival, Device, DeviceMix, Endpoints, Transport};
use crate::messages_api::MessagesApi;
use crate::pacer::Pacer;
use crate::payload::now_ns;
use crate::progress::{spawn_reporter, Counter, Timeline};
use crate::report::{describe_errors, print_verdict, thousands, ErrorCount, ErrorTally, Failure};
use crate::report::{LatencySummary, Outcome, SharedHistogram, Table};
use crate::seq::{check_log_sequence, tally_log_sequence};
use crate::session_device::{MqttVersion, SessionDevice};
use crate::target::{Credentials, EndpointArgs, Target};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use futures_util::{stream, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::time::{timeout, timeout_at, Instant};

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
    /// Devices keep persistent MQTT sessions instead of syncing: each connects once asking to
    /// keep its session, subscribes to its inbox at QoS 1 and drops; in the storm it sends only
    /// a CONNECT and gets what it missed as PUBLISHes on its inbox (MQTT devices only).
    #[arg(long)]
    sessions: bool,
    /// The MQTT version of the `--sessions` devices: 3.1.1 (`clean_session = 0`) or 5
    /// (`clean_start = 0`, Session Expiry Interval of an hour).
    #[arg(long, value_enum, default_value_t = MqttVersion::V311, requires = "sessions")]
    mqtt_version: MqttVersion,
    /// With `--sessions`: how long the devices stay connected after the last one caught up,
    /// so that a message sent again, or one beyond those missed, is counted.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration, requires = "sessions")]
    linger: Duration,
}

/// How a device catches up on what it missed.
#[derive(Clone, Copy, Debug)]
enum CatchUp {
    /// It asks for its user's log after its cursor (the gateway's sync protocol).
    Sync,
    /// Its persistent MQTT session delivers the log after its cursor on reconnecting.
    Session(MqttVersion),
}

impl CatchUp {
    fn describe(self) -> String {
        match self {
            Self::Sync => "sync".to_owned(),
            Self::Session(version) => format!("mqtt-session-{}", version.as_str()),
        }
    }
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
    /// How devices caught up: `sync`, or `mqtt-session-3.1.1` / `mqtt-session-5` (`--sessions`).
    pub catch_up: String,
    /// Devices whose CONNACK in the storm said their session was present (`--sessions`).
    pub session_present: Option<u64>,
    /// With `--sessions`: how long devices stayed connected after the last caught up.
    pub linger_seconds: Option<f64>,
    /// Devices that reconnected and got everything they missed, in order.
    pub caught_up: u64,
    /// From the storm's start until the last device caught up.
    pub all_caught_up_seconds: f64,
    /// Messages delivered during the storm: in sync pages, or as PUBLISHes of the sessions.
    pub synced: u64,
    /// Missed messages that never reached their device (every device's 1..=missed).
    pub missing: u64,
    /// Messages a device received again.
    pub repeated: u64,
    /// Messages outside the device's 1..=missed (sent beyond what was missed, or not its log).
    pub unexpected: u64,
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
    catch_up: CatchUp,
    reconnected: Arc<Counter>,
    caught_up: Arc<Counter>,
    synced: Arc<Counter>,
    session_present: AtomicU64,
    unique: AtomicU64,
    repeated: AtomicU64,
    unexpected: AtomicU64,
    reconnect_latency: SharedHistogram,
    caught_up_latency: SharedHistogram,
    errors: ErrorTally,
    /// Devices still reading what they missed; `all_read` is told when none is left.
    reading: AtomicU64,
    all_read: Notify,
    /// Set once the storm is over: lingering session devices disconnect.
    over: watch::Receiver<bool>,
}

/// A device online before the storm, about to drop.
enum Online {
    /// Synced (nothing yet) and knows its log's epoch.
    Synced { device: Device, epoch: String },
    /// Subscribed with a persistent session.
    Session(SessionDevice),
}

impl Online {
    /// Disconnects; the log's epoch, for a device that synced.
    async fn close(self) -> Option<String> {
        match self {
            Self::Synced { device, epoch } => {
                device.close().await;
                Some(epoch)
            }
            Self::Session(device) => {
                device.close().await;
                None
            }
        }
    }
}

pub async fn run_cmd(cmd: &RoamCmd) -> Result<RoamResult> {
    let mix = DeviceMix::new(cmd.devices_per_user, cmd.ws_devices, "--devices-per-user")?;
    let catch_up = if cmd.sessions {
        if cmd.ws_devices > 0 {
            bail!("--sessions devices are MQTT devices: --ws-devices must be 0");
        }
        CatchUp::Session(cmd.mqtt_version)
    } else {
        CatchUp::Sync
    };
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

    // Online: every device connects and learns its cursor (0: fresh users), or subscribes with
    // a persistent session, then all drop.
    let mut pacer = Pacer::new(cmd.connect_rate);
    let mut coming_online = Vec::with_capacity(members.len());
    for member in &members {
        pacer.wait().await;
        let (member, endpoints, online) = (member.clone(), endpoints.clone(), online.clone());
        let limit = cmd.connect_timeout;
        coming_online.push(tokio::spawn(async move {
            let device = member.come_online(catch_up, &endpoints, limit).await?;
            online.add(1);
            Ok::<_, anyhow::Error>(device)
        }));
    }
    let mut devices = Vec::with_capacity(members.len());
    for (task, member) in coming_online.into_iter().zip(&members) {
        let device = task
            .await?
            .with_context(|| format!("{} {} coming online", member.user, member.device))?;
        devices.push(device);
    }
    let epochs: Vec<Option<String>> = stream::iter(devices)
        .map(Online::close)
        .buffered(members.len().max(1))
        .collect()
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
    let (over_tx, over) = watch::channel(false);
    let storm = Arc::new(Storm {
        start: Instant::now(),
        missed: cmd.missed,
        catch_up,
        reconnected,
        caught_up,
        synced,
        session_present: AtomicU64::new(0),
        unique: AtomicU64::new(0),
        repeated: AtomicU64::new(0),
        unexpected: AtomicU64::new(0),
        reconnect_latency: SharedHistogram::new(HISTOGRAM_SHARDS),
        caught_up_latency: SharedHistogram::new(HISTOGRAM_SHARDS),
        errors: ErrorTally::default(),
        reading: AtomicU64::new(members.len() as u64),
        all_read: Notify::new(),
        over,
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
            let caught_up = storm.catch_up(i, &member, epoch.as_deref(), &endpoints, limits);
            if let Err(error) = caught_up.await {
                storm.errors.add(error);
            }
        }));
    }
    let linger = matches!(catch_up, CatchUp::Session(_)).then_some(cmd.linger);
    let mut all_caught_up_seconds = None;
    if let Some(linger) = linger {
        // Timed when the last device has read all it missed (or failed), not after lingering.
        if !members.is_empty() {
            storm.all_read.notified().await;
        }
        all_caught_up_seconds = Some(storm.start.elapsed().as_secs_f64());
        tokio::time::sleep(linger).await;
        let _ = over_tx.send(true);
    }
    for task in reconnecting {
        task.await?;
    }
    let all_caught_up_seconds =
        all_caught_up_seconds.unwrap_or_else(|| storm.start.elapsed().as_secs_f64());
    let unique = storm.unique.load(Ordering::Relaxed);
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
        catch_up: catch_up.describe(),
        session_present: matches!(catch_up, CatchUp::Session(_))
            .then(|| storm.session_present.load(Ordering::Relaxed)),
        linger_seconds: linger.map(|linger| linger.as_secs_f64()),
        caught_up: storm.caught_up.get(),
        all_caught_up_seconds,
        synced: storm.synced.get(),
        missing: (cmd.devices * cmd.missed).saturating_sub(unique),
        repeated: storm.repeated.load(Ordering::Relaxed),
        unexpected: storm.unexpected.load(Ordering::Relaxed),
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

    async fn connect_session(
        &self,
        endpoints: &Endpoints,
        version: MqttVersion,
        limit: Duration,
    ) -> Result<(SessionDevice, bool)> {
        SessionDevice::connect(
            endpoints.mqtt,
            version,
            &self.user,
            self.credentials.clone(),
            limit,
        )
        .await
    }

    /// Before the storm: syncs from 0 (a fresh user's log is empty), or subscribes to the
    /// inbox with a new persistent session.
    async fn come_online(
        &self,
        catch_up: CatchUp,
        endpoints: &Endpoints,
        limit: Duration,
    ) -> Result<Online> {
        match catch_up {
            CatchUp::Sync => {
                let mut device = self.connect(endpoints, limit).await?;
                let (seqs, epoch) = timeout(limit, sync_all(&mut device, 0, None))
                    .await
                    .map_err(|_| anyhow!("first sync unfinished after {limit:?}"))??;
                if !seqs.is_empty() {
                    bail!("a fresh user's log holds {} messages", seqs.len());
                }
                Ok(Online::Synced { device, epoch })
            }
            CatchUp::Session(version) => {
                let (mut device, present) = self.connect_session(endpoints, version, limit).await?;
                if present {
                    bail!("CONNACK says a session is present for a device never seen before");
                }
                timeout(limit, device.subscribe_inbox())
                    .await
                    .map_err(|_| anyhow!("inbox subscription unanswered after {limit:?}"))??;
                Ok(Online::Session(device))
            }
        }
    }
}

/// Counts a device out of the storm's readers when dropped, whichever way it ends.
struct Reading<'a>(&'a Storm);

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        if self.0.reading.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.all_read.notify_one();
        }
    }
}

impl Storm {
    /// Reconnects one device, has it catch up from its cursor (0, of `epoch` when it syncs) and
    /// checks what came.
    async fn catch_up(
        &self,
        index: usize,
        member: &Member,
        epoch: Option<&str>,
        endpoints: &Endpoints,
        (connect_timeout, catchup_timeout): (Duration, Duration),
    ) -> Result<(), Failure> {
        let deadline = self.start + catchup_timeout;
        let (seqs, at) = match self.catch_up {
            CatchUp::Sync => {
                self.sync_from_cursor(index, member, epoch, endpoints, connect_timeout, deadline)
                    .await?
            }
            CatchUp::Session(version) => {
                let reading = Reading(self);
                self.resume_session(
                    index,
                    member,
                    version,
                    endpoints,
                    connect_timeout,
                    deadline,
                    reading,
                )
                .await?
            }
        };
        check_log_sequence(&seqs, self.missed)
            .map_err(|problem| member.failure("sequence", problem))?;
        self.caught_up.add(1);
        self.caught_up_latency.record(index, at.as_micros() as u64);
        Ok(())
    }

    fn reconnected(&self, index: usize) {
        self.reconnected.add(1);
        self.reconnect_latency
            .record(index, self.start.elapsed().as_micros() as u64);
    }

    /// Counts what one device received.
    fn tally(&self, seqs: &[u64]) {
        self.synced.add(seqs.len() as u64);
        let tally = tally_log_sequence(seqs, self.missed);
        self.unique.fetch_add(tally.unique, Ordering::Relaxed);
        self.repeated.fetch_add(tally.repeated, Ordering::Relaxed);
        self.unexpected
            .fetch_add(tally.unexpected, Ordering::Relaxed);
    }

    /// Reconnects and syncs after 0 of `epoch`: the sequences received, and when the last page
    /// came.
    async fn sync_from_cursor(
        &self,
        index: usize,
        member: &Member,
        epoch: Option<&str>,
        endpoints: &Endpoints,
        connect_timeout: Duration,
        deadline: Instant,
    ) -> Result<(Vec<u64>, Duration), Failure> {
        let mut device = member
            .connect(endpoints, connect_timeout)
            .await
            .map_err(|e| member.failure("reconnect", e))?;
        self.reconnected(index);
        let synced = timeout_at(deadline, sync_all(&mut device, 0, epoch)).await;
        let at = self.start.elapsed();
        device.close().await;
        let (seqs, _) = synced
            .map_err(|_| member.failure("sync", "unfinished at --catchup-timeout"))?
            .map_err(|e| member.failure("sync", e))?;
        self.tally(&seqs);
        Ok((seqs, at))
    }

    /// Reconnects with nothing but a CONNECT and reads the inbox until every missed message
    /// came, then on until the storm is over: the sequences received, and when the last
    /// missed one came.
    #[allow(clippy::too_many_arguments)]
    async fn resume_session(
        &self,
        index: usize,
        member: &Member,
        version: MqttVersion,
        endpoints: &Endpoints,
        connect_timeout: Duration,
        deadline: Instant,
        reading: Reading<'_>,
    ) -> Result<(Vec<u64>, Duration), Failure> {
        let (mut device, present) = member
            .connect_session(endpoints, version, connect_timeout)
            .await
            .map_err(|e| member.failure("reconnect", e))?;
        self.reconnected(index);
        if !present {
            device.close().await;
            return Err(member.failure("session", "CONNACK says no session is present"));
        }
        self.session_present.fetch_add(1, Ordering::Relaxed);
        let mut seqs = Vec::with_capacity(self.missed as usize);
        let read = timeout_at(deadline, async {
            while (seqs.len() as u64) < self.missed {
                seqs.push(device.next_seq().await?);
            }
            Ok::<_, anyhow::Error>(())
        })
        .await;
        let at = self.start.elapsed();
        drop(reading);
        let read = match read {
            Ok(Ok(())) => {
                // Lingering: whatever arrives now is more than was missed.
                let mut over = self.over.clone();
                let lingered = async {
                    loop {
                        match device.next_seq().await {
                            Ok(seq) => seqs.push(seq),
                            Err(error) => return error,
                        }
                    }
                };
                tokio::select! {
                    _ = crate::stop::stopped(&mut over) => Ok(()),
                    error = lingered => Err(member.failure("linger", error)),
                }
            }
            Ok(Err(e)) => Err(member.failure("session", e)),
            Err(_) => Err(member.failure("session", "unfinished at --catchup-timeout")),
        };
        device.close().await;
        self.tally(&seqs);
        read.map(|()| (seqs, at))
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
        if let Some(present) = self.session_present.filter(|&p| p < self.devices) {
            failed.push(format!(
                "{} of {} devices were told their session was not present",
                self.devices - present,
                self.devices
            ));
        }
        if self.missing + self.repeated + self.unexpected > 0 {
            failed.push(format!(
                "{} messages missing, {} repeated, {} unexpected",
                self.missing, self.repeated, self.unexpected
            ));
        }
        failed
    }
}

impl Outcome for RoamResult {
    fn print(&self) {
        println!(
            "roam ({}): {} devices ({} users × {}, {} on the JSON bridge) each missing {} \
             messages, reconnecting {}",
            self.catch_up,
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
            if self.session_present.is_some() {
                format!("{} messages delivered", thousands(self.synced as f64))
            } else {
                format!("{} messages synced", thousands(self.synced as f64))
            },
        ]);
        table.row([
            "missing".to_owned(),
            thousands(self.missing as f64),
            format!("repeated {}", thousands(self.repeated as f64)),
            format!("unexpected {}", thousands(self.unexpected as f64)),
        ]);
        if let Some(present) = self.session_present {
            table.row([
                "session present".to_owned(),
                format!(
                    "{} of {}",
                    thousands(present as f64),
                    thousands(self.devices as f64)
                ),
                format!("lingered {:.1} s", self.linger_seconds.unwrap_or(0.0)),
            ]);
        }
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
