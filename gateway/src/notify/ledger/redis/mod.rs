//! The Redis ledger: several gateway nodes share one Redis and one notification queue.
//!
//! Keys (`{user}` is a hash tag, as in the Redis store; ids never contain a 0 byte):
//! - `gw:notify:record:<id>` — the record (JSON, sealed with the id as associated data, as the
//!   embedded ledger seals it: it holds the notification's text), expiring after
//!   `notify.record_retention`
//! - the queue, in `store.redis_queue_shards` shards, each under its own hash tag `{queue:N}`; a
//!   user's pushes are all in one shard, picked by a hash of the user (see [`keys::QueueKeys`]):
//!   - `gw:notify:{queue:N}:queue` — a sorted set: job key → when it is due (milliseconds).
//!     Equal times are ordered by job key, as the embedded queue orders them.
//!   - `gw:notify:{queue:N}:jobs` — a hash: job key → job (JSON)
//!   - `gw:notify:{queue:N}:aggregates` — a hash: user 0 kind → key of the pending aggregated
//!     job; `gw:notify:{queue:N}:aggregated` — a hash: job key → that field, to free the slot
//!     when the job is taken (or leaves the queue) and when its user is deleted
//!   - `gw:notify:{queue:N}:of:<user>` — a set of the user's queued job keys, so deleting the
//!     user finds them without reading the whole queue
//! - `gw:notify:provider:<provider id>` — notification 0 provider, expiring like records
//! - `gw:notify:quota:<quota>:<day>` — the day's count, expiring two days after the day's first
//!   send (the day has no colon, so the key names one quota and day only)
//! - `gw:{user}:notify:quiet`, `gw:{user}:notify:consent` — preferences (JSON);
//!   `gw:{user}:notify:bindings` — bindings (JSON, sealed with `bindings` 0 user as associated
//!   data, as the embedded ledger seals them: they hold openids)
//! - `gw:{user}:notify:dedup:<key>` — a dedup claim (the claiming notification's id), expiring
//!   at the end of its window
//! - `gw:{user}:notify:claims` — a sorted set: dedup key → when its claim expires (Redis's
//!   clock), so deleting the user finds the claims without scanning the keyspace
//! - `gw:{user}:notify:records` — a set of the ids of the user's records, for deleting the user
//!
//! Every script and transaction touches the keys of one hash slot — a user's, or one queue
//! shard's — so the ledger runs on one Redis and on a Redis Cluster alike. Workers take the
//! oldest due pushes of all shards together (see `take_due`).
//!
//! Atomicity across nodes: claims are `SET NX`; taking due jobs, joining an aggregate, moving a
//! job and counting a quota are Lua scripts, so two nodes never take the same job within its
//! lease, never start two aggregates for one user and kind, and never count past a limit.
//! Records are sealed, so a script cannot change one in place: a route's state is changed by
//! reading the record, then a script that writes the new record only if it is still the one
//! read, and otherwise is retried from the read. Two nodes settling the two routes of one
//! notification at once thus both keep their state, where a blind write would lose one.
//!
//! A record and its jobs are in different slots, so they are written one after the other, the
//! record first: a new record's jobs are queued once the record is written (a worker never
//! takes a job whose record is not there yet), and a settled route's job is moved once the
//! route's state is written. A crash (or an outage) in between leaves a new record whose pushes
//! were never queued — its submission was answered with an error — or a settled job still in the
//! queue, which a worker takes again once its lease ends: a push sent again carries the same
//! idempotency key (see the channels), so the provider delivers it once.
//!
//! Durability and outages are as in the Redis store (`store::redis`): every request is bounded
//! by [`REQUEST_TIMEOUT`](crate::infra::redis::REQUEST_TIMEOUT) and fails as unavailable while
//! Redis is away; a request that timed out may still have been executed.

mod keys;
mod scripts;

use super::{
    provider_entry, read_provider_entry, AggregateJoin, DedupClaim, Ledger, LedgerSweep, NewRecord,
};
use crate::infra::cipher::KeyRing;
use crate::infra::redis::{bounded, connect, Endpoint, Redis};
use crate::notify::model::{Job, Preferences};
use crate::store::StoreError;
use async_trait::async_trait;
use keys::*;
use protocol::notification::{Bindings, Consent, Provider, QuietHours, Record, Route, RouteState};
use scripts::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub struct RedisLedger {
    redis: Redis,
    /// The queue's shards (`store.redis_queue_shards`).
    shards: u32,
    keys: Arc<KeyRing>,
    /// Records and provider ids expire this long after they are written
    /// (`notify.record_retention`); a record's rewrites keep its expiry.
    retention_ms: u64,
}

fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("ledger values serialize")
}

fn from_json<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Unreadable(format!("{what}: {e}")))
}

/// [`MOVE`] of `job` (`queue` at `due`, or `dequeue`), in the shard of its user.
fn move_job(job: &Job, due: Option<u64>, shards: u32) -> redis::ScriptInvocation<'static> {
    let shard = QueueKeys::of_user(&job.user, shards);
    let mut call = MOVE.key(&shard.queue);
    call.key(&shard.jobs)
        .key(shard.jobs_of(&job.user))
        .key(&shard.aggregates)
        .key(&shard.aggregated);
    match due {
        Some(due) => call.arg("queue").arg(job.key()).arg(due).arg(to_json(job)),
        None => call.arg("dequeue").arg(job.key()),
    };
    call
}

impl RedisLedger {
    /// Connects to Redis at `endpoint`, failing when it cannot be reached now; the queue is in
    /// `shards` shards.
    pub async fn open(
        endpoint: &Endpoint,
        shards: u32,
        keys: Arc<KeyRing>,
        record_retention: Duration,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            redis: connect(endpoint).await?,
            shards: shards.max(1),
            keys,
            retention_ms: record_retention.as_millis() as u64,
        })
    }

    fn open_record(&self, id: &str, sealed: &[u8]) -> Result<Record, StoreError> {
        let plain = self
            .keys
            .open(sealed, id.as_bytes())
            .map_err(|e| StoreError::Unreadable(format!("notification {id}: {e}")))?;
        from_json(&plain, "notification record")
    }

    fn seal_record(&self, record: &Record) -> Vec<u8> {
        let id = &record.notification.id;
        self.keys.seal(to_json(record).as_bytes(), id.as_bytes())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        bounded(
            redis::cmd("GET")
                .arg(key)
                .query_async(&mut self.redis.clone()),
        )
        .await
        .map_err(StoreError::from)
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        bounded(
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .exec_async(&mut self.redis.clone()),
        )
        .await
        .map_err(StoreError::from)
    }

    fn open_bindings(&self, user: &str, sealed: &[u8]) -> Result<Bindings, StoreError> {
        let plain = self
            .keys
            .open(sealed, &bindings_aad(user))
            .map_err(|e| StoreError::Unreadable(format!("bindings of {user}: {e}")))?;
        from_json(&plain, "bindings")
    }

    /// Removes the user's notification records and their provider ids (each a key of its own,
    /// on whichever shard), then the index of them.
    async fn delete_records(&self, keys: &UserKeys) -> Result<(), StoreError> {
        let mut redis = self.redis.clone();
        let ids: Vec<String> = bounded(
            redis::cmd("SMEMBERS")
                .arg(&keys.records)
                .query_async(&mut redis),
        )
        .await?;
        for id in ids {
            let mut doomed = vec![record_key(&id)];
            // One that cannot be read (expired, or sealed with a key no longer configured) has
            // no provider ids to find.
            if let Some(Ok(record)) =
                (self.get(&doomed[0]).await?).map(|sealed| self.open_record(&id, &sealed))
            {
                doomed.extend(
                    (record.routes.values())
                        .filter_map(|state| state.provider_id.as_deref())
                        .map(provider_key),
                );
            }
            for key in doomed {
                bounded(redis::cmd("DEL").arg(key).exec_async(&mut redis)).await?;
            }
        }
        bounded(redis::cmd("DEL").arg(&keys.records).exec_async(&mut redis)).await?;
        Ok(())
    }

    /// Sets one route's state of record `id` if the record did not change since it was read
    /// (else reads it again: see the module doc), then applies `queue`. Without a record, or
    /// when the route already has that state, only the queue change applies.
    async fn rewrite(
        &self,
        id: &str,
        route: Route,
        state: &RouteState,
        queue: Option<redis::ScriptInvocation<'_>>,
    ) -> Result<(), StoreError> {
        let key = record_key(id);
        let mut written = false;
        for _ in 0..REWRITE_ATTEMPTS {
            let Some(read) = self.get(&key).await? else {
                written = true;
                break;
            };
            let mut record = self.open_record(id, &read)?;
            // A push put back unchanged (over the provider's rate) only moves in the queue.
            if record.routes.insert(route, state.clone()).as_ref() == Some(state) {
                written = true;
                break;
            }
            let mut rewrite = REWRITE.key(&key);
            rewrite.arg(&read).arg(self.seal_record(&record));
            if bounded(rewrite.invoke_async(&mut self.redis.clone())).await? {
                written = true;
                break;
            }
        }
        if !written {
            return Err(StoreError::Unavailable(format!(
                "notification {id} kept changing while being updated ({REWRITE_ATTEMPTS} attempts)"
            )));
        }
        if let Some(queue) = queue {
            bounded(queue.invoke_async::<()>(&mut self.redis.clone())).await?;
        }
        Ok(())
    }

    /// Removes the user's dedup claims, a page at a time, until none is left: a claim made
    /// meanwhile is indexed in the same step as it is made, so it is found by the next page.
    async fn delete_claims(&self, keys: &UserKeys) -> Result<(), StoreError> {
        loop {
            let claimed: Vec<String> = bounded(
                redis::cmd("ZRANGE")
                    .arg(&keys.claims)
                    .arg(0)
                    .arg(CLAIMS_PAGE - 1)
                    .query_async(&mut self.redis.clone()),
            )
            .await?;
            if claimed.is_empty() {
                return Ok(());
            }
            let claims: Vec<String> = claimed.iter().map(|key| keys.claim(key)).collect();
            bounded(
                redis::pipe()
                    .atomic()
                    .del(claims)
                    .ignore()
                    .zrem(&keys.claims, claimed)
                    .ignore()
                    .exec_async(&mut self.redis.clone()),
            )
            .await?;
        }
    }
}

#[async_trait]
impl Ledger for RedisLedger {
    /// The window is timed by Redis's clock, not by `now_ms`: nodes' clocks may differ, and a
    /// node whose clock is ahead must not end another node's claim early.
    async fn claim_dedup(
        &self,
        claims: &[DedupClaim],
        _now_ms: u64,
        window_ms: u64,
    ) -> Result<Vec<bool>, StoreError> {
        // An empty window holds no claim (as in the embedded ledger); Redis refuses PX 0.
        if window_ms == 0 || claims.is_empty() {
            return Ok(vec![true; claims.len()]);
        }
        // One round trip; Redis runs the scripts in order, so a repeated claim finds the first.
        let mut pipe = redis::pipe();
        pipe.load_script(&CLAIM).ignore();
        for claim in claims {
            let keys = UserKeys::of(&claim.user);
            pipe.invoke_script(
                CLAIM
                    .key(keys.claim(&claim.key))
                    .key(&keys.claims)
                    .arg(window_ms)
                    .arg(&claim.key)
                    .arg(&claim.by),
            );
        }
        bounded(pipe.query_async(&mut self.redis.clone()))
            .await
            .map_err(StoreError::from)
    }

    async fn release_dedup(&self, claims: &[DedupClaim]) -> Result<(), StoreError> {
        if claims.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.load_script(&RELEASE).ignore();
        for claim in claims {
            let keys = UserKeys::of(&claim.user);
            pipe.invoke_script(
                RELEASE
                    .key(keys.claim(&claim.key))
                    .key(&keys.claims)
                    .arg(&claim.by)
                    .arg(&claim.key),
            )
            .ignore();
        }
        bounded(pipe.exec_async(&mut self.redis.clone())).await?;
        Ok(())
    }

    /// The records first, then their jobs: see the module doc.
    async fn create(&self, records: Vec<NewRecord>) -> Result<Vec<Record>, StoreError> {
        let mut pipe = redis::pipe();
        let mut queue = redis::pipe();
        // A pipelined script call is not retried on NOSCRIPT: see the store's writer.
        queue.load_script(&MOVE).ignore();
        for new in &records {
            let record = &new.record;
            let index = UserKeys::of(&record.notification.user).records;
            pipe.cmd("SET")
                .arg(record_key(&record.notification.id))
                .arg(self.seal_record(record))
                .arg("PX")
                .arg(self.retention_ms)
                .ignore()
                .sadd(&index, &record.notification.id)
                .ignore()
                .pexpire(&index, self.retention_ms as i64)
                .ignore();
            for (job, due) in &new.jobs {
                queue
                    .invoke_script(&move_job(job, Some(*due), self.shards))
                    .ignore();
            }
        }
        bounded(pipe.exec_async(&mut self.redis.clone())).await?;
        bounded(queue.exec_async(&mut self.redis.clone())).await?;
        Ok(records.into_iter().map(|new| new.record).collect())
    }

    async fn record(&self, id: &str) -> Result<Option<Record>, StoreError> {
        match self.get(&record_key(id)).await? {
            Some(sealed) => self.open_record(id, &sealed).map(Some),
            None => Ok(None),
        }
    }

    async fn take_due(
        &self,
        now_ms: u64,
        limit: usize,
        lease_ms: u64,
    ) -> Result<Vec<Job>, StoreError> {
        // ZRANGEBYSCORE's LIMIT takes a count of 0 literally, but a negative one as "all".
        if limit == 0 {
            return Ok(Vec::new());
        }
        // The oldest due of every shard, merged: how many to take from each so that the call
        // takes the queue's oldest, whichever shards they are in. Another node may take some in
        // between; a shard then gives its next due ones, or fewer.
        let mut peek = redis::pipe();
        for shard in 0..self.shards {
            peek.cmd("ZRANGEBYSCORE")
                .arg(QueueKeys::shard(shard).queue)
                .arg("-inf")
                .arg(now_ms)
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(0)
                .arg(limit);
        }
        let due: Vec<Vec<(String, u64)>> =
            bounded(peek.query_async(&mut self.redis.clone())).await?;
        let mut oldest: Vec<(u64, &str, u32)> = (due.iter().zip(0..))
            .flat_map(|(jobs, shard)| {
                jobs.iter()
                    .map(move |(key, due)| (*due, key.as_str(), shard))
            })
            .collect();
        oldest.sort_unstable();
        let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
        for (_, _, shard) in oldest.into_iter().take(limit) {
            *counts.entry(shard).or_default() += 1;
        }
        if counts.is_empty() {
            return Ok(Vec::new());
        }
        let mut take = redis::pipe();
        take.load_script(&TAKE).ignore();
        for (&shard, &count) in &counts {
            let shard = QueueKeys::shard(shard);
            take.invoke_script(
                TAKE.key(&shard.queue)
                    .key(&shard.jobs)
                    .key(&shard.aggregates)
                    .key(&shard.aggregated)
                    .arg(now_ms)
                    .arg(count)
                    .arg(now_ms + lease_ms),
            );
        }
        let taken: Vec<Vec<(u64, Vec<u8>)>> =
            bounded(take.query_async(&mut self.redis.clone())).await?;
        let mut jobs: Vec<(u64, Job)> = (taken.into_iter().flatten())
            .map(|(due, job)| Ok((due, from_json::<Job>(&job, "queued job")?)))
            .collect::<Result<_, StoreError>>()?;
        jobs.sort_by_cached_key(|(due, job)| (*due, job.key()));
        Ok(jobs.into_iter().map(|(_, job)| job).collect())
    }

    async fn settle(
        &self,
        job: &Job,
        state: RouteState,
        next_due: Option<u64>,
    ) -> Result<(), StoreError> {
        let queue = move_job(job, next_due, self.shards);
        (self.rewrite(&job.notification, job.route(), &state, Some(queue))).await
    }

    async fn aggregate(&self, joins: &[AggregateJoin]) -> Result<Vec<(Job, bool)>, StoreError> {
        let mut joined = Vec::with_capacity(joins.len());
        // One script per join, in order: a later join can find the push an earlier one started.
        for join in joins {
            let job = Job {
                notification: join.notification.clone(),
                provider: join.provider,
                user: join.user.clone(),
                attempts: 0,
                count: 1,
            };
            let shard = QueueKeys::of_user(&join.user, self.shards);
            let (new, job): (bool, Vec<u8>) = bounded(
                AGGREGATE
                    .key(&shard.aggregates)
                    .key(&shard.aggregated)
                    .key(&shard.queue)
                    .key(&shard.jobs)
                    .key(shard.jobs_of(&join.user))
                    .arg(format!("{}\0{}", join.user, join.kind))
                    .arg(job.key())
                    .arg(join.due_ms)
                    .arg(to_json(&job))
                    .invoke_async(&mut self.redis.clone()),
            )
            .await?;
            joined.push((from_json(&job, "aggregated job")?, new));
        }
        Ok(joined)
    }

    async fn index_provider_id(
        &self,
        provider_id: &str,
        notification: &str,
        provider: Provider,
    ) -> Result<(), StoreError> {
        bounded(
            redis::cmd("SET")
                .arg(provider_key(provider_id))
                .arg(provider_entry(notification, provider))
                .arg("PX")
                .arg(self.retention_ms)
                .exec_async(&mut self.redis.clone()),
        )
        .await?;
        Ok(())
    }

    async fn by_provider_id(
        &self,
        provider_id: &str,
    ) -> Result<Option<(String, Provider)>, StoreError> {
        match self.get(&provider_key(provider_id)).await? {
            Some(entry) => read_provider_entry(&entry).map(Some),
            None => Ok(None),
        }
    }

    async fn set_route(&self, id: &str, route: Route, state: RouteState) -> Result<(), StoreError> {
        self.rewrite(id, route, &state, None).await
    }

    async fn count_quota(&self, quota: &str, day: &str, limit: u64) -> Result<bool, StoreError> {
        bounded(
            QUOTA
                .key(quota_key(quota, day))
                .arg(limit)
                .arg(QUOTA_TTL_SECS)
                .invoke_async(&mut self.redis.clone()),
        )
        .await
        .map_err(StoreError::from)
    }

    async fn preferences(&self, users: &[String]) -> Result<Vec<Arc<Preferences>>, StoreError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for user in users {
            let keys = UserKeys::of(user);
            pipe.get(keys.quiet).get(keys.consent).get(keys.bindings);
        }
        type Stored = (Option<Vec<u8>>, Option<Vec<u8>>, Option<Vec<u8>>);
        let stored: Vec<Stored> = bounded(pipe.query_async(&mut self.redis.clone())).await?;
        users
            .iter()
            .zip(stored)
            .map(|(user, (quiet, consent, bindings))| {
                Ok(Arc::new(Preferences {
                    quiet_hours: quiet.map(|q| from_json(&q, "quiet")).transpose()?,
                    consent: consent
                        .map(|c| from_json(&c, "consent"))
                        .transpose()?
                        .unwrap_or_default(),
                    bindings: match bindings {
                        Some(sealed) => self.open_bindings(user, &sealed)?,
                        None => Bindings::default(),
                    },
                }))
            })
            .collect()
    }

    async fn set_quiet_hours(&self, user: &str, hours: &QuietHours) -> Result<(), StoreError> {
        self.set(&UserKeys::of(user).quiet, to_json(hours).as_bytes())
            .await
    }

    async fn set_consent(&self, user: &str, consent: &Consent) -> Result<(), StoreError> {
        self.set(&UserKeys::of(user).consent, to_json(consent).as_bytes())
            .await
    }

    async fn set_bindings(&self, user: &str, bindings: &Bindings) -> Result<(), StoreError> {
        let sealed = self
            .keys
            .seal(to_json(bindings).as_bytes(), &bindings_aad(user));
        self.set(&UserKeys::of(user).bindings, &sealed).await
    }

    async fn queue_depth(&self) -> Result<u64, StoreError> {
        let mut pipe = redis::pipe();
        for shard in 0..self.shards {
            pipe.zcard(QueueKeys::shard(shard).queue);
        }
        let depths: Vec<u64> = bounded(pipe.query_async(&mut self.redis.clone())).await?;
        Ok(depths.into_iter().sum())
    }

    /// Nothing to do: claims expire by their window, records and provider ids by
    /// `notify.record_retention`, in Redis itself.
    async fn sweep(&self, _now_ms: u64, _before_ms: u64) -> Result<LedgerSweep, StoreError> {
        Ok(LedgerSweep::default())
    }

    async fn delete_user(&self, user: &str) -> Result<(), StoreError> {
        let keys = UserKeys::of(user);
        bounded(
            redis::cmd("DEL")
                .arg(&[&keys.quiet, &keys.consent, &keys.bindings])
                .exec_async(&mut self.redis.clone()),
        )
        .await?;
        self.delete_claims(&keys).await?;
        self.delete_records(&keys).await?;
        let shard = QueueKeys::of_user(user, self.shards);
        bounded(
            DELETE_JOBS
                .key(shard.jobs_of(user))
                .key(&shard.queue)
                .key(&shard.jobs)
                .key(&shard.aggregates)
                .key(&shard.aggregated)
                .invoke_async::<()>(&mut self.redis.clone()),
        )
        .await?;
        Ok(())
    }

    /// Nothing to do: every write is executed by Redis before it is answered.
    async fn close(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
