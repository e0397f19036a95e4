//! What the layers above build on and that knows nothing of messages or users: time, the data
//! directory, the Redis client, opening fjall databases and committing them in groups, and the
//! cipher that seals data at rest, the signal that a failed write must stop the process, and the
//! memory allocator every program running this code is tuned with.

pub mod allocator;
pub mod cipher;
pub mod data_dir;
pub mod data_key;
pub mod fatal;
pub mod fjall;
pub mod group_commit;
pub mod latency_budget;
pub mod rate_limiter;
pub mod redis;
mod sm4_ct;
pub mod time;
pub mod token_bucket;
