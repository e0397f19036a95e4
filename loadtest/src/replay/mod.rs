//! Scenario `replay`: plays a traffic recording made by the gateway (`[record] path`, format in
//! `protocol::recording`) back against a running gateway, keeping the recorded timing scaled by
//! `--speed`.
//!
//! Every recorded user `X` becomes `--user-prefix` + `X` (a fresh prefix per run by default) in
//! logins, topics and bodies, so a replay never writes into the logs of earlier runs. Each
//! session gets a fresh token for its user, device and platform, connects at its scaled time —
//! JSON WebSocket sessions on `/ws`, MQTT sessions over MQTT 5 on the transport they were recorded
//! on (TCP, TLS, WebSocket, secure WebSocket) when its listener is given, else on TCP — and
//! subscribes, publishes and unsubscribes at theirs; the API calls go out with the API key.
//!
//! Every answer is checked: CONNACK success or the JSON `ok`, each subscription granted, each
//! QoS 1 publish acknowledged with success, each API call 2xx. Any failure fails the run.

mod json_ws;
mod mqtt;
mod script;
mod session;
mod tally;

use crate::progress::spawn_reporter;
use crate::report::{print_verdict, successful, thousands, LatencySummary, Outcome, Table};
use crate::target::{loopback_url, EndpointArgs, GatewayApi, Target, MINT_CONCURRENCY};
use anyhow::{bail, Context, Result};
use clap::Args;
use futures_util::{stream, StreamExt};
use json_ws::JsonWsLink;
use mqtt::{MqttEndpoint, MqttLink};
use protocol::envelope::Transport;
use script::{ApiCall, Renamer, Script, SessionScript};
use serde::Serialize;
use session::{Clock, Link};
use std::collections::{BTreeMap, HashMap};
use std::io::BufReader;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tally::{KindCount, Tally};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};

/// Time between the tokens being minted and the replay's time 0, for the session tasks to
/// start.
const LEAD: Duration = Duration::from_millis(200);

#[derive(Args, Debug)]
pub struct ReplayCmd {
    /// The recording (JSON Lines) to play.
    file: PathBuf,
    /// How much faster than recorded: 2 plays twice as fast, 0.5 at half speed.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    #[command(flatten)]
    pub endpoint: EndpointArgs,
    /// Base URL of the JSON WebSocket (loopback only); by default `/ws` on --http's host.
    #[arg(long)]
    ws: Option<String>,
    /// The gateway's MQTT-over-WebSocket listener: sessions recorded on it replay there. A
    /// session whose transport's listener is not given replays over MQTT on TCP.
    #[arg(long)]
    mqtt_ws: Option<SocketAddr>,
    /// The MQTT-over-TLS listener, for sessions recorded on it (with --ca).
    #[arg(long, requires = "ca")]
    mqtt_tls: Option<SocketAddr>,
    /// The MQTT over secure WebSocket listener, for sessions recorded on it (with --ca).
    #[arg(long, requires = "ca")]
    mqtt_wss: Option<SocketAddr>,
    /// PEM certificate(s) to trust for --mqtt-tls and --mqtt-wss, e.g. the `cert.pem` that
    /// `gateway dev-cert` wrote.
    #[arg(long, value_name = "PEM")]
    ca: Option<PathBuf>,
    /// Prefix of every replayed user id; by default `rp<hex time>-`, fresh for each run.
    #[arg(long)]
    user_prefix: Option<String>,
    /// The whole replay must end within this, or it fails.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Longest wait for one answer (CONNACK, SUBACK, PUBACK, `ok`) before it counts as failed.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    answer_timeout: Duration,
    /// Recordings with more events than this are refused.
    #[arg(long, default_value_t = 1_000_000)]
    max_events: usize,
}

#[derive(Debug, Serialize)]
pub struct ReplayResult {
    pub file: PathBuf,
    pub speed: f64,
    pub user_prefix: String,
    pub sessions: usize,
    pub events_read: usize,
    /// The recording's length, and the replay's scheduled length at `speed`.
    pub recording_ms: u64,
    pub scheduled_ms: u64,
    /// Events sent per kind, and their failed checks.
    pub events: BTreeMap<&'static str, KindCount>,
    pub events_replayed: u64,
    /// How late events were sent after their scaled time.
    pub lag_us: LatencySummary,
    /// Messages the replayed sessions received.
    pub messages_received: u64,
    /// Sessions per transport they were replayed on: `mqtt_ws`, or `mqtt_ws as mqtt` for one
    /// recorded on a transport whose listener was not given.
    pub transports: BTreeMap<String, usize>,
    pub wall_time_s: f64,
    pub failed_checks: Vec<String>,
}

/// Where the sessions and calls go.
struct Endpoints {
    /// Per MQTT transport, where its sessions connect (TCP always).
    mqtt: HashMap<Transport, MqttEndpoint>,
    ws: reqwest::Url,
    api_base: reqwest::Url,
    api_key: String,
    http: reqwest::Client,
}

pub async fn run_cmd(cmd: &ReplayCmd) -> Result<ReplayResult> {
    if !(cmd.speed.is_finite() && (0.001..=1000.0).contains(&cmd.speed)) {
        bail!("--speed {}: must be between 0.001 and 1000", cmd.speed);
    }
    let target = Target::gateway(&cmd.endpoint)?;
    let Target::Gateway { mqtt, api } = &target else {
        bail!("replay needs the gateway target");
    };
    let endpoints = Endpoints {
        mqtt: mqtt_endpoints(cmd, *mqtt)?,
        ws: ws_url(cmd)?,
        api_base: loopback_url(&cmd.endpoint.http, "--http")?,
        api_key: cmd.endpoint.api_key.clone().unwrap_or_default(),
        http: reqwest::Client::builder()
            .timeout(cmd.answer_timeout)
            .build()
            .context("building the HTTP client")?,
    };
    let prefix = match &cmd.user_prefix {
        Some(prefix) => prefix.clone(),
        None => format!("rp{:x}-", crate::payload::now_ns()),
    };
    let file = std::fs::File::open(&cmd.file)
        .with_context(|| format!("opening {}", cmd.file.display()))?;
    let script = Script::read(
        BufReader::new(file),
        &Renamer::new(&prefix)?,
        cmd.max_events,
    )
    .with_context(|| format!("reading {}", cmd.file.display()))?;

    let tally = Arc::new(Tally::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let reporter = spawn_reporter(
        "replay".to_owned(),
        vec![
            tally.fired.clone(),
            tally.received.clone(),
            tally.failures.clone(),
        ],
        stop_rx,
    );
    let tokens = mint(api, &script.sessions).await;
    let wall = Instant::now();
    let clock = Clock {
        start: Instant::now() + LEAD,
        speed: cmd.speed,
    };
    let mut transports = BTreeMap::new();
    for session in &script.sessions {
        *transports
            .entry(endpoints.replayed_as(session.transport))
            .or_default() += 1;
    }
    let endpoints = Arc::new(endpoints);
    let mut tasks = JoinSet::new();
    let span_ms = script.span_ms;
    let sessions = script.sessions.len();
    for (session, token) in script.sessions.into_iter().zip(tokens) {
        let (tally, endpoints) = (tally.clone(), endpoints.clone());
        let (end_ms, patience) = (span_ms, cmd.answer_timeout);
        tasks.spawn(async move {
            let run = Run {
                endpoints: &endpoints,
                clock,
                tally: &tally,
                end_ms,
                patience,
            };
            run.session(&session, token).await
        });
    }
    let api_calls = script.api_calls;
    {
        let (tally, endpoints) = (tally.clone(), endpoints.clone());
        tasks.spawn(async move { call_api(api_calls, &endpoints, clock, &tally).await });
    }
    let finished = tokio::time::timeout(cmd.timeout, async {
        while let Some(joined) = tasks.join_next().await {
            joined.context("a replay task panicked")?;
        }
        Ok::<_, anyhow::Error>(())
    })
    .await;
    let mut failed_checks = Vec::new();
    match finished {
        Ok(result) => result?,
        Err(_) => failed_checks.push(format!(
            "the replay did not finish within --timeout {:?}",
            cmd.timeout
        )),
    }
    let _ = stop_tx.send(true);
    reporter.await?;

    let events = tally.kinds();
    failed_checks.extend(
        events
            .iter()
            .filter_map(|(kind, count)| count.failure(kind)),
    );
    Ok(ReplayResult {
        file: cmd.file.clone(),
        speed: cmd.speed,
        user_prefix: prefix,
        sessions,
        events_read: script.events,
        recording_ms: span_ms,
        scheduled_ms: script::scaled(span_ms, cmd.speed).as_millis() as u64,
        events_replayed: tally.fired.get(),
        events,
        lag_us: tally.lag(),
        messages_received: tally.received.get(),
        transports,
        wall_time_s: wall.elapsed().as_secs_f64(),
        failed_checks,
    })
}

/// What every session task shares.
struct Run<'a> {
    endpoints: &'a Endpoints,
    clock: Clock,
    tally: &'a Tally,
    /// The end of the recording: sessions still open then close there.
    end_ms: u64,
    patience: Duration,
}

impl Run<'_> {
    /// Connects `session` at its time with `token` and plays it; a failure to mint its token
    /// or to connect is its connect's failure.
    async fn session(&self, session: &SessionScript, token: Result<String>) {
        let due = self.clock.due(session.connect_ms);
        sleep_until(due).await;
        self.tally.fire("connect", due);
        let token = match token {
            Ok(token) => token,
            Err(e) => {
                return self
                    .tally
                    .fail("connect", format!("{}: {e:#}", session.name()))
            }
        };
        if session.transport == Transport::JsonWs {
            let mut url = self.endpoints.ws.clone();
            url.query_pairs_mut().append_pair("token", &token);
            self.play(JsonWsLink::connect(&url, self.patience).await, session)
                .await
        } else {
            let client_id = format!("replay-{}-{}", session.recorded_as, session.user);
            let link = MqttLink::connect(
                self.endpoints.mqtt_for(session.transport),
                &client_id,
                &session.user,
                &token,
                session.steps.len(),
                self.patience,
            )
            .await;
            self.play(link, session).await
        }
    }

    async fn play(&self, link: Result<impl Link, String>, session: &SessionScript) {
        match link {
            Ok(link) => {
                let (clock, tally) = (self.clock, self.tally);
                session::play(link, session, self.end_ms, clock, tally, self.patience).await
            }
            Err(e) => self
                .tally
                .fail("connect", format!("{}: {e}", session.name())),
        }
    }
}

/// A fresh token for each session's user, device and platform, minted before the clock starts
/// so that minting does not skew the timing. A failure is the session's, reported as its
/// connect's.
async fn mint(api: &GatewayApi, sessions: &[SessionScript]) -> Vec<Result<String>> {
    stream::iter(sessions)
        .map(|s| api.mint(&s.user, &s.device, s.platform.as_str()))
        .buffered(MINT_CONCURRENCY)
        .collect()
        .await
}

/// The JSON WebSocket's URL: `--ws`, else `/ws` on `--http`'s host, as every scenario's devices
/// use it.
impl Endpoints {
    /// Where a session recorded on `transport` connects: there, or over MQTT on TCP.
    fn mqtt_for(&self, transport: Transport) -> &MqttEndpoint {
        self.mqtt
            .get(&transport)
            .unwrap_or(&self.mqtt[&Transport::Mqtt])
    }

    /// How a session recorded on `transport` is replayed, for the report.
    fn replayed_as(&self, transport: Transport) -> String {
        if transport == Transport::JsonWs || self.mqtt.contains_key(&transport) {
            transport.as_str().to_string()
        } else {
            format!("{} as mqtt", transport.as_str())
        }
    }
}

/// The MQTT listeners given, by the transport they serve.
fn mqtt_endpoints(cmd: &ReplayCmd, tcp: SocketAddr) -> Result<HashMap<Transport, MqttEndpoint>> {
    let tls = cmd
        .ca
        .as_deref()
        .map(crate::target::tls_client_config)
        .transpose()?;
    let mut endpoints = HashMap::from([(Transport::Mqtt, MqttEndpoint::Tcp(tcp))]);
    let listeners = [
        (Transport::MqttWs, "--mqtt-ws", cmd.mqtt_ws),
        (Transport::MqttTls, "--mqtt-tls", cmd.mqtt_tls),
        (Transport::MqttWss, "--mqtt-wss", cmd.mqtt_wss),
    ];
    for (transport, flag, addr) in listeners {
        let Some(addr) = addr else { continue };
        if !addr.ip().is_loopback() {
            bail!("{flag} {addr}: only loopback targets are allowed");
        }
        let endpoint = match (transport, &tls) {
            (Transport::MqttWs, _) => MqttEndpoint::Ws(addr),
            (Transport::MqttTls, Some(tls)) => MqttEndpoint::Tls(addr, tls.clone()),
            (_, Some(tls)) => MqttEndpoint::Wss(addr, tls.clone()),
            (_, None) => bail!("{flag} needs --ca PEM"),
        };
        endpoints.insert(transport, endpoint);
    }
    Ok(endpoints)
}

fn ws_url(cmd: &ReplayCmd) -> Result<reqwest::Url> {
    let url = match &cmd.ws {
        Some(ws) => ws.clone(),
        None => crate::device::Endpoints::new(cmd.endpoint.mqtt, &cmd.endpoint.http)?.json_ws,
    };
    loopback_url(&url, "--ws")
}

/// Sends the API calls, each at its scaled time without waiting for the ones before, and checks
/// each is answered 2xx.
async fn call_api(
    calls: Vec<ApiCall>,
    endpoints: &Arc<Endpoints>,
    clock: Clock,
    tally: &Arc<Tally>,
) {
    let mut sent = JoinSet::new();
    for call in calls {
        let due = clock.due(call.at_ms);
        sleep_until(due).await;
        tally.fire("api", due);
        let (endpoints, tally) = (endpoints.clone(), tally.clone());
        sent.spawn(async move {
            if let Err(e) = post(&endpoints, &call).await {
                tally.fail("api", format!("{e:#}"));
            }
        });
    }
    while sent.join_next().await.is_some() {}
}

async fn post(endpoints: &Endpoints, call: &ApiCall) -> Result<()> {
    let url = endpoints
        .api_base
        .join(&call.path)
        .with_context(|| format!("the URL of {}", call.path))?;
    let response = endpoints
        .http
        .post(url)
        .bearer_auth(&endpoints.api_key)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(call.body.to_bytes())
        .send()
        .await
        .with_context(|| format!("POST {}", call.path))?;
    successful(response, &format!("POST {}", call.path)).await?;
    Ok(())
}

impl Outcome for ReplayResult {
    fn print(&self) {
        println!(
            "replay of {} at {}x as users {}*: {} sessions, {} events read, {:.1} s recorded, {:.1} s scheduled, {:.1} s wall",
            self.file.display(),
            self.speed,
            self.user_prefix,
            self.sessions,
            thousands(self.events_read as f64),
            self.recording_ms as f64 / 1e3,
            self.scheduled_ms as f64 / 1e3,
            self.wall_time_s,
        );
        let transports: Vec<String> = (self.transports.iter())
            .map(|(transport, sessions)| format!("{transport} {sessions}"))
            .collect();
        println!("sessions replayed on: {}", transports.join(", "));
        let mut table = Table::default();
        table.row(["event", "replayed", "failed", "first failure"]);
        for (kind, count) in &self.events {
            table.row([
                kind.to_string(),
                thousands(count.replayed as f64),
                thousands(count.failed as f64),
                count.first_error.clone().unwrap_or_default(),
            ]);
        }
        print!("{}", table.render());
        let millis = |us: u64| format!("{:.1}", us as f64 / 1e3);
        println!(
            "schedule lag ms: p50 {}, p99 {}, max {}",
            millis(self.lag_us.p50_us),
            millis(self.lag_us.p99_us),
            millis(self.lag_us.max_us)
        );
        println!(
            "messages received by replayed sessions: {}",
            thousands(self.messages_received as f64)
        );
        print_verdict(&self.failed_checks);
    }

    fn passed(&self) -> bool {
        self.failed_checks.is_empty()
    }
}
