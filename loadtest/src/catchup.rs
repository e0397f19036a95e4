//! Scenario `catchup`: how long a device that was offline takes to catch up on the messages it
//! missed, against a running gateway.
//!
//! Each round takes a user no earlier run used, posts `--missed` messages to it over the
//! backend API (`POST /v1/messages`), and only then connects one of its devices, subscribes to
//! the device's reply topic and asks for everything with `{"after": 0}` on its sync topic. The
//! catch-up time runs from that publish until the last page (`"more": false`) has arrived, so
//! it covers the gateway reading and opening the log, paging it and the transfer, but neither
//! the posting nor the connection, which is measured on its own. The synced sequences must be
//! exactly 1..=missed in order: anything else fails the run.

use crate::device::{Arrival, Device, Endpoints, Transport};
use crate::messages_api::MessagesApi;
use crate::progress::{spawn_reporter, Counter};
use crate::report::{latency_histogram, median, print_verdict, thousands, LatencySummary};
use crate::report::{Outcome, Table};
use crate::seq::check_log_sequence;
use crate::target::{Credentials, EndpointArgs, Target};
use anyhow::{anyhow, Context, Result};
use clap::Args;
use serde::Serialize;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{timeout, Instant};

/// The device every round's user connects with.
const DEVICE: &str = "d0";
/// How long connecting and subscribing may take before the round fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Args, Debug)]
pub struct CatchupCmd {
    #[command(flatten)]
    pub endpoint: EndpointArgs,
    /// Messages each round's device missed and catches up on.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    missed: u64,
    /// Catch-ups measured, each with a fresh user.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Messages posted at once while filling a user's log.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    post_concurrency: u32,
    /// A catch-up still unfinished after this long fails its round.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    sync_timeout: Duration,
}

/// One catch-up.
#[derive(Debug, Serialize)]
pub struct CatchupRound {
    pub round: u32,
    pub user: String,
    /// Filling the log: messages posted per second.
    pub post_rate: f64,
    /// Connecting and subscribing to the reply topic.
    pub connect_ms: f64,
    /// From the sync request to its first page.
    pub first_page_ms: f64,
    /// From the sync request to its last page.
    pub catchup_ms: f64,
    pub pages: u32,
    pub page_bytes: u64,
    /// What went wrong, when the round failed.
    pub failure: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct CatchupResult {
    pub mqtt: SocketAddr,
    pub missed: u64,
    pub post_concurrency: u32,
    /// Over the rounds that completed.
    pub catchup_us: LatencySummary,
    pub first_page_us: LatencySummary,
    pub connect_us: LatencySummary,
    pub median_pages: f64,
    pub median_post_rate: f64,
    pub rounds: Vec<CatchupRound>,
    pub failed_checks: Vec<String>,
}

pub async fn run_cmd(cmd: &CatchupCmd) -> Result<CatchupResult> {
    let target = Target::gateway(&cmd.endpoint)?;
    let endpoints = Endpoints::new(cmd.endpoint.mqtt, &cmd.endpoint.http)?;
    let api = MessagesApi::new(&cmd.endpoint)?;

    let posted = Counter::new("posted");
    let synced = Counter::new("synced");
    let rounds_done = Counter::new("rounds");
    let (stop_tx, stop_rx) = watch::channel(false);
    let reporter = spawn_reporter(
        "catchup".to_owned(),
        vec![posted.clone(), synced.clone(), rounds_done.clone()],
        stop_rx,
    );
    let run_id = format!("{:x}", crate::payload::now_ns());
    let mut rounds = Vec::with_capacity(cmd.rounds as usize);
    for round in 1..=cmd.rounds {
        let user = format!("ct{run_id}-{round}");
        let started = Instant::now();
        let seqs = api
            .fill(&user, cmd.missed, cmd.post_concurrency as usize, || {
                posted.add(1)
            })
            .await?;
        check_log_sequence(&seqs, cmd.missed)
            .map_err(|problem| anyhow!("posting to {user}: the log's sequences: {problem}"))?;
        let post_rate = cmd.missed as f64 / started.elapsed().as_secs_f64();
        let credentials = target
            .credentials(
                &[(user.clone(), DEVICE.to_owned())],
                &Counter::new("tokens"),
            )
            .await?
            .pop()
            .ok_or_else(|| anyhow!("no token for {user}"))?;
        let device = SyncingDevice {
            endpoints: &endpoints,
            user: user.clone(),
            missed: cmd.missed,
            sync_timeout: cmd.sync_timeout,
            synced: &synced,
        };
        rounds.push(device.catch_up(round, credentials, post_rate).await?);
        rounds_done.add(1);
    }
    let _ = stop_tx.send(true);
    reporter.await?;
    Ok(CatchupResult::of(target.addr(), cmd, rounds))
}

/// One round's device.
struct SyncingDevice<'a> {
    endpoints: &'a Endpoints,
    user: String,
    missed: u64,
    sync_timeout: Duration,
    synced: &'a Counter,
}

impl SyncingDevice<'_> {
    /// Connects, subscribes to the reply topic, syncs from the start and checks what came.
    /// A failed check is the round's `failure`; `Err` only when the run cannot go on.
    async fn catch_up(
        &self,
        round: u32,
        credentials: Credentials,
        post_rate: f64,
    ) -> Result<CatchupRound> {
        let mut outcome = CatchupRound {
            round,
            user: self.user.clone(),
            post_rate,
            connect_ms: 0.0,
            first_page_ms: 0.0,
            catchup_ms: 0.0,
            pages: 0,
            page_bytes: 0,
            failure: None,
        };
        let connecting = Instant::now();
        let mut device = Device::connect(
            self.endpoints,
            Transport::Mqtt,
            &self.user,
            DEVICE,
            credentials,
            CONNECT_TIMEOUT,
        )
        .await
        .with_context(|| format!("connecting {}'s device", self.user))?;
        outcome.connect_ms = ms(connecting.elapsed());

        let asked = Instant::now();
        device.sync(0, None).await?;
        let mut seqs = Vec::with_capacity(self.missed as usize);
        let pages = async {
            loop {
                let Arrival::Page { page, bytes } =
                    device.next().await.context("during the sync")?
                else {
                    continue;
                };
                let arrived = asked.elapsed();
                if outcome.pages == 0 {
                    outcome.first_page_ms = ms(arrived);
                }
                outcome.pages += 1;
                outcome.page_bytes += bytes as u64;
                self.synced.add(page.messages.len() as u64);
                seqs.extend(page.messages.iter().map(|m| m.seq));
                if !page.more {
                    outcome.catchup_ms = ms(arrived);
                    return Ok(());
                }
            }
        };
        let synced = timeout(self.sync_timeout, pages)
            .await
            .unwrap_or_else(|_| Err(anyhow!("unfinished after {:?}", self.sync_timeout)));
        outcome.failure = match synced {
            Ok(()) => check_log_sequence(&seqs, self.missed).err(),
            Err(error) => Some(format!("{error:#}")),
        };
        device.close().await;
        Ok(outcome)
    }
}

fn ms(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() * 1e3
}

impl CatchupResult {
    fn of(mqtt: SocketAddr, cmd: &CatchupCmd, rounds: Vec<CatchupRound>) -> Self {
        let done: Vec<&CatchupRound> = rounds.iter().filter(|r| r.failure.is_none()).collect();
        let summary = |ms_of: fn(&CatchupRound) -> f64| {
            let mut histogram = latency_histogram();
            for round in &done {
                histogram.saturating_record((ms_of(round) * 1e3) as u64);
            }
            LatencySummary::from_histogram(&histogram)
        };
        let failed_checks = rounds
            .iter()
            .filter_map(|r| {
                Some(format!(
                    "round {} ({}): {}",
                    r.round,
                    r.user,
                    r.failure.as_ref()?
                ))
            })
            .collect();
        Self {
            mqtt,
            missed: cmd.missed,
            post_concurrency: cmd.post_concurrency,
            catchup_us: summary(|r| r.catchup_ms),
            first_page_us: summary(|r| r.first_page_ms),
            connect_us: summary(|r| r.connect_ms),
            median_pages: median(done.iter().map(|r| r.pages as f64).collect()).unwrap_or(0.0),
            median_post_rate: median(rounds.iter().map(|r| r.post_rate).collect()).unwrap_or(0.0),
            rounds,
            failed_checks,
        }
    }
}

impl Outcome for CatchupResult {
    fn print(&self) {
        let done = self.catchup_us.count;
        println!(
            "catchup against {}: {} rounds ({done} complete), {} missed messages each, posted at {} msg/s (median, {} at once)",
            self.mqtt,
            self.rounds.len(),
            thousands(self.missed as f64),
            thousands(self.median_post_rate),
            self.post_concurrency,
        );
        let millis = |us: u64| format!("{:.1}", us as f64 / 1e3);
        let mut table = Table::default();
        table.row(["ms", "p50", "p90", "p99", "max"]);
        for (name, summary) in [
            ("catch-up (sync to last page)", &self.catchup_us),
            ("first page", &self.first_page_us),
            ("connect + subscribe", &self.connect_us),
        ] {
            table.row([
                name.to_owned(),
                millis(summary.p50_us),
                millis(summary.p90_us),
                millis(summary.p99_us),
                millis(summary.max_us),
            ]);
        }
        print!("{}", table.render());
        let bytes: u64 = self.rounds.iter().map(|r| r.page_bytes).sum();
        let pages: u32 = self.rounds.iter().map(|r| r.pages).sum();
        println!(
            "pages per catch-up: {} (median), {} B per page on average",
            self.median_pages,
            thousands(bytes as f64 / pages.max(1) as f64)
        );
        print_verdict(&self.failed_checks);
    }

    fn passed(&self) -> bool {
        self.failed_checks.is_empty()
    }
}
