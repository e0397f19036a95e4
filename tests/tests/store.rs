//! The storage conformance suite: the same tests against every backend, through the `Store`
//! trait. The Redis backend runs against a real `redis-server` started on a free port.
//!
//! Idempotency keys, MQTT sessions with retained messages, and revoked tokens have their own
//! files of the suite, [`idempotency`], [`sessions`] and [`revocations`].

// Beside this file rather than in `tests/`, where they would be test targets of their own.
#[path = "store/idempotency.rs"]
mod idempotency;
#[path = "store/known_devices.rs"]
mod known_devices;
#[path = "store/revocations.rs"]
mod revocations;
#[path = "store/sessions.rs"]
mod sessions;

use e2e::redis_cluster::RedisCluster;
use e2e::redis_server::RedisServer;
use gateway::infra::cipher::KeyRing;
use gateway::infra::data_key::DataKey;
use gateway::infra::redis::Endpoint;
use gateway::store::clock::HybridClock;
use gateway::store::data_keys::DataKeys;
use gateway::store::embedded::EmbeddedStore;
use gateway::store::record::{self, Content, Keys};
use gateway::store::redis::RedisStore;
use gateway::store::{
    Appended, CommitFeed, IdempotencyKey, NewMessage, Settings, SharedStore, StoreError, Stored,
};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Records what the store hands to live delivery, in order.
#[derive(Default)]
struct Recorder(Mutex<Vec<(String, u64, u64)>>);

impl CommitFeed for Recorder {
    fn committed(&self, messages: &[Appended], _: std::time::Instant) {
        let mut seen = self.0.lock().unwrap();
        seen.extend(messages.iter().map(|m| (m.log.clone(), m.seq, m.hlc)));
    }
}

const T1: &str = "t1:000102030405060708090a0b0c0d0e0f";
const T2: &str = "t2:f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

/// Users' data keys, wrapped under the configured keys `ring` (the first seals).
fn data_keys(ring: &[&str]) -> Arc<DataKeys> {
    let ring: Vec<String> = ring.iter().map(|key| key.to_string()).collect();
    Arc::new(DataKeys::new(Arc::new(KeyRing::new(&ring).unwrap()), 1000))
}

fn keys() -> Arc<DataKeys> {
    data_keys(&[T1])
}

/// A store under test, with what it delivered live and what keeps it alive.
struct Subject {
    store: SharedStore,
    live: Arc<Recorder>,
    keys: Arc<DataKeys>,
    _keep: Box<dyn std::any::Any + Send + Sync>,
}

impl Subject {
    /// Appends a message from `from` to `to` (into `to`'s log only).
    fn send(&self, from: &str, to: &str, text: &str) -> gateway::store::AppendTicket {
        self.store
            .append(vec![message(&self.keys, from, to, text)], None)
    }

    /// Appends a message from `from` to `to` as a device sends it, into both users' logs, with
    /// idempotency key `key` (scoped to the sender and the recipient, as the gateway scopes a
    /// device's `client_msg_id`), remembered for `window`.
    fn keyed(
        &self,
        from: &str,
        to: &str,
        text: &str,
        key: &str,
        window: Duration,
    ) -> gateway::store::AppendTicket {
        let id = uuid_like(from, to, text);
        let body = json!({ "text": text });
        let content = Content {
            id: &id,
            from: Some(from),
            from_device: Some("phone"),
            to,
            body: &body,
        };
        let messages = [to, from].map(|log| record::seal(&self.keys, log, &content, None));
        let key = IdempotencyKey {
            scope: format!("{from}>{to}"),
            key: key.to_string(),
            window,
        };
        self.store.append(messages.into(), Some(key))
    }

    /// [`keyed`](Self::keyed) with a day's window, once durable.
    async fn send_keyed(&self, from: &str, to: &str, text: &str, key: &str) -> Stored {
        let day = Duration::from_secs(24 * 3600);
        self.keyed(from, to, text, key, day).wait().await.unwrap()
    }

    /// How many entries were handed to live delivery.
    fn delivered(&self) -> usize {
        self.live.0.lock().unwrap().len()
    }

    async fn sent(&self, from: &str, to: &str, text: &str) -> u64 {
        self.send(from, to, text).wait().await.unwrap().entries[0].seq
    }

    /// The device's cursor, read with the log's head (which must be the head read alone).
    async fn cursor(&self, user: &str, device: &str) -> Option<u64> {
        let position = self.store.position(user, device).await.unwrap();
        assert_eq!(position.head, self.store.head(user).await.unwrap());
        position.cursor
    }

    async fn texts(&self, user: &str) -> Vec<String> {
        let page = self.store.read(user, 0, 10_000).await.unwrap();
        page.entries
            .iter()
            .map(|e| {
                e.message().unwrap().body["text"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }
}

/// A message from `from` into `to`'s log, sealed (when `to`'s data key is held) as the front
/// seals it.
fn message(keys: &DataKeys, from: &str, to: &str, text: &str) -> NewMessage {
    let id = uuid_like(from, to, text);
    let body = json!({ "text": text });
    let content = Content {
        id: &id,
        from: Some(from),
        from_device: None,
        to,
        body: &body,
    };
    record::seal(keys, to, &content, None)
}

fn uuid_like(from: &str, to: &str, text: &str) -> String {
    format!("{from}-{to}-{text}")
}

async fn embedded_store(retention_count: u64) -> Subject {
    embedded_store_queueing(retention_count, 65_536).await
}

/// An embedded store whose writer takes at most `max_queued_writes` waiting writes.
async fn embedded_store_queueing(retention_count: u64, max_queued_writes: usize) -> Subject {
    let dir = tempfile::tempdir().unwrap();
    let live = Arc::new(Recorder::default());
    let keys = keys();
    let settings = settings(retention_count, max_queued_writes);
    let store = open_embedded(dir.path(), keys.clone(), live.clone(), settings);
    Subject {
        store: Arc::new(store),
        live,
        keys,
        _keep: Box::new(dir),
    }
}

fn open_embedded(
    dir: &std::path::Path,
    keys: Arc<DataKeys>,
    live: Arc<Recorder>,
    settings: Settings,
) -> EmbeddedStore {
    EmbeddedStore::open(dir, keys, Arc::new(HybridClock::new()), live, settings).unwrap()
}

async fn open_redis(
    endpoint: &Endpoint,
    keys: Arc<DataKeys>,
    live: Arc<Recorder>,
    settings: Settings,
) -> RedisStore {
    RedisStore::open(endpoint, keys, Arc::new(HybridClock::new()), live, settings)
        .await
        .unwrap()
}

fn settings(retention_count: u64, max_queued_writes: usize) -> Settings {
    Settings {
        max_batch: 1024,
        retention_count,
        memtable_size: 8 << 20,
        commit_seconds: None,
        budget: Default::default(),
        confirmation: Default::default(),
        max_queued_writes,
    }
}

/// Runs every conformance test against one backend, given `open(retention_count)`: each test,
/// by the module that has it, with the retention its store is opened with.
macro_rules! conformance_suite {
    ($backend:ident, $how:ident $open:expr) => {
        mod $backend {
            use super::*;

            $how! { $backend, $open;
                super: appends_take_sequences_in_call_order(1000),
                super: concurrent_writers_get_unique_gap_free_sequences(100_000),
                super: reads_page_through_a_log(1000),
                super: retention_keeps_the_newest_messages(10),
                super: cursors_only_move_forward_within_the_log(1000),
                super: deleting_a_user_leaves_nothing_and_a_new_epoch(1000),
                super: deleting_a_user_destroys_the_key_its_entries_were_sealed_under(1000),
                super: a_forgotten_contact_is_hidden_at_once_and_purged_by_the_sweeper(1000),
                super: purging_the_newest_messages_never_reuses_their_sequences(1000),
                super: the_sweeper_cuts_by_age(1000),
                idempotency: a_repeated_key_stores_nothing_and_answers_with_the_original(1000),
                idempotency: repeats_queued_together_are_stored_once(1000),
                idempotency: after_its_window_a_key_stores_anew_and_is_swept(1000),
                idempotency: keys_are_scoped_per_sender_and_recipient(1000),
                idempotency: a_repeat_of_a_trimmed_message_still_gets_its_seq(3),
                idempotency: deleting_a_user_removes_the_keys_in_its_log(1000),
                sessions: a_session_is_kept_until_it_expires_or_is_dropped(1000),
                sessions: a_queue_keeps_the_newest_within_its_count_and_bytes(1000),
                sessions: deleting_a_user_drops_its_devices_sessions(1000),
                sessions: retained_messages_are_set_replaced_and_cleared(1000),
                revocations: a_revocation_covers_its_scope_and_only_moves_forward(1000),
                revocations: a_deleted_users_revocation_outlives_the_deletion(1000),
                known_devices: a_users_first_device_is_decided_once_and_others_are_new_until_remembered(1000),
                known_devices: deleting_a_user_forgets_its_devices(1000),
            }
        }
    };
}

/// One `#[tokio::test]` per `module: test(retention_count)`, on a store from `open`.
macro_rules! each {
    ($backend:ident, $open:expr; $($module:ident: $test:ident($retention:expr)),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $test() {
                $module::$test($open($retention).await).await
            }
        )*
    };
}

/// One `#[tokio::test]` that runs every `module: test(retention_count)` in turn on one Redis
/// Cluster, emptied before each, on a store from `open(cluster, retention_count)`: a cluster
/// takes seconds to form, a server a few milliseconds.
macro_rules! in_turn {
    ($backend:ident, $open:expr; $($module:ident: $test:ident($retention:expr)),* $(,)?) => {
        #[tokio::test]
        async fn $backend() {
            let cluster = RedisCluster::start();
            $(
                cluster.on_primaries(&["FLUSHALL"]);
                eprintln!("{}", stringify!($test));
                $module::$test($open(&cluster, $retention).await).await;
            )*
        }
    };
}

/// A Redis store on its own `redis-server`, which lives as long as the store.
async fn redis_store(retention_count: u64) -> Subject {
    redis_store_queueing(retention_count, 65_536).await
}

/// A Redis store whose writer takes at most `max_queued_writes` waiting writes.
async fn redis_store_queueing(retention_count: u64, max_queued_writes: usize) -> Subject {
    let server = RedisServer::start();
    let live = Arc::new(Recorder::default());
    let keys = keys();
    let settings = settings(retention_count, max_queued_writes);
    let endpoint = Endpoint::single(&server.url());
    let store = open_redis(&endpoint, keys.clone(), live.clone(), settings).await;
    Subject {
        store: Arc::new(store),
        live,
        keys,
        _keep: Box::new(server),
    }
}

/// A Redis store on `cluster`.
async fn cluster_store(cluster: &RedisCluster, retention_count: u64) -> Subject {
    let live = Arc::new(Recorder::default());
    let keys = keys();
    let settings = settings(retention_count, 65_536);
    let endpoint = Endpoint::cluster(cluster.urls());
    let store = open_redis(&endpoint, keys.clone(), live.clone(), settings).await;
    Subject {
        store: Arc::new(store),
        live,
        keys,
        _keep: Box::new(()),
    }
}

conformance_suite!(embedded, each embedded_store);
conformance_suite!(redis, each redis_store);
conformance_suite!(redis_cluster, in_turn cluster_store);

/// Redis forgets a revocation by its key's expiry; the embedded store by the sweeper, once no
/// token it refuses can still be alive.
#[tokio::test]
async fn embedded_the_sweeper_forgets_revocations_older_than_any_token() {
    use gateway::infra::time::unix_millis;
    use gateway::store::revocations::{Revoked, LONGEST_TOKEN_LIFE};
    let s = embedded_store(1000).await;
    let now = unix_millis();
    let too_old = now - LONGEST_TOKEN_LIFE.as_millis() as u64 - 1;
    s.store
        .revoke(Revoked::User("alice"), too_old)
        .await
        .unwrap();
    s.store.revoke(Revoked::User("bob"), now).await.unwrap();
    let report = s.store.sweep(0).await.unwrap();
    assert_eq!(report.expired_revocations, 1);
    assert_eq!(s.store.revoked_until("alice", "phone").await.unwrap(), 0);
    assert_eq!(s.store.revoked_until("bob", "phone").await.unwrap(), now);
}

#[tokio::test]
async fn embedded_a_full_write_queue_refuses_appends_as_unavailable() {
    a_full_write_queue_refuses_appends_as_unavailable(embedded_store_queueing(1000, 1).await).await
}

#[tokio::test]
async fn redis_a_full_write_queue_refuses_appends_as_unavailable() {
    a_full_write_queue_refuses_appends_as_unavailable(redis_store_queueing(1000, 1).await).await
}

/// Appends queued faster than the writer commits them, into a queue of one: those past the
/// bound are refused as unavailable (the sender sends them again), and what was taken is stored
/// in order.
async fn a_full_write_queue_refuses_appends_as_unavailable(s: Subject) {
    let tickets: Vec<_> = (0..300)
        .map(|i| s.send("alice", "bob", &format!("m{i}")))
        .collect();
    let (mut stored, mut refused) = (Vec::new(), 0);
    for (i, ticket) in tickets.into_iter().enumerate() {
        match ticket.wait().await {
            Ok(_) => stored.push(format!("m{i}")),
            Err(StoreError::Unavailable(why)) => {
                assert!(why.contains("store.max_queued_writes"), "{why}");
                refused += 1;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    assert!(refused > 0, "300 appends at once overflow a queue of one");
    assert!(!stored.is_empty());
    assert_eq!(s.texts("bob").await, stored);
    assert_eq!(
        s.sent("alice", "bob", "later").await,
        stored.len() as u64 + 1
    );
}

async fn appends_take_sequences_in_call_order(s: Subject) {
    // Queued without waiting, as a connection pipelines its messages.
    let tickets: Vec<_> = (0..300)
        .map(|i| s.send("alice", ["bob", "carol", "dave"][i % 3], &format!("m{i}")))
        .collect();
    let mut per_log: HashMap<String, Vec<(u64, String)>> = HashMap::new();
    for (i, ticket) in tickets.into_iter().enumerate() {
        let appended = ticket.wait().await.unwrap().entries;
        assert_eq!(appended.len(), 1);
        let to = ["bob", "carol", "dave"][i % 3];
        assert_eq!(appended[0].log, to);
        per_log
            .entry(to.to_string())
            .or_default()
            .push((appended[0].seq, format!("m{i}")));
    }
    for (log, entries) in &per_log {
        let seqs: Vec<u64> = entries.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, (1..=100).collect::<Vec<_>>(), "{log}");
        let texts: Vec<String> = entries.iter().map(|(_, t)| t.clone()).collect();
        assert_eq!(s.texts(log).await, texts, "{log}");
    }
    // Live delivery saw each log in order, with times that never go backwards.
    let live = s.live.0.lock().unwrap().clone();
    for log in per_log.keys() {
        let mine: Vec<_> = live.iter().filter(|(l, _, _)| l == log).collect();
        assert!(mine
            .windows(2)
            .all(|w| w[1].1 == w[0].1 + 1 && w[1].2 > w[0].2));
    }
}

async fn concurrent_writers_get_unique_gap_free_sequences(s: Subject) {
    let s = Arc::new(s);
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..50 {
                    seqs.push(s.sent(&format!("w{w}"), "bob", &format!("{w}-{i}")).await);
                }
                seqs
            })
        })
        .collect();
    let mut all = Vec::new();
    for writer in writers {
        let seqs = writer.await.unwrap();
        assert!(seqs.windows(2).all(|w| w[1] > w[0]), "a writer's own order");
        all.extend(seqs);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=800).collect::<Vec<_>>());
    let head = s.store.head("bob").await.unwrap();
    assert_eq!((head.first_seq, head.last_seq), (1, 800));
}

async fn reads_page_through_a_log(s: Subject) {
    let empty = s.store.head("nobody").await.unwrap();
    assert_eq!(
        (empty.epoch.as_str(), empty.first_seq, empty.last_seq),
        ("", 1, 0)
    );
    for i in 1..=25 {
        s.sent("alice", "bob", &format!("t{i}")).await;
    }
    let head = s.store.head("bob").await.unwrap();
    assert!(!head.epoch.is_empty());
    assert_eq!((head.first_seq, head.last_seq), (1, 25));
    let page = s.store.read("bob", 10, 10).await.unwrap();
    let seqs: Vec<u64> = page.entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (11..=20).collect::<Vec<_>>());
    assert_eq!(page.covered_to, 20);
    let message = page.entries[0].message().unwrap();
    assert_eq!(message.body, json!({"text": "t11"}));
    assert_eq!(message.from.as_deref(), Some("alice"));
    assert!(message.ts > 1_600_000_000_000, "milliseconds since 1970");
    let tail = s.store.read("bob", 20, 10).await.unwrap();
    assert_eq!((tail.entries.len(), tail.covered_to), (5, 25));
    let past_end = s.store.read("bob", 25, 10).await.unwrap();
    assert_eq!((past_end.entries.len(), past_end.covered_to), (0, 25));
    // A page knows when it reached the log's end, also when it is full.
    assert!(!page.reached_end);
    assert!(tail.reached_end && past_end.reached_end);
    let last_full_page = s.store.read("bob", 15, 10).await.unwrap();
    assert_eq!(last_full_page.entries.len(), 10);
    assert!(last_full_page.reached_end);
}

async fn retention_keeps_the_newest_messages(s: Subject) {
    for i in 1..=25 {
        s.sent("alice", "bob", &format!("t{i}")).await;
    }
    let head = s.store.head("bob").await.unwrap();
    assert_eq!((head.first_seq, head.last_seq), (16, 25));
    let texts = s.texts("bob").await;
    assert_eq!(texts.first().map(String::as_str), Some("t16"));
    assert_eq!(texts.len(), 10);
}

async fn cursors_only_move_forward_within_the_log(s: Subject) {
    assert_eq!(s.cursor("bob", "phone").await, None);
    for i in 1..=5 {
        s.sent("alice", "bob", &format!("t{i}")).await;
    }
    assert_eq!(s.store.ack("bob", "phone", 3).await.unwrap(), 3);
    assert_eq!(
        s.store.ack("bob", "phone", 2).await.unwrap(),
        3,
        "never back"
    );
    assert_eq!(
        s.store.ack("bob", "phone", 99).await.unwrap(),
        5,
        "never past the end"
    );
    assert_eq!(s.cursor("bob", "phone").await, Some(5));
    assert_eq!(s.cursor("bob", "laptop").await, None);
}

async fn deleting_a_user_leaves_nothing_and_a_new_epoch(s: Subject) {
    for i in 1..=5 {
        s.sent("alice", "bob", &format!("t{i}")).await;
    }
    s.store.ack("bob", "phone", 4).await.unwrap();
    s.sent("bob", "alice", "reply").await;
    let old_epoch = s.store.head("bob").await.unwrap().epoch;
    assert!(!s.store.footprint("bob").await.unwrap().is_empty());

    s.store.delete_user("bob").await.unwrap();
    assert_eq!(
        s.store.footprint("bob").await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(s.store.head("bob").await.unwrap().last_seq, 0);
    assert!(s.texts("bob").await.is_empty());
    assert_eq!(s.cursor("bob", "phone").await, None);
    assert_eq!(
        s.texts("alice").await,
        ["reply"],
        "other users keep their logs"
    );

    assert_eq!(s.sent("alice", "bob", "again").await, 1, "a new log");
    assert_ne!(s.store.head("bob").await.unwrap().epoch, old_epoch);
}

/// Crypto-shredding: a deleted user's entries were sealed under a key of the user's own, and
/// the deletion destroys it, so a copy of a record that survives anywhere (a table not yet
/// compacted, a journal, an append-only file, a backup) opens no more. A message sealed under
/// the destroyed key after the deletion (by a node that still held it) is sealed again under
/// the user's new key, not lost.
async fn deleting_a_user_destroys_the_key_its_entries_were_sealed_under(s: Subject) {
    s.sent("alice", "bob", "first").await;
    let key = s
        .keys
        .held("bob")
        .expect("the writer holds the key it made");
    let copy = message(&s.keys, "alice", "bob", "second");
    let record = copy.record().to_vec();
    s.store.append(vec![copy], None).wait().await.unwrap();
    assert_eq!(s.texts("bob").await, ["first", "second"]);
    fn with<'a>(keys: &'a DataKeys, data_key: Option<&'a DataKey>) -> Keys<'a> {
        Keys {
            ring: keys.ring(),
            data_key,
        }
    }
    assert!(
        record::open(with(&s.keys, Some(&key)), "bob", 2, 0, &record)
            .unwrap()
            .is_some()
    );
    assert!(s
        .store
        .footprint("bob")
        .await
        .unwrap()
        .contains(&"data_keys/bob".to_string()));

    let stale = message(&s.keys, "alice", "bob", "after");
    s.store.delete_user("bob").await.unwrap();
    assert_eq!(s.keys.held("bob").map(|k| k.id().to_string()), None);
    // With every configured key, and no key of bob's: nothing of the copy opens.
    assert!(record::open(with(&s.keys, None), "bob", 2, 0, &record)
        .unwrap()
        .is_none());

    assert_eq!(stale.sealed.as_ref().unwrap().key.id(), key.id());
    s.store.append(vec![stale], None).wait().await.unwrap();
    assert_eq!(s.texts("bob").await, ["after"]);
    let new_key = s.keys.held("bob").unwrap();
    assert_ne!(new_key.id(), key.id());
    assert!(
        record::open(with(&s.keys, Some(&new_key)), "bob", 2, 0, &record)
            .unwrap()
            .is_none()
    );
}

/// Rotating the configured keys: the sweeper wraps every data key again under the new key and
/// rewrites no entry, after which the old configured key can go.
async fn rotating_the_configured_keys_rewraps_data_keys<F, Fut>(open: F)
where
    F: Fn(Arc<DataKeys>) -> Fut,
    Fut: std::future::Future<Output = SharedStore>,
{
    let keys = data_keys(&[T1]);
    let store = open(keys.clone()).await;
    for to in ["bob", "carol"] {
        let message = message(&keys, "alice", to, "before the rotation");
        store.append(vec![message], None).wait().await.unwrap();
    }
    store.close().await;
    drop(store);

    let store = open(data_keys(&[T2, T1])).await;
    assert_eq!(store.sweep(0).await.unwrap().rewrapped_keys, 2);
    assert_eq!(store.sweep(0).await.unwrap().rewrapped_keys, 0);
    store.close().await;
    drop(store);

    let store = open(data_keys(&[T2])).await;
    for user in ["bob", "carol"] {
        let page = store.read(user, 0, 10).await.unwrap();
        let message = page.entries[0].message().unwrap();
        assert_eq!(message.body["text"], "before the rotation");
    }
}

#[tokio::test]
async fn embedded_rotating_the_configured_keys_rewraps_data_keys() {
    let dir = tempfile::tempdir().unwrap();
    let open = |keys| {
        let store = open_embedded(dir.path(), keys, Arc::default(), settings(1000, 1024));
        std::future::ready(Arc::new(store) as SharedStore)
    };
    rotating_the_configured_keys_rewraps_data_keys(open).await;
}

/// The embedded store decides a device's standing in memory and writes it with the writer's next
/// batch: what it decided is there after it is closed and opened again.
#[tokio::test]
async fn embedded_known_devices_survive_reopening() {
    use gateway::store::known_devices::{KnownDeviceStore, Standing};
    use gateway::store::Store;
    let dir = tempfile::tempdir().unwrap();
    let open = || open_embedded(dir.path(), keys(), Arc::default(), settings(1000, 1024));
    let store = open();
    assert_eq!(
        store.standing("ann", "phone").await.unwrap(),
        Standing::First
    );
    store.remember_device("ann", "laptop").await.unwrap();
    store.close().await;
    drop(store);
    let store = open();
    assert_eq!(
        store.standing("ann", "laptop").await.unwrap(),
        Standing::Known
    );
    assert_eq!(
        store.standing("ann", "phone").await.unwrap(),
        Standing::Known
    );
    assert_eq!(
        store.standing("ann", "tablet").await.unwrap(),
        Standing::New
    );
}

#[tokio::test]
async fn redis_rotating_the_configured_keys_rewraps_data_keys() {
    let server = RedisServer::start();
    let url = server.url();
    let open = |keys| {
        let url = url.clone();
        async move {
            let settings = settings(1000, 1024);
            let endpoint = Endpoint::single(&url);
            Arc::new(open_redis(&endpoint, keys, Arc::default(), settings).await) as SharedStore
        }
    };
    rotating_the_configured_keys_rewraps_data_keys(open).await;
}

async fn a_forgotten_contact_is_hidden_at_once_and_purged_by_the_sweeper(s: Subject) {
    s.sent("alice", "bob", "a→b").await;
    s.sent("carol", "bob", "c→b").await;
    s.sent("bob", "alice", "b→a").await;
    s.sent("carol", "alice", "c→a").await;
    s.store.forget_contact("alice", "bob").await.unwrap();
    assert_eq!(s.texts("bob").await, ["c→b"]);
    assert_eq!(s.texts("alice").await, ["c→a"]);
    s.sent("alice", "bob", "after").await;
    assert_eq!(
        s.texts("bob").await,
        ["c→b", "after"],
        "new messages are not hidden"
    );

    let before = s.store.footprint("bob").await.unwrap().len();
    let report = s.store.sweep(0).await.unwrap();
    assert_eq!(report.purged_contacts, 2);
    assert_eq!(report.expired, 0);
    let footprint = s.store.footprint("bob").await.unwrap();
    assert_eq!(footprint.len(), before - 2, "{footprint:?}");
    assert!(!footprint.iter().any(|entry| entry.contains("forgotten")));
    assert_eq!(s.texts("bob").await, ["c→b", "after"]);
}

async fn the_sweeper_cuts_by_age(s: Subject) {
    for i in 1..=3 {
        s.sent("alice", "bob", &format!("t{i}")).await;
    }
    let report = s.store.sweep(u64::MAX >> 17).await.unwrap();
    assert_eq!(report.expired, 3);
    let head = s.store.head("bob").await.unwrap();
    assert_eq!((head.first_seq, head.last_seq), (4, 3));
    assert!(s.texts("bob").await.is_empty());
    assert_eq!(s.sent("alice", "bob", "new").await, 4, "sequences go on");
}

async fn purging_the_newest_messages_never_reuses_their_sequences(s: Subject) {
    s.sent("carol", "bob", "keep").await;
    s.sent("alice", "bob", "one").await;
    s.sent("alice", "bob", "two").await;
    s.store.forget_contact("alice", "bob").await.unwrap();
    assert_eq!(s.store.sweep(0).await.unwrap().purged_contacts, 2);
    assert_eq!(s.store.head("bob").await.unwrap().last_seq, 3);
    assert_eq!(s.sent("carol", "bob", "next").await, 4);
    assert_eq!(s.texts("bob").await, ["keep", "next"]);
}
