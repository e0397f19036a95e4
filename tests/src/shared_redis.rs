//! What the gateway nodes of a multi-node test share: one `redis-server`, or a Redis Cluster.
//! A test of behaviour across nodes is written once, for any of them.

use crate::redis_cluster::RedisCluster;
use crate::redis_server::RedisServer;
use crate::Options;

pub trait SharedRedis {
    /// `options`, and what puts a gateway's store on this Redis.
    fn gateway_options(&self, options: Options) -> Options;
}

impl SharedRedis for RedisServer {
    fn gateway_options(&self, options: Options) -> Options {
        options
            .with("STORE__BACKEND", "redis")
            .with("STORE__REDIS_URL", &self.url())
    }
}

impl SharedRedis for RedisCluster {
    /// The first node as `store.redis_url`, the others as seeds.
    fn gateway_options(&self, options: Options) -> Options {
        let urls = self.urls();
        let seeds: Vec<String> = urls[1..].iter().map(|url| format!("{url:?}")).collect();
        options
            .with("STORE__BACKEND", "redis")
            .with("STORE__REDIS_CLUSTER", "true")
            .with("STORE__REDIS_URL", &urls[0])
            .with("STORE__REDIS_SEEDS", &format!("[{}]", seeds.join(", ")))
    }
}
