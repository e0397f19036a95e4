//! Message roaming: every message to a user is sequenced into the user's log ([`accept`]), each
//! device catches up from its own cursor ([`sync`]), and the sweeper keeps the logs within
//! their retention ([`sweeper`]).

pub mod accept;
pub mod sweeper;
pub mod sync;
