//! The embedded ledger's daily quotas: a count per quota and provider day.

use super::spaces::{be_u64, failed, joined, Spaces};
use crate::store::StoreError;

impl Spaces {
    /// Counts one send against `quota` for `day`; false (and nothing counted) when the day's
    /// `limit` is reached. Under the write lock.
    pub fn count_quota(&self, quota: &str, day: &str, limit: u64) -> Result<bool, StoreError> {
        let key = joined(quota, day);
        let used = (self.quota.get(&key).map_err(failed)?).map_or(0, |v| be_u64(&v));
        if used >= limit {
            return Ok(false);
        }
        let mut batch = self.batch();
        batch.insert(&self.quota, key, (used + 1).to_be_bytes());
        self.commit(batch)?;
        Ok(true)
    }
}
