//! The Redis store's writer: one task per node that sends each batch of appends as one pipeline.

use super::keys::{UserKeys, USERS};
use super::scripts::{APPEND, MAKE_DATA_KEY};
use super::{Append, Write};
use crate::infra::data_key::DataKey;
use crate::infra::latency_budget::Stage;
use crate::infra::redis::bounded;
use crate::infra::redis::Redis;
use crate::store::clock::HybridClock;
use crate::store::data_keys::DataKeys;
use crate::store::outcome::{original, Outcome};
use crate::store::{
    new_epoch, record, Appended, CommitFeed, Confirmation, NewMessage, Settings, StoreError,
};
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// The one task per node that writes appends, batch after batch, in the order they were asked.
pub(super) struct Writer {
    pub redis: Redis,
    pub clock: Arc<HybridClock>,
    /// Seals what the front did not, and opens the records of earlier appends that a repeated
    /// idempotency key is answered with.
    pub keys: Arc<DataKeys>,
    pub feed: Arc<dyn CommitFeed>,
    pub settings: Settings,
}

impl Writer {
    pub(super) async fn run(mut self, mut queue: mpsc::Receiver<Write>) {
        let mut closing = None;
        while let Some(first) = queue.recv().await {
            let mut batch = Vec::new();
            let mut messages = 0;
            let mut next = Some(first);
            while let Some(write) = next.take() {
                match write {
                    Write::Append(append) => {
                        messages += append.messages.len();
                        batch.push(append);
                    }
                    Write::Close(reply) => {
                        closing = Some(reply);
                        break;
                    }
                }
                if messages < self.settings.max_batch {
                    next = queue.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.commit(batch).await;
            }
            if let Some(reply) = closing.take() {
                let _ = reply.send(());
                return;
            }
        }
    }

    /// Stores a batch, hands its entries to the commit feed in log order, then answers each call.
    async fn commit(&mut self, mut batch: Vec<Append>) {
        let taken = Instant::now();
        for message in batch.iter().flat_map(|a| &a.messages) {
            (self.settings.budget).observe(Stage::queued, message.accepted_at, taken);
        }
        match self.store(&mut batch, taken).await {
            Ok(outcome) => {
                let replies = batch.into_iter().map(|append| append.reply).collect();
                outcome.answer(&*self.feed, replies, Instant::now());
            }
            Err(e) => {
                tracing::error!("store commit failed: {e}");
                for Append { reply, .. } in batch {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// Stores the batch, which the writer took at `taken`, and returns every call's entries.
    async fn store(&mut self, batch: &mut [Append], taken: Instant) -> Result<Outcome, StoreError> {
        let count = batch.iter().map(|a| a.messages.len()).sum();
        let mut outcome = Outcome::with_capacity(count);
        let mut positions = Vec::new();
        if count > 0 {
            let unsealed = (batch.iter().flat_map(|a| &a.messages))
                .filter(|message| message.sealed.is_none())
                .map(|message| message.log.as_str());
            let keys = self.data_keys(unsealed).await?;
            for message in batch.iter_mut().flat_map(|a| &mut a.messages) {
                if message.sealed.is_none() {
                    record::seal_under(message, keys[&message.log].clone());
                }
            }
            let sealed = Instant::now();
            (self.settings.budget).observe_batch(Stage::sealed, taken, sealed, count);
            positions = self.send(batch, None).await?;
            // Sealed under a key its owner no longer has (deleted meanwhile): sealed again
            // under the stored one, and sent again.
            let stale: Vec<usize> = (positions.iter().enumerate())
                .filter(|(_, (seq, ..))| *seq == 0)
                .map(|(index, _)| index)
                .collect();
            if !stale.is_empty() {
                let mut messages: Vec<&mut NewMessage> =
                    batch.iter_mut().flat_map(|a| &mut a.messages).collect();
                let logs: Vec<String> = (stale.iter())
                    .map(|&index| messages[index].log.clone())
                    .collect();
                let keys = self.data_keys(logs.iter().map(String::as_str)).await?;
                for (&index, log) in stale.iter().zip(&logs) {
                    record::seal_under(messages[index], keys[log].clone());
                }
                let again = self.send(batch, Some(&stale)).await?;
                for (&index, position) in stale.iter().zip(again) {
                    if position.0 == 0 {
                        return Err(StoreError::Unavailable(
                            "a user's data key changed twice during one append".into(),
                        ));
                    }
                    positions[index] = position;
                }
            }
            (self.settings.budget).observe_batch(Stage::written, sealed, Instant::now(), count);
        }
        let mut positions = positions.into_iter();
        for append in batch {
            outcome.next_call();
            for message in &append.messages {
                let (seq, hlc, marked, record) = positions.next().ok_or_else(|| {
                    StoreError::Unavailable("Redis answered fewer appends than asked".into())
                })?;
                match marked {
                    None => {
                        let payload = record::live_payload(&message.plaintext, seq, hlc);
                        outcome.made(Appended::of(message, seq, hlc, payload));
                    }
                    Some(id) => {
                        let original =
                            original(self.keys.ring(), message, seq, hlc, record.as_deref());
                        outcome.repeated(original, &id);
                    }
                }
            }
        }
        Ok(outcome)
    }

    /// The data keys of `users` as stored (made and stored now for a user who has none), in
    /// one round trip, and held for the front to seal with.
    async fn data_keys<'a>(
        &mut self,
        users: impl Iterator<Item = &'a str>,
    ) -> Result<HashMap<String, Arc<DataKey>>, StoreError> {
        let users: Vec<&str> = users.collect::<HashSet<_>>().into_iter().collect();
        if users.is_empty() {
            return Ok(HashMap::new());
        }
        let mut pipe = redis::pipe();
        // A pipelined script call is not retried on NOSCRIPT: see `send`.
        pipe.load_script(&MAKE_DATA_KEY).ignore();
        let mut made = Vec::with_capacity(users.len());
        for user in &users {
            let keys = UserKeys::of(user);
            let (fresh, wrapped) = self.keys.generate(user);
            // Made unless there is one: then the one there is the user's.
            pipe.invoke_script(
                MAKE_DATA_KEY
                    .key(&keys.data_key)
                    .key(&keys.head)
                    .arg(&wrapped)
                    .arg(fresh.id()),
            );
            made.push(fresh);
        }
        let replies: Vec<(bool, Option<Vec<u8>>)> =
            bounded(pipe.query_async(&mut self.redis)).await?;
        let mut keys = HashMap::with_capacity(users.len());
        for ((user, fresh), (set, stored)) in users.into_iter().zip(made).zip(replies) {
            let key = match (set, stored) {
                (true, _) => fresh,
                (false, Some(stored)) => self.keys.unwrap(user, &stored)?,
                (false, None) => {
                    return Err(StoreError::Unavailable(format!(
                        "the data key of {user} was deleted while it was made"
                    )))
                }
            };
            self.keys.hold(user, key.clone());
            keys.insert(user.to_string(), key);
        }
        Ok(keys)
    }

    /// Sends the batch's appends (those at the indexes `only`, when given, counting the
    /// messages of every call in order) as one pipeline; returns where each landed.
    async fn send(
        &mut self,
        batch: &[Append],
        only: Option<&[usize]>,
    ) -> Result<Vec<Position>, StoreError> {
        let mut pipe = redis::pipe();
        // A pipelined script call is not retried on NOSCRIPT (a restarted Redis has forgotten
        // its scripts), so every batch loads the script first: for a known script that is a
        // lookup by its hash.
        pipe.load_script(&APPEND).ignore();
        let mut index = 0;
        for append in batch {
            let marker = append
                .key
                .as_ref()
                .map(|key| (key.marker(), key.window_ms()));
            for message in &append.messages {
                index += 1;
                if only.is_some_and(|only| only.binary_search(&(index - 1)).is_err()) {
                    continue;
                }
                // The message id is what a repeat is answered with; only a marker keeps it.
                let (name, window_ms, id) = match &marker {
                    Some((name, window_ms)) => (name.as_str(), *window_ms, message.id.as_str()),
                    None => ("", 0, ""),
                };
                let sealed = message.sealed.as_ref().expect("sealed before it is sent");
                let keys = UserKeys::of(&message.log);
                pipe.invoke_script(
                    APPEND
                        .key(&keys.head)
                        .key(&keys.log)
                        .key(&keys.markers)
                        .key(&keys.marker_expiry)
                        .arg(self.clock.now())
                        .arg(new_epoch())
                        .arg(&sealed.record)
                        .arg(self.settings.retention_count)
                        .arg(name)
                        .arg(window_ms)
                        .arg(id)
                        .arg(sealed.key.id()),
                );
            }
        }
        let logs: HashSet<&str> = batch
            .iter()
            .flat_map(|a| &a.messages)
            .map(|m| m.log.as_str())
            .collect();
        for log in logs {
            pipe.sadd(USERS, log).ignore();
        }
        let confirmation = self.settings.confirmation;
        let confirming = confirmation.on_disk || confirmation.replicas > 0;
        if confirming {
            // Waits, on this connection, until every write above is on the replicas (and on
            // disk, the primary's and theirs).
            pipe.add_command(confirmation_command(&confirmation));
        }
        let committing = std::time::Instant::now();
        let mut replies: Vec<redis::Value> = bounded(pipe.query_async(&mut self.redis)).await?;
        if confirming {
            let answer = replies.pop().unwrap_or(redis::Value::Nil);
            if let Some(shortfall) = confirmation_shortfall(&confirmation, answer) {
                return Err(StoreError::Unavailable(format!(
                    "{shortfall} within {:?}",
                    confirmation.timeout
                )));
            }
        }
        let positions: Vec<Position> = (replies.into_iter())
            .map(redis::from_redis_value)
            .collect::<Result<_, _>>()
            .map_err(|e| StoreError::Unavailable(format!("an append's answer: {e}")))?;
        self.settings.commit_took(committing);
        if let Some(latest) = positions.iter().map(|(_, hlc, ..)| *hlc).max() {
            self.clock.observe(latest);
        }
        Ok(positions)
    }
}

/// The command that ends a batch when it must be confirmed: `WAITAOF 1 <replicas> <ms>` for
/// the disk, else `WAIT <replicas> <ms>`.
fn confirmation_command(confirmation: &Confirmation) -> redis::Cmd {
    let timeout_ms = confirmation.timeout.as_millis() as u64;
    if confirmation.on_disk {
        redis::cmd("WAITAOF")
            .arg(1)
            .arg(confirmation.replicas)
            .arg(timeout_ms)
            .clone()
    } else {
        redis::cmd("WAIT")
            .arg(confirmation.replicas)
            .arg(timeout_ms)
            .clone()
    }
}

/// Checks that every primary can confirm writes on disk (`store.redis_wait_aof`): a Redis
/// before 7.2 has no `WAITAOF`, and one without `appendonly yes` refuses it, which would
/// otherwise fail every append.
pub(super) async fn check_on_disk(
    redis: &Redis,
    confirmation: &Confirmation,
) -> anyhow::Result<()> {
    // The primary's own disk: no replica is asked for here.
    let check = confirmation_command(&Confirmation {
        replicas: 0,
        ..*confirmation
    });
    let answer = match redis.clone() {
        Redis::Single(mut redis) => check.query_async::<redis::Value>(&mut redis).await,
        Redis::Cluster(mut redis) => {
            let every_primary = RoutingInfo::MultiNode((
                MultipleNodeRoutingInfo::AllMasters,
                Some(ResponsePolicy::AllSucceeded),
            ));
            redis.route_command(check, every_primary).await
        }
    };
    answer.map(drop).map_err(|e| {
        anyhow::anyhow!(
            "store.redis_wait_aof needs Redis 7.2 or later (or Valkey) with `appendonly yes` \
             on every primary, to confirm writes on disk with WAITAOF; Redis answered: {e}"
        )
    })
}

/// What is missing from the answer to [`confirmation_command`], if anything: `WAIT` answers how
/// many replicas have the writes, `WAITAOF` how many of the primary (0 or 1) and of the
/// replicas have them on disk.
fn confirmation_shortfall(confirmation: &Confirmation, answer: redis::Value) -> Option<String> {
    let wanted = confirmation.replicas;
    if confirmation.on_disk {
        let (local, replicas): (u32, u32) = redis::from_redis_value(answer).unwrap_or((0, 0));
        if local < 1 {
            return Some("the Redis primary did not confirm the batch on disk".to_string());
        }
        (replicas < wanted)
            .then(|| format!("{replicas} of {wanted} Redis replicas confirmed the batch on disk"))
    } else {
        let replicas: u32 = redis::from_redis_value(answer).unwrap_or(0);
        (replicas < wanted)
            .then(|| format!("{replicas} of {wanted} Redis replicas confirmed the batch"))
    }
}

/// What the append script answers: seq and time, and for an entry an earlier append made, its
/// message id and its record if the log still holds it.
type Position = (u64, u64, Option<String>, Option<Vec<u8>>);
