//! Each API key's bucket of HTTP API calls (`rate_limits.api_key`): in this process, or in Redis
//! when several nodes share one, so that N nodes do not allow N times a key's rate.

use crate::auth::api_keys::ApiKeys;
use crate::infra::rate_limiter::{NoToken, Rate, RateLimiter};
use broker_config::RateLimits;

pub struct ApiKeyRates {
    limiter: RateLimiter,
    rate: Rate,
    /// Each key's bucket, by its place among the keys: named by the key's fingerprint, the
    /// same on every node, never by the key itself.
    buckets: Vec<String>,
}

impl ApiKeyRates {
    /// Buckets for `keys` in `limiter`, or `None` when the limits are off or an API key's calls
    /// are unlimited.
    pub fn new(config: &RateLimits, keys: &ApiKeys, limiter: RateLimiter) -> Option<Self> {
        let rate = config.api_key;
        (config.enabled && !rate.is_unlimited()).then(|| Self {
            limiter,
            rate: Rate {
                per_second: rate.per_second,
                burst: rate.burst,
            },
            buckets: (0..keys.count())
                .map(|index| format!("api:{}", keys.fingerprint(index)))
                .collect(),
        })
    }

    /// Takes a token for the key at `index`, or says how long until there is one.
    pub async fn take(&self, index: usize) -> Result<(), NoToken> {
        self.limiter
            .try_acquire(&self.buckets[index], self.rate)
            .await
    }
}
