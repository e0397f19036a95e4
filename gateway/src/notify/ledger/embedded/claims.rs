//! The embedded ledger's dedup claims: held in memory ([`ClaimIndex`]) over an append-only
//! journal keyed by expiry, so a claim is one cheap insert and no lookup in the LSM tree.

use super::spaces::{be_u64, failed, joined, Spaces};
use crate::notify::ledger::claim_index::{claim_digest, ClaimDigest};
use crate::notify::ledger::DedupClaim;
use crate::store::StoreError;
use fjall::OwnedWriteBatch;

/// A claim's entry in the `claims` journal: its key, and its value (claimant, user).
fn claim_entry(expiry: u64, digest: &ClaimDigest, by: &str, user: &str) -> (Vec<u8>, Vec<u8>) {
    let key = claim_key(expiry, digest);
    (key, joined(by, user))
}

fn claim_key(expiry: u64, digest: &ClaimDigest) -> Vec<u8> {
    [&expiry.to_be_bytes()[..], digest].concat()
}

/// The expiry and digest of a `claims` key.
fn claim_key_parts(key: &[u8]) -> Option<(u64, ClaimDigest)> {
    let (expiry, digest) = key.split_at_checked(8)?;
    Some((be_u64(expiry), digest.try_into().ok()?))
}

/// The claimant and user of a `claims` value.
fn claim_value_parts(value: &[u8]) -> (&[u8], &[u8]) {
    let split = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    (&value[..split], value.get(split + 1..).unwrap_or_default())
}

/// A claim made ready before the write lock is taken: its digest and its journal entry.
pub(super) struct PreparedClaim {
    digest: ClaimDigest,
    entry: (Vec<u8>, Vec<u8>),
}

/// Hashes each claim and makes its journal entry: the part of claiming done without the lock.
pub(super) fn prepare(claims: &[DedupClaim], expiry: u64) -> Vec<PreparedClaim> {
    claims
        .iter()
        .map(|claim| {
            let digest = claim_digest(&claim.user, &claim.key);
            let entry = claim_entry(expiry, &digest, &claim.by, &claim.user);
            PreparedClaim { digest, entry }
        })
        .collect()
}

impl Spaces {
    /// Holds in memory the claims of the journal that have not expired by `now_ms`.
    pub fn load_claims(&self, now_ms: u64) -> anyhow::Result<()> {
        let mut index = self.claim_index.lock().expect("claim index lock");
        let start = now_ms.saturating_add(1).to_be_bytes();
        for entry in self.claims.range(start..) {
            let key = entry.key()?;
            if let Some((expiry, digest)) = claim_key_parts(&key) {
                index.hold(digest, expiry);
            }
        }
        Ok(())
    }

    /// Claims each content, in order, until `expiry`: true for the first claim in the window.
    /// Under the write lock.
    pub fn claim(
        &self,
        claims: Vec<PreparedClaim>,
        now_ms: u64,
        window_ms: u64,
    ) -> Result<Vec<bool>, StoreError> {
        let expiry = now_ms + window_ms;
        let mut index = self.claim_index.lock().expect("claim index lock");
        index
            .make_room(claims.len(), now_ms, window_ms)
            .map_err(|full| {
                StoreError::Unavailable(format!(
                    "{} dedup claims are held, the most allowed (notify.max_dedup_claims): retry later",
                    full.0
                ))
            })?;
        let mut batch = self.batch();
        let mut taken = Vec::new();
        let fresh = claims
            .into_iter()
            .map(|PreparedClaim { digest, entry }| {
                // A content earlier in the batch is held by now too.
                let first = !index.held(&digest, now_ms);
                if first {
                    index.hold(digest, expiry);
                    taken.push(digest);
                    batch.insert(&self.claims, entry.0, entry.1);
                }
                first
            })
            .collect();
        if let Err(e) = self.commit(batch) {
            // Not journaled, so not held either: the sender is told to retry, and the retry
            // must not find its content claimed.
            for digest in &taken {
                index.drop_claim(digest, expiry);
            }
            return Err(e);
        }
        Ok(fresh)
    }

    /// Gives up the claims their claimants still hold. Under the write lock.
    pub fn release(&self, claims: Vec<DedupClaim>) -> Result<(), StoreError> {
        let mut index = self.claim_index.lock().expect("claim index lock");
        let mut batch = self.batch();
        for claim in claims {
            let digest = claim_digest(&claim.user, &claim.key);
            let Some(expiry) = index.expiry(&digest) else {
                continue;
            };
            let key = claim_key(expiry, &digest);
            let Some(value) = self.claims.get(&key).map_err(failed)? else {
                continue;
            };
            if claim_value_parts(&value).0 == claim.by.as_bytes() {
                index.drop_claim(&digest, expiry);
                batch.remove(&self.claims, key);
            }
        }
        self.commit(batch)
    }

    /// Removes up to `limit` claims expired by `now_ms` from the journal (and from memory, if
    /// still there); returns how many it removed, not counting the entries of contents claimed
    /// again since, and whether there may be more.
    pub fn sweep_claims(&self, now_ms: u64, limit: usize) -> Result<(u64, bool), StoreError> {
        let (mut batch, mut seen, mut removed) = (self.batch(), 0, 0);
        let mut index = self.claim_index.lock().expect("claim index lock");
        let end = now_ms.saturating_add(1).to_be_bytes();
        for entry in self.claims.range(..end).take(limit) {
            let key = entry.key().map_err(failed)?;
            seen += 1;
            if let Some((expiry, digest)) = claim_key_parts(&key) {
                let claimed_again = index.expiry(&digest).is_some_and(|held| held > expiry);
                index.drop_claim(&digest, expiry);
                removed += u64::from(!claimed_again);
            }
            batch.remove(&self.claims, key);
        }
        self.commit(batch)?;
        Ok((removed, seen == limit))
    }

    /// Adds to `batch` the removal of the user's claims. The journal is not kept by user: the
    /// user's claims are found among all of them. Under the write lock.
    pub fn forget_user_claims(
        &self,
        batch: &mut OwnedWriteBatch,
        user: &str,
    ) -> Result<(), StoreError> {
        let mut index = self.claim_index.lock().expect("claim index lock");
        for entry in self.claims.iter() {
            let (key, value) = entry.into_inner().map_err(failed)?;
            if claim_value_parts(&value).1 != user.as_bytes() {
                continue;
            }
            if let Some((expiry, digest)) = claim_key_parts(&key) {
                index.drop_claim(&digest, expiry);
            }
            batch.remove(&self.claims, key);
        }
        Ok(())
    }
}
