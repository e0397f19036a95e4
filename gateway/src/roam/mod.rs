//! Message roaming: every message to a user is sequenced into the user's log, and each device
//! catches up from its own cursor.

pub mod clock;
pub mod sync;
