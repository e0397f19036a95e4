//! The notification ledger: every notification's record, the durable queue of pushes, the
//! users' preferences and bindings, dedup claims and daily quotas. One trait, one file per
//! backend, as the message store has.

mod claim_index;
pub mod embedded;
mod preference_cache;
pub mod redis;

use super::model::{Job, Preferences};
use crate::store::StoreError;
use async_trait::async_trait;
use protocol::notification::{Bindings, Consent, Provider, QuietHours, Record, Route, RouteState};
use std::sync::Arc;

/// One claim of [`Ledger::claim_dedup`]: a content's dedup key, for a user.
#[derive(Debug, Clone)]
pub struct DedupClaim {
    pub user: String,
    pub key: String,
    /// The notification claiming it, so that [`Ledger::release_dedup`] gives up only its own.
    pub by: String,
}

/// A new record with the pushes it queues, each with the time it is due.
#[derive(Debug, Clone)]
pub struct NewRecord {
    pub record: Record,
    pub jobs: Vec<(Job, u64)>,
}

/// What one [`Ledger::sweep`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LedgerSweep {
    pub claims: u64,
    pub records: u64,
}

/// A notification that joins its user's pending aggregated push of its kind (one per window),
/// or starts one due at `due_ms`.
#[derive(Debug, Clone)]
pub struct AggregateJoin {
    pub user: String,
    pub kind: String,
    pub notification: String,
    pub provider: Provider,
    pub due_ms: u64,
}

/// How both backends keep a provider id's entry: the notification it belongs to and the
/// provider that gave it, as `notification 0 provider`.
pub fn provider_entry(notification: &str, provider: Provider) -> Vec<u8> {
    [notification.as_bytes(), b"\0", provider.as_str().as_bytes()].concat()
}

/// Reads what [`provider_entry`] wrote.
pub fn read_provider_entry(entry: &[u8]) -> Result<(String, Provider), StoreError> {
    let damaged = || StoreError::Unreadable("a provider id's entry is damaged".into());
    let text = std::str::from_utf8(entry).map_err(|_| damaged())?;
    let (notification, provider) = text.split_once('\0').ok_or_else(damaged)?;
    match Route::parse(provider) {
        Some(Route::Push(provider)) => Ok((notification.to_string(), provider)),
        _ => Err(damaged()),
    }
}

#[async_trait]
pub trait Ledger: Send + Sync + 'static {
    /// Claims each content for its user for `window_ms`, in order: true for the first claim in
    /// the window, false for every other (the same content earlier in `claims`, another
    /// submission, another node, a retry) until it expires. Claims are seen at once by every
    /// later claim, but may become durable only with the next `create`, which the router always
    /// makes after them: a claim lost in a crash belonged to a submission never answered.
    async fn claim_dedup(
        &self,
        claims: &[DedupClaim],
        now_ms: u64,
        window_ms: u64,
    ) -> Result<Vec<bool>, StoreError>;

    /// Gives up claims that `claim_dedup` granted to a submission that then failed before its
    /// record was stored (an in-app append or the record's write failed, and the sender was
    /// told to retry): else the retry would be deduplicated against a push that never happened.
    /// A claim held by another notification now (taken after this one expired) is kept.
    async fn release_dedup(&self, claims: &[DedupClaim]) -> Result<(), StoreError>;

    /// Stores new records and queues their jobs, all in one durable write; gives the records
    /// back once stored (a backend that writes on another thread takes them there and back
    /// rather than copying them).
    async fn create(&self, records: Vec<NewRecord>) -> Result<Vec<Record>, StoreError>;

    async fn record(&self, id: &str) -> Result<Option<Record>, StoreError>;

    /// Jobs due at `now_ms`, at most `limit`, oldest first. Each is leased: it comes due again
    /// at `now_ms + lease_ms` unless settled before, so a worker that dies loses nothing.
    async fn take_due(
        &self,
        now_ms: u64,
        limit: usize,
        lease_ms: u64,
    ) -> Result<Vec<Job>, StoreError>;

    /// Records what became of a job's push and, with `next_due`, queues it again for then;
    /// without, it leaves the queue. One write: no state is lost between the two.
    async fn settle(
        &self,
        job: &Job,
        state: RouteState,
        next_due: Option<u64>,
    ) -> Result<(), StoreError>;

    /// Applies each join in order (a later one can join the push an earlier one started).
    /// Returns each one's job and whether it is new (then the caller's record owns it). Like
    /// claims, durable at the latest with the next `create`.
    async fn aggregate(&self, joins: &[AggregateJoin]) -> Result<Vec<(Job, bool)>, StoreError>;

    /// Remembers which notification a provider's id (a WeChat msgid) belongs to.
    async fn index_provider_id(
        &self,
        provider_id: &str,
        notification: &str,
        provider: Provider,
    ) -> Result<(), StoreError>;

    async fn by_provider_id(
        &self,
        provider_id: &str,
    ) -> Result<Option<(String, Provider)>, StoreError>;

    /// Sets one route's state of a record (a provider's delivery report).
    async fn set_route(&self, id: &str, route: Route, state: RouteState) -> Result<(), StoreError>;

    /// Counts one send against `quota` for `day`; false (and nothing counted) when the day's
    /// `limit` is reached.
    async fn count_quota(&self, quota: &str, day: &str, limit: u64) -> Result<bool, StoreError>;

    /// Each user's quiet hours, consent and bindings, in the order of `users`, in one read
    /// (shared with a cache that holds them, where one does).
    async fn preferences(&self, users: &[String]) -> Result<Vec<Arc<Preferences>>, StoreError>;
    async fn set_quiet_hours(&self, user: &str, hours: &QuietHours) -> Result<(), StoreError>;
    async fn set_consent(&self, user: &str, consent: &Consent) -> Result<(), StoreError>;
    async fn set_bindings(&self, user: &str, bindings: &Bindings) -> Result<(), StoreError>;

    /// Pushes waiting in the queue, for a gauge: exact on Redis, an estimate on the embedded
    /// ledger (its LSM keyspace counts removed entries until they are compacted away).
    async fn queue_depth(&self) -> Result<u64, StoreError>;

    /// Dedup claims held in memory, for a gauge: the embedded ledger's (see its claim index), when
    /// it can tell without waiting; none where the store keeps them (Redis).
    fn dedup_claims_held(&self) -> Option<u64> {
        None
    }

    /// Removes the dedup claims expired by `now_ms`, and the records of notifications made
    /// before `records_before_ms` whose routes are all settled, with their provider ids: what
    /// would otherwise grow without end. A backend that expires them itself removes nothing.
    async fn sweep(&self, now_ms: u64, records_before_ms: u64) -> Result<LedgerSweep, StoreError>;

    /// Removes the user's preferences, bindings, dedup claims, queued pushes, and the records of
    /// the user's notifications with their provider ids (`GET /v1/notifications/{id}` knows
    /// them no more).
    async fn delete_user(&self, user: &str) -> Result<(), StoreError>;

    /// Makes durable what is written but not yet durable (claims and aggregate joins wait for
    /// the next write), for shutdown.
    async fn close(&self) -> Result<(), StoreError>;
}
