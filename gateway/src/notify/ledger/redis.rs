//! The Redis ledger: several gateway nodes share one Redis and one notification queue.
//!
//! Keys (`{user}` is a hash tag, as in the Redis store; ids never contain a 0 byte):
//! - `gw:notify:record:<id>` — the record (JSON, sealed with the id as associated data, as the
//!   embedded ledger seals it: it holds the notification's text), expiring after
//!   `notify.record_retention`
//! - `gw:notify:queue` — a sorted set: job key → when it is due (milliseconds). Equal times are
//!   ordered by job key, as the embedded queue orders them.
//! - `gw:notify:jobs` — a hash: job key → job (JSON)
//! - `gw:notify:aggregates` — a hash: user 0 kind → key of the pending aggregated job;
//!   `gw:notify:aggregated` — a hash: job key → that field, to free the slot when the job is
//!   taken (or leaves the queue) and when its user is deleted
//! - `gw:notify:provider:<provider id>` — notification 0 route, expiring like records
//! - `gw:notify:quota:<quota>:<day>` — the day's count, expiring two days after the day's first
//!   send (the day has no colon, so the key names one quota and day only)
//! - `gw:{user}:notify:quiet`, `gw:{user}:notify:consent` — preferences (JSON);
//!   `gw:{user}:notify:bindings` — bindings (JSON, sealed with `bindings` 0 user as associated
//!   data, as the embedded ledger seals them: they hold openids)
//! - `gw:{user}:notify:dedup:<key>` — a dedup claim (the claiming notification's id), expiring
//!   at the end of its window
//! - `gw:{user}:notify:claims` — a sorted set: dedup key → when its claim expires (Redis's
//!   clock), so deleting the user finds the claims without scanning the keyspace
//! - `gw:{user}:notify:jobs` — a set of the user's queued job keys, so deleting the user finds
//!   them without reading the whole queue
//!
//! The queue is one key that every node shares, and the scripts that keep it consistent with
//! the records, aggregate slots and per-user sets touch several of these keys at once: the
//! ledger needs one Redis (with replicas, or Sentinel), not a Redis Cluster. The per-user hash
//! tags keep the scripts that touch a user's keys only (claims) valid on a cluster all the same.
//!
//! Atomicity across nodes: claims are `SET NX`; creating a record with its jobs is one
//! MULTI/EXEC; taking due jobs, joining an aggregate and counting a quota are Lua scripts, so two
//! nodes never take the same job within its lease, never start two aggregates for one user and
//! kind, and never count past a limit. Records are sealed, so a script cannot change one in
//! place: a route's state is changed by reading the record, then a script that writes the new
//! record (and moves the job) only if the record is still the one read, and otherwise is
//! retried from the read. Two nodes settling the two routes of one notification at once thus
//! both keep their state, where a blind write would lose one.
//!
//! Durability and outages are as in the Redis store (`store::redis`): every request is bounded
//! by [`REQUEST_TIMEOUT`](crate::store::redis::REQUEST_TIMEOUT) and fails as unavailable while
//! Redis is away; a request that timed out may still have been executed.

use super::{AggregateJoin, DedupClaim, Ledger, LedgerSweep, NewRecord};
use crate::notify::model::{
    Bindings, Consent, Job, Preferences, QuietHours, Record, Route, RouteState,
};
use crate::store::cipher::KeyRing;
use crate::store::redis::{bounded, connect};
use crate::store::StoreError;
use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::Script;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

const QUEUE: &str = "gw:notify:queue";
const JOBS: &str = "gw:notify:jobs";
const AGGREGATES: &str = "gw:notify:aggregates";
const AGGREGATED: &str = "gw:notify:aggregated";

/// A day's quota count outlives the day (in any provider's time zone), then goes by itself.
const QUOTA_TTL_SECS: u64 = 2 * 24 * 60 * 60;

/// How often a record rewrite is tried again after another node changed the record between its
/// read and its write. Contention is between the few routes and delivery reports of one
/// notification, so running out means something is wrong.
const REWRITE_ATTEMPTS: usize = 16;

/// How many dedup claims deleting a user removes per request.
const CLAIMS_PAGE: isize = 512;

pub struct RedisLedger {
    redis: ConnectionManager,
    keys: Arc<KeyRing>,
    /// Records and provider ids expire this long after they are written
    /// (`notify.record_retention`); a record's rewrites keep its expiry.
    retention_ms: u64,
}

/// The keys of one user.
struct UserKeys {
    user: String,
    quiet: String,
    consent: String,
    bindings: String,
    claims: String,
    jobs: String,
}

impl UserKeys {
    fn of(user: &str) -> Self {
        Self {
            user: user.to_string(),
            quiet: format!("gw:{{{user}}}:notify:quiet"),
            consent: format!("gw:{{{user}}}:notify:consent"),
            bindings: format!("gw:{{{user}}}:notify:bindings"),
            claims: format!("gw:{{{user}}}:notify:claims"),
            jobs: format!("gw:{{{user}}}:notify:jobs"),
        }
    }

    fn claim(&self, key: &str) -> String {
        format!("gw:{{{}}}:notify:dedup:{key}", self.user)
    }
}

fn record_key(id: &str) -> String {
    format!("gw:notify:record:{id}")
}

fn provider_key(provider_id: &str) -> String {
    format!("gw:notify:provider:{provider_id}")
}

fn quota_key(quota: &str, day: &str) -> String {
    format!("gw:notify:quota:{quota}:{day}")
}

/// The associated data the bindings are sealed with: the embedded ledger's key for them.
fn bindings_aad(user: &str) -> Vec<u8> {
    [b"bindings\0", user.as_bytes()].concat()
}

fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("ledger values serialize")
}

fn from_json<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Unreadable(format!("{what}: {e}")))
}

/// Claims a dedup key and indexes the claim under its user. KEYS: claim, claims index.
/// ARGV: window (ms), dedup key, claiming notification. Returns 1 for the claim, 0 when it is
/// held.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if not redis.call('SET', KEYS[1], ARGV[3], 'NX', 'PX', ARGV[1]) then return 0 end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%d', now))
redis.call('ZADD', KEYS[2], string.format('%d', now + window), ARGV[2])
if redis.call('PTTL', KEYS[2]) < window then redis.call('PEXPIRE', KEYS[2], ARGV[1]) end
return 1
",
    )
});

/// Gives up a dedup claim if the notification that took it still holds it. KEYS: claim, claims
/// index. ARGV: claiming notification, dedup key.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
",
    )
});

/// Takes due jobs and leases them. KEYS: queue, jobs, aggregates, aggregated. ARGV: now, limit,
/// end of the lease. Returns the jobs, oldest first.
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local taken = {}
for _, key in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])) do
  local job = redis.call('HGET', KEYS[2], key)
  if job then
    redis.call('ZADD', KEYS[1], ARGV[3], key)
    taken[#taken + 1] = job
    local slot = redis.call('HGET', KEYS[4], key)
    if slot then
      redis.call('HDEL', KEYS[3], slot)
      redis.call('HDEL', KEYS[4], key)
    end
  else
    redis.call('ZREM', KEYS[1], key)
  end
end
return taken
",
    )
});

/// Writes a record if it is still the one read, and moves its job in the same step.
/// KEYS: record, and with a queue change: queue, jobs, the user's jobs, aggregates, aggregated.
/// ARGV: `1` if a record was read (`0` if none), the record read, the new record, the queue
/// change (`requeue`, `dequeue` or empty), job key, due, job. Returns 0 when the record changed.
static REWRITE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
  redis.call('SET', KEYS[1], ARGV[3], 'KEEPTTL')
elseif current then
  return 0
end
if ARGV[4] == 'requeue' then
  redis.call('ZADD', KEYS[2], ARGV[6], ARGV[5])
  redis.call('HSET', KEYS[3], ARGV[5], ARGV[7])
  redis.call('SADD', KEYS[4], ARGV[5])
elseif ARGV[4] == 'dequeue' then
  redis.call('ZREM', KEYS[2], ARGV[5])
  redis.call('HDEL', KEYS[3], ARGV[5])
  redis.call('SREM', KEYS[4], ARGV[5])
  local slot = redis.call('HGET', KEYS[6], ARGV[5])
  if slot then
    redis.call('HDEL', KEYS[5], slot)
    redis.call('HDEL', KEYS[6], ARGV[5])
  end
end
return 1
",
    )
});

/// Joins the pending aggregated job of a user and kind, or starts one. KEYS: aggregates,
/// aggregated, queue, jobs, the user's jobs. ARGV: slot, new job key, due, new job.
/// Returns `{1, job}` for a new job, `{0, job}` for the joined one.
static AGGREGATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local key = redis.call('HGET', KEYS[1], ARGV[1])
if key then
  local job = redis.call('HGET', KEYS[4], key)
  if job then
    local joined = cjson.decode(job)
    joined.count = (joined.count or 0) + 1
    job = cjson.encode(joined)
    redis.call('HSET', KEYS[4], key, job)
    return {0, job}
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
redis.call('HSET', KEYS[4], ARGV[2], ARGV[4])
redis.call('SADD', KEYS[5], ARGV[2])
return {1, ARGV[4]}
",
    )
});

/// Counts one send unless the limit is reached. KEYS: quota. ARGV: limit, expiry (seconds).
/// Returns 1 when counted.
static QUOTA: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used >= tonumber(ARGV[1]) then return 0 end
redis.call('INCR', KEYS[1])
if used == 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 1
",
    )
});

/// Removes a user's queued jobs and their aggregate slots. KEYS: the user's jobs, queue, jobs,
/// aggregates, aggregated.
static DELETE_JOBS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  redis.call('ZREM', KEYS[2], key)
  redis.call('HDEL', KEYS[3], key)
  local slot = redis.call('HGET', KEYS[5], key)
  if slot then
    redis.call('HDEL', KEYS[4], slot)
    redis.call('HDEL', KEYS[5], key)
  end
end
redis.call('DEL', KEYS[1])
return 0
",
    )
});

/// The keys [`REWRITE`] changes the queue with.
fn queue_keys(call: &mut redis::ScriptInvocation<'_>, job: &Job) {
    call.key(QUEUE)
        .key(JOBS)
        .key(UserKeys::of(&job.user).jobs)
        .key(AGGREGATES)
        .key(AGGREGATED);
}

/// What a record rewrite does to the record's job, in the same step.
enum QueueChange<'a> {
    None,
    Requeue(&'a Job, u64),
    Dequeue(&'a Job),
}

impl RedisLedger {
    /// Connects to the Redis at `url`, failing when it cannot be reached now.
    pub async fn open(
        url: &str,
        keys: Arc<KeyRing>,
        record_retention: Duration,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            redis: connect(url).await?,
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
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        bounded(
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .exec_async(&mut self.redis.clone()),
        )
        .await
    }

    fn open_bindings(&self, user: &str, sealed: &[u8]) -> Result<Bindings, StoreError> {
        let plain = self
            .keys
            .open(sealed, &bindings_aad(user))
            .map_err(|e| StoreError::Unreadable(format!("bindings of {user}: {e}")))?;
        from_json(&plain, "bindings")
    }

    /// Sets one route's state of record `id` and applies `queue`, as one write that happens only
    /// if the record did not change since it was read (else read again): see the module doc.
    /// Without a record, the route is not set but the queue change still applies.
    async fn rewrite(
        &self,
        id: &str,
        route: Route,
        state: &RouteState,
        queue: QueueChange<'_>,
    ) -> Result<(), StoreError> {
        let key = record_key(id);
        for _ in 0..REWRITE_ATTEMPTS {
            let read = self.get(&key).await?;
            let written = match &read {
                Some(sealed) => {
                    let mut record = self.open_record(id, sealed)?;
                    record.routes.insert(route, state.clone());
                    self.seal_record(&record)
                }
                None if matches!(queue, QueueChange::None) => return Ok(()),
                None => Vec::new(),
            };
            let mut call = REWRITE.key(&key);
            call.arg(if read.is_some() { "1" } else { "0" })
                .arg(read.as_deref().unwrap_or_default())
                .arg(written);
            match queue {
                QueueChange::None => {
                    call.arg("");
                }
                QueueChange::Requeue(job, due) => {
                    queue_keys(&mut call, job);
                    call.arg("requeue")
                        .arg(job.key())
                        .arg(due)
                        .arg(to_json(job));
                }
                QueueChange::Dequeue(job) => {
                    queue_keys(&mut call, job);
                    call.arg("dequeue").arg(job.key());
                }
            }
            let done: bool = bounded(call.invoke_async(&mut self.redis.clone())).await?;
            if done {
                return Ok(());
            }
        }
        Err(StoreError::Unavailable(format!(
            "notification {id} kept changing while being updated ({REWRITE_ATTEMPTS} attempts)"
        )))
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
        bounded(pipe.query_async(&mut self.redis.clone())).await
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
        bounded(pipe.query_async(&mut self.redis.clone())).await
    }

    async fn create(&self, records: Vec<NewRecord>) -> Result<Vec<Record>, StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for new in &records {
            let record = &new.record;
            pipe.cmd("SET")
                .arg(record_key(&record.notification.id))
                .arg(self.seal_record(record))
                .arg("PX")
                .arg(self.retention_ms)
                .ignore();
            for (job, due) in &new.jobs {
                let key = job.key();
                pipe.zadd(QUEUE, &key, due)
                    .ignore()
                    .hset(JOBS, &key, to_json(job))
                    .ignore()
                    .sadd(UserKeys::of(&job.user).jobs, &key)
                    .ignore();
            }
        }
        bounded(pipe.exec_async(&mut self.redis.clone())).await?;
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
        let taken: Vec<Vec<u8>> = bounded(
            TAKE.key(QUEUE)
                .key(JOBS)
                .key(AGGREGATES)
                .key(AGGREGATED)
                .arg(now_ms)
                .arg(limit)
                .arg(now_ms + lease_ms)
                .invoke_async(&mut self.redis.clone()),
        )
        .await?;
        taken
            .iter()
            .map(|job| from_json(job, "queued job"))
            .collect()
    }

    async fn settle(
        &self,
        job: &Job,
        state: RouteState,
        next_due: Option<u64>,
    ) -> Result<(), StoreError> {
        let queue = match next_due {
            Some(due) => QueueChange::Requeue(job, due),
            None => QueueChange::Dequeue(job),
        };
        self.rewrite(&job.notification, job.route, &state, queue)
            .await
    }

    async fn aggregate(&self, joins: &[AggregateJoin]) -> Result<Vec<(Job, bool)>, StoreError> {
        let mut joined = Vec::with_capacity(joins.len());
        // One script per join, in order: a later join can find the push an earlier one started.
        for join in joins {
            let job = Job {
                notification: join.notification.clone(),
                route: join.route,
                user: join.user.clone(),
                attempts: 0,
                count: 1,
            };
            let (new, job): (bool, Vec<u8>) = bounded(
                AGGREGATE
                    .key(AGGREGATES)
                    .key(AGGREGATED)
                    .key(QUEUE)
                    .key(JOBS)
                    .key(UserKeys::of(&join.user).jobs)
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
        route: Route,
    ) -> Result<(), StoreError> {
        let value = format!("{notification}\0{}", route.as_str());
        bounded(
            redis::cmd("SET")
                .arg(provider_key(provider_id))
                .arg(value)
                .arg("PX")
                .arg(self.retention_ms)
                .exec_async(&mut self.redis.clone()),
        )
        .await
    }

    async fn by_provider_id(
        &self,
        provider_id: &str,
    ) -> Result<Option<(String, Route)>, StoreError> {
        let Some(value) = self.get(&provider_key(provider_id)).await? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&value);
        let Some((id, route)) = text.split_once('\0') else {
            return Ok(None);
        };
        let route = match route {
            "wechat" => Route::Wechat,
            "qiuqiu" => Route::Qiuqiu,
            _ => Route::InApp,
        };
        Ok(Some((id.to_string(), route)))
    }

    async fn set_route(&self, id: &str, route: Route, state: RouteState) -> Result<(), StoreError> {
        self.rewrite(id, route, &state, QueueChange::None).await
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
        bounded(
            redis::cmd("ZCARD")
                .arg(QUEUE)
                .query_async(&mut self.redis.clone()),
        )
        .await
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
        bounded(
            DELETE_JOBS
                .key(&keys.jobs)
                .key(QUEUE)
                .key(JOBS)
                .key(AGGREGATES)
                .key(AGGREGATED)
                .invoke_async(&mut self.redis.clone()),
        )
        .await
    }
}
