//! The embedded ledger's aggregated pushes: one pending push per user and kind ("3 new friend
//! requests"), joined by every notification of the kind until it is taken to be sent.

use super::queue::queue_key;
use super::spaces::{be_u64, failed, from_json, joined, to_json, Spaces};
use crate::notify::ledger::AggregateJoin;
use crate::notify::model::Job;
use crate::store::StoreError;
use fjall::OwnedWriteBatch;
use std::collections::hash_map::Entry;
use std::collections::HashMap;

impl Spaces {
    /// The aggregated push pending in `slot` (user 0 kind), with the time it is due.
    fn pending_aggregate(&self, slot: &[u8]) -> Result<Option<(Job, u64)>, StoreError> {
        let Some(queued) = self.aggregates.get(slot).map_err(failed)? else {
            return Ok(None);
        };
        let Some(due) = queued.get(..8).map(be_u64) else {
            return Ok(None);
        };
        match self.queue.get(&queued).map_err(failed)? {
            Some(job) => Ok(Some((from_json(&job, "aggregated job")?, due))),
            None => Ok(None),
        }
    }

    /// Applies joins in order, each joining the pending aggregated push of its user's kind or
    /// starting one, and writes what they did in one batch: a later join finds in memory the
    /// push an earlier one started or joined. Under the write lock.
    pub fn join_aggregates(
        &self,
        joins: Vec<AggregateJoin>,
    ) -> Result<Vec<(Job, bool)>, StoreError> {
        // By slot: the push as the joins so far left it, when it is due, and whether it is new.
        let mut touched: HashMap<Vec<u8>, (Job, u64, bool)> = HashMap::new();
        let mut answers = Vec::with_capacity(joins.len());
        for join in joins {
            let slot = joined(&join.user, &join.kind);
            let pending = match touched.entry(slot) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) => {
                    let found = self.pending_aggregate(entry.key())?;
                    entry.insert(match found {
                        Some((job, due)) => (job, due, false),
                        None => {
                            let job = Job {
                                notification: join.notification,
                                provider: join.provider,
                                user: join.user,
                                attempts: 0,
                                count: 0,
                            };
                            (job, join.due_ms, true)
                        }
                    })
                }
            };
            let (job, _, new) = pending;
            job.count += 1;
            // Only the join that started the push owns it (its record queues it).
            answers.push((job.clone(), *new && job.count == 1));
        }
        let mut batch = self.batch();
        for (slot, (job, due, new)) in touched {
            let key = job.key();
            if new {
                batch.insert(&self.aggregates, slot.clone(), queue_key(due, &key));
                // Taking the job to send it frees the slot (see `take_due`): what comes after
                // starts the next aggregate rather than joining one already sent.
                batch.insert(&self.aggregates, joined("job", &key), slot);
                self.enqueue(&mut batch, &job, due);
            } else {
                batch.insert(&self.queue, queue_key(due, &key), to_json(&job));
            }
        }
        self.commit(batch)?;
        Ok(answers)
    }

    /// A job taken to be sent no longer gathers joins: its slot is freed, if it had one.
    pub fn free_aggregate_slot(
        &self,
        batch: &mut OwnedWriteBatch,
        job: &Job,
    ) -> Result<(), StoreError> {
        let reverse = joined("job", &job.key());
        if let Some(slot) = self.aggregates.get(&reverse).map_err(failed)? {
            batch.remove(&self.aggregates, slot);
            batch.remove(&self.aggregates, reverse);
        }
        Ok(())
    }

    /// Adds to `batch` the removal of the user's aggregate slots.
    pub fn forget_user_aggregates(
        &self,
        batch: &mut OwnedWriteBatch,
        user: &str,
    ) -> Result<(), StoreError> {
        for entry in self.aggregates.prefix(joined(user, "")) {
            batch.remove(&self.aggregates, entry.key().map_err(failed)?);
        }
        Ok(())
    }
}
