//! The embedded ledger's records: what was decided and done for each notification, sealed (they
//! hold its text), and the index from a provider's message id back to its notification.

use super::spaces::{failed, from_json, to_json, Spaces};
use crate::infra::cipher::KeyRing;
use crate::notify::ledger::{provider_entry, read_provider_entry, NewRecord};
use crate::store::StoreError;
use fjall::OwnedWriteBatch;
use protocol::notification::{Provider, Record, Route, RouteState};
use std::ops::Bound;

fn open_record(keys: &KeyRing, id: &str, sealed: &[u8]) -> Result<Record, StoreError> {
    let plain = keys
        .open(sealed, id.as_bytes())
        .map_err(|e| StoreError::Unreadable(format!("notification {id}: {e}")))?;
    from_json(&plain, "notification record")
}

/// A record's key and its sealed JSON (it holds the notification's text).
fn sealed_record(keys: &KeyRing, record: &Record) -> (String, Vec<u8>) {
    let id = &record.notification.id;
    (id.clone(), keys.seal(&to_json(record), id.as_bytes()))
}

/// Notification ids are UUIDv7 (`into_notification`), whose text begins with the creation time
/// in milliseconds as 12 hex digits (`xxxxxxxx-xxxx-7…`): every id made before `ms` sorts
/// before this prefix.
pub(super) fn id_bound(ms: u64) -> String {
    format!("{:08x}-{:04x}", (ms >> 16) & 0xffff_ffff, ms & 0xffff)
}

/// A record's key in its user's index.
fn user_record_key(user: &str, id: &str) -> Vec<u8> {
    [user.as_bytes(), b"\0", id.as_bytes()].concat()
}

/// New records and their jobs in one batch, sealed and filled (the costly part, done without
/// the write lock), with the earliest time one of the jobs is due.
pub(super) struct FilledBatch {
    pub batch: OwnedWriteBatch,
    pub earliest_due: u64,
}

impl Spaces {
    pub fn record(&self, keys: &KeyRing, id: &str) -> Result<Option<Record>, StoreError> {
        let Some(sealed) = self.records.get(id).map_err(failed)? else {
            return Ok(None);
        };
        open_record(keys, id, &sealed).map(Some)
    }

    pub fn put_record(&self, batch: &mut OwnedWriteBatch, keys: &KeyRing, record: &Record) {
        let (id, sealed) = sealed_record(keys, record);
        batch.insert(
            &self.user_records,
            user_record_key(&record.notification.user, &id),
            [],
        );
        batch.insert(&self.records, id, sealed);
    }

    /// Adds to `batch` the removal of a record, its entry in its user's index and its provider
    /// ids.
    fn remove_record(&self, batch: &mut OwnedWriteBatch, record: &Record) {
        let id = &record.notification.id;
        for provider_id in record
            .routes
            .values()
            .filter_map(|s| s.provider_id.as_ref())
        {
            batch.remove(&self.provider, provider_id.as_str());
        }
        batch.remove(
            &self.user_records,
            user_record_key(&record.notification.user, id),
        );
        batch.remove(&self.records, id.as_str());
    }

    /// Adds to `batch` the removal of every record of a deleted user and their provider ids.
    pub fn forget_user_records(
        &self,
        batch: &mut OwnedWriteBatch,
        keys: &KeyRing,
        user: &str,
    ) -> Result<(), StoreError> {
        let prefix = user_record_key(user, "");
        for entry in self.user_records.prefix(&prefix) {
            let key = entry.key().map_err(failed)?;
            let id = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            match self.record(keys, &id) {
                Ok(Some(record)) => self.remove_record(batch, &record),
                // Unreadable (sealed with a key no longer configured): its provider ids cannot
                // be found, but the record goes.
                Ok(None) | Err(_) => batch.remove(&self.records, id.as_str()),
            }
            batch.remove(&self.user_records, key);
        }
        Ok(())
    }

    /// Seals new records and queues their jobs into one batch. Nothing else writes these keys
    /// (records and jobs are new), so this needs no lock; committing it does.
    pub fn fill(&self, keys: &KeyRing, records: &[NewRecord]) -> FilledBatch {
        let mut batch = self.batch();
        let mut earliest_due = u64::MAX;
        for new in records {
            self.put_record(&mut batch, keys, &new.record);
            for (job, due) in &new.jobs {
                self.put_job(&mut batch, job, *due);
                earliest_due = earliest_due.min(*due);
            }
        }
        FilledBatch {
            batch,
            earliest_due,
        }
    }

    /// Sets one route's state of a record. Under the write lock.
    pub fn set_route(
        &self,
        keys: &KeyRing,
        id: &str,
        route: Route,
        state: RouteState,
    ) -> Result<(), StoreError> {
        let Some(mut record) = self.record(keys, id)? else {
            return Ok(());
        };
        record.routes.insert(route, state);
        let mut batch = self.batch();
        self.put_record(&mut batch, keys, &record);
        self.commit(batch)
    }

    pub fn index_provider_id(
        &self,
        provider_id: &str,
        notification: &str,
        provider: Provider,
    ) -> Result<(), StoreError> {
        let mut batch = self.batch();
        let entry = provider_entry(notification, provider);
        batch.insert(&self.provider, provider_id, entry);
        self.commit(batch)
    }

    pub fn by_provider_id(
        &self,
        provider_id: &str,
    ) -> Result<Option<(String, Provider)>, StoreError> {
        match self.provider.get(provider_id).map_err(failed)? {
            Some(entry) => read_provider_entry(&entry).map(Some),
            None => Ok(None),
        }
    }

    /// Removes the settled records among up to `limit` made before `before` (a notification
    /// id bound, see [`id_bound`]), after the id `from`, with their provider ids; returns how
    /// many it removed and the id to go on from, if there may be more. Under the write lock.
    pub fn sweep_records(
        &self,
        keys: &KeyRing,
        from: Option<Vec<u8>>,
        before: &str,
        limit: usize,
    ) -> Result<(u64, Option<Vec<u8>>), StoreError> {
        let (mut batch, mut seen, mut removed, mut last) = (self.batch(), 0, 0, None);
        let lower = from.map_or(Bound::Unbounded, Bound::Excluded);
        let range = (lower, Bound::Excluded(before.as_bytes().to_vec()));
        for entry in self.records.range(range).take(limit) {
            let (id, sealed) = entry.into_inner().map_err(failed)?;
            seen += 1;
            last = Some(id.to_vec());
            let id = String::from_utf8_lossy(&id).into_owned();
            // One that cannot be read (sealed with a key no longer configured) is left alone.
            let Ok(record) = open_record(keys, &id, &sealed) else {
                continue;
            };
            if record.routes.values().all(|state| state.status.is_final()) {
                self.remove_record(&mut batch, &record);
                removed += 1;
            }
        }
        self.commit(batch)?;
        Ok((removed, last.filter(|_| seen == limit)))
    }
}
