//! Each API key's bucket of HTTP API calls (`rate_limits.api_key`). The keys are fixed by the
//! configuration, so the buckets are too: one per key, by its place among them.

use crate::infra::token_bucket::TokenBucket;
use broker_config::RateLimits;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct ApiKeyRates(Vec<Mutex<TokenBucket>>);

impl ApiKeyRates {
    /// Buckets for `keys` keys, or `None` when the limits are off or the API key's unlimited.
    pub fn new(config: &RateLimits, keys: usize) -> Option<Self> {
        let (rate, now) = (config.api_key, Instant::now());
        let bucket = || Mutex::new(TokenBucket::new(rate.per_second, rate.burst, now));
        (config.enabled && !rate.is_unlimited())
            .then(|| Self((0..keys).map(|_| bucket()).collect()))
    }

    /// Takes a token for the key at `index`, or says how long until there is one.
    pub fn take(&self, index: usize) -> Result<(), Duration> {
        let mut bucket = self.0[index].lock().expect("API key bucket lock");
        bucket.take(Instant::now())
    }
}
