//! The part of a client session that other tasks hold: its outbox, its close signal, and the
//! flags the fan-out reads at delivery.

use crate::acl::Identity;
use crate::metrics::DisconnectReason;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, Notify};

pub type SessionId = u64;

/// Quality of service of a delivery. The gateway delivers at most at QoS 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Qos {
    AtMostOnce,
    AtLeastOnce,
}

/// A message as the fan-out hands it to sessions; shared by all receivers.
#[derive(Debug)]
pub struct Published {
    pub topic: String,
    pub payload: Bytes,
}

/// One item in a session's outbox.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: Arc<Published>,
    pub qos: Qos,
}

/// What became of one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    Queued,
    /// The outbox was full (see [`SessionHandle::deliver`]).
    Dropped,
    /// The session has ended.
    Gone,
}

/// Why the server closes a session, with the text a device can show its user.
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

pub struct SessionHandle {
    pub id: SessionId,
    pub identity: Identity,
    outbox: mpsc::Sender<Delivery>,
    close_reason: OnceLock<CloseReason>,
    close_signal: Notify,
    approved: AtomicBool,
    last_seen_ms: AtomicU64,
}

impl SessionHandle {
    pub fn new(
        id: SessionId,
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

    /// Queues a delivery; memory per session stays bounded by the outbox capacity. When the
    /// outbox is full, a QoS 0 message is dropped (at-most-once allows it) and a QoS 1 message
    /// closes the session as too slow: it must not be dropped silently, and the device catches
    /// up on its next sync.
    pub fn deliver(&self, delivery: Delivery) -> Delivered {
        let qos = delivery.qos;
        match self.outbox.try_send(delivery) {
            Ok(()) => Delivered::Queued,
            Err(mpsc::error::TrySendError::Full(_)) if qos == Qos::AtMostOnce => Delivered::Dropped,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close(CloseReason::new(
                    DisconnectReason::slow_consumer,
                    "too many undelivered messages",
                ));
                Delivered::Dropped
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Delivered::Gone,
        }
    }

    /// Queues a delivery, waiting for room in the outbox: for catch-up pages, which must not be
    /// dropped and may be many. Returns false when the session is gone.
    pub async fn deliver_waiting(&self, delivery: Delivery) -> bool {
        self.outbox.send(delivery).await.is_ok()
    }

    /// Asks the session to close. The session first writes what is already in its outbox, so a
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

pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}
