//! Users' preferences in memory, for the embedded ledger: routing reads them for every
//! notification and the worker for every push, which from disk is three lookups and a
//! decryption each time.
//!
//! Correct without versions because of one rule: a write puts the user's whole new value in,
//! under the ledger's write lock, while a read only fills an entry that is absent. A read that
//! raced a write (it read the old value from disk before the write) can therefore never replace
//! what the write put in. Deleting a user puts the empty preferences in, by the same rule.
//!
//! Bounded: once `capacity` users are held, nothing is added; users not held are read from disk
//! every time, and their writes are not cached either (so no stale entry can appear). Entries are
//! never evicted, so the rule above holds for as long as the process lives.

use crate::notify::model::Preferences;
use dashmap::DashMap;
use std::sync::Arc;

/// Each value is shared with the readers (routing reads a batch's users at once), not copied.
pub struct PreferenceCache {
    users: DashMap<String, Arc<Preferences>>,
    capacity: usize,
}

impl PreferenceCache {
    /// Holds up to `capacity` users; 0 caches nothing.
    pub fn new(capacity: usize) -> Self {
        Self {
            users: DashMap::new(),
            capacity,
        }
    }

    pub fn get(&self, user: &str) -> Option<Arc<Preferences>> {
        self.users.get(user).map(|entry| entry.clone())
    }

    /// After a read from disk: fills the entry only if it is absent (and there is room).
    pub fn fill(&self, user: &str, read: Arc<Preferences>) {
        if self.users.len() < self.capacity {
            self.users.entry(user.to_owned()).or_insert(read);
        }
    }

    /// After a write, under the ledger's write lock: the user's whole new value replaces what
    /// is held, or is added if there is room.
    pub fn put(&self, user: &str, written: Preferences) {
        let written = Arc::new(written);
        if let Some(mut held) = self.users.get_mut(user) {
            *held = written;
        } else if self.users.len() < self.capacity {
            self.users.insert(user.to_owned(), written);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::notification::Consent;

    fn consenting(wechat: bool) -> Preferences {
        Preferences {
            consent: Consent {
                wechat,
                qiuqiu: false,
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_late_read_never_replaces_a_write() {
        let cache = PreferenceCache::new(10);
        // A write lands while a read of the old value is on its way.
        cache.put("alice", consenting(false));
        cache.fill("alice", Arc::new(consenting(true)));
        assert_eq!(cache.get("alice"), Some(Arc::new(consenting(false))));
        // And the other way round: the write replaces what the read filled.
        cache.fill("bob", Arc::new(consenting(true)));
        cache.put("bob", consenting(false));
        assert_eq!(cache.get("bob"), Some(Arc::new(consenting(false))));
    }

    #[test]
    fn a_full_cache_adds_nothing_and_zero_caches_nothing() {
        let cache = PreferenceCache::new(1);
        cache.fill("alice", Arc::new(consenting(true)));
        cache.fill("bob", Arc::new(consenting(true)));
        cache.put("carol", consenting(true));
        assert!(cache.get("bob").is_none() && cache.get("carol").is_none());
        cache.put("alice", consenting(false));
        assert_eq!(
            cache.get("alice"),
            Some(Arc::new(consenting(false))),
            "held ones still change"
        );
        let off = PreferenceCache::new(0);
        off.put("alice", consenting(true));
        assert!(off.get("alice").is_none());
    }
}
