//! Durable storage of every user's message log and every device's cursor.
//!
//! One trait, [`Store`], and one folder per backend: [`embedded`] (fjall in the data dir, the
//! default) and [`redis`] (for several nodes sharing one Redis). Both pass the same conformance
//! suite (`tests/tests/store.rs`).
//!
//! Appends are queued and committed in groups: one fsync (or one Redis round trip) makes a
//! whole batch durable. Only then are the entries handed to the [`CommitFeed`], in log order,
//! and only then are their appenders answered — nothing acknowledged is lost.
//!
//! An append may carry an [`IdempotencyKey`]: the store keeps it as a marker beside each entry
//! it makes, in the entry's log, written in the same atomic step as the entry, so no crash
//! leaves an entry without its marker or a marker without its entry. An append whose key is
//! marked in a log within its window adds nothing to that log and is answered with the marked
//! entry: nothing is stored twice, and a repeat is never delivered live again.

pub mod clock;
pub mod data_keys;
pub mod embedded;
pub mod known_devices;
mod outcome;
pub mod record;
pub mod redis;
pub mod retained;
pub mod revocations;
pub mod sessions;

use crate::infra::data_key::DataKey;
use crate::infra::latency_budget::LatencyBudget;
use async_trait::async_trait;
use bytes::Bytes;
use prometheus_client::metrics::histogram::Histogram;
pub use record::LogEntry;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// How a store commits and keeps logs, the same for every backend.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Most appends committed together.
    pub max_batch: usize,
    /// Writes waiting for the writer at most (`store.max_queued_writes`): past it an append is
    /// refused as unavailable, and the other writes wait for room.
    pub max_queued_writes: usize,
    /// Messages kept per log; older ones are cut as new ones arrive.
    pub retention_count: u64,
    /// Embedded store only: bytes of messages in memory before they become a table
    /// (`store.memtable_size`).
    pub memtable_size: u64,
    /// Where the time to make one batch durable (one fsync, or one Redis round trip) is
    /// recorded, when it is measured: the part of an append's latency the backend itself costs.
    pub commit_seconds: Option<Histogram>,
    /// Where each appended message's time in the writer's stages is recorded.
    pub budget: LatencyBudget,
    /// Redis store only: who must confirm a batch before it is acknowledged.
    pub confirmation: Confirmation,
}

/// Who must confirm a batch before it is acknowledged (Redis only): how many replicas must have
/// it (`WAIT`), and whether it must be in the append-only file on disk, the primary's and those
/// replicas' (`WAITAOF`); and how long to wait for them: a batch not confirmed in time is
/// answered as unavailable (it may be stored; a retry with an idempotency key stores it once).
/// Nobody by default: the primary's answer is enough.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Confirmation {
    pub replicas: u32,
    pub on_disk: bool,
    pub timeout: std::time::Duration,
}

impl Settings {
    /// Records how long one batch took to become durable, since `started`.
    fn commit_took(&self, started: std::time::Instant) {
        if let Some(histogram) = &self.commit_seconds {
            histogram.observe(started.elapsed().as_secs_f64());
        }
    }
}

/// Why a write could not be queued for the store's writer, with the write handed back: the
/// queue is full (`store.max_queued_writes`: the sender retries later) or the writer stopped.
pub(crate) fn queue_refusal<T>(refused: mpsc::error::TrySendError<T>) -> (&'static str, T) {
    match refused {
        mpsc::error::TrySendError::Full(write) => (
            "the store's write queue is full (store.max_queued_writes)",
            write,
        ),
        mpsc::error::TrySendError::Closed(write) => ("the store writer stopped", write),
    }
}

/// Writes waiting in a writer's queue: the store's backlog, as operators watch it.
pub(crate) fn queued<T>(queue: &mpsc::Sender<T>) -> usize {
    queue.max_capacity() - queue.capacity()
}

/// Who appended an entry, as the appender tagged it; handed back with the committed entry, so
/// that live delivery can leave out the sender's own connection. The store never looks inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Origin(pub u64);

/// A message on its way into one user's log, made by [`record::seal`].
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Whose log it goes to.
    pub log: String,
    /// The message's id, in the clear in its record.
    pub id: String,
    /// The message as JSON without `seq` and `ts`, which the store assigns.
    pub plaintext: Bytes,
    /// The record as stored, once sealed under the log owner's data key: by the front when it
    /// holds the key, else by the store's writer.
    pub sealed: Option<Sealed>,
    pub origin: Option<Origin>,
    pub kind: EntryKind,
    /// When the gateway accepted it: where its durable path's first stage begins.
    pub accepted_at: Instant,
}

/// A message's record, and the data key it is sealed under.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// The message id in the clear and the plaintext sealed.
    pub record: Vec<u8>,
    /// The store appends the record only while this is still the log owner's key.
    pub key: Arc<DataKey>,
}

impl NewMessage {
    /// The record as stored: writers seal every message before they write it.
    pub fn record(&self) -> &[u8] {
        &self
            .sealed
            .as_ref()
            .expect("sealed before it is written")
            .record
    }
}

/// What a log entry is: a message (delivered live on the user's inbox) or an in-app
/// notification (on `u/{user}/notify`). Both are in the same log, so a sync returns both, in
/// order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    #[default]
    Message,
    Notification,
}

/// Makes an append happen once: an append carrying the key of an earlier one, within `window`
/// of it, stores nothing and is answered with the earlier one's entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// What the key is unique within (e.g. a sender's messages to one user): keys of different
    /// scopes never match. Opaque to the store; no spaces.
    pub scope: String,
    /// The sender's own id for the message; no spaces.
    pub key: String,
    /// How long the key is remembered, from the first append, by the store's clock (Redis's
    /// for the Redis store, so that nodes whose clocks differ agree).
    pub window: Duration,
}

impl IdempotencyKey {
    /// What the key is marked under in a log: scope and key, which hold no spaces.
    fn marker(&self) -> String {
        format!("{} {}", self.scope, self.key)
    }

    fn window_ms(&self) -> u64 {
        self.window.as_millis().try_into().unwrap_or(u64::MAX)
    }
}

/// A message made durable in a log.
#[derive(Debug, Clone)]
pub struct Appended {
    pub log: String,
    pub seq: u64,
    /// Hybrid logical clock time: milliseconds since the Unix epoch in the high 48 bits.
    pub hlc: u64,
    /// The message as JSON, with `seq` and `ts`, ready for live delivery.
    pub payload: Bytes,
    pub origin: Option<Origin>,
    pub kind: EntryKind,
}

impl Appended {
    /// `message` as the entry at `seq` and time `hlc` of its log.
    fn of(message: &NewMessage, seq: u64, hlc: u64, payload: Bytes) -> Self {
        Self {
            log: message.log.clone(),
            seq,
            hlc,
            payload,
            origin: message.origin,
            kind: message.kind,
        }
    }
}

/// What one append came to, once durable.
#[derive(Debug, Clone)]
pub struct Stored {
    /// One entry per message handed in, in that order.
    pub entries: Vec<Appended>,
    /// Set when the append repeated an idempotency key within its window: the id of the message
    /// first appended with it. The entries are then the first append's (its seq, time and
    /// payload; the payload is empty when retention or a contact deletion has removed the entry
    /// since), and they are not handed to the commit feed again. An entry the first append never
    /// made, or that left with its log (a failure between the two logs of a Redis batch, a user
    /// deleted since), is made now, with this append's message.
    pub repeat_of: Option<String>,
}

/// The ordered feed of committed appends: every committed batch is handed here, in log order,
/// before its appenders are answered. Live delivery consumes it.
pub trait CommitFeed: Send + Sync + 'static {
    /// `entries` of a batch that became durable at `durable_at`.
    fn committed(&self, entries: &[Appended], durable_at: Instant);
}

/// What a log holds: its epoch and the range of sequences still available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogHead {
    /// Changes when the log lost its history (deleted, or the store wiped): a device holding
    /// another epoch must reload.
    pub epoch: String,
    /// The oldest sequence still kept; `last_seq + 1` when nothing is kept.
    pub first_seq: u64,
    /// The newest sequence given out; 0 for a log never written.
    pub last_seq: u64,
}

impl LogHead {
    /// The head of a log never written (or deleted).
    fn never_written() -> Self {
        Self {
            epoch: String::new(),
            first_seq: 1,
            last_seq: 0,
        }
    }
}

/// Where a device stands in its user's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePosition {
    pub head: LogHead,
    pub cursor: Option<u64>,
}

/// A page of a log read after some sequence.
#[derive(Debug, Clone)]
pub struct LogPage {
    pub entries: Vec<LogEntry>,
    /// The highest sequence this page covers (messages hidden by a contact deletion leave
    /// gaps, and the page still covers them).
    pub covered_to: u64,
    /// The page reached the log's end as it was when the read began: `covered_to` is there,
    /// and only what was appended since is left. A reader following the log goes live on it
    /// without a read that finds nothing.
    pub reached_end: bool,
}

impl LogPage {
    /// A page after `after` that holds nothing yet.
    fn empty(after: u64) -> Self {
        Self {
            entries: Vec::new(),
            covered_to: after,
            reached_end: false,
        }
    }

    /// Marks the end of a read that took `taken` entries of the `limit` it asked for, in a log
    /// whose last sequence was `last_seq` before the entries were read: a read that took fewer
    /// ran out of log, and one that got to `last_seq` is at the end.
    fn finish(&mut self, taken: usize, limit: usize, last_seq: u64) {
        if taken < limit || self.covered_to >= last_seq {
            self.reached_end = true;
            self.covered_to = self.covered_to.max(last_seq);
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached now; the request may be retried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A stored value cannot be read back (damaged, or sealed with a key no longer configured).
    #[error("stored data unreadable: {0}")]
    Unreadable(String),
}

impl From<crate::infra::redis::Unavailable> for StoreError {
    fn from(error: crate::infra::redis::Unavailable) -> Self {
        Self::Unavailable(error.0)
    }
}

/// What the sweeper did in one pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub expired: u64,
    pub purged_contacts: u64,
    /// Idempotency markers whose window had ended.
    pub expired_markers: u64,
    /// Revocations older than the longest life of a token.
    pub expired_revocations: u64,
    /// Users' data keys wrapped again under the sealing one of `store.encryption_keys`.
    pub rewrapped_keys: u64,
}

/// The answer to an append, resolved once the batch holding it is durable.
pub struct AppendTicket(oneshot::Receiver<Result<Stored, StoreError>>);

impl AppendTicket {
    pub fn channel() -> (oneshot::Sender<Result<Stored, StoreError>>, Self) {
        let (tx, rx) = oneshot::channel();
        (tx, Self(rx))
    }

    pub async fn wait(self) -> Result<Stored, StoreError> {
        self.0
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("the store shut down".into())))
    }
}

/// The message store; it also keeps MQTT sessions and retained messages, in the same backend.
#[async_trait]
pub trait Store:
    retained::RetainedStore
    + sessions::SessionStore
    + revocations::RevocationStore
    + known_devices::KnownDeviceStore
{
    /// Queues messages (each for its own log) to be appended together. The order of calls is the
    /// order in the logs, so a connection's messages keep their order without waiting for each.
    /// With a `key`, a log that holds the key's marker within its window is not appended to (see
    /// [`Stored::repeat_of`]).
    fn append(&self, messages: Vec<NewMessage>, key: Option<IdempotencyKey>) -> AppendTicket;

    async fn head(&self, user: &str) -> Result<LogHead, StoreError>;

    /// Up to `limit` messages after sequence `after`, oldest first, without those hidden by a
    /// contact deletion.
    async fn read(&self, user: &str, after: u64, limit: usize) -> Result<LogPage, StoreError>;

    /// The log's head and the device's cursor in it (none before the device's first sync),
    /// read together: where a device picks up the log.
    async fn position(&self, user: &str, device: &str) -> Result<DevicePosition, StoreError>;

    /// Moves the device's cursor forward to `seq` (never back, never past the log's end) and
    /// returns where it is.
    async fn ack(&self, user: &str, device: &str, seq: u64) -> Result<u64, StoreError>;

    /// Removes the user's log, cursors and everything else kept for the user, except the
    /// user's revocations (see [`revocations`]): revoke first, so the deleted user's tokens
    /// stay refused.
    async fn delete_user(&self, user: &str) -> Result<(), StoreError>;

    /// Hides at once, and has the sweeper remove, the direct messages between two users in both
    /// their logs.
    async fn forget_contact(&self, user: &str, other: &str) -> Result<(), StoreError>;

    /// Cuts messages older than `older_than_ms`, purges forgotten contacts' messages and
    /// removes idempotency markers whose window has ended.
    async fn sweep(&self, older_than_ms: u64) -> Result<SweepReport, StoreError>;

    /// Commits what was queued before this call and stops: later appends are refused as
    /// unavailable. For shutdown, once nothing appends any more.
    async fn close(&self);

    /// Writes waiting for the writer (at most `store.max_queued_writes`, past which appends are
    /// refused): near the maximum, the store is what holds senders back.
    fn queued_writes(&self) -> usize;

    /// Everything stored for the user, one line per item: `messages/{user}/{seq}`,
    /// `heads/{user}`, `cursors/{user}/{device}`, `forgotten/{user}/{other}`,
    /// `idempotency/{user}/{scope} {key}`, `revocations/{user}[/{device}]` (and a backend's own
    /// index entries, named as it keeps them). For operators, and for checking that a deletion left nothing.
    async fn footprint(&self, user: &str) -> Result<Vec<String>, StoreError>;
}

pub type SharedStore = Arc<dyn Store>;

/// A fresh random epoch name.
pub fn new_epoch() -> String {
    hex::encode(rand::random::<[u8; 6]>())
}
