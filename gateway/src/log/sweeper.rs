//! The log's sweeper: every `roaming.sweep_interval` it cuts messages past
//! `roaming.retention_age`, removes the messages of forgotten contacts from disk, and the
//! idempotency markers whose `roaming.idempotency_window` has ended, and wraps users' data keys
//! again under the sealing one of `store.encryption_keys` (after a rotation).

use crate::infra::time::unix_millis;
use crate::shutdown::Shutdown;
use crate::store::SharedStore;
use prometheus_client::metrics::counter::Counter;
use std::time::Duration;

/// Sweeps until shutdown.
pub async fn run(
    store: SharedStore,
    retention_age: Duration,
    every: Duration,
    rewrapped: Counter,
    shutdown: Shutdown,
) {
    shutdown
        .every(every, || async {
            let cutoff = unix_millis().saturating_sub(retention_age.as_millis() as u64);
            match store.sweep(cutoff).await {
                Ok(report) if report != Default::default() => {
                    rewrapped.inc_by(report.rewrapped_keys);
                    tracing::info!(
                        expired = report.expired,
                        purged = report.purged_contacts,
                        markers = report.expired_markers,
                        revocations = report.expired_revocations,
                        rewrapped_keys = report.rewrapped_keys,
                        "store swept"
                    )
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("store sweep failed: {e}"),
            }
        })
        .await;
}
