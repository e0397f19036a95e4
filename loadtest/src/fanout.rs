//! Scenario `fanout`: users with several devices each, some on MQTT and some on the JSON
//! WebSocket bridge, all online; messages to the users go through the backend API
//! (`POST /v1/messages`) and through other users' devices (`.../send`), and every device of the
//! recipient must get every message, once, in log order.
//!
//! Each run uses fresh users, so user `u`'s log holds exactly the `--messages` sent to it, with
//! sequences 1..=messages; each device checks its own stream against that, which catches a
//! lost, repeated or reordered delivery on any single device. Latency runs from the sender's
//! clock stamp in the body to the device's arrival.

use crate::device::{Arrival, Device, DeviceMix, Endpoints, SendHandle, Transport};
use crate::messages_api::MessagesApi;
use crate::pacer::Pacer;
use crate::payload::{now_ns, PayloadBuilder, Stamp, Wire};
use crate::progress::{spawn_reporter, Counter, Timeline};
use crate::report::{describe_errors, print_verdict, thousands, ErrorCount, ErrorTally};
use crate::report::{LatencySummary, Outcome, SharedHistogram, Table};
use crate::seq::SeqChecker;
use crate::stop::stopped;
use crate::target::{EndpointArgs, Target};
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{sleep, Instant};

/// How often the waiting phases look at the counters.
const POLL: Duration = Duration::from_millis(100);
/// Latency shards: enough that two cores' worth of receiving tasks rarely collide.
const HISTOGRAM_SHARDS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// `POST /v1/messages` only.
    Api,
    /// Other users' MQTT devices publishing on their `send` topic only.
    Send,
    /// Alternately one and the other.
    Mixed,
}

#[derive(Args, Debug)]
pub struct FanoutCmd {
    #[command(flatten)]
    pub endpoint: EndpointArgs,
    /// Users receiving messages.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    users: u64,
    /// Devices each user has online.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=16))]
    devices: u64,
    /// How many of each user's devices use the JSON WebSocket bridge; the rest use MQTT.
    #[arg(long, default_value_t = 1)]
    ws_devices: u64,
    /// Messages sent to each user.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    messages: u64,
    /// How messages enter the gateway.
    #[arg(long, value_enum, default_value_t = Via::Mixed)]
    via: Via,
    /// Sending devices (MQTT, users of their own) for `--via send|mixed`.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    senders: u64,
    /// Size of each message's body in bytes (padded).
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Messages per second in all; 0 sends as fast as the gateway accepts them.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// API requests in flight at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    concurrency: u64,
    /// New device connections per second.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..))]
    connect_rate: u64,
    /// Give up on one device's login and subscriptions after this long.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,
    /// After sending, keep waiting for deliveries until none arrive for this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// Stop sending after this long, even if messages remain.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    duration_limit: Duration,
}

/// A delivery identified by where it should have arrived.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceSeq {
    pub user: String,
    pub device: String,
    pub seq: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct FanoutLosses {
    pub missing: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Sequences beyond the messages sent to the user.
    pub out_of_range: u64,
    /// Messages in the inbox that this run did not send.
    pub foreign: u64,
    pub first_missing: Option<DeviceSeq>,
    pub first_duplicate: Option<DeviceSeq>,
    pub first_out_of_order: Option<DeviceSeq>,
}

#[derive(Debug, Serialize)]
pub struct FanoutResult {
    pub users: u64,
    pub devices_per_user: u64,
    pub ws_devices_per_user: u64,
    pub messages_per_user: u64,
    pub via: Via,
    pub senders: u64,
    pub rate: u64,
    pub devices_connected: u64,
    pub devices_failed: u64,
    pub connect_seconds: f64,
    /// Accepted by the gateway: 2xx answers and PUBACKs.
    pub accepted: u64,
    pub send_seconds: f64,
    pub send_rate: f64,
    pub expected_deliveries: u64,
    pub delivered: u64,
    /// From the first message sent to the last delivery.
    pub delivery_seconds: f64,
    pub delivery_rate: f64,
    pub latency_us: LatencySummary,
    pub losses: FanoutLosses,
    pub errors: BTreeMap<String, ErrorCount>,
    pub stopped_by_duration_limit: bool,
    pub timeline: Timeline,
    #[serde(skip)]
    pub latency: hdrhistogram::Histogram<u64>,
    pub failed_checks: Vec<String>,
}

/// What the load tasks share.
struct Shared {
    run: String,
    expected: u64,
    connected: Arc<Counter>,
    failed: Arc<Counter>,
    accepted: Arc<Counter>,
    delivered: Arc<Counter>,
    last_delivery_ns: AtomicU64,
    latency: SharedHistogram,
    errors: ErrorTally,
}

/// What one receiving device saw.
struct DeviceTally {
    user: String,
    device: String,
    checker: SeqChecker,
    foreign: u64,
}

pub async fn run_cmd(cmd: &FanoutCmd) -> Result<FanoutResult> {
    let mix = DeviceMix::new(cmd.devices, cmd.ws_devices, "--devices")?;
    crate::procfs::ensure_open_files(cmd.users * cmd.devices + cmd.senders)?;
    let target = Target::gateway(&cmd.endpoint)?;
    let endpoints = Endpoints::new(cmd.endpoint.mqtt, &cmd.endpoint.http)?;
    let api = MessagesApi::new(&cmd.endpoint)?;
    let run = format!("fo{:x}", now_ns());
    let shared = Arc::new(Shared {
        run: run.clone(),
        expected: cmd.messages,
        connected: Counter::new("connected"),
        failed: Counter::new("failed"),
        accepted: Counter::new("accepted"),
        delivered: Counter::new("delivered"),
        last_delivery_ns: AtomicU64::new(0),
        latency: SharedHistogram::new(HISTOGRAM_SHARDS),
        errors: ErrorTally::default(),
    });
    let tokens = Counter::new("tokens");
    let (stop_tx, stop_rx) = watch::channel(false);
    let reporter = spawn_reporter(
        "fanout".to_owned(),
        vec![
            tokens.clone(),
            shared.connected.clone(),
            shared.failed.clone(),
            shared.accepted.clone(),
            shared.delivered.clone(),
        ],
        stop_rx.clone(),
    );

    let sending = cmd.via != Via::Api;
    let sender_devices: Vec<(String, String)> = if sending {
        (0..cmd.senders)
            .map(|k| (format!("{run}-s{k}"), "d0".to_owned()))
            .collect()
    } else {
        Vec::new()
    };
    let receivers: Vec<(String, String)> = (0..cmd.users)
        .flat_map(|u| (0..cmd.devices).map(move |d| (u, d)))
        .map(|(u, d)| (format!("{run}-u{u}"), format!("d{d}")))
        .collect();
    let mut credentials = target
        .credentials(
            &[sender_devices.clone(), receivers.clone()].concat(),
            &tokens,
        )
        .await?
        .into_iter();

    let connecting = Instant::now();
    let mut senders: Vec<SendHandle> = Vec::new();
    let mut sender_tasks = Vec::new();
    for (user, device) in &sender_devices {
        let credentials = credentials.next().context("a sender's token")?;
        let device = Device::connect(
            &endpoints,
            Transport::Mqtt,
            user,
            device,
            credentials,
            cmd.connect_timeout,
        )
        .await
        .with_context(|| format!("connecting sender {user}"))?;
        senders.push(device.sender()?);
        sender_tasks.push(tokio::spawn(count_acceptances(
            device,
            shared.clone(),
            stop_rx.clone(),
        )));
    }

    let mut pacer = Pacer::new(cmd.connect_rate);
    let mut receiving: Vec<JoinHandle<Option<DeviceTally>>> = Vec::with_capacity(receivers.len());
    for (i, ((user, device), credentials)) in receivers.into_iter().zip(credentials).enumerate() {
        pacer.wait().await;
        let transport = mix.transport(i as u64);
        let (endpoints, shared, stop) = (endpoints.clone(), shared.clone(), stop_rx.clone());
        let connect_timeout = cmd.connect_timeout;
        receiving.push(tokio::spawn(async move {
            let connected = Device::connect(
                &endpoints,
                transport,
                &user,
                &device,
                credentials,
                connect_timeout,
            )
            .await;
            match connected {
                Ok(device) => {
                    shared.connected.add(1);
                    Some(receive(i, device, shared, stop).await)
                }
                Err(error) => {
                    shared.failed.add(1);
                    shared
                        .errors
                        .record(format!("connect {transport:?}"), format!("{error:#}"));
                    None
                }
            }
        }));
    }
    let total_devices = receiving.len() as u64;
    while shared.connected.get() + shared.failed.get() < total_devices {
        sleep(POLL).await;
    }
    let connect_seconds = connecting.elapsed().as_secs_f64();

    let sending_started = Instant::now();
    let started_ns = now_ns();
    let total = cmd.users * cmd.messages;
    let deadline = sending_started + cmd.duration_limit;
    let mut pacer = (cmd.rate > 0).then(|| Pacer::new(cmd.rate));
    let in_flight = Arc::new(Semaphore::new(cmd.concurrency as usize));
    let api = Arc::new(api);
    let mut stopped_by_duration_limit = false;
    let mut handed = 0;
    for k in 0..total {
        if Instant::now() >= deadline {
            stopped_by_duration_limit = true;
            break;
        }
        if let Some(pacer) = &mut pacer {
            pacer.wait().await;
        }
        let (user, n) = (k % cmd.users, k / cmd.users);
        let by_api = match cmd.via {
            Via::Api => true,
            Via::Send => false,
            Via::Mixed => n % 2 == 0,
        };
        handed += 1;
        let to = format!("{run}-u{user}");
        let body = PayloadBuilder::new(Wire::Gateway, &to, &run, u32::from(!by_api), cmd.size)
            .build(k, now_ns());
        if by_api {
            let permit = in_flight.clone().acquire_owned().await?;
            let (api, shared) = (api.clone(), shared.clone());
            tokio::spawn(async move {
                match api.post(body).await {
                    Ok(_seq) => shared.accepted.add(1),
                    Err(error) => shared.errors.record("post", format!("{error:#}")),
                }
                drop(permit);
            });
        } else if let Err(error) = senders[(k % cmd.senders) as usize].send(body).await {
            shared.errors.record("send", format!("{error:#}"));
        }
    }
    let _ = in_flight.acquire_many(cmd.concurrency as u32).await?;
    let send_seconds = sending_started.elapsed().as_secs_f64();

    // Wait for the deliveries and for the senders' acknowledgements: a PUBACK may reach its
    // sender after the message reached every recipient, and stopping at the last delivery would
    // count that send as not accepted.
    let expected_deliveries = shared.connected.get() * cmd.messages;
    let progress = || (shared.delivered.get(), shared.accepted.get());
    let mut last = (progress(), Instant::now());
    while (shared.delivered.get() < expected_deliveries || shared.accepted.get() < handed)
        && last.1.elapsed() < cmd.drain_timeout
    {
        sleep(POLL).await;
        let now = progress();
        if now != last.0 {
            last = (now, Instant::now());
        }
    }

    let _ = stop_tx.send(true);
    let mut tallies = Vec::with_capacity(receiving.len());
    for task in receiving {
        tallies.extend(task.await?);
    }
    for task in sender_tasks {
        task.await?;
    }
    let timeline = reporter.await?;
    let delivery_seconds = shared
        .last_delivery_ns
        .load(Ordering::Relaxed)
        .saturating_sub(started_ns) as f64
        / 1e9;
    let latency = shared.latency.merged();
    let mut result = FanoutResult {
        users: cmd.users,
        devices_per_user: cmd.devices,
        ws_devices_per_user: cmd.ws_devices,
        messages_per_user: cmd.messages,
        via: cmd.via,
        senders: if sending { cmd.senders } else { 0 },
        rate: cmd.rate,
        devices_connected: shared.connected.get(),
        devices_failed: shared.failed.get(),
        connect_seconds,
        accepted: shared.accepted.get(),
        send_seconds,
        send_rate: shared.accepted.get() as f64 / send_seconds.max(1e-9),
        expected_deliveries,
        delivered: shared.delivered.get(),
        delivery_seconds,
        delivery_rate: shared.delivered.get() as f64 / delivery_seconds.max(1e-9),
        latency_us: LatencySummary::from_histogram(&latency),
        losses: losses(&tallies, cmd.messages),
        errors: shared.errors.snapshot(),
        stopped_by_duration_limit,
        timeline,
        latency,
        failed_checks: Vec::new(),
    };
    result.failed_checks = result.checks(total);
    Ok(result)
}

/// Reads one device until told to stop, checking every message of this run against the log's
/// sequence.
async fn receive(
    index: usize,
    mut device: Device,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> DeviceTally {
    let mut checker = SeqChecker::new(shared.expected);
    let mut foreign = 0;
    loop {
        let arrival = tokio::select! {
            _ = stopped(&mut stop) => break,
            arrival = device.next() => arrival,
        };
        match arrival {
            Ok(Arrival::Message(message)) => {
                let arrived = now_ns();
                match serde_json::from_value::<Stamp>(message.body) {
                    Ok(stamp) if stamp.run == shared.run => {
                        // Sequences start at 1; a 0 wraps out of range and is counted so.
                        checker.record(message.seq.wrapping_sub(1));
                        shared.delivered.add(1);
                        shared
                            .last_delivery_ns
                            .fetch_max(arrived, Ordering::Relaxed);
                        let us = arrived.saturating_sub(stamp.sent_ns) / 1_000;
                        shared.latency.record(index, us);
                    }
                    _ => foreign += 1,
                }
            }
            Ok(_) => {}
            Err(error) => {
                shared.errors.record("receive", format!("{error:#}"));
                break;
            }
        }
    }
    let (user, device_id) = (device.user.clone(), device.device.clone());
    device.close().await;
    DeviceTally {
        user,
        device: device_id,
        checker,
        foreign,
    }
}

/// Reads a sending device, counting the gateway's acknowledgements of its sends.
async fn count_acceptances(
    mut device: Device,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let arrival = tokio::select! {
            _ = stopped(&mut stop) => break,
            arrival = device.next() => arrival,
        };
        match arrival {
            Ok(Arrival::Accepted) => shared.accepted.add(1),
            Ok(_) => {}
            Err(error) => {
                shared.errors.record("sender", format!("{error:#}"));
                break;
            }
        }
    }
    device.close().await;
}

fn losses(tallies: &[DeviceTally], messages: u64) -> FanoutLosses {
    let mut losses = FanoutLosses::default();
    let at = |tally: &DeviceTally, index: u64| DeviceSeq {
        user: tally.user.clone(),
        device: tally.device.clone(),
        seq: index + 1,
    };
    for tally in tallies {
        let checker = &tally.checker;
        let missing = checker.missing(messages);
        losses.missing += missing.count;
        losses.duplicates += checker.duplicates;
        losses.out_of_order += checker.out_of_order;
        losses.out_of_range += checker.out_of_range;
        losses.foreign += tally.foreign;
        if losses.first_missing.is_none() {
            losses.first_missing = missing.first.map(|i| at(tally, i));
        }
        if losses.first_duplicate.is_none() {
            losses.first_duplicate = checker.first_duplicate.map(|i| at(tally, i));
        }
        if losses.first_out_of_order.is_none() {
            losses.first_out_of_order = checker.first_out_of_order.map(|i| at(tally, i));
        }
    }
    losses
}

impl FanoutResult {
    fn checks(&self, total: u64) -> Vec<String> {
        let mut failed = Vec::new();
        let seq = |s: &Option<DeviceSeq>| {
            s.as_ref().map_or(String::new(), |s| {
                format!(" (first: {} {} seq {})", s.user, s.device, s.seq)
            })
        };
        let l = &self.losses;
        for (count, what, first) in [
            (l.missing, "missing", &l.first_missing),
            (l.duplicates, "repeated", &l.first_duplicate),
            (l.out_of_order, "out of log order", &l.first_out_of_order),
        ] {
            if count > 0 {
                failed.push(format!("{count} deliveries {what}{}", seq(first)));
            }
        }
        if l.out_of_range > 0 {
            failed.push(format!(
                "{} deliveries with a sequence beyond what was sent",
                l.out_of_range
            ));
        }
        if self.accepted < total {
            failed.push(format!(
                "{} of {total} messages not accepted by the gateway",
                total - self.accepted
            ));
        }
        if !self.errors.is_empty() {
            failed.push(format!("errors: {}", describe_errors(&self.errors)));
        }
        failed
    }
}

impl Outcome for FanoutResult {
    fn print(&self) {
        println!(
            "fanout: {} users × {} devices ({} on the JSON bridge), {} messages each via {:?}",
            thousands(self.users as f64),
            self.devices_per_user,
            self.ws_devices_per_user,
            thousands(self.messages_per_user as f64),
            self.via
        );
        let mut table = Table::default();
        table.row([
            "devices".to_owned(),
            format!("{} connected", thousands(self.devices_connected as f64)),
            format!("{} failed", self.devices_failed),
            format!("in {:.1} s", self.connect_seconds),
        ]);
        table.rate_row(
            "accepted",
            thousands(self.accepted as f64),
            self.send_seconds,
            self.send_rate,
            "msg/s",
        );
        let delivered = format!(
            "{} of {}",
            thousands(self.delivered as f64),
            thousands(self.expected_deliveries as f64)
        );
        table.rate_row(
            "delivered",
            delivered,
            self.delivery_seconds,
            self.delivery_rate,
            "deliveries/s",
        );
        table.row(self.latency_us.cells("latency µs"));
        let l = &self.losses;
        table.row([
            "losses".to_owned(),
            format!("missing {}", l.missing),
            format!("duplicates {}", l.duplicates),
            format!("out-of-order {}", l.out_of_order),
            format!("foreign {}", l.foreign),
        ]);
        print!("{}", table.render());
        print_verdict(&self.failed_checks);
    }

    fn passed(&self) -> bool {
        self.failed_checks.is_empty()
    }

    fn plot(&self) -> Option<crate::plot::PlotData<'_>> {
        Some(crate::plot::PlotData {
            title: "fanout: delivery latency",
            latency: &self.latency,
            rate_series: "delivered",
            timeline: &self.timeline,
        })
    }
}
