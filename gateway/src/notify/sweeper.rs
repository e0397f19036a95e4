//! The ledger's sweeper: every `roaming.sweep_interval` it removes expired dedup claims and the
//! records of settled notifications past `notify.record_retention`.

use super::ledger::Ledger;
use crate::infra::time::unix_millis;
use crate::shutdown::Shutdown;
use std::sync::Arc;
use std::time::Duration;

/// Sweeps until shutdown.
pub async fn run(
    ledger: Arc<dyn Ledger>,
    record_retention: Duration,
    every: Duration,
    shutdown: Shutdown,
) {
    shutdown
        .every(every, || async {
            let now = unix_millis();
            let records_before = now.saturating_sub(record_retention.as_millis() as u64);
            match ledger.sweep(now, records_before).await {
                Ok(swept) if swept != Default::default() => {
                    tracing::info!(
                        claims = swept.claims,
                        records = swept.records,
                        "notification ledger swept"
                    )
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("notification ledger sweep failed: {e}"),
            }
        })
        .await;
}
