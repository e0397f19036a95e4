//! The Redis store's revocations: `gw:{user}:revoked`, a hash of `*` (every device of the user)
//! and devices → the moment (ms) up to which their tokens are refused. The hash expires
//! [`LONGEST_TOKEN_LIFE`] after its latest revocation: every token that any of its fields
//! refuses was issued before that revocation, so has expired by then. A connecting device costs
//! one `HMGET`.

use super::keys::UserKeys;
use super::RedisStore;
use crate::infra::redis::bounded;
use crate::store::revocations::{RevocationStore, Revoked, LONGEST_TOKEN_LIFE};
use crate::store::StoreError;
use async_trait::async_trait;
use redis::Script;
use std::sync::LazyLock;

/// The field of a revocation of every device (device ids never hold `*`).
pub(super) const WHOLE_USER: &str = "*";

/// Moves a revocation forward, never back, and keeps the hash until every token it refuses has
/// expired. KEYS: revoked. ARGV: field, moment, how long to keep (ms).
static REVOKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local kept = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > kept then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 0
",
    )
});

#[async_trait]
impl RevocationStore for RedisStore {
    async fn revoke(&self, whose: Revoked<'_>, until_ms: u64) -> Result<(), StoreError> {
        let (user, field) = match whose {
            Revoked::User(user) => (user, WHOLE_USER),
            Revoked::Device { user, device } => (user, device),
        };
        let _: i64 = bounded(
            REVOKE
                .key(UserKeys::of(user).revoked)
                .arg(field)
                .arg(until_ms)
                .arg(LONGEST_TOKEN_LIFE.as_millis() as u64)
                .invoke_async(&mut self.redis.clone()),
        )
        .await?;
        Ok(())
    }

    async fn revoked_until(&self, user: &str, device: &str) -> Result<u64, StoreError> {
        let moments: Vec<Option<u64>> = bounded(
            redis::cmd("HMGET")
                .arg(UserKeys::of(user).revoked)
                .arg(WHOLE_USER)
                .arg(device)
                .query_async(&mut self.redis.clone()),
        )
        .await?;
        Ok(moments.into_iter().flatten().max().unwrap_or(0))
    }
}
