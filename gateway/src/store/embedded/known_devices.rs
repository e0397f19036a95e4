//! The embedded store's known devices: keyspace `known_devices`, key user 0x00 device, empty
//! value. All of them are also kept in memory, where a device's standing is decided (one user's
//! devices at a time, so that a user's first device is decided once): a connecting device
//! learns it without a read on a blocking thread. What is decided goes to the writer thread, to
//! be written with its next batch, and is answered once that batch's fsync made it durable: a
//! device let in as known, or approved, stays known after a crash.

use super::layout::{pair_of, Keyspaces};
use super::writer::Command;
use super::EmbeddedStore;
use crate::store::known_devices::{KnownDeviceStore, Standing};
use crate::store::StoreError;
use async_trait::async_trait;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use std::collections::HashSet;

/// Each user's known devices, as the keyspace holds them.
pub(super) type KnownInMemory = DashMap<String, HashSet<String>>;

impl Keyspaces {
    /// Reads every known device into memory, for [`Keyspaces::open`].
    pub(super) fn load_known_devices(space: &fjall::Keyspace) -> fjall::Result<KnownInMemory> {
        let known = KnownInMemory::new();
        for entry in space.iter() {
            let (user, device) = pair_of(&entry.key()?);
            known.entry(user).or_default().insert(device);
        }
        Ok(known)
    }
}

impl EmbeddedStore {
    /// Has the writer write `device` as one of `user`'s, once memory knows it, and waits until
    /// it is durable (and for room in the writer's queue: an import of many devices at start
    /// outruns it).
    async fn write_device(&self, user: &str, device: &str) -> Result<(), StoreError> {
        let (user, device) = (user.to_string(), device.to_string());
        self.write(|reply| Command::RememberDevice {
            user,
            device,
            reply,
        })
        .await
    }
}

#[async_trait]
impl KnownDeviceStore for EmbeddedStore {
    async fn standing(&self, user: &str, device: &str) -> Result<Standing, StoreError> {
        let standing = match self.spaces.known.entry(user.to_string()) {
            Entry::Occupied(devices) if devices.get().contains(device) => {
                return Ok(Standing::Known)
            }
            Entry::Occupied(devices) if !devices.get().is_empty() => return Ok(Standing::New),
            Entry::Occupied(mut devices) => {
                devices.get_mut().insert(device.to_string());
                Standing::First
            }
            Entry::Vacant(devices) => {
                devices.insert(HashSet::from([device.to_string()]));
                Standing::First
            }
        };
        self.write_device(user, device).await?;
        Ok(standing)
    }

    async fn remember_device(&self, user: &str, device: &str) -> Result<(), StoreError> {
        let added =
            (self.spaces.known.entry(user.to_string()).or_default()).insert(device.to_string());
        if added {
            self.write_device(user, device).await?;
        }
        Ok(())
    }
}
