//! The Redis client every Redis user of the gateway shares the habits of: a connection that
//! reconnects by itself, and requests that fail fast while Redis is away instead of waiting for
//! it to come back.
//!
//! One Redis (a primary at one address) or a Redis Cluster:
//! [`Redis`] serves both, so the store, the ledger, the token cache, the rate limiter and the
//! node relays send the same requests either way. What a cluster needs of them is that every
//! script and transaction touches keys of one hash slot; a pipeline may span slots (see
//! [`slots`]).

mod slots;
mod subscription;

pub use subscription::{subscribe, Subscription};

use anyhow::Context;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};
use redis::{Cmd, Pipeline, RedisFuture, Value};
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

/// The longest any one request to Redis may take, connecting included, before it is answered as
/// unavailable.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// A request that failed or did not answer in time: Redis cannot be used now, and the caller may
/// try again later.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// The CA that signed the Redis server's certificate (`store.redis_ca`), for `rediss://` URLs:
/// set once at start, for every connection the process makes to Redis.
static TRUSTED_CA: OnceLock<Vec<u8>> = OnceLock::new();

/// Trusts `pem` (a CA certificate) for `rediss://` connections instead of the system's roots.
/// Called once at start, before any connection.
pub fn trust_ca(pem: Vec<u8>) {
    let _ = TRUSTED_CA.set(pem);
}

/// A client for `url`: over TLS for `rediss://` (with [`trust_ca`]'s CA when set), with the
/// ACL user and password the URL holds.
pub fn client(url: &str) -> anyhow::Result<redis::Client> {
    match TRUSTED_CA.get() {
        Some(ca) if url.starts_with("rediss://") => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.clone()),
            },
        ),
        _ => redis::Client::open(url),
    }
    .context("not a Redis URL")
}

/// Where Redis is: one server, or the nodes to learn a Redis Cluster's slots from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The server, or the cluster's seed nodes: `redis://[user:password@]host:port/` or
    /// `rediss://…`.
    pub urls: Vec<String>,
    pub cluster: bool,
}

impl Endpoint {
    /// The one Redis at `url`.
    pub fn single(url: &str) -> Self {
        Self {
            urls: vec![url.to_string()],
            cluster: false,
        }
    }

    /// Where `[store]` says Redis is: `redis_url`, and with `redis_cluster` the cluster it
    /// belongs to, also found through `redis_seeds`.
    pub fn of(store: &broker_config::Store) -> Self {
        match store.redis_cluster {
            false => Self::single(&store.redis_url),
            true => Self::cluster(
                std::iter::once(&store.redis_url)
                    .chain(&store.redis_seeds)
                    .cloned()
                    .collect(),
            ),
        }
    }

    /// The Redis Cluster that the nodes at `urls` belong to.
    pub fn cluster(urls: Vec<String>) -> Self {
        Self {
            urls,
            cluster: true,
        }
    }

    /// The addresses only, for messages: a URL may hold a password.
    fn addresses(&self) -> String {
        let address = |url: &String| match client(url) {
            Ok(client) => client.get_connection_info().addr().to_string(),
            Err(_) => "an unreadable URL".into(),
        };
        self.urls.iter().map(address).collect::<Vec<_>>().join(", ")
    }

    /// A cluster client over the seed nodes, with `rediss://`'s CA when [`trust_ca`] set one.
    fn cluster_client(
        &self,
        builder: impl FnOnce(ClusterClientBuilder) -> ClusterClientBuilder,
    ) -> anyhow::Result<redis::cluster::ClusterClient> {
        let mut cluster = ClusterClientBuilder::new(self.urls.iter().map(String::as_str))
            .connection_timeout(REQUEST_TIMEOUT / 2)
            .response_timeout(REQUEST_TIMEOUT)
            // Redirections and reconnections while slots move, within the request's bound.
            .retries(3)
            .min_retry_wait(50)
            .max_retry_wait(500);
        if let Some(ca) = TRUSTED_CA.get() {
            cluster = cluster.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.clone()),
            });
        }
        builder(cluster).build().context("not Redis Cluster URLs")
    }
}

/// A connection to one Redis or to a Redis Cluster, used the same way: every request of the
/// gateway goes through it (bounded by [`bounded`]). Cloning it shares the connection.
#[derive(Clone)]
pub enum Redis {
    /// One server: a connection that reconnects by itself.
    Single(ConnectionManager),
    /// A cluster: the redis crate keeps a connection to each node, routes each request by its
    /// key's slot and follows redirections, failovers and resharding.
    Cluster(ClusterConnection),
}

impl Redis {
    /// The command that sends `payload` to whoever listens on `channel` ([`subscribe`]): on a
    /// cluster a sharded publish, which only the shard owning the channel's slot carries,
    /// where a plain one would be copied to every node of the cluster.
    pub fn publish(&self, channel: &str, payload: &[u8]) -> Cmd {
        let mut publish = redis::cmd(match self {
            Redis::Single(_) => "PUBLISH",
            Redis::Cluster(_) => "SPUBLISH",
        });
        publish.arg(channel).arg(payload);
        publish
    }
}

impl ConnectionLike for Redis {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Redis::Single(redis) => redis.req_packed_command(cmd),
            Redis::Cluster(redis) => redis.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Redis::Single(redis) => redis.req_packed_commands(pipeline, offset, count),
            Redis::Cluster(redis) => Box::pin(slots::send(redis, pipeline, offset, count)),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Redis::Single(redis) => redis.get_db(),
            Redis::Cluster(_) => 0,
        }
    }
}

/// Connects to Redis at `endpoint`, failing when it cannot be reached now. The connection
/// reconnects by itself afterwards; use it through [`bounded`].
pub async fn connect(endpoint: &Endpoint) -> anyhow::Result<Redis> {
    let address = endpoint.addresses();
    let connecting = async {
        if endpoint.cluster {
            let cluster = endpoint.cluster_client(|builder| builder)?;
            return Ok(Redis::Cluster(cluster.get_async_connection().await?));
        }
        let url = endpoint.urls.first().context("no Redis URL")?;
        // Few, short reconnection attempts: a request waits for them only up to
        // REQUEST_TIMEOUT, and the next request after a failed attempt starts a new one.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REQUEST_TIMEOUT / 2))
            .set_response_timeout(Some(REQUEST_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_with_config(client(url)?, config).await?;
        anyhow::Ok(Redis::Single(manager))
    };
    let mut redis = tokio::time::timeout(REQUEST_TIMEOUT * 2, connecting)
        .await
        .map_err(|_| anyhow::anyhow!("timed out"))
        .and_then(|connected| connected)
        .with_context(|| format!("cannot reach Redis at {address}"))?;
    redis::cmd("PING")
        .exec_async(&mut redis)
        .await
        .with_context(|| format!("Redis at {address} does not answer PING"))?;
    Ok(redis)
}

/// Runs one request to Redis, failing it as [`Unavailable`] after [`REQUEST_TIMEOUT`]: while
/// Redis is away the connection manager may be waiting to reconnect, and a caller must not wait
/// with it.
pub async fn bounded<T>(
    request: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, Unavailable> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(result) => result.map_err(|e| Unavailable(format!("redis: {e}"))),
        Err(_) => Err(Unavailable(format!(
            "redis did not answer within {REQUEST_TIMEOUT:?}"
        ))),
    }
}

/// Every key matching `pattern`, by SCAN (a page of `page` keys a request, each request bounded);
/// a key may come twice, as SCAN promises no more. On a cluster the pattern must carry a hash
/// tag (`gw:{alice}:*`): the scan runs on the primary that holds the tag's slot, where every key
/// it can match lives.
pub async fn scan(
    redis: &mut Redis,
    pattern: &str,
    page: usize,
) -> Result<Vec<String>, Unavailable> {
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let mut request = redis::cmd("SCAN");
        request
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(page);
        let (next, found): (u64, Vec<String>) = match redis {
            Redis::Single(redis) => bounded(request.query_async(redis)).await?,
            Redis::Cluster(redis) => {
                let slot = Route::with_slot(Slot::for_key(pattern), SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(slot));
                let answer = bounded(redis.route_command(request, routing)).await?;
                redis::from_redis_value(answer).map_err(|e| Unavailable(format!("redis: {e}")))?
            }
        };
        keys.extend(found);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}
