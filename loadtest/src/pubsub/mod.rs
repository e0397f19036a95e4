//! Scenario `pubsub`: publishers send numbered, timestamped messages to subscribers; measures
//! publish and delivery throughput, end-to-end latency, and losses.
//!
//! Publisher `i` sends to subscriber `i % subscribers`. Against the gateway, a publisher is a
//! device of user `lt-p{i}` publishing on its `send` topic to user `lt-s{j}`, whose device
//! listens on `u/lt-s{j}/inbox` (or, with `--signals`, live signals on its `signal` topic,
//! received on `u/lt-s{j}/signal`); against a plain broker, publisher and subscriber meet on
//! `bench/{run}/{j}`, one topic per recipient like the gateway's inbox. Subscribers are rumqttc
//! `AsyncClient`s with their own event loop task; publishers are [`BatchPublisher`]s, which put
//! every publish that is ready into one write. A client whose connection fails is not
//! reconnected, so the failure shows up as an error and as losses rather than being hidden.

mod publisher;
mod result;
mod subscriber;

use crate::batch_publisher::{BatchPublisher, PublisherOptions};
use crate::payload::{now_ns, PayloadBuilder, Wire};
use crate::procfs::Usage;
use crate::progress::{spawn_reporter, Counter};
use crate::report::{LatencySummary, RunWatch};
use crate::seq::SeqChecker;
use crate::target::{Target, TargetArgs, TargetKind};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use protocol::topics::{device_topic, inbox, signal, DeviceAction};
use publisher::{Completion, PublisherTally, Sender};
pub use result::PubsubResult;
use rumqttc::QoS;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use subscriber::{mqtt_options, start_subscriber, tally, Inbox};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, timeout_at, Instant};

/// QoS 1 publishes a publisher may have unacknowledged: enough to fill a loopback pipe, few
/// enough that the broker's acknowledgement pace, not our buffers, limits the publisher.
const INFLIGHT: u16 = 100;
/// How long clients get to connect and subscribe before the run is called off.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long client tasks get to wind down once told to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the drain phase looks at the counters.
const DRAIN_POLL: Duration = Duration::from_millis(100);
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// The device id every load test user connects with.
const DEVICE: &str = "d0";

/// The load shape, shared with `compare`.
#[derive(Args, Clone, Debug)]
pub struct PubsubLoad {
    /// Number of publishing clients.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub publishers: u32,
    /// Number of subscribing clients; publisher i sends to subscriber i % subscribers.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub subscribers: u32,
    /// Messages each publisher sends.
    #[arg(long, default_value_t = 100_000)]
    pub messages: u64,
    /// Size in bytes of each published payload (the gateway's `send` request, or the raw body).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Messages per second per publisher; 0 publishes as fast as possible. Measure latency with
    /// a rate (e.g. half the maximum): at full speed it mostly measures the client's own queue.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Stop publishing after this long, even if messages remain.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub duration_limit: Duration,
    /// After publishing, keep waiting for deliveries until none arrive for this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    /// Against the gateway, publish live signals (relayed at once, never stored) instead of
    /// messages (stored durably in the recipient's and the sender's log before the PUBACK).
    #[arg(long)]
    pub signals: bool,
}

#[derive(Args, Debug)]
pub struct PubsubCmd {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    load: PubsubLoad,
    /// QoS of the publishes and of the subscriptions: 0 or 1.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
}

pub async fn run_cmd(cmd: &PubsubCmd) -> Result<PubsubResult> {
    let target = Target::from_args(&cmd.target)?;
    let qos = if cmd.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    run(&target, &cmd.load, qos).await
}

/// Connection errors of all clients: counted for the progress line, the first kept to explain.
struct ClientErrors {
    count: Arc<Counter>,
    first: Mutex<Option<String>>,
}

impl ClientErrors {
    fn record(&self, error: String) {
        self.count.add(1);
        self.first
            .lock()
            .expect("error slot poisoned")
            .get_or_insert(error);
    }

    fn first(&self) -> Option<String> {
        self.first.lock().expect("error slot poisoned").clone()
    }
}

/// What every client task of one run shares.
struct Shared {
    stop: watch::Receiver<bool>,
    errors: Arc<ClientErrors>,
    sent: Arc<Counter>,
    delivered: Arc<Counter>,
}

pub async fn run(target: &Target, load: &PubsubLoad, qos: QoS) -> Result<PubsubResult> {
    let (publishers, subscribers) = (load.publishers as usize, load.subscribers as usize);
    let run_id = format!("{:x}", now_ns());
    let wire = match target.kind() {
        TargetKind::Gateway if load.signals => Wire::Signal,
        TargetKind::Gateway => Wire::Gateway,
        TargetKind::Mqtt => Wire::Plain,
    };
    let pub_users: Vec<String> = (0..publishers).map(|i| format!("lt-p{i}")).collect();
    let sub_users: Vec<String> = (0..subscribers).map(|j| format!("lt-s{j}")).collect();
    let devices: Vec<(String, String)> = pub_users
        .iter()
        .chain(&sub_users)
        .map(|user| (user.clone(), DEVICE.to_owned()))
        .collect();
    let mut pub_credentials = target
        .credentials(&devices, &Counter::new("tokens"))
        .await?;
    let sub_credentials = pub_credentials.split_off(publishers);

    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Shared {
        stop: stop_rx,
        errors: Arc::new(ClientErrors {
            count: Counter::new("errors"),
            first: Mutex::new(None),
        }),
        sent: Counter::new("sent"),
        delivered: Counter::new("recv"),
    };
    let reporter = spawn_reporter(
        format!("pubsub {} qos{}", target.kind().as_str(), qos as u8),
        vec![
            shared.sent.clone(),
            shared.delivered.clone(),
            shared.errors.count.clone(),
        ],
        shared.stop.clone(),
    );

    let mut inboxes = Vec::with_capacity(subscribers);
    let mut sub_ready = Vec::with_capacity(subscribers);
    for (j, credentials) in sub_credentials.into_iter().enumerate() {
        let topic = match wire {
            Wire::Gateway => inbox(&sub_users[j]),
            Wire::Signal => signal(&sub_users[j]),
            Wire::Plain => bench_topic(&run_id, j),
        };
        let checkers = (0..publishers)
            .map(|i| (i % subscribers == j).then(|| SeqChecker::new(load.messages)))
            .collect();
        let inbox = Inbox::new(wire, run_id.clone(), checkers, shared.delivered.clone());
        let options = mqtt_options(target.addr(), credentials, load.size);
        let (task, ready) = start_subscriber(options, topic, qos, inbox, &shared).await?;
        inboxes.push(task);
        sub_ready.push(ready);
    }
    let ready_deadline = Instant::now() + READY_TIMEOUT;
    for (index, ready) in sub_ready.into_iter().enumerate() {
        let failure = match timeout_at(ready_deadline, ready).await {
            Ok(Ok(Ok(()))) => continue,
            Ok(Ok(Err(refused))) => refused,
            Ok(Err(_)) => shared
                .errors
                .first()
                .unwrap_or_else(|| "connection lost".into()),
            Err(_) => format!("not ready after {READY_TIMEOUT:?}"),
        };
        bail!("subscriber {index} against {}: {failure}", target.addr());
    }
    let mut completions = Vec::with_capacity(publishers);
    let mut connections = Vec::with_capacity(publishers);
    let mut pub_clients = Vec::with_capacity(publishers);
    for (i, credentials) in pub_credentials.into_iter().enumerate() {
        let j = i % subscribers;
        let (topic, to) = match wire {
            Wire::Gateway => (
                device_topic(&pub_users[i], DEVICE, DeviceAction::Send),
                &*sub_users[j],
            ),
            Wire::Signal => (
                device_topic(&pub_users[i], DEVICE, DeviceAction::Signal),
                &*sub_users[j],
            ),
            Wire::Plain => (bench_topic(&run_id, j), ""),
        };
        let completion = Arc::new(Completion::default());
        let events = Arc::new(PublisherTally {
            completion: completion.clone(),
            errors: shared.errors.clone(),
        });
        let options = PublisherOptions {
            addr: target.addr(),
            credentials,
            topic,
            qos,
            keep_alive: KEEP_ALIVE,
            inflight: INFLIGHT,
            max_packet: max_packet(load.size),
        };
        let connecting = BatchPublisher::connect(options, events, shared.stop.clone());
        let (client, connection) = timeout_at(ready_deadline, connecting)
            .await
            .map_err(|_| anyhow!("not ready after {READY_TIMEOUT:?}"))
            .and_then(|connected| connected)
            .with_context(|| format!("publisher {i} against {}", target.addr()))?;
        completions.push(completion);
        connections.push(connection);
        pub_clients.push((
            client,
            PayloadBuilder::new(wire, to, &run_id, i as u32, load.size),
        ));
    }

    let stages_before = target.stages().await;
    let start_ns = now_ns();
    let cpu = RunWatch::start(Some(target.addr().port()));
    let deadline = Instant::now() + load.duration_limit;
    let senders: Vec<JoinHandle<u64>> = pub_clients
        .into_iter()
        .map(|(client, builder)| {
            let sender = Sender {
                client,
                builder,
                messages: load.messages,
                rate: load.rate,
                deadline,
                sent: shared.sent.clone(),
                errors: shared.errors.clone(),
            };
            tokio::spawn(sender.send_all())
        })
        .collect();
    let mut published = Vec::with_capacity(publishers);
    for sender in senders {
        published.push(sender.await?);
    }
    let published_total: u64 = published.iter().sum();
    let completed = || -> u64 {
        completions
            .iter()
            .map(|c| c.count.load(Ordering::Relaxed))
            .sum()
    };
    drain(load, published_total, &shared.delivered, completed).await;
    let cpu = cpu.finish();
    let cores = |usage: Option<Usage>| usage.map(|u| u.cpu_cores);
    let (broker_cpu_cores, loadtest_cpu_cores) = (cores(cpu.broker), cores(cpu.loadtest));
    let stages = match (stages_before, target.stages().await) {
        (Some(before), Some(after)) => after.since(&before),
        _ => Vec::new(),
    };

    let _ = stop_tx.send(true);
    let mut seen = Vec::with_capacity(subscribers);
    for task in inboxes {
        let stopped = timeout(STOP_TIMEOUT, task).await;
        seen.push(stopped.map_err(|_| anyhow!("a subscriber did not stop"))??);
    }
    for connection in connections {
        let stopped = timeout(STOP_TIMEOUT, connection).await;
        stopped.map_err(|_| anyhow!("a publisher did not stop"))??;
    }
    let timeline = reporter.await?;

    let publish_completed = completed();
    let last_completion = completions
        .iter()
        .map(|c| c.last_ns.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0);
    let publish_seconds = secs_between(start_ns, last_completion);
    let tally = tally(&seen, &published)?;
    let delivered = shared.delivered.get();
    let delivery_seconds = secs_between(tally.first_ns, tally.last_ns);
    let mut result = PubsubResult {
        target: target.kind(),
        addr: target.addr(),
        path: wire.as_str(),
        qos: qos as u8,
        publishers: load.publishers,
        subscribers: load.subscribers,
        messages_per_publisher: load.messages,
        size: load.size,
        rate_per_publisher: load.rate,
        published: published_total,
        publish_completed,
        publish_seconds,
        publish_rate: per_second(publish_completed, publish_seconds),
        delivered,
        delivery_seconds,
        delivered_rate: per_second(delivered, delivery_seconds),
        latency_us: LatencySummary::from_histogram(&tally.latency),
        losses: tally.losses,
        client_errors: shared.errors.count.get(),
        first_client_error: shared.errors.first(),
        stopped_by_duration_limit: published.iter().any(|&n| n < load.messages),
        broker_cpu_cores,
        loadtest_cpu_cores,
        stages,
        timeline,
        latency: tally.latency,
        failed_checks: Vec::new(),
    };
    result.failed_checks = result.checks();
    Ok(result)
}

/// Waits until all `published` messages are delivered and `completed()` (written or
/// acknowledged), or until neither count moved for `--drain-timeout`.
async fn drain(
    load: &PubsubLoad,
    published: u64,
    delivered: &Counter,
    completed: impl Fn() -> u64,
) {
    let hard_end = Instant::now() + load.duration_limit + load.drain_timeout;
    let mut last_seen = (delivered.get(), completed());
    let mut last_change = Instant::now();
    while Instant::now() < hard_end {
        let seen = (delivered.get(), completed());
        if seen.0 >= published && seen.1 >= published {
            return;
        }
        if seen != last_seen {
            last_seen = seen;
            last_change = Instant::now();
        } else if last_change.elapsed() >= load.drain_timeout {
            return;
        }
        sleep(DRAIN_POLL).await;
    }
}

/// Room for the payload plus the gateway's inbox envelope around it.
fn max_packet(size: usize) -> usize {
    size * 2 + 64 * 1024
}

/// The plain-broker topic of subscriber `j`.
fn bench_topic(run: &str, j: usize) -> String {
    format!("bench/{run}/{j}")
}

fn secs_between(from_ns: u64, to_ns: u64) -> f64 {
    to_ns.saturating_sub(from_ns) as f64 / 1e9
}

fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}
