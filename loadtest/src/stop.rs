//! The stop signal every load task watches: a `watch` channel that turns `true` once.
//!
//! Each scenario owns the sender; tasks end when it says stop or when it is dropped (the
//! scenario returned early with an error), so no task can outlive its scenario.

use tokio::sync::watch;

/// Resolves once `stop` turned true or its sender is gone.
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    // Either way the answer is "stop"; the guard is dropped here so callers stay `Send`.
    let _ = stop.wait_for(|stopped| *stopped).await;
}
