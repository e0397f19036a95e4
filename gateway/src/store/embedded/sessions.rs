//! The embedded store's MQTT sessions, their queues and the retained messages, everything sealed
//! under where it is kept.
//!
//! A session's state is kept and dropped by the writer thread, in its next group commit: one
//! fsync for all the sessions a reconnect storm changes at once, and all of them allocated by
//! one thread, so that what the store's memory keeps of many sessions sits together instead of
//! pinning partly used allocator pages of every blocking thread (about 2 KB per connection with
//! 32 of them). A session's queue is written to the operating system at once, so a crash of the
//! gateway loses none of it, and made durable by the next group commit; a power cut may lose its
//! last message, never one of a log. Retained messages and deletions are synced at once.

use super::layout::{be_u64, failed, Keyspaces};
use super::writer::{Command, SessionChange};
use super::EmbeddedStore;
use crate::infra::cipher::KeyRing;
use crate::infra::fjall::commit as commit_to_disk;
use crate::infra::time::unix_millis;
use crate::store::retained::RetainedStore;
use crate::store::sessions::{QueueBound, SessionKey, SessionStore};
use crate::store::StoreError;
use async_trait::async_trait;

/// The key of a session's queued message at `position`.
fn queued_key(name: &str, position: u64) -> Vec<u8> {
    [name.as_bytes(), b"\0", &position.to_be_bytes()].concat()
}

fn queue_prefix(name: &str) -> Vec<u8> {
    [name.as_bytes(), b"\0"].concat()
}

fn open_sealed(keys: &KeyRing, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, StoreError> {
    keys.open(sealed, aad)
        .map_err(|e| StoreError::Unreadable(format!("a kept session or message: {e}")))
}

/// A session's kept state, unless it expired by `now_ms`.
fn live_session(
    keys: &KeyRing,
    name: &str,
    value: &[u8],
    now_ms: u64,
) -> Result<Option<Vec<u8>>, StoreError> {
    let (expiry, sealed) = value
        .split_at_checked(8)
        .ok_or_else(|| StoreError::Unreadable(format!("session {name:?} is damaged")))?;
    if be_u64(expiry) <= now_ms {
        return Ok(None);
    }
    open_sealed(keys, sealed, name.as_bytes()).map(Some)
}

impl Keyspaces {
    /// Adds to `batch` the removal of the session and its queue.
    pub(super) fn drop_session_into(
        &self,
        batch: &mut fjall::OwnedWriteBatch,
        name: &str,
    ) -> Result<(), StoreError> {
        batch.remove(&self.sessions, name);
        for entry in self.session_queues.prefix(queue_prefix(name)) {
            batch.remove(&self.session_queues, entry.key().map_err(failed)?);
        }
        Ok(())
    }

    /// Removes the sessions of a deleted user's devices and their queues.
    pub(super) fn forget_user_sessions(&self, user: &str) -> Result<(), StoreError> {
        let prefix = user_sessions_prefix(user);
        let mut batch = self.durable_batch();
        let mut names = Vec::new();
        for entry in self.sessions.prefix(&prefix) {
            let name = String::from_utf8_lossy(&entry.key().map_err(failed)?).into_owned();
            self.drop_session_into(&mut batch, &name)?;
            names.push(name);
        }
        commit_to_disk(batch).map_err(failed)?;
        for name in names {
            self.session_names.remove(&name);
        }
        Ok(())
    }

    /// What is kept of the user's devices' sessions, named for a footprint
    /// (`sessions/{user}/{device}`, `session_queues/{user}/{device}/{position}`).
    pub(super) fn session_names(&self, user: &str) -> Result<Vec<String>, StoreError> {
        let prefix = user_sessions_prefix(user);
        let mut found = Vec::new();
        for (space, kind) in [
            (&self.sessions, "sessions"),
            (&self.session_queues, "session_queues"),
        ] {
            for entry in space.prefix(&prefix) {
                let key = entry.key().map_err(failed)?;
                let rest = String::from_utf8_lossy(&key[prefix.len()..]).replace('\0', "/");
                found.push(format!("{kind}/{user}/{rest}"));
            }
        }
        Ok(found)
    }
}

/// What every session name of the user's devices begins with.
fn user_sessions_prefix(user: &str) -> String {
    SessionKey::Device {
        user: user.to_string(),
        device: String::new(),
    }
    .name()
}

#[async_trait]
impl SessionStore for EmbeddedStore {
    async fn put_session(
        &self,
        key: &SessionKey,
        state: &[u8],
        expires_at_ms: u64,
    ) -> Result<(), StoreError> {
        let name = key.name();
        let value = [
            &expires_at_ms.to_be_bytes()[..],
            &self.keys.ring().seal(state, name.as_bytes()),
        ]
        .concat();
        let change = SessionChange::Put(value);
        self.write(|reply| Command::Session {
            name,
            change,
            reply,
        })
        .await
    }

    async fn session(&self, key: &SessionKey) -> Result<Option<Vec<u8>>, StoreError> {
        let name = key.name();
        if !self.spaces.session_names.contains(&name) {
            return Ok(None);
        }
        self.read_with(
            move |spaces, keys| match spaces.sessions.get(&name).map_err(failed)? {
                Some(value) => live_session(keys, &name, &value, unix_millis()),
                None => Ok(None),
            },
        )
        .await
    }

    async fn drop_session(&self, key: &SessionKey) -> Result<(), StoreError> {
        let name = key.name();
        if !self.spaces.session_names.contains(&name) {
            // Nothing kept, nothing queued (a queue lives only with its session).
            return Ok(());
        }
        self.write(|reply| Command::Session {
            name,
            change: SessionChange::Drop,
            reply,
        })
        .await
    }

    async fn enqueue(
        &self,
        key: &SessionKey,
        message: &[u8],
        bound: QueueBound,
    ) -> Result<u64, StoreError> {
        let (name, message) = (key.name(), message.to_vec());
        self.read_with(move |spaces, keys| {
            let mut queued = Vec::new();
            for entry in spaces.session_queues.prefix(queue_prefix(&name)) {
                let (key, sealed) = entry.into_inner().map_err(failed)?;
                queued.push((key, sealed.len()));
            }
            let next = queued
                .last()
                .and_then(|(key, _)| key.get(key.len() - 8..))
                .map_or(0, |position| be_u64(position) + 1);
            let entry = queued_key(&name, next);
            let sealed = keys.seal(&message, &entry);
            let mut batch = spaces.buffered_batch();
            let (mut count, mut bytes) = (
                queued.len() + 1,
                queued.iter().map(|(_, len)| len).sum::<usize>() + sealed.len(),
            );
            let mut dropped = 0;
            for (oldest, len) in &queued {
                if count <= bound.messages.max(1) && bytes <= bound.bytes {
                    break;
                }
                batch.remove(&spaces.session_queues, oldest.clone());
                (count, bytes, dropped) = (count - 1, bytes - len, dropped + 1);
            }
            batch.insert(&spaces.session_queues, entry, sealed);
            commit_to_disk(batch).map_err(failed)?;
            Ok(dropped)
        })
        .await
    }

    async fn take_queued(&self, key: &SessionKey) -> Result<Vec<Vec<u8>>, StoreError> {
        let name = key.name();
        self.read_with(move |spaces, keys| {
            let mut batch = spaces.buffered_batch();
            let mut taken = Vec::new();
            for entry in spaces.session_queues.prefix(queue_prefix(&name)) {
                let (key, sealed) = entry.into_inner().map_err(failed)?;
                taken.push(open_sealed(keys, &sealed, &key)?);
                batch.remove(&spaces.session_queues, key);
            }
            commit_to_disk(batch).map_err(failed)?;
            Ok(taken)
        })
        .await
    }

    async fn kept_sessions(&self) -> Result<Vec<(SessionKey, Vec<u8>)>, StoreError> {
        self.read_with(move |spaces, keys| {
            let now = unix_millis();
            let mut kept = Vec::new();
            for entry in spaces.sessions.iter() {
                let (name, value) = entry.into_inner().map_err(failed)?;
                let name = String::from_utf8_lossy(&name).into_owned();
                let (Some(key), Some(state)) = (
                    SessionKey::parse(&name),
                    live_session(keys, &name, &value, now)?,
                ) else {
                    continue;
                };
                kept.push((key, state));
            }
            Ok(kept)
        })
        .await
    }
}

#[async_trait]
impl RetainedStore for EmbeddedStore {
    async fn put_retained(&self, topic: &str, message: Option<&[u8]>) -> Result<(), StoreError> {
        let (topic, message) = (topic.to_string(), message.map(<[u8]>::to_vec));
        self.read_with(move |spaces, keys| {
            let mut batch = spaces.durable_batch();
            match message {
                Some(message) => {
                    let sealed = keys.seal(&message, topic.as_bytes());
                    batch.insert(&spaces.retained, topic.as_str(), sealed);
                }
                None => batch.remove(&spaces.retained, topic.as_str()),
            }
            commit_to_disk(batch).map_err(failed)
        })
        .await
    }

    async fn retained(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.read_with(move |spaces, keys| {
            let mut found = Vec::new();
            for entry in spaces.retained.iter() {
                let (topic, sealed) = entry.into_inner().map_err(failed)?;
                let message = open_sealed(keys, &sealed, &topic)?;
                found.push((String::from_utf8_lossy(&topic).into_owned(), message));
            }
            Ok(found)
        })
        .await
    }
}
