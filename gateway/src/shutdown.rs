//! Graceful shutdown: one cancellation token that every long-running task watches, and one
//! tracker of the tasks that must finish before the process exits.
//!
//! On SIGTERM the composition root (`app.rs`) cancels the token: accept loops return (the
//! listeners close), sessions are told the server is going away, HTTP connections finish the
//! request in flight, the notification worker stops taking pushes and the periodic tasks stop.
//! The root then waits for every tracked task (connections with their pending answers, pushes
//! being sent) and only after them closes the stores, so every write a client was answered for
//! is committed before the process ends. All of it is bounded by `limits.shutdown_grace`.

use std::future::Future;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;

/// Cheap to clone; every clone watches the same token and adds to the same tracker.
#[derive(Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `task` on the runtime, tracked: [`wait_for_tasks`](Self::wait_for_tasks) waits for
    /// it. A task that runs until shutdown must watch [`cancelled`](Self::cancelled) itself.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Counts as a tracked task for as long as it is held: for work that a library spawns
    /// itself (a WebSocket served after its HTTP upgrade).
    pub fn hold(&self) -> TaskTrackerToken {
        self.tracker.token()
    }

    /// Resolves once shutdown has begun.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }

    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Runs `work` every `period` (the first time at once; a late run delays the next rather
    /// than bunching them) until shutdown. For the periodic tasks: sweepers, heartbeats.
    pub async fn every<F, Work>(&self, period: Duration, mut work: F)
    where
        F: FnMut() -> Work,
        Work: Future<Output = ()>,
    {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = self.cancelled() => return,
            }
            work().await;
        }
    }

    /// Starts the shutdown: every task watching the token sees it at once.
    pub fn begin(&self) {
        self.token.cancel();
    }

    /// Waits up to `limit` for every tracked task to end; false when some were still running.
    pub async fn wait_for_tasks(&self, limit: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(limit, self.tracker.wait())
            .await
            .is_ok()
    }

    /// Tracked tasks still running.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tracked_tasks_are_waited_for_and_see_the_cancellation() {
        let shutdown = Shutdown::new();
        let watcher = shutdown.clone();
        shutdown.spawn(async move {
            watcher.cancelled().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        });
        assert!(!shutdown.wait_for_tasks(Duration::from_millis(50)).await);
        shutdown.begin();
        assert!(shutdown.wait_for_tasks(Duration::from_secs(5)).await);
        assert_eq!(shutdown.running(), 0);
    }
}
