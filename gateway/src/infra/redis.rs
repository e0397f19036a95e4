//! The Redis client every Redis user of the gateway shares the habits of: a connection that
//! reconnects by itself, and requests that fail fast while Redis is away instead of waiting for
//! it to come back.

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
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

/// Connects to the Redis at `url`, failing when it cannot be reached now. The connection
/// reconnects by itself afterwards; use it through [`bounded`].
pub async fn connect(url: &str) -> anyhow::Result<ConnectionManager> {
    let client = client(url)?;
    // The address only: the URL may hold a password.
    let address = client.get_connection_info().addr().to_string();
    // Few, short reconnection attempts: a request waits for them only up to REQUEST_TIMEOUT,
    // and the next request after a failed attempt starts a new one.
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(REQUEST_TIMEOUT / 2))
        .set_response_timeout(Some(REQUEST_TIMEOUT))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500));
    let mut redis = tokio::time::timeout(
        REQUEST_TIMEOUT * 2,
        ConnectionManager::new_with_config(client, config),
    )
    .await
    .map_err(|_| anyhow::anyhow!("timed out"))
    .and_then(|connected| Ok(connected?))
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
/// a key may come twice, as SCAN promises no more.
pub async fn scan(
    redis: &mut ConnectionManager,
    pattern: &str,
    page: usize,
) -> Result<Vec<String>, Unavailable> {
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, found): (u64, Vec<String>) = bounded(
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(page)
                .query_async(redis),
        )
        .await?;
        keys.extend(found);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}
