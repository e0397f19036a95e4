//! The notification ledger's conformance suite: the same tests against every backend, through
//! the `Ledger` trait, and what only a ledger shared by several nodes must also guarantee. The
//! Redis backend runs against a real `redis-server` started on a free port, and against a real
//! Redis Cluster (three primaries, three replicas).
//!
//! It is long because it is one suite: every test runs against every backend on the same
//! fixtures, and what only one backend or several nodes must guarantee sits beside them.

use broker_config::Notify;
use e2e::redis_cluster::RedisCluster;
use e2e::redis_server::RedisServer;
use gateway::infra::cipher::KeyRing;
use gateway::infra::redis::{connect, scan, Endpoint, Redis};
use gateway::infra::time::unix_millis;
use gateway::notify::ledger::embedded::EmbeddedLedger;
use gateway::notify::ledger::redis::RedisLedger;
use gateway::notify::ledger::{AggregateJoin, DedupClaim, Ledger, LedgerSweep, NewRecord};
use gateway::notify::model::{Job, Preferences};
use gateway::store::StoreError;
use protocol::notification::{
    Bindings, Consent, Notification, Priority, Provider, QuietHours, QuietWindow, Record, Route,
    RouteState, Status,
};
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// The Redis ledger's `notify.record_retention` in these tests.
const RETENTION: Duration = Duration::from_secs(3600);

/// The Redis ledger's `store.redis_queue_shards` in these tests: a few, so that the queue spans
/// several slots (and, on a cluster, several primaries).
const SHARDS: u32 = 4;

fn keys() -> Arc<KeyRing> {
    Arc::new(KeyRing::new(&["t1:000102030405060708090a0b0c0d0e0f".into()]).unwrap())
}

/// A ledger under test, and what keeps it alive.
struct Subject {
    ledger: Arc<dyn Ledger>,
    /// For a Redis ledger, a connection of the test's own: some tests also look at what it
    /// stores.
    redis: Option<Redis>,
    /// What must live as long as the ledger: its server or directory.
    _keep: Box<dyn std::any::Any>,
}

/// The embedded ledger's settings in these tests: small, as a test needs.
fn embedded_settings() -> Notify {
    Notify {
        preferences_cache: 1000,
        ledger_memtable_size: 8 << 20,
        ..Notify::default()
    }
}

async fn embedded_ledger() -> Subject {
    let dir = tempfile::tempdir().unwrap();
    let ledger = EmbeddedLedger::open(dir.path(), keys(), &embedded_settings()).unwrap();
    Subject {
        ledger: Arc::new(ledger),
        redis: None,
        _keep: Box::new(dir),
    }
}

/// A Redis ledger on its own `redis-server`, which lives as long as the ledger.
async fn redis_ledger() -> Subject {
    let server = RedisServer::start();
    let mut subject = ledger_at(&Endpoint::single(&server.url())).await;
    subject._keep = Box::new(server);
    subject
}

/// A Redis ledger on the Redis at `endpoint`.
async fn ledger_at(endpoint: &Endpoint) -> Subject {
    let ledger = RedisLedger::open(endpoint, SHARDS, keys(), RETENTION)
        .await
        .unwrap();
    Subject {
        ledger: Arc::new(ledger),
        redis: Some(connect(endpoint).await.unwrap()),
        _keep: Box::new(()),
    }
}

/// Runs every conformance test against one backend, given `open()`.
macro_rules! conformance_suite {
    ($backend:ident, $how:tt $open:expr) => {
        conformance_suite!(@$how $backend, $open, [
            a_dedup_key_is_claimed_once_per_window,
            a_batch_of_claims_claims_each_content_once,
            a_released_claim_is_free_again_unless_another_notification_holds_it,
            records_created_together_are_all_stored,
            aggregate_joins_in_one_call_apply_in_order,
            a_record_round_trips_and_queues_its_jobs,
            due_jobs_come_oldest_first_and_are_leased,
            settling_records_the_route_and_requeues_or_removes_the_job,
            aggregates_join_until_their_job_is_taken,
            provider_ids_lead_back_to_their_notification,
            a_delivery_report_sets_one_route,
            a_quota_never_counts_past_its_limit,
            preferences_round_trip_and_bindings_are_sealed,
            the_queue_depth_counts_queued_and_leased_jobs,
            deleting_a_user_leaves_no_preferences_claims_jobs_or_records,
        ]);
    };
    (@each $backend:ident, $open:expr, [$($test:ident),* $(,)?]) => {
        mod $backend {
            use super::*;
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test($open().await).await
                }
            )*
        }
    };
    // One test that runs them all in turn on one Redis Cluster, emptied before each: a cluster
    // takes seconds to form, a server a few milliseconds.
    (@in_turn $backend:ident, $open:expr, [$($test:ident),* $(,)?]) => {
        #[tokio::test]
        async fn $backend() {
            let cluster = RedisCluster::start();
            $(
                cluster.on_primaries(&["FLUSHALL"]);
                eprintln!("{}", stringify!($test));
                $test($open(&cluster).await).await;
            )*
            cluster_nodes_share_one_ledger(&cluster).await;
        }
    };
}

conformance_suite!(embedded, each embedded_ledger);
conformance_suite!(redis, each redis_ledger);
conformance_suite!(redis_cluster, in_turn cluster_ledger);

/// A Redis ledger on `cluster`.
async fn cluster_ledger(cluster: &RedisCluster) -> Subject {
    ledger_at(&Endpoint::cluster(cluster.urls())).await
}

fn notification(id: &str, user: &str) -> Notification {
    Notification {
        id: id.to_string(),
        user: user.to_string(),
        kind: "friend_request".into(),
        title: "New friend request".into(),
        body: format!("{user}, someone wants to be your friend"),
        data: json!({ "from": "carol" }),
        priority: Priority::Normal,
        dedup_key: None,
        link: None,
        wechat_tag: None,
        created_at: 1_700_000_000_000,
    }
}

fn job(id: &str, user: &str, route: Route) -> Job {
    Job {
        notification: id.to_string(),
        provider: provider(route),
        user: user.to_string(),
        attempts: 0,
        count: 0,
    }
}

/// The provider of a push route.
fn provider(route: Route) -> Provider {
    match route {
        Route::Push(provider) => provider,
        Route::InApp => panic!("no job goes in-app"),
    }
}

/// A notification queued on each of `routes`.
fn record(id: &str, user: &str, routes: &[Route]) -> Record {
    Record {
        notification: notification(id, user),
        routes: routes
            .iter()
            .map(|route| (*route, RouteState::new(Status::Queued, None)))
            .collect::<BTreeMap<_, _>>(),
    }
}

/// Stores a notification with one job per route, all due at `due`.
async fn queued(s: &Subject, id: &str, user: &str, routes: &[Route], due: u64) {
    let jobs: Vec<(Job, u64)> = routes.iter().map(|r| (job(id, user, *r), due)).collect();
    create(&s.ledger, &record(id, user, routes), &jobs).await;
}

// The ledger's batch calls, one item at a time.

async fn claim<L: Ledger + ?Sized>(
    l: &Arc<L>,
    user: &str,
    key: &str,
    now: u64,
    window: u64,
) -> bool {
    let claims = [DedupClaim {
        user: user.into(),
        key: key.into(),
        by: format!("n-{now}"),
    }];
    l.claim_dedup(&claims, now, window).await.unwrap()[0]
}

async fn create<L: Ledger + ?Sized>(l: &Arc<L>, record: &Record, jobs: &[(Job, u64)]) {
    let new = NewRecord {
        record: record.clone(),
        jobs: jobs.to_vec(),
    };
    l.create(vec![new]).await.unwrap();
}

async fn aggregate<L: Ledger + ?Sized>(
    l: &Arc<L>,
    user: &str,
    kind: &str,
    notification: &str,
    route: Route,
    due_ms: u64,
) -> (Job, bool) {
    let join = AggregateJoin {
        user: user.into(),
        kind: kind.into(),
        notification: notification.into(),
        provider: provider(route),
        due_ms,
    };
    l.aggregate(&[join]).await.unwrap().remove(0)
}

async fn preferences<L: Ledger + ?Sized>(l: &Arc<L>, user: &str) -> Preferences {
    Preferences::clone(&l.preferences(&[user.into()]).await.unwrap()[0])
}

/// The keys of what `take_due` returns, in order.
async fn take(s: &Subject, now_ms: u64, limit: usize, lease_ms: u64) -> Vec<String> {
    let jobs = s.ledger.take_due(now_ms, limit, lease_ms).await.unwrap();
    jobs.iter().map(Job::key).collect()
}

/// Checks the queue depth: exactly for Redis (ZCARD), at least for the embedded ledger, whose
/// count is its keyspace's approximate length and includes replaced and removed entries until
/// they are compacted away (the trait promises a gauge, not an exact count).
async fn assert_depth(s: &Subject, expected: u64) {
    let depth = s.ledger.queue_depth().await.unwrap();
    if s.redis.is_some() {
        assert_eq!(depth, expected, "queue depth");
    } else {
        assert!(depth >= expected, "queue depth {depth} < {expected}");
    }
}

async fn a_dedup_key_is_claimed_once_per_window(s: Subject) {
    let (l, window) = (&s.ledger, 300);
    let now = unix_millis();
    assert!(claim(l, "alice", "k:1", now, window).await);
    assert!(!claim(l, "alice", "k:1", now + 1, window).await);
    assert!(
        claim(l, "bob", "k:1", now + 1, window).await,
        "claims are per user"
    );
    assert!(claim(l, "alice", "k:2", now + 1, window).await);
    // The Redis ledger times the window by Redis's clock, the embedded one by `now_ms`: real
    // time passes, and `now_ms` with it.
    tokio::time::sleep(Duration::from_millis(window + 150)).await;
    let later = unix_millis();
    assert!(
        claim(l, "alice", "k:1", later, window).await,
        "claimable again after the window"
    );
    assert!(!claim(l, "alice", "k:1", later + 1, window).await);
}

async fn a_batch_of_claims_claims_each_content_once(s: Subject) {
    let now = unix_millis();
    let claims: Vec<DedupClaim> = [
        ("alice", "k:1"),
        ("alice", "k:1"),
        ("bob", "k:1"),
        ("alice", "k:2"),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (user, key))| DedupClaim {
        user: user.into(),
        key: key.into(),
        by: format!("n{i}"),
    })
    .collect();
    let fresh = s.ledger.claim_dedup(&claims, now, 60_000).await.unwrap();
    assert_eq!(
        fresh,
        [true, false, true, true],
        "the repeat within the batch is not fresh"
    );
    let again = s
        .ledger
        .claim_dedup(&claims[..1], now + 1, 60_000)
        .await
        .unwrap();
    assert_eq!(again, [false]);
    assert!(s
        .ledger
        .claim_dedup(&[], now, 60_000)
        .await
        .unwrap()
        .is_empty());
}

async fn a_released_claim_is_free_again_unless_another_notification_holds_it(s: Subject) {
    let (l, now, window) = (&s.ledger, unix_millis(), 60_000);
    let by = |user: &str, notification: &str| DedupClaim {
        user: user.into(),
        key: "k:1".into(),
        by: notification.into(),
    };
    assert_eq!(
        l.claim_dedup(&[by("alice", "n1")], now, window)
            .await
            .unwrap(),
        [true]
    );
    l.release_dedup(&[by("alice", "n2")]).await.unwrap();
    assert_eq!(
        l.claim_dedup(&[by("alice", "n2")], now + 1, window)
            .await
            .unwrap(),
        [false],
        "another notification's release leaves the claim alone"
    );
    l.release_dedup(&[by("alice", "n1"), by("bob", "n1")])
        .await
        .unwrap();
    assert_eq!(
        l.claim_dedup(&[by("alice", "n3")], now + 2, window)
            .await
            .unwrap(),
        [true],
        "released by its claimant, the content is free for the retry"
    );
    assert_eq!(
        l.claim_dedup(&[by("alice", "n4")], now + 3, window)
            .await
            .unwrap(),
        [false]
    );
    l.release_dedup(&[]).await.unwrap();
}

async fn records_created_together_are_all_stored(s: Subject) {
    let records: Vec<NewRecord> = (1..=3)
        .map(|i| {
            let id = format!("n{i}");
            NewRecord {
                record: record(&id, "alice", &[Route::QIUQIU]),
                jobs: vec![(job(&id, "alice", Route::QIUQIU), i)],
            }
        })
        .collect();
    s.ledger.create(records.clone()).await.unwrap();
    for new in &records {
        let id = &new.record.notification.id;
        assert_eq!(
            s.ledger.record(id).await.unwrap().as_ref(),
            Some(&new.record)
        );
    }
    assert_eq!(
        take(&s, 10, 10, 1000).await,
        ["n1-qiuqiu", "n2-qiuqiu", "n3-qiuqiu"]
    );
}

async fn aggregate_joins_in_one_call_apply_in_order(s: Subject) {
    let join = |user: &str, notification: &str| AggregateJoin {
        user: user.into(),
        kind: "friend_request".into(),
        notification: notification.into(),
        provider: Provider::Qiuqiu,
        due_ms: 1000,
    };
    let joined = s
        .ledger
        .aggregate(&[join("alice", "n1"), join("alice", "n2"), join("bob", "n3")])
        .await
        .unwrap();
    let seen: Vec<(&str, u32, bool)> = joined
        .iter()
        .map(|(job, new)| (job.notification.as_str(), job.count, *new))
        .collect();
    assert_eq!(seen, [("n1", 1, true), ("n1", 2, false), ("n3", 1, true)]);
}

async fn a_record_round_trips_and_queues_its_jobs(s: Subject) {
    let mut stored = record("n1", "alice", &[Route::InApp, Route::WECHAT, Route::QIUQIU]);
    stored.routes.insert(
        Route::InApp,
        RouteState::new(Status::Delivered, Some("seq 7".into())),
    );
    let jobs = [
        (job("n1", "alice", Route::WECHAT), 1000),
        (job("n1", "alice", Route::QIUQIU), 2000),
    ];
    create(&s.ledger, &stored, &jobs).await;
    assert_eq!(s.ledger.record("n1").await.unwrap(), Some(stored));
    assert_eq!(s.ledger.record("n2").await.unwrap(), None);
    assert_depth(&s, 2).await;
    let due = s.ledger.take_due(1500, 10, 10_000).await.unwrap();
    assert_eq!(due, [jobs[0].0.clone()], "the job as it was queued");
}

async fn due_jobs_come_oldest_first_and_are_leased(s: Subject) {
    for (id, due) in [("n1", 100), ("n2", 300), ("n3", 200), ("n4", 5000)] {
        queued(&s, id, "alice", &[Route::WECHAT], due).await;
    }
    assert!(take(&s, 500, 0, 1000).await.is_empty());
    assert_eq!(
        take(&s, 500, 2, 1000).await,
        ["n1-wechat", "n3-wechat"],
        "oldest first, at most the limit"
    );
    assert_eq!(
        take(&s, 500, 10, 1000).await,
        ["n2-wechat"],
        "taken jobs are leased, later ones not due"
    );
    assert!(take(&s, 1499, 10, 1000).await.is_empty(), "still leased");
    assert_eq!(
        take(&s, 1500, 10, 1000).await,
        ["n1-wechat", "n2-wechat", "n3-wechat"],
        "back when the lease ends; equal times in key order"
    );
    assert_eq!(
        take(&s, 5000, 10, 1000).await,
        ["n1-wechat", "n2-wechat", "n3-wechat", "n4-wechat"],
        "the last one once due"
    );
}

async fn settling_records_the_route_and_requeues_or_removes_the_job(s: Subject) {
    queued(&s, "n1", "alice", &[Route::WECHAT, Route::QIUQIU], 100).await;
    let taken = s.ledger.take_due(100, 10, 1000).await.unwrap();
    assert_eq!(taken.len(), 2);

    let mut retried = job("n1", "alice", Route::WECHAT);
    retried.attempts = 1;
    let mut waiting = RouteState::new(Status::Queued, Some("retrying after timeout".into()));
    waiting.due_at = Some(5000);
    s.ledger
        .settle(&retried, waiting.clone(), Some(5000))
        .await
        .unwrap();
    let sent = RouteState::new(Status::Sent, None);
    s.ledger
        .settle(&job("n1", "alice", Route::QIUQIU), sent.clone(), None)
        .await
        .unwrap();

    let record = s.ledger.record("n1").await.unwrap().unwrap();
    assert_eq!(record.routes[&Route::WECHAT], waiting);
    assert_eq!(record.routes[&Route::QIUQIU], sent);
    assert_depth(&s, 1).await;
    assert!(take(&s, 4999, 10, 1000).await.is_empty(), "due at next_due");
    assert_eq!(
        s.ledger.take_due(5000, 10, 10_000).await.unwrap(),
        [retried.clone()],
        "with its attempts"
    );
    // Put back for the provider's rate in the state it has: queued again, the record as it was.
    s.ledger
        .settle(&retried, waiting.clone(), Some(6000))
        .await
        .unwrap();
    let record = s.ledger.record("n1").await.unwrap().unwrap();
    assert_eq!(record.routes[&Route::WECHAT], waiting);
    assert_eq!(take(&s, 6000, 10, 10_000).await, ["n1-wechat"]);

    // Without its record (gone), a job still moves in the queue.
    let ghost = job("ghost", "alice", Route::WECHAT);
    s.ledger
        .settle(&ghost, sent.clone(), Some(7000))
        .await
        .unwrap();
    assert_eq!(s.ledger.record("ghost").await.unwrap(), None);
    assert_eq!(take(&s, 7000, 10, 1000).await, ["ghost-wechat"]);
    s.ledger.settle(&ghost, sent, None).await.unwrap();
    assert!(take(&s, 100_000, 10, 1000)
        .await
        .iter()
        .all(|key| key != "ghost-wechat"));
}

async fn aggregates_join_until_their_job_is_taken(s: Subject) {
    let l = &s.ledger;
    let (first, new) = aggregate(l, "alice", "friend_request", "n1", Route::QIUQIU, 1000).await;
    assert!(new);
    assert_eq!(
        (first.notification.as_str(), first.count, first.route()),
        ("n1", 1, Route::QIUQIU)
    );
    for (id, count) in [("n2", 2), ("n3", 3)] {
        let (joined, new) = aggregate(l, "alice", "friend_request", id, Route::QIUQIU, 1500).await;
        assert!(!new);
        assert_eq!((joined.notification.as_str(), joined.count), ("n1", count));
    }
    let (other_kind, new) = aggregate(l, "alice", "like", "n4", Route::QIUQIU, 1000).await;
    assert!(new && other_kind.count == 1);
    let (_, new) = aggregate(l, "bob", "friend_request", "n5", Route::QIUQIU, 1000).await;
    assert!(new, "one aggregate per user");

    let taken = l.take_due(1000, 10, 10_000).await.unwrap();
    let n1 = taken.iter().find(|job| job.notification == "n1").unwrap();
    assert_eq!(n1.count, 3, "sent as one push for three");
    assert_eq!(taken.len(), 3);

    let (after, new) = aggregate(l, "alice", "friend_request", "n6", Route::QIUQIU, 2000).await;
    assert!(new, "taking the job freed the slot");
    assert_eq!((after.notification.as_str(), after.count), ("n6", 1));
}

async fn provider_ids_lead_back_to_their_notification(s: Subject) {
    let l = &s.ledger;
    l.index_provider_id("msg-1", "n1", Provider::Wechat)
        .await
        .unwrap();
    l.index_provider_id("task-9", "n2", Provider::Qiuqiu)
        .await
        .unwrap();
    assert_eq!(
        l.by_provider_id("msg-1").await.unwrap(),
        Some(("n1".to_string(), Provider::Wechat))
    );
    assert_eq!(
        l.by_provider_id("task-9").await.unwrap(),
        Some(("n2".to_string(), Provider::Qiuqiu))
    );
    assert_eq!(l.by_provider_id("msg-2").await.unwrap(), None);
}

async fn a_delivery_report_sets_one_route(s: Subject) {
    queued(&s, "n1", "alice", &[Route::WECHAT, Route::QIUQIU], 100).await;
    let delivered = RouteState::new(Status::Delivered, Some("user received".into()));
    s.ledger
        .set_route("n1", Route::WECHAT, delivered.clone())
        .await
        .unwrap();
    let record = s.ledger.record("n1").await.unwrap().unwrap();
    assert_eq!(record.routes[&Route::WECHAT], delivered);
    assert_eq!(record.routes[&Route::QIUQIU].status, Status::Queued);
    assert_depth(&s, 2).await;

    s.ledger
        .set_route("ghost", Route::WECHAT, delivered)
        .await
        .unwrap();
    assert_eq!(s.ledger.record("ghost").await.unwrap(), None);
}

async fn a_quota_never_counts_past_its_limit(s: Subject) {
    let l = &s.ledger;
    let mut counted = Vec::new();
    for _ in 0..5 {
        counted.push(l.count_quota("wechat:app", "2024-05-01", 3).await.unwrap());
    }
    assert_eq!(counted, [true, true, true, false, false]);
    assert!(l.count_quota("wechat:app", "2024-05-02", 3).await.unwrap());
    assert!(l.count_quota("qiuqiu", "2024-05-01", 3).await.unwrap());
    assert!(!l.count_quota("none", "2024-05-01", 0).await.unwrap());
}

async fn preferences_round_trip_and_bindings_are_sealed(s: Subject) {
    let l = &s.ledger;
    assert_eq!(preferences(l, "alice").await, Preferences::default());

    let hours = QuietHours {
        time_zone: "Asia/Shanghai".into(),
        windows: vec![QuietWindow {
            start: "22:00".into(),
            end: "07:30".into(),
        }],
    };
    let consent = Consent {
        wechat: true,
        qiuqiu: false,
    };
    let bindings = Bindings {
        wechat: BTreeMap::from([("main".to_string(), "oOPENID-secret-4242".to_string())]),
        qiuqiu_devices: vec!["cid-1".into(), "cid-2".into()],
        qiuqiu_alias: Some("alice-alias".into()),
    };
    l.set_quiet_hours("alice", &hours).await.unwrap();
    l.set_consent("alice", &consent).await.unwrap();
    l.set_bindings("alice", &bindings).await.unwrap();
    let alice = Preferences {
        quiet_hours: Some(hours),
        consent,
        bindings,
    };
    // Several users in one read, in the order asked.
    let users = ["bob".to_string(), "alice".into(), "bob".into()];
    let read: Vec<Preferences> = (l.preferences(&users).await.unwrap().iter())
        .map(|held| Preferences::clone(held))
        .collect();
    assert_eq!(
        read,
        [Preferences::default(), alice, Preferences::default()]
    );

    if let Some(redis) = &s.redis {
        let stored: Option<Vec<u8>> = ::redis::cmd("GET")
            .arg("gw:{alice}:notify:bindings")
            .query_async(&mut redis.clone())
            .await
            .unwrap();
        let stored = stored.expect("the bindings are stored under the documented key");
        let text = String::from_utf8_lossy(&stored);
        assert!(!text.contains("oOPENID-secret-4242"), "sealed: {text}");
        assert!(!text.contains("alice-alias"), "sealed: {text}");
    }
}

async fn the_queue_depth_counts_queued_and_leased_jobs(s: Subject) {
    assert_depth(&s, 0).await;
    queued(&s, "n1", "alice", &[Route::WECHAT, Route::QIUQIU], 100).await;
    queued(&s, "n2", "bob", &[Route::WECHAT], 100).await;
    assert_depth(&s, 3).await;
    assert_eq!(take(&s, 100, 1, 1000).await.len(), 1);
    assert_depth(&s, 3).await;
    let sent = RouteState::new(Status::Sent, None);
    s.ledger
        .settle(&job("n1", "alice", Route::WECHAT), sent, None)
        .await
        .unwrap();
    assert_depth(&s, 2).await;
    aggregate(&s.ledger, "bob", "like", "n3", Route::QIUQIU, 100).await;
    assert_depth(&s, 3).await;
}

async fn deleting_a_user_leaves_no_preferences_claims_jobs_or_records(s: Subject) {
    let l = &s.ledger;
    let now = unix_millis();
    for user in ["alice", "bob"] {
        l.set_quiet_hours(
            user,
            &QuietHours {
                time_zone: "UTC".into(),
                windows: Vec::new(),
            },
        )
        .await
        .unwrap();
        l.set_consent(
            user,
            &Consent {
                wechat: true,
                qiuqiu: true,
            },
        )
        .await
        .unwrap();
        let bindings = Bindings {
            qiuqiu_alias: Some(user.into()),
            ..Bindings::default()
        };
        l.set_bindings(user, &bindings).await.unwrap();
        assert!(claim(l, user, "k:1", now, 60_000).await);
        assert!(claim(l, user, "k:2", now, 60_000).await);
        queued(&s, &format!("{user}-n1"), user, &[Route::WECHAT], 100).await;
        aggregate(l, user, "like", &format!("{user}-n2"), Route::QIUQIU, 100).await;
    }
    // One of bob's jobs taken and waiting to be retried, one just queued.
    assert_eq!(take(&s, 100, 1, 1000).await, ["alice-n1-wechat"]);
    assert_eq!(take(&s, 100, 1, 1000).await, ["alice-n2-qiuqiu"]);
    assert_eq!(take(&s, 100, 1, 1000).await, ["bob-n1-wechat"]);
    assert_depth(&s, 4).await;
    // What was done for each of their notifications, with the provider's id of a push.
    for user in ["alice", "bob"] {
        let id = format!("{user}-n1");
        let sent = RouteState {
            provider_id: Some(format!("msgid-{user}")),
            ..RouteState::new(Status::Sent, None)
        };
        l.set_route(&id, Route::WECHAT, sent).await.unwrap();
        l.index_provider_id(&format!("msgid-{user}"), &id, Provider::Wechat)
            .await
            .unwrap();
    }

    l.delete_user("bob").await.unwrap();
    assert_eq!(l.record("bob-n1").await.unwrap(), None);
    assert_eq!(l.record("bob-n2").await.unwrap(), None);
    assert_eq!(l.by_provider_id("msgid-bob").await.unwrap(), None);
    assert!(
        l.record("alice-n1").await.unwrap().is_some(),
        "alice's stay"
    );
    assert!(l.by_provider_id("msgid-alice").await.unwrap().is_some());

    if let Some(redis) = &s.redis {
        let mut redis = redis.clone();
        let left = scan(&mut redis, "gw:{bob}:*", 100).await.unwrap();
        assert!(left.is_empty(), "{left:?}");
        for shard in 0..SHARDS {
            let tag = format!("gw:notify:{{queue:{shard}}}");
            for hash in ["aggregates", "aggregated", "jobs"].map(|h| format!("{tag}:{h}")) {
                let fields: Vec<String> = ::redis::cmd("HKEYS")
                    .arg(&hash)
                    .query_async(&mut redis)
                    .await
                    .unwrap();
                assert!(
                    !fields.iter().any(|field| field.starts_with("bob")),
                    "{hash}: {fields:?}"
                );
            }
            let jobs_of_bob = format!("{tag}:of:bob");
            let left: bool = ::redis::cmd("EXISTS")
                .arg(&jobs_of_bob)
                .query_async(&mut redis)
                .await
                .unwrap();
            assert!(!left, "{jobs_of_bob}");
        }
    }
    assert_eq!(preferences(l, "bob").await.quiet_hours, None);
    assert_eq!(preferences(l, "bob").await.consent, Consent::default());
    assert_eq!(preferences(l, "bob").await.bindings, Bindings::default());
    assert!(claim(l, "bob", "k:1", now, 60_000).await);
    assert!(claim(l, "bob", "k:2", now, 60_000).await);
    assert_depth(&s, 2).await;
    assert_eq!(
        take(&s, u64::MAX / 4, 100, 1000).await,
        ["alice-n1-wechat", "alice-n2-qiuqiu"]
    );
    let (_, new) = aggregate(l, "bob", "like", "bob-n3", Route::QIUQIU, 100).await;
    assert!(new, "the aggregate slot went with its job");

    // Nothing of alice's went.
    assert!(!claim(l, "alice", "k:1", now, 60_000).await);
    assert!(preferences(l, "alice").await.quiet_hours.is_some());
    assert_eq!(
        preferences(l, "alice")
            .await
            .bindings
            .qiuqiu_alias
            .as_deref(),
        Some("alice")
    );
}

// What a ledger shared by several nodes must also guarantee: two `RedisLedger`s on one Redis
// stand for two gateway nodes.

async fn two_nodes(endpoint: &Endpoint) -> [Arc<RedisLedger>; 2] {
    let a = RedisLedger::open(endpoint, SHARDS, keys(), RETENTION)
        .await
        .unwrap();
    let b = RedisLedger::open(endpoint, SHARDS, keys(), RETENTION)
        .await
        .unwrap();
    [Arc::new(a), Arc::new(b)]
}

/// What several nodes must find on a Redis Cluster too, on an emptied `cluster`.
async fn cluster_nodes_share_one_ledger(cluster: &RedisCluster) {
    let endpoint = Endpoint::cluster(cluster.urls());
    cluster.on_primaries(&["FLUSHALL"]);
    nodes_claim_one_key_once(two_nodes(&endpoint).await).await;
    cluster.on_primaries(&["FLUSHALL"]);
    nodes_never_take_a_due_job_twice(two_nodes(&endpoint).await).await;
    cluster.on_primaries(&["FLUSHALL"]);
    nodes_settling_two_routes_keep_both(two_nodes(&endpoint).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_claiming_one_key_at_once_get_one_claim() {
    let server = RedisServer::start();
    nodes_claim_one_key_once(two_nodes(&Endpoint::single(&server.url())).await).await;
}

async fn nodes_claim_one_key_once(nodes: [Arc<RedisLedger>; 2]) {
    let now = unix_millis();
    let claims: Vec<_> = (0..64)
        .map(|i| {
            let node = nodes[i % 2].clone();
            tokio::spawn(async move { claim(&node, "alice", "k:same", now, 60_000).await })
        })
        .collect();
    let mut won = 0;
    for claim in claims {
        won += usize::from(claim.await.unwrap());
    }
    assert_eq!(won, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_taking_due_jobs_at_once_never_take_one_twice() {
    let server = RedisServer::start();
    nodes_never_take_a_due_job_twice(two_nodes(&Endpoint::single(&server.url())).await).await;
}

async fn nodes_never_take_a_due_job_twice(nodes: [Arc<RedisLedger>; 2]) {
    for i in 0..300 {
        let user = format!("u{}", i % 7);
        let id = format!("n{i:03}");
        let jobs = [
            (job(&id, &user, Route::WECHAT), i),
            (job(&id, &user, Route::QIUQIU), i),
        ];
        let record = record(&id, &user, &[Route::WECHAT, Route::QIUQIU]);
        create(&nodes[0], &record, &jobs).await;
    }
    let takers: Vec<_> = (0..8)
        .map(|i| {
            let node = nodes[i % 2].clone();
            tokio::spawn(async move {
                let mut taken = Vec::new();
                loop {
                    let due = node.take_due(1000, 5, 1_000_000).await.unwrap();
                    if due.is_empty() {
                        return taken;
                    }
                    taken.extend(due.iter().map(Job::key));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for taker in takers {
        all.extend(taker.await.unwrap());
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 600, "every job taken");
    assert_eq!(unique.len(), 600, "none twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_settling_the_routes_of_one_notification_at_once_keep_both() {
    let server = RedisServer::start();
    nodes_settling_two_routes_keep_both(two_nodes(&Endpoint::single(&server.url())).await).await;
}

async fn nodes_settling_two_routes_keep_both(nodes: [Arc<RedisLedger>; 2]) {
    let ids: Vec<String> = (0..40).map(|i| format!("n{i}")).collect();
    for id in &ids {
        let jobs = [
            (job(id, "alice", Route::WECHAT), 100),
            (job(id, "alice", Route::QIUQIU), 100),
        ];
        let record = record(id, "alice", &[Route::WECHAT, Route::QIUQIU]);
        create(&nodes[0], &record, &jobs).await;
    }
    let settles: Vec<_> = ids
        .iter()
        .flat_map(|id| {
            [(0, Route::WECHAT), (1, Route::QIUQIU)].map(|(node, route)| {
                let (node, id) = (nodes[node].clone(), id.clone());
                tokio::spawn(async move {
                    let state = RouteState::new(Status::Sent, Some(format!("by {route:?}")));
                    node.settle(&job(&id, "alice", route), state, None).await
                })
            })
        })
        .collect();
    for settle in settles {
        settle.await.unwrap().unwrap();
    }
    for id in &ids {
        let record = nodes[1].record(id).await.unwrap().unwrap();
        for route in [Route::WECHAT, Route::QIUQIU] {
            assert_eq!(
                record.routes[&route].detail,
                Some(format!("by {route:?}")),
                "{id}"
            );
        }
    }
    assert_eq!(nodes[0].queue_depth().await.unwrap(), 0);
}

/// A notification id made at `ms`, as `into_notification` makes them (UUIDv7).
fn id_at(ms: u64, n: u64) -> String {
    format!("{:08x}-{:04x}-7000-8000-{n:012x}", ms >> 16, ms & 0xffff)
}

#[tokio::test]
async fn the_embedded_sweeper_removes_expired_claims_and_old_settled_records() {
    let s = embedded_ledger().await;
    let l = &s.ledger;
    let now = unix_millis();
    assert!(claim(l, "alice", "k:1", now, 1000).await);
    assert!(claim(l, "bob", "k:1", now, 60_000).await);
    // Carol's claim expires and is claimed again: the sweep keeps the new one.
    assert!(claim(l, "carol", "k:1", now, 1000).await);
    assert!(claim(l, "carol", "k:1", now + 2000, 60_000).await);
    let swept = l.sweep(now + 2000, 0).await.unwrap();
    assert_eq!(swept.claims, 1, "alice's expired claim only");
    assert!(
        !claim(l, "bob", "k:1", now + 2001, 60_000).await,
        "bob's is live"
    );
    assert!(
        !claim(l, "carol", "k:1", now + 2001, 60_000).await,
        "carol's new one stays"
    );
    assert_eq!(l.sweep(now + 2000, 0).await.unwrap().claims, 0);

    let (old, pending, young) = (
        id_at(now - 10_000, 1),
        id_at(now - 10_000, 2),
        id_at(now, 3),
    );
    let mut sent = RouteState::new(Status::Sent, None);
    sent.provider_id = Some("m-1".into());
    let mut settled = record(&old, "alice", &[Route::WECHAT]);
    settled.routes.insert(Route::WECHAT, sent.clone());
    create(l, &settled, &[]).await;
    l.index_provider_id("m-1", &old, Provider::Wechat)
        .await
        .unwrap();
    create(l, &record(&pending, "alice", &[Route::QIUQIU]), &[]).await;
    let mut recent = record(&young, "alice", &[Route::WECHAT]);
    recent.routes.insert(Route::WECHAT, sent);
    create(l, &recent, &[]).await;

    let swept = l.sweep(now, now - 5_000).await.unwrap();
    assert_eq!(swept.records, 1);
    assert_eq!(l.record(&old).await.unwrap(), None);
    assert_eq!(l.by_provider_id("m-1").await.unwrap(), None);
    assert!(l.record(&pending).await.unwrap().is_some(), "still queued");
    assert!(l.record(&young).await.unwrap().is_some(), "not old enough");
}

#[tokio::test]
async fn the_embedded_ledgers_claims_survive_a_restart_and_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Notify {
        max_dedup_claims: 4,
        decision_batch: 2,
        ..embedded_settings()
    };
    let now = unix_millis();
    {
        let l: Arc<dyn Ledger> =
            Arc::new(EmbeddedLedger::open(dir.path(), keys(), &settings).unwrap());
        assert!(claim(&l, "alice", "k:1", now, 60_000).await);
        assert!(claim(&l, "alice", "k:2", now, 1_000).await);
        // Claims are durable with the next create.
        create(&l, &record("n1", "alice", &[Route::WECHAT]), &[]).await;
        assert_eq!(l.dedup_claims_held(), Some(2));
    }
    let l: Arc<dyn Ledger> = Arc::new(EmbeddedLedger::open(dir.path(), keys(), &settings).unwrap());
    assert_eq!(l.dedup_claims_held(), Some(2));
    assert!(
        !claim(&l, "alice", "k:1", now + 1, 60_000).await,
        "held across the restart"
    );
    assert!(
        claim(&l, "alice", "k:2", now + 1_000, 60_000).await,
        "expired"
    );
    assert!(claim(&l, "bob", "k:1", now + 1_000, 60_000).await);
    assert!(claim(&l, "carol", "k:1", now + 1_000, 60_000).await);
    let refused = l
        .claim_dedup(
            &[DedupClaim {
                user: "dave".into(),
                key: "k:1".into(),
                by: "n9".into(),
            }],
            now + 1_000,
            60_000,
        )
        .await;
    assert!(
        matches!(&refused, Err(StoreError::Unavailable(why)) if why.contains("notify.max_dedup_claims")),
        "{refused:?}"
    );
    assert!(
        claim(&l, "dave", "k:1", now + 61_000, 60_000).await,
        "room again once claims expire"
    );
}

#[tokio::test]
async fn redis_expires_records_and_provider_ids_after_the_retention() {
    let s = redis_ledger().await;
    let l = &s.ledger;
    let jobs = [(job("n1", "alice", Route::WECHAT), 0)];
    create(l, &record("n1", "alice", &[Route::WECHAT]), &jobs).await;
    l.index_provider_id("m-9", "n1", Provider::Wechat)
        .await
        .unwrap();
    // A route's state rewrites the record and keeps its expiry.
    let sent = RouteState::new(Status::Sent, None);
    l.set_route("n1", Route::WECHAT, sent).await.unwrap();
    let mut redis = s.redis.clone().unwrap();
    for key in ["gw:notify:record:n1", "gw:notify:provider:m-9"] {
        let ttl: i64 = ::redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut redis)
            .await
            .unwrap();
        assert!(
            (1..=RETENTION.as_millis() as i64).contains(&ttl),
            "{key}: {ttl}"
        );
    }
    let now = unix_millis();
    assert_eq!(l.sweep(now, now).await.unwrap(), LedgerSweep::default());
}
