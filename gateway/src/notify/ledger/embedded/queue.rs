//! The embedded ledger's queue of pushes, ordered by when each is due, with leases: a job taken
//! to be sent is put back at its lease's end, so a worker that dies loses nothing.

use super::spaces::{be_u64, failed, from_json, to_json, Spaces};
use crate::infra::cipher::KeyRing;
use crate::notify::model::Job;
use crate::store::StoreError;
use fjall::OwnedWriteBatch;
use protocol::notification::RouteState;
use std::sync::atomic::Ordering;

/// A job's key in the `queue` keyspace: when it is due, then its own key.
pub(super) fn queue_key(due: u64, key: &str) -> Vec<u8> {
    [&due.to_be_bytes()[..], key.as_bytes()].concat()
}

impl Spaces {
    /// Queues a job that is not in the queue (a new notification's, or one taken and settled).
    pub fn enqueue(&self, batch: &mut OwnedWriteBatch, job: &Job, due: u64) {
        self.put_job(batch, job, due);
        self.lower_floor(due);
    }

    /// Puts `job` in the queue, due at `due`, once `batch` commits; the floor must be lowered
    /// to `due` under the write lock before that (see [`Spaces::floor`]).
    pub fn put_job(&self, batch: &mut OwnedWriteBatch, job: &Job, due: u64) {
        batch.insert(&self.queue, queue_key(due, &job.key()), to_json(job));
    }

    pub fn lower_floor(&self, due: u64) {
        self.floor.fetch_min(due, Ordering::AcqRel);
    }

    /// Takes a job taken by `take_due` out of the queue (its lease's entry).
    fn dequeue_leased(&self, batch: &mut OwnedWriteBatch, job: &Job) {
        let key = job.key();
        let leased = self.leased.lock().expect("leased jobs lock").remove(&key);
        if let Some(until) = leased {
            batch.remove(&self.queue, queue_key(until, &key));
        }
    }

    /// Jobs due at `now_ms`, at most `limit`, oldest first, each leased until
    /// `now_ms + lease_ms`. Under the write lock.
    pub fn take_due(
        &self,
        now_ms: u64,
        limit: usize,
        lease_ms: u64,
    ) -> Result<Vec<Job>, StoreError> {
        let floor = self.floor.load(Ordering::Acquire);
        let mut due = Vec::new();
        let (mut last_due, mut entries) = (floor, Vec::new());
        for entry in self
            .queue
            .range(queue_key(floor, "")..=queue_key(now_ms, "\u{7f}"))
            .take(limit)
        {
            let (key, value) = entry.into_inner().map_err(failed)?;
            last_due = be_u64(&key[..8]);
            due.push(from_json::<Job>(&value, "queued job")?);
            entries.push(key);
        }
        // Everything due before `last_due` was taken; with fewer than `limit`, everything due
        // by now was.
        let new_floor = if due.len() < limit {
            now_ms + 1
        } else {
            last_due
        };
        self.floor.store(new_floor, Ordering::Release);
        if due.is_empty() {
            return Ok(due);
        }
        let mut batch = self.batch();
        let mut leased = self.leased.lock().expect("leased jobs lock");
        let until = now_ms + lease_ms;
        for (job, entry) in due.iter().zip(entries) {
            batch.remove(&self.queue, entry);
            self.enqueue(&mut batch, job, until);
            leased.insert(job.key(), until);
            self.free_aggregate_slot(&mut batch, job)?;
        }
        self.commit(batch)?;
        Ok(due)
    }

    /// Records what became of a job's push and queues it again for `next_due`, or takes it out
    /// of the queue. Under the write lock.
    pub fn settle(
        &self,
        keys: &KeyRing,
        job: &Job,
        state: RouteState,
        next_due: Option<u64>,
    ) -> Result<(), StoreError> {
        let mut batch = self.batch();
        if let Some(mut record) = self.record(keys, &job.notification)? {
            // A push put back for the provider's rate keeps its state: the record stays.
            if record.routes.get(&job.route()) != Some(&state) {
                record.routes.insert(job.route(), state);
                self.put_record(&mut batch, keys, &record);
            }
        }
        self.dequeue_leased(&mut batch, job);
        if let Some(due) = next_due {
            self.enqueue(&mut batch, job, due);
        }
        self.commit(batch)
    }

    /// Adds to `batch` the removal of the user's queued jobs. Under the write lock.
    pub fn forget_user_jobs(
        &self,
        batch: &mut OwnedWriteBatch,
        user: &str,
    ) -> Result<(), StoreError> {
        for entry in self.queue.iter() {
            let (key, value) = entry.into_inner().map_err(failed)?;
            let job: Job = from_json(&value, "queued job")?;
            if job.user == user {
                batch.remove(&self.queue, key);
                self.leased
                    .lock()
                    .expect("leased jobs lock")
                    .remove(&job.key());
            }
        }
        Ok(())
    }
}
