//! Provider access tokens, one per app, shared by every worker of a node and by every node.
//!
//! Why shared: WeChat's token endpoints have a small daily quota, and a newly issued token may
//! invalidate the previous one (after a short overlap), so nodes that each kept their own token
//! would waste the quota and knock each other's tokens out. The [`TokenCache`] is where the one
//! token lives ([`RedisTokenCache`] across nodes, [`LocalTokenCache`] for a single node);
//! [`Tokens`] fetches a new one when needed, one fetch at a time per app within a node.
//!
//! Nodes may still fetch at the same moment; that is harmless, as WeChat's `stable_token` (without
//! `force_refresh`) answers the same token to all of them, and 球球 keeps older tokens working.

use super::Outcome;
use crate::infra::redis::bounded;
use crate::infra::redis::Redis;
use crate::infra::time::millis_of;
use crate::store::StoreError;
use async_trait::async_trait;
use protocol::notification::Provider;
use redis::Script;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A token and its times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedToken {
    pub value: String,
    /// When the provider stops accepting it; the cache forgets it then.
    pub expires_at: SystemTime,
    /// From when a new token should be fetched before a send.
    pub refresh_at: SystemTime,
}

#[async_trait]
pub trait TokenCache: Send + Sync {
    /// The app's token, unless none is cached or it has expired.
    async fn get(&self, provider: Provider, app: &str) -> Result<Option<CachedToken>, StoreError>;

    /// Replaces the app's token.
    async fn put(
        &self,
        provider: Provider,
        app: &str,
        token: &CachedToken,
    ) -> Result<(), StoreError>;

    /// Forgets the app's token if it is still `token`, and tells whether it did. A worker whose
    /// token was rejected must not throw away a newer one that another worker (or node) has
    /// fetched meanwhile.
    async fn expire_if_still(
        &self,
        provider: Provider,
        app: &str,
        token: &str,
    ) -> Result<bool, StoreError>;
}

/// Tokens in this process only: for a gateway without Redis (one node).
#[derive(Debug, Default)]
pub struct LocalTokenCache {
    tokens: Mutex<HashMap<(Provider, String), CachedToken>>,
}

impl LocalTokenCache {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl TokenCache for LocalTokenCache {
    async fn get(&self, provider: Provider, app: &str) -> Result<Option<CachedToken>, StoreError> {
        let now = SystemTime::now();
        Ok(lock(&self.tokens)
            .get(&(provider, app.to_owned()))
            .filter(|token| token.expires_at > now)
            .cloned())
    }

    async fn put(
        &self,
        provider: Provider,
        app: &str,
        token: &CachedToken,
    ) -> Result<(), StoreError> {
        lock(&self.tokens).insert((provider, app.to_owned()), token.clone());
        Ok(())
    }

    async fn expire_if_still(
        &self,
        provider: Provider,
        app: &str,
        token: &str,
    ) -> Result<bool, StoreError> {
        let mut tokens = lock(&self.tokens);
        let key = (provider, app.to_owned());
        let still = tokens.get(&key).is_some_and(|cached| cached.value == token);
        if still {
            tokens.remove(&key);
        }
        Ok(still)
    }
}

/// Tokens in Redis, shared by all nodes: a hash `gw:token:{provider}:{app}` with fields `token`
/// and `refresh_at` (Unix ms), which Redis deletes when the token expires (`PEXPIRE`).
///
/// Tokens are kept in clear text: each lets its holder send as the app until it expires (hours),
/// which is one more reason that Redis must not be reachable from outside.
#[derive(Clone)]
pub struct RedisTokenCache {
    redis: Redis,
}

/// Deletes the token hash if it still holds the token. KEYS: the hash. ARGV: the token.
static EXPIRE_IF_STILL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
",
    )
});

impl RedisTokenCache {
    /// Over a connection from [`crate::infra::redis::connect`]; every request is bounded by
    /// its `REQUEST_TIMEOUT`.
    pub fn new(redis: Redis) -> Self {
        Self { redis }
    }

    fn key(provider: Provider, app: &str) -> String {
        format!("gw:token:{}:{app}", provider.as_str())
    }
}

#[async_trait]
impl TokenCache for RedisTokenCache {
    async fn get(&self, provider: Provider, app: &str) -> Result<Option<CachedToken>, StoreError> {
        let key = Self::key(provider, app);
        let ((token, refresh_at), ttl_ms): ((Option<String>, Option<u64>), i64) = bounded(
            redis::pipe()
                .cmd("HMGET")
                .arg(&key)
                .arg(&["token", "refresh_at"])
                .pttl(&key)
                .query_async(&mut self.redis.clone()),
        )
        .await?;
        // PTTL is negative when the key is gone (it may expire between the two commands) or has
        // no expiry (which `put` never leaves): either way there is no usable token.
        let (Some(value), Some(refresh_at), Ok(ttl_ms)) =
            (token, refresh_at, u64::try_from(ttl_ms))
        else {
            return Ok(None);
        };
        Ok(Some(CachedToken {
            value,
            expires_at: SystemTime::now() + Duration::from_millis(ttl_ms),
            refresh_at: UNIX_EPOCH + Duration::from_millis(refresh_at),
        }))
    }

    async fn put(
        &self,
        provider: Provider,
        app: &str,
        token: &CachedToken,
    ) -> Result<(), StoreError> {
        let ttl = token
            .expires_at
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        if ttl_ms == 0 {
            return Ok(());
        }
        let key = Self::key(provider, app);
        bounded(
            redis::pipe()
                .atomic()
                .del(&key)
                .ignore()
                .hset_multiple(
                    &key,
                    &[
                        ("token", token.value.clone()),
                        ("refresh_at", millis_of(token.refresh_at).to_string()),
                    ],
                )
                .ignore()
                .pexpire(&key, ttl_ms as i64)
                .ignore()
                .exec_async(&mut self.redis.clone()),
        )
        .await?;
        Ok(())
    }

    async fn expire_if_still(
        &self,
        provider: Provider,
        app: &str,
        token: &str,
    ) -> Result<bool, StoreError> {
        let deleted: i64 = bounded(
            EXPIRE_IF_STILL
                .key(Self::key(provider, app))
                .arg(token)
                .invoke_async(&mut self.redis.clone()),
        )
        .await?;
        Ok(deleted == 1)
    }
}

/// A token just fetched from the provider, and how long the provider says it lives.
pub(super) struct FreshToken {
    pub value: String,
    pub lives: Duration,
}

/// One provider's tokens: the shared cache, early refresh, and one fetch at a time per app.
pub(super) struct Tokens {
    provider: Provider,
    cache: Arc<dyn TokenCache>,
    refresh_early: Duration,
    /// One lock per app, held while fetching, so that a burst of sends that all find the token
    /// stale makes one fetch, and the others wait for it and take the token it got.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The last token this node saw per app, used only while the shared cache cannot be read:
    /// without it, every send would fetch a token during a Redis outage and use up the
    /// provider's token quota.
    last_seen: Mutex<HashMap<String, CachedToken>>,
}

impl Tokens {
    pub fn new(provider: Provider, cache: Arc<dyn TokenCache>, refresh_early: Duration) -> Self {
        Self {
            provider,
            cache,
            refresh_early,
            fetching: Mutex::default(),
            last_seen: Mutex::default(),
        }
    }

    /// A token for `app` that is not due for refresh, from the cache or else from `fetch`.
    /// When `fetch` fails, a token that is due but still valid is used; without one, `fetch`'s
    /// failure is the send's outcome.
    pub async fn get<F, Fut>(&self, app: &str, fetch: F) -> Result<String, Outcome>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<FreshToken, Outcome>>,
    {
        if let Some(token) = self.valid(app).await.filter(not_due) {
            return Ok(token.value);
        }
        let flight = lock(&self.fetching)
            .entry(app.to_owned())
            .or_default()
            .clone();
        let _fetching = flight.lock().await;
        let valid = self.valid(app).await;
        if let Some(token) = valid.clone().filter(not_due) {
            return Ok(token.value);
        }
        let fresh = match fetch().await {
            Ok(fresh) => fresh,
            Err(outcome) => {
                return match valid {
                    Some(token) => {
                        tracing::warn!(
                            provider = self.provider.as_str(),
                            app,
                            ?outcome,
                            "cannot refresh the token early"
                        );
                        Ok(token.value)
                    }
                    None => Err(outcome),
                };
            }
        };
        let now = SystemTime::now();
        let expires_at = now + fresh.lives;
        // Due for refresh `refresh_early` before expiry, but never in the first half of the
        // token's life: WeChat's `stable_token` hands out the same token until it has expired,
        // so a token fetched early comes back with less life left, and a fixed margin would
        // then fetch on every send.
        let token = CachedToken {
            value: fresh.value,
            expires_at,
            refresh_at: expires_at - self.refresh_early.min(fresh.lives / 2),
        };
        if let Err(e) = self.cache.put(self.provider, app, &token).await {
            tracing::warn!(
                provider = self.provider.as_str(),
                app,
                "cannot share the new token: {e}"
            );
        }
        lock(&self.last_seen).insert(app.to_owned(), token.clone());
        Ok(token.value)
    }

    /// Forgets `token` after the provider rejected it, unless it was replaced meanwhile, so
    /// that the next [`Tokens::get`] fetches a new one.
    pub async fn reject(&self, app: &str, token: &str) {
        {
            let mut last_seen = lock(&self.last_seen);
            if last_seen.get(app).is_some_and(|seen| seen.value == token) {
                last_seen.remove(app);
            }
        }
        if let Err(e) = self.cache.expire_if_still(self.provider, app, token).await {
            tracing::warn!(
                provider = self.provider.as_str(),
                app,
                "cannot expire a rejected token: {e}"
            );
        }
    }

    /// The cached token unless it has expired.
    async fn valid(&self, app: &str) -> Option<CachedToken> {
        let cached = match self.cache.get(self.provider, app).await {
            Ok(cached) => {
                let mut last_seen = lock(&self.last_seen);
                match &cached {
                    Some(token) => last_seen.insert(app.to_owned(), token.clone()),
                    None => last_seen.remove(app),
                };
                cached
            }
            Err(e) => {
                tracing::warn!(
                    provider = self.provider.as_str(),
                    app,
                    "token cache unavailable: {e}"
                );
                lock(&self.last_seen).get(app).cloned()
            }
        };
        cached.filter(|token| SystemTime::now() < token.expires_at)
    }
}

fn not_due(token: &CachedToken) -> bool {
    SystemTime::now() < token.refresh_at
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(value: &str, lives: Duration) -> Result<FreshToken, Outcome> {
        Ok(FreshToken {
            value: value.into(),
            lives,
        })
    }

    fn busy() -> Result<FreshToken, Outcome> {
        Err(Outcome::Retry {
            code: "-1".into(),
            after: None,
        })
    }

    #[tokio::test]
    async fn a_token_due_for_refresh_is_still_used_while_the_refresh_fails() {
        let cache = Arc::new(LocalTokenCache::new());
        let tokens = Tokens::new(Provider::Wechat, cache.clone(), Duration::from_secs(300));
        let hour = Duration::from_secs(3600);
        assert_eq!(
            tokens.get("app", || async { fresh("t1", hour) }).await,
            Ok("t1".into())
        );
        let cached = cache.get(Provider::Wechat, "app").await.unwrap().unwrap();
        assert_eq!(
            cached.expires_at.duration_since(cached.refresh_at).unwrap(),
            Duration::from_secs(300)
        );
        let unused = || async { panic!("the cached token is not due") };
        assert_eq!(tokens.get("app", unused).await, Ok("t1".into()));

        // Due, still valid: the refresh fails, the old token serves.
        let due = CachedToken {
            refresh_at: SystemTime::now(),
            ..cached
        };
        cache.put(Provider::Wechat, "app", &due).await.unwrap();
        assert_eq!(
            tokens.get("app", || async { busy() }).await,
            Ok("t1".into())
        );

        // Rejected: nothing valid is left, so the failure is the answer.
        tokens.reject("app", "t1").await;
        assert!(tokens.get("app", || async { busy() }).await.is_err());
    }

    #[tokio::test]
    async fn a_short_lived_token_is_refreshed_in_its_second_half_only() {
        let cache = Arc::new(LocalTokenCache::new());
        let tokens = Tokens::new(Provider::Wechat, cache.clone(), Duration::from_secs(300));
        let lives = Duration::from_secs(240);
        tokens
            .get("app", || async { fresh("t1", lives) })
            .await
            .unwrap();
        let cached = cache.get(Provider::Wechat, "app").await.unwrap().unwrap();
        assert_eq!(
            cached.expires_at.duration_since(cached.refresh_at).unwrap(),
            lives / 2
        );
    }
}
