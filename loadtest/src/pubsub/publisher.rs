//! The publishing side of a `pubsub` run: each publisher's sending loop, paced or at full
//! speed, and how far its messages got (written, or acknowledged at QoS 1).

use super::ClientErrors;
use crate::batch_publisher::{BatchPublisher, PublisherEvents};
use crate::pacer::Pacer;
use crate::payload::{now_ns, PayloadBuilder};
use crate::progress::Counter;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::time::{timeout_at, Instant};

/// How far one publisher's messages got: written (QoS 0) or acknowledged (QoS 1).
#[derive(Default)]
pub(super) struct Completion {
    pub(super) count: AtomicU64,
    pub(super) last_ns: AtomicU64,
}

impl Completion {
    fn complete(&self, publishes: u64) {
        self.count.fetch_add(publishes, Ordering::Relaxed);
        self.last_ns.store(now_ns(), Ordering::Relaxed);
    }
}

/// Counts a publisher's completed publishes and records its connection's failure.
pub(super) struct PublisherTally {
    pub(super) completion: Arc<Completion>,
    pub(super) errors: Arc<ClientErrors>,
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

/// One publisher's sending side.
pub(super) struct Sender {
    pub(super) client: BatchPublisher,
    pub(super) builder: PayloadBuilder,
    pub(super) messages: u64,
    pub(super) rate: u64,
    pub(super) deadline: Instant,
    pub(super) sent: Arc<Counter>,
    pub(super) errors: Arc<ClientErrors>,
}

impl Sender {
    /// Publishes up to `messages` messages, paced when `rate` > 0, until `deadline`; returns how
    /// many were handed to the client. A paced sender writes after each burst, so messages leave
    /// at their time; at full speed they go out in full batches.
    pub(super) async fn send_all(mut self) -> u64 {
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
