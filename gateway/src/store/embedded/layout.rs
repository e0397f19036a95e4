//! The embedded store's keyspaces and how their keys and values are laid out.
//!
//! Keyspaces (ids never contain a 0 byte, so `user 0x00` is an exact prefix):
//! - `messages` user 0x00 seq(BE) → hybrid-clock time (8 bytes, BE) + sealed record
//! - `heads` user → first seq kept, last seq given and last time when stored (8 bytes each, BE)
//!   + epoch
//! - `cursors` user 0x00 device → highest sequence the device acknowledged (BE)
//! - `forgotten` owner 0x00 other → sequence up to which their direct messages in `owner`'s log
//!   are hidden, until the sweeper has removed them
//! - `sessions` session name → expiry (8 bytes, BE, ms) + sealed state (see `sessions.rs`)
//! - `session_queues` session name 0x00 position (8 bytes, BE) → sealed message
//! - `retained` topic → sealed message
//! - `idempotency` user 0x00 marker → the entry an append with that idempotency key made in
//!   the user's log, and when the key's window ends (see [`super::markers`])
//! - `idempotency_expiry` window end (BE) + the `idempotency` key → nothing: the markers in
//!   order of expiry, for the sweeper
//! - `revocations` user 0x00 [device] → the moment up to which the user's (or the device's)
//!   tokens are refused (see [`super::revocations`])
//! - `data_keys` user → the user's data key, wrapped (see [`crate::store::data_keys`])

use crate::infra::data_key::DataKey;
use crate::infra::fjall::open_database;
use crate::store::data_keys::DataKeys;
use crate::store::record::{self, Keys};
use crate::store::{new_epoch, LogEntry, StoreError};
use dashmap::DashSet;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, OwnedWriteBatch, PersistMode};
use std::path::Path;
use std::sync::Arc;

/// The store's keyspaces; cheap to clone, shared by the writer and the readers.
#[derive(Clone)]
pub(super) struct Keyspaces {
    pub db: Database,
    pub messages: Keyspace,
    pub heads: Keyspace,
    pub cursors: Keyspace,
    pub forgotten: Keyspace,
    pub sessions: Keyspace,
    pub session_queues: Keyspace,
    pub retained: Keyspace,
    pub idempotency: Keyspace,
    pub idempotency_expiry: Keyspace,
    pub revocations: Keyspace,
    pub data_keys: Keyspace,
    /// The devices each user has logged in from (see [`super::known_devices`]).
    pub known_devices: Keyspace,
    /// Everything in `known_devices` (see [`super::known_devices`]).
    pub known: Arc<super::known_devices::KnownInMemory>,
    /// Everything in `revocations`, read on every connection (see [`super::revocations`]).
    pub revoked: Arc<super::revocations::RevokedMoments>,
    /// Revocations are rare and written one at a time, so the moment on disk is always the
    /// later of two revocations of one scope racing each other.
    pub revoking: Arc<std::sync::Mutex<()>>,
    /// The names of the sessions in `sessions`: a client connecting afresh (most do) learns
    /// it has none without a read on a blocking thread.
    pub session_names: Arc<DashSet<String>>,
}

/// A log's head as kept in `heads`.
#[derive(Debug, Clone)]
pub(super) struct Head {
    pub first_seq: u64,
    pub last_seq: u64,
    pub last_hlc: u64,
    pub epoch: String,
}

impl Head {
    pub(super) fn fresh() -> Self {
        Self {
            first_seq: 1,
            last_seq: 0,
            last_hlc: 0,
            epoch: new_epoch(),
        }
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        encode_numbers_and_text([self.first_seq, self.last_seq, self.last_hlc], &self.epoch)
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let ([first_seq, last_seq, last_hlc], epoch) = decode_numbers_and_text(bytes)
            .ok_or_else(|| StoreError::Unreadable("a log head is damaged".into()))?;
        Ok(Self {
            first_seq,
            last_seq,
            last_hlc,
            epoch,
        })
    }
}

/// Three numbers (8 bytes each, big-endian) and then a text: how a head and an idempotency
/// marker are kept.
pub(super) fn encode_numbers_and_text(numbers: [u64; 3], text: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(24 + text.len());
    for n in numbers {
        bytes.extend_from_slice(&n.to_be_bytes());
    }
    bytes.extend_from_slice(text.as_bytes());
    bytes
}

/// What [`encode_numbers_and_text`] wrote; `None` when damaged.
pub(super) fn decode_numbers_and_text(bytes: &[u8]) -> Option<([u64; 3], String)> {
    let (numbers, text) = bytes.split_at_checked(24)?;
    let number = |i: usize| be_u64(&numbers[i * 8..i * 8 + 8]);
    let text = String::from_utf8(text.to_vec()).ok()?;
    Some(([number(0), number(1), number(2)], text))
}

pub(super) fn be_u64(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(bytes.try_into().expect("8 bytes"))
}

pub(super) fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

pub(super) fn prefix(id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(id.len() + 9);
    key.extend_from_slice(id.as_bytes());
    key.push(0);
    key
}

pub(super) fn log_key(user: &str, seq: u64) -> Vec<u8> {
    let mut key = prefix(user);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

pub(super) fn pair_key(owner: &str, other: &str) -> Vec<u8> {
    let mut key = prefix(owner);
    key.extend_from_slice(other.as_bytes());
    key
}

/// The part of a pair key after its owner's prefix.
pub(super) fn pair_second(key: &[u8], owner: &str) -> String {
    String::from_utf8_lossy(&key[owner.len() + 1..]).into_owned()
}

/// The owner and the second part of a pair key (the inverse of [`pair_key`]).
pub(super) fn pair_of(key: &[u8]) -> (String, String) {
    let separator = key.iter().position(|&b| b == 0).unwrap_or(key.len());
    let second = key.get(separator + 1..).unwrap_or_default();
    (
        String::from_utf8_lossy(&key[..separator]).into_owned(),
        String::from_utf8_lossy(second).into_owned(),
    )
}

/// The owner and seq of a `messages` key.
pub(super) fn log_position(key: &[u8]) -> (String, u64) {
    let (user, seq) = key.split_at(key.len() - 9);
    (
        String::from_utf8_lossy(user).into_owned(),
        be_u64(&seq[1..]),
    )
}

/// A `messages` value of `user`'s log at `seq` opened; `None` when it was sealed under a data
/// key that was destroyed.
pub(super) fn open_value(
    keys: Keys<'_>,
    user: &str,
    seq: u64,
    value: &[u8],
) -> Result<Option<LogEntry>, StoreError> {
    let (hlc, record) = value.split_at_checked(8).ok_or_else(|| {
        StoreError::Unreadable(format!("record {user}/{seq} is shorter than its header"))
    })?;
    record::open(keys, user, seq, be_u64(hlc), record)
}

impl Keyspaces {
    pub(super) fn open(path: &Path, memtable_size: u64) -> fjall::Result<Self> {
        let db = open_database(path)?;
        // Appends wait while fjall switches to a fresh memtable, for a time that grows with the
        // memtable (see `store.memtable_size`): its size bounds the latency tail.
        let options = || KeyspaceCreateOptions::default().max_memtable_size(memtable_size);
        let space = |name: &str| db.keyspace(name, options);
        let sessions = space("sessions")?;
        let session_names = DashSet::new();
        for entry in sessions.iter() {
            session_names.insert(String::from_utf8_lossy(&entry.key()?).into_owned());
        }
        let revocations = space("revocations")?;
        let known_devices = space("known_devices")?;
        let revoked = Self::load_revocations(&revocations)?;
        Ok(Self {
            revocations,
            revoked: Arc::new(revoked),
            revoking: Arc::default(),
            data_keys: space("data_keys")?,
            known: Arc::new(Self::load_known_devices(&known_devices)?),
            known_devices,
            messages: space("messages")?,
            heads: space("heads")?,
            cursors: space("cursors")?,
            forgotten: space("forgotten")?,
            sessions,
            session_queues: space("session_queues")?,
            retained: space("retained")?,
            idempotency: space("idempotency")?,
            idempotency_expiry: space("idempotency_expiry")?,
            session_names: Arc::new(session_names),
            db,
        })
    }

    /// The log's head: epoch and first sequence as last written (at creation, trims and
    /// sweeps), last sequence and time from the log's newest entry — the writer does not
    /// rewrite the head on every append.
    pub(super) fn head(&self, user: &str) -> Result<Option<Head>, StoreError> {
        let Some(stored) = self.heads.get(user).map_err(failed)? else {
            return Ok(None);
        };
        let mut head = Head::decode(&stored)?;
        if let Some(newest) = self.messages.prefix(prefix(user)).next_back() {
            let (key, value) = newest.into_inner().map_err(failed)?;
            let seq = log_position(&key).1;
            if seq > head.last_seq {
                head.last_seq = seq;
                head.last_hlc = head.last_hlc.max(value.get(..8).map_or(0, be_u64));
            }
        }
        Ok(Some(head))
    }

    /// The user's data key as stored, if the user has one.
    pub(super) fn data_key(
        &self,
        keys: &DataKeys,
        user: &str,
    ) -> Result<Option<Arc<DataKey>>, StoreError> {
        match self.data_keys.get(user).map_err(failed)? {
            Some(wrapped) => keys.unwrap(user, &wrapped).map(Some),
            None => Ok(None),
        }
    }

    pub(super) fn durable_batch(&self) -> OwnedWriteBatch {
        self.db.batch().durability(Some(PersistMode::SyncAll))
    }

    /// A batch written to the operating system when committed, made durable by the next fsync.
    pub(super) fn buffered_batch(&self) -> OwnedWriteBatch {
        self.db.batch().durability(Some(PersistMode::Buffer))
    }

    /// Makes every batch committed so far durable (one fsync).
    pub(super) fn sync(&self) -> Result<(), StoreError> {
        crate::infra::fjall::sync(&self.db).map_err(failed)
    }
}
