//! The embedded ledger's preferences: each user's quiet hours, consent and bindings (sealed:
//! they hold openids), read through the
//! [`PreferenceCache`](crate::notify::ledger::preference_cache::PreferenceCache).

use super::spaces::{failed, from_json, joined, to_json, Spaces};
use crate::infra::cipher::KeyRing;
use crate::notify::model::Preferences;
use crate::store::StoreError;
use fjall::OwnedWriteBatch;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The kinds of preference, each under its own key.
const KINDS: [&str; 3] = ["quiet", "consent", "bindings"];

impl Spaces {
    fn pref<T: DeserializeOwned>(
        &self,
        kind: &str,
        user: &str,
        keys: Option<&KeyRing>,
    ) -> Result<Option<T>, StoreError> {
        let key = joined(kind, user);
        let Some(bytes) = self.prefs.get(&key).map_err(failed)? else {
            return Ok(None);
        };
        let plain = match keys {
            Some(keys) => keys
                .open(&bytes, &key)
                .map_err(|e| StoreError::Unreadable(format!("{kind} of {user}: {e}")))?,
            None => bytes.to_vec(),
        };
        from_json(&plain, kind).map(Some)
    }

    /// The user's preferences as stored.
    pub fn read_preferences(&self, keys: &KeyRing, user: &str) -> Result<Preferences, StoreError> {
        Ok(Preferences {
            quiet_hours: self.pref("quiet", user, None)?,
            consent: self.pref("consent", user, None)?.unwrap_or_default(),
            bindings: self.pref("bindings", user, Some(keys))?.unwrap_or_default(),
        })
    }

    /// Writes one kind of the user's preferences (`sealed` with `keys` when given) and gives the
    /// cache the whole new value. Under the write lock.
    pub fn set_pref(
        &self,
        keys: &KeyRing,
        kind: &str,
        user: &str,
        value: &impl Serialize,
        sealed: bool,
    ) -> Result<(), StoreError> {
        let key = joined(kind, user);
        let bytes = match sealed {
            true => keys.seal(&to_json(value), &key),
            false => to_json(value),
        };
        let mut batch = self.batch();
        batch.insert(&self.prefs, key, bytes);
        self.commit(batch)?;
        let written = self.read_preferences(keys, user)?;
        self.preferences.put(user, written);
        Ok(())
    }

    /// Adds to `batch` the removal of the user's preferences; the cache forgets them once
    /// [`Spaces::forgot_user_preferences`] is called after the commit.
    pub fn forget_user_preferences(&self, batch: &mut OwnedWriteBatch, user: &str) {
        for kind in KINDS {
            batch.remove(&self.prefs, joined(kind, user));
        }
    }

    /// After the removal of the user's preferences is committed.
    pub fn forgot_user_preferences(&self, user: &str) {
        self.preferences.put(user, Preferences::default());
    }
}
