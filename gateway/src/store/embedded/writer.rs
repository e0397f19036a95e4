//! The embedded store's writer: one thread that does every write in the order asked, and a
//! responder thread that hands each committed batch to the commit feed and answers its
//! appenders while the writer commits the next.

use super::layout::{
    be_u64, failed, log_key, log_position, open_value, pair_key, pair_of, prefix, Head, Keyspaces,
};
use super::markers::{marker_key, Marker};
use crate::infra::data_key::DataKey;
use crate::infra::fjall::commit as commit_to_disk;
use crate::infra::latency_budget::Stage;
use crate::infra::time::unix_millis;
use crate::store::clock::HybridClock;
use crate::store::data_keys::DataKeys;
use crate::store::outcome::{self, Outcome};
use crate::store::record::{self, between, hlc_millis, Keys};
use crate::store::{
    Appended, CommitFeed, IdempotencyKey, NewMessage, Settings, StoreError, Stored, SweepReport,
};
use fjall::OwnedWriteBatch;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// The writes, each done by the writer thread in the order they were asked.
pub(super) enum Command {
    Append(Call),
    Ack {
        user: String,
        device: String,
        seq: u64,
        reply: Reply<u64>,
    },
    /// Keep or drop an MQTT session's state: written with the next batch, answered when it is
    /// durable.
    Session {
        name: String,
        change: SessionChange,
        reply: Reply<()>,
    },
    /// Remember a device as one of the user's (decided already, in memory): written with the
    /// next batch, answered when it is durable.
    RememberDevice {
        user: String,
        device: String,
        reply: Reply<()>,
    },
    DeleteUser {
        user: String,
        reply: Reply<()>,
    },
    ForgetContact {
        user: String,
        other: String,
        reply: Reply<()>,
    },
    Sweep {
        older_than_ms: u64,
        reply: Reply<SweepReport>,
    },
    /// Commit what came before, answer it all, then stop.
    Close {
        reply: oneshot::Sender<()>,
    },
}

/// A change to one kept MQTT session (see `sessions.rs`).
pub(super) enum SessionChange {
    /// Keep this value (the session's expiry and sealed state).
    Put(Vec<u8>),
    /// Remove the session and its queue.
    Drop,
}

/// Starts the writer and responder threads; what is sent on the returned queue is done in order.
pub(super) fn start(
    spaces: Keyspaces,
    keys: Arc<DataKeys>,
    clock: Arc<HybridClock>,
    settings: Settings,
    feed: Arc<dyn CommitFeed>,
) -> std::io::Result<mpsc::Sender<Command>> {
    let (commands, queue) = mpsc::channel(settings.max_queued_writes);
    let (done, finished) = std::sync::mpsc::channel();
    let writer = Writer {
        spaces,
        keys,
        clock,
        settings,
        heads: HashMap::new(),
        data_keys: HashMap::new(),
        done,
    };
    std::thread::Builder::new()
        .name("store-responder".into())
        .spawn(move || respond(finished, feed))?;
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || writer.run(queue))?;
    Ok(commands)
}

/// The one thread that writes. It takes every command queued (up to `max_batch` appends), puts
/// the appends and cursor moves in one journal batch made durable by one fsync, hands the
/// appended messages to the commit feed in log order, and then answers.
struct Writer {
    spaces: Keyspaces,
    keys: Arc<DataKeys>,
    clock: Arc<HybridClock>,
    settings: Settings,
    /// Heads of recently written logs, as committed: no lookup in the store per append.
    heads: HashMap<String, Head>,
    /// The data keys of recently written logs, as committed: what every record appended to
    /// them must be sealed under. Bounded like `heads`.
    data_keys: HashMap<String, Arc<DataKey>>,
    /// Committed batches go to the responder thread, which delivers them live and answers.
    done: std::sync::mpsc::Sender<Done>,
}

/// Most heads the writer keeps in memory; past that the cache starts over.
const HEAD_CACHE: usize = 100_000;

/// An append call, waiting for its group to be committed.
pub(super) struct Call {
    pub messages: Vec<NewMessage>,
    pub key: Option<IdempotencyKey>,
    pub reply: Reply<Stored>,
}

/// A group the writer is finished with, for the responder.
enum Done {
    Committed {
        group: Group,
        outcome: Outcome,
        cursors: Vec<u64>,
        durable_at: Instant,
    },
    Failed {
        group: Group,
        error: StoreError,
    },
    /// Everything before was answered: the store is closed.
    Closed(oneshot::Sender<()>),
}

/// Hands committed entries to the feed, in log order, and answers their appenders: on its own
/// thread, so the writer goes on to the next batch meanwhile.
fn respond(done: std::sync::mpsc::Receiver<Done>, feed: Arc<dyn CommitFeed>) {
    for finished in done {
        match finished {
            Done::Committed {
                group,
                outcome,
                cursors,
                durable_at,
            } => {
                let replies = group.appends.into_iter().map(|call| call.reply).collect();
                outcome.answer(&*feed, replies, durable_at);
                for ((_, _, _, reply), cursor) in group.acks.into_iter().zip(cursors) {
                    let _ = reply.send(Ok(cursor));
                }
                answer_writes(group.sessions, group.devices, Ok(()));
            }
            Done::Failed { group, error } => {
                for call in group.appends {
                    let _ = call.reply.send(Err(error.clone()));
                }
                for (_, _, _, reply) in group.acks {
                    let _ = reply.send(Err(error.clone()));
                }
                answer_writes(group.sessions, group.devices, Err(error));
            }
            Done::Closed(reply) => {
                let _ = reply.send(());
                return;
            }
        }
    }
}

/// Answers a group's session changes and remembered devices, which wait for nothing but its
/// commit.
fn answer_writes(sessions: SessionChanges, devices: Vec<Device>, result: Result<(), StoreError>) {
    let sessions = sessions.into_values().map(|(_, reply)| reply);
    let devices = devices.into_iter().map(|(_, _, reply)| reply);
    for reply in sessions.chain(devices) {
        let _ = reply.send(result.clone());
    }
}

/// A group's session changes by the session's name: one per session, since one batch holds
/// one value per key (a second change to a session starts a new group).
type SessionChanges = HashMap<String, (SessionChange, Reply<()>)>;

/// A known device to write: user and device.
type Device = (String, String, Reply<()>);

/// Appends, cursor moves and session changes gathered into one batch.
#[derive(Default)]
struct Group {
    appends: Vec<Call>,
    acks: Vec<(String, String, u64, Reply<u64>)>,
    sessions: SessionChanges,
    devices: Vec<Device>,
    messages: usize,
}

impl Writer {
    fn run(mut self, mut queue: mpsc::Receiver<Command>) {
        let mut group = Group::default();
        while let Some(first) = queue.blocking_recv() {
            let mut next = Some(first);
            while let Some(command) = next.take() {
                match command {
                    Command::Append(call) => {
                        group.messages += call.messages.len();
                        group.appends.push(call);
                    }
                    Command::Ack {
                        user,
                        device,
                        seq,
                        reply,
                    } => group.acks.push((user, device, seq, reply)),
                    Command::Session {
                        name,
                        change,
                        reply,
                    } => {
                        if group.sessions.contains_key(&name) {
                            self.commit(std::mem::take(&mut group));
                        }
                        group.sessions.insert(name, (change, reply));
                    }
                    Command::RememberDevice {
                        user,
                        device,
                        reply,
                    } => group.devices.push((user, device, reply)),
                    Command::Close { reply } => {
                        self.commit(std::mem::take(&mut group));
                        // The store's files are let go before the close is answered, so that
                        // it can be opened again as soon as the caller hears back.
                        let done = self.done.clone();
                        drop(self);
                        let _ = done.send(Done::Closed(reply));
                        return;
                    }
                    other => {
                        self.commit(std::mem::take(&mut group));
                        self.run_alone(other);
                    }
                }
                if group.messages < self.settings.max_batch {
                    next = queue.try_recv().ok();
                }
            }
            self.commit(std::mem::take(&mut group));
        }
    }

    fn commit(&mut self, mut group: Group) {
        if group.appends.is_empty()
            && group.acks.is_empty()
            && group.devices.is_empty()
            && group.sessions.is_empty()
        {
            return;
        }
        let taken = Instant::now();
        let budget = self.settings.budget.clone();
        for message in group.appends.iter().flat_map(|call| &call.messages) {
            budget.observe(Stage::queued, message.accepted_at, taken);
        }
        // Written, then fsynced, as one durable batch would be, to see which of the two the
        // time goes to.
        let mut batch = self.spaces.buffered_batch();
        let result = (self.seal(&mut batch, &mut group))
            .and_then(|()| self.fill(&mut batch, &group))
            .and_then(|outcome| {
                let sealed = Instant::now();
                budget.observe_batch(Stage::sealed, taken, sealed, group.messages);
                commit_to_disk(batch).map_err(failed)?;
                let written = Instant::now();
                budget.observe_batch(Stage::written, sealed, written, group.messages);
                self.spaces.sync()?;
                let durable_at = Instant::now();
                budget.observe_batch(Stage::fsynced, written, durable_at, group.messages);
                self.settings.commit_took(sealed);
                Ok((outcome, durable_at))
            });
        let finished = match result {
            Ok(((outcome, cursors, heads), durable_at)) => {
                if self.heads.len() + heads.len() > HEAD_CACHE {
                    self.heads.clear();
                }
                self.heads.extend(heads);
                for (name, (change, _)) in &group.sessions {
                    match change {
                        SessionChange::Put(_) => {
                            self.spaces.session_names.insert(name.clone());
                        }
                        SessionChange::Drop => {
                            self.spaces.session_names.remove(name);
                        }
                    }
                }
                Done::Committed {
                    group,
                    outcome,
                    cursors,
                    durable_at,
                }
            }
            Err(error) => {
                tracing::error!("store commit failed: {error}");
                // What the caches hold may not be what is stored now.
                self.heads.clear();
                self.data_keys.clear();
                self.keys.drop_all_held();
                Done::Failed { group, error }
            }
        };
        let _ = self.done.send(finished);
    }

    /// Seals every message of the group under its log owner's data key, the one stored (made
    /// now, into `batch`, for a log that has none): a message the front did not seal, or sealed
    /// under a key the owner no longer has (deleted meanwhile), is sealed here.
    fn seal(&mut self, batch: &mut OwnedWriteBatch, group: &mut Group) -> Result<(), StoreError> {
        for message in group.appends.iter_mut().flat_map(|call| &mut call.messages) {
            let key = match self.data_keys.get(&message.log) {
                Some(key) => key.clone(),
                None => {
                    let key = match self.spaces.data_key(&self.keys, &message.log)? {
                        Some(key) => key,
                        None => {
                            let (key, wrapped) = self.keys.generate(&message.log);
                            batch.insert(&self.spaces.data_keys, message.log.as_str(), wrapped);
                            key
                        }
                    };
                    if self.data_keys.len() >= HEAD_CACHE {
                        self.data_keys.clear();
                    }
                    self.data_keys.insert(message.log.clone(), key.clone());
                    self.keys.hold(&message.log, key.clone());
                    key
                }
            };
            if message
                .sealed
                .as_ref()
                .is_none_or(|s| s.key.id() != key.id())
            {
                record::seal_under(message, key);
            }
        }
        Ok(())
    }

    /// Writes the group into `batch`: sequences and times for the appends, their idempotency
    /// markers, retention by count, and the cursors. Returns every call's entries, the cursors
    /// in request order, and the heads of the logs written. A head is stored only when a log is
    /// created or trimmed.
    #[allow(clippy::type_complexity)]
    fn fill(
        &self,
        batch: &mut OwnedWriteBatch,
        group: &Group,
    ) -> Result<(Outcome, Vec<u64>, Vec<(String, Head)>), StoreError> {
        let spaces = &self.spaces;
        // Each log's head, and whether it must be stored.
        let mut heads: HashMap<&str, (Head, bool)> = HashMap::new();
        let mut outcome = Outcome::with_capacity(group.messages);
        // The markers this group writes, by key: the entry each marks, and its message's id.
        let mut marked: HashMap<Vec<u8>, (usize, String)> = HashMap::new();
        let now_ms = unix_millis();
        let mut value = Vec::new();
        for call in &group.appends {
            outcome.next_call();
            let name = call.key.as_ref().map(IdempotencyKey::marker);
            for message in &call.messages {
                let key = name.as_deref().map(|name| marker_key(&message.log, name));
                let mut expired = None;
                if let Some(key) = &key {
                    if let Some((index, id)) = marked.get(key) {
                        outcome.repeated(outcome.entry(*index).clone(), id);
                        continue;
                    }
                    match spaces.marker(key)? {
                        Some(marker) if marker.expiry > now_ms => {
                            let entry = self.original(message, &marker)?;
                            outcome.repeated(entry, &marker.id);
                            continue;
                        }
                        stale => expired = stale,
                    }
                }
                let (head, _) = match heads.entry(&message.log) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        let known = match self.heads.get(&message.log) {
                            Some(cached) => Some(cached.clone()),
                            None => spaces.head(&message.log)?,
                        };
                        e.insert(match known {
                            Some(head) => (head, false),
                            None => (Head::fresh(), true),
                        })
                    }
                };
                head.last_seq += 1;
                head.last_hlc = self.clock.after(head.last_hlc);
                value.clear();
                value.extend_from_slice(&head.last_hlc.to_be_bytes());
                value.extend_from_slice(message.record());
                batch.insert(
                    &spaces.messages,
                    log_key(&message.log, head.last_seq),
                    value.as_slice(),
                );
                let payload =
                    record::live_payload(&message.plaintext, head.last_seq, head.last_hlc);
                let index =
                    outcome.made(Appended::of(message, head.last_seq, head.last_hlc, payload));
                if let (Some(key), Some(idempotency)) = (key, &call.key) {
                    let marker = Marker {
                        expiry: now_ms.saturating_add(idempotency.window_ms()),
                        seq: head.last_seq,
                        hlc: head.last_hlc,
                        id: message.id.clone(),
                    };
                    spaces.mark(batch, key.clone(), &marker, expired.as_ref());
                    marked.insert(key, (index, marker.id));
                }
            }
        }
        for (log, (head, store)) in heads.iter_mut() {
            let kept = head.last_seq + 1 - head.first_seq;
            if kept > self.settings.retention_count {
                let new_first = head.last_seq + 1 - self.settings.retention_count;
                for seq in head.first_seq..new_first {
                    batch.remove(&spaces.messages, log_key(log, seq));
                }
                head.first_seq = new_first;
                *store = true;
            }
            if *store {
                batch.insert(&spaces.heads, *log, head.encode());
            }
        }
        for (user, device, _) in &group.devices {
            batch.insert(&spaces.known_devices, pair_key(user, device), []);
        }
        for (name, (change, _)) in &group.sessions {
            match change {
                SessionChange::Put(value) => {
                    batch.insert(&spaces.sessions, name.as_str(), value.as_slice());
                }
                SessionChange::Drop => spaces.drop_session_into(batch, name)?,
            }
        }
        let mut cursors: HashMap<Vec<u8>, u64> = HashMap::new();
        let mut answers = Vec::with_capacity(group.acks.len());
        for (user, device, seq, _) in &group.acks {
            let last = match (heads.get(user.as_str()), self.heads.get(user)) {
                (Some((head, _)), _) | (None, Some(head)) => head.last_seq,
                (None, None) => spaces.head(user)?.map_or(0, |h| h.last_seq),
            };
            let key = pair_key(user, device);
            let old = match cursors.get(&key) {
                Some(cursor) => *cursor,
                None => spaces
                    .cursors
                    .get(&key)
                    .map_err(failed)?
                    .map_or(0, |c| be_u64(&c)),
            };
            let new = old.max((*seq).min(last));
            if new != old {
                batch.insert(&spaces.cursors, key.clone(), new.to_be_bytes());
            }
            cursors.insert(key, new);
            answers.push(new);
        }
        let heads = heads
            .into_iter()
            .map(|(log, (head, _))| (log.to_string(), head))
            .collect();
        Ok((outcome, answers, heads))
    }

    /// The entry an earlier append made for `message`'s log under `marker`, read back.
    fn original(&self, message: &NewMessage, marker: &Marker) -> Result<Appended, StoreError> {
        let key = log_key(&message.log, marker.seq);
        let stored = self.spaces.messages.get(key).map_err(failed)?;
        let record = stored.as_deref().and_then(|value| value.get(8..));
        let (seq, hlc) = (marker.seq, marker.hlc);
        Ok(outcome::original(
            self.keys.ring(),
            message,
            seq,
            hlc,
            record,
        ))
    }

    fn run_alone(&mut self, command: Command) {
        // Deletions and sweeps rewrite heads behind the cache.
        self.heads.clear();
        match command {
            Command::DeleteUser { user, reply } => {
                let _ = reply.send(self.delete_user(&user));
            }
            Command::ForgetContact { user, other, reply } => {
                let _ = reply.send(self.forget_contact(&user, &other));
            }
            Command::Sweep {
                older_than_ms,
                reply,
            } => {
                let _ = reply.send(self.sweep(older_than_ms));
            }
            Command::Append(_)
            | Command::Ack { .. }
            | Command::Session { .. }
            | Command::RememberDevice { .. }
            | Command::Close { .. } => {
                unreachable!(
                    "appends, acks, sessions, devices and the close are handled by the loop"
                )
            }
        }
    }

    /// Removes the user's log and everything beside it, and destroys the user's data key: what
    /// the log held cannot be read again from anything left on disk.
    fn delete_user(&mut self, user: &str) -> Result<(), StoreError> {
        let spaces = &self.spaces;
        let mut batch = spaces.durable_batch();
        for space in [
            &spaces.messages,
            &spaces.cursors,
            &spaces.forgotten,
            &spaces.known_devices,
        ] {
            for entry in space.prefix(prefix(user)) {
                batch.remove(space, entry.key().map_err(failed)?);
            }
        }
        batch.remove(&spaces.heads, user);
        batch.remove(&spaces.data_keys, user);
        spaces.unmark(&mut batch, user)?;
        self.data_keys.remove(user);
        self.keys.drop_held(user);
        commit_to_disk(batch).map_err(failed)?;
        spaces.known.remove(user);
        Ok(())
    }

    fn forget_contact(&self, user: &str, other: &str) -> Result<(), StoreError> {
        let spaces = &self.spaces;
        let mut batch = spaces.durable_batch();
        for (owner, contact) in [(user, other), (other, user)] {
            let Some(head) = spaces.head(owner)? else {
                continue;
            };
            let key = pair_key(owner, contact);
            let upto = spaces
                .forgotten
                .get(&key)
                .map_err(failed)?
                .map_or(0, |u| be_u64(&u))
                .max(head.last_seq);
            batch.insert(&spaces.forgotten, key, upto.to_be_bytes());
        }
        commit_to_disk(batch).map_err(failed)
    }

    fn sweep(&self, older_than_ms: u64) -> Result<SweepReport, StoreError> {
        let spaces = &self.spaces;
        let mut report = SweepReport::default();
        let mut batch = spaces.durable_batch();
        let mut written = std::collections::HashSet::new();
        // Heads are written with their last sequence whenever messages are removed: it is then
        // no longer found from the log's newest entry, and must never be given out again.
        for entry in spaces.heads.iter() {
            let user = entry.key().map_err(failed)?;
            let user = String::from_utf8_lossy(&user).into_owned();
            let Some(mut head) = spaces.head(&user)? else {
                continue;
            };
            let mut cut_to = None;
            for entry in spaces.messages.prefix(prefix(&user)) {
                let (key, value) = entry.into_inner().map_err(failed)?;
                if hlc_millis(value.get(..8).map_or(0, be_u64)) >= older_than_ms {
                    break;
                }
                batch.remove(&spaces.messages, key.clone());
                cut_to = Some(log_position(&key).1);
                report.expired += 1;
            }
            if let Some(last_cut) = cut_to {
                head.first_seq = last_cut + 1;
                batch.insert(&spaces.heads, user.as_str(), head.encode());
                written.insert(user);
            }
        }
        for entry in spaces.forgotten.iter() {
            let (key, upto) = entry.into_inner().map_err(failed)?;
            let (owner, other) = pair_of(&key);
            let upto = be_u64(&upto);
            let data_key = spaces.data_key(&self.keys, &owner)?;
            let keys = Keys {
                ring: self.keys.ring(),
                data_key: data_key.as_deref(),
            };
            if !written.contains(&owner) {
                if let Some(head) = spaces.head(&owner)? {
                    batch.insert(&spaces.heads, owner.as_str(), head.encode());
                    written.insert(owner.clone());
                }
            }
            for entry in spaces
                .messages
                .range(log_key(&owner, 0)..=log_key(&owner, upto))
            {
                let (message_key, value) = entry.into_inner().map_err(failed)?;
                let seq = log_position(&message_key).1;
                let opened = open_value(keys, &owner, seq, &value)?;
                if opened.is_some_and(|entry| between(&entry, &owner, &other)) {
                    batch.remove(&spaces.messages, message_key);
                    report.purged_contacts += 1;
                }
            }
            batch.remove(&spaces.forgotten, key);
        }
        report.expired_markers = spaces.sweep_markers(&mut batch, unix_millis())?;
        for entry in spaces.data_keys.iter() {
            let (user, wrapped) = entry.into_inner().map_err(failed)?;
            let user = String::from_utf8_lossy(&user);
            match self.keys.rewrapped(&user, &wrapped) {
                Ok(Some(rewrapped)) => {
                    batch.insert(&spaces.data_keys, user.as_ref(), rewrapped);
                    report.rewrapped_keys += 1;
                }
                Ok(None) => {}
                // The rest of the sweep goes on; reading the user's log names the key.
                Err(e) => tracing::warn!("a data key is not wrapped again: {e}"),
            }
        }
        commit_to_disk(batch).map_err(failed)?;
        Ok(report)
    }
}
