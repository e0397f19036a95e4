//! The embedded store's known devices: keyspace `known_devices`, key user 0x00 device, empty
//! value. Decided one at a time, so that a user's first device is decided once, and written
//! without an fsync of their own (a connect storm of new users would queue behind one fsync
//! each): the next fsync of the store's journal, at most a group commit away while messages
//! flow, makes them durable. A crash before it forgets the devices that came online since,
//! which then count as new again.

use super::layout::{failed, pair_key, prefix};
use super::EmbeddedStore;
use crate::infra::fjall::commit as commit_to_disk;
use crate::store::known_devices::{KnownDeviceStore, Standing};
use crate::store::StoreError;
use async_trait::async_trait;

#[async_trait]
impl KnownDeviceStore for EmbeddedStore {
    async fn standing(&self, user: &str, device: &str) -> Result<Standing, StoreError> {
        let (user, device) = (user.to_string(), device.to_string());
        self.read_with(move |spaces, _| {
            let key = pair_key(&user, &device);
            let _one_at_a_time = spaces
                .admitting
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if spaces.known_devices.contains_key(&key).map_err(failed)? {
                return Ok(Standing::Known);
            }
            if spaces.known_devices.prefix(prefix(&user)).next().is_some() {
                return Ok(Standing::New);
            }
            let mut batch = spaces.buffered_batch();
            batch.insert(&spaces.known_devices, key, []);
            commit_to_disk(batch).map_err(failed)?;
            Ok(Standing::First)
        })
        .await
    }

    async fn remember_device(&self, user: &str, device: &str) -> Result<(), StoreError> {
        let key = pair_key(user, device);
        self.read_with(move |spaces, _| {
            let mut batch = spaces.buffered_batch();
            batch.insert(&spaces.known_devices, key, []);
            commit_to_disk(batch).map_err(failed)
        })
        .await
    }
}
