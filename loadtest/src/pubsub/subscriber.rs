//! The receiving side of a `pubsub` run: each subscriber's client and what it saw (every
//! message checked against its publisher's sequence, its latency taken), merged at the end into
//! the run's latency and losses.

use super::{max_packet, ClientErrors, Shared, INFLIGHT, KEEP_ALIVE};
use crate::payload::{now_ns, Wire};
use crate::progress::Counter;
use crate::report::latency_histogram;
use crate::seq::{Arrival, SeqChecker};
use crate::stop::stopped;
use crate::target::Credentials;
use anyhow::Result;
use hdrhistogram::Histogram;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, NetworkOptions, Packet, QoS, SubscribeReasonCode,
};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// Requests a subscriber may queue (its subscribe, its acknowledgements) before they wait.
const REQUEST_CAPACITY: usize = 10_000;

/// Tells when a subscriber is subscribed, or why not.
pub(super) type Ready = oneshot::Receiver<Result<(), String>>;

/// What one subscriber saw.
pub(super) struct Inbox {
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
    /// A subscriber's inbox for the publishers that have a checker here (indexed by publisher).
    pub(super) fn new(
        wire: Wire,
        run: String,
        checkers: Vec<Option<SeqChecker>>,
        delivered: Arc<Counter>,
    ) -> Self {
        Self {
            wire,
            run,
            checkers,
            latency: latency_histogram(),
            first_ns: None,
            last_ns: None,
            foreign: 0,
            undecodable: 0,
            misrouted: 0,
            delivered,
        }
    }

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

/// Connects a subscriber and subscribes it to `topic`; its task collects into `inbox` until
/// the run stops and then hands it back.
pub(super) async fn start_subscriber(
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

pub(super) fn mqtt_options(addr: SocketAddr, credentials: Credentials, size: usize) -> MqttOptions {
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

/// All subscribers' observations together.
pub(super) struct Tally {
    pub(super) latency: Histogram<u64>,
    pub(super) losses: Losses,
    /// Earliest first and latest last delivery, ns since the Unix epoch.
    pub(super) first_ns: u64,
    pub(super) last_ns: u64,
}

/// Merges what the subscribers saw, given how many messages each publisher sent.
pub(super) fn tally(inboxes: &[Inbox], published: &[u64]) -> Result<Tally> {
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
