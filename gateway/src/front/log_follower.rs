//! A device following its own user's log over its inbox and notification subscriptions: the
//! live path while it keeps up, the store where it does not.
//!
//! Entries of the log reach a subscribed link live, through the hub. A connection that starts
//! from a cursor (a persistent MQTT session coming back, a JSON client resuming), or whose outbox
//! overflowed (see [`Link::follow_log`](crate::live::link::Link::follow_log)), reads what it
//! missed from the store instead, a page at a time as its socket drains, and goes back to the
//! live path once a read finds nothing new. While it reads, live entries are set aside (the
//! store has them), and the highest one seen tells when reading is done: the live path is
//! joined only when the last read covered everything that went by. So a device gets every entry
//! in order, once, with memory bounded by a page and the outbox, however far behind it is.
//!
//! For a persistent MQTT session, the entries the client acknowledges move the device's cursor
//! (the one `.../sync` and `.../ack` use), so the next connection starts where this one left off.

use crate::live::hub::SubscriptionOptions;
use crate::live::link::{Delivery, Qos};
use crate::live::message::Published;
use crate::log::sync::sync_start;
use crate::store::{DevicePosition, EntryKind, LogHead, LogPage, SharedStore, StoreError};
use protocol::envelope::{HistoryReset, Reply, SyncPage, SyncRequest};
use protocol::topics;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// Where following the log begins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// From now on: the entries appended after the log's head is read. The front holds its
    /// answer to the subscription until then, so a client that has the answer misses nothing
    /// appended after it.
    Now,
    /// From the device's cursor, no earlier than `floor` (where its session began following the
    /// log) in the log of `epoch`; a device with neither gets the latest entries, as a first
    /// sync does.
    Cursor {
        floor: Option<u64>,
        epoch: Option<String>,
    },
}

/// What the follower asks the store for next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    Start(Start),
    Page { after: u64 },
}

/// What a [`Read`] found.
#[derive(Debug)]
pub enum Readout {
    /// Where to start: after this sequence, with the history the device lost, if any.
    Started {
        head: LogHead,
        after: u64,
        reset: Option<HistoryReset>,
    },
    Page(LogPage),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// No subscription to the log.
    Idle,
    /// Waiting to learn where to start.
    Starting,
    /// Reading from the store.
    Catching,
    /// Taking entries as they come, live.
    Live,
}

pub struct LogFollower {
    user: String,
    device: String,
    /// The inbox and notification subscriptions, with their options.
    inbox: Option<SubscriptionOptions>,
    notify: Option<SubscriptionOptions>,
    mode: Mode,
    pending_start: Option<Start>,
    /// Whether a read is on its way.
    reading: bool,
    /// Every entry up to here was handed out or skipped.
    delivered_to: u64,
    /// The highest live entry set aside while reading.
    highest_set_aside: u64,
    /// The log's epoch, once known (a persistent session keeps it).
    epoch: Option<String>,
    /// Where following began (a persistent session keeps it).
    floor: Option<u64>,
    /// Moves the device's cursor as entries are acknowledged (persistent MQTT sessions).
    cursor: Option<Cursor>,
}

/// The device's cursor as its acknowledgements move it.
#[derive(Debug, Default)]
struct Cursor {
    /// Entries sent at QoS 1 or 2 and not yet acknowledged.
    unacknowledged: BTreeSet<u64>,
    /// The highest entry sent.
    sent_to: u64,
    /// The cursor as last stored (or being stored).
    stored: u64,
}

impl LogFollower {
    /// A follower for `device` of `user`; `moves_cursor` for a persistent MQTT session.
    pub fn new(user: &str, device: &str, moves_cursor: bool) -> Self {
        Self {
            user: user.to_string(),
            device: device.to_string(),
            inbox: None,
            notify: None,
            mode: Mode::Idle,
            pending_start: None,
            reading: false,
            delivered_to: 0,
            highest_set_aside: 0,
            epoch: None,
            floor: None,
            cursor: moves_cursor.then(Cursor::default),
        }
    }

    /// Which of the user's logged topics `topic` is, when it is one of this follower's user.
    pub fn kind_of(&self, topic: &str) -> Option<EntryKind> {
        if topic == topics::inbox(&self.user) {
            Some(EntryKind::Message)
        } else if topic == topics::notify(&self.user) {
            Some(EntryKind::Notification)
        } else {
            None
        }
    }

    /// A subscription to the logged topic of `kind` was made (or changed its options). The
    /// first one starts following the log from `start`.
    pub fn subscribed(&mut self, kind: EntryKind, options: SubscriptionOptions, start: Start) {
        match kind {
            EntryKind::Message => self.inbox = Some(options),
            EntryKind::Notification => self.notify = Some(options),
        }
        if self.mode == Mode::Idle {
            self.mode = Mode::Starting;
            self.pending_start = Some(start);
        }
    }

    pub fn unsubscribed(&mut self, kind: EntryKind) {
        match kind {
            EntryKind::Message => self.inbox = None,
            EntryKind::Notification => self.notify = None,
        }
        if self.inbox.is_none() && self.notify.is_none() {
            self.mode = Mode::Idle;
            self.pending_start = None;
        }
    }

    /// Whether it still waits to learn where it starts.
    pub fn is_starting(&self) -> bool {
        self.mode == Mode::Starting
    }

    /// The log's epoch as last read, for a persistent session to keep.
    pub fn epoch(&self) -> Option<&str> {
        self.epoch.as_deref()
    }

    /// Where following the log began, once known: a persistent session starts no earlier
    /// when it comes back.
    pub fn floor(&self) -> Option<u64> {
        self.floor
    }

    /// Whether a live delivery goes out: anything not from the log does; an entry does when
    /// following live and it is new. While reading from the store, entries are set aside.
    pub fn admit(&mut self, delivery: &Delivery) -> bool {
        let Some(seq) = delivery.message.seq else {
            return true;
        };
        match self.mode {
            Mode::Idle => true,
            Mode::Starting | Mode::Catching => {
                self.highest_set_aside = self.highest_set_aside.max(seq);
                false
            }
            Mode::Live if seq <= self.delivered_to => false,
            Mode::Live => {
                self.delivered_to = seq;
                true
            }
        }
    }

    /// The live path dropped entries because the connection's outbox was full: read them.
    pub fn fell_behind(&mut self, highest_missed: u64) {
        if self.mode == Mode::Live {
            self.mode = Mode::Catching;
        }
        self.highest_set_aside = self.highest_set_aside.max(highest_missed);
    }

    /// The next read to make, when one is due and none is on its way. The caller makes it (see
    /// [`perform`]) once what the last one gave has gone out, and hands the result to
    /// [`take`](Self::take).
    pub fn next_read(&mut self) -> Option<Read> {
        if self.reading {
            return None;
        }
        let read = match self.mode {
            Mode::Starting => Read::Start(self.pending_start.take()?),
            Mode::Catching => Read::Page {
                after: self.delivered_to,
            },
            Mode::Idle | Mode::Live => return None,
        };
        self.reading = true;
        Some(read)
    }

    /// Takes what a read found; returns the entries to deliver, in order, and the history the
    /// device lost, if any (for its reply topic).
    pub fn take(&mut self, readout: Readout) -> (Vec<Delivery>, Option<HistoryReset>) {
        self.reading = false;
        match (self.mode, readout) {
            (Mode::Starting, Readout::Started { head, after, reset }) => {
                self.epoch = Some(head.epoch);
                self.floor = Some(after);
                self.delivered_to = after;
                // From the log's end with nothing set aside since: live at once, no read.
                let at_end = after >= head.last_seq && self.highest_set_aside <= after;
                self.mode = if at_end { Mode::Live } else { Mode::Catching };
                if let Some(cursor) = &mut self.cursor {
                    cursor.sent_to = after;
                    cursor.stored = cursor.stored.max(after);
                }
                (Vec::new(), reset)
            }
            (Mode::Catching, Readout::Page(page)) => {
                let deliveries = self.deliveries(&page);
                // At the log's end as the read began, with nothing set aside beyond it: live.
                // What was appended since reaches the link live, or was set aside.
                self.delivered_to = self.delivered_to.max(page.covered_to);
                if page.reached_end && self.highest_set_aside <= self.delivered_to {
                    self.mode = Mode::Live;
                }
                (deliveries, None)
            }
            // Unsubscribed (or resubscribed) while the read was on its way: it no longer
            // applies.
            _ => (Vec::new(), None),
        }
    }

    /// The page's entries that go to this device: those of a subscribed kind, not sent by
    /// this device itself (it has them). Each goes out as it was stored, as the live path sent it.
    fn deliveries(&self, page: &LogPage) -> Vec<Delivery> {
        let (inbox, notify) = (topics::inbox(&self.user), topics::notify(&self.user));
        page.entries
            .iter()
            .filter(|e| e.seq > self.delivered_to)
            .filter(|e| {
                !(e.from.as_deref() == Some(&self.user)
                    && e.from_device.as_deref() == Some(&self.device))
            })
            .filter_map(|entry| {
                let (options, topic) = match entry.kind {
                    EntryKind::Message => (self.inbox?, &inbox),
                    EntryKind::Notification => (self.notify?, &notify),
                };
                let published = Published {
                    seq: Some(entry.seq),
                    ..Published::new(topic.clone(), entry.payload.clone())
                };
                Some(Delivery {
                    message: Arc::new(published),
                    qos: options.qos,
                    retain: false,
                    subscription_ids: options.id.into_iter().collect(),
                })
            })
            .collect()
    }

    /// What a device that knows nothing of sync is told, on its reply topic, of history it
    /// lost: a sync page with the reset and no messages (they follow on the topics).
    pub fn reset_reply(&self, reset: HistoryReset) -> Reply {
        Reply::Sync(SyncPage {
            epoch: self.epoch.clone().unwrap_or_default(),
            messages: Vec::new(),
            notifications: Vec::new(),
            to_seq: reset.available_from.saturating_sub(1),
            more: true,
            reset: Some(reset),
        })
    }

    /// An entry went out to the client at `qos`.
    pub fn sent(&mut self, seq: u64, qos: Qos) {
        if let Some(cursor) = &mut self.cursor {
            cursor.sent_to = cursor.sent_to.max(seq);
            if qos != Qos::AtMostOnce {
                cursor.unacknowledged.insert(seq);
            }
        }
    }

    /// The client acknowledged the entry `seq`.
    pub fn acknowledged(&mut self, seq: u64) {
        if let Some(cursor) = &mut self.cursor {
            cursor.unacknowledged.remove(&seq);
        }
    }

    /// The place to move the device's cursor to, when it moved: every entry up to it was
    /// acknowledged (or sent at QoS 0). The caller stores it.
    pub fn cursor_to_store(&mut self) -> Option<u64> {
        let cursor = self.cursor.as_mut()?;
        let held = match cursor.unacknowledged.first() {
            Some(&oldest) => oldest - 1,
            None => cursor.sent_to,
        };
        (held > cursor.stored).then(|| {
            cursor.stored = held;
            held
        })
    }
}

/// Makes a read for `user`'s `device`, retrying while the store is away (a follower waits
/// rather than skip entries). A page holds up to `page_size` entries.
pub async fn perform(
    store: SharedStore,
    user: String,
    device: String,
    read: Read,
    page_size: usize,
    new_device_history: u64,
) -> Readout {
    let mut delay = Duration::from_millis(200);
    loop {
        let result = match &read {
            Read::Start(start) => {
                starting_point(&store, &user, &device, start, new_device_history).await
            }
            Read::Page { after } => store
                .read(&user, *after, page_size)
                .await
                .map(Readout::Page),
        };
        match result {
            Ok(readout) => return readout,
            Err(e) => {
                tracing::warn!(%user, %device, "reading the log to catch up failed, retrying: {e}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn starting_point(
    store: &SharedStore,
    user: &str,
    device: &str,
    start: &Start,
    new_device_history: u64,
) -> Result<Readout, StoreError> {
    match start {
        Start::Now => {
            let head = store.head(user).await?;
            Ok(Readout::Started {
                after: head.last_seq,
                head,
                reset: None,
            })
        }
        Start::Cursor { floor, epoch } => {
            let DevicePosition { head, cursor } = store.position(user, device).await?;
            // A session that began before the log existed knew no epoch (""): any is its log.
            let same_epoch = epoch
                .as_deref()
                .is_none_or(|e| e.is_empty() || e == head.epoch);
            let from = match (cursor, floor.filter(|_| same_epoch)) {
                (Some(cursor), Some(floor)) => Some(cursor.max(floor)),
                (cursor, floor) => cursor.or(floor),
            };
            let request = SyncRequest {
                after: from,
                epoch: epoch.clone().filter(|_| !same_epoch),
            };
            let start = sync_start(&head, &request, None, new_device_history);
            if start.new_device {
                store.ack(user, device, start.after).await?;
            }
            Ok(Readout::Started {
                after: start.after,
                head,
                reset: start.reset,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LogEntry;

    fn entry(seq: u64, from_device: Option<&str>, kind: EntryKind) -> LogEntry {
        LogEntry {
            seq,
            kind,
            from: Some("alice".into()),
            from_device: from_device.map(str::to_string),
            to: "alice".into(),
            payload: format!(r#"{{"seq":{seq},"ts":0,"id":"m{seq}","to":"alice","body":1}}"#)
                .into(),
        }
    }

    /// A page of the entries `seqs`; `reached_end` when the log ended with them as it was read.
    fn page(seqs: std::ops::RangeInclusive<u64>, reached_end: bool) -> LogPage {
        LogPage {
            covered_to: *seqs.end(),
            entries: seqs
                .map(|seq| entry(seq, None, EntryKind::Message))
                .collect(),
            reached_end,
        }
    }

    fn live(seq: u64) -> Delivery {
        let published = Published {
            seq: Some(seq),
            ..Published::new("u/alice/inbox", "x".into())
        };
        Delivery::of(Arc::new(published), Qos::AtLeastOnce)
    }

    /// The follower learned it starts after `after`, in a log whose last entry is `last_seq`.
    fn started(follower: &mut LogFollower, after: u64, last_seq: u64) {
        let head = LogHead {
            epoch: "e".into(),
            first_seq: 1,
            last_seq,
        };
        let read = follower.next_read().unwrap();
        assert!(matches!(read, Read::Start(_)));
        follower.take(Readout::Started {
            head,
            after,
            reset: None,
        });
    }

    fn seqs(deliveries: &[Delivery]) -> Vec<u64> {
        deliveries.iter().map(|d| d.message.seq.unwrap()).collect()
    }

    #[test]
    fn catches_up_in_pages_then_follows_live_without_losing_what_went_by() {
        let mut follower = LogFollower::new("alice", "phone", true);
        let options = SubscriptionOptions::at(Qos::AtLeastOnce);
        let start = Start::Cursor {
            floor: None,
            epoch: None,
        };
        follower.subscribed(EntryKind::Message, options, start);
        started(&mut follower, 10, 14);
        // Entry 15 arrives live while the follower reads: set aside.
        assert!(!follower.admit(&live(15)));
        assert_eq!(follower.next_read(), Some(Read::Page { after: 10 }));
        assert_eq!(follower.next_read(), None, "one read at a time");
        let (out, _) = follower.take(Readout::Page(page(11..=13, false)));
        assert_eq!(seqs(&out), [11, 12, 13]);
        assert_eq!(follower.next_read(), Some(Read::Page { after: 13 }));
        // The log's end as this read began, but 15 went by since: read again.
        let (out, _) = follower.take(Readout::Page(page(14..=14, true)));
        assert_eq!(seqs(&out), [14]);
        assert_eq!(follower.next_read(), Some(Read::Page { after: 14 }));
        let (out, _) = follower.take(Readout::Page(page(15..=15, true)));
        assert_eq!(seqs(&out), [15]);
        assert_eq!(
            follower.next_read(),
            None,
            "caught up: live, no read that finds nothing"
        );
        assert!(!follower.admit(&live(15)), "already delivered");
        assert!(follower.admit(&live(16)));
        // The outbox overflowed past 18: back to the store from 16.
        follower.fell_behind(18);
        assert_eq!(follower.next_read(), Some(Read::Page { after: 16 }));
    }

    #[test]
    fn the_cursor_moves_over_acknowledged_entries_only() {
        let mut follower = LogFollower::new("alice", "phone", true);
        let options = SubscriptionOptions::at(Qos::AtLeastOnce);
        follower.subscribed(EntryKind::Message, options, Start::Now);
        started(&mut follower, 4, 4);
        assert_eq!(
            follower.next_read(),
            None,
            "at the log's end: live, no read"
        );
        assert_eq!(follower.cursor_to_store(), None);
        for seq in [5, 6, 7] {
            follower.sent(seq, Qos::AtLeastOnce);
        }
        follower.acknowledged(6);
        assert_eq!(follower.cursor_to_store(), None, "5 is not acknowledged");
        follower.acknowledged(5);
        assert_eq!(follower.cursor_to_store(), Some(6));
        follower.acknowledged(7);
        assert_eq!(follower.cursor_to_store(), Some(7));
        assert_eq!(follower.cursor_to_store(), None);
    }

    #[test]
    fn skips_what_the_device_sent_itself_and_kinds_it_does_not_follow() {
        let mut follower = LogFollower::new("alice", "phone", false);
        let options = SubscriptionOptions::at(Qos::ExactlyOnce);
        follower.subscribed(EntryKind::Message, options, Start::Now);
        started(&mut follower, 0, 5);
        let mut page = page(1..=2, true);
        page.entries.extend([
            entry(3, Some("phone"), EntryKind::Message),
            entry(4, None, EntryKind::Notification),
            entry(5, Some("laptop"), EntryKind::Message),
        ]);
        page.covered_to = 5;
        follower.next_read();
        let (out, _) = follower.take(Readout::Page(page));
        assert_eq!(seqs(&out), [1, 2, 5]);
        assert!(out.iter().all(|d| d.qos == Qos::ExactlyOnce));
    }
}
