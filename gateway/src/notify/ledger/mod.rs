//! The notification ledger: every notification's record, the durable queue of pushes, the
//! users' preferences and bindings, dedup claims and daily quotas. One trait, one file per
//! backend, as the message store has.

pub mod embedded;
pub mod redis;

use super::model::{Bindings, Consent, Job, QuietHours, Record, Route, RouteState};
use crate::store::StoreError;
use async_trait::async_trait;

#[async_trait]
pub trait Ledger: Send + Sync + 'static {
    /// Claims `key` for `user` for `window_ms`: true for the first claim in the window, false
    /// for every other (another submission, another node, a retry) until it expires.
    async fn claim_dedup(
        &self,
        user: &str,
        key: &str,
        now_ms: u64,
        window_ms: u64,
    ) -> Result<bool, StoreError>;

    /// Stores a new record and queues its jobs (each with the time it is due), together.
    async fn create(&self, record: &Record, jobs: &[(Job, u64)]) -> Result<(), StoreError>;

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

    /// Joins the pending aggregated push of `user`'s `kind` (one per window) or starts one due
    /// at `due_ms`. Returns the job and whether it is new (the caller then stores its record).
    async fn aggregate(
        &self,
        user: &str,
        kind: &str,
        notification: &str,
        route: Route,
        due_ms: u64,
    ) -> Result<(Job, bool), StoreError>;

    /// Remembers which notification a provider's id (a WeChat msgid) belongs to.
    async fn index_provider_id(
        &self,
        provider_id: &str,
        notification: &str,
        route: Route,
    ) -> Result<(), StoreError>;

    async fn by_provider_id(
        &self,
        provider_id: &str,
    ) -> Result<Option<(String, Route)>, StoreError>;

    /// Sets one route's state of a record (a provider's delivery report).
    async fn set_route(&self, id: &str, route: Route, state: RouteState) -> Result<(), StoreError>;

    /// Counts one send against `quota` for `day`; false (and nothing counted) when the day's
    /// `limit` is reached.
    async fn count_quota(&self, quota: &str, day: &str, limit: u64) -> Result<bool, StoreError>;

    async fn quiet_hours(&self, user: &str) -> Result<Option<QuietHours>, StoreError>;
    async fn set_quiet_hours(&self, user: &str, hours: &QuietHours) -> Result<(), StoreError>;
    async fn consent(&self, user: &str) -> Result<Consent, StoreError>;
    async fn set_consent(&self, user: &str, consent: &Consent) -> Result<(), StoreError>;
    async fn bindings(&self, user: &str) -> Result<Bindings, StoreError>;
    async fn set_bindings(&self, user: &str, bindings: &Bindings) -> Result<(), StoreError>;

    /// Pushes waiting in the queue, for a gauge: exact on Redis, an estimate on the embedded
    /// ledger (its LSM keyspace counts removed entries until they are compacted away).
    async fn queue_depth(&self) -> Result<u64, StoreError>;

    /// Removes the user's preferences, bindings, dedup claims and queued pushes.
    async fn delete_user(&self, user: &str) -> Result<(), StoreError>;
}
