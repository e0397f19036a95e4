//! What the layers above build on and that knows nothing of messages or users: time, the data
//! directory, the Redis client, opening fjall databases and committing them in groups, and the
//! cipher that seals data at rest.

pub mod cipher;
pub mod data_dir;
pub mod fjall;
pub mod group_commit;
pub mod redis;
mod sm4_ct;
pub mod time;
