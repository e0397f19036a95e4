//! Revoked tokens: for each user, and for each of a user's devices, the moment before which
//! every token issued is refused. A logout, a revoking kick and an account deletion set it;
//! every connection checks it, on every node, since the store is what the nodes share.
//!
//! A moment is kept until no token it refuses can still be alive: tokens live at most
//! [`LONGEST_TOKEN_LIFE`], so a revocation older than that refuses nothing any more and is
//! removed (by the sweeper, or by Redis's expiry). A deleted user's revocation is the one thing
//! kept after the deletion: the user's id and a time, so the user's tokens stay refused.

use super::StoreError;
use async_trait::async_trait;
use std::time::Duration;

/// The longest a token may live: `POST /v1/tokens` and `gateway token` refuse longer
/// lifetimes, and a revocation is kept this long.
pub const LONGEST_TOKEN_LIFE: Duration = Duration::from_secs(366 * 24 * 3600);

/// Whose tokens a revocation refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked<'a> {
    /// Every device of the user (logout everywhere, account deletion).
    User(&'a str),
    /// One device of the user.
    Device { user: &'a str, device: &'a str },
}

#[async_trait]
pub trait RevocationStore: Send + Sync + 'static {
    /// Refuses the tokens issued up to `until_ms` (milliseconds since the Unix epoch). A later
    /// revocation of the same scope moves the moment forward; an earlier one leaves it.
    async fn revoke(&self, whose: Revoked<'_>, until_ms: u64) -> Result<(), StoreError>;

    /// Up to when the device's tokens are refused: the later of the user's and the device's
    /// revocation, 0 when neither was revoked.
    async fn revoked_until(&self, user: &str, device: &str) -> Result<u64, StoreError>;
}
