//! Coalescing concurrent submissions into batches, so that work with a fixed cost per call (a
//! durable write, an fsync) is paid once per batch instead of once per submission.
//!
//! No background task: a submitter that finds a batch slot free takes everything queued (its
//! own submission, or others' when its own was taken already) and runs the batch as a task of
//! its own. A submitter that goes away midway (a dropped HTTP request) thus never leaves other
//! submissions unanswered. Under load, what arrives while the slots are busy waits and forms the
//! next, larger batch; alone, a submission is a batch of one and waits for nothing.

use futures_util::future::join_all;
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio::sync::{oneshot, Semaphore};

/// Why an item got no result.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The batch's task ended without answering (it panicked).
    #[error("the batch this was part of failed")]
    Lost,
    /// So many items wait already that these would be more than allowed.
    #[error("{0} items are waiting to be processed already, the most allowed")]
    Full(usize),
}

pub struct Batcher<T, R> {
    queued: Mutex<Vec<(T, oneshot::Sender<R>)>>,
    slots: Arc<Semaphore>,
    max_batch: usize,
    max_waiting: usize,
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// At most `max_batch` items per batch, `concurrent` batches at once, and `max_waiting`
    /// items waiting for a batch (each at least 1): past that, submissions are refused rather
    /// than held in memory without bound.
    pub fn new(max_batch: usize, concurrent: usize, max_waiting: usize) -> Self {
        Self {
            queued: Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(concurrent.max(1))),
            max_batch: max_batch.max(1),
            max_waiting: max_waiting.max(1),
        }
    }

    /// Hands `item` in and waits for its result. `process` gets a batch and answers each item,
    /// in order; it runs on whichever submitter takes the batch.
    pub async fn submit<F, Fut>(&self, item: T, process: F) -> Result<R, Refused>
    where
        F: Fn(Vec<T>) -> Fut,
        Fut: Future<Output = Vec<R>> + Send + 'static,
    {
        let mut results = self.submit_all(vec![item], process).await;
        results.pop().expect("one result per item")
    }

    /// Hands `items` in together (they queue next to each other, so they share a batch when
    /// they fit) and waits for all their results, in order.
    pub async fn submit_all<F, Fut>(&self, items: Vec<T>, process: F) -> Vec<Result<R, Refused>>
    where
        F: Fn(Vec<T>) -> Fut,
        Fut: Future<Output = Vec<R>> + Send + 'static,
    {
        let receivers: Vec<_> = {
            let mut queued = self.queued.lock().expect("batch queue lock");
            if queued.len() + items.len() > self.max_waiting {
                let waiting = queued.len();
                return items.iter().map(|_| Err(Refused::Full(waiting))).collect();
            }
            items
                .into_iter()
                .map(|item| {
                    let (answer, result) = oneshot::channel();
                    queued.push((item, answer));
                    result
                })
                .collect()
        };
        let mut results = std::pin::pin!(join_all(receivers));
        let lost = |results: Vec<Result<R, _>>| -> Vec<Result<R, Refused>> {
            results
                .into_iter()
                .map(|r| r.map_err(|_| Refused::Lost))
                .collect()
        };
        loop {
            tokio::select! {
                biased;
                results = &mut results => return lost(results),
                slot = self.slots.clone().acquire_owned() => {
                    let slot = slot.expect("the semaphore is never closed");
                    let batch: Vec<_> = {
                        let mut queued = self.queued.lock().expect("batch queue lock");
                        let n = queued.len().min(self.max_batch);
                        queued.drain(..n).collect()
                    };
                    if batch.is_empty() {
                        // Ours are in batches that are running.
                        drop(slot);
                        return lost(results.await);
                    }
                    let (items, answers): (Vec<T>, Vec<_>) = batch.into_iter().unzip();
                    let work = process(items);
                    tokio::spawn(async move {
                        let results = work.await;
                        debug_assert_eq!(results.len(), answers.len());
                        for (answer, result) in answers.into_iter().zip(results) {
                            // The submitter may have gone away; its result is not needed then.
                            let _ = answer.send(result);
                        }
                        drop(slot);
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::future::BoxFuture;
    use futures_util::FutureExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A batch process that answers each item with itself once `true` is sent on the sender.
    fn gated() -> (
        tokio::sync::watch::Sender<bool>,
        impl Fn(Vec<u32>) -> BoxFuture<'static, Vec<u32>> + Clone,
    ) {
        let (release, gate) = tokio::sync::watch::channel(false);
        let process = move |items: Vec<u32>| {
            let mut gate = gate.clone();
            async move {
                let _ = gate.wait_for(|open| *open).await;
                items
            }
            .boxed()
        };
        (release, process)
    }

    #[tokio::test]
    async fn one_submission_alone_is_a_batch_of_one() {
        let batcher = Batcher::new(8, 1, 100);
        let answer = batcher
            .submit(21, |items: Vec<u32>| async move {
                assert_eq!(items, vec![21]);
                items.into_iter().map(|i| i * 2).collect()
            })
            .await
            .unwrap();
        assert_eq!(answer, 42);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_submissions_share_batches_and_each_gets_its_own_answer() {
        let batcher = Arc::new(Batcher::new(16, 1, 1000));
        let batches = Arc::new(AtomicUsize::new(0));
        let submitters: Vec<_> = (0..200u32)
            .map(|i| {
                let (batcher, batches) = (batcher.clone(), batches.clone());
                tokio::spawn(async move {
                    batcher
                        .submit(i, |items: Vec<u32>| {
                            assert!(items.len() <= 16);
                            batches.fetch_add(1, Ordering::Relaxed);
                            async move {
                                tokio::task::yield_now().await;
                                items.into_iter().map(|i| i + 1000).collect()
                            }
                        })
                        .await
                        .unwrap()
                })
            })
            .collect();
        for (i, submitter) in submitters.into_iter().enumerate() {
            assert_eq!(submitter.await.unwrap(), i as u32 + 1000);
        }
        assert!(
            batches.load(Ordering::Relaxed) < 200,
            "some batches held several"
        );
    }

    #[tokio::test]
    async fn past_the_most_waiting_submissions_are_refused_not_held() {
        let batcher = Arc::new(Batcher::new(1, 1, 2));
        let (release, process) = gated();
        // One runs (holding the only slot) and two wait: the most allowed.
        let running: Vec<_> = (1..=3)
            .map(|i| {
                let (batcher, process) = (batcher.clone(), process.clone());
                tokio::spawn(async move { batcher.submit(i, process).await })
            })
            .collect();
        while batcher.queued.lock().unwrap().len() < 2 {
            tokio::task::yield_now().await;
        }
        let refused = batcher.submit(4, process.clone()).await;
        assert!(matches!(refused, Err(Refused::Full(2))), "{refused:?}");
        release.send(true).unwrap();
        for (i, submitter) in running.into_iter().enumerate() {
            assert_eq!(submitter.await.unwrap().unwrap(), i as u32 + 1);
        }
    }

    #[tokio::test]
    async fn items_handed_in_together_share_one_batch_in_order() {
        let batcher = Batcher::new(8, 4, 100);
        let results = batcher
            .submit_all(vec![1, 2, 3], |items: Vec<u32>| async move {
                assert_eq!(items, vec![1, 2, 3], "one batch, in order");
                items.into_iter().map(|i| i * 10).collect()
            })
            .await;
        let results: Vec<u32> = results.into_iter().map(Result::unwrap).collect();
        assert_eq!(results, [10, 20, 30]);
    }

    #[tokio::test]
    async fn a_submitter_that_goes_away_does_not_lose_the_others_answers() {
        let batcher = Arc::new(Batcher::new(8, 1, 100));
        let (release, process) = gated();
        // The first submitter takes the only slot and runs a batch that waits for the gate.
        let first = tokio::spawn({
            let (batcher, process) = (batcher.clone(), process.clone());
            async move { batcher.submit(1, process).await }
        });
        tokio::task::yield_now().await;
        let second = tokio::spawn({
            let (batcher, process) = (batcher.clone(), process.clone());
            async move { batcher.submit(2, process).await }
        });
        tokio::task::yield_now().await;
        first.abort();
        release.send(true).unwrap();
        assert_eq!(second.await.unwrap().unwrap(), 2);
    }
}
