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

use crate::batch_publisher::{BatchPublisher, PublisherEvents, PublisherOptions};
use crate::pacer::Pacer;
use crate::payload::{now_ns, PayloadBuilder, Wire};
use crate::procfs::Usage;
use crate::progress::{spawn_reporter, Counter, Timeline};
use crate::report::{
    latency_histogram, print_verdict, thousands, LatencySummary, Outcome, RunWatch, Table,
};
use crate::seq::{Arrival, SeqChecker};
use crate::stop::stopped;
use crate::target::{Credentials, Target, TargetArgs, TargetKind};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use hdrhistogram::Histogram;
use protocol::topics::{device_topic, inbox, signal, DeviceAction};
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, NetworkOptions, Packet, QoS, SubscribeReasonCode,
};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, timeout_at, Instant};

/// QoS 1 publishes a publisher may have unacknowledged: enough to fill a loopback pipe, few
/// enough that the broker's acknowledgement pace, not our buffers, limits the publisher.
const INFLIGHT: u16 = 100;
/// Requests a subscriber may queue (its subscribe, its acknowledgements) before they wait.
const REQUEST_CAPACITY: usize = 10_000;
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

/// A message identified by its publisher and sequence number.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SeqRef {
    pub publisher: u32,
    pub seq: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Losses {
    /// Published but never delivered.
    pub missing: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Sequence numbers beyond what a publisher may send.
    pub out_of_range: u64,
    /// From an earlier run (e.g. replayed by the gateway); ignored.
    pub foreign: u64,
    /// Payloads that are not this tool's messages.
    pub undecodable: u64,
    /// Delivered to a subscriber its publisher does not send to.
    pub misrouted: u64,
    pub first_missing: Option<SeqRef>,
    pub first_duplicate: Option<SeqRef>,
    pub first_out_of_order: Option<SeqRef>,
}

#[derive(Debug, Serialize)]
pub struct PubsubResult {
    pub target: TargetKind,
    pub addr: SocketAddr,
    /// `messages` (stored), `signals` (live) or `plain` (a plain broker's topic).
    pub path: &'static str,
    pub qos: u8,
    pub publishers: u32,
    pub subscribers: u32,
    pub messages_per_publisher: u64,
    pub size: usize,
    pub rate_per_publisher: u64,
    /// Handed to the MQTT clients.
    pub published: u64,
    /// Written to the socket (QoS 0) or acknowledged by the broker (QoS 1).
    pub publish_completed: u64,
    pub publish_seconds: f64,
    pub publish_rate: f64,
    /// Distinct messages of this run that reached their subscriber.
    pub delivered: u64,
    /// From the first to the last delivery.
    pub delivery_seconds: f64,
    pub delivered_rate: f64,
    pub latency_us: LatencySummary,
    pub losses: Losses,
    pub timeline: Timeline,
    #[serde(skip)]
    pub latency: Histogram<u64>,
    pub client_errors: u64,
    pub first_client_error: Option<String>,
    /// Some publisher stopped early at `--duration-limit`.
    pub stopped_by_duration_limit: bool,
    /// CPU of the broker (the process listening on its port) and of this tool from the first
    /// publish until the last delivery: which of the two ran out.
    pub broker_cpu_cores: Option<f64>,
    pub loadtest_cpu_cores: Option<f64>,
    pub failed_checks: Vec<String>,
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

/// How far one publisher's messages got: written (QoS 0) or acknowledged (QoS 1).
#[derive(Default)]
struct Completion {
    count: AtomicU64,
    last_ns: AtomicU64,
}

impl Completion {
    fn complete(&self, publishes: u64) {
        self.count.fetch_add(publishes, Ordering::Relaxed);
        self.last_ns.store(now_ns(), Ordering::Relaxed);
    }
}

/// What one subscriber saw.
struct Inbox {
    wire: Wire,
    run: String,
    /// Indexed by publisher; `Some` for the publishers that send here.
    checkers: Vec<Option<SeqChecker>>,
    latency: Histogram<u64>,
    first_ns: Option<u64>,
    last_ns: Option<u64>,
    foreign: u64,
    undecodable: u64,
    misrouted: u64,
    delivered: Arc<Counter>,
}

impl Inbox {
    fn on_publish(&mut self, payload: &[u8]) {
        let now = now_ns();
        let Ok(stamp) = self.wire.decode(payload) else {
            self.undecodable += 1;
            return;
        };
        if stamp.run != self.run {
            self.foreign += 1;
            return;
        }
        let Some(Some(checker)) = self.checkers.get_mut(stamp.p as usize) else {
            self.misrouted += 1;
            return;
        };
        match checker.record(stamp.seq) {
            Arrival::InOrder | Arrival::OutOfOrder => {
                self.delivered.add(1);
                self.latency
                    .saturating_record(now.saturating_sub(stamp.sent_ns) / 1_000);
                self.first_ns.get_or_insert(now);
                self.last_ns = Some(now);
            }
            Arrival::Duplicate | Arrival::OutOfRange => {}
        }
    }
}

/// What every client task of one run shares.
struct Shared {
    stop: watch::Receiver<bool>,
    errors: Arc<ClientErrors>,
    sent: Arc<Counter>,
    delivered: Arc<Counter>,
}

/// Tells when a client is connected (publisher) or subscribed (subscriber), or why not.
type Ready = oneshot::Receiver<Result<(), String>>;

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
        let inbox = Inbox {
            wire,
            run: run_id.clone(),
            checkers: (0..publishers)
                .map(|i| (i % subscribers == j).then(|| SeqChecker::new(load.messages)))
                .collect(),
            latency: latency_histogram(),
            first_ns: None,
            last_ns: None,
            foreign: 0,
            undecodable: 0,
            misrouted: 0,
            delivered: shared.delivered.clone(),
        };
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
        timeline,
        latency: tally.latency,
        failed_checks: Vec::new(),
    };
    result.failed_checks = result.checks();
    Ok(result)
}

/// Connects a subscriber and subscribes it to `topic`; its task collects into `inbox` until
/// the run stops and then hands it back.
async fn start_subscriber(
    options: MqttOptions,
    topic: String,
    qos: QoS,
    mut inbox: Inbox,
    shared: &Shared,
) -> Result<(JoinHandle<Inbox>, Ready)> {
    let (client, eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
    client.subscribe(topic, qos).await?;
    let (ready_tx, ready_rx) = oneshot::channel();
    let (stop, errors) = (shared.stop.clone(), shared.errors.clone());
    let task = tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        drive(eventloop, stop, &errors, |event| match event {
            Event::Incoming(Packet::Publish(publish)) => inbox.on_publish(&publish.payload),
            Event::Incoming(Packet::SubAck(ack)) => {
                let granted = ack
                    .return_codes
                    .iter()
                    .all(|code| matches!(code, SubscribeReasonCode::Success(_)));
                if let Some(ready) = ready.take() {
                    let _ = ready.send(if granted {
                        Ok(())
                    } else {
                        Err("subscription refused".to_owned())
                    });
                }
            }
            _ => {}
        })
        .await;
        inbox
    });
    Ok((task, ready_rx))
}

/// Counts a publisher's completed publishes and records its connection's failure.
struct PublisherTally {
    completion: Arc<Completion>,
    errors: Arc<ClientErrors>,
}

impl PublisherEvents for PublisherTally {
    fn written(&self, publishes: u64) {
        self.completion.complete(publishes);
    }

    fn acked(&self) {
        self.completion.complete(1);
    }

    fn failed(&self, error: String) {
        self.errors.record(error);
    }
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

/// All subscribers' observations together.
struct Tally {
    latency: Histogram<u64>,
    losses: Losses,
    /// Earliest first and latest last delivery, ns since the Unix epoch.
    first_ns: u64,
    last_ns: u64,
}

/// Merges what the subscribers saw, given how many messages each publisher sent.
fn tally(inboxes: &[Inbox], published: &[u64]) -> Result<Tally> {
    let mut tally = Tally {
        latency: latency_histogram(),
        losses: Losses::default(),
        first_ns: u64::MAX,
        last_ns: 0,
    };
    let losses = &mut tally.losses;
    for inbox in inboxes {
        tally.latency.add(&inbox.latency)?;
        tally.first_ns = tally.first_ns.min(inbox.first_ns.unwrap_or(u64::MAX));
        tally.last_ns = tally.last_ns.max(inbox.last_ns.unwrap_or(0));
        losses.foreign += inbox.foreign;
        losses.undecodable += inbox.undecodable;
        losses.misrouted += inbox.misrouted;
        for (p, checker) in inbox.checkers.iter().enumerate() {
            let Some(checker) = checker else { continue };
            let at = |seq: Option<u64>| {
                seq.map(|seq| SeqRef {
                    publisher: p as u32,
                    seq,
                })
            };
            let missing = checker.missing(published[p]);
            losses.missing += missing.count;
            losses.duplicates += checker.duplicates;
            losses.out_of_order += checker.out_of_order;
            losses.out_of_range += checker.out_of_range;
            losses.first_missing = losses.first_missing.or(at(missing.first));
            losses.first_duplicate = losses.first_duplicate.or(at(checker.first_duplicate));
            losses.first_out_of_order =
                losses.first_out_of_order.or(at(checker.first_out_of_order));
        }
    }
    Ok(tally)
}

/// One publisher's sending side.
struct Sender {
    client: BatchPublisher,
    builder: PayloadBuilder,
    messages: u64,
    rate: u64,
    deadline: Instant,
    sent: Arc<Counter>,
    errors: Arc<ClientErrors>,
}

impl Sender {
    /// Publishes up to `messages` messages, paced when `rate` > 0, until `deadline`; returns how
    /// many were handed to the client. A paced sender writes after each burst, so messages leave
    /// at their time; at full speed they go out in full batches.
    async fn send_all(mut self) -> u64 {
        let mut pacer = (self.rate > 0).then(|| Pacer::new(self.rate));
        let mut handed = self.messages;
        for seq in 0..self.messages {
            if let Some(pacer) = &mut pacer {
                if timeout_at(self.deadline, pacer.wait()).await.is_err() {
                    handed = seq;
                    break;
                }
            }
            if Instant::now() >= self.deadline {
                handed = seq;
                break;
            }
            let payload = self.builder.build(seq, now_ns());
            match timeout_at(self.deadline, self.client.publish(payload)).await {
                Ok(Ok(())) => self.sent.add(1),
                Ok(Err(error)) => {
                    self.errors.record(format!("publish: {error:#}"));
                    return seq;
                }
                Err(_) => {
                    handed = seq;
                    break;
                }
            }
            if pacer.as_ref().is_some_and(|pacer| !pacer.has_permit()) {
                if let Err(error) = self.client.flush().await {
                    self.errors.record(format!("publish: {error:#}"));
                    return seq + 1;
                }
            }
        }
        if let Err(error) = self.client.flush().await {
            self.errors.record(format!("publish: {error:#}"));
        }
        handed
    }
}

/// Polls a client's event loop, handing every event to `on_event`, until `stop` or the first
/// connection error, which is recorded.
async fn drive(
    mut eventloop: EventLoop,
    mut stop: watch::Receiver<bool>,
    errors: &ClientErrors,
    mut on_event: impl FnMut(Event),
) {
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    loop {
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => return,
            event = eventloop.poll() => match event {
                Ok(event) => on_event(event),
                Err(error) => {
                    errors.record(error.to_string());
                    return;
                }
            },
        }
    }
}

/// Room for the payload plus the gateway's inbox envelope around it.
fn max_packet(size: usize) -> usize {
    size * 2 + 64 * 1024
}

fn mqtt_options(addr: SocketAddr, credentials: Credentials, size: usize) -> MqttOptions {
    let mut options = MqttOptions::new(credentials.client_id, addr.ip().to_string(), addr.port());
    let max_packet = max_packet(size);
    options
        .set_keep_alive(KEEP_ALIVE)
        .set_inflight(INFLIGHT)
        .set_max_packet_size(max_packet, max_packet);
    if let Some((user, password)) = credentials.login {
        options.set_credentials(user, password);
    }
    options
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

impl PubsubResult {
    fn checks(&self) -> Vec<String> {
        let mut failed = Vec::new();
        if self.client_errors > 0 {
            failed.push(format!(
                "{} client connection errors, first: {}",
                self.client_errors,
                self.first_client_error.as_deref().unwrap_or("?")
            ));
        }
        if self.published > 0 && self.delivered == 0 {
            failed.push("nothing was delivered".to_owned());
        }
        if self.qos == 0 {
            return failed;
        }
        let l = &self.losses;
        let at = |r: Option<SeqRef>| {
            r.map_or("?".to_owned(), |r| {
                format!("publisher {} seq {}", r.publisher, r.seq)
            })
        };
        if l.missing > 0 {
            failed.push(format!(
                "{} messages lost, first missing: {}",
                l.missing,
                at(l.first_missing)
            ));
        }
        if l.duplicates > 0 {
            failed.push(format!(
                "{} duplicates, first: {}",
                l.duplicates,
                at(l.first_duplicate)
            ));
        }
        if l.out_of_order > 0 {
            failed.push(format!(
                "{} out of order, first: {}",
                l.out_of_order,
                at(l.first_out_of_order)
            ));
        }
        if self.publish_completed < self.published {
            failed.push(format!(
                "{} publishes never acknowledged",
                self.published - self.publish_completed
            ));
        }
        let strays = l.out_of_range + l.undecodable + l.misrouted;
        if strays > 0 {
            failed.push(format!(
                "{strays} unexpected messages (out of range {}, undecodable {}, misrouted {})",
                l.out_of_range, l.undecodable, l.misrouted
            ));
        }
        failed
    }

    /// One line for `compare`'s progress output.
    pub fn summary_line(&self) -> String {
        format!(
            "qos{} delivered {} msg/s, p99 {} µs, missing {}, errors {}",
            self.qos,
            thousands(self.delivered_rate),
            self.latency_us.p99_us,
            self.losses.missing,
            self.client_errors
        )
    }
}

impl Outcome for PubsubResult {
    fn plot(&self) -> Option<crate::plot::PlotData<'_>> {
        Some(crate::plot::PlotData {
            title: "pubsub: end-to-end latency",
            latency: &self.latency,
            timeline: &self.timeline,
            rate_series: "recv",
        })
    }

    fn print(&self) {
        let rate = if self.rate_per_publisher == 0 {
            "max".to_owned()
        } else {
            format!("{}/s", thousands(self.rate_per_publisher as f64))
        };
        println!(
            "pubsub qos{} against {} {} ({}): {} publishers -> {} subscribers, {} msgs each, {} B, rate {rate}",
            self.qos,
            self.target.as_str(),
            self.addr,
            self.path,
            self.publishers,
            self.subscribers,
            thousands(self.messages_per_publisher as f64),
            self.size,
        );
        let l = &self.losses;
        let t = &self.latency_us;
        let mut table = Table::default();
        table.rate_row(
            "published",
            thousands(self.publish_completed as f64),
            self.publish_seconds,
            self.publish_rate,
            "msg/s",
        );
        table.rate_row(
            "delivered",
            thousands(self.delivered as f64),
            self.delivery_seconds,
            self.delivered_rate,
            "msg/s",
        );
        table.row(t.cells("latency µs"));
        table.row([
            "losses".to_owned(),
            format!("missing {}", l.missing),
            format!("duplicates {}", l.duplicates),
            format!("out-of-order {}", l.out_of_order),
            format!("foreign {}", l.foreign),
        ]);
        table.row(["client errors".to_owned(), self.client_errors.to_string()]);
        let cores = |cores: Option<f64>| cores.map_or("-".to_owned(), |c| format!("{c:.2}"));
        table.row([
            "cpu cores".to_owned(),
            format!("broker {}", cores(self.broker_cpu_cores)),
            format!("loadtest {}", cores(self.loadtest_cpu_cores)),
        ]);
        print!("{}", table.render());
        if self.stopped_by_duration_limit {
            println!("publishing stopped at --duration-limit");
        }
        print_verdict(&self.failed_checks);
    }

    fn passed(&self) -> bool {
        self.failed_checks.is_empty()
    }
}
