//! The embedded ledger: fjall keyspaces in `DATA_DIR/notify`. Writes that read first (claims,
//! settling, aggregating) are serialized by one lock: this is the single-node backend. Each
//! write is one journal batch; the fsync that makes it durable comes after the lock is released
//! and covers every batch written before it (group commit, [`GroupCommit`]: it does not hold
//! fjall's journal lock, so the next writers commit meanwhile), and no write is answered before it
//! — except claims and aggregate joins, which become durable with the `create` that follows
//! them (see [`Ledger::claim_dedup`]).
//!
//! Keyspaces (ids never contain a 0 byte):
//! - `records` id → record (JSON, sealed: it holds the notification's text)
//! - `queue` due(8 BE) key → job (JSON); where a job taken to be sent stands in it is held in
//!   memory until the job is settled (see [`Spaces::leased`])
//! - `prefs` `quiet`|`consent`|`bindings` 0 user → JSON (bindings sealed: they hold openids)
//! - `claims` expiry (8 BE) digest (16) → the claiming notification's id 0 user: the journal of
//!   the dedup claims, which the ledger holds in memory (see [`ClaimIndex`]); the sweeper finds
//!   expired claims at its start
//! - `provider` provider id → notification 0 route
//! - `aggregates` user 0 kind → the pending aggregated job's `queue` key (due and key), and
//!   `job` 0 key → that slot
//! - `quota` quota 0 day → count (8 BE)

use super::claim_index::{claim_digest, ClaimDigest, ClaimIndex};
use super::preference_cache::PreferenceCache;
use super::{AggregateJoin, DedupClaim, Ledger, LedgerSweep, NewRecord};
use crate::notify::model::{
    Bindings, Consent, Job, Preferences, QuietHours, Record, Route, RouteState,
};
use crate::store::cipher::KeyRing;
use crate::store::embedded::open_database;
use crate::store::group_commit::GroupCommit;
use crate::store::StoreError;
use async_trait::async_trait;
use broker_config::Notify;
use fjall::{Keyspace, KeyspaceCreateOptions, OwnedWriteBatch, PersistMode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

#[derive(Clone)]
struct Spaces {
    /// No queued job is due before this (ms): `take_due` scans from here, not from the start
    /// of the queue, where the tombstones of every job taken or settled pile up until
    /// compaction. Lowered by every enqueue, raised by every take; both under the write lock.
    floor: Arc<AtomicU64>,
    /// Commits to the journal and the fsyncs that make them durable.
    commits: Arc<GroupCommit>,
    /// Where each job taken by `take_due` and not yet settled stands in the queue (its lease's
    /// end), by key: settling it finds its entry here instead of in an index written with every
    /// job. Changed only under the write lock; as many as the worker holds at once.
    leased: Arc<Mutex<HashMap<String, u64>>>,
    preferences: Arc<PreferenceCache>,
    records: Keyspace,
    queue: Keyspace,
    prefs: Keyspace,
    provider: Keyspace,
    aggregates: Keyspace,
    quota: Keyspace,
    claims: Keyspace,
    /// The claims not yet expired, by digest; changed only under the write lock.
    claim_index: Arc<Mutex<ClaimIndex>>,
}

pub struct EmbeddedLedger {
    spaces: Spaces,
    keys: Arc<KeyRing>,
    writes: Arc<Mutex<()>>,
    /// Calls running on the blocking pool at once. Writes wait for one another anyway; without
    /// this bound, a burst of them (a backend setting a thousand users' bindings at once) parks
    /// one pool thread each, and every thread keeps its own allocator heap: 512 threads held
    /// 1.5 GB after such a burst.
    threads: Arc<Semaphore>,
}

/// At most this many ledger calls occupy blocking-pool threads at once; the rest wait as tasks.
/// Enough for the write lock to always have a next writer ready and for reads to go on beside
/// an fsync.
const LEDGER_THREADS: usize = 16;

fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn joined(a: &str, b: &str) -> Vec<u8> {
    [a.as_bytes(), b"\0", b.as_bytes()].concat()
}

fn queue_key(due: u64, key: &str) -> Vec<u8> {
    [&due.to_be_bytes()[..], key.as_bytes()].concat()
}

fn be_u64(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(bytes.try_into().unwrap_or([0; 8]))
}

/// A claim's entry in the `claims` journal: its key, and its value (claimant, user).
fn claim_entry(expiry: u64, digest: &ClaimDigest, by: &str, user: &str) -> (Vec<u8>, Vec<u8>) {
    let key = claim_key(expiry, digest);
    (key, joined(by, user))
}

fn claim_key(expiry: u64, digest: &ClaimDigest) -> Vec<u8> {
    [&expiry.to_be_bytes()[..], digest].concat()
}

/// The expiry and digest of a `claims` key.
fn claim_key_parts(key: &[u8]) -> Option<(u64, ClaimDigest)> {
    let (expiry, digest) = key.split_at_checked(8)?;
    Some((be_u64(expiry), digest.try_into().ok()?))
}

/// The claimant and user of a `claims` value.
fn claim_value_parts(value: &[u8]) -> (&[u8], &[u8]) {
    let split = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    (&value[..split], value.get(split + 1..).unwrap_or_default())
}

fn open_record(keys: &KeyRing, id: &str, sealed: &[u8]) -> Result<Record, StoreError> {
    let plain = keys
        .open(sealed, id.as_bytes())
        .map_err(|e| StoreError::Unreadable(format!("notification {id}: {e}")))?;
    from_json(&plain, "notification record")
}

/// Notification ids are UUIDv7 (`into_notification`), whose text begins with the creation time
/// in milliseconds as 12 hex digits (`xxxxxxxx-xxxx-7…`): every id made before `ms` sorts
/// before this prefix.
fn id_bound(ms: u64) -> String {
    format!("{:08x}-{:04x}", (ms >> 16) & 0xffff_ffff, ms & 0xffff)
}

/// Entries a sweep takes per turn of the write lock: claims and decisions go on in between.
const SWEEP_CHUNK: usize = 10_000;

/// A record's key and its sealed JSON (it holds the notification's text).
fn sealed_record(keys: &KeyRing, record: &Record) -> (String, Vec<u8>) {
    let id = &record.notification.id;
    (id.clone(), keys.seal(&to_json(record), id.as_bytes()))
}

fn to_json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("ledger values serialize")
}

fn from_json<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Unreadable(format!("{what}: {e}")))
}

impl EmbeddedLedger {
    /// Opens (creating when missing) the ledger in directory `path`, with what `settings` says
    /// of its memory: `preferences_cache` users' preferences and up to `max_dedup_claims` claims
    /// held, and `ledger_memtable_size` bytes per keyspace before it is flushed (fixed when the
    /// ledger is created).
    pub fn open(path: &Path, keys: Arc<KeyRing>, settings: &Notify) -> anyhow::Result<Self> {
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
        let spaces = Spaces {
            floor: Arc::new(AtomicU64::new(0)),
            commits: Arc::new(GroupCommit::new(db.clone(), path)),
            leased: Arc::new(Mutex::new(HashMap::new())),
            preferences: Arc::new(PreferenceCache::new(settings.preferences_cache)),
            records: space("records")?,
            queue: scanned("queue")?,
            prefs: space("prefs")?,
            provider: space("provider")?,
            aggregates: space("aggregates")?,
            quota: space("quota")?,
            claims: scanned("claims")?,
            claim_index: Arc::new(Mutex::new(ClaimIndex::new(settings.max_dedup_claims))),
        };
        let now_ms = crate::session_handle::unix_millis();
        spaces.migrate_claims(now_ms)?;
        spaces.migrate_jobs_index()?;
        spaces.load_claims(now_ms)?;
        Ok(Self {
            spaces,
            keys,
            writes: Arc::new(Mutex::new(())),
            threads: Arc::new(Semaphore::new(LEDGER_THREADS)),
        })
    }

    /// Runs `work` off the async threads; writes hold the write lock.
    async fn run<T: Send + 'static>(
        &self,
        access: Access,
        work: impl FnOnce(&Spaces, &KeyRing) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (spaces, keys, writes) = (self.spaces.clone(), self.keys.clone(), self.writes.clone());
        let thread = self.threads.clone().acquire_owned().await.map_err(failed)?;
        tokio::task::spawn_blocking(move || {
            let _thread = thread;
            let result = {
                let _guard =
                    (access != Access::Read).then(|| writes.lock().expect("ledger write lock"));
                work(&spaces, &keys)
            };
            // The fsync happens outside the write lock, so the next writer goes on meanwhile
            // and its batch is made durable by the same or the next fsync.
            if access == Access::Write {
                spaces.sync()?;
            }
            result
        })
        .await
        .map_err(failed)?
    }
}

/// How a ledger call touches the keyspaces.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    /// Writes, durable before the call returns.
    Write,
    /// Writes that the next durable write makes durable with it (one journal, written in
    /// order): claims and aggregate joins, which the router always follows with `create`.
    WriteBeforeCreate,
}

impl Spaces {
    /// A batch applied to the journal's buffers; [`Spaces::sync`] makes it durable, together
    /// with every other batch written before it.
    fn batch(&self) -> OwnedWriteBatch {
        self.commits.batch()
    }

    fn commit(&self, batch: OwnedWriteBatch) -> Result<(), StoreError> {
        self.commits.commit(batch).map_err(failed)
    }

    /// Group commit: one fsync covers every batch written before it, so callers that queued
    /// behind a running fsync find their batch covered and return without another.
    fn sync(&self) -> Result<(), StoreError> {
        self.commits.sync().map_err(failed)
    }

    /// Holds in memory the claims of the journal that have not expired by `now_ms`.
    fn load_claims(&self, now_ms: u64) -> anyhow::Result<()> {
        let mut index = self.claim_index.lock().expect("claim index lock");
        let start = now_ms.saturating_add(1).to_be_bytes();
        for entry in self.claims.range(start..) {
            let key = entry.key()?;
            if let Some((expiry, digest)) = claim_key_parts(&key) {
                index.hold(digest, expiry);
            }
        }
        Ok(())
    }

    /// Moves the live claims of a ledger written before the `claims` journal (a `dedup`
    /// keyspace of user 0 key → expiry and claimant, and a `claim_expiry` index of expiry user 0
    /// key → ()) into the journal, and removes the two keyspaces.
    fn migrate_claims(&self, now_ms: u64) -> anyhow::Result<()> {
        if !self.commits.db().keyspace_exists("dedup") {
            return Ok(());
        }
        let options = KeyspaceCreateOptions::default;
        let (dedup, index) = (
            self.commits.db().keyspace("dedup", options)?,
            self.commits.db().keyspace("claim_expiry", options)?,
        );
        let mut batch = self.batch();
        let start = now_ms.saturating_add(1).to_be_bytes();
        for entry in index.range(start..) {
            let key = entry.key()?;
            let (expiry, claim) = key.split_at(8);
            let Some(split) = claim.iter().position(|&b| b == 0) else {
                continue;
            };
            let user = String::from_utf8_lossy(&claim[..split]);
            let content = String::from_utf8_lossy(&claim[split + 1..]);
            let by = dedup
                .get(claim)?
                .map(|value| {
                    String::from_utf8_lossy(value.get(8..).unwrap_or_default()).into_owned()
                })
                .unwrap_or_default();
            let digest = claim_digest(&user, &content);
            let (key, value) = claim_entry(be_u64(expiry), &digest, &by, &user);
            batch.insert(&self.claims, key, value);
        }
        batch.durability(Some(PersistMode::SyncAll)).commit()?;
        self.commits.db().delete_keyspace(dedup)?;
        self.commits.db().delete_keyspace(index)?;
        Ok(())
    }

    /// Rewrites a ledger written when every job had an entry in a `jobs` index (key → due):
    /// each pending aggregate's slot gets its job's queue key (the due, as stored in the index,
    /// and the key), and the index is removed.
    fn migrate_jobs_index(&self) -> anyhow::Result<()> {
        if !self.commits.db().keyspace_exists("jobs") {
            return Ok(());
        }
        let jobs = self
            .commits
            .db()
            .keyspace("jobs", KeyspaceCreateOptions::default)?;
        let mut batch = self.batch();
        for entry in self.aggregates.iter() {
            let (slot, key) = entry.into_inner()?;
            if slot.starts_with(b"job\0") {
                continue;
            }
            match jobs.get(&key)? {
                Some(due) => batch.insert(&self.aggregates, slot, [&due[..], &key].concat()),
                None => batch.remove(&self.aggregates, slot),
            }
        }
        batch.durability(Some(PersistMode::SyncAll)).commit()?;
        self.commits.db().delete_keyspace(jobs)?;
        Ok(())
    }

    fn record(&self, keys: &KeyRing, id: &str) -> Result<Option<Record>, StoreError> {
        let Some(sealed) = self.records.get(id).map_err(failed)? else {
            return Ok(None);
        };
        open_record(keys, id, &sealed).map(Some)
    }

    /// Removes up to `limit` claims expired by `now_ms` from the journal (and from memory, if
    /// still there); returns how many it removed, not counting the entries of contents claimed
    /// again since, and whether there may be more.
    fn sweep_claims(&self, now_ms: u64, limit: usize) -> Result<(u64, bool), StoreError> {
        let (mut batch, mut seen, mut removed) = (self.batch(), 0, 0);
        let mut index = self.claim_index.lock().expect("claim index lock");
        let end = now_ms.saturating_add(1).to_be_bytes();
        for entry in self.claims.range(..end).take(limit) {
            let key = entry.key().map_err(failed)?;
            seen += 1;
            if let Some((expiry, digest)) = claim_key_parts(&key) {
                let claimed_again = index.expiry(&digest).is_some_and(|held| held > expiry);
                index.drop_claim(&digest, expiry);
                removed += u64::from(!claimed_again);
            }
            batch.remove(&self.claims, key);
        }
        self.commit(batch)?;
        Ok((removed, seen == limit))
    }

    /// Removes the settled records among up to `limit` made before `before` (a notification
    /// id bound, see [`id_bound`]), after the id `from`; returns how many it removed and the id
    /// to go on from, if there may be more.
    fn sweep_records(
        &self,
        keys: &KeyRing,
        from: Option<Vec<u8>>,
        before: &str,
        limit: usize,
    ) -> Result<(u64, Option<Vec<u8>>), StoreError> {
        let (mut batch, mut seen, mut removed, mut last) = (self.batch(), 0, 0, None);
        let lower = from.map_or(Bound::Unbounded, Bound::Excluded);
        let range = (lower, Bound::Excluded(before.as_bytes().to_vec()));
        for entry in self.records.range(range).take(limit) {
            let (id, sealed) = entry.into_inner().map_err(failed)?;
            seen += 1;
            last = Some(id.to_vec());
            let id = String::from_utf8_lossy(&id).into_owned();
            // One that cannot be read (sealed with a key no longer configured) is left alone.
            let Ok(record) = open_record(keys, &id, &sealed) else {
                continue;
            };
            if record.routes.values().all(|state| state.status.is_final()) {
                for provider_id in record
                    .routes
                    .values()
                    .filter_map(|s| s.provider_id.as_ref())
                {
                    batch.remove(&self.provider, provider_id.as_str());
                }
                batch.remove(&self.records, id);
                removed += 1;
            }
        }
        self.commit(batch)?;
        Ok((removed, last.filter(|_| seen == limit)))
    }

    fn put_record(&self, batch: &mut OwnedWriteBatch, keys: &KeyRing, record: &Record) {
        let (id, sealed) = sealed_record(keys, record);
        batch.insert(&self.records, id, sealed);
    }

    /// Queues a job that is not in the queue (a new notification's, or one taken and settled).
    fn enqueue(&self, batch: &mut OwnedWriteBatch, job: &Job, due: u64) {
        self.put_job(batch, job, due);
        self.lower_floor(due);
    }

    /// Puts `job` in the queue, due at `due`, once `batch` commits; the floor must be lowered
    /// to `due` under the write lock before that (see [`Spaces::floor`]).
    fn put_job(&self, batch: &mut OwnedWriteBatch, job: &Job, due: u64) {
        batch.insert(&self.queue, queue_key(due, &job.key()), to_json(job));
    }

    fn lower_floor(&self, due: u64) {
        self.floor.fetch_min(due, Ordering::AcqRel);
    }

    /// Takes a job taken by `take_due` out of the queue (its lease's entry).
    fn dequeue_leased(&self, batch: &mut OwnedWriteBatch, job: &Job) {
        let key = job.key();
        let leased = self.leased.lock().expect("leased jobs lock").remove(&key);
        if let Some(until) = leased {
            batch.remove(&self.queue, queue_key(until, &key));
        }
    }

    /// The aggregated push pending in `slot` (user 0 kind), with the time it is due.
    fn pending_aggregate(&self, slot: &[u8]) -> Result<Option<(Job, u64)>, StoreError> {
        let Some(queued) = self.aggregates.get(slot).map_err(failed)? else {
            return Ok(None);
        };
        let Some(due) = queued.get(..8).map(be_u64) else {
            return Ok(None);
        };
        match self.queue.get(&queued).map_err(failed)? {
            Some(job) => Ok(Some((from_json(&job, "aggregated job")?, due))),
            None => Ok(None),
        }
    }

    /// Applies joins in order, each joining the pending aggregated push of its user's kind or
    /// starting one, and writes what they did in one batch: a later join finds in memory the
    /// push an earlier one started or joined.
    fn join_aggregates(&self, joins: Vec<AggregateJoin>) -> Result<Vec<(Job, bool)>, StoreError> {
        // By slot: the push as the joins so far left it, when it is due, and whether it is new.
        let mut touched: HashMap<Vec<u8>, (Job, u64, bool)> = HashMap::new();
        let mut answers = Vec::with_capacity(joins.len());
        for join in joins {
            let slot = joined(&join.user, &join.kind);
            let pending = match touched.entry(slot) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) => {
                    let found = self.pending_aggregate(entry.key())?;
                    entry.insert(match found {
                        Some((job, due)) => (job, due, false),
                        None => {
                            let job = Job {
                                notification: join.notification,
                                route: join.route,
                                user: join.user,
                                attempts: 0,
                                count: 0,
                            };
                            (job, join.due_ms, true)
                        }
                    })
                }
            };
            let (job, _, new) = pending;
            job.count += 1;
            // Only the join that started the push owns it (its record queues it).
            answers.push((job.clone(), *new && job.count == 1));
        }
        let mut batch = self.batch();
        for (slot, (job, due, new)) in touched {
            let key = job.key();
            if new {
                batch.insert(&self.aggregates, slot.clone(), queue_key(due, &key));
                // Taking the job to send it frees the slot (see `take_due`): what comes after
                // starts the next aggregate rather than joining one already sent.
                batch.insert(&self.aggregates, joined("job", &key), slot);
                self.enqueue(&mut batch, &job, due);
            } else {
                batch.insert(&self.queue, queue_key(due, &key), to_json(&job));
            }
        }
        self.commit(batch)?;
        Ok(answers)
    }

    fn pref<T: DeserializeOwned>(
        &self,
        kind: &str,
        user: &str,
        keys: Option<&KeyRing>,
    ) -> Result<Option<T>, StoreError> {
        let key = joined(kind, user);
        let Some(bytes) = self.prefs.get(&key).map_err(failed)? else {
            return Ok(None);
        };
        let plain = match keys {
            Some(keys) => keys
                .open(&bytes, &key)
                .map_err(|e| StoreError::Unreadable(format!("{kind} of {user}: {e}")))?,
            None => bytes.to_vec(),
        };
        from_json(&plain, kind).map(Some)
    }

    /// The user's preferences as stored.
    fn read_preferences(&self, keys: &KeyRing, user: &str) -> Result<Preferences, StoreError> {
        Ok(Preferences {
            quiet_hours: self.pref("quiet", user, None)?,
            consent: self.pref("consent", user, None)?.unwrap_or_default(),
            bindings: self.pref("bindings", user, Some(keys))?.unwrap_or_default(),
        })
    }

    /// After a write of the user's preferences, under the write lock: the cache gets the whole
    /// new value (see [`PreferenceCache`]).
    fn cache_preferences(&self, keys: &KeyRing, user: &str) -> Result<(), StoreError> {
        let written = self.read_preferences(keys, user)?;
        self.preferences.put(user, written);
        Ok(())
    }

    fn set_pref(
        &self,
        kind: &str,
        user: &str,
        value: &impl Serialize,
        keys: Option<&KeyRing>,
    ) -> Result<(), StoreError> {
        let key = joined(kind, user);
        let bytes = match keys {
            Some(keys) => keys.seal(&to_json(value), &key),
            None => to_json(value),
        };
        let mut batch = self.batch();
        batch.insert(&self.prefs, key, bytes);
        self.commit(batch)
    }
}

#[async_trait]
impl Ledger for EmbeddedLedger {
    async fn claim_dedup(
        &self,
        claims: &[DedupClaim],
        now_ms: u64,
        window_ms: u64,
    ) -> Result<Vec<bool>, StoreError> {
        // An empty window holds no claim.
        if window_ms == 0 {
            return Ok(vec![true; claims.len()]);
        }
        let expiry = now_ms + window_ms;
        // Each claim's digest and journal entry, made before taking the write lock.
        let claims: Vec<_> = claims
            .iter()
            .map(|claim| {
                let digest = claim_digest(&claim.user, &claim.key);
                (digest, claim_entry(expiry, &digest, &claim.by, &claim.user))
            })
            .collect();
        self.run(Access::WriteBeforeCreate, move |spaces, _| {
            let mut index = spaces.claim_index.lock().expect("claim index lock");
            index
                .make_room(claims.len(), now_ms, window_ms)
                .map_err(|full| {
                    StoreError::Unavailable(format!(
                        "{} dedup claims are held, the most allowed (notify.max_dedup_claims): retry later",
                        full.0
                    ))
                })?;
            let mut batch = spaces.batch();
            let mut taken = Vec::new();
            let fresh = claims
                .into_iter()
                .map(|(digest, (key, value))| {
                    // A content earlier in the batch is held by now too.
                    let first = !index.held(&digest, now_ms);
                    if first {
                        index.hold(digest, expiry);
                        taken.push(digest);
                        batch.insert(&spaces.claims, key, value);
                    }
                    first
                })
                .collect();
            if let Err(e) = spaces.commit(batch) {
                // Not journaled, so not held either: the sender is told to retry, and the
                // retry must not find its content claimed.
                for digest in &taken {
                    index.drop_claim(digest, expiry);
                }
                return Err(e);
            }
            Ok(fresh)
        })
        .await
    }

    async fn release_dedup(&self, claims: &[DedupClaim]) -> Result<(), StoreError> {
        let claims = claims.to_vec();
        self.run(Access::Write, move |spaces, _| {
            let mut index = spaces.claim_index.lock().expect("claim index lock");
            let mut batch = spaces.batch();
            for claim in claims {
                let digest = claim_digest(&claim.user, &claim.key);
                let Some(expiry) = index.expiry(&digest) else {
                    continue;
                };
                let key = claim_key(expiry, &digest);
                let Some(value) = spaces.claims.get(&key).map_err(failed)? else {
                    continue;
                };
                if claim_value_parts(&value).0 == claim.by.as_bytes() {
                    index.drop_claim(&digest, expiry);
                    batch.remove(&spaces.claims, key);
                }
            }
            spaces.commit(batch)
        })
        .await
    }

    async fn create(&self, records: Vec<NewRecord>) -> Result<Vec<Record>, StoreError> {
        // Sealing and filling the batch are most of the work: done before taking the write
        // lock, which other batches and the sending worker wait for. Nothing else writes these
        // keys: records and jobs are new.
        let (batch, earliest, records) = self
            .run(Access::Read, move |spaces, keys| {
                let mut batch = spaces.batch();
                let mut earliest = u64::MAX;
                for new in &records {
                    let (id, sealed) = sealed_record(keys, &new.record);
                    batch.insert(&spaces.records, id, sealed);
                    for (job, due) in &new.jobs {
                        spaces.put_job(&mut batch, job, *due);
                        earliest = earliest.min(*due);
                    }
                }
                Ok((batch, earliest, records))
            })
            .await?;
        self.run(Access::Write, move |spaces, _| {
            spaces.lower_floor(earliest);
            spaces.commit(batch)?;
            Ok(records.into_iter().map(|new| new.record).collect())
        })
        .await
    }

    async fn record(&self, id: &str) -> Result<Option<Record>, StoreError> {
        let id = id.to_string();
        self.run(Access::Read, move |spaces, keys| spaces.record(keys, &id))
            .await
    }

    async fn take_due(
        &self,
        now_ms: u64,
        limit: usize,
        lease_ms: u64,
    ) -> Result<Vec<Job>, StoreError> {
        self.run(Access::Write, move |spaces, _| {
            let floor = spaces.floor.load(Ordering::Acquire);
            let mut due = Vec::new();
            let (mut last_due, mut entries) = (floor, Vec::new());
            for entry in spaces
                .queue
                .range(queue_key(floor, "")..=queue_key(now_ms, "\u{7f}"))
                .take(limit)
            {
                let (key, value) = entry.into_inner().map_err(failed)?;
                last_due = be_u64(&key[..8]);
                due.push(from_json::<Job>(&value, "queued job")?);
                entries.push(key);
            }
            // Everything due before `last_due` was taken; with fewer than `limit`, everything
            // due by now was.
            let new_floor = if due.len() < limit {
                now_ms + 1
            } else {
                last_due
            };
            spaces.floor.store(new_floor, Ordering::Release);
            if due.is_empty() {
                return Ok(due);
            }
            let mut batch = spaces.batch();
            let mut leased = spaces.leased.lock().expect("leased jobs lock");
            let until = now_ms + lease_ms;
            for (job, entry) in due.iter().zip(entries) {
                batch.remove(&spaces.queue, entry);
                spaces.enqueue(&mut batch, job, until);
                leased.insert(job.key(), until);
                let reverse = joined("job", &job.key());
                if let Some(slot) = spaces.aggregates.get(&reverse).map_err(failed)? {
                    batch.remove(&spaces.aggregates, slot);
                    batch.remove(&spaces.aggregates, reverse);
                }
            }
            spaces.commit(batch)?;
            Ok(due)
        })
        .await
    }

    async fn settle(
        &self,
        job: &Job,
        state: RouteState,
        next_due: Option<u64>,
    ) -> Result<(), StoreError> {
        let job = job.clone();
        self.run(Access::Write, move |spaces, keys| {
            let mut batch = spaces.batch();
            if let Some(mut record) = spaces.record(keys, &job.notification)? {
                // A push put back for the provider's rate keeps its state: the record stays.
                if record.routes.get(&job.route) != Some(&state) {
                    record.routes.insert(job.route, state);
                    spaces.put_record(&mut batch, keys, &record);
                }
            }
            spaces.dequeue_leased(&mut batch, &job);
            if let Some(due) = next_due {
                spaces.enqueue(&mut batch, &job, due);
            }
            spaces.commit(batch)
        })
        .await
    }

    async fn aggregate(&self, joins: &[AggregateJoin]) -> Result<Vec<(Job, bool)>, StoreError> {
        let joins = joins.to_vec();
        self.run(Access::WriteBeforeCreate, move |spaces, _| {
            spaces.join_aggregates(joins)
        })
        .await
    }

    async fn index_provider_id(
        &self,
        provider_id: &str,
        notification: &str,
        route: Route,
    ) -> Result<(), StoreError> {
        let (provider_id, value) = (
            provider_id.to_string(),
            joined(notification, route.as_str()),
        );
        self.run(Access::Write, move |spaces, _| {
            let mut batch = spaces.batch();
            batch.insert(&spaces.provider, provider_id.as_str(), value);
            spaces.commit(batch)
        })
        .await
    }

    async fn by_provider_id(
        &self,
        provider_id: &str,
    ) -> Result<Option<(String, Route)>, StoreError> {
        let provider_id = provider_id.to_string();
        self.run(Access::Read, move |spaces, _| {
            let Some(value) = spaces.provider.get(&provider_id).map_err(failed)? else {
                return Ok(None);
            };
            let text = String::from_utf8_lossy(&value).into_owned();
            let Some((id, route)) = text.split_once('\0') else {
                return Ok(None);
            };
            let route = match route {
                "wechat" => Route::Wechat,
                "qiuqiu" => Route::Qiuqiu,
                _ => Route::InApp,
            };
            Ok(Some((id.to_string(), route)))
        })
        .await
    }

    async fn set_route(&self, id: &str, route: Route, state: RouteState) -> Result<(), StoreError> {
        let id = id.to_string();
        self.run(Access::Write, move |spaces, keys| {
            let Some(mut record) = spaces.record(keys, &id)? else {
                return Ok(());
            };
            record.routes.insert(route, state);
            let mut batch = spaces.batch();
            spaces.put_record(&mut batch, keys, &record);
            spaces.commit(batch)
        })
        .await
    }

    async fn count_quota(&self, quota: &str, day: &str, limit: u64) -> Result<bool, StoreError> {
        let key = joined(quota, day);
        self.run(Access::Write, move |spaces, _| {
            let used = spaces
                .quota
                .get(&key)
                .map_err(failed)?
                .map_or(0, |v| be_u64(&v));
            if used >= limit {
                return Ok(false);
            }
            let mut batch = spaces.batch();
            batch.insert(&spaces.quota, key, (used + 1).to_be_bytes());
            spaces.commit(batch)?;
            Ok(true)
        })
        .await
    }

    async fn preferences(&self, users: &[String]) -> Result<Vec<Arc<Preferences>>, StoreError> {
        let cache = &self.spaces.preferences;
        let mut found: Vec<Option<Arc<Preferences>>> = users.iter().map(|u| cache.get(u)).collect();
        let missing: Vec<(usize, String)> = (found.iter().enumerate())
            .filter(|(_, held)| held.is_none())
            .map(|(i, _)| (i, users[i].clone()))
            .collect();
        if !missing.is_empty() {
            let read = self
                .run(Access::Read, move |spaces, keys| {
                    (missing.into_iter())
                        .map(|(i, user)| {
                            let read = Arc::new(spaces.read_preferences(keys, &user)?);
                            spaces.preferences.fill(&user, read.clone());
                            Ok((i, read))
                        })
                        .collect::<Result<Vec<_>, StoreError>>()
                })
                .await?;
            for (i, preferences) in read {
                found[i] = Some(preferences);
            }
        }
        Ok(found.into_iter().map(Option::unwrap_or_default).collect())
    }

    async fn set_quiet_hours(&self, user: &str, hours: &QuietHours) -> Result<(), StoreError> {
        let (user, hours) = (user.to_string(), hours.clone());
        self.run(Access::Write, move |spaces, keys| {
            spaces.set_pref("quiet", &user, &hours, None)?;
            spaces.cache_preferences(keys, &user)
        })
        .await
    }

    async fn set_consent(&self, user: &str, consent: &Consent) -> Result<(), StoreError> {
        let (user, consent) = (user.to_string(), *consent);
        self.run(Access::Write, move |spaces, keys| {
            spaces.set_pref("consent", &user, &consent, None)?;
            spaces.cache_preferences(keys, &user)
        })
        .await
    }

    async fn set_bindings(&self, user: &str, bindings: &Bindings) -> Result<(), StoreError> {
        let (user, bindings) = (user.to_string(), bindings.clone());
        self.run(Access::Write, move |spaces, keys| {
            spaces.set_pref("bindings", &user, &bindings, Some(keys))?;
            spaces.cache_preferences(keys, &user)
        })
        .await
    }

    fn dedup_claims_held(&self) -> Option<u64> {
        // Called on async threads: while a claim, a sweep or a user's deletion holds the index
        // (on the blocking pool), the count is skipped rather than waited for.
        let index = self.spaces.claim_index.try_lock().ok()?;
        Some(index.len() as u64)
    }

    async fn queue_depth(&self) -> Result<u64, StoreError> {
        Ok(self.spaces.queue.approximate_len() as u64)
    }

    async fn sweep(&self, now_ms: u64, records_before_ms: u64) -> Result<LedgerSweep, StoreError> {
        let mut swept = LedgerSweep::default();
        loop {
            let (removed, more) = self
                .run(Access::Write, move |spaces, _| {
                    spaces.sweep_claims(now_ms, SWEEP_CHUNK)
                })
                .await?;
            swept.claims += removed;
            if !more {
                break;
            }
        }
        let (before, mut from) = (id_bound(records_before_ms), None);
        loop {
            let before = before.clone();
            let (removed, next) = self
                .run(Access::Write, move |spaces, keys| {
                    spaces.sweep_records(keys, from, &before, SWEEP_CHUNK)
                })
                .await?;
            swept.records += removed;
            match next {
                Some(next) => from = Some(next),
                None => return Ok(swept),
            }
        }
    }

    async fn delete_user(&self, user: &str) -> Result<(), StoreError> {
        let user = user.to_string();
        self.run(Access::Write, move |spaces, _| {
            let mut batch = spaces.batch();
            for kind in ["quiet", "consent", "bindings"] {
                batch.remove(&spaces.prefs, joined(kind, &user));
            }
            for entry in spaces.aggregates.prefix(joined(&user, "")) {
                batch.remove(&spaces.aggregates, entry.key().map_err(failed)?);
            }
            // The journal is not kept by user: the user's claims are found among all of them.
            let mut index = spaces.claim_index.lock().expect("claim index lock");
            for entry in spaces.claims.iter() {
                let (key, value) = entry.into_inner().map_err(failed)?;
                if claim_value_parts(&value).1 != user.as_bytes() {
                    continue;
                }
                if let Some((expiry, digest)) = claim_key_parts(&key) {
                    index.drop_claim(&digest, expiry);
                }
                batch.remove(&spaces.claims, key);
            }
            for entry in spaces.queue.iter() {
                let (key, value) = entry.into_inner().map_err(failed)?;
                let job: Job = from_json(&value, "queued job")?;
                if job.user == user {
                    batch.remove(&spaces.queue, key);
                    spaces
                        .leased
                        .lock()
                        .expect("leased jobs lock")
                        .remove(&job.key());
                }
            }
            spaces.commit(batch)?;
            spaces.preferences.put(&user, Preferences::default());
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjall::Database;

    /// A ledger written before the claims journal kept claims in a `dedup` keyspace with a
    /// `claim_expiry` index: its live claims hold on after the upgrade, and both are removed.
    #[tokio::test]
    async fn claims_of_the_earlier_layout_are_moved_into_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let now = crate::session_handle::unix_millis();
        {
            let db = Database::builder(dir.path()).open().unwrap();
            let dedup = db
                .keyspace("dedup", KeyspaceCreateOptions::default)
                .unwrap();
            let index = db
                .keyspace("claim_expiry", KeyspaceCreateOptions::default)
                .unwrap();
            for (user, expiry) in [("alice", now + 60_000), ("bob", now - 1)] {
                let claim = joined(user, "k:1");
                let value = [&expiry.to_be_bytes()[..], b"n1"].concat();
                dedup.insert(&claim, value).unwrap();
                index
                    .insert([&expiry.to_be_bytes()[..], &claim].concat(), [])
                    .unwrap();
            }
            db.persist(PersistMode::SyncAll).unwrap();
        }
        let keys = KeyRing::new(&["k1:000102030405060708090a0b0c0d0e0f".into()]).unwrap();
        let ledger = EmbeddedLedger::open(dir.path(), Arc::new(keys), &Notify::default()).unwrap();
        assert!(!ledger.spaces.commits.db().keyspace_exists("dedup"));
        assert!(!ledger.spaces.commits.db().keyspace_exists("claim_expiry"));
        assert_eq!(ledger.dedup_claims_held(), Some(1), "bob's had expired");
        let claim = |user: &str, by: &str| DedupClaim {
            user: user.into(),
            key: "k:1".into(),
            by: by.into(),
        };
        let fresh = ledger
            .claim_dedup(&[claim("alice", "n2"), claim("bob", "n2")], now, 60_000)
            .await
            .unwrap();
        assert_eq!(fresh, [false, true]);
        ledger.release_dedup(&[claim("alice", "n1")]).await.unwrap();
        assert_eq!(
            ledger
                .claim_dedup(&[claim("alice", "n3")], now, 60_000)
                .await
                .unwrap(),
            [true],
            "released by its claimant, named in the earlier layout"
        );
    }

    /// A ledger written when every job had an entry in a `jobs` index: its pending aggregate
    /// is still joined, and taken when due.
    #[tokio::test]
    async fn aggregates_of_the_earlier_layout_are_still_joined() {
        use crate::notify::model::Route;
        let dir = tempfile::tempdir().unwrap();
        let job = Job {
            notification: "n1".into(),
            route: Route::Qiuqiu,
            user: "alice".into(),
            attempts: 0,
            count: 1,
        };
        {
            let db = Database::builder(dir.path()).open().unwrap();
            let space = |name| db.keyspace(name, KeyspaceCreateOptions::default).unwrap();
            let (aggregates, queue, jobs) = (space("aggregates"), space("queue"), space("jobs"));
            let slot = joined("alice", "friend_request");
            aggregates.insert(&slot, job.key()).unwrap();
            aggregates.insert(joined("job", &job.key()), &slot).unwrap();
            queue
                .insert(queue_key(500, &job.key()), to_json(&job))
                .unwrap();
            jobs.insert(job.key(), 500u64.to_be_bytes()).unwrap();
            db.persist(PersistMode::SyncAll).unwrap();
        }
        let keys = KeyRing::new(&["k1:000102030405060708090a0b0c0d0e0f".into()]).unwrap();
        let ledger = EmbeddedLedger::open(dir.path(), Arc::new(keys), &Notify::default()).unwrap();
        assert!(!ledger.spaces.commits.db().keyspace_exists("jobs"));
        let join = AggregateJoin {
            user: "alice".into(),
            kind: "friend_request".into(),
            notification: "n2".into(),
            route: Route::Qiuqiu,
            due_ms: 900,
        };
        let joined = ledger.aggregate(&[join]).await.unwrap();
        assert_eq!(joined[0].0.notification, "n1");
        assert_eq!((joined[0].0.count, joined[0].1), (2, false));
        let taken = ledger.take_due(500, 10, 1000).await.unwrap();
        assert_eq!(taken.len(), 1);
        assert_eq!((taken[0].key(), taken[0].count), (job.key(), 2));
    }
}
