//! The log's sweeper: every `roaming.sweep_interval` it cuts messages past
//! `roaming.retention_age`, removes the messages of forgotten contacts from disk, and the
//! idempotency markers whose `roaming.idempotency_window` has ended.

use crate::infra::time::unix_millis;
use crate::shutdown::Shutdown;
use crate::store::SharedStore;
use std::time::Duration;

/// Sweeps until shutdown.
pub async fn run(store: SharedStore, retention_age: Duration, every: Duration, shutdown: Shutdown) {
    shutdown
        .every(every, || async {
            let cutoff = unix_millis().saturating_sub(retention_age.as_millis() as u64);
            match store.sweep(cutoff).await {
                Ok(report) if report != Default::default() => {
                    tracing::info!(
                        expired = report.expired,
                        purged = report.purged_contacts,
                        markers = report.expired_markers,
                        revocations = report.expired_revocations,
                        "store swept"
                    )
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("store sweep failed: {e}"),
            }
        })
        .await;
}
