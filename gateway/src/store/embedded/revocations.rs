//! The embedded store's revocations: keyspace `revocations`, key user 0x00 (every device of the
//! user) or user 0x00 device, value the moment (ms, BE). They are few and read on every
//! connection, so all of them are also kept in memory: a connecting device learns whether its
//! token was revoked without a read on a blocking thread. Written durably at once.

use super::layout::{failed, pair_key, prefix, Keyspaces};
use super::EmbeddedStore;
use crate::infra::fjall::commit as commit_to_disk;
use crate::store::revocations::{RevocationStore, Revoked, LONGEST_TOKEN_LIFE};
use crate::store::StoreError;
use async_trait::async_trait;
use dashmap::DashMap;

/// Every revocation kept, by its key in the keyspace.
pub(super) type RevokedMoments = DashMap<Vec<u8>, u64>;

fn key_of(whose: Revoked<'_>) -> Vec<u8> {
    match whose {
        Revoked::User(user) => prefix(user),
        Revoked::Device { user, device } => pair_key(user, device),
    }
}

impl Keyspaces {
    /// Reads every revocation into memory, for [`Keyspaces::open`].
    pub(super) fn load_revocations(space: &fjall::Keyspace) -> fjall::Result<RevokedMoments> {
        let moments = RevokedMoments::new();
        for entry in space.iter() {
            let (key, value) = entry.into_inner()?;
            if let Ok(moment) = <[u8; 8]>::try_from(&*value) {
                moments.insert(key.to_vec(), u64::from_be_bytes(moment));
            }
        }
        Ok(moments)
    }

    /// Removes the revocations that refuse no living token any more.
    pub(super) fn forget_old_revocations(&self, now_ms: u64) -> Result<u64, StoreError> {
        let oldest_kept = now_ms.saturating_sub(LONGEST_TOKEN_LIFE.as_millis() as u64);
        let old: Vec<Vec<u8>> = (self.revoked.iter())
            .filter(|moment| *moment.value() < oldest_kept)
            .map(|moment| moment.key().clone())
            .collect();
        if old.is_empty() {
            return Ok(0);
        }
        let _one_at_a_time = self
            .revoking
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut batch = self.durable_batch();
        for key in &old {
            batch.remove(&self.revocations, key.as_slice());
        }
        commit_to_disk(batch).map_err(failed)?;
        for key in &old {
            self.revoked
                .remove_if(key, |_, moment| *moment < oldest_kept);
        }
        Ok(old.len() as u64)
    }

    /// The user's revocations, named for a footprint (`revocations/{user}`,
    /// `revocations/{user}/{device}`).
    pub(super) fn revocation_names(&self, user: &str) -> Vec<String> {
        let prefix = prefix(user);
        let mut names: Vec<String> = (self.revoked.iter())
            .filter(|moment| moment.key().starts_with(&prefix))
            .map(|moment| match &moment.key()[prefix.len()..] {
                [] => format!("revocations/{user}"),
                device => format!("revocations/{user}/{}", String::from_utf8_lossy(device)),
            })
            .collect();
        names.sort();
        names
    }
}

#[async_trait]
impl RevocationStore for EmbeddedStore {
    async fn revoke(&self, whose: Revoked<'_>, until_ms: u64) -> Result<(), StoreError> {
        let key = key_of(whose);
        self.read_with(move |spaces, _| {
            let _one_at_a_time = spaces
                .revoking
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let moment = (spaces.revoked.get(&key).map(|kept| *kept))
                .unwrap_or(0)
                .max(until_ms);
            let mut batch = spaces.durable_batch();
            batch.insert(&spaces.revocations, key.as_slice(), moment.to_be_bytes());
            commit_to_disk(batch).map_err(failed)?;
            spaces.revoked.insert(key, moment);
            Ok(())
        })
        .await
    }

    async fn revoked_until(&self, user: &str, device: &str) -> Result<u64, StoreError> {
        let moment = |key: Vec<u8>| self.spaces.revoked.get(&key).map_or(0, |kept| *kept);
        Ok(moment(prefix(user)).max(moment(pair_key(user, device))))
    }
}
