//! A real Redis Cluster for a test: three primaries and three replicas, each a `redis-server`
//! (or each a `valkey-server`; [`RedisServer`]) on a free loopback port, joined by `redis-cli
//! --cluster create`. A primary can be killed, for its replica to take over, to see the gateway
//! follow.
//!
//! Everything here blocks, as in [`crate::redis_server`].

use crate::redis_server::{free_port, RedisServer};
use crate::PATIENCE;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long a node may not answer before the cluster fails it over: short, so a test of a
/// failover does not wait long, and still well above a busy machine's pauses.
const NODE_TIMEOUT_MS: u32 = 2000;

pub struct RedisCluster {
    /// The first three started as primaries, each of the last three a replica of one of them
    /// (which one is `redis-cli`'s choice).
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three primaries with a replica each (append-only file, fsync on every write) and
    /// waits until every node serves every slot.
    pub fn start() -> Self {
        Self::start_of(RedisServer::start_with)
    }

    /// As [`start`](Self::start), of Valkey servers ([`RedisServer::start_valkey`]).
    pub fn start_valkey() -> Self {
        Self::start_of(RedisServer::start_valkey)
    }

    fn start_of(server: fn(Vec<String>) -> RedisServer) -> Self {
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| {
                server(
                    [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-node-timeout",
                        &NODE_TIMEOUT_MS.to_string(),
                        // The bus port beside the data port would be port + 10000, which may
                        // be taken or out of range: a free one of its own.
                        "--cluster-port",
                        &free_port().to_string(),
                    ]
                    .map(str::to_string)
                    .to_vec(),
                )
            })
            .collect();
        let addresses: Vec<String> = (nodes.iter())
            .map(|node| format!("127.0.0.1:{}", node.port()))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("running redis-cli --cluster create");
        assert!(
            created.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        let cluster = Self { nodes };
        cluster.wait_until_ready();
        cluster
    }

    /// `redis://127.0.0.1:PORT/` of every node, the first one first: the seeds a client learns
    /// the cluster from.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The running nodes that are primaries now.
    pub fn primaries(&self) -> Vec<&RedisServer> {
        (self.nodes.iter())
            .filter(|node| node.is_running() && node.command(&["ROLE"]).starts_with("master"))
            .collect()
    }

    /// Runs one command on every primary (`redis-cli -p PORT …`), returning their answers.
    pub fn on_primaries(&self, args: &[&str]) -> Vec<String> {
        (self.primaries().into_iter())
            .map(|node| node.command(args))
            .collect()
    }

    /// Runs one command on every running replica, returning their answers.
    pub fn on_replicas(&self, args: &[&str]) -> Vec<String> {
        (self.nodes.iter())
            .filter(|node| node.is_running() && node.command(&["ROLE"]).starts_with("slave"))
            .map(|node| node.command(args))
            .collect()
    }

    /// Kills (no shutdown) the primary that serves `key`'s slot, waits until the cluster has
    /// promoted its replica and serves every slot again, then starts the killed one again: it
    /// comes back as the new primary's replica, as an operator brings back a failed machine.
    pub fn kill_primary_of(&mut self, key: &str) {
        let port = self.owner(key).port();
        let primary = (self.nodes.iter_mut())
            .find(|node| node.port() == port)
            .expect("the primary is a node");
        primary.stop();
        self.wait_until_ready();
        let killed = (self.nodes.iter_mut())
            .find(|node| node.port() == port)
            .expect("the primary is a node");
        killed.start_again();
        self.wait_until_ready();
    }

    /// The port of the primary that serves `key`'s slot now.
    pub fn primary_port_of(&self, key: &str) -> u16 {
        self.owner(key).port()
    }

    /// The primary that serves `key`'s slot now.
    fn owner(&self, key: &str) -> &RedisServer {
        let slot = self.nodes[0].command(&["CLUSTER", "KEYSLOT", key]);
        let slots = self.nodes[0].command(&["CLUSTER", "SLOTS"]);
        (self.primaries().into_iter())
            .find(|node| owns(&slots, slot.parse().unwrap(), node.port()))
            .expect("a primary owns every slot")
    }

    /// Waits until every running node says the cluster is whole and knows all six nodes.
    fn wait_until_ready(&self) {
        let deadline = Instant::now() + PATIENCE * 3;
        loop {
            let ready = (self.nodes.iter().filter(|node| node.is_running())).all(|node| {
                let info = node.command(&["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
                    && info.contains("cluster_known_nodes:6")
            });
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "the Redis Cluster did not form");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Whether `CLUSTER SLOTS` (as `redis-cli` prints it, one value a line) gives `slot` to the
/// primary on `port`: each range is its first and last slot, then the primary's address and
/// port, then its replicas'.
fn owns(slots: &str, slot: u16, port: u16) -> bool {
    let lines: Vec<&str> = slots.lines().map(str::trim).collect();
    lines.windows(4).any(|window| {
        let (Ok(first), Ok(last)) = (window[0].parse::<u16>(), window[1].parse::<u16>()) else {
            return false;
        };
        (first..=last).contains(&slot) && window[3] == port.to_string()
    })
}
