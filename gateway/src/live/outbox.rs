//! A link's outbox: the bounded queue of deliveries between the hub (many senders' threads) and
//! the one connection task that writes them to the client.
//!
//! Its own queue rather than a tokio channel because of what an idle connection costs: a tokio
//! channel allocates its first block of 32 slots and its cache-padded state up front, 1.3 KB per
//! connection whether anything is ever delivered or not, where most connections are idle most of
//! the time. This queue holds nothing until a delivery comes and gives its room back once
//! emptied after a burst. One lock per delivery, held for a push or a pop, with one consumer.

use super::link::Delivery;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// Room kept after the outbox empties: a burst's larger buffer is given back.
const KEPT_ROOM: usize = 16;

struct Shared {
    state: Mutex<State>,
    capacity: usize,
    /// Wakes the connection: a delivery came, or the link is gone.
    arrived: Notify,
    /// Wakes senders waiting for room: a delivery was taken, or the connection let go.
    taken: Notify,
    /// Wakes those waiting for the connection to let go.
    left: Notify,
}

struct State {
    queue: VecDeque<Delivery>,
    /// The link (the sending side) still exists.
    link_alive: bool,
    /// The connection (the receiving side) still takes deliveries.
    open: bool,
    /// Senders waiting for room: only then does taking a delivery wake anyone.
    waiting: usize,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held left a queue that is still whole: go on with it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A sender counted as waiting for room, until it stops waiting (also when its wait is dropped).
struct Waiting<'a>(&'a Shared);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.state().waiting -= 1;
    }
}

/// Why a delivery was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The outbox holds `capacity` deliveries.
    Full,
    /// The connection let go of its outbox.
    Closed,
}

/// The sending side, held by the link.
pub struct OutboxSender {
    shared: Arc<Shared>,
}

/// The receiving side, held by the connection (or by a parked session emptying it).
pub struct Outbox {
    shared: Arc<Shared>,
}

/// A new outbox of at most `capacity` deliveries.
pub fn outbox(capacity: usize) -> (OutboxSender, Outbox) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            link_alive: true,
            open: true,
            waiting: 0,
        }),
        capacity: capacity.max(1),
        arrived: Notify::new(),
        taken: Notify::new(),
        left: Notify::new(),
    });
    (
        OutboxSender {
            shared: shared.clone(),
        },
        Outbox { shared },
    )
}

impl OutboxSender {
    /// Queues a delivery if there is room.
    pub fn try_send(&self, delivery: Delivery) -> Result<(), Refused> {
        {
            let mut state = self.shared.state();
            if !state.open {
                return Err(Refused::Closed);
            }
            if state.queue.len() >= self.shared.capacity {
                return Err(Refused::Full);
            }
            state.queue.push_back(delivery);
        }
        self.shared.arrived.notify_one();
        Ok(())
    }

    /// Queues a delivery, waiting for room. False when the connection let go of its outbox.
    pub async fn send(&self, delivery: Delivery) -> bool {
        loop {
            let taken = self.shared.taken.notified();
            tokio::pin!(taken);
            // Registered before looking, so a delivery taken right after is not missed.
            taken.as_mut().enable();
            {
                let mut state = self.shared.state();
                if !state.open {
                    return false;
                }
                if state.queue.len() < self.shared.capacity {
                    state.queue.push_back(delivery);
                    drop(state);
                    self.shared.arrived.notify_one();
                    return true;
                }
                state.waiting += 1;
            }
            let _counted = Waiting(&self.shared);
            taken.await;
        }
    }

    /// Resolves once the connection let go of its outbox.
    pub async fn closed(&self) {
        let left = self.shared.left.notified();
        tokio::pin!(left);
        left.as_mut().enable();
        if self.shared.state().open {
            left.await;
        }
    }
}

impl Drop for OutboxSender {
    fn drop(&mut self) {
        self.shared.state().link_alive = false;
        self.shared.arrived.notify_one();
    }
}

impl Outbox {
    /// The next delivery, waiting for one; `None` once the link is gone and all was taken.
    /// Cancel-safe: a delivery is taken only when this returns it.
    pub async fn recv(&mut self) -> Option<Delivery> {
        loop {
            {
                let mut state = self.shared.state();
                if let Some(delivery) = self.take(&mut state) {
                    return Some(delivery);
                }
                if !state.link_alive {
                    return None;
                }
            }
            // A delivery queued between the look above and here left a permit: no wake-up lost.
            self.shared.arrived.notified().await;
        }
    }

    /// The next delivery if one is queued.
    pub fn try_recv(&mut self) -> Option<Delivery> {
        let mut state = self.shared.state();
        self.take(&mut state)
    }

    fn take(&self, state: &mut State) -> Option<Delivery> {
        let delivery = state.queue.pop_front()?;
        if state.queue.is_empty() && state.queue.capacity() > KEPT_ROOM {
            state.queue = VecDeque::new();
        }
        if state.waiting > 0 {
            self.shared.taken.notify_waiters();
        }
        Some(delivery)
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let queue = {
            let mut state = self.shared.state();
            state.open = false;
            std::mem::take(&mut state.queue)
        };
        // Dropped outside the lock: a delivery's message may be the last reference to a large
        // payload.
        drop(queue);
        self.shared.taken.notify_waiters();
        self.shared.left.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::link::Delivery;
    use crate::live::message::Published;
    use std::time::Duration;

    fn delivery(seq: u64) -> Delivery {
        let mut message = Published::new("t", bytes::Bytes::new());
        message.seq = Some(seq);
        Delivery {
            message: Arc::new(message),
            qos: crate::live::link::Qos::AtLeastOnce,
            retain: false,
            subscription_ids: Default::default(),
        }
    }

    #[tokio::test]
    async fn deliveries_come_out_in_order_within_the_bound() {
        let (sender, mut outbox) = outbox(2);
        assert_eq!(sender.try_send(delivery(1)), Ok(()));
        assert_eq!(sender.try_send(delivery(2)), Ok(()));
        assert_eq!(sender.try_send(delivery(3)), Err(Refused::Full));
        assert_eq!(outbox.recv().await.unwrap().message.seq, Some(1));
        assert_eq!(outbox.try_recv().unwrap().message.seq, Some(2));
        assert!(outbox.try_recv().is_none());
    }

    #[tokio::test]
    async fn a_waiting_sender_gets_room_once_a_delivery_is_taken() {
        let (sender, mut outbox) = outbox(1);
        sender.try_send(delivery(1)).unwrap();
        let waiting = tokio::spawn(async move { sender.send(delivery(2)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        assert_eq!(outbox.recv().await.unwrap().message.seq, Some(1));
        assert!(waiting.await.unwrap());
        assert_eq!(outbox.recv().await.unwrap().message.seq, Some(2));
        // The sender is gone: nothing more will come.
        assert!(outbox.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_receiver_waits_for_what_comes_and_senders_see_it_leave() {
        let (sender, mut outbox) = outbox(4);
        let receiving = tokio::spawn(async move {
            let first = outbox.recv().await.map(|d| d.message.seq);
            drop(outbox);
            first
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        sender.try_send(delivery(7)).unwrap();
        assert_eq!(receiving.await.unwrap(), Some(Some(7)));
        sender.closed().await;
        assert_eq!(sender.try_send(delivery(8)), Err(Refused::Closed));
        assert!(!sender.send(delivery(9)).await);
    }
}
