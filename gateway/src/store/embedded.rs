//! The embedded store: fjall (an LSM tree with a write-ahead journal) in the data dir.
//!
//! fjall was picked over redb by measurement on this 2-core machine (bare durable appends per
//! second, no sealing, with 1 / 16 / 256 concurrent writers: fjall 8.9k / 49k / 168k, redb 4.6k /
//! 19k / 57k): a group commit is one journal append and one fsync. With sealing and the heads kept
//! per log, the writer thread's CPU is the limit (see the README's benchmarks).
//!
//! One writer thread does every write, in the order asked: appends queued together share one
//! journal batch and one fsync; cursor moves ride along in the same batch; deletions and sweeps
//! run between batches. A responder thread delivers each committed batch live and answers its
//! senders, in order, while the writer commits the next. Readers read the keyspaces directly.
//!
//! A log's head is stored when the log is created, trimmed or swept, not on every append: its
//! last sequence and time are those of the log's newest entry when that is newer, and the writer
//! keeps the heads of recent logs in memory. Whatever removes a log's newest entries (a sweep)
//! stores the head first, so a sequence is never given out twice.
//!
//! Keyspaces (ids never contain a 0 byte, so `user 0x00` is an exact prefix):
//! - `messages` user 0x00 seq(BE) → hybrid-clock time (8 bytes, BE) + sealed record
//! - `heads` user → first seq kept, last seq given and last time when stored (8 bytes each, BE)
//!   + epoch
//! - `cursors` user 0x00 device → highest sequence the device acknowledged (BE)
//! - `forgotten` owner 0x00 other → sequence up to which their direct messages in `owner`'s log
//!   are hidden, until the sweeper has removed them

use super::cipher::KeyRing;
use super::record::{self, between, hlc_millis};
use super::{
    new_epoch, AppendTicket, Appended, LiveFanout, LogHead, LogPage, NewMessage, Settings, Store,
    StoreError, SweepReport,
};
use crate::roam::clock::HybridClock;
use async_trait::async_trait;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, OwnedWriteBatch, PersistMode};
use protocol::envelope::InboxMessage;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// The store's keyspaces; cheap to clone, shared by the writer and the readers.
#[derive(Clone)]
struct Keyspaces {
    db: Database,
    messages: Keyspace,
    heads: Keyspace,
    cursors: Keyspace,
    forgotten: Keyspace,
}

pub struct EmbeddedStore {
    spaces: Keyspaces,
    keys: Arc<KeyRing>,
    commands: mpsc::UnboundedSender<Command>,
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// The writes, each done by the writer thread in the order they were asked.
enum Command {
    Append {
        messages: Vec<NewMessage>,
        reply: Reply<Vec<Appended>>,
    },
    Ack {
        user: String,
        device: String,
        seq: u64,
        reply: Reply<u64>,
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
}

/// A log's head as kept in `heads`.
#[derive(Debug, Clone)]
struct Head {
    first_seq: u64,
    last_seq: u64,
    last_hlc: u64,
    epoch: String,
}

impl Head {
    fn fresh() -> Self {
        Self {
            first_seq: 1,
            last_seq: 0,
            last_hlc: 0,
            epoch: new_epoch(),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(24 + self.epoch.len());
        for n in [self.first_seq, self.last_seq, self.last_hlc] {
            bytes.extend_from_slice(&n.to_be_bytes());
        }
        bytes.extend_from_slice(self.epoch.as_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let damaged = || StoreError::Unreadable("a log head is damaged".into());
        if bytes.len() < 24 {
            return Err(damaged());
        }
        Ok(Self {
            first_seq: be_u64(&bytes[0..8]),
            last_seq: be_u64(&bytes[8..16]),
            last_hlc: be_u64(&bytes[16..24]),
            epoch: String::from_utf8(bytes[24..].to_vec()).map_err(|_| damaged())?,
        })
    }
}

fn be_u64(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(bytes.try_into().expect("8 bytes"))
}

fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn prefix(id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(id.len() + 9);
    key.extend_from_slice(id.as_bytes());
    key.push(0);
    key
}

fn log_key(user: &str, seq: u64) -> Vec<u8> {
    let mut key = prefix(user);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn pair_key(owner: &str, other: &str) -> Vec<u8> {
    let mut key = prefix(owner);
    key.extend_from_slice(other.as_bytes());
    key
}

/// The part of a pair key after its owner's prefix.
fn pair_second(key: &[u8], owner: &str) -> String {
    String::from_utf8_lossy(&key[owner.len() + 1..]).into_owned()
}

/// The owner and seq of a `messages` key.
fn log_position(key: &[u8]) -> (String, u64) {
    let (user, seq) = key.split_at(key.len() - 9);
    (
        String::from_utf8_lossy(user).into_owned(),
        be_u64(&seq[1..]),
    )
}

fn open_value(
    keys: &KeyRing,
    user: &str,
    seq: u64,
    value: &[u8],
) -> Result<InboxMessage, StoreError> {
    let (hlc, record) = value.split_at_checked(8).ok_or_else(|| {
        StoreError::Unreadable(format!("record {user}/{seq} is shorter than its header"))
    })?;
    record::open(keys, user, seq, be_u64(hlc), record)
}

/// Opens (creating when missing) a fjall database, the message store's or the notification
/// ledger's, with one flush/compaction worker.
///
/// One, not two: with more than one, fjall 3.1's first worker hands every compaction request it
/// receives back to the queue for the others, and while the others are busy it takes that same
/// request again at once, a busy loop for as long as a compaction runs (16% of a core while
/// routing notifications). One worker flushes after a compaction rather than beside it, and
/// measured better: durable pub/sub +10% msg/s at the same p99, routing -6% CPU per decision.
pub fn open_database(path: &Path) -> fjall::Result<Database> {
    Database::builder(path).worker_threads(1).open()
}

impl Keyspaces {
    fn open(path: &Path, memtable_size: u64) -> fjall::Result<Self> {
        let db = open_database(path)?;
        // Appends wait while fjall switches to a fresh memtable, for a time that grows with the
        // memtable (see `store.memtable_size`): its size bounds the latency tail.
        let options = || KeyspaceCreateOptions::default().max_memtable_size(memtable_size);
        let space = |name: &str| db.keyspace(name, options);
        Ok(Self {
            messages: space("messages")?,
            heads: space("heads")?,
            cursors: space("cursors")?,
            forgotten: space("forgotten")?,
            db,
        })
    }

    /// The log's head: epoch and first sequence as last written (at creation, trims and
    /// sweeps), last sequence and time from the log's newest entry — the writer does not
    /// rewrite the head on every append.
    fn head(&self, user: &str) -> Result<Option<Head>, StoreError> {
        let Some(stored) = self.heads.get(user).map_err(failed)? else {
            return Ok(None);
        };
        let mut head = Head::decode(&stored)?;
        if let Some(newest) = self.messages.prefix(prefix(user)).next_back() {
            let (key, value) = newest.into_inner().map_err(failed)?;
            let seq = log_position(&key).1;
            if seq > head.last_seq {
                head.last_seq = seq;
                head.last_hlc = head.last_hlc.max(value.get(..8).map_or(0, be_u64));
            }
        }
        Ok(Some(head))
    }

    fn durable_batch(&self) -> OwnedWriteBatch {
        self.db.batch().durability(Some(PersistMode::SyncAll))
    }
}

impl EmbeddedStore {
    /// Opens (creating when missing) the store in directory `path` and starts its writer thread.
    pub fn open(
        path: &Path,
        keys: Arc<KeyRing>,
        clock: Arc<HybridClock>,
        fanout: Arc<dyn LiveFanout>,
        settings: Settings,
    ) -> anyhow::Result<Self> {
        let spaces = Keyspaces::open(path, settings.memtable_size)
            .map_err(|e| anyhow::anyhow!("cannot open the store {}: {e}", path.display()))?;
        let (commands, queue) = mpsc::unbounded_channel();
        let (done, finished) = std::sync::mpsc::channel();
        let writer = Writer {
            spaces: spaces.clone(),
            keys: keys.clone(),
            clock,
            settings,
            heads: HashMap::new(),
            done,
        };
        std::thread::Builder::new()
            .name("store-responder".into())
            .spawn(move || respond(finished, fanout))?;
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(queue))?;
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
            .map_err(|_| StoreError::Unavailable("the store writer stopped".into()))?;
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("the store writer stopped".into())))
    }

    async fn read_with<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Keyspaces, &KeyRing) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let spaces = self.spaces.clone();
        let keys = self.keys.clone();
        tokio::task::spawn_blocking(move || work(&spaces, &keys))
            .await
            .map_err(failed)?
    }
}

/// The one thread that writes. It takes every command queued (up to `max_batch` appends), puts
/// the appends and cursor moves in one journal batch made durable by one fsync, hands the
/// appended messages to live delivery in log order, and then answers.
struct Writer {
    spaces: Keyspaces,
    keys: Arc<KeyRing>,
    clock: Arc<HybridClock>,
    settings: Settings,
    /// Heads of recently written logs, as committed: no lookup in the store per append.
    heads: HashMap<String, Head>,
    /// Committed batches go to the responder thread, which delivers them live and answers.
    done: std::sync::mpsc::Sender<Done>,
}

/// Most heads the writer keeps in memory; past that the cache starts over.
const HEAD_CACHE: usize = 100_000;

/// A group the writer is finished with, for the responder.
enum Done {
    Committed {
        group: Group,
        appended: Vec<Appended>,
        cursors: Vec<u64>,
    },
    Failed {
        group: Group,
        error: StoreError,
    },
}

/// Delivers committed messages live, in log order, and answers their senders: on its own thread,
/// so the writer goes on to the next batch meanwhile.
fn respond(done: std::sync::mpsc::Receiver<Done>, fanout: Arc<dyn LiveFanout>) {
    for finished in done {
        match finished {
            Done::Committed {
                group,
                mut appended,
                cursors,
            } => {
                fanout.committed(&appended);
                for (messages, reply) in group.appends.into_iter().rev() {
                    let mine = appended.split_off(appended.len() - messages.len());
                    let _ = reply.send(Ok(mine));
                }
                for ((_, _, _, reply), cursor) in group.acks.into_iter().zip(cursors) {
                    let _ = reply.send(Ok(cursor));
                }
            }
            Done::Failed { group, error } => {
                for (_, reply) in group.appends {
                    let _ = reply.send(Err(error.clone()));
                }
                for (_, _, _, reply) in group.acks {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// Appends and cursor moves gathered into one batch.
#[derive(Default)]
struct Group {
    appends: Vec<(Vec<NewMessage>, Reply<Vec<Appended>>)>,
    acks: Vec<(String, String, u64, Reply<u64>)>,
    messages: usize,
}

impl Writer {
    fn run(mut self, mut queue: mpsc::UnboundedReceiver<Command>) {
        let mut group = Group::default();
        while let Some(first) = queue.blocking_recv() {
            let mut next = Some(first);
            while let Some(command) = next.take() {
                match command {
                    Command::Append { messages, reply } => {
                        group.messages += messages.len();
                        group.appends.push((messages, reply));
                    }
                    Command::Ack {
                        user,
                        device,
                        seq,
                        reply,
                    } => group.acks.push((user, device, seq, reply)),
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

    fn commit(&mut self, group: Group) {
        if group.appends.is_empty() && group.acks.is_empty() {
            return;
        }
        let mut batch = self.spaces.durable_batch();
        let result = self.fill(&mut batch, &group).and_then(|outcome| {
            let committing = std::time::Instant::now();
            batch.commit().map_err(failed)?;
            self.settings.commit_took(committing);
            Ok(outcome)
        });
        let finished = match result {
            Ok((appended, cursors, heads)) => {
                if self.heads.len() + heads.len() > HEAD_CACHE {
                    self.heads.clear();
                }
                self.heads.extend(heads);
                Done::Committed {
                    group,
                    appended,
                    cursors,
                }
            }
            Err(error) => {
                tracing::error!("store commit failed: {error}");
                // What the cache holds may not be what is stored now.
                self.heads.clear();
                Done::Failed { group, error }
            }
        };
        let _ = self.done.send(finished);
    }

    /// Writes the group into `batch`: sequences and times for the appends, retention by count,
    /// and the cursors. Returns the appended messages and the cursors, in request order, and the
    /// heads of the logs written. A head is stored only when a log is created or trimmed.
    #[allow(clippy::type_complexity)]
    fn fill(
        &self,
        batch: &mut OwnedWriteBatch,
        group: &Group,
    ) -> Result<(Vec<Appended>, Vec<u64>, Vec<(String, Head)>), StoreError> {
        let spaces = &self.spaces;
        // Each log's head, and whether it must be stored.
        let mut heads: HashMap<&str, (Head, bool)> = HashMap::new();
        let mut appended = Vec::with_capacity(group.messages);
        let mut value = Vec::new();
        for message in group.appends.iter().flat_map(|(messages, _)| messages) {
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
            value.extend_from_slice(&message.record);
            batch.insert(
                &spaces.messages,
                log_key(&message.log, head.last_seq),
                value.as_slice(),
            );
            appended.push(Appended {
                log: message.log.clone(),
                seq: head.last_seq,
                hlc: head.last_hlc,
                payload: record::live_payload(&message.plaintext, head.last_seq, head.last_hlc),
                exclude_session: message.exclude_session,
                live_topic: message.live_topic,
            });
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
        Ok((appended, answers, heads))
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
            Command::Append { .. } | Command::Ack { .. } => {
                unreachable!("appends and acks are grouped")
            }
        }
    }

    fn delete_user(&self, user: &str) -> Result<(), StoreError> {
        let spaces = &self.spaces;
        let mut batch = spaces.durable_batch();
        for space in [&spaces.messages, &spaces.cursors, &spaces.forgotten] {
            for entry in space.prefix(prefix(user)) {
                batch.remove(space, entry.key().map_err(failed)?);
            }
        }
        batch.remove(&spaces.heads, user);
        batch.commit().map_err(failed)
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
        batch.commit().map_err(failed)
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
            let separator = key.iter().position(|&b| b == 0).unwrap_or(key.len());
            let owner = String::from_utf8_lossy(&key[..separator]).into_owned();
            let other = pair_second(&key, &owner);
            let upto = be_u64(&upto);
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
                if between(
                    &open_value(&self.keys, &owner, seq, &value)?,
                    &owner,
                    &other,
                ) {
                    batch.remove(&spaces.messages, message_key);
                    report.purged_contacts += 1;
                }
            }
            batch.remove(&spaces.forgotten, key);
        }
        batch.commit().map_err(failed)?;
        Ok(report)
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    fn append(&self, messages: Vec<NewMessage>) -> AppendTicket {
        let (reply, ticket) = AppendTicket::channel();
        if let Err(refused) = self.commands.send(Command::Append { messages, reply }) {
            if let Command::Append { reply, .. } = refused.0 {
                let _ = reply.send(Err(StoreError::Unavailable(
                    "the store writer stopped".into(),
                )));
            }
        }
        ticket
    }

    async fn head(&self, user: &str) -> Result<LogHead, StoreError> {
        let user = user.to_string();
        self.read_with(move |spaces, _| {
            Ok(match spaces.head(&user)? {
                Some(head) => LogHead {
                    epoch: head.epoch,
                    first_seq: head.first_seq,
                    last_seq: head.last_seq,
                },
                None => LogHead {
                    epoch: String::new(),
                    first_seq: 1,
                    last_seq: 0,
                },
            })
        })
        .await
    }

    async fn read(&self, user: &str, after: u64, limit: usize) -> Result<LogPage, StoreError> {
        let user = user.to_string();
        self.read_with(move |spaces, keys| {
            let mut forgotten = Vec::new();
            for entry in spaces.forgotten.prefix(prefix(&user)) {
                let (key, upto) = entry.into_inner().map_err(failed)?;
                forgotten.push((pair_second(&key, &user), be_u64(&upto)));
            }
            let mut page = LogPage {
                messages: Vec::new(),
                covered_to: after,
            };
            let start = log_key(&user, after.saturating_add(1));
            for entry in spaces
                .messages
                .range(start..=log_key(&user, u64::MAX))
                .take(limit)
            {
                let (key, value) = entry.into_inner().map_err(failed)?;
                let seq = log_position(&key).1;
                page.covered_to = seq;
                let message = open_value(keys, &user, seq, &value)?;
                let hidden = forgotten
                    .iter()
                    .any(|(other, upto)| seq <= *upto && between(&message, &user, other));
                if !hidden {
                    page.messages.push(message);
                }
            }
            Ok(page)
        })
        .await
    }

    async fn cursor(&self, user: &str, device: &str) -> Result<Option<u64>, StoreError> {
        let key = pair_key(user, device);
        self.read_with(move |spaces, _| {
            Ok(spaces.cursors.get(key).map_err(failed)?.map(|c| be_u64(&c)))
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
        let user = user.to_string();
        self.write(|reply| Command::DeleteUser { user, reply })
            .await
    }

    async fn forget_contact(&self, user: &str, other: &str) -> Result<(), StoreError> {
        let (user, other) = (user.to_string(), other.to_string());
        self.write(|reply| Command::ForgetContact { user, other, reply })
            .await
    }

    async fn sweep(&self, older_than_ms: u64) -> Result<SweepReport, StoreError> {
        self.write(|reply| Command::Sweep {
            older_than_ms,
            reply,
        })
        .await
    }

    async fn footprint(&self, user: &str) -> Result<Vec<String>, StoreError> {
        let user = user.to_string();
        self.read_with(move |spaces, _| {
            let mut found = Vec::new();
            for entry in spaces.messages.prefix(prefix(&user)) {
                let key = entry.key().map_err(failed)?;
                found.push(format!("messages/{user}/{}", log_position(&key).1));
            }
            if spaces.heads.get(&user).map_err(failed)?.is_some() {
                found.push(format!("heads/{user}"));
            }
            for (name, space) in [
                ("cursors", &spaces.cursors),
                ("forgotten", &spaces.forgotten),
            ] {
                for entry in space.prefix(prefix(&user)) {
                    let key = entry.key().map_err(failed)?;
                    found.push(format!("{name}/{user}/{}", pair_second(&key, &user)));
                }
            }
            Ok(found)
        })
        .await
    }
}
