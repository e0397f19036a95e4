//! What only the Redis store has, being shared and remote: nodes that share one log, and
//! outages of Redis. The contract common to every store is the conformance suite
//! (`tests/store.rs`).

use e2e::redis_server::RedisServer;
use gateway::infra::cipher::KeyRing;
use gateway::infra::redis::{Endpoint, REQUEST_TIMEOUT};
use gateway::infra::time::unix_millis;
use gateway::store::clock::HybridClock;
use gateway::store::data_keys::DataKeys;
use gateway::store::record::{hlc_millis, seal, Content};
use gateway::store::redis::RedisStore;
use gateway::store::{Appended, CommitFeed, NewMessage, Settings, Store, StoreError};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct NoFeed;

impl CommitFeed for NoFeed {
    fn committed(&self, _: &[Appended], _: std::time::Instant) {}
}

/// A node's users' data keys: each node holds its own.
fn keys() -> Arc<DataKeys> {
    let ring = KeyRing::new(&["k1:000102030405060708090a0b0c0d0e0f".into()]).unwrap();
    Arc::new(DataKeys::new(Arc::new(ring), 1000))
}

fn message(keys: &DataKeys, to: &str, id: &str) -> NewMessage {
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

async fn node(url: &str, keys: Arc<DataKeys>, clock: Arc<HybridClock>) -> RedisStore {
    let settings = Settings {
        max_batch: 64,
        retention_count: 1000,
        memtable_size: 8 << 20,
        commit_seconds: None,
        budget: Default::default(),
        confirmation: Default::default(),
        max_queued_writes: 65_536,
    };
    RedisStore::open(
        &Endpoint::single(url),
        keys,
        clock,
        Arc::new(NoFeed),
        settings,
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn nodes_share_a_log_whose_times_never_go_back() {
    let server = RedisServer::start();
    let keys = keys();
    let ahead = Arc::new(HybridClock::new());
    ahead.observe((unix_millis() + 60_000) << 16);
    let behind = Arc::new(HybridClock::new());
    let a = node(&server.url(), keys.clone(), ahead).await;
    let b = node(&server.url(), keys.clone(), behind.clone()).await;
    let first = a.append(vec![message(&keys, "alice", "m1")], None);
    let first = first.wait().await.unwrap().entries.remove(0);
    let second = b.append(vec![message(&keys, "alice", "m2")], None);
    let second = second.wait().await.unwrap().entries.remove(0);
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
    assert_eq!(page.entries.len(), 2);
    let message = page.entries[1].message().unwrap();
    assert_eq!(message.ts, hlc_millis(second.hlc));
}

#[tokio::test]
async fn an_outage_fails_requests_quickly_and_ends_without_a_restart() {
    let mut server = RedisServer::start();
    let keys = keys();
    let store = node(&server.url(), keys.clone(), Arc::new(HybridClock::new())).await;
    store
        .append(vec![message(&keys, "alice", "m1")], None)
        .wait()
        .await
        .unwrap();

    // A Redis that accepts nothing: every request fails within its time limit.
    server.pause();
    let started = Instant::now();
    let append = store
        .append(vec![message(&keys, "alice", "m2")], None)
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
    server.resume();

    // A Redis that is gone and comes back empty, without the scripts it had loaded.
    server.restart_empty();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store
            .append(vec![message(&keys, "alice", "m3")], None)
            .wait()
            .await
        {
            Ok(appended) => {
                assert_eq!(appended.entries[0].seq, 1);
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
        budget: Default::default(),
        confirmation: Default::default(),
        max_queued_writes: 65_536,
    };
    let opened = RedisStore::open(
        &Endpoint::single(&url),
        keys(),
        clock,
        Arc::new(NoFeed),
        settings,
    )
    .await;
    let error = format!("{:#}", opened.err().expect("no Redis there"));
    assert!(
        error.contains(&format!("cannot reach Redis at 127.0.0.1:{port}")),
        "{error}"
    );
}

/// A node holding a user's data key after another node deleted the user seals under the
/// destroyed key: the store refuses that record, and the node seals the message again under
/// the user's new key, so nothing sent after a deletion is lost and the old key opens nothing
/// of the new log.
#[tokio::test]
async fn a_key_held_after_another_node_deleted_its_user_is_replaced_not_used() {
    let server = RedisServer::start();
    let clock = Arc::new(HybridClock::new());
    let (a_keys, b_keys) = (keys(), keys());
    let a = node(&server.url(), a_keys.clone(), clock.clone()).await;
    let b = node(&server.url(), b_keys.clone(), clock).await;
    a.append(vec![message(&a_keys, "alice", "m1")], None)
        .wait()
        .await
        .unwrap();
    let old_key = a_keys
        .held("alice")
        .expect("the writer holds the key it made");

    b.delete_user("alice").await.unwrap();
    let stale = message(&a_keys, "alice", "m2");
    assert_eq!(stale.sealed.as_ref().unwrap().key.id(), old_key.id());
    let stored = a.append(vec![stale], None).wait().await.unwrap();
    assert_eq!(stored.entries[0].seq, 1, "a new log");

    let page = b.read("alice", 0, 10).await.unwrap();
    let ids: Vec<String> = (page.entries.iter())
        .map(|e| e.message().unwrap().id)
        .collect();
    assert_eq!(ids, ["m2"]);
    let new_key = a_keys.held("alice").unwrap();
    assert_ne!(new_key.id(), old_key.id());
}
