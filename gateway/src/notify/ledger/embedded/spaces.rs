//! The embedded ledger's keyspaces, their keys and values, and how a write becomes durable.
//!
//! Keyspaces (ids never contain a 0 byte):
//! - `records` id → record (JSON, sealed: it holds the notification's text)
//! - `user_records` user 0 id → nothing: the user's records, for deleting the user
//! - `queue` due(8 BE) key → job (JSON); where a job taken to be sent stands in it is held in
//!   memory until the job is settled (see [`Spaces::leased`])
//! - `prefs` `quiet`|`consent`|`bindings` 0 user → JSON (bindings sealed: they hold openids)
//! - `claims` expiry (8 BE) digest (16) → the claiming notification's id 0 user: the journal of
//!   the dedup claims, which the ledger holds in memory (see [`ClaimIndex`]); the sweeper finds
//!   expired claims at its start
//! - `provider` provider id → notification 0 provider
//! - `aggregates` user 0 kind → the pending aggregated job's `queue` key (due and key), and
//!   `job` 0 key → that slot
//! - `quota` quota 0 day → count (8 BE)

use super::super::claim_index::ClaimIndex;
use super::super::preference_cache::PreferenceCache;
use crate::infra::fjall::open_database;
use crate::infra::group_commit::GroupCommit;
use crate::store::StoreError;
use broker_config::Notify;
use fjall::{Keyspace, KeyspaceCreateOptions, OwnedWriteBatch};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

/// The keyspaces and what the ledger holds in memory beside them; cheap to clone, shared by
/// every call on the blocking pool.
#[derive(Clone)]
pub(super) struct Spaces {
    /// No queued job is due before this (ms): `take_due` scans from here, not from the start
    /// of the queue, where the tombstones of every job taken or settled pile up until
    /// compaction. Lowered by every enqueue, raised by every take; both under the write lock.
    pub floor: Arc<AtomicU64>,
    /// Commits to the journal and the fsyncs that make them durable.
    pub commits: Arc<GroupCommit>,
    /// Where each job taken by `take_due` and not yet settled stands in the queue (its lease's
    /// end), by key: settling it finds its entry here instead of in an index written with every
    /// job. Changed only under the write lock; as many as the worker holds at once.
    pub leased: Arc<Mutex<HashMap<String, u64>>>,
    pub preferences: Arc<PreferenceCache>,
    pub records: Keyspace,
    pub user_records: Keyspace,
    pub queue: Keyspace,
    pub prefs: Keyspace,
    pub provider: Keyspace,
    pub aggregates: Keyspace,
    pub quota: Keyspace,
    pub claims: Keyspace,
    /// The claims not yet expired, by digest; changed only under the write lock.
    pub claim_index: Arc<Mutex<ClaimIndex>>,
}

impl Spaces {
    /// Opens (creating when missing) the keyspaces in directory `path`, with what `settings`
    /// says of their memory.
    pub fn open(path: &Path, settings: &Notify) -> anyhow::Result<Self> {
        let memtable_size = settings.ledger_memtable_size;
        let db = open_database(path)
            .map_err(|e| anyhow::anyhow!("cannot open the ledger {}: {e}", path.display()))?;
        let options = || KeyspaceCreateOptions::default().max_memtable_size(memtable_size);
        let space = |name: &str| db.keyspace(name, options);
        // Read by ranges (a point read finds its key in the memtable, or is rare): a bloom
        // filter per table would be built at every flush and compaction for nothing.
        let scanned = |name: &str| {
            db.keyspace(name, || {
                options().filter_policy(fjall::config::FilterPolicy::disabled())
            })
        };
        Ok(Self {
            floor: Arc::new(AtomicU64::new(0)),
            commits: Arc::new(GroupCommit::new(db.clone(), path)),
            leased: Arc::new(Mutex::new(HashMap::new())),
            preferences: Arc::new(PreferenceCache::new(settings.preferences_cache)),
            records: space("records")?,
            user_records: scanned("user_records")?,
            queue: scanned("queue")?,
            prefs: space("prefs")?,
            provider: space("provider")?,
            aggregates: space("aggregates")?,
            quota: space("quota")?,
            claims: scanned("claims")?,
            claim_index: Arc::new(Mutex::new(ClaimIndex::new(settings.max_dedup_claims))),
        })
    }

    /// A batch applied to the journal's buffers; [`Spaces::sync`] makes it durable, together
    /// with every other batch written before it.
    pub fn batch(&self) -> OwnedWriteBatch {
        self.commits.batch()
    }

    pub fn commit(&self, batch: OwnedWriteBatch) -> Result<(), StoreError> {
        self.commits.commit(batch).map_err(failed)
    }

    /// Group commit: one fsync covers every batch written before it, so callers that queued
    /// behind a running fsync find their batch covered and return without another.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.commits.sync().map_err(failed)
    }
}

pub(super) fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Two ids as one key, `a 0 b`.
pub(super) fn joined(a: &str, b: &str) -> Vec<u8> {
    [a.as_bytes(), b"\0", b.as_bytes()].concat()
}

pub(super) fn be_u64(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(bytes.try_into().unwrap_or([0; 8]))
}

pub(super) fn to_json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("ledger values serialize")
}

pub(super) fn from_json<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Unreadable(format!("{what}: {e}")))
}
