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
//!   bucket held (see [`RateCheck`]) and that every notification was pushed exactly once.
//!
//! The gateway must send to the doubles: either this tool starts it (`--start-gateway PATH`,
//! free ports, a fresh data dir, the right `GATEWAY__*` environment), or it already runs with
//! the environment `--print-env` prints for fixed `--doubles-port`s.

use crate::procfs::{pid_listening_on, Usage, UsageWatch};
use crate::progress::{spawn_reporter, Counter};
use crate::report::{latency_histogram, print_verdict, thousands, LatencySummary, Outcome, Table};
use crate::stop::stopped;
use crate::target::loopback_url;
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use futures_util::{stream, StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use loadtest::mock_channels::qiuqiu::QiuQiuDouble;
use loadtest::mock_channels::wechat::{self, WeChatDouble};
use loadtest::mock_channels::{qiuqiu, QiuQiuConfig, WeChatConfig};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

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
/// The doubles' per-call path counters.
const WECHAT_SEND: &str = "/cgi-bin/message/template/send";
const QIUQIU_PUSH: &str = "/push/single/cid";
/// How long the started gateway gets to print its listeners.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// One HTTP call to the gateway; far beyond any healthy answer, so a stall is an error, not a hang.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the delivery phase and the progress line look at the doubles.
const POLL: Duration = Duration::from_millis(100);
/// Daily quotas the started gateway and the doubles get: far above any run, so that a quota
/// never parks a push and the rate alone paces them.
const NO_QUOTA: u64 = 1_000_000_000_000;
/// The started gateway's `notify.aggregate_window`: friend requests on 球球 go out once per
/// window, and the default minute would make every run wait a minute for its last aggregate.
const AGGREGATE_WINDOW: &str = "1s";
/// The rate check's allowance is never below this many pushes (very low rates).
const MIN_TOLERANCE: u64 = 10;

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

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The gateway's environment for the doubles at these URLs and `rate` pushes per second.
fn gateway_env(wechat_url: &str, qiuqiu_url: &str, rate: u32) -> Vec<(String, String)> {
    let templates = KINDS
        .iter()
        .map(|kind| format!("{kind} = \"T-{kind}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let wechat = format!(
        "{{enabled = true, base_url = \"{wechat_url}\", apps = [{{name = \"{WECHAT_APP}\", appid = \"{}\", secret = \"{}\", templates = {{{templates}}}, per_second = {rate}, daily_quota = {NO_QUOTA}}}]}}",
        wechat::DEFAULT_APPID,
        wechat::DEFAULT_SECRET,
    );
    let qiuqiu = format!(
        "{{enabled = true, base_url = \"{qiuqiu_url}\", app_id = \"{}\", app_key = \"{}\", master_secret = \"{}\", per_second = {rate}, daily_quota = {NO_QUOTA}}}",
        qiuqiu::DEFAULT_APP_ID,
        qiuqiu::DEFAULT_APP_KEY,
        qiuqiu::DEFAULT_MASTER_SECRET,
    );
    [
        ("CHANNELS__WECHAT", wechat),
        ("CHANNELS__QIUQIU", qiuqiu),
        ("NOTIFY__AGGREGATE_WINDOW", AGGREGATE_WINDOW.to_owned()),
    ]
    .into_iter()
    .map(|(key, value)| (format!("GATEWAY__{key}"), value))
    .collect()
}

/// The two providers, in this process.
struct Doubles {
    wechat: WeChatDouble,
    qiuqiu: QiuQiuDouble,
}

impl Doubles {
    async fn start(port: Option<u16>) -> Result<Self> {
        let (wechat_port, qiuqiu_port) = port.map_or((0, 0), |p| (p, p + 1));
        let wechat = WeChatDouble::bind(
            SocketAddr::new(LOCALHOST, wechat_port),
            WeChatConfig {
                daily_quota: NO_QUOTA,
                ..WeChatConfig::default()
            },
        )
        .await
        .with_context(|| format!("starting the WeChat double on port {wechat_port}"))?;
        let qiuqiu = QiuQiuDouble::bind(
            SocketAddr::new(LOCALHOST, qiuqiu_port),
            QiuQiuConfig::default(),
        )
        .await
        .with_context(|| format!("starting the 球球 double on port {qiuqiu_port}"))?;
        Ok(Self { wechat, qiuqiu })
    }

    /// Provider calls so far, failed ones included: cheap, for progress and for "still busy".
    fn calls(&self) -> (u64, u64) {
        (
            self.wechat.calls(WECHAT_SEND),
            self.qiuqiu.calls(QIUQIU_PUSH),
        )
    }
}

/// A gateway this tool started; killed when stopped or dropped.
struct StartedGateway {
    child: Child,
    /// Kept so the data dir lives as long as the gateway.
    _data_dir: tempfile::TempDir,
    http: String,
    api_key: String,
}

impl StartedGateway {
    async fn start(binary: &Path, env: &[(String, String)]) -> Result<Self> {
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

    async fn stop(mut self) {
        // An error means it is gone already.
        let _ = self.child.kill().await;
    }
}

/// The gateway's backend API, as the load uses it.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
    api_key: String,
}

impl Api {
    fn new(base: &str, api_key: String, connections: usize) -> Result<Self> {
        loopback_url(base, "--http")?;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .pool_max_idle_per_host(connections)
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            api_key,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &impl Serialize,
    ) -> reqwest::Result<reqwest::Response> {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.api_key)
            .json(body)
            .send()
            .await
    }

    /// Binds `user` to both channels and records both consents.
    async fn reachable_user(&self, user: &str) -> Result<()> {
        let bindings = json!({"wechat": {WECHAT_APP: format!("o-{user}")}, "qiuqiu_devices": [format!("cid-{user}")]});
        let consent = json!({"wechat": true, "qiuqiu": true});
        for (what, body) in [("bindings", bindings), ("consent", consent)] {
            let path = format!("/v1/users/{user}/{what}");
            let response = self
                .call(reqwest::Method::PUT, &path, &body)
                .await
                .with_context(|| format!("PUT {path}"))?;
            let status = response.status();
            if !status.is_success() {
                let text = response.text().await.unwrap_or_default();
                bail!("PUT {path}: {status}: {text}");
            }
        }
        Ok(())
    }
}

fn user(i: u64) -> String {
    format!("lt-n{i}")
}

/// Submission statistics: decisions answered, their latency, and what went wrong.
#[derive(Debug, Serialize)]
pub struct Submission {
    /// 202 answers: routing decisions made.
    pub decisions: u64,
    pub seconds: f64,
    pub per_second: f64,
    pub latency_us: LatencySummary,
    /// Failed submissions by HTTP status, or `timeout` / `connect` / `transport`.
    pub errors: BTreeMap<String, u64>,
    pub first_error: Option<String>,
    /// Route → status → how many decisions said so (`queued` ones become provider calls).
    pub routes: BTreeMap<String, BTreeMap<String, u64>>,
    /// The gateway's CPU and memory while submitting, when its process was found.
    pub gateway: Option<Usage>,
}

/// What reached the providers, counted at the doubles.
#[derive(Debug, Serialize)]
pub struct Delivery {
    /// Pushes the gateway's answers queued, per provider.
    pub expected_wechat: u64,
    pub expected_qiuqiu: u64,
    /// Sends the doubles accepted (a repeated idempotency key is not recorded twice).
    pub wechat_sends: u64,
    pub wechat_unique: u64,
    pub qiuqiu_pushes: u64,
    pub qiuqiu_unique: u64,
    /// HTTP calls, failed and repeated ones included.
    pub wechat_calls: u64,
    pub qiuqiu_calls: u64,
    pub wechat_token_calls: u64,
    pub qiuqiu_auth_calls: u64,
    /// From the end of submitting to the last provider call.
    pub seconds_after_submitting: f64,
    /// Deliveries stopped for `--drain-idle` or reached what was expected (not the timeout).
    pub settled: bool,
    /// Whether the run waited for the deliveries (not with --skip-deliveries).
    pub waited: bool,
}

/// The rate limit seen at the 球球 double.
///
/// The gateway's token bucket holds one second's worth (`R` tokens) and refills at `R` per
/// second, starting full. So in any interval of length `t` it lets through at most `R + R·t`
/// pushes: `R` beyond the rate (the bucket) at most, and at most `2R` in any 1-s window — the
/// first one, while the full bucket is spent. Both are checked, each allowing
/// `--jitter`'s worth of pushes (`tolerance`) for the way from the bucket to the double.
#[derive(Debug, Serialize)]
pub struct RateCheck {
    pub rate: u32,
    pub tolerance: u64,
    pub pushes: u64,
    /// From the first to the last push at the double.
    pub seconds: f64,
    pub mean_per_second: f64,
    /// Pushes in each 1-s bucket from the first push on (the last one is partial).
    pub per_second: Vec<u64>,
    pub max_bucket: u64,
    /// Most pushes in any 1-s window, wherever it starts.
    pub max_window: u64,
    /// Most pushes beyond the rate in any interval: max over intervals of count − R·length.
    pub max_excess: f64,
    /// From the first submission to the last push.
    pub total_seconds: f64,
}

impl RateCheck {
    /// `at`: seconds of each push since any origin, in order.
    fn new(at: &[f64], rate: u32, total_seconds: f64, jitter: Duration) -> Self {
        let r = f64::from(rate);
        let tolerance = ((r * jitter.as_secs_f64()).ceil() as u64).max(MIN_TOLERANCE);
        let first = at.first().copied().unwrap_or(0.0);
        let seconds = at.last().map_or(0.0, |last| last - first);
        let mut per_second = Vec::new();
        for t in at {
            let bucket = (t - first) as usize;
            if per_second.len() <= bucket {
                per_second.resize(bucket + 1, 0);
            }
            per_second[bucket] += 1;
        }
        let (mut max_window, mut start) = (0, 0);
        for (end, t) in at.iter().enumerate() {
            while t - at[start] >= 1.0 {
                start += 1;
            }
            max_window = max_window.max(end - start + 1);
        }
        // count in [t_i, t_j] − R·(t_j − t_i) = f(j) − f(i) + 1 with f(k) = k − R·t_k.
        let (mut max_excess, mut lowest) = (0.0_f64, f64::INFINITY);
        for (k, t) in at.iter().enumerate() {
            let f = k as f64 - r * t;
            lowest = lowest.min(f);
            max_excess = max_excess.max(f - lowest + 1.0);
        }
        Self {
            rate,
            tolerance,
            pushes: at.len() as u64,
            seconds,
            mean_per_second: if seconds > 0.0 {
                at.len() as f64 / seconds
            } else {
                0.0
            },
            max_bucket: per_second.iter().copied().max().unwrap_or(0),
            per_second,
            max_window: max_window as u64,
            max_excess,
            total_seconds,
        }
    }

    fn window_allowed(&self) -> u64 {
        2 * u64::from(self.rate) + self.tolerance
    }

    fn excess_allowed(&self) -> f64 {
        f64::from(self.rate) + self.tolerance as f64
    }
}

#[derive(Debug, Serialize)]
pub struct NotifyResult {
    pub mode: Mode,
    pub gateway: String,
    pub started_gateway: bool,
    pub users: u32,
    pub concurrency: u32,
    /// Notifications per request.
    pub batch: u32,
    /// `per_second` of both channels (the started gateway's; what --rate said otherwise).
    pub rate: u32,
    pub setup_seconds: f64,
    /// burst: notifications asked for.
    pub count: Option<u64>,
    pub submission: Submission,
    pub delivery: Delivery,
    pub rate_check: Option<RateCheck>,
    pub failed_checks: Vec<String>,
}

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
            let gateway = StartedGateway::start(binary, &env).await?;
            eprintln!("notify: started {} on {}", binary.display(), gateway.http);
            Some(gateway)
        }
        None => None,
    };
    let (base, api_key) = match &started {
        Some(gateway) => (gateway.http.clone(), gateway.api_key.clone()),
        None => (
            cmd.http.clone(),
            cmd.api_key
                .clone()
                .context("a running gateway needs --api-key or LOADTEST_API_KEY")?,
        ),
    };
    let api = Api::new(&base, api_key, cmd.concurrency as usize)?;
    let gateway_pid = match &started {
        Some(gateway) => gateway.child.id(),
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
        gateway.stop().await;
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

type Measured = (f64, Submission, Delivery, Option<RateCheck>);

/// Sets the users up, submits, waits for the deliveries and measures them.
async fn load(
    cmd: &NotifyCmd,
    api: &Api,
    doubles: &Arc<Doubles>,
    deadline: Instant,
    gateway_pid: Option<u32>,
) -> Result<Measured> {
    let setup = Instant::now();
    let ready = Counter::new("users");
    let (stop_tx, stop_rx) = watch::channel(false);
    let reporter = spawn_reporter("notify setup".into(), vec![ready.clone()], stop_rx);
    stream::iter(0..u64::from(cmd.users))
        .map(|i| {
            let ready = ready.clone();
            async move {
                api.reachable_user(&user(i)).await?;
                ready.add(1);
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(cmd.concurrency as usize)
        .try_collect::<()>()
        .await?;
    let _ = stop_tx.send(true);
    reporter.await?;
    let setup_seconds = setup.elapsed().as_secs_f64();

    let (stop_tx, stop_rx) = watch::channel(false);
    let accepted = Counter::new("202");
    let failed = Counter::new("errors");
    let (wechat_seen, qiuqiu_seen) = (Counter::new("wechat"), Counter::new("qiuqiu"));
    let reporter = spawn_reporter(
        format!("notify {}", cmd.mode.name()),
        vec![
            accepted.clone(),
            failed.clone(),
            wechat_seen.clone(),
            qiuqiu_seen.clone(),
        ],
        stop_rx.clone(),
    );
    let watcher = watch_calls(doubles.clone(), wechat_seen, qiuqiu_seen, stop_rx);
    let (limit, end) = match cmd.mode {
        Mode::Decisions => (u64::MAX, (Instant::now() + cmd.duration).min(deadline)),
        Mode::Burst => (cmd.count, deadline),
    };
    let run = format!("{:x}", crate::payload::now_ns());
    let gateway = gateway_pid.and_then(|pid| UsageWatch::start(pid).ok());
    let submitted = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let submitters: Vec<JoinHandle<Tally>> = (0..cmd.concurrency)
        .map(|_| {
            let submitter = Submitter {
                api: api.clone(),
                mode: cmd.mode,
                users: u64::from(cmd.users),
                batch: u64::from(cmd.batch),
                run: run.clone(),
                next: next.clone(),
                limit,
                end,
                accepted: accepted.clone(),
                failed: failed.clone(),
            };
            tokio::spawn(submitter.submit_all())
        })
        .collect();
    let mut tally = Tally::default();
    for submitter in submitters {
        tally.merge(submitter.await?)?;
    }
    let seconds = submitted.elapsed().as_secs_f64();
    let mut submission = tally.into_submission(seconds);
    submission.gateway = gateway.and_then(|watch| watch.finish().ok());
    let expected = |route: &str| {
        submission
            .routes
            .get(route)
            .and_then(|statuses| statuses.get("queued"))
            .copied()
            .unwrap_or(0)
    };
    let (expected_wechat, expected_qiuqiu) = (expected("wechat"), expected("qiuqiu"));
    let waited = !(cmd.skip_deliveries && cmd.mode == Mode::Decisions);
    let (settled, last_call) = if waited {
        drain(
            doubles,
            (expected_wechat, expected_qiuqiu),
            cmd.drain_idle,
            deadline,
        )
        .await
    } else {
        (true, Instant::now())
    };
    let _ = stop_tx.send(true);
    reporter.await?;
    watcher.await?;

    let sends = doubles.wechat.sends();
    let pushes = doubles.qiuqiu.pushes();
    let (wechat_calls, qiuqiu_calls) = doubles.calls();
    let delivery = Delivery {
        expected_wechat,
        expected_qiuqiu,
        wechat_sends: sends.len() as u64,
        wechat_unique: sends
            .iter()
            .filter_map(|send| send.client_msg_id.as_deref())
            .collect::<HashSet<_>>()
            .len() as u64,
        qiuqiu_pushes: pushes.len() as u64,
        qiuqiu_unique: pushes
            .iter()
            .map(|push| push.request_id.as_str())
            .collect::<HashSet<_>>()
            .len() as u64,
        wechat_calls,
        qiuqiu_calls,
        wechat_token_calls: doubles.wechat.token_calls(),
        qiuqiu_auth_calls: doubles.qiuqiu.auth_calls(),
        seconds_after_submitting: last_call.saturating_duration_since(submitted).as_secs_f64()
            - seconds,
        settled,
        waited,
    };
    let rate_check = (cmd.mode == Mode::Burst).then(|| {
        let mut at: Vec<f64> = pushes
            .iter()
            .map(|push| push.at.saturating_duration_since(submitted).as_secs_f64())
            .collect();
        at.sort_by(f64::total_cmp);
        let total = at.last().copied().unwrap_or(0.0);
        RateCheck::new(&at, cmd.rate(), total, cmd.jitter)
    });
    Ok((setup_seconds, submission, delivery, rate_check))
}

/// Copies the doubles' call counts into progress counters until told to stop.
fn watch_calls(
    doubles: Arc<Doubles>,
    wechat: Arc<Counter>,
    qiuqiu: Arc<Counter>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let (w, q) = doubles.calls();
            wechat.add(w.saturating_sub(wechat.get()));
            qiuqiu.add(q.saturating_sub(qiuqiu.get()));
            tokio::select! {
                _ = stopped(&mut stop) => return,
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    })
}

/// Waits until the doubles got the expected calls, or got none for `idle`, or the deadline.
/// Returns whether it ended before the deadline, and when the last call was seen.
async fn drain(
    doubles: &Doubles,
    expected: (u64, u64),
    idle: Duration,
    deadline: Instant,
) -> (bool, Instant) {
    let mut seen = doubles.calls();
    let mut last_change = Instant::now();
    loop {
        if seen.0 >= expected.0 && seen.1 >= expected.1 {
            return (true, last_change);
        }
        if last_change.elapsed() >= idle {
            return (true, last_change);
        }
        if Instant::now() >= deadline {
            return (false, last_change);
        }
        tokio::time::sleep(POLL).await;
        let now = doubles.calls();
        if now != seen {
            seen = now;
            last_change = Instant::now();
        }
    }
}

/// One of `--concurrency` loops handing in notifications.
struct Submitter {
    api: Api,
    mode: Mode,
    users: u64,
    batch: u64,
    run: String,
    /// The next notification's number, shared by all submitters.
    next: Arc<AtomicU64>,
    limit: u64,
    end: Instant,
    accepted: Arc<Counter>,
    failed: Arc<Counter>,
}

/// What became of one notification: its routes, or an error's class and detail.
type Answer = Result<Routed, (String, String)>;

/// A notification as this tool hands it in.
#[derive(Serialize)]
struct NewNotification {
    user: String,
    kind: &'static str,
    title: String,
    body: &'static str,
}

/// A 202's decision, read only as far as the tally needs: each route's status.
#[derive(Deserialize)]
struct Routed {
    routes: BTreeMap<String, RouteStatus>,
}

#[derive(Deserialize)]
struct RouteStatus {
    status: String,
}

/// One notification's part of a batch's 202: its decision, or its error.
#[derive(Deserialize)]
struct BatchItem {
    error: Option<Value>,
    routes: Option<BTreeMap<String, RouteStatus>>,
}

#[derive(Deserialize)]
struct BatchAnswer {
    results: Vec<BatchItem>,
}

impl Submitter {
    async fn submit_all(self) -> Tally {
        let mut tally = Tally::default();
        loop {
            let first = self.next.fetch_add(self.batch, Ordering::Relaxed);
            if first >= self.limit || Instant::now() >= self.end {
                return tally;
            }
            let notifications: Vec<NewNotification> = (first..(first + self.batch).min(self.limit))
                .map(|n| self.notification(n))
                .collect();
            let count = notifications.len();
            let started = Instant::now();
            let answers = if self.batch == 1 {
                self.post("/v1/notifications", &notifications[0])
                    .await
                    .map(|routed| vec![Ok(routed)])
            } else {
                let batch = json!({ "notifications": notifications });
                self.post("/v1/notifications/batch", &batch)
                    .await
                    .map(batch_answers)
            };
            let micros = started.elapsed().as_micros() as u64;
            let answers = answers.unwrap_or_else(|e| (0..count).map(|_| Err(e.clone())).collect());
            for answer in answers {
                match answer {
                    Ok(routed) => {
                        self.accepted.add(1);
                        tally.latency.saturating_record(micros);
                        tally.count_routes(&routed);
                    }
                    Err((class, detail)) => {
                        self.failed.add(1);
                        *tally.errors.entry(class).or_default() += 1;
                        tally.first_error.get_or_insert(detail);
                    }
                }
            }
        }
    }

    /// Consecutive numbers go to different kinds and users; every user sees every kind. A
    /// distinct title per notification, so the dedup window never short-circuits.
    fn notification(&self, n: u64) -> NewNotification {
        let (kind, user) = match self.mode {
            Mode::Decisions => (KINDS[(n % 5) as usize], user((n / 5) % self.users)),
            Mode::Burst => (BURST_KIND, user(n % self.users)),
        };
        let title = format!("lt {} #{n}", self.run);
        NewNotification {
            user,
            kind,
            title,
            body: "load",
        }
    }

    /// Posts and reads the 202's body; anything else is an error of the whole request.
    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, (String, String)> {
        match self.api.call(reqwest::Method::POST, path, body).await {
            Ok(response) if response.status() == reqwest::StatusCode::ACCEPTED => response
                .json::<T>()
                .await
                .map_err(|e| ("answer".to_owned(), e.to_string())),
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                Err((status.as_u16().to_string(), format!("{status}: {text}")))
            }
            Err(e) => {
                let class = if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connect"
                } else {
                    "transport"
                };
                Err((class.to_owned(), e.to_string()))
            }
        }
    }
}

/// Each notification's answer in a batch's 202: its routes, or its error (classed by code).
fn batch_answers(answer: BatchAnswer) -> Vec<Answer> {
    answer
        .results
        .into_iter()
        .map(|item| match (item.error, item.routes) {
            (Some(error), _) => {
                let code = error["code"].as_str().unwrap_or("error").to_owned();
                Err((code, error.to_string()))
            }
            (None, Some(routes)) => Ok(Routed { routes }),
            (None, None) => Err((
                "answer".to_owned(),
                "an item with neither routes nor error".to_owned(),
            )),
        })
        .collect()
}

/// What the submitters saw, merged at the end.
struct Tally {
    latency: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    first_error: Option<String>,
    routes: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Tally {
    fn count_routes(&mut self, routed: &Routed) {
        for (route, state) in &routed.routes {
            let statuses = match self.routes.get_mut(route) {
                Some(statuses) => statuses,
                None => self.routes.entry(route.clone()).or_default(),
            };
            match statuses.get_mut(&state.status) {
                Some(n) => *n += 1,
                None => {
                    statuses.insert(state.status.clone(), 1);
                }
            }
        }
    }
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            latency: latency_histogram(),
            errors: BTreeMap::new(),
            first_error: None,
            routes: BTreeMap::new(),
        }
    }
}

impl Tally {
    fn merge(&mut self, other: Tally) -> Result<()> {
        self.latency.add(&other.latency)?;
        for (class, n) in other.errors {
            *self.errors.entry(class).or_default() += n;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        for (route, statuses) in other.routes {
            let mine = self.routes.entry(route).or_default();
            for (status, n) in statuses {
                *mine.entry(status).or_default() += n;
            }
        }
        Ok(())
    }

    fn into_submission(self, seconds: f64) -> Submission {
        let decisions = self.latency.len();
        Submission {
            decisions,
            seconds,
            per_second: if seconds > 0.0 {
                decisions as f64 / seconds
            } else {
                0.0
            },
            latency_us: LatencySummary::from_histogram(&self.latency),
            errors: self.errors,
            first_error: self.first_error,
            routes: self.routes,
            gateway: None,
        }
    }
}

impl NotifyResult {
    fn checks(&self) -> Vec<String> {
        let mut failed = Vec::new();
        let (s, d) = (&self.submission, &self.delivery);
        let errors: u64 = s.errors.values().sum();
        if errors > 0 {
            failed.push(format!(
                "{errors} submissions failed ({:?}), first: {}",
                s.errors,
                s.first_error.as_deref().unwrap_or("?")
            ));
        }
        if s.decisions == 0 {
            failed.push("no notification was accepted".into());
        }
        if let Some(count) = self.count {
            if s.decisions != count {
                failed.push(format!("{} of {count} notifications accepted", s.decisions));
            }
        }
        if !d.settled {
            failed.push("deliveries still going on at --timeout".into());
        }
        for (provider, expected, delivered, unique) in [
            ("WeChat", d.expected_wechat, d.wechat_sends, d.wechat_unique),
            ("球球", d.expected_qiuqiu, d.qiuqiu_pushes, d.qiuqiu_unique),
        ] {
            let complete = delivered == expected || !d.waited;
            if !complete || delivered > expected || unique != delivered {
                failed.push(format!(
                    "{provider}: {expected} pushes queued, {delivered} delivered ({unique} distinct)"
                ));
            }
        }
        if let Some(check) = &self.rate_check {
            if check.max_window > check.window_allowed() {
                failed.push(format!(
                    "{} 球球 pushes in one 1-s window; at most {} allowed (2 × {}/s + {})",
                    check.max_window,
                    check.window_allowed(),
                    check.rate,
                    check.tolerance
                ));
            }
            if check.max_excess > check.excess_allowed() {
                failed.push(format!(
                    "{:.0} 球球 pushes beyond {}/s in one interval; the bucket allows {} (+ {})",
                    check.max_excess, check.rate, check.rate, check.tolerance
                ));
            }
        }
        failed
    }
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

impl Outcome for NotifyResult {
    fn print(&self) {
        let (s, d) = (&self.submission, &self.delivery);
        println!(
            "notify {}: gateway {}{}, {} users, {} requests in flight of {} notifications, {}/s per channel, setup {:.1} s",
            self.mode.name(),
            self.gateway,
            if self.started_gateway {
                " (started)"
            } else {
                ""
            },
            self.users,
            self.concurrency,
            self.batch,
            thousands(f64::from(self.rate)),
            self.setup_seconds
        );
        let mut table = Table::default();
        table.row([
            "",
            "count",
            "seconds",
            "per second",
            "p50 ms",
            "p99 ms",
            "max ms",
        ]);
        table.row([
            "routing decisions (202)".to_owned(),
            thousands(s.decisions as f64),
            format!("{:.1}", s.seconds),
            thousands(s.per_second),
            ms(s.latency_us.p50_us),
            ms(s.latency_us.p99_us),
            ms(s.latency_us.max_us),
        ]);
        for (class, n) in &s.errors {
            table.row([format!("errors {class}"), thousands(*n as f64)]);
        }
        print!("\n{}", table.render());
        if let Some(g) = &s.gateway {
            println!(
                "gateway while submitting: {:.2} cores, {:.0} MiB resident (pid {})",
                g.cpu_cores,
                g.rss_bytes as f64 / 1_048_576.0,
                g.pid
            );
        }

        let mut table = Table::default();
        let statuses: Vec<&String> = s
            .routes
            .values()
            .flat_map(BTreeMap::keys)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        table.row(std::iter::once("route").chain(statuses.iter().map(|s| s.as_str())));
        for (route, counts) in &s.routes {
            table.row(
                std::iter::once(route.clone()).chain(
                    statuses
                        .iter()
                        .map(|status| thousands(counts.get(*status).copied().unwrap_or(0) as f64)),
                ),
            );
        }
        print!("\n{}", table.render());

        let mut table = Table::default();
        table.row([
            "provider",
            "queued",
            "delivered",
            "distinct",
            "HTTP calls",
            "token calls",
        ]);
        for (provider, expected, delivered, unique, calls, tokens) in [
            (
                "WeChat",
                d.expected_wechat,
                d.wechat_sends,
                d.wechat_unique,
                d.wechat_calls,
                d.wechat_token_calls,
            ),
            (
                "qiuqiu",
                d.expected_qiuqiu,
                d.qiuqiu_pushes,
                d.qiuqiu_unique,
                d.qiuqiu_calls,
                d.qiuqiu_auth_calls,
            ),
        ] {
            table.row([
                provider.to_owned(),
                thousands(expected as f64),
                thousands(delivered as f64),
                thousands(unique as f64),
                thousands(calls as f64),
                thousands(tokens as f64),
            ]);
        }
        print!("\n{}", table.render());
        if d.waited {
            println!(
                "deliveries went on {:.1} s after submitting{}",
                d.seconds_after_submitting,
                if d.settled { "" } else { " (cut by --timeout)" }
            );
        } else {
            println!("deliveries not waited for (--skip-deliveries): the rest stay queued");
        }

        if let Some(c) = &self.rate_check {
            let mut table = Table::default();
            table.row(["qiuqiu pushes at the double", "value", "allowed"]);
            table.row([
                "pushes".to_owned(),
                thousands(c.pushes as f64),
                String::new(),
            ]);
            table.row([
                "first to last push, s".to_owned(),
                format!("{:.1}", c.seconds),
                String::new(),
            ]);
            table.row([
                "first submission to last push, s".to_owned(),
                format!("{:.1}", c.total_seconds),
                String::new(),
            ]);
            table.row([
                "mean per second".to_owned(),
                thousands(c.mean_per_second),
                thousands(f64::from(c.rate)),
            ]);
            table.row([
                "max 1-s bucket".to_owned(),
                thousands(c.max_bucket as f64),
                String::new(),
            ]);
            table.row([
                "max 1-s window".to_owned(),
                thousands(c.max_window as f64),
                thousands(c.window_allowed() as f64),
            ]);
            table.row([
                "max beyond the rate".to_owned(),
                thousands(c.max_excess),
                thousands(c.excess_allowed()),
            ]);
            print!("\n{}", table.render());
        }
        println!();
        print_verdict(&self.failed_checks);
    }

    fn passed(&self) -> bool {
        self.failed_checks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    /// The default `--jitter`.
    const JITTER: std::time::Duration = std::time::Duration::from_millis(50);
    use super::*;

    #[test]
    fn an_even_pace_stays_within_the_rate() {
        // 128/s for 5 s, exactly (a power of two keeps the instants exact).
        let at: Vec<f64> = (0..640).map(|k| f64::from(k) / 128.0).collect();
        let check = RateCheck::new(&at, 128, 5.0, JITTER);
        assert_eq!(check.per_second, vec![128; 5]);
        assert_eq!(check.max_window, 128);
        assert!(check.max_excess <= 1.0 + 1e-9, "{}", check.max_excess);
        assert!((check.mean_per_second - 640.0 / (639.0 / 128.0)).abs() < 1e-6);
    }

    #[test]
    fn a_full_bucket_then_the_rate_is_allowed_and_more_is_not() {
        // The bucket's 100 at once, then 100/s: what the gateway's limiter does from cold.
        let mut at = vec![0.0; 100];
        at.extend((1..=300).map(|k| f64::from(k) / 100.0));
        let check = RateCheck::new(&at, 100, 3.0, JITTER);
        assert_eq!(check.max_window, 199);
        assert!(check.max_excess <= 101.0, "{}", check.max_excess);
        assert!(check.max_window <= check.window_allowed());
        assert!(check.max_excess <= check.excess_allowed());

        // 300 at once later on: beyond the bucket.
        at.extend(std::iter::repeat_n(3.5, 300));
        let check = RateCheck::new(&at, 100, 3.5, JITTER);
        assert!(check.max_window > check.window_allowed());
        assert!(check.max_excess > check.excess_allowed());
    }

    #[test]
    fn the_environment_points_both_channels_at_the_doubles() {
        let env = gateway_env("http://127.0.0.1:1", "http://127.0.0.1:2", 2000);
        let get = |key: &str| env.iter().find(|(k, _)| k == key).unwrap().1.clone();
        let wechat = get("GATEWAY__CHANNELS__WECHAT");
        assert!(
            wechat.contains("base_url = \"http://127.0.0.1:1\""),
            "{wechat}"
        );
        assert!(wechat.contains("per_second = 2000"), "{wechat}");
        assert!(
            wechat.contains("security_alert = \"T-security_alert\""),
            "{wechat}"
        );
        let qiuqiu = get("GATEWAY__CHANNELS__QIUQIU");
        assert!(
            qiuqiu.contains("base_url = \"http://127.0.0.1:2\""),
            "{qiuqiu}"
        );
        assert!(qiuqiu.contains("per_second = 2000"), "{qiuqiu}");
    }
}
