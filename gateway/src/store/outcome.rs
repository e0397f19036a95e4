//! How a writer answers a group of append calls, the same for every backend: the entries made
//! now go to the commit feed, in log order, and then each call gets its own entries — those of
//! an earlier append when it repeated that append's idempotency key.

use super::{record, Appended, CommitFeed, NewMessage, StoreError, Stored};
use crate::infra::cipher::KeyRing;
use bytes::Bytes;
use std::time::Instant;
use tokio::sync::oneshot;

/// The entries of a group of append calls, call after call, and which repeat earlier appends.
#[derive(Default)]
pub(super) struct Outcome {
    entries: Vec<Appended>,
    /// Where each call's entries start, and the message it repeats, if it does.
    calls: Vec<(usize, Option<String>)>,
    /// Indexes in `entries` of those made by earlier appends, ascending.
    repeats: Vec<usize>,
}

impl Outcome {
    pub(super) fn with_capacity(entries: usize) -> Self {
        Self {
            entries: Vec::with_capacity(entries),
            ..Self::default()
        }
    }

    /// Starts the next call's entries.
    pub(super) fn next_call(&mut self) {
        self.calls.push((self.entries.len(), None));
    }

    /// An entry of the current call, made now; returns its index.
    pub(super) fn made(&mut self, entry: Appended) -> usize {
        self.entries.push(entry);
        self.entries.len() - 1
    }

    /// An entry of the current call that an earlier append of message `id` made.
    pub(super) fn repeated(&mut self, entry: Appended, id: &str) {
        self.repeats.push(self.entries.len());
        self.entries.push(entry);
        let (_, repeat_of) = self.calls.last_mut().expect("an entry belongs to a call");
        repeat_of.get_or_insert_with(|| id.to_string());
    }

    pub(super) fn entry(&self, index: usize) -> &Appended {
        &self.entries[index]
    }

    /// Hands the entries made now to `feed`, in log order, then answers each call, `replies`
    /// being in call order.
    pub(super) fn answer(
        self,
        feed: &dyn CommitFeed,
        replies: Vec<oneshot::Sender<Result<Stored, StoreError>>>,
        durable_at: Instant,
    ) {
        let Self {
            mut entries,
            calls,
            repeats,
        } = self;
        if repeats.is_empty() {
            feed.committed(&entries, durable_at);
        } else {
            let made: Vec<Appended> = (entries.iter().enumerate())
                .filter(|(index, _)| repeats.binary_search(index).is_err())
                .map(|(_, entry)| entry.clone())
                .collect();
            feed.committed(&made, durable_at);
        }
        for ((start, repeat_of), reply) in calls.into_iter().zip(replies).rev() {
            let entries = entries.split_off(start);
            let _ = reply.send(Ok(Stored { entries, repeat_of }));
        }
    }
}

/// The entry an earlier append made for `message`'s log at `seq` and time `hlc`, `record` being
/// what that log still holds there. Its payload is empty when the entry is gone (cut by
/// retention, purged after a contact deletion) or can no longer be opened: the repeat is still
/// answered with the seq and time, which is what its sender needs.
pub(super) fn original(
    ring: &KeyRing,
    message: &NewMessage,
    seq: u64,
    hlc: u64,
    record: Option<&[u8]>,
) -> Appended {
    // Sealed under the log owner's key, as the original was (unless the owner was deleted
    // since, which leaves the original unreadable).
    let keys = record::Keys {
        ring,
        data_key: message.sealed.as_ref().map(|sealed| &*sealed.key),
    };
    let payload = record.map_or_else(Bytes::new, |record| {
        record::reopen_live(keys, &message.log, seq, hlc, record).unwrap_or_else(|e| {
            tracing::warn!("a repeated append's original cannot be opened: {e}");
            Bytes::new()
        })
    });
    Appended::of(message, seq, hlc, payload)
}
