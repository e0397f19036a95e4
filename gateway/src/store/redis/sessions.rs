//! The Redis store's MQTT sessions, their queues and the retained messages, sealed under where
//! they are kept. A device's session carries its user's hash tag, so it lives (and is deleted)
//! with the user's other keys; a client's is tagged by its client id in hex (a client id may hold
//! any character, braces included). `gw:sessions` names every session kept, so a starting node
//! finds them without scanning the keyspace; a name whose session expired is dropped from it when
//! found.

use super::RedisStore;
use crate::infra::redis::{bounded, scan};
use crate::store::retained::RetainedStore;
use crate::store::sessions::{QueueBound, SessionKey, SessionStore};
use crate::store::StoreError;
use async_trait::async_trait;
use redis::Script;
use std::sync::LazyLock;

/// The names of the sessions kept.
const SESSIONS: &str = "gw:sessions";

/// Keys a SCAN request looks at.
const SCAN_PAGE: usize = 1000;

/// The retained messages, by topic.
const RETAINED: &str = "gw:retained";

/// The keys of one session: its state, its queue and the queue's bytes.
pub(super) struct SessionKeys {
    pub state: String,
    pub queue: String,
    pub queued_bytes: String,
}

impl SessionKeys {
    pub(super) fn of(key: &SessionKey) -> Self {
        let base = match key {
            SessionKey::Device { user, device } => format!("gw:{{{user}}}:session:{device}"),
            SessionKey::Client(client) => format!("gw:{{c:{}}}:session", hex::encode(client)),
        };
        Self {
            queue: format!("{base}:queue"),
            queued_bytes: format!("{base}:queued_bytes"),
            state: base,
        }
    }

    /// The pattern of every session key of the user's devices.
    pub(super) fn of_user(user: &str) -> String {
        format!("gw:{{{user}}}:session:*")
    }
}

/// Queues a message, drops the oldest while the queue holds more than its most messages or
/// bytes (the newest always stays), and gives it the session's expiry. KEYS: the session, its
/// queue, the queue's bytes. ARGV: the sealed message, the most messages, the most bytes.
/// Returns how many were dropped.
static ENQUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = redis.call('RPUSH', KEYS[2], ARGV[1])
local bytes = redis.call('INCRBY', KEYS[3], #ARGV[1])
local most, most_bytes = tonumber(ARGV[2]), tonumber(ARGV[3])
local dropped = 0
while n > 1 and (n > most or bytes > most_bytes) do
  local oldest = redis.call('LPOP', KEYS[2])
  bytes = redis.call('DECRBY', KEYS[3], #oldest)
  n = n - 1
  dropped = dropped + 1
end
local at = redis.call('PEXPIRETIME', KEYS[1])
if at > 0 then
  redis.call('PEXPIREAT', KEYS[2], at)
  redis.call('PEXPIREAT', KEYS[3], at)
end
return dropped
",
    )
});

fn unreadable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unreadable(format!("a kept session or message: {e}"))
}

impl RedisStore {
    /// Removes the sessions of a deleted user's devices, their queues and their names.
    pub(super) async fn forget_user_sessions(&self, user: &str) -> Result<(), StoreError> {
        let mut redis = self.redis.clone();
        let found = scan(&mut redis, &SessionKeys::of_user(user), SCAN_PAGE).await?;
        if found.is_empty() {
            return Ok(());
        }
        let prefix = format!("gw:{{{user}}}:session:");
        let names: Vec<String> = found
            .iter()
            .filter_map(|key| key.strip_prefix(&prefix))
            .filter(|device| !device.contains(':'))
            .map(|device| {
                let device = device.to_string();
                SessionKey::Device {
                    user: user.to_string(),
                    device,
                }
                .name()
            })
            .collect();
        let mut pipe = redis::pipe();
        pipe.del(&found).ignore();
        if !names.is_empty() {
            pipe.srem(SESSIONS, names).ignore();
        }
        bounded(pipe.exec_async(&mut redis)).await?;
        Ok(())
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn put_session(
        &self,
        key: &SessionKey,
        state: &[u8],
        expires_at_ms: u64,
    ) -> Result<(), StoreError> {
        let keys = SessionKeys::of(key);
        let sealed = self.keys.ring().seal(state, keys.state.as_bytes());
        let mut redis = self.redis.clone();
        // The name after the session: a name without a session is dropped when found.
        bounded(
            redis::pipe()
                .cmd("SET")
                .arg(&keys.state)
                .arg(sealed)
                .arg("PXAT")
                .arg(expires_at_ms)
                .ignore()
                .cmd("PEXPIREAT")
                .arg(&keys.queue)
                .arg(expires_at_ms)
                .ignore()
                .cmd("PEXPIREAT")
                .arg(&keys.queued_bytes)
                .arg(expires_at_ms)
                .ignore()
                .sadd(SESSIONS, key.name())
                .ignore()
                .exec_async(&mut redis),
        )
        .await?;
        Ok(())
    }

    async fn session(&self, key: &SessionKey) -> Result<Option<Vec<u8>>, StoreError> {
        let keys = SessionKeys::of(key);
        let mut redis = self.redis.clone();
        let sealed: Option<Vec<u8>> =
            bounded(redis::cmd("GET").arg(&keys.state).query_async(&mut redis)).await?;
        sealed
            .map(|sealed| self.keys.ring().open(&sealed, keys.state.as_bytes()))
            .transpose()
            .map_err(unreadable)
    }

    async fn drop_session(&self, key: &SessionKey) -> Result<(), StoreError> {
        let keys = SessionKeys::of(key);
        let mut redis = self.redis.clone();
        bounded(
            redis::pipe()
                .del(&[&keys.state, &keys.queue, &keys.queued_bytes])
                .ignore()
                .srem(SESSIONS, key.name())
                .ignore()
                .exec_async(&mut redis),
        )
        .await?;
        Ok(())
    }

    async fn enqueue(
        &self,
        key: &SessionKey,
        message: &[u8],
        bound: QueueBound,
    ) -> Result<u64, StoreError> {
        let keys = SessionKeys::of(key);
        let sealed = self.keys.ring().seal(message, keys.queue.as_bytes());
        let mut redis = self.redis.clone();
        let dropped: u64 = bounded(
            ENQUEUE
                .key(&keys.state)
                .key(&keys.queue)
                .key(&keys.queued_bytes)
                .arg(sealed)
                .arg(bound.messages.max(1))
                .arg(bound.bytes)
                .invoke_async(&mut redis),
        )
        .await?;
        Ok(dropped)
    }

    async fn take_queued(&self, key: &SessionKey) -> Result<Vec<Vec<u8>>, StoreError> {
        let keys = SessionKeys::of(key);
        let mut redis = self.redis.clone();
        let (sealed,): (Vec<Vec<u8>>,) = bounded(
            redis::pipe()
                .atomic()
                .lrange(&keys.queue, 0, -1)
                .del(&[&keys.queue, &keys.queued_bytes])
                .ignore()
                .query_async(&mut redis),
        )
        .await?;
        sealed
            .iter()
            .map(|message| self.keys.ring().open(message, keys.queue.as_bytes()))
            .collect::<Result<_, _>>()
            .map_err(unreadable)
    }

    async fn kept_sessions(&self) -> Result<Vec<(SessionKey, Vec<u8>)>, StoreError> {
        let mut redis = self.redis.clone();
        let names: Vec<String> =
            bounded(redis::cmd("SMEMBERS").arg(SESSIONS).query_async(&mut redis)).await?;
        let mut kept = Vec::new();
        for name in names {
            let Some(key) = SessionKey::parse(&name) else {
                continue;
            };
            match self.session(&key).await? {
                Some(state) => kept.push((key, state)),
                None => {
                    bounded(
                        redis::cmd("SREM")
                            .arg(SESSIONS)
                            .arg(&name)
                            .exec_async(&mut redis),
                    )
                    .await?;
                }
            }
        }
        Ok(kept)
    }
}

#[async_trait]
impl RetainedStore for RedisStore {
    async fn put_retained(&self, topic: &str, message: Option<&[u8]>) -> Result<(), StoreError> {
        let mut redis = self.redis.clone();
        let command = match message {
            Some(message) => {
                let sealed = self.keys.ring().seal(message, topic.as_bytes());
                let mut set = redis::cmd("HSET");
                set.arg(RETAINED).arg(topic).arg(sealed);
                set
            }
            None => {
                let mut remove = redis::cmd("HDEL");
                remove.arg(RETAINED).arg(topic);
                remove
            }
        };
        bounded(command.exec_async(&mut redis)).await?;
        Ok(())
    }

    async fn retained(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut redis = self.redis.clone();
        let all: Vec<(String, Vec<u8>)> =
            bounded(redis::cmd("HGETALL").arg(RETAINED).query_async(&mut redis)).await?;
        all.into_iter()
            .map(|(topic, sealed)| {
                let message = self
                    .keys
                    .ring()
                    .open(&sealed, topic.as_bytes())
                    .map_err(unreadable)?;
                Ok((topic, message))
            })
            .collect()
    }
}
