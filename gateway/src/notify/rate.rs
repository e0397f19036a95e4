//! Pacing pushes to what a provider allows: a token bucket per channel and app (sends per
//! second), in this process, or in Redis when several nodes share the provider's limit. Daily
//! quotas count by the providers' day ([`crate::channel::provider_day`]).

use crate::infra::redis::bounded;
use crate::infra::token_bucket::TokenBucket;
use redis::aio::ConnectionManager;
use redis::Script;
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// Token buckets by name, each refilled at its rate and holding at most one second's worth.
pub enum RateLimiter {
    /// One node: buckets in memory.
    Local(LocalBuckets),
    /// Many nodes: one bucket per name in Redis, shared by all of them.
    Shared(ConnectionManager),
}

#[derive(Default)]
pub struct LocalBuckets {
    buckets: Mutex<HashMap<String, TokenBucket>>,
}

/// A token bucket in Redis, timed by Redis's clock so nodes' clocks do not matter. KEYS: the
/// bucket. ARGV: the rate per second. Returns 0 when a token was taken, else the milliseconds
/// until one will be there.
static TAKE_TOKEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local rate = tonumber(ARGV[1])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(bucket[1]) or rate
local at = tonumber(bucket[2]) or now
tokens = math.min(rate, tokens + math.max(0, now - at) * rate / 1000)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], 60000)
return wait
",
    )
});

impl RateLimiter {
    /// Takes a token from bucket `name` (refilled at `per_second`), or says how long until one.
    /// While Redis is away nothing is sent: the answer is to wait a little.
    pub async fn try_acquire(&self, name: &str, per_second: u32) -> Result<(), Duration> {
        match self {
            Self::Local(buckets) => buckets.try_acquire(name, per_second),
            Self::Shared(redis) => {
                let mut redis = redis.clone();
                let taken: Result<u64, _> = bounded(
                    TAKE_TOKEN
                        .key(format!("gw:rate:{name}"))
                        .arg(per_second.max(1))
                        .invoke_async(&mut redis),
                )
                .await;
                match taken {
                    Ok(0) => Ok(()),
                    Ok(wait_ms) => Err(Duration::from_millis(wait_ms)),
                    Err(e) => {
                        tracing::warn!("shared rate limit unavailable, holding pushes: {e}");
                        Err(Duration::from_millis(500))
                    }
                }
            }
        }
    }
}

impl LocalBuckets {
    /// Takes a token from bucket `name` (refilled at `per_second`), or says how long until one.
    pub fn try_acquire(&self, name: &str, per_second: u32) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        (buckets.entry(name.to_string()))
            .or_insert_with(|| TokenBucket::new(per_second, per_second, now))
            .take(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_rate_then_says_how_long_to_wait() {
        let limiter = LocalBuckets::default();
        for _ in 0..10 {
            assert!(limiter.try_acquire("wechat:main", 10).is_ok());
        }
        let wait = limiter.try_acquire("wechat:main", 10).unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert!(
            limiter.try_acquire("qiuqiu", 10).is_ok(),
            "buckets are separate"
        );
    }
}
