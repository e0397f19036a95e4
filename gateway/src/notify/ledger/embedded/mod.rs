//! The embedded ledger: fjall keyspaces in `DATA_DIR/notify`. Writes that read first (claims,
//! settling, aggregating) are serialized by one lock: this is the single-node backend. Each
//! write is one journal batch; the fsync that makes it durable comes after the lock is released
//! and covers every batch written before it (group commit,
//! [`crate::infra::group_commit::GroupCommit`]: it does not hold fjall's journal lock, so the
//! next writers commit meanwhile), and no write is answered before it — except claims and
//! aggregate joins, which become durable with the `create` that follows them (see
//! [`Ledger::claim_dedup`]).
//!
//! [`spaces`] lays out the keyspaces; each concern has its file: [`claims`] (dedup), [`queue`]
//! (pushes and their leases), [`aggregates`], [`records`] (and provider ids), [`preferences`]
//! and [`quota`]. This file runs the calls on the blocking pool under the write lock.

mod aggregates;
mod claims;
mod preferences;
mod queue;
mod quota;
mod records;
mod spaces;

use super::{AggregateJoin, DedupClaim, Ledger, LedgerSweep, NewRecord};
use crate::infra::cipher::KeyRing;
use crate::infra::time::unix_millis;
use crate::notify::model::{Job, Preferences};
use crate::store::StoreError;
use async_trait::async_trait;
use broker_config::Notify;
use protocol::notification::{Bindings, Consent, Provider, QuietHours, Record, Route, RouteState};
use spaces::{failed, Spaces};
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

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

/// Entries a sweep takes per turn of the write lock: claims and decisions go on in between.
const SWEEP_CHUNK: usize = 10_000;

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

impl EmbeddedLedger {
    /// Opens (creating when missing) the ledger in directory `path`, with what `settings` says
    /// of its memory: `preferences_cache` users' preferences and up to `max_dedup_claims` claims
    /// held, and `ledger_memtable_size` bytes per keyspace before it is flushed (fixed when the
    /// ledger is created).
    pub fn open(path: &Path, keys: Arc<KeyRing>, settings: &Notify) -> anyhow::Result<Self> {
        let spaces = Spaces::open(path, settings)?;
        spaces.load_claims(unix_millis())?;
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
        // Hashed before taking the write lock.
        let claims = claims::prepare(claims, now_ms + window_ms);
        self.run(Access::WriteBeforeCreate, move |spaces, _| {
            spaces.claim(claims, now_ms, window_ms)
        })
        .await
    }

    async fn release_dedup(&self, claims: &[DedupClaim]) -> Result<(), StoreError> {
        let claims = claims.to_vec();
        self.run(Access::Write, move |spaces, _| spaces.release(claims))
            .await
    }

    async fn create(&self, records: Vec<NewRecord>) -> Result<Vec<Record>, StoreError> {
        // Sealing and filling the batch are most of the work: done before taking the write
        // lock, which other batches and the sending worker wait for.
        let (filled, records) = self
            .run(Access::Read, move |spaces, keys| {
                Ok((spaces.fill(keys, &records), records))
            })
            .await?;
        self.run(Access::Write, move |spaces, _| {
            spaces.lower_floor(filled.earliest_due);
            spaces.commit(filled.batch)?;
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
            spaces.take_due(now_ms, limit, lease_ms)
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
            spaces.settle(keys, &job, state, next_due)
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
        provider: Provider,
    ) -> Result<(), StoreError> {
        let (provider_id, notification) = (provider_id.to_string(), notification.to_string());
        self.run(Access::Write, move |spaces, _| {
            spaces.index_provider_id(&provider_id, &notification, provider)
        })
        .await
    }

    async fn by_provider_id(
        &self,
        provider_id: &str,
    ) -> Result<Option<(String, Provider)>, StoreError> {
        let provider_id = provider_id.to_string();
        self.run(Access::Read, move |spaces, _| {
            spaces.by_provider_id(&provider_id)
        })
        .await
    }

    async fn set_route(&self, id: &str, route: Route, state: RouteState) -> Result<(), StoreError> {
        let id = id.to_string();
        self.run(Access::Write, move |spaces, keys| {
            spaces.set_route(keys, &id, route, state)
        })
        .await
    }

    async fn count_quota(&self, quota: &str, day: &str, limit: u64) -> Result<bool, StoreError> {
        let (quota, day) = (quota.to_string(), day.to_string());
        self.run(Access::Write, move |spaces, _| {
            spaces.count_quota(&quota, &day, limit)
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
            spaces.set_pref(keys, "quiet", &user, &hours, false)
        })
        .await
    }

    async fn set_consent(&self, user: &str, consent: &Consent) -> Result<(), StoreError> {
        let (user, consent) = (user.to_string(), *consent);
        self.run(Access::Write, move |spaces, keys| {
            spaces.set_pref(keys, "consent", &user, &consent, false)
        })
        .await
    }

    async fn set_bindings(&self, user: &str, bindings: &Bindings) -> Result<(), StoreError> {
        let (user, bindings) = (user.to_string(), bindings.clone());
        self.run(Access::Write, move |spaces, keys| {
            spaces.set_pref(keys, "bindings", &user, &bindings, true)
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
        let (before, mut from) = (records::id_bound(records_before_ms), None);
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
        self.run(Access::Write, move |spaces, keys| {
            let mut batch = spaces.batch();
            spaces.forget_user_records(&mut batch, keys, &user)?;
            spaces.forget_user_preferences(&mut batch, &user);
            spaces.forget_user_aggregates(&mut batch, &user)?;
            spaces.forget_user_claims(&mut batch, &user)?;
            spaces.forget_user_jobs(&mut batch, &user)?;
            spaces.commit(batch)?;
            spaces.forgot_user_preferences(&user);
            Ok(())
        })
        .await
    }

    async fn close(&self) -> Result<(), StoreError> {
        // Claims and aggregate joins wait for the next durable write: make them durable now.
        self.run(Access::Write, |_, _| Ok(())).await
    }
}
