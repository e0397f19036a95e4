//! Token buckets by name, in this process, or in Redis when several nodes share a limit: a
//! provider's sends per second (the notification worker), an API key's calls (the HTTP API).

use crate::infra::redis::bounded;
use crate::infra::redis::Redis;
use crate::infra::token_bucket::TokenBucket;
use redis::Script;
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

pub enum RateLimiter {
    /// One node: buckets in memory.
    Local(LocalBuckets),
    /// Many nodes: one bucket per name in Redis, shared by all of them.
    Shared(Redis),
}

/// A bucket's refill rate and size: `burst` at once, then `per_second` on average (each at
/// least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

/// Why no token was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoToken {
    /// The bucket is empty; a token is there after this long.
    Wait(Duration),
    /// The shared buckets cannot be reached (Redis is away): nothing is decided.
    Unavailable(String),
}

#[derive(Default)]
pub struct LocalBuckets {
    buckets: Mutex<HashMap<String, TokenBucket>>,
}

/// A token bucket in Redis, timed by Redis's clock so nodes' clocks do not matter. KEYS: the
/// bucket. ARGV: the rate per second and the burst. Returns 0 when a token was taken, else the
/// milliseconds until one will be there. A bucket left alone until it is full again expires.
static TAKE_TOKEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(bucket[1]) or burst
local at = tonumber(bucket[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return wait
",
    )
});

impl RateLimiter {
    /// Takes a token from bucket `name`, or says how long until one (or that the shared buckets
    /// cannot be reached).
    pub async fn try_acquire(&self, name: &str, rate: Rate) -> Result<(), NoToken> {
        match self {
            Self::Local(buckets) => buckets.try_acquire(name, rate).map_err(NoToken::Wait),
            Self::Shared(redis) => {
                let mut redis = redis.clone();
                let taken: Result<u64, _> = bounded(
                    TAKE_TOKEN
                        .key(format!("gw:rate:{name}"))
                        .arg(rate.per_second.max(1))
                        .arg(rate.burst.max(1))
                        .invoke_async(&mut redis),
                )
                .await;
                match taken {
                    Ok(0) => Ok(()),
                    Ok(wait_ms) => Err(NoToken::Wait(Duration::from_millis(wait_ms))),
                    Err(e) => Err(NoToken::Unavailable(e.0)),
                }
            }
        }
    }
}

impl LocalBuckets {
    /// Takes a token from bucket `name`, or says how long until one.
    pub fn try_acquire(&self, name: &str, rate: Rate) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        (buckets.entry(name.to_string()))
            .or_insert_with(|| TokenBucket::new(rate.per_second, rate.burst, now))
            .take(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_says_how_long_to_wait() {
        let limiter = LocalBuckets::default();
        let rate = Rate {
            per_second: 10,
            burst: 10,
        };
        for _ in 0..10 {
            assert!(limiter.try_acquire("wechat:main", rate).is_ok());
        }
        let wait = limiter.try_acquire("wechat:main", rate).unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert!(
            limiter.try_acquire("qiuqiu", rate).is_ok(),
            "buckets are separate"
        );
    }
}
