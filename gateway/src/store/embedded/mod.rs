//! The embedded store: fjall (an LSM tree with a write-ahead journal) in the data dir.
//!
//! fjall was picked over redb by measurement on this 2-core machine (bare durable appends per
//! second, no sealing, with 1 / 16 / 256 concurrent writers: fjall 8.9k / 49k / 168k, redb 4.6k /
//! 19k / 57k): a group commit is one journal append and one fsync. With sealing and the heads kept
//! per log, the writer thread's CPU is the limit (see the README's benchmarks).
//!
//! One writer thread does every write, in the order asked: appends queued together share one
//! journal batch and one fsync; cursor moves ride along in the same batch; deletions and sweeps
//! run between batches. A responder thread hands each committed batch to the commit feed and
//! answers its appenders, in order, while the writer commits the next. Readers read the
//! keyspaces directly.
//!
//! A log's head is stored when the log is created, trimmed or swept, not on every append: its
//! last sequence and time are those of the log's newest entry when that is newer, and the writer
//! keeps the heads of recent logs in memory. Whatever removes a log's newest entries (a sweep)
//! stores the head first, so a sequence is never given out twice.
//!
//! Idempotency keys are marked beside the entries they made ([`markers`]), in the same journal
//! batch; the writer looks them up before appending, also among the appends of its own batch.
//!
//! [`layout`] holds the keyspaces and their keys, [`writer`] the writer and responder threads,
//! `sessions.rs` the MQTT sessions kept for clients that are away and the retained messages.

mod known_devices;
mod layout;
mod markers;
mod revocations;
mod sessions;
mod writer;

use super::clock::HybridClock;
use super::data_keys::DataKeys;
use super::record::between;
use super::record::Keys;
use super::{
    queue_refusal, AppendTicket, CommitFeed, DevicePosition, IdempotencyKey, LogHead, LogPage,
    NewMessage, Settings, Store, StoreError, SweepReport,
};
use crate::infra::cipher::KeyRing;
use crate::infra::time::unix_millis;
use async_trait::async_trait;
use layout::{
    be_u64, failed, log_key, log_position, open_value, pair_key, pair_second, prefix, Keyspaces,
};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use writer::{Call, Command, Reply};

pub struct EmbeddedStore {
    spaces: Keyspaces,
    keys: Arc<DataKeys>,
    commands: mpsc::Sender<Command>,
}

impl EmbeddedStore {
    /// Opens (creating when missing) the store in directory `path` and starts its writer thread.
    pub fn open(
        path: &Path,
        keys: Arc<DataKeys>,
        clock: Arc<HybridClock>,
        feed: Arc<dyn CommitFeed>,
        settings: Settings,
    ) -> anyhow::Result<Self> {
        let spaces = Keyspaces::open(path, settings.memtable_size)
            .map_err(|e| anyhow::anyhow!("cannot open the store {}: {e}", path.display()))?;
        let commands = writer::start(spaces.clone(), keys.clone(), clock, settings, feed)?;
        Ok(Self {
            spaces,
            keys,
            commands,
        })
    }

    /// Has the writer thread do a write and waits for its answer.
    async fn write<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| StoreError::Unavailable("the store writer stopped".into()))?;
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("the store writer stopped".into())))
    }

    /// Runs `work` on a blocking thread, with the configured keys (what sessions and retained
    /// messages are sealed under).
    async fn read_with<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Keyspaces, &KeyRing) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.read_with_data_keys(move |spaces, data_keys| work(spaces, data_keys.ring()))
            .await
    }

    /// Runs `work` on a blocking thread, with the users' data keys.
    async fn read_with_data_keys<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Keyspaces, &DataKeys) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let spaces = self.spaces.clone();
        let keys = self.keys.clone();
        tokio::task::spawn_blocking(move || work(&spaces, &keys))
            .await
            .map_err(failed)?
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    fn append(&self, messages: Vec<NewMessage>, key: Option<IdempotencyKey>) -> AppendTicket {
        let (reply, ticket) = AppendTicket::channel();
        let call = Call {
            messages,
            key,
            reply,
        };
        if let Err(refused) = self.commands.try_send(Command::Append(call)) {
            let (why, command) = queue_refusal(refused);
            if let Command::Append(call) = command {
                let _ = call.reply.send(Err(StoreError::Unavailable(why.into())));
            }
        }
        ticket
    }

    async fn head(&self, user: &str) -> Result<LogHead, StoreError> {
        let user = user.to_string();
        self.read_with(move |spaces, _| log_head(spaces, &user))
            .await
    }

    async fn read(&self, user: &str, after: u64, limit: usize) -> Result<LogPage, StoreError> {
        let user = user.to_string();
        self.read_with_data_keys(move |spaces, data_keys| {
            let data_key = spaces.data_key(data_keys, &user)?;
            let keys = Keys {
                ring: data_keys.ring(),
                data_key: data_key.as_deref(),
            };
            let mut forgotten = Vec::new();
            for entry in spaces.forgotten.prefix(prefix(&user)) {
                let (key, upto) = entry.into_inner().map_err(failed)?;
                forgotten.push((pair_second(&key, &user), be_u64(&upto)));
            }
            // The head first: every entry up to it is committed, so the range sees it.
            let last_seq = spaces.head(&user)?.map_or(0, |head| head.last_seq);
            let mut page = LogPage::empty(after);
            let start = log_key(&user, after.saturating_add(1));
            let mut taken = 0;
            for entry in spaces
                .messages
                .range(start..=log_key(&user, u64::MAX))
                .take(limit)
            {
                taken += 1;
                let (key, value) = entry.into_inner().map_err(failed)?;
                let seq = log_position(&key).1;
                page.covered_to = seq;
                let Some(entry) = open_value(keys, &user, seq, &value)? else {
                    continue;
                };
                let hidden = forgotten
                    .iter()
                    .any(|(other, upto)| seq <= *upto && between(&entry, &user, other));
                if !hidden {
                    page.entries.push(entry);
                }
            }
            page.finish(taken, limit, last_seq);
            Ok(page)
        })
        .await
    }

    async fn position(&self, user: &str, device: &str) -> Result<DevicePosition, StoreError> {
        let (user, key) = (user.to_string(), pair_key(user, device));
        self.read_with(move |spaces, _| {
            Ok(DevicePosition {
                head: log_head(spaces, &user)?,
                cursor: spaces.cursors.get(key).map_err(failed)?.map(|c| be_u64(&c)),
            })
        })
        .await
    }

    async fn ack(&self, user: &str, device: &str, seq: u64) -> Result<u64, StoreError> {
        let (user, device) = (user.to_string(), device.to_string());
        self.write(|reply| Command::Ack {
            user,
            device,
            seq,
            reply,
        })
        .await
    }

    async fn delete_user(&self, user: &str) -> Result<(), StoreError> {
        let owner = user.to_string();
        self.write(|reply| Command::DeleteUser { user: owner, reply })
            .await?;
        let user = user.to_string();
        self.read_with(move |spaces, _| spaces.forget_user_sessions(&user))
            .await
    }

    async fn forget_contact(&self, user: &str, other: &str) -> Result<(), StoreError> {
        let (user, other) = (user.to_string(), other.to_string());
        self.write(|reply| Command::ForgetContact { user, other, reply })
            .await
    }

    async fn sweep(&self, older_than_ms: u64) -> Result<SweepReport, StoreError> {
        let mut report = self
            .write(|reply| Command::Sweep {
                older_than_ms,
                reply,
            })
            .await?;
        report.expired_revocations = self
            .read_with(|spaces, _| spaces.forget_old_revocations(unix_millis()))
            .await?;
        Ok(report)
    }

    fn queued_writes(&self) -> usize {
        super::queued(&self.commands)
    }

    async fn close(&self) {
        let (reply, closed) = oneshot::channel();
        if self.commands.send(Command::Close { reply }).await.is_ok() {
            let _ = closed.await;
        }
    }

    async fn footprint(&self, user: &str) -> Result<Vec<String>, StoreError> {
        let user = user.to_string();
        self.read_with(move |spaces, _| {
            let mut found = Vec::new();
            for entry in spaces.messages.prefix(prefix(&user)) {
                let key = entry.key().map_err(failed)?;
                found.push(format!("messages/{user}/{}", log_position(&key).1));
            }
            for (name, space) in [("heads", &spaces.heads), ("data_keys", &spaces.data_keys)] {
                if space.get(&user).map_err(failed)?.is_some() {
                    found.push(format!("{name}/{user}"));
                }
            }
            for (name, space) in [
                ("cursors", &spaces.cursors),
                ("forgotten", &spaces.forgotten),
                ("idempotency", &spaces.idempotency),
                ("known_devices", &spaces.known_devices),
            ] {
                for entry in space.prefix(prefix(&user)) {
                    let key = entry.key().map_err(failed)?;
                    found.push(format!("{name}/{user}/{}", pair_second(&key, &user)));
                }
            }
            found.extend(spaces.session_names(&user)?);
            found.extend(spaces.revocation_names(&user));
            Ok(found)
        })
        .await
    }
}

/// The head of `user`'s log as readers see it.
fn log_head(spaces: &Keyspaces, user: &str) -> Result<LogHead, StoreError> {
    Ok(match spaces.head(user)? {
        Some(head) => LogHead {
            epoch: head.epoch,
            first_seq: head.first_seq,
            last_seq: head.last_seq,
        },
        None => LogHead::never_written(),
    })
}
