//! The embedded ledger's dedup claims, held in memory for the window they last.
//!
//! Every decision looks its content's claim up and nearly every one adds a claim: in an LSM
//! keyspace that was a random-key lookup through the memtable and every table's filter, and a
//! random-key insert, a quarter of routing's cost. Claims live only for the dedup window, so the
//! ledger keeps them here, as a 16-byte digest and an expiry, and writes each to disk only as an
//! entry of its `claims` journal, keyed by expiry: an append at the end of the keyspace, which
//! is cheap, and which is read back only when the ledger opens (the claims not expired) or a
//! claim is released or swept.
//!
//! Memory grows with the claims taken within one window: about 40 bytes each (3 million claims,
//! 10,000 notifications a second for 5 minutes, take ~120 MB). `notify.max_dedup_claims` bounds
//! it: past that, claims are refused until older ones expire.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A claim's identity: the first 16 bytes of SHA-256 over its user, a 0 byte and its key.
pub type ClaimDigest = [u8; 16];

pub fn claim_digest(user: &str, key: &str) -> ClaimDigest {
    let mut hash = Sha256::new();
    hash.update(user.as_bytes());
    hash.update([0]);
    hash.update(key.as_bytes());
    let digest = hash.finalize();
    digest[..16].try_into().expect("SHA-256 has 32 bytes")
}

/// Hashes a digest by taking its first 8 bytes: it is uniformly distributed already.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut word = [0u8; 8];
        let taken = bytes.len().min(8);
        word[..taken].copy_from_slice(&bytes[..taken]);
        self.0 ^= u64::from_le_bytes(word);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Each held claim's expiry (ms), by digest. The caller serializes access (the ledger's write
/// lock).
pub struct ClaimIndex {
    expiries: HashMap<ClaimDigest, u64, BuildHasherDefault<DigestHasher>>,
    /// When expired claims were last dropped from memory (a pass over all of them).
    purged_ms: u64,
    max_claims: usize,
}

/// Claims are refused: the index holds `notify.max_dedup_claims` that have not expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexFull(pub usize);

impl ClaimIndex {
    pub fn new(max_claims: usize) -> Self {
        Self {
            expiries: HashMap::default(),
            purged_ms: 0,
            max_claims,
        }
    }

    /// Whether a claim is held at `now_ms`.
    pub fn held(&self, digest: &ClaimDigest, now_ms: u64) -> bool {
        self.expiries
            .get(digest)
            .is_some_and(|&expiry| expiry > now_ms)
    }

    /// The expiry of the claim held (or expired but not yet dropped) for `digest`.
    pub fn expiry(&self, digest: &ClaimDigest) -> Option<u64> {
        self.expiries.get(digest).copied()
    }

    /// Makes room for `count` new claims at `now_ms`: drops the expired ones every quarter
    /// window, or every second while the index is full; fails when the live ones leave no room.
    pub fn make_room(
        &mut self,
        count: usize,
        now_ms: u64,
        window_ms: u64,
    ) -> Result<(), IndexFull> {
        let full = |index: &Self| index.expiries.len() + count > index.max_claims;
        let since = now_ms.saturating_sub(self.purged_ms);
        if since >= (window_ms / 4).max(1000) || (full(self) && since >= 1000) {
            self.expiries.retain(|_, expiry| *expiry > now_ms);
            self.purged_ms = now_ms;
        }
        match full(self) {
            true => Err(IndexFull(self.max_claims)),
            false => Ok(()),
        }
    }

    /// Holds a claim until `expiry_ms`, or keeps a later expiry already held.
    pub fn hold(&mut self, digest: ClaimDigest, expiry_ms: u64) {
        let held = self.expiries.entry(digest).or_insert(expiry_ms);
        *held = (*held).max(expiry_ms);
    }

    /// Drops the claim if the one held is the one expiring at `expiry_ms` (not a later claim of
    /// the same content); returns whether it was.
    pub fn drop_claim(&mut self, digest: &ClaimDigest, expiry_ms: u64) -> bool {
        let held = self.expiries.get(digest) == Some(&expiry_ms);
        if held {
            self.expiries.remove(digest);
        }
        held
    }

    pub fn len(&self) -> usize {
        self.expiries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_held_until_they_expire_and_a_later_claim_wins() {
        let mut index = ClaimIndex::new(10);
        let alice = claim_digest("alice", "k:1");
        assert_ne!(alice, claim_digest("bob", "k:1"));
        assert_ne!(
            alice,
            claim_digest("alice\0k", ":1"),
            "the 0 byte separates the parts"
        );
        index.hold(alice, 2000);
        assert!(index.held(&alice, 1999));
        assert!(!index.held(&alice, 2000));
        index.hold(alice, 1500);
        assert_eq!(
            index.expiry(&alice),
            Some(2000),
            "an earlier expiry never shortens a claim"
        );
        assert!(!index.drop_claim(&alice, 1500), "not the claim held");
        assert!(index.drop_claim(&alice, 2000));
        assert_eq!(index.len(), 0);
    }

    #[test]
    fn expired_claims_make_room_and_live_ones_refuse_more() {
        let mut index = ClaimIndex::new(3);
        for (n, expiry) in [(1u8, 1000), (2, 1000), (3, 5000)] {
            index.make_room(1, 0, 60_000).unwrap();
            index.hold([n; 16], expiry);
        }
        assert_eq!(index.make_room(1, 999, 60_000), Err(IndexFull(3)));
        index.make_room(2, 1000, 60_000).unwrap();
        assert_eq!(index.len(), 1, "the two expired claims were dropped");
        index.hold([4; 16], 6000);
        index.hold([5; 16], 6000);
        assert_eq!(index.make_room(1, 1001, 60_000), Err(IndexFull(3)));
    }
}
