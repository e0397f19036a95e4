//! The Redis store: several gateway nodes share one Redis and see the same logs.
//!
//! Every key of a user carries the user as a hash tag (`gw:{alice}:…`), so a Redis Cluster
//! would keep one user's keys on one shard, and every script touches the keys of one user only:
//! - `gw:{user}:log` — a stream whose entry ids are `<seq>-0`, with fields `h` (the hybrid-clock
//!   time, decimal) and `r` (the sealed record)
//! - `gw:{user}:head` — a hash: `first_seq`, `last_seq`, `last_hlc`, `epoch`
//! - `gw:{user}:cursors` — a hash: device → highest sequence the device acknowledged
//! - `gw:{user}:forgotten` — a hash: other user → sequence up to which their direct messages in
//!   this log are hidden, until the sweeper has removed them
//! - `gw:users` — a set of the users that have a log, so the sweeper finds them without scanning
//!   the keyspace. It is updated beside the scripts (not inside them, which would cross shards),
//!   always after a log is created and before it is deleted, so a race can leave a member whose
//!   log is gone (the sweeper skips it) but never a log the sweeper cannot find.
//!
//! Appends go through one writer task per node, as in the embedded store: it takes every queued
//! append (up to `max_batch` messages) and sends them as one pipeline of script calls, one round
//! trip for the whole batch. Each call atomically gives its message the log's next sequence and a
//! time later than the log's last one, whichever node wrote that.
//!
//! Durability: "acknowledged" means Redis executed the batch. That is "durable" only when the
//! server runs with `appendonly yes` and `appendfsync always`; with `appendfsync everysec` a power
//! loss may lose the last second of acknowledged messages. A batch that fails (or times out) is
//! answered as unavailable although Redis may have executed part or all of it (the answer was
//! lost, not necessarily the request), so a sender that retries may store a message twice.
//!
//! Outages: the connection is a [`ConnectionManager`], which reconnects by itself. Every request
//! is bounded by [`REQUEST_TIMEOUT`], so while Redis is away each operation fails quickly with
//! [`StoreError::Unavailable`], and works again once Redis is back.

use super::cipher::KeyRing;
use super::record::{self, between, hlc_millis};
use super::{
    new_epoch, AppendTicket, Appended, LiveFanout, LogHead, LogPage, NewMessage, Settings, Store,
    StoreError, SweepReport,
};
use crate::roam::clock::HybridClock;
use anyhow::Context;
use async_trait::async_trait;
use protocol::envelope::InboxMessage;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The longest any one request to Redis may take, connecting included, before the operation is
/// answered as unavailable.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The set of users that have a log.
const USERS: &str = "gw:users";

/// How many stream entries the sweeper reads per request.
const SWEEP_PAGE: usize = 512;

pub struct RedisStore {
    redis: ConnectionManager,
    keys: Arc<KeyRing>,
    appends: mpsc::UnboundedSender<Append>,
}

/// An `append` call waiting for the writer.
struct Append {
    messages: Vec<NewMessage>,
    reply: oneshot::Sender<Result<Vec<Appended>, StoreError>>,
}

/// The keys of one user.
struct UserKeys {
    log: String,
    head: String,
    cursors: String,
    forgotten: String,
}

impl UserKeys {
    fn of(user: &str) -> Self {
        Self {
            log: format!("gw:{{{user}}}:log"),
            head: format!("gw:{{{user}}}:head"),
            cursors: format!("gw:{{{user}}}:cursors"),
            forgotten: format!("gw:{{{user}}}:forgotten"),
        }
    }
}

/// Lua numbers are doubles, exact only up to 2^53, and hybrid-clock times are larger: times are
/// kept as decimal strings and compared and incremented as two exact halves of ten digits.
const HLC_LUA: &str = r"
local function halves(s)
  local n = #s
  if n <= 10 then return 0, tonumber(s) end
  return tonumber(string.sub(s, 1, n - 10)), tonumber(string.sub(s, n - 9))
end
local function later(proposed, last)
  local phi, plo = halves(proposed)
  local lhi, llo = halves(last)
  llo = llo + 1
  if llo == 1e10 then lhi, llo = lhi + 1, 0 end
  if lhi > phi or (lhi == phi and llo > plo) then phi, plo = lhi, llo end
  if phi == 0 then return string.format('%d', plo) end
  return string.format('%d%010d', phi, plo)
end
";

/// Appends one message. KEYS: head, log. ARGV: the node's clock time, an epoch for a new log,
/// the sealed record, the retention count. Returns `{seq, hlc}`.
static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{HLC_LUA}{}",
        r"
local head, log = KEYS[1], KEYS[2]
if redis.call('EXISTS', head) == 0 then
  redis.call('HSET', head, 'first_seq', '1', 'last_seq', '0', 'last_hlc', '0', 'epoch', ARGV[2])
end
local seq = redis.call('HINCRBY', head, 'last_seq', 1)
local hlc = later(ARGV[1], redis.call('HGET', head, 'last_hlc'))
redis.call('HSET', head, 'last_hlc', hlc)
redis.call('XADD', log, string.format('%d-0', seq), 'h', hlc, 'r', ARGV[3])
local first = tonumber(redis.call('HGET', head, 'first_seq'))
local retention = tonumber(ARGV[4])
if seq + 1 - first > retention then
  first = seq + 1 - retention
  redis.call('XTRIM', log, 'MINID', string.format('%d-0', first))
  redis.call('HSET', head, 'first_seq', string.format('%d', first))
end
return {seq, hlc}
"
    ))
});

/// Moves a cursor forward, never back and never past the log's end. KEYS: head, cursors.
/// ARGV: device, sequence. Returns the cursor.
static ACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local last = tonumber(redis.call('HGET', KEYS[1], 'last_seq') or '0')
local old = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local new = math.min(tonumber(ARGV[2]), last)
if new > old then
  redis.call('HSET', KEYS[2], ARGV[1], string.format('%d', new))
  return new
end
return old
",
    )
});

/// Hides a contact's direct messages up to the log's end. KEYS: head, forgotten. ARGV: contact.
static FORGET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local last = redis.call('HGET', KEYS[1], 'last_seq')
if not last then return 0 end
local old = redis.call('HGET', KEYS[2], ARGV[1])
if not old or tonumber(last) > tonumber(old) then
  redis.call('HSET', KEYS[2], ARGV[1], last)
end
return 1
",
    )
});

/// Cuts a log up to a sequence, unless the log was recreated since the sweeper looked at it.
/// KEYS: head, log. ARGV: epoch, first sequence to keep. Returns how many entries were cut.
static CUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 0 end
local cut = redis.call('XTRIM', KEYS[2], 'MINID', ARGV[2] .. '-0')
if tonumber(ARGV[2]) > tonumber(redis.call('HGET', KEYS[1], 'first_seq')) then
  redis.call('HSET', KEYS[1], 'first_seq', ARGV[2])
end
return cut
",
    )
});

/// Drops a purged contact entry, unless the contact was forgotten again further meanwhile.
/// KEYS: forgotten. ARGV: contact, the sequence purged up to.
static PURGED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
",
    )
});

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

/// Connects to the Redis at `url`, failing when it cannot be reached now. The connection
/// reconnects by itself afterwards; use it through [`bounded`].
pub async fn connect(url: &str) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(url).context("not a Redis URL")?;
    // The address only: the URL may hold a password.
    let address = client.get_connection_info().addr().to_string();
    // Few, short reconnection attempts: a request waits for them only up to REQUEST_TIMEOUT,
    // and the next request after a failed attempt starts a new one.
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(REQUEST_TIMEOUT / 2))
        .set_response_timeout(Some(REQUEST_TIMEOUT))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500));
    let mut redis = tokio::time::timeout(
        REQUEST_TIMEOUT * 2,
        ConnectionManager::new_with_config(client, config),
    )
    .await
    .map_err(|_| anyhow::anyhow!("timed out"))
    .and_then(|connected| Ok(connected?))
    .with_context(|| format!("cannot reach Redis at {address}"))?;
    redis::cmd("PING")
        .exec_async(&mut redis)
        .await
        .with_context(|| format!("Redis at {address} does not answer PING"))?;
    Ok(redis)
}

/// Runs one request to Redis, failing it as unavailable after [`REQUEST_TIMEOUT`]: while Redis
/// is away the connection manager may be waiting to reconnect, and a caller must not wait with it.
pub async fn bounded<T>(
    request: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(result) => result.map_err(unavailable),
        Err(_) => Err(StoreError::Unavailable(format!(
            "redis did not answer within {REQUEST_TIMEOUT:?}"
        ))),
    }
}

/// One entry of a log stream.
struct Entry {
    seq: u64,
    hlc: u64,
    record: Vec<u8>,
}

/// A stream entry as XRANGE returns it: its id and its fields.
type RawEntry = (String, HashMap<String, Vec<u8>>);

impl Entry {
    fn parse(user: &str, (id, mut fields): RawEntry) -> Result<Self, StoreError> {
        let damaged = || StoreError::Unreadable(format!("log entry {user}/{id} is damaged"));
        let seq = id
            .strip_suffix("-0")
            .and_then(|seq| seq.parse().ok())
            .ok_or_else(damaged)?;
        let hlc = fields
            .get("h")
            .and_then(|h| std::str::from_utf8(h).ok()?.parse().ok())
            .ok_or_else(damaged)?;
        let record = fields.remove("r").ok_or_else(damaged)?;
        Ok(Self { seq, hlc, record })
    }

    fn open(&self, keys: &KeyRing, user: &str) -> Result<InboxMessage, StoreError> {
        record::open(keys, user, self.seq, self.hlc, &self.record)
    }
}

/// The stream id of a sequence.
fn entry_id(seq: u64) -> String {
    format!("{seq}-0")
}

impl RedisStore {
    /// Connects to the Redis at `url` (failing when it cannot be reached now) and starts the
    /// writer task. Must be called within a Tokio runtime.
    pub async fn open(
        url: &str,
        keys: Arc<KeyRing>,
        clock: Arc<HybridClock>,
        fanout: Arc<dyn LiveFanout>,
        settings: Settings,
    ) -> anyhow::Result<Self> {
        let redis = connect(url).await?;
        let (appends, queue) = mpsc::unbounded_channel();
        let writer = Writer {
            redis: redis.clone(),
            clock,
            fanout,
            settings,
        };
        tokio::spawn(writer.run(queue));
        Ok(Self {
            redis,
            keys,
            appends,
        })
    }

    /// Decrypts log entries off the async threads: a page can hold hundreds of records.
    async fn open_entries(
        &self,
        user: &str,
        entries: Vec<Entry>,
    ) -> Result<Vec<(Entry, InboxMessage)>, StoreError> {
        let (keys, user) = (self.keys.clone(), user.to_string());
        tokio::task::spawn_blocking(move || {
            entries
                .into_iter()
                .map(|entry| {
                    let message = entry.open(&keys, &user)?;
                    Ok((entry, message))
                })
                .collect()
        })
        .await
        .map_err(unavailable)?
    }

    /// Up to `count` entries of `user`'s log from `start` (an XRANGE bound) up to `end`.
    async fn range(
        &self,
        user: &str,
        start: &str,
        end: &str,
        count: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let raw: Vec<RawEntry> = bounded(
            redis::cmd("XRANGE")
                .arg(UserKeys::of(user).log)
                .arg(start)
                .arg(end)
                .arg("COUNT")
                .arg(count)
                .query_async(&mut self.redis.clone()),
        )
        .await?;
        raw.into_iter().map(|raw| Entry::parse(user, raw)).collect()
    }

    /// Every user that has (or recently had) a log.
    async fn users(&self) -> Result<Vec<String>, StoreError> {
        let mut users = HashSet::new();
        let mut cursor = 0u64;
        loop {
            let (next, page): (u64, Vec<String>) = bounded(
                redis::cmd("SSCAN")
                    .arg(USERS)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(SWEEP_PAGE)
                    .query_async(&mut self.redis.clone()),
            )
            .await?;
            users.extend(page);
            if next == 0 {
                return Ok(users.into_iter().collect());
            }
            cursor = next;
        }
    }

    /// Cuts the start of `user`'s log older than `older_than_ms`; returns how many were cut.
    async fn expire(&self, user: &str, older_than_ms: u64) -> Result<u64, StoreError> {
        let keys = UserKeys::of(user);
        let epoch: Option<String> = bounded(
            redis::cmd("HGET")
                .arg(&keys.head)
                .arg("epoch")
                .query_async(&mut self.redis.clone()),
        )
        .await?;
        let Some(epoch) = epoch else {
            return Ok(0);
        };
        // Times grow along a log, so the expired entries are a prefix of it.
        let mut last_cut = None;
        let mut start = "-".to_string();
        'pages: loop {
            let page = self.range(user, &start, "+", SWEEP_PAGE).await?;
            for entry in &page {
                if hlc_millis(entry.hlc) >= older_than_ms {
                    break 'pages;
                }
                last_cut = Some(entry.seq);
            }
            match page.last() {
                Some(last) if page.len() == SWEEP_PAGE => {
                    start = format!("({}", entry_id(last.seq))
                }
                _ => break,
            }
        }
        let Some(last_cut) = last_cut else {
            return Ok(0);
        };
        bounded(
            CUT.key(&keys.head)
                .key(&keys.log)
                .arg(epoch)
                .arg(last_cut + 1)
                .invoke_async(&mut self.redis.clone()),
        )
        .await
    }

    /// Removes the direct messages of every contact `user` forgot; returns how many.
    async fn purge_forgotten(&self, user: &str) -> Result<u64, StoreError> {
        let keys = UserKeys::of(user);
        let forgotten: HashMap<String, String> = bounded(
            redis::cmd("HGETALL")
                .arg(&keys.forgotten)
                .query_async(&mut self.redis.clone()),
        )
        .await?;
        let mut purged = 0;
        for (other, upto) in forgotten {
            let end = upto.parse::<u64>().map(entry_id).map_err(|_| {
                StoreError::Unreadable(format!("forgotten contact {user}/{other} is damaged"))
            })?;
            let mut start = "-".to_string();
            loop {
                let page = self.range(user, &start, &end, SWEEP_PAGE).await?;
                let full = page.len() == SWEEP_PAGE;
                let Some(last) = page.last() else { break };
                start = format!("({}", entry_id(last.seq));
                let doomed: Vec<String> = self
                    .open_entries(user, page)
                    .await?
                    .into_iter()
                    .filter(|(_, message)| between(message, user, &other))
                    .map(|(entry, _)| entry_id(entry.seq))
                    .collect();
                if !doomed.is_empty() {
                    let removed: u64 = bounded(
                        redis::cmd("XDEL")
                            .arg(&keys.log)
                            .arg(doomed)
                            .query_async(&mut self.redis.clone()),
                    )
                    .await?;
                    purged += removed;
                }
                if !full {
                    break;
                }
            }
            bounded(
                PURGED
                    .key(&keys.forgotten)
                    .arg(&other)
                    .arg(&upto)
                    .invoke_async::<()>(&mut self.redis.clone()),
            )
            .await?;
        }
        Ok(purged)
    }
}

/// The one task per node that writes appends, batch after batch, in the order they were asked.
struct Writer {
    redis: ConnectionManager,
    clock: Arc<HybridClock>,
    fanout: Arc<dyn LiveFanout>,
    settings: Settings,
}

impl Writer {
    async fn run(mut self, mut queue: mpsc::UnboundedReceiver<Append>) {
        while let Some(first) = queue.recv().await {
            let mut messages = first.messages.len();
            let mut batch = vec![first];
            while messages < self.settings.max_batch {
                let Ok(next) = queue.try_recv() else { break };
                messages += next.messages.len();
                batch.push(next);
            }
            self.commit(batch).await;
        }
    }

    /// Stores a batch, hands its messages to live delivery in log order, then answers each call.
    async fn commit(&mut self, batch: Vec<Append>) {
        match self.store(&batch).await {
            Ok(mut appended) => {
                self.fanout.committed(&appended);
                for Append { messages, reply } in batch.into_iter().rev() {
                    let mine = appended.split_off(appended.len() - messages.len());
                    let _ = reply.send(Ok(mine));
                }
            }
            Err(e) => {
                tracing::error!("store commit failed: {e}");
                for Append { reply, .. } in batch {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// Sends the batch as one pipeline and returns the appended messages in order.
    async fn store(&mut self, batch: &[Append]) -> Result<Vec<Appended>, StoreError> {
        let messages: Vec<&NewMessage> = batch.iter().flat_map(|a| &a.messages).collect();
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        // A pipelined script call is not retried on NOSCRIPT (a restarted Redis has forgotten
        // its scripts), so every batch loads the script first: for a known script that is a
        // lookup by its hash.
        pipe.load_script(&APPEND).ignore();
        for message in &messages {
            let keys = UserKeys::of(&message.log);
            pipe.invoke_script(
                APPEND
                    .key(&keys.head)
                    .key(&keys.log)
                    .arg(self.clock.now())
                    .arg(new_epoch())
                    .arg(&message.record)
                    .arg(self.settings.retention_count),
            );
        }
        let logs: HashSet<&str> = messages.iter().map(|m| m.log.as_str()).collect();
        for log in logs {
            pipe.sadd(USERS, log).ignore();
        }
        let committing = std::time::Instant::now();
        let positions: Vec<(u64, u64)> = bounded(pipe.query_async(&mut self.redis)).await?;
        self.settings.commit_took(committing);
        if let Some(latest) = positions.iter().map(|(_, hlc)| *hlc).max() {
            self.clock.observe(latest);
        }
        Ok(messages
            .into_iter()
            .zip(positions)
            .map(|(message, (seq, hlc))| Appended {
                log: message.log.clone(),
                seq,
                hlc,
                payload: record::live_payload(&message.plaintext, seq, hlc),
                exclude_session: message.exclude_session,
                live_topic: message.live_topic,
            })
            .collect())
    }
}

#[async_trait]
impl Store for RedisStore {
    fn append(&self, messages: Vec<NewMessage>) -> AppendTicket {
        let (reply, ticket) = AppendTicket::channel();
        if let Err(refused) = self.appends.send(Append { messages, reply }) {
            let _ = refused.0.reply.send(Err(StoreError::Unavailable(
                "the store writer stopped".into(),
            )));
        }
        ticket
    }

    async fn head(&self, user: &str) -> Result<LogHead, StoreError> {
        let (first_seq, last_seq, epoch): (Option<u64>, Option<u64>, Option<String>) = bounded(
            redis::cmd("HMGET")
                .arg(UserKeys::of(user).head)
                .arg(&["first_seq", "last_seq", "epoch"])
                .query_async(&mut self.redis.clone()),
        )
        .await?;
        match (first_seq, last_seq, epoch) {
            (None, None, None) => Ok(LogHead {
                epoch: String::new(),
                first_seq: 1,
                last_seq: 0,
            }),
            (Some(first_seq), Some(last_seq), Some(epoch)) => Ok(LogHead {
                epoch,
                first_seq,
                last_seq,
            }),
            _ => Err(StoreError::Unreadable(format!(
                "the log head of {user} is damaged"
            ))),
        }
    }

    async fn read(&self, user: &str, after: u64, limit: usize) -> Result<LogPage, StoreError> {
        let mut page = LogPage {
            messages: Vec::new(),
            covered_to: after,
        };
        if limit == 0 || after == u64::MAX {
            return Ok(page);
        }
        let keys = UserKeys::of(user);
        let (forgotten, raw): (HashMap<String, u64>, Vec<RawEntry>) = bounded(
            redis::pipe()
                .hgetall(&keys.forgotten)
                .cmd("XRANGE")
                .arg(&keys.log)
                .arg(entry_id(after + 1))
                .arg("+")
                .arg("COUNT")
                .arg(limit.min(i64::MAX as usize))
                .query_async(&mut self.redis.clone()),
        )
        .await?;
        let entries = raw
            .into_iter()
            .map(|raw| Entry::parse(user, raw))
            .collect::<Result<_, _>>()?;
        for (entry, message) in self.open_entries(user, entries).await? {
            page.covered_to = entry.seq;
            let hidden = forgotten
                .iter()
                .any(|(other, upto)| entry.seq <= *upto && between(&message, user, other));
            if !hidden {
                page.messages.push(message);
            }
        }
        Ok(page)
    }

    async fn cursor(&self, user: &str, device: &str) -> Result<Option<u64>, StoreError> {
        bounded(
            redis::cmd("HGET")
                .arg(UserKeys::of(user).cursors)
                .arg(device)
                .query_async(&mut self.redis.clone()),
        )
        .await
    }

    async fn ack(&self, user: &str, device: &str, seq: u64) -> Result<u64, StoreError> {
        let keys = UserKeys::of(user);
        bounded(
            ACK.key(&keys.head)
                .key(&keys.cursors)
                .arg(device)
                .arg(seq)
                .invoke_async(&mut self.redis.clone()),
        )
        .await
    }

    async fn delete_user(&self, user: &str) -> Result<(), StoreError> {
        let keys = UserKeys::of(user);
        // Out of the set first, then the keys: see the module documentation.
        bounded(
            redis::pipe()
                .srem(USERS, user)
                .ignore()
                .del(&[keys.log, keys.head, keys.cursors, keys.forgotten])
                .ignore()
                .exec_async(&mut self.redis.clone()),
        )
        .await
    }

    async fn forget_contact(&self, user: &str, other: &str) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        // A pipelined script call is not retried on NOSCRIPT: see `Writer::store`.
        pipe.load_script(&FORGET).ignore();
        // One script per owner: the two logs may live on different shards.
        for (owner, contact) in [(user, other), (other, user)] {
            let keys = UserKeys::of(owner);
            pipe.invoke_script(FORGET.key(&keys.head).key(&keys.forgotten).arg(contact))
                .ignore();
        }
        bounded(pipe.exec_async(&mut self.redis.clone())).await
    }

    async fn sweep(&self, older_than_ms: u64) -> Result<SweepReport, StoreError> {
        let mut report = SweepReport::default();
        for user in self.users().await? {
            report.expired += self.expire(&user, older_than_ms).await?;
            report.purged_contacts += self.purge_forgotten(&user).await?;
        }
        Ok(report)
    }

    async fn footprint(&self, user: &str) -> Result<Vec<String>, StoreError> {
        let mut redis = self.redis.clone();
        let pattern = format!("gw:{{{user}}}:*");
        let mut keys = HashSet::new();
        let mut cursor = 0u64;
        loop {
            let (next, found): (u64, Vec<String>) = bounded(
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(SWEEP_PAGE)
                    .query_async(&mut redis),
            )
            .await?;
            keys.extend(found);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let mut found = Vec::new();
        let prefix = format!("gw:{{{user}}}:");
        for key in keys {
            let kind = key.strip_prefix(&prefix).unwrap_or(&key).to_string();
            match kind.as_str() {
                "log" => {
                    let ids: Vec<(String, Vec<(String, Vec<u8>)>)> = bounded(
                        redis::cmd("XRANGE")
                            .arg(&key)
                            .arg("-")
                            .arg("+")
                            .query_async(&mut redis),
                    )
                    .await?;
                    for (id, _) in ids {
                        let seq = id.split('-').next().unwrap_or(&id);
                        found.push(format!("messages/{user}/{seq}"));
                    }
                }
                "head" => found.push(format!("heads/{user}")),
                "cursors" | "forgotten" | "presence" => {
                    let fields: Vec<String> =
                        bounded(redis::cmd("HKEYS").arg(&key).query_async(&mut redis)).await?;
                    found.extend(
                        fields
                            .into_iter()
                            .map(|field| format!("{kind}/{user}/{field}")),
                    );
                }
                _ => found.push(key),
            }
        }
        let member: bool = bounded(
            redis::cmd("SISMEMBER")
                .arg(USERS)
                .arg(user)
                .query_async(&mut redis),
        )
        .await?;
        if member {
            found.push(format!("{USERS} member {user}"));
        }
        found.sort();
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    //! What only a shared, remote store has; the contract common to every store is checked by
    //! the conformance suite (`tests/tests/store.rs`).

    use super::*;
    use crate::session_handle::unix_millis;
    use crate::store::record::{seal, Content};
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;

    struct NoFanout;

    impl LiveFanout for NoFanout {
        fn committed(&self, _: &[Appended]) {}
    }

    /// A throwaway `redis-server` on a free loopback port (this crate cannot use the e2e
    /// harness's `RedisServer`).
    struct Server {
        port: u16,
        child: Child,
        _dir: tempfile::TempDir,
    }

    impl Server {
        fn start() -> Self {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap()
                .port();
            let dir = tempfile::tempdir().unwrap();
            let child = spawn(port, dir.path());
            Self {
                port,
                child,
                _dir: dir,
            }
        }

        fn url(&self) -> String {
            format!("redis://127.0.0.1:{}/", self.port)
        }

        /// Kills the server and starts an empty one on the same port (scripts forgotten).
        fn restart_empty(&mut self) {
            self.child.kill().unwrap();
            self.child.wait().unwrap();
            self.child = spawn(self.port, self._dir.path());
        }

        fn signal(&self, signal: &str) {
            let pid = self.child.id().to_string();
            assert!(Command::new("kill")
                .args([signal, &pid])
                .status()
                .unwrap()
                .success());
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn spawn(port: u16, dir: &std::path::Path) -> Child {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    fn keys() -> Arc<KeyRing> {
        Arc::new(KeyRing::new(&["k1:000102030405060708090a0b0c0d0e0f".into()]).unwrap())
    }

    fn message(keys: &KeyRing, to: &str, id: &str) -> NewMessage {
        let body = serde_json::json!({"text": id});
        let content = Content {
            id,
            from: Some("bob"),
            from_device: None,
            to,
            body: &body,
        };
        seal(keys, to, &content, None)
    }

    async fn node(url: &str, keys: Arc<KeyRing>, clock: Arc<HybridClock>) -> RedisStore {
        let settings = Settings {
            max_batch: 64,
            retention_count: 1000,
            memtable_size: 8 << 20,
            commit_seconds: None,
        };
        RedisStore::open(url, keys, clock, Arc::new(NoFanout), settings)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn nodes_share_a_log_whose_times_never_go_back() {
        let server = Server::start();
        let keys = keys();
        let ahead = Arc::new(HybridClock::new());
        ahead.observe((unix_millis() + 60_000) << 16);
        let behind = Arc::new(HybridClock::new());
        let a = node(&server.url(), keys.clone(), ahead).await;
        let b = node(&server.url(), keys.clone(), behind.clone()).await;
        let first = a.append(vec![message(&keys, "alice", "m1")]);
        let first = first.wait().await.unwrap().remove(0);
        let second = b.append(vec![message(&keys, "alice", "m2")]);
        let second = second.wait().await.unwrap().remove(0);
        assert_eq!((first.seq, second.seq), (1, 2));
        assert_eq!(
            second.hlc,
            first.hlc + 1,
            "the log's time goes on from node a's"
        );
        assert!(
            behind.now() > second.hlc,
            "node b's clock moved past the log's time"
        );
        let page = a.read("alice", 0, 10).await.unwrap();
        assert_eq!(page.messages.len(), 2);
        assert_eq!(page.messages[1].ts, hlc_millis(second.hlc));
    }

    #[tokio::test]
    async fn an_outage_fails_requests_quickly_and_ends_without_a_restart() {
        let mut server = Server::start();
        let keys = keys();
        let store = node(&server.url(), keys.clone(), Arc::new(HybridClock::new())).await;
        store
            .append(vec![message(&keys, "alice", "m1")])
            .wait()
            .await
            .unwrap();

        // A Redis that accepts nothing: every request fails within its time limit.
        server.signal("-STOP");
        let started = Instant::now();
        let append = store
            .append(vec![message(&keys, "alice", "m2")])
            .wait()
            .await;
        assert!(
            matches!(append, Err(StoreError::Unavailable(_))),
            "{append:?}"
        );
        assert!(matches!(
            store.head("alice").await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(
            started.elapsed() < REQUEST_TIMEOUT * 3,
            "{:?}",
            started.elapsed()
        );
        server.signal("-CONT");

        // A Redis that is gone and comes back empty, without the scripts it had loaded.
        server.restart_empty();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match store
                .append(vec![message(&keys, "alice", "m3")])
                .wait()
                .await
            {
                Ok(appended) => {
                    assert_eq!(appended[0].seq, 1);
                    break;
                }
                Err(e) => assert!(Instant::now() < deadline, "still failing: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(store.ack("alice", "phone", 1).await.unwrap(), 1);
        store.forget_contact("alice", "bob").await.unwrap();
        assert_eq!(store.sweep(0).await.unwrap().purged_contacts, 1);
    }

    #[tokio::test]
    async fn opening_fails_when_redis_is_unreachable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let url = format!("redis://127.0.0.1:{port}/");
        let clock = Arc::new(HybridClock::new());
        let settings = Settings {
            max_batch: 1,
            retention_count: 1,
            memtable_size: 8 << 20,
            commit_seconds: None,
        };
        let opened = RedisStore::open(&url, keys(), clock, Arc::new(NoFanout), settings).await;
        let error = format!("{:#}", opened.err().expect("no Redis there"));
        assert!(
            error.contains(&format!("cannot reach Redis at 127.0.0.1:{port}")),
            "{error}"
        );
    }
}
