//! Several nodes sharing one real `redis-server`: live delivery across nodes, presence across
//! nodes, a device moving between nodes, a dead node's devices going offline, and Redis
//! outages answered with a retryable error and recovered from. What holds across nodes is also
//! shown on a real Redis Cluster (three primaries, three replicas): those tests run on both.

use e2e::device::{assert_holds_every_acknowledged_once, messages_of, seqs, Device};
use e2e::json_ws::JsonClient;
use e2e::mqtt::{Incoming, Via, V4, V5};
use e2e::redis_cluster::RedisCluster;
use e2e::redis_server::RedisServer;
use e2e::shared_redis::SharedRedis;
use e2e::{Options, TestGateway, PATIENCE, QUIET};
use protocol::envelope::Platform;
use protocol::topics;
use reqwest::Method;
use rumqttc::QoS;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A node of the cluster on `redis`, named `node`.
async fn node(redis: &impl SharedRedis, node: &str, shared: Option<&TestGateway>) -> TestGateway {
    node_with(redis, node, shared, Options::default()).await
}

/// A node of the cluster on `redis`, named `node`, started with `options` besides.
async fn node_with(
    redis: &impl SharedRedis,
    node: &str,
    shared: Option<&TestGateway>,
    options: Options,
) -> TestGateway {
    let options = redis
        .gateway_options(options)
        .with("STORE__NODE_ID", node)
        .with("STORE__NODE_HEARTBEAT", "200ms")
        .with("STORE__NODE_TIMEOUT", "1s");
    match shared {
        Some(first) => TestGateway::start_beside(first, options).await,
        None => TestGateway::try_start(options, tempfile::tempdir().unwrap()).await,
    }
    .expect("starting a node")
}

/// Each scenario as a test on its own `redis-server` (`one_redis::…`) and one on its own Redis
/// Cluster (`redis_cluster::…`).
macro_rules! on_one_redis_and_a_cluster {
    ($($scenario:ident),* $(,)?) => {
        mod one_redis {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(super::RedisServer::start()).await
                }
            )*
        }
        mod redis_cluster {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(super::RedisCluster::start()).await
                }
            )*
        }
    };
}

on_one_redis_and_a_cluster!(
    an_api_keys_rate_limit_is_shared_by_the_nodes,
    a_device_known_on_one_node_is_known_on_the_other,
    one_per_class_kicks_the_older_phone_on_another_node,
    three_nodes_deliver_live_share_presence_and_let_a_device_move,
    a_dead_nodes_devices_go_offline,
);

/// Polls until `check` holds, for at most [`PATIENCE`].
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, check: impl Fn() -> F) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An API key's rate limit is the service's, not each node's: the nodes of one Redis share the
/// key's bucket, so calls spread over them get no more than its burst.
async fn an_api_keys_rate_limit_is_shared_by_the_nodes(redis: impl SharedRedis) {
    let limited = || {
        Options::default()
            .rate_limited()
            .with("RATE_LIMITS__API_KEY", "{ per_second = 1, burst = 4 }")
    };
    let a = node_with(&redis, "node-a", None, limited()).await;
    let b = node_with(&redis, "node-b", Some(&a), limited()).await;
    let mut statuses = Vec::new();
    for gw in [&a, &b, &a, &b, &a, &b] {
        let (status, _) = gw.api(Method::GET, "/v1/users/alice/devices", None).await;
        statuses.push(status);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);
}

/// Known devices are the service's, not a node's: a node that never saw a user still knows its
/// devices, so a new device waits for approval wherever it logs in, a device on another node
/// approves it, and once approved it is known on every node.
async fn a_device_known_on_one_node_is_known_on_the_other(redis: impl SharedRedis) {
    let approval = || Options::default().with("SESSIONS__NEW_DEVICE_APPROVAL", "true");
    let a = node_with(&redis, "node-a", None, approval()).await;
    let b = node_with(&redis, "node-b", Some(&a), approval()).await;
    async fn connect(gw: &TestGateway, device: &str, platform: Platform) -> V4 {
        let token = gw.token("hana", device, platform);
        let mut client = V4::connect(gw, Via::Tcp, device, Some(&token), |_| {})
            .await
            .unwrap();
        client
            .subscribe(&format!("u/hana/d/{device}/reply"), QoS::AtLeastOnce)
            .await;
        client.subscribe("u/hana/inbox", QoS::AtLeastOnce).await;
        client
    }
    // The user's first device, on node A, is in at once.
    let mut phone = connect(&a, "phone", Platform::Ios).await;
    a.post_message("hana", json!({"n": 1})).await;
    assert_eq!(phone.message_on("u/hana/inbox").await["body"]["n"], 1);

    // Node B never saw the user, and still asks for approval of a new device; the phone on
    // node A approves it, and the decision reaches node B.
    let mut laptop = connect(&b, "laptop", Platform::Desktop).await;
    assert_eq!(
        laptop.message_on("u/hana/d/laptop/reply").await,
        json!({"type": "approval_pending"})
    );
    phone
        .publish(
            "u/hana/d/phone/approve",
            r#"{"device":"laptop","approve":true}"#,
            QoS::AtLeastOnce,
        )
        .await;
    assert_eq!(
        laptop.message_on("u/hana/d/laptop/reply").await,
        json!({"type": "approved"})
    );
    drop(laptop);

    // Approved on node B, the laptop is known on node A: in at once.
    let mut laptop = connect(&a, "laptop", Platform::Desktop).await;
    a.post_message("hana", json!({"n": 2})).await;
    assert_eq!(laptop.message_on("u/hana/inbox").await["body"]["n"], 2);
    laptop.no_message_on("u/hana/d/laptop/reply").await;
}

/// One phone per user whichever node each is on: a new phone on node B logs out the older phone
/// on node A, which is told why; the user's desktop stays.
async fn one_per_class_kicks_the_older_phone_on_another_node(redis: impl SharedRedis) {
    let policy = || Options::default().with("SESSIONS__DEVICE_POLICY", "one_per_class");
    let a = node_with(&redis, "node-a", None, policy()).await;
    let b = node_with(&redis, "node-b", Some(&a), policy()).await;
    let _desktop = Device::connect(&a, "ines", "desktop", Platform::Desktop).await;
    let (mut old_phone, _) = V5::connect(
        &a,
        Via::Tcp,
        "iphone",
        Some(&a.token("ines", "iphone", Platform::Ios)),
        |_| {},
    )
    .await
    .unwrap();
    old_phone
        .subscribe("u/ines/presence", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await;
    eventually("node B sees both devices", || async {
        b.devices("ines").await == ["desktop", "iphone"]
    })
    .await;

    let _new_phone = Device::connect(&b, "ines", "android", Platform::Android).await;
    // Node B lets the new phone in and announces it before it asks node A to log the old
    // phone out, so the old phone may hear of the new one before it hears it is kicked.
    let notice = loop {
        let notice = old_phone.message_on("u/ines/presence").await;
        let new_phone_online =
            notice["type"] == "online" && notice["device"]["device"] == "android";
        if !new_phone_online {
            break notice;
        }
    };
    assert_eq!(
        (notice["type"].as_str(), notice["device"].as_str()),
        (Some("kicked"), Some("iphone")),
        "{notice}"
    );
    assert!(
        notice["reason"]
            .as_str()
            .unwrap()
            .contains("another phone (android)"),
        "{notice}"
    );
    assert_eq!(
        old_phone.disconnect_reason().await,
        rumqttc::v5::mqttbytes::v5::DisconnectReasonCode::AdministrativeAction
    );
    eventually("the desktop and the new phone stay", || async {
        a.devices("ines").await == ["android", "desktop"]
    })
    .await;
}

async fn three_nodes_deliver_live_share_presence_and_let_a_device_move(redis: impl SharedRedis) {
    let a = node(&redis, "node-a", None).await;
    let b = node(&redis, "node-b", Some(&a)).await;
    let c = node(&redis, "node-c", Some(&a)).await;

    let mut alice_on_a = Device::connect(&a, "alice", "phone", Platform::Ios).await;
    let mut laptop_on_b = Device::connect(&b, "alice", "laptop", Platform::Desktop).await;
    let mut tablet_on_c = Device::connect(&c, "alice", "tablet", Platform::Android).await;
    eventually("presence lists every node's devices", || async {
        let all = ["laptop", "phone", "tablet"];
        a.devices("alice").await == all
            && b.devices("alice").await == all
            && c.devices("alice").await == all
    })
    .await;

    // Accepted on node B, live on nodes A and C (and on B).
    let posted = b.post_message("alice", json!({"text": "via b"})).await;
    let on_a = alice_on_a.next_message().await;
    assert_eq!(
        (on_a.seq, on_a.id.as_str()),
        (1, posted["id"].as_str().unwrap())
    );
    assert_eq!(laptop_on_b.next_message().await.seq, 1);
    assert_eq!(tablet_on_c.next_message().await.seq, 1);
    drop(tablet_on_c);

    // A device's own message roams to the user's device on the other node.
    alice_on_a.send("bob", json!({"text": "hi bob"})).await;
    let roamed = laptop_on_b.next_message().await;
    assert_eq!(
        (roamed.seq, roamed.from_device.as_deref()),
        (2, Some("phone"))
    );

    // A live signal from node A reaches the user's device on node B, and is not stored.
    laptop_on_b
        .mqtt
        .subscribe(&topics::signal("alice"), QoS::AtLeastOnce)
        .await;
    alice_on_a.signal("alice", json!({"typing": true})).await;
    let signal = laptop_on_b.mqtt.message_on(&topics::signal("alice")).await;
    assert_eq!(
        signal,
        json!({"from": "alice", "from_device": "phone", "body": {"typing": true}})
    );

    // Sequences stay gap-free and unique with both nodes writing at once.
    let posts = (0..40).map(|i| {
        let gw = if i % 2 == 0 { &a } else { &b };
        gw.post_message("carol", json!({ "n": i }))
    });
    let mut given: Vec<u64> = futures_util::future::join_all(posts)
        .await
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    given.sort_unstable();
    assert_eq!(given, (1..=40).collect::<Vec<_>>());

    // The phone moves from node A to node B: A's session is taken over, and it syncs on B
    // from the last message it held, nothing lost or repeated.
    alice_on_a.ack(2).await;
    a.post_message("alice", json!({"text": "while moving"}))
        .await;
    let mut alice_on_b = Device::connect(&b, "alice", "phone", Platform::Ios).await;
    let closed = alice_on_a.mqtt.inbox.closed().await;
    assert!(!closed.is_empty());
    let pages = alice_on_b.sync(json!({"after": 2})).await;
    assert_eq!(seqs(&messages_of(&pages)), [3]);
    eventually("presence shows the phone on B only", || async {
        b.devices("alice").await == ["laptop", "phone"]
    })
    .await;

    // The backend logs out, through node A, the laptop held by node B.
    let (status, body) = a
        .api(
            Method::DELETE,
            "/v1/users/alice/devices/laptop?reason=stolen",
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    laptop_on_b.mqtt.inbox.closed().await;
    eventually("the laptop is gone from presence", || async {
        a.devices("alice").await == ["phone"]
    })
    .await;
}

/// A user deleted through one node is logged out on the others too, before the deletion: their
/// connections end, without the will, which would write into the deleted log.
#[tokio::test]
async fn deleting_a_user_closes_its_connections_on_every_node() {
    use e2e::mqtt::will_to_self;
    let redis = RedisServer::start();
    let a = node(&redis, "node-a", None).await;
    let b = node(&redis, "node-b", Some(&a)).await;
    let token = b.token("ivy", "phone", Platform::Android);
    let mut phone_on_b = V4::connect(&b, Via::Tcp, "phone", Some(&token), |o| {
        o.set_last_will(will_to_self("ivy", "phone"));
    })
    .await
    .unwrap();
    eventually("node A sees the phone on node B", || async {
        a.devices("ivy").await == ["phone"]
    })
    .await;

    let (status, _) = a.api(Method::DELETE, "/v1/users/ivy", None).await;
    assert_eq!(status, 200);
    phone_on_b.inbox.closed().await;
    assert_eq!(
        b.metric_reaching("gateway_disconnects_total{reason=\"account_deleted\"}", 1.0)
            .await,
        1.0
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, page) = a.api(Method::GET, "/v1/users/ivy/messages", None).await;
    assert_eq!(page["messages"], json!([]), "no will re-created the log");
    assert!(b.devices("ivy").await.is_empty());
}

/// A revocation made through one node holds on the others: the store they share is where every
/// connection checks it.
#[tokio::test]
async fn revoked_and_deleted_users_tokens_are_refused_on_every_node() {
    let redis = RedisServer::start();
    let a = node(&redis, "node-a", None).await;
    let b = node(&redis, "node-b", Some(&a)).await;
    let revoked = b.token("judy", "phone", Platform::Android);
    let deleted = b.token("kate", "phone", Platform::Android);
    let mut judy_on_b = JsonClient::authenticated(&b, &revoked).await;
    JsonClient::authenticated(&b, &deleted).await;

    let (status, _) = a.api(Method::POST, "/v1/users/judy/logout", None).await;
    assert_eq!(status, 200);
    assert_eq!(judy_on_b.closed().await.reason, "logged out on all devices");
    let (status, _) = a.api(Method::DELETE, "/v1/users/kate", None).await;
    assert_eq!(status, 200);

    for gw in [&a, &b] {
        for token in [&revoked, &deleted] {
            let mut client = JsonClient::connect(gw, Some(token)).await;
            let answer = client
                .frame_where(|f| f["op"] == "ok" || f["op"] == "error")
                .await;
            assert_eq!(answer["code"], "unauthorized", "{answer}");
            assert!(V4::connect(gw, Via::Tcp, "phone", Some(token), |_| {})
                .await
                .is_err());
        }
    }
}

/// Senders pouring messages into users' logs through one node, each retrying after a refusal,
/// until [`finish`](Self::finish): what was acknowledged, by user, as `(id, seq)`.
struct Load {
    acknowledged: Arc<Mutex<Vec<(String, String, u64)>>>,
    done: Arc<AtomicBool>,
    posters: Vec<tokio::task::JoinHandle<u32>>,
}

impl Load {
    /// Six senders, each writing to `users` in turn.
    fn start(gw: &TestGateway, users: &[&str]) -> Self {
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicBool::new(false));
        let users: Vec<String> = users.iter().map(|user| user.to_string()).collect();
        let posters = (0..6)
            .map(|poster| {
                let (url, key) = (gw.url("/v1/messages"), gw.api_key.clone());
                let (acknowledged, done) = (acknowledged.clone(), done.clone());
                let users = users.clone();
                tokio::spawn(async move {
                    let client = reqwest::Client::new();
                    let mut refused = 0;
                    for (n, user) in users.iter().cycle().enumerate() {
                        if done.load(Ordering::Relaxed) {
                            return refused;
                        }
                        let sent = client
                            .post(&url)
                            .bearer_auth(&key)
                            .json(&json!({"to": user, "body": {"poster": poster, "n": n}}))
                            .timeout(Duration::from_secs(5))
                            .send()
                            .await;
                        match sent {
                            Ok(response) if response.status() == 202 => {
                                let reply: serde_json::Value = response.json().await.unwrap();
                                let id = reply["id"].as_str().unwrap().to_string();
                                let seq = reply["seq"].as_u64().unwrap();
                                acknowledged.lock().unwrap().push((user.clone(), id, seq));
                            }
                            _ => {
                                refused += 1;
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                    refused
                })
            })
            .collect();
        Self {
            acknowledged,
            done,
            posters,
        }
    }

    /// How many were acknowledged so far.
    fn count(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    /// Waits until `more` messages past those acknowledged now are acknowledged.
    async fn flows(&self, more: usize) {
        let target = self.count() + more;
        eventually("messages flow", || async { self.count() >= target }).await;
    }

    /// Stops the senders; checks that some were refused (the outage was seen) and that every
    /// user's log holds what was acknowledged, once, at its sequence, with no gap.
    async fn finish(self, gw: &TestGateway, users: &[&str]) {
        self.done.store(true, Ordering::Relaxed);
        let mut refused = 0;
        for poster in self.posters {
            refused += poster.await.unwrap();
        }
        assert!(refused > 0, "the outage was seen");
        let acknowledged = self.acknowledged.lock().unwrap().clone();
        for user in users {
            let log = gw.whole_log(user).await;
            let of_user: Vec<(String, u64)> = (acknowledged.iter())
                .filter(|(to, ..)| to == user)
                .map(|(_, id, seq)| (id.clone(), *seq))
                .collect();
            assert!(!of_user.is_empty(), "{user} got messages");
            assert_holds_every_acknowledged_once(&format!("{user}'s log"), &log, &of_user);
        }
    }
}

/// Redis killed (no shutdown) and started again while senders pour messages in: what was
/// acknowledged before, during and after the outage is all in the log once, at the sequence it
/// was acknowledged with, and the sequences have no gap. (The test server runs with
/// `appendfsync always`, which the README says is what makes an acknowledgement durable.)
#[tokio::test]
async fn redis_restarted_under_load_loses_nothing_acknowledged() {
    let mut redis = RedisServer::start();
    let gw = node(&redis, "node-a", None).await;
    let load = Load::start(&gw, &["olga"]);
    load.flows(200).await;
    redis.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.start_again();
    load.flows(200).await;
    load.finish(&gw, &["olga"]).await;
}

/// A Redis Cluster primary killed (no shutdown) while senders pour messages into logs on every
/// primary: the cluster promotes its replica, the node follows by itself, and with
/// `store.redis_wait_replicas = 1` every acknowledged message was on the replica before it was
/// acknowledged — none is lost, none is stored twice, no sequence is skipped. Until the killed
/// one is back as the new primary's replica, that shard's writes are refused (no replica
/// confirms them), the others' go on.
#[tokio::test]
async fn a_cluster_primary_killed_under_load_loses_nothing_acknowledged() {
    let mut cluster = RedisCluster::start();
    let users = ["olga", "pia", "quinn", "rosa", "sue", "tara"];
    let options = Options::default()
        .with("STORE__REDIS_WAIT_REPLICAS", "1")
        .with("STORE__REDIS_WAIT_TIMEOUT", "1s");
    let gw = node_with(&cluster, "node-a", None, options).await;
    let load = Load::start(&gw, &users);
    load.flows(200).await;
    cluster.kill_primary_of("gw:{olga}:log");
    load.flows(200).await;
    load.finish(&gw, &users).await;
}

/// Whoever can write to Redis but holds none of the nodes' keys cannot make a node act: a kick
/// published in the clear on a node's channel is ignored (and counted nowhere as a kick).
#[tokio::test]
async fn a_relay_not_sealed_by_a_node_is_ignored() {
    let redis = RedisServer::start();
    let a = node(&redis, "node-a", None).await;
    let b = node(&redis, "node-b", Some(&a)).await;
    let mut web = JsonClient::authenticated(&b, &b.token("lena", "web", Platform::Web)).await;
    let forged = json!({"kind": "kick", "user": "lena", "device": "web", "reason": "forged"});
    let receivers = redis.command(&["PUBLISH", "gw:node:node-b", &forged.to_string()]);
    assert_eq!(receivers, "1", "node B listens on its channel");
    // A genuine kick through node A still works, and is the first thing the client sees.
    let (status, _) = a
        .api(
            Method::DELETE,
            "/v1/users/lena/devices/web?reason=genuine",
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(web.closed().await.reason, "genuine");
}

/// With `store.redis_wait_replicas`, a message is acknowledged only once a replica has it: while
/// the replica is away, sends are answered `503 unavailable` (retryable), and they are
/// acknowledged again once it is back.
#[tokio::test]
async fn acknowledgements_wait_for_the_configured_replicas() {
    let redis = RedisServer::start();
    let mut replica = RedisServer::start();
    let port = redis.port().to_string();
    let follow = |replica: &RedisServer| {
        replica.command(&["REPLICAOF", "127.0.0.1", &port]);
    };
    follow(&replica);
    let gw = TestGateway::start_with(
        Options::default()
            .with("STORE__BACKEND", "redis")
            .with("STORE__REDIS_URL", &redis.url())
            .with("STORE__REDIS_WAIT_REPLICAS", "1")
            .with("STORE__REDIS_WAIT_TIMEOUT", "300ms"),
    )
    .await;
    let send = |n: u32| {
        gw.api(
            Method::POST,
            "/v1/messages",
            Some(json!({"to": "rita", "body": {"n": n}})),
        )
    };
    eventually("the replica confirms", || async { send(0).await.0 == 202 }).await;

    replica.stop();
    let (status, body) = send(1).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("unavailable")),
        "{body}"
    );

    replica.start_again();
    follow(&replica);
    eventually("acknowledged again", || async { send(2).await.0 == 202 }).await;
}

/// With `store.redis_wait_aof`, a message is acknowledged only once it is in the append-only
/// file on disk (`WAITAOF`), the primary's and the replica's: a replica that keeps nothing on
/// disk does not count, though it has the message (a node that waits only for replicas to have
/// it acknowledges meanwhile), until it turns its append-only file on.
#[tokio::test]
async fn acknowledgements_wait_for_the_replicas_disk() {
    let primary = RedisServer::start_valkey(Vec::new());
    let replica = RedisServer::start_valkey(["--appendonly", "no"].map(str::to_string).to_vec());
    replica.command(&["REPLICAOF", "127.0.0.1", &primary.port().to_string()]);
    let waiting_for = |on_disk: bool| {
        Options::default()
            .with("STORE__BACKEND", "redis")
            .with("STORE__REDIS_URL", &primary.url())
            .with("STORE__REDIS_WAIT_REPLICAS", "1")
            .with("STORE__REDIS_WAIT_AOF", &on_disk.to_string())
            .with("STORE__REDIS_WAIT_TIMEOUT", "300ms")
    };
    let on_disk = TestGateway::start_with(waiting_for(true)).await;
    let received = TestGateway::start_beside(&on_disk, waiting_for(false))
        .await
        .unwrap();
    async fn send(gw: &TestGateway, n: u32) -> (u16, serde_json::Value) {
        let body = json!({"to": "vera", "body": {"n": n}});
        gw.api(Method::POST, "/v1/messages", Some(body)).await
    }
    eventually("the replica has it", || async {
        send(&received, 0).await.0 == 202
    })
    .await;
    let (status, body) = send(&on_disk, 1).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("unavailable")),
        "{body}"
    );

    replica.command(&["CONFIG", "SET", "appendonly", "yes"]);
    eventually("on the replica's disk", || async {
        send(&on_disk, 2).await.0 == 202
    })
    .await;
}

/// On a Valkey Cluster, `store.redis_wait_aof` waits on every primary a batch wrote to, for its
/// own disk and its replica's: while the replicas keep nothing on disk, sends to users of every
/// shard are refused; once they do, acknowledged.
#[tokio::test]
async fn a_cluster_waits_for_every_shards_disk() {
    let cluster = RedisCluster::start_valkey();
    let replicas = cluster.on_replicas(&["CONFIG", "SET", "appendonly", "no"]);
    assert_eq!(replicas.len(), 3);
    let options = Options::default()
        .with("STORE__REDIS_WAIT_REPLICAS", "1")
        .with("STORE__REDIS_WAIT_AOF", "true")
        .with("STORE__REDIS_WAIT_TIMEOUT", "300ms");
    let gw = node_with(&cluster, "node-a", None, options).await;
    let users = ["olga", "pia", "quinn", "rosa", "sue", "tara"];
    let shards: std::collections::HashSet<u16> = (users.iter())
        .map(|user| cluster.primary_port_of(&format!("gw:{{{user}}}:log")))
        .collect();
    assert_eq!(shards.len(), 3, "the users' logs are on every shard");
    let send = |user: &'static str| {
        let body = json!({"to": user, "body": {"hello": user}});
        gw.api(Method::POST, "/v1/messages", Some(body))
    };
    for user in users {
        let (status, body) = send(user).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (503, Some("unavailable")),
            "{user}: {body}"
        );
    }

    cluster.on_replicas(&["CONFIG", "SET", "appendonly", "yes"]);
    for user in users {
        eventually("on every shard's disks", || async {
            send(user).await.0 == 202
        })
        .await;
    }
}

/// `store.redis_wait_aof` needs a server that can confirm writes on disk: against Debian 12's
/// Redis 7.0 (no `WAITAOF`) and against Valkey without an append-only file, the gateway
/// refuses to start, and says why.
#[tokio::test]
async fn waiting_for_the_disk_needs_a_server_that_can_confirm_it() {
    let redis_7_0 = RedisServer::start();
    let without_aof =
        RedisServer::start_valkey(["--appendonly", "no"].map(str::to_string).to_vec());
    for (server, answer) in [
        (&redis_7_0, "unknown command 'WAITAOF'"),
        (&without_aof, "appendonly is disabled"),
    ] {
        let data_dir = tempfile::tempdir().unwrap();
        let mut gateway = tokio::process::Command::new(e2e::gateway::binary());
        gateway
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir.path())
            .env("GATEWAY__STORE__BACKEND", "redis")
            .env("GATEWAY__STORE__REDIS_URL", server.url())
            .env("GATEWAY__STORE__REDIS_WAIT_AOF", "true")
            .kill_on_drop(true);
        for listener in ["MQTT", "MQTT_WS", "HTTP"] {
            gateway.env(format!("GATEWAY__LISTENERS__{listener}"), "127.0.0.1:0");
        }
        let ran = tokio::time::timeout(PATIENCE, gateway.output())
            .await
            .expect("the gateway stops by itself")
            .unwrap();
        let why = String::from_utf8_lossy(&ran.stderr);
        assert!(!ran.status.success(), "{why}");
        assert!(why.contains("store.redis_wait_aof needs"), "{why}");
        assert!(why.contains(answer), "{why}");
    }
}

async fn a_dead_nodes_devices_go_offline(redis: impl SharedRedis) {
    let a = node(&redis, "node-a", None).await;
    let b = node(&redis, "node-b", Some(&a)).await;
    let _phone_on_a = Device::connect(&a, "dora", "phone", Platform::Ios).await;
    let mut watch_on_b = Device::connect(&b, "dora", "watch", Platform::Android).await;
    watch_on_b
        .mqtt
        .subscribe("u/dora/presence", rumqttc::QoS::AtLeastOnce)
        .await;
    eventually("both devices online", || async {
        b.devices("dora").await == ["phone", "watch"]
    })
    .await;
    let nodes = || async { b.api(reqwest::Method::GET, "/v1/nodes", None).await.1 };
    assert_eq!(
        nodes().await,
        json!({"nodes": [
            {"node": "node-a", "this": false, "alive": true},
            {"node": "node-b", "this": true, "alive": true},
        ]})
    );

    // SIGKILL: node A says nothing. The phone's online event, relayed from node A, may still
    // arrive after the subscribe.
    drop(a.stop().await);
    let offline = loop {
        let event = watch_on_b.mqtt.message_on("u/dora/presence").await;
        if event["type"] != "online" {
            break event;
        }
    };
    assert_eq!(
        (offline["type"].as_str(), offline["device"].as_str()),
        (Some("offline"), Some("phone"))
    );
    assert_eq!(b.devices("dora").await, ["watch"]);
    // Not alive, and once reaped not listed.
    eventually("node A gone from the nodes", || async {
        !nodes().await["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|node| node["node"] == "node-a" && node["alive"] == true)
    })
    .await;
}

#[tokio::test]
async fn a_redis_outage_is_a_retryable_error_and_recovers_by_itself() {
    let mut redis = RedisServer::start();
    let gw = node(&redis, "node-a", None).await;
    let mut phone = Device::connect(&gw, "emma", "phone", Platform::Ios).await;
    gw.post_message("emma", json!({"text": "before"})).await;
    assert_eq!(phone.next_message().await.seq, 1);

    let (mut v5_phone, _) = V5::connect(
        &gw,
        Via::Tcp,
        "emma-tablet",
        Some(&gw.token("emma", "tablet", Platform::Android)),
        |_| {},
    )
    .await
    .unwrap();
    let mut web = JsonClient::authenticated(&gw, &gw.token("emma", "web", Platform::Web)).await;
    let mut laptop = V4::connect(
        &gw,
        Via::Tcp,
        "emma-laptop",
        Some(&gw.token("emma", "laptop", Platform::Desktop)),
        |_| {},
    )
    .await
    .unwrap();

    redis.stop();
    // A subscription to the inbox is answered once the gateway knows where the log is now, so
    // that whatever is appended after the SUBACK reaches the device.
    laptop
        .client
        .subscribe("u/emma/inbox", QoS::AtLeastOnce)
        .await
        .unwrap();
    let suback = |i: &Incoming<rumqttc::Packet>| {
        matches!(i, Incoming::Packet(rumqttc::Packet::SubAck(_))).then_some(())
    };
    laptop.inbox.expect_none("SUBACK", suback).await;
    // Every way in is told the store is unavailable and to retry, nothing is silently dropped.
    v5_phone
        .publish(
            "u/emma/d/tablet/send",
            json!({"to": "emma", "body": {}}).to_string(),
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        )
        .await;
    assert_eq!(
        v5_phone.puback().await,
        rumqttc::v5::mqttbytes::v5::PubAckReason::ImplementationSpecificError
    );
    let refused = web
        .request(json!({"op": "pub", "topic": "u/emma/d/web/send", "payload": {"to": "emma", "body": {}}}))
        .await;
    assert_eq!(
        (refused["op"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("unavailable"))
    );
    // The bridge reads nothing more from a page while its `sub` waits for an answer, so what
    // a page can make it hold is one answer.
    web.send_text(r#"{"op": "sub", "topic": "u/emma/inbox", "id": "inbox"}"#)
        .await;
    web.send_text(r#"{"op": "ping", "id": "behind"}"#).await;
    let answered = |f: &serde_json::Value| f["id"] == "inbox" || f["id"] == "behind";
    let early = tokio::time::timeout(QUIET, web.frame_where(answered)).await;
    assert!(early.is_err(), "answered during the outage: {early:?}");
    let (status, body) = gw
        .api(
            Method::POST,
            "/v1/messages",
            Some(json!({"to": "emma", "body": {}})),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    let (status, _) = gw.api(Method::GET, "/v1/users/emma/messages", None).await;
    assert_eq!(status, 503);
    // A token cannot be checked against its revocations: refused, never admitted unchecked.
    let unchecked = V5::connect(
        &gw,
        Via::Tcp,
        "emma-watch",
        Some(&gw.token("emma", "watch", Platform::Android)),
        |_| {},
    )
    .await;
    assert_eq!(
        unchecked.err(),
        Some(rumqttc::v5::mqttbytes::v5::ConnectReturnCode::ServerUnavailable)
    );

    redis.start_again();
    eventually("writes work again", || async {
        let (status, _) = gw
            .api(
                Method::POST,
                "/v1/messages",
                Some(json!({"to": "emma", "body": {"text": "after"}})),
            )
            .await;
        status == 202
    })
    .await;
    // The live connection stayed up through the outage and sees what came after it, and what
    // was acknowledged before it is still there (the Redis keeps an fsynced append-only file).
    let after = phone.next_message().await;
    assert_eq!(
        (after.seq, after.body.clone()),
        (2, json!({"text": "after"}))
    );
    let (_, history) = gw.api(Method::GET, "/v1/users/emma/messages", None).await;
    assert_eq!(history["messages"][0]["body"], json!({"text": "before"}));

    laptop.inbox.wait_for("SUBACK", suback).await;
    let first = web.frame_where(answered).await;
    assert_eq!(
        (first["op"].as_str(), first["id"].as_str()),
        (Some("ok"), Some("inbox"))
    );
    assert_eq!(web.frame_where(answered).await["id"], "behind");
    gw.post_message("emma", json!({"text": "later"})).await;
    // "after" may come first: it may have been appended after the log's head was read.
    let mut first = laptop.message_on("u/emma/inbox").await["body"].clone();
    if first == json!({"text": "after"}) {
        first = laptop.message_on("u/emma/inbox").await["body"].clone();
    }
    assert_eq!(first, json!({"text": "later"}));
    web.frame_where(|f| f["op"] == "msg" && f["payload"]["body"] == json!({"text": "later"}))
        .await;
}
