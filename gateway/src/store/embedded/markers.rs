//! The embedded store's idempotency markers (see [`crate::store::IdempotencyKey`]): one per
//! entry an append with a key made, kept under the entry's log in `idempotency` and written in
//! the entry's journal batch, so that a crash keeps both or neither. `idempotency_expiry` lists
//! them by the end of their window, so that the sweeper reads only the expired ones.
//!
//! On disk a marker costs its key (the log, the scope and the client's key: some 60 bytes for a
//! 36-character key) twice, once in each keyspace, and 24 bytes plus the message id (36) of
//! value: about 200 bytes before compression. In memory it costs only its share of the
//! keyspaces' memtables until they are flushed.

use super::layout::{
    be_u64, decode_numbers_and_text, encode_numbers_and_text, failed, pair_key, prefix, Keyspaces,
};
use crate::store::StoreError;
use fjall::OwnedWriteBatch;

/// The entry an append with the key made in a log, and when the key's window ends there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Marker {
    /// Milliseconds since the Unix epoch, by the writer's clock.
    pub expiry: u64,
    pub seq: u64,
    pub hlc: u64,
    /// The message's id.
    pub id: String,
}

impl Marker {
    fn encode(&self) -> Vec<u8> {
        encode_numbers_and_text([self.expiry, self.seq, self.hlc], &self.id)
    }

    fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let ([expiry, seq, hlc], id) = decode_numbers_and_text(bytes)
            .ok_or_else(|| StoreError::Unreadable("an idempotency marker is damaged".into()))?;
        Ok(Self {
            expiry,
            seq,
            hlc,
            id,
        })
    }
}

/// Where `log`'s marker named `name` ([`crate::store::IdempotencyKey::marker`]) is kept.
pub(super) fn marker_key(log: &str, name: &str) -> Vec<u8> {
    pair_key(log, name)
}

fn expiry_key(expiry: u64, key: &[u8]) -> Vec<u8> {
    [&expiry.to_be_bytes()[..], key].concat()
}

impl Keyspaces {
    /// The marker kept under `key`, whether its window has ended or not.
    pub(super) fn marker(&self, key: &[u8]) -> Result<Option<Marker>, StoreError> {
        match self.idempotency.get(key).map_err(failed)? {
            Some(bytes) => Marker::decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Writes `marker` under `key` into `batch`, in place of `old` (one whose window ended).
    pub(super) fn mark(
        &self,
        batch: &mut OwnedWriteBatch,
        key: Vec<u8>,
        marker: &Marker,
        old: Option<&Marker>,
    ) {
        if let Some(old) = old {
            batch.remove(&self.idempotency_expiry, expiry_key(old.expiry, &key));
        }
        batch.insert(
            &self.idempotency_expiry,
            expiry_key(marker.expiry, &key),
            [],
        );
        batch.insert(&self.idempotency, key, marker.encode());
    }

    /// Removes every marker in `user`'s log into `batch`.
    pub(super) fn unmark(&self, batch: &mut OwnedWriteBatch, user: &str) -> Result<(), StoreError> {
        for entry in self.idempotency.prefix(prefix(user)) {
            let (key, value) = entry.into_inner().map_err(failed)?;
            let expiry = Marker::decode(&value)?.expiry;
            batch.remove(&self.idempotency_expiry, expiry_key(expiry, &key));
            batch.remove(&self.idempotency, key);
        }
        Ok(())
    }

    /// Removes into `batch` the markers whose window ended by `now_ms`; returns how many.
    pub(super) fn sweep_markers(
        &self,
        batch: &mut OwnedWriteBatch,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let mut removed = 0;
        let ended = now_ms.saturating_add(1).to_be_bytes();
        for entry in self.idempotency_expiry.range(..ended) {
            let index = entry.key().map_err(failed)?;
            let (expiry, key) = index.split_at(8);
            // Only the marker this entry indexes: never one written under the key since.
            if self
                .marker(key)?
                .is_some_and(|m| m.expiry == be_u64(expiry))
            {
                batch.remove(&self.idempotency, key);
                removed += 1;
            }
            batch.remove(&self.idempotency_expiry, index);
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_reads_back_as_written() {
        let marker = Marker {
            expiry: 1_700_000_000_000,
            seq: 42,
            hlc: 7 << 16,
            id: "0192-abc".into(),
        };
        assert_eq!(Marker::decode(&marker.encode()).unwrap(), marker);
        assert!(Marker::decode(&[0; 23]).is_err());
    }
}
