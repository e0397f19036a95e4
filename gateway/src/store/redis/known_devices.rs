//! The Redis store's known devices: `gw:{user}:devices`, the set of the user's devices. One
//! script decides a device's standing, so that a user's first device is decided once across
//! the nodes.

use super::keys::UserKeys;
use super::RedisStore;
use crate::infra::redis::bounded;
use crate::store::known_devices::{KnownDeviceStore, Standing};
use crate::store::StoreError;
use async_trait::async_trait;
use redis::Script;
use std::sync::LazyLock;

/// KEYS: the user's devices. ARGV: the device. Returns 0 for the first device (now known), 1
/// for a known one, 2 for a new one (not added).
static STANDING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then
  return 1
end
if redis.call('SCARD', KEYS[1]) > 0 then
  return 2
end
redis.call('SADD', KEYS[1], ARGV[1])
return 0
",
    )
});

#[async_trait]
impl KnownDeviceStore for RedisStore {
    async fn standing(&self, user: &str, device: &str) -> Result<Standing, StoreError> {
        let standing: u8 = bounded(
            STANDING
                .key(UserKeys::of(user).devices)
                .arg(device)
                .invoke_async(&mut self.redis.clone()),
        )
        .await?;
        Ok(match standing {
            0 => Standing::First,
            1 => Standing::Known,
            _ => Standing::New,
        })
    }

    async fn remember_device(&self, user: &str, device: &str) -> Result<(), StoreError> {
        let _: i64 = bounded(
            redis::cmd("SADD")
                .arg(UserKeys::of(user).devices)
                .arg(device)
                .query_async(&mut self.redis.clone()),
        )
        .await?;
        Ok(())
    }
}
