//! A Redis Cluster and gateway nodes on it, on this machine, for trying the gateway on a
//! cluster by hand (`scripts/redis-cluster [NODES]`): three primaries and three replicas of
//! Debian's `redis-server` on free ports, and NODES gateway nodes (3 by default) sharing one
//! service's secrets. Prints where everything listens and how to talk to it; Ctrl-C stops it
//! (or SIGTERM) stops it all and removes its files.

use e2e::redis_cluster::RedisCluster;
use e2e::shared_redis::SharedRedis;
use e2e::{Options, TestGateway};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let nodes: usize = match std::env::args().nth(1) {
        Some(count) => count
            .parse()
            .ok()
            .filter(|count| *count >= 1)
            .ok_or_else(|| anyhow::anyhow!("NODES must be a number of gateway nodes, 1 or more"))?,
        None => 3,
    };
    let cluster = RedisCluster::start();
    println!("Redis Cluster (3 primaries, 3 replicas):");
    for url in cluster.urls() {
        println!("  {url}");
    }
    let options = |node: usize| {
        cluster
            .gateway_options(Options::default())
            .with("STORE__NODE_ID", &format!("node-{node}"))
    };
    let first = TestGateway::start_with(options(1)).await;
    let mut gateways = vec![first];
    for node in 2..=nodes {
        gateways.push(TestGateway::start_beside(&gateways[0], options(node)).await?);
    }
    println!("Gateway nodes:");
    for (node, gw) in (1..).zip(&gateways) {
        println!(
            "  node-{node}: http://{} mqtt {} mqtt-ws {} (data dir {})",
            gw.http,
            gw.mqtt,
            gw.mqtt_ws,
            gw.data_dir.path().display()
        );
    }
    let first = &gateways[0];
    println!("API key (every node): {}", first.api_key);
    println!(
        "A device token: target/debug/gateway token --user alice --device phone --data-dir {}",
        first.data_dir.path().display()
    );
    println!("Ctrl-C stops everything.");
    // On SIGTERM too: the servers and nodes are stopped as this process's handles drop.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        stopped = tokio::signal::ctrl_c() => stopped?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
