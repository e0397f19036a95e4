//! A link: the part of a connected client that other tasks hold — its outbox, its close
//! signal, and the flags the fan-out reads at delivery. The connection's own task holds the
//! receiving end of the outbox and writes what arrives to the socket.

use crate::auth::identity::Identity;
use crate::infra::time::unix_millis;
use bytes::Bytes;
use protocol::envelope::DisconnectReason;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::{mpsc, Notify};

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

/// Quality of service of a delivery. The gateway delivers at most at QoS 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Qos {
    AtMostOnce,
    AtLeastOnce,
}

/// A message as the fan-out hands it to links; shared by all receivers.
#[derive(Debug)]
pub struct Published {
    pub topic: String,
    pub payload: Bytes,
}

/// One item in a link's outbox.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: Arc<Published>,
    pub qos: Qos,
}

/// What became of one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    Queued,
    /// The outbox was full (see [`Link::deliver`]).
    Dropped,
    /// The connection has ended.
    Gone,
}

/// Why the server closes a link, with the text a device can show its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    pub kind: DisconnectReason,
    pub message: String,
}

impl CloseReason {
    pub fn new(kind: DisconnectReason, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

pub struct Link {
    pub id: LinkId,
    pub identity: Identity,
    outbox: mpsc::Sender<Delivery>,
    close_reason: OnceLock<CloseReason>,
    close_signal: Notify,
    approved: AtomicBool,
    last_seen_ms: AtomicU64,
}

impl Link {
    pub fn new(
        id: LinkId,
        identity: Identity,
        outbox_capacity: usize,
        approved: bool,
    ) -> (Arc<Self>, mpsc::Receiver<Delivery>) {
        let (outbox, inbox) = mpsc::channel(outbox_capacity);
        let handle = Arc::new(Self {
            id,
            identity,
            outbox,
            close_reason: OnceLock::new(),
            close_signal: Notify::new(),
            approved: AtomicBool::new(approved),
            last_seen_ms: AtomicU64::new(unix_millis()),
        });
        (handle, inbox)
    }

    /// Queues a delivery; memory per link stays bounded by the outbox capacity. When the
    /// outbox is full, a QoS 0 message is dropped (at-most-once allows it) and a QoS 1 message
    /// closes the link as too slow: it must not be dropped silently, and the device catches
    /// up on its next sync.
    pub fn deliver(&self, delivery: Delivery) -> Delivered {
        let qos = delivery.qos;
        match self.outbox.try_send(delivery) {
            Ok(()) => Delivered::Queued,
            Err(mpsc::error::TrySendError::Full(_)) if qos == Qos::AtMostOnce => Delivered::Dropped,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close(CloseReason::new(
                    DisconnectReason::SlowConsumer,
                    "too many undelivered messages",
                ));
                Delivered::Dropped
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Delivered::Gone,
        }
    }

    /// Queues a delivery, waiting for room in the outbox: for catch-up pages, which must not be
    /// dropped and may be many. Returns false when the link is gone.
    pub async fn deliver_waiting(&self, delivery: Delivery) -> bool {
        self.outbox.send(delivery).await.is_ok()
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
