//! Catching a device up: from its cursor (or the one it names) to the end of its user's log, in
//! pages, telling it when history it asked for is gone. The caller hands the pages to the
//! device (on its reply topic).

use crate::store::{DevicePosition, EntryKind, LogHead, SharedStore, StoreError};
use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use protocol::envelope::{HistoryLoss, HistoryReset, Reply, SyncPage, SyncRequest};
use std::future::Future;

/// Where a sync starts, decided from the log's head, the request and the stored cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncStart {
    /// Messages after this sequence are sent.
    pub after: u64,
    pub reset: Option<HistoryReset>,
    /// The device has no cursor yet: it gets the latest messages and a cursor.
    pub new_device: bool,
}

pub fn sync_start(
    head: &LogHead,
    request: &SyncRequest,
    stored_cursor: Option<u64>,
    new_device_history: u64,
) -> SyncStart {
    let from_start = head.first_seq - 1;
    let Some(cursor) = request.after.or(stored_cursor) else {
        return SyncStart {
            after: head
                .last_seq
                .saturating_sub(new_device_history)
                .max(from_start),
            reset: None,
            new_device: true,
        };
    };
    let reset = |reason| SyncStart {
        after: from_start,
        reset: Some(HistoryReset {
            reason,
            available_from: head.first_seq,
        }),
        new_device: false,
    };
    let epoch_differs = request
        .epoch
        .as_deref()
        .is_some_and(|epoch| !epoch.is_empty() && epoch != head.epoch);
    if epoch_differs || cursor > head.last_seq {
        // The device holds a log that no longer exists (or is ahead of this one): it was
        // recreated.
        reset(HistoryLoss::EpochChanged)
    } else if cursor < from_start {
        reset(HistoryLoss::Trimmed)
    } else {
        SyncStart {
            after: cursor,
            reset: None,
            new_device: false,
        }
    }
}

/// A sync whose starting place is decided (cursor read, a new device's cursor stored).
pub struct Catchup {
    head: LogHead,
    start: SyncStart,
}

/// Decides where the device's sync starts. A new device gets its cursor now, so a later sync
/// without `after` continues from the same place.
pub async fn begin(
    store: &SharedStore,
    config: &broker_config::Roaming,
    user: &str,
    device: &str,
    request: &SyncRequest,
) -> Result<Catchup, StoreError> {
    let DevicePosition { head, cursor } = store.position(user, device).await?;
    let start = sync_start(&head, request, cursor, config.new_device_history as u64);
    if start.new_device {
        store.ack(user, device, start.after).await?;
    }
    Ok(Catchup { head, start })
}

impl Catchup {
    /// Sends the log from the decided place to the head read at the start, page by page (each
    /// a serialized [`Reply::Sync`]), through `deliver`, which waits until the device can take
    /// the page, so a long catch-up never overflows its outbox, and answers false when the
    /// device is gone. Pages stop short of `page_max_bytes`.
    pub async fn send<F, Delivered>(
        self,
        store: &SharedStore,
        config: &broker_config::Roaming,
        user: &str,
        pages_sent: &Counter,
        mut deliver: F,
    ) -> Result<(), StoreError>
    where
        F: FnMut(Bytes) -> Delivered,
        Delivered: Future<Output = bool>,
    {
        let Catchup { head, start } = self;
        let mut after = start.after;
        let mut reset = start.reset;
        loop {
            let page = store.read(user, after, config.page_size).await?;
            let mut covered_to = if page.covered_to == after {
                // Nothing left up to the head read at the start (it may have been cut meanwhile).
                head.last_seq.max(after)
            } else {
                page.covered_to
            };
            let mut messages = Vec::with_capacity(page.entries.len());
            let mut notifications = Vec::new();
            let mut bytes = 0;
            for entry in &page.entries {
                let size = entry.payload.len();
                if !messages.is_empty() && bytes + size > config.page_max_bytes {
                    covered_to = entry.seq - 1;
                    break;
                }
                bytes += size;
                if entry.kind == EntryKind::Notification {
                    notifications.push(entry.seq);
                }
                messages.push(entry.json()?);
            }
            let more = covered_to < head.last_seq;
            let reply = Reply::Sync(SyncPage {
                epoch: head.epoch.clone(),
                messages,
                notifications,
                to_seq: covered_to,
                more,
                reset: reset.take(),
            });
            let payload = serde_json::to_vec(&reply).expect("sync pages serialize");
            if !deliver(payload.into()).await {
                return Ok(());
            }
            pages_sent.inc();
            if !more {
                return Ok(());
            }
            after = covered_to;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(first_seq: u64, last_seq: u64) -> LogHead {
        LogHead {
            epoch: "e1".into(),
            first_seq,
            last_seq,
        }
    }

    fn request(after: Option<u64>, epoch: Option<&str>) -> SyncRequest {
        SyncRequest {
            after,
            epoch: epoch.map(str::to_string),
        }
    }

    #[test]
    fn a_known_device_continues_from_its_cursor() {
        let start = sync_start(&head(1, 100), &request(Some(40), Some("e1")), None, 50);
        assert_eq!(start.after, 40);
        assert_eq!(start.reset, None);
        let start = sync_start(&head(1, 100), &request(None, None), Some(70), 50);
        assert_eq!((start.after, start.new_device), (70, false));
    }

    #[test]
    fn a_new_device_gets_the_latest_messages() {
        let start = sync_start(&head(1, 100), &request(None, None), None, 30);
        assert_eq!((start.after, start.new_device), (70, true));
        let start = sync_start(&head(1, 10), &request(None, None), None, 30);
        assert_eq!(start.after, 0);
    }

    #[test]
    fn lost_history_is_announced_never_skipped() {
        let trimmed = sync_start(&head(500, 900), &request(Some(10), Some("e1")), None, 50);
        assert_eq!(
            trimmed.reset,
            Some(HistoryReset {
                reason: HistoryLoss::Trimmed,
                available_from: 500
            })
        );
        assert_eq!(trimmed.after, 499);
        let other_epoch = sync_start(&head(1, 900), &request(Some(10), Some("e0")), None, 50);
        assert_eq!(
            other_epoch.reset.map(|r| r.reason),
            Some(HistoryLoss::EpochChanged)
        );
        assert_eq!(other_epoch.after, 0);
        let ahead = sync_start(&head(1, 5), &request(Some(10), None), None, 50);
        assert_eq!(
            ahead.reset.map(|r| r.reason),
            Some(HistoryLoss::EpochChanged)
        );
    }
}
