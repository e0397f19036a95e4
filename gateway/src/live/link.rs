//! A link: the part of a connected client that other tasks hold — its outbox, its close
//! signal, and the flags the fan-out reads at delivery. The connection's own task holds the
//! receiving end of the outbox and writes what arrives to the socket.

use super::message::Published;
use super::outbox::{outbox, Outbox, OutboxSender, Refused};
use crate::auth::identity::Identity;
use crate::infra::time::unix_millis;
use protocol::envelope::DisconnectReason;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::Notify;

/// Names one link for as long as the process runs; never reused.
pub type LinkId = u64;

/// Gives out link ids.
#[derive(Debug)]
pub struct LinkIds(AtomicU64);

impl Default for LinkIds {
    fn default() -> Self {
        Self(AtomicU64::new(1))
    }
}

impl LinkIds {
    pub fn next(&self) -> LinkId {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// Quality of service of a publish or a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Qos {
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl Qos {
    /// The QoS of an MQTT QoS level; `None` for a level that does not exist.
    pub fn from_level(level: u8) -> Option<Self> {
        match level {
            0 => Some(Self::AtMostOnce),
            1 => Some(Self::AtLeastOnce),
            2 => Some(Self::ExactlyOnce),
            _ => None,
        }
    }

    pub fn level(self) -> u8 {
        self as u8
    }
}

/// One item in a link's outbox: a message, at the QoS and with what its subscriptions asked.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: Arc<Published>,
    pub qos: Qos,
    /// The retain flag it goes out with: set for a retained message sent at subscribe time,
    /// and for a live one only under Retain As Published.
    pub retain: bool,
    /// The MQTT 5 Subscription Identifiers of the link's subscriptions that matched.
    pub subscription_ids: SubscriptionIds,
}

/// The MQTT 5 Subscription Identifiers a delivery carries: none for nearly every delivery, so
/// they take a pointer in it (an outbox holds many deliveries per connection).
// A box of a Vec is one pointer where a boxed slice is two: the extra allocation is paid only by
// the rare delivery that has identifiers, the smaller slot by every delivery.
#[allow(clippy::box_collection)]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriptionIds(Option<Box<Vec<u32>>>);

impl SubscriptionIds {
    pub fn as_slice(&self) -> &[u32] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }
}

impl From<Vec<u32>> for SubscriptionIds {
    fn from(ids: Vec<u32>) -> Self {
        Self((!ids.is_empty()).then(|| Box::new(ids)))
    }
}

impl FromIterator<u32> for SubscriptionIds {
    fn from_iter<I: IntoIterator<Item = u32>>(ids: I) -> Self {
        Vec::from_iter(ids).into()
    }
}

impl Delivery {
    /// A delivery of what the gateway itself publishes (replies, presence, sync pages).
    pub fn of(message: Arc<Published>, qos: Qos) -> Self {
        Self {
            message,
            qos,
            retain: false,
            subscription_ids: SubscriptionIds::default(),
        }
    }
}

/// What became of one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    Queued,
    /// The outbox was full (see [`Link::deliver`]).
    Dropped,
    /// The outbox was full, and the entry of the user's log is left for the connection to read
    /// from the log when it has caught up (see [`Link::follow_log`]).
    Deferred,
    /// The connection has ended.
    Gone,
}

/// Why the server closes a link, with the text a device can show its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    pub kind: DisconnectReason,
    pub message: String,
    /// The client came back on another node, which holds its session now: this node must not
    /// write the session back.
    pub moved_elsewhere: bool,
}

impl CloseReason {
    pub fn new(kind: DisconnectReason, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            moved_elsewhere: false,
        }
    }

    /// The server is shutting down.
    pub fn shutdown() -> Self {
        Self::new(DisconnectReason::Shutdown, "server shutting down")
    }
}

pub struct Link {
    pub id: LinkId,
    pub identity: Identity,
    outbox: OutboxSender,
    close_reason: OnceLock<CloseReason>,
    close_signal: Notify,
    approved: AtomicBool,
    /// The connection reads what it missed of its user's log from the store (see
    /// [`Link::follow_log`]).
    follows_log: AtomicBool,
    /// The highest entry of the log deferred since the connection last looked (0: none).
    missed: AtomicU64,
    /// A full outbox drops what does not fit rather than close the link (a parked session's:
    /// its queue drops the oldest anyway).
    drops_when_full: AtomicBool,
    last_seen_ms: AtomicU64,
}

impl Link {
    pub fn new(
        id: LinkId,
        identity: Identity,
        outbox_capacity: usize,
        approved: bool,
    ) -> (Arc<Self>, Outbox) {
        let (outbox, inbox) = outbox(outbox_capacity);
        let handle = Arc::new(Self {
            id,
            identity,
            outbox,
            close_reason: OnceLock::new(),
            close_signal: Notify::new(),
            approved: AtomicBool::new(approved),
            follows_log: AtomicBool::new(false),
            missed: AtomicU64::new(0),
            drops_when_full: AtomicBool::new(false),
            last_seen_ms: AtomicU64::new(unix_millis()),
        });
        (handle, inbox)
    }

    /// Queues a delivery; memory per link stays bounded by the outbox capacity. When the
    /// outbox is full, a QoS 0 message is dropped (at-most-once allows it). An entry of the
    /// user's log is deferred when the connection follows its log: it reads what it missed from
    /// the store once it has caught up, so a device that falls behind is never cut off from its
    /// messages. Any other QoS 1 or 2 message closes the link as too slow: it must not be
    /// dropped silently.
    pub fn deliver(&self, delivery: Delivery) -> Delivered {
        let qos = delivery.qos;
        let seq = delivery.message.seq;
        match self.outbox.try_send(delivery) {
            Ok(()) => Delivered::Queued,
            Err(Refused::Closed) => Delivered::Gone,
            Err(Refused::Full) => match seq {
                Some(seq) if self.follows_log() => {
                    self.missed.fetch_max(seq, Ordering::AcqRel);
                    Delivered::Deferred
                }
                _ if qos == Qos::AtMostOnce || self.drops_when_full.load(Ordering::Relaxed) => {
                    Delivered::Dropped
                }
                _ => {
                    self.close(CloseReason::new(
                        DisconnectReason::SlowConsumer,
                        "too many undelivered messages",
                    ));
                    Delivered::Dropped
                }
            },
        }
    }

    /// Queues a delivery, waiting for room in the outbox: for catch-up pages, which must not be
    /// dropped and may be many. Returns false when the link is gone.
    pub async fn deliver_waiting(&self, delivery: Delivery) -> bool {
        self.outbox.send(delivery).await
    }

    /// Resolves once the connection let go of its outbox: it ended, and its last writes (its
    /// cursor, its session) are done.
    pub async fn ended(&self) {
        self.outbox.closed().await;
    }

    /// Asks the connection to close. It first writes what is already in its outbox, so a
    /// notice queued before the close (a kick's reason on the presence topic) still arrives.
    pub fn close(&self, reason: CloseReason) {
        if self.close_reason.set(reason).is_ok() {
            self.close_signal.notify_one();
        }
    }

    /// Resolves once [`close`](Self::close) was called, with its reason.
    pub async fn closed(&self) -> CloseReason {
        loop {
            if let Some(reason) = self.close_reason.get() {
                return reason.clone();
            }
            self.close_signal.notified().await;
        }
    }

    /// From now on the connection reads its user's log from the store where it missed entries
    /// (see [`Delivered::Deferred`]).
    pub fn follow_log(&self) {
        self.follows_log.store(true, Ordering::Release);
    }

    pub fn follows_log(&self) -> bool {
        self.follows_log.load(Ordering::Acquire)
    }

    /// From now on a full outbox drops what does not fit, whatever its QoS.
    pub fn drop_when_full(&self) {
        self.drops_when_full.store(true, Ordering::Relaxed);
    }

    /// The highest entry of the log deferred since the last call, if any: the connection reads
    /// up to there from the store.
    pub fn take_missed(&self) -> Option<u64> {
        match self.missed.swap(0, Ordering::AcqRel) {
            0 => None,
            seq => Some(seq),
        }
    }

    pub fn is_approved(&self) -> bool {
        self.approved.load(Ordering::Acquire)
    }

    pub fn approve(&self) {
        self.approved.store(true, Ordering::Release);
    }

    pub fn touch(&self) {
        self.last_seen_ms.store(unix_millis(), Ordering::Relaxed);
    }

    pub fn last_seen_ms(&self) -> u64 {
        self.last_seen_ms.load(Ordering::Relaxed)
    }
}
