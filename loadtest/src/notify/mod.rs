//! Scenario `notify`: notification routing under load, with the WeChat and 球球 push test
//! doubles running in this process as the providers.
//!
//! Two modes:
//! - `decisions`: backends `POST /v1/notifications` as fast as the gateway answers, the five
//!   default kinds in turn; measures routing decisions (202 answers) per second and their
//!   latency, then waits until the doubles stop receiving and checks that every push the
//!   gateway queued reached its provider exactly once.
//! - `burst`: `--count` `social_interaction` notifications (球球 only) handed in at once with
//!   the channels limited to `--rate` pushes per second; measures the delivery rate at the 球球
//!   double from the instants it received each push, and checks that the gateway's token
//!   bucket held (see [`rate_check::RateCheck`]) and that every notification was pushed exactly once.
//!
//! The gateway must send to the doubles: either this tool starts it (`--start-gateway PATH`,
//! free ports, a fresh data dir, the right `GATEWAY__*` environment), or it already runs with
//! the environment `--print-env` prints for fixed `--doubles-port`s.

mod api;
mod doubles;
mod gateway_env;
mod load;
mod rate_check;
mod report;
mod submitter;
mod tally;

use crate::procfs::pid_listening_on;
use crate::target::loopback_url;
use anyhow::{bail, Context, Result};
use api::Api;
use clap::{Args, ValueEnum};
use doubles::Doubles;
use gateway_env::gateway_env;
use load::load;
use loadtest::gateway_process::GatewayProcess;
use report::NotifyResult;
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The default kinds (README, Notifications), handed in by turns in `decisions` mode so that
/// every rule's path through the router is measured.
const KINDS: [&str; 5] = [
    "friend_request",
    "payment_success",
    "event_preview",
    "social_interaction",
    "security_alert",
];
/// The kind of `burst` mode: 球球 only, one alerting push per notification.
const BURST_KIND: &str = "social_interaction";
/// The WeChat app the started gateway is configured with and users are bound to.
const WECHAT_APP: &str = "main";
/// Daily quotas the started gateway and the doubles get: far above any run, so that a quota
/// never parks a push and the rate alone paces them.
const NO_QUOTA: u64 = 1_000_000_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Routing decisions per second and their latency, then every queued push delivered once.
    Decisions,
    /// A burst of 球球 pushes paced by the gateway's rate limit, checked at the double.
    Burst,
}

#[derive(Args, Debug)]
pub struct NotifyCmd {
    #[arg(long, value_enum, default_value_t = Mode::Decisions)]
    mode: Mode,
    /// Base URL of the gateway's HTTP API (loopback only); ignored with --start-gateway.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    http: String,
    /// Backend API key; ignored with --start-gateway.
    #[arg(long, env = "LOADTEST_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Start this gateway binary on free ports with a fresh data dir, pointed at the doubles,
    /// and stop it at the end.
    #[arg(long, value_name = "PATH")]
    start_gateway: Option<PathBuf>,
    /// Port of the WeChat double; the 球球 double listens on the next one. Needed for a
    /// gateway started by hand (with the environment of --print-env); free ports otherwise.
    #[arg(long, value_name = "PORT")]
    doubles_port: Option<u16>,
    /// Print the GATEWAY__* environment a gateway needs for this run and exit.
    #[arg(long)]
    print_env: bool,
    /// Users notifications are spread over; each is bound to both channels and consents.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    users: u32,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    concurrency: u32,
    /// Notifications per request: 1 posts each to `/v1/notifications`, more post them together
    /// to `/v1/notifications/batch` (at most the gateway's `notify.max_per_request`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    batch: u32,
    /// decisions: how long to submit.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// burst: notifications to submit.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    count: u64,
    /// Pushes per second the gateway may send per channel (`per_second` of 球球 and of the
    /// WeChat app). Default: 2000 for burst; for decisions 1,000,000, i.e. not limiting, so
    /// that the deliveries after the run are not paced.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    rate: Option<u32>,
    /// decisions: end once submitting ends, without waiting for the queued pushes to go out
    /// (then only checked for duplicates so far). With --rate at a provider's real rate, the
    /// queue would take hours to drain; this measures the routing alone.
    #[arg(long)]
    skip_deliveries: bool,
    /// After submitting, deliveries are over once the doubles received nothing for this long.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    drain_idle: Duration,
    /// The whole run (setup, submitting, deliveries) is called off after this long.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Push arrival jitter allowed by the rate check (burst mode), as time at `--rate`: the
    /// gateway takes a token before its HTTP call and the double stamps the push when it handles
    /// it; in between lie the HTTP client, loopback and two cores shared by the gateway, the
    /// doubles and this tool, so pushes paced evenly can arrive bunched by a few tens of
    /// milliseconds. Raise it for debug builds on a busy machine.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    jitter: Duration,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Decisions => "decisions",
            Self::Burst => "burst",
        }
    }
}

impl NotifyCmd {
    fn rate(&self) -> u32 {
        self.rate.unwrap_or(match self.mode {
            Mode::Decisions => 1_000_000,
            Mode::Burst => 2_000,
        })
    }
}

/// Runs the scenario and reports it like every other (`--print-env` prints and passes).
pub async fn run(cmd: &NotifyCmd, files: &crate::report::Files<'_>) -> Result<bool> {
    if cmd.print_env {
        let Some(port) = cmd.doubles_port else {
            bail!("--print-env needs --doubles-port: the gateway must know where the doubles will listen");
        };
        let base = |port: u16| format!("http://{}", SocketAddr::new(LOCALHOST, port));
        for (key, value) in gateway_env(&base(port), &base(port + 1), cmd.rate()) {
            println!("export {key}='{value}'");
        }
        return Ok(true);
    }
    files.finish(&run_cmd(cmd).await?)
}

/// Where the doubles listen.
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The name of load user `i`, in the setup and in the notifications.
fn user(i: u64) -> String {
    format!("lt-n{i}")
}

/// Starts the doubles (and with `--start-gateway` the gateway), runs the load and judges it.
pub async fn run_cmd(cmd: &NotifyCmd) -> Result<NotifyResult> {
    let rate = cmd.rate();
    let doubles = match (&cmd.start_gateway, cmd.doubles_port) {
        (None, None) => bail!(
            "a running gateway must already send to the doubles: pick their ports with \
             --doubles-port and start it with the environment of --print-env, or use \
             --start-gateway PATH"
        ),
        (_, port) => Arc::new(Doubles::start(port).await?),
    };
    let started = match &cmd.start_gateway {
        Some(binary) => {
            let env = gateway_env(&doubles.wechat.base_url(), &doubles.qiuqiu.base_url(), rate);
            let data_dir = tempfile::tempdir().context("creating the gateway's data dir")?;
            let gateway =
                GatewayProcess::start(binary, data_dir, env.iter().map(|(k, v)| (k, v))).await?;
            eprintln!(
                "notify: started {} on http://{}",
                binary.display(),
                gateway.http
            );
            Some(gateway)
        }
        None => None,
    };
    let (base, api_key) = match &started {
        Some(gateway) => (format!("http://{}", gateway.http), gateway.api_key.clone()),
        None => (
            cmd.http.clone(),
            cmd.api_key
                .clone()
                .context("a running gateway needs --api-key or LOADTEST_API_KEY")?,
        ),
    };
    let api = Api::new(&base, api_key, cmd.concurrency as usize)?;
    let gateway_pid = match &started {
        Some(gateway) => gateway.pid(),
        None => loopback_url(&base, "--http")?
            .port_or_known_default()
            .and_then(pid_listening_on),
    };
    let deadline = Instant::now() + cmd.timeout;
    let outcome = tokio::time::timeout(
        cmd.timeout,
        load(cmd, &api, &doubles, deadline, gateway_pid),
    )
    .await;
    if let Some(gateway) = started {
        // Its data dir goes with it: nothing of a load run is kept.
        drop(gateway.stop().await);
    }
    let (setup_seconds, submission, delivery, rate_check) = outcome
        .with_context(|| format!("the run took longer than --timeout {:?}", cmd.timeout))??;
    let mut result = NotifyResult {
        mode: cmd.mode,
        gateway: base,
        started_gateway: cmd.start_gateway.is_some(),
        users: cmd.users,
        concurrency: cmd.concurrency,
        batch: cmd.batch,
        rate,
        setup_seconds,
        count: (cmd.mode == Mode::Burst).then_some(cmd.count),
        submission,
        delivery,
        rate_check,
        failed_checks: Vec::new(),
    };
    result.failed_checks = result.checks();
    Ok(result)
}
