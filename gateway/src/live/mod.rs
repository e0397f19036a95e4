//! Live delivery: who is connected (links and the registry of devices), the fan-out of a
//! publish to the links subscribed, publishing on a user's topics wherever the user's devices
//! are, and signals, which only ever travel live. The other nodes are a trait here
//! ([`nodes::OtherNodes`]); `cluster` implements it.

pub mod hub;
pub mod link;
pub mod message;
pub mod nodes;
pub mod outbox;
pub mod registry;
pub mod retained;
pub mod sessions;
pub mod signals;
pub mod user_topics;
