//! The Redis store: several gateway nodes share one Redis and see the same logs.
//!
//! Every key of a user carries the user as a hash tag (`gw:{alice}:…`), so a Redis Cluster
//! keeps one user's keys in one slot, and every script touches the keys of one user only:
//! - `gw:{user}:log` — a stream whose entry ids are `<seq>-0`, with fields `h` (the hybrid-clock
//!   time, decimal) and `r` (the sealed record)
//! - `gw:{user}:head` — a hash: `first_seq`, `last_seq`, `last_hlc`, `epoch`
//! - `gw:{user}:cursors` — a hash: device → highest sequence the device acknowledged
//! - `gw:{user}:forgotten` — a hash: other user → sequence up to which their direct messages in
//!   this log are hidden, until the sweeper has removed them
//! - `gw:{user}:idempotency` — a hash: marker (idempotency scope and key) → `seq hlc id` of the
//!   entry an append with that key made in this log; `gw:{user}:idempotency:expiry` — a sorted
//!   set: marker → end of its window (Redis's clock), which the sweeper prunes by
//! - `gw:{user}:revoked` — a hash: `*` (every device) or a device → the moment (ms) up to which
//!   its tokens are refused; it outlives a deletion of the user (see [`crate::store::revocations`])
//!   and expires once every token it refuses has
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
//! Idempotency: a message goes into two logs (the recipient's and its sender's own), which may
//! be on two shards of a Redis Cluster, so no script can check one key against both appends.
//! Each log is marked instead: the append script checks the key's marker in its own log and
//! either returns the marked entry or appends and marks, atomically, in the log's own slot. A
//! log thus holds a message of one idempotency key once within the window, whatever crashes,
//! timeouts and retries happen on any node, with no reservation that a crash could leave
//! behind and no extra round trip. A batch that failed between its two logs is completed by
//! the retry: the log that has the message answers with it, the other gets it now (under the
//! retry's message id, since the first one's never reached it).
//!
//! Durability: "acknowledged" means Redis executed the batch. That is "durable" only when the
//! server runs with `appendonly yes` and `appendfsync always`; with `appendfsync everysec` a power
//! loss may lose the last second of acknowledged messages. A batch that fails (or times out) is
//! answered as unavailable although Redis may have executed part or all of it (the answer was
//! lost, not necessarily the request), so a sender that retries without an idempotency key may
//! store a message twice.
//!
//! Outages: the connection is a [`Redis`], which reconnects by itself. Every request
//! is bounded by [`crate::infra::redis::REQUEST_TIMEOUT`], so while Redis is away each
//! operation fails quickly with [`StoreError::Unavailable`], and works again once Redis is back.

mod keys;
mod known_devices;
mod revocations;
mod scripts;
mod sessions;
mod writer;

use super::clock::HybridClock;
use super::data_keys::DataKeys;
use super::record::Keys;
use super::record::{self, between, hlc_millis};
use super::{
    queue_refusal, AppendTicket, CommitFeed, DevicePosition, IdempotencyKey, LogEntry, LogHead,
    LogPage, NewMessage, Settings, Store, StoreError, Stored, SweepReport,
};
use crate::infra::redis::{bounded, connect, scan, Endpoint, Redis};
use async_trait::async_trait;
use keys::{UserKeys, SWEEP_PAGE, USERS};
use scripts::{ACK, CUT, FORGET, PRUNE, PURGED, REWRAP};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use writer::Writer;

pub struct RedisStore {
    redis: Redis,
    keys: Arc<DataKeys>,
    writes: mpsc::Sender<Write>,
}

/// What the writer task is handed, in order.
enum Write {
    Append(Append),
    /// Store what came before, answer it, then stop.
    Close(oneshot::Sender<()>),
}

/// An `append` call waiting for the writer.
struct Append {
    messages: Vec<NewMessage>,
    key: Option<IdempotencyKey>,
    reply: oneshot::Sender<Result<Stored, StoreError>>,
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

    fn open(&self, keys: Keys<'_>, user: &str) -> Result<Option<LogEntry>, StoreError> {
        record::open(keys, user, self.seq, self.hlc, &self.record)
    }
}

/// The stream id of a sequence.
fn entry_id(seq: u64) -> String {
    format!("{seq}-0")
}

impl RedisStore {
    /// Connects to Redis at `endpoint` (failing when it cannot be reached now) and starts the
    /// writer task. Must be called within a Tokio runtime.
    pub async fn open(
        endpoint: &Endpoint,
        keys: Arc<DataKeys>,
        clock: Arc<HybridClock>,
        feed: Arc<dyn CommitFeed>,
        settings: Settings,
    ) -> anyhow::Result<Self> {
        let redis = connect(endpoint).await?;
        if settings.confirmation.on_disk {
            writer::check_on_disk(&redis, &settings.confirmation).await?;
        }
        let (writes, queue) = mpsc::channel(settings.max_queued_writes);
        let writer = Writer {
            redis: redis.clone(),
            clock,
            keys: keys.clone(),
            feed,
            settings,
        };
        tokio::spawn(writer.run(queue));
        Ok(Self {
            redis,
            keys,
            writes,
        })
    }

    /// Decrypts log entries off the async threads: a page can hold hundreds of records. The
    /// entries sealed under a destroyed data key come back without their message.
    async fn open_entries(
        &self,
        user: &str,
        wrapped_key: Option<Vec<u8>>,
        entries: Vec<Entry>,
    ) -> Result<Vec<(Entry, Option<LogEntry>)>, StoreError> {
        let (data_keys, user) = (self.keys.clone(), user.to_string());
        tokio::task::spawn_blocking(move || {
            let data_key = (wrapped_key.as_deref())
                .map(|wrapped| data_keys.unwrap(&user, wrapped))
                .transpose()?;
            let keys = Keys {
                ring: data_keys.ring(),
                data_key: data_key.as_deref(),
            };
            entries
                .into_iter()
                .map(|entry| {
                    let message = entry.open(keys, &user)?;
                    Ok((entry, message))
                })
                .collect()
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("decrypting a page: {e}")))?
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
        .map_err(StoreError::from)
    }

    /// Removes the direct messages of every contact `user` forgot; returns how many.
    async fn purge_forgotten(&self, user: &str) -> Result<u64, StoreError> {
        let keys = UserKeys::of(user);
        let (forgotten, wrapped_key): (HashMap<String, String>, Option<Vec<u8>>) = bounded(
            redis::pipe()
                .hgetall(&keys.forgotten)
                .get(&keys.data_key)
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
                    .open_entries(user, wrapped_key.clone(), page)
                    .await?
                    .into_iter()
                    .filter(|(_, opened)| {
                        opened
                            .as_ref()
                            .is_some_and(|opened| between(opened, user, &other))
                    })
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

    /// Wraps `user`'s data key again when it is wrapped under an older configured key; returns
    /// whether it did.
    async fn rewrap(&self, user: &str) -> Result<bool, StoreError> {
        let key = UserKeys::of(user).data_key;
        let wrapped: Option<Vec<u8>> = bounded(
            redis::cmd("GET")
                .arg(&key)
                .query_async(&mut self.redis.clone()),
        )
        .await?;
        let Some(rewrapped) = wrapped
            .as_deref()
            .map(|wrapped| self.keys.rewrapped(user, wrapped))
            .transpose()?
            .flatten()
        else {
            return Ok(false);
        };
        let replaced: u32 = bounded(
            REWRAP
                .key(&key)
                .arg(wrapped)
                .arg(rewrapped)
                .invoke_async(&mut self.redis.clone()),
        )
        .await?;
        Ok(replaced == 1)
    }

    /// Removes `user`'s idempotency markers whose window has ended; returns how many.
    async fn prune_markers(&self, user: &str) -> Result<u64, StoreError> {
        let keys = UserKeys::of(user);
        let mut pruned = 0;
        loop {
            let removed: u64 = bounded(
                PRUNE
                    .key(&keys.markers)
                    .key(&keys.marker_expiry)
                    .arg(SWEEP_PAGE)
                    .invoke_async(&mut self.redis.clone()),
            )
            .await?;
            pruned += removed;
            if removed < SWEEP_PAGE as u64 {
                return Ok(pruned);
            }
        }
    }
}

#[async_trait]
impl Store for RedisStore {
    fn append(&self, messages: Vec<NewMessage>, key: Option<IdempotencyKey>) -> AppendTicket {
        let (reply, ticket) = AppendTicket::channel();
        let append = Append {
            messages,
            key,
            reply,
        };
        if let Err(refused) = self.writes.try_send(Write::Append(append)) {
            let (why, write) = queue_refusal(refused);
            if let Write::Append(append) = write {
                let _ = append.reply.send(Err(StoreError::Unavailable(why.into())));
            }
        }
        ticket
    }

    async fn head(&self, user: &str) -> Result<LogHead, StoreError> {
        let (head,): (HeadFields,) = bounded(
            head_fields(&mut redis::pipe(), &UserKeys::of(user))
                .query_async(&mut self.redis.clone()),
        )
        .await?;
        log_head(user, head)
    }

    async fn read(&self, user: &str, after: u64, limit: usize) -> Result<LogPage, StoreError> {
        let mut page = LogPage::empty(after);
        if limit == 0 || after == u64::MAX {
            return Ok(page);
        }
        let keys = UserKeys::of(user);
        // The head before the range, in one slot and one pipeline: an append writes both
        // atomically, so the range holds every entry up to the head read.
        type Read = (
            Option<u64>,
            HashMap<String, u64>,
            Option<Vec<u8>>,
            Vec<RawEntry>,
        );
        let (last_seq, forgotten, wrapped_key, raw): Read = bounded(
            redis::pipe()
                .hget(&keys.head, "last_seq")
                .hgetall(&keys.forgotten)
                .get(&keys.data_key)
                .cmd("XRANGE")
                .arg(&keys.log)
                .arg(entry_id(after + 1))
                .arg("+")
                .arg("COUNT")
                .arg(limit.min(i64::MAX as usize))
                .query_async(&mut self.redis.clone()),
        )
        .await?;
        let taken = raw.len();
        let entries = raw
            .into_iter()
            .map(|raw| Entry::parse(user, raw))
            .collect::<Result<_, _>>()?;
        for (entry, opened) in self.open_entries(user, wrapped_key, entries).await? {
            page.covered_to = entry.seq;
            let Some(opened) = opened else {
                continue;
            };
            let hidden = forgotten
                .iter()
                .any(|(other, upto)| entry.seq <= *upto && between(&opened, user, other));
            if !hidden {
                page.entries.push(opened);
            }
        }
        page.finish(taken, limit, last_seq.unwrap_or(0));
        Ok(page)
    }

    async fn position(&self, user: &str, device: &str) -> Result<DevicePosition, StoreError> {
        let keys = UserKeys::of(user);
        let (head, cursor) = bounded(
            head_fields(&mut redis::pipe(), &keys)
                .hget(&keys.cursors, device)
                .query_async(&mut self.redis.clone()),
        )
        .await?;
        Ok(DevicePosition {
            head: log_head(user, head)?,
            cursor,
        })
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
        .map_err(StoreError::from)
    }

    async fn delete_user(&self, user: &str) -> Result<(), StoreError> {
        let keys = UserKeys::of(user);
        // Out of the set first, then the keys: see the module documentation.
        bounded(
            redis::pipe()
                .srem(USERS, user)
                .ignore()
                .del(&[
                    keys.log,
                    keys.head,
                    keys.cursors,
                    keys.forgotten,
                    keys.markers,
                    keys.marker_expiry,
                    keys.data_key,
                    keys.devices,
                ])
                .ignore()
                .exec_async(&mut self.redis.clone()),
        )
        .await?;
        // Another node may still hold the destroyed key: the append script refuses what it
        // seals (see `data_keys`).
        self.keys.drop_held(user);
        self.forget_user_sessions(user).await
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
        bounded(pipe.exec_async(&mut self.redis.clone()))
            .await
            .map_err(StoreError::from)
    }

    async fn sweep(&self, older_than_ms: u64) -> Result<SweepReport, StoreError> {
        let mut report = SweepReport::default();
        for user in self.users().await? {
            report.expired += self.expire(&user, older_than_ms).await?;
            report.purged_contacts += self.purge_forgotten(&user).await?;
            report.expired_markers += self.prune_markers(&user).await?;
            match self.rewrap(&user).await {
                Ok(done) => report.rewrapped_keys += u64::from(done),
                // The rest of the sweep goes on; reading the user's log names the key.
                Err(StoreError::Unreadable(e)) => {
                    tracing::warn!("a data key is not wrapped again: {e}")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }

    fn queued_writes(&self) -> usize {
        super::queued(&self.writes)
    }

    async fn close(&self) {
        let (reply, closed) = oneshot::channel();
        if self.writes.send(Write::Close(reply)).await.is_ok() {
            let _ = closed.await;
        }
    }

    async fn footprint(&self, user: &str) -> Result<Vec<String>, StoreError> {
        let mut redis = self.redis.clone();
        let pattern = format!("gw:{{{user}}}:*");
        let keys: HashSet<String> = scan(&mut redis, &pattern, SWEEP_PAGE)
            .await?
            .into_iter()
            .collect();
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
                "devices" => {
                    let devices: Vec<String> =
                        bounded(redis::cmd("SMEMBERS").arg(&key).query_async(&mut redis)).await?;
                    found.extend(
                        (devices.into_iter())
                            .map(|device| format!("known_devices/{user}/{device}")),
                    );
                }
                "data_key" => found.push(format!("data_keys/{user}")),
                "revoked" => {
                    let fields: Vec<String> =
                        bounded(redis::cmd("HKEYS").arg(&key).query_async(&mut redis)).await?;
                    found.extend(fields.into_iter().map(|field| match field.as_str() {
                        revocations::WHOLE_USER => format!("revocations/{user}"),
                        device => format!("revocations/{user}/{device}"),
                    }));
                }
                "cursors" | "forgotten" | "presence" | "idempotency" => {
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

/// A log head's fields as Redis keeps them: first and last sequence, and epoch.
type HeadFields = (Option<u64>, Option<u64>, Option<String>);

/// Adds the read of a log head's fields to `pipe`.
fn head_fields<'a>(pipe: &'a mut redis::Pipeline, keys: &UserKeys) -> &'a mut redis::Pipeline {
    pipe.cmd("HMGET")
        .arg(&keys.head)
        .arg(&["first_seq", "last_seq", "epoch"])
}

/// The head of `user`'s log from its fields: all of them, or none for a log never written.
fn log_head(user: &str, (first_seq, last_seq, epoch): HeadFields) -> Result<LogHead, StoreError> {
    match (first_seq, last_seq, epoch) {
        (None, None, None) => Ok(LogHead::never_written()),
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
