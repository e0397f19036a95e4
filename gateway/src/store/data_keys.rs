//! Each user's data key (see [`crate::infra::data_key`]): the entries of the user's log are
//! sealed under it, it is stored only wrapped under `store.encryption_keys`, and deleting the
//! user destroys it, so no copy of those entries left in LSM segments, journals, Redis
//! append-only files or backups can be read again. Rotating `store.encryption_keys` re-wraps
//! the data keys (the sweeper does it) and rewrites no entry.
//!
//! Keys are held unwrapped for sealing, up to `store.data_key_cache`. A held key can outlive
//! its user on a node that did not delete the user: the store refuses to append an entry sealed
//! under a key that is no longer the user's, and drops the held key, so the sender's retry is
//! sealed under the new one. Reads always take the stored key.

use super::StoreError;
use crate::infra::cipher::KeyRing;
use crate::infra::data_key::DataKey;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

pub struct DataKeys {
    ring: Arc<KeyRing>,
    held: RwLock<HashMap<String, Arc<DataKey>>>,
    capacity: usize,
}

impl DataKeys {
    pub fn new(ring: Arc<KeyRing>, capacity: usize) -> Self {
        Self {
            ring,
            held: RwLock::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// The configured keys, which wrap the data keys.
    pub fn ring(&self) -> &Arc<KeyRing> {
        &self.ring
    }

    pub fn held(&self, user: &str) -> Option<Arc<DataKey>> {
        let held = self.held.read().unwrap_or_else(|p| p.into_inner());
        held.get(user).cloned()
    }

    /// Holds `key` as `user`'s: when the cache is full, the keys held so far are dropped first.
    pub fn hold(&self, user: &str, key: Arc<DataKey>) {
        let mut held = self.lock();
        if held.len() >= self.capacity && !held.contains_key(user) {
            held.clear();
        }
        held.insert(user.to_string(), key);
    }

    /// Drops the key held for `user`: the user was deleted, or the store holds another key.
    pub fn drop_held(&self, user: &str) {
        self.lock().remove(user);
    }

    /// Drops every held key: a failed commit may not have stored the ones made for it.
    pub fn drop_all_held(&self) {
        self.lock().clear();
    }

    /// A fresh key for `user`, and what to store of it.
    pub fn generate(&self, user: &str) -> (Arc<DataKey>, Vec<u8>) {
        let key = DataKey::generate();
        let wrapped = key.wrap(&self.ring, user);
        (Arc::new(key), wrapped)
    }

    /// The key `wrapped` holds for `user`.
    pub fn unwrap(&self, user: &str, wrapped: &[u8]) -> Result<Arc<DataKey>, StoreError> {
        DataKey::unwrap(&self.ring, user, wrapped)
            .map(Arc::new)
            .map_err(|e| StoreError::Unreadable(format!("the data key of {user}: {e}")))
    }

    /// `wrapped` wrapped again under the ring's sealing key, when it is under an older one.
    pub fn rewrapped(&self, user: &str, wrapped: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if DataKey::is_wrapped_under_active_key(&self.ring, wrapped) {
            return Ok(None);
        }
        Ok(Some(self.unwrap(user, wrapped)?.wrap(&self.ring, user)))
    }

    fn lock(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<DataKey>>> {
        self.held.write().unwrap_or_else(|p| p.into_inner())
    }
}
