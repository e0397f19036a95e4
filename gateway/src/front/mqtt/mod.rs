//! MQTT 3.1.1 and 5 in front of the gateway: the listeners, the wire codec, the handshake that
//! takes up a client's session, and the connection with what it sends and receives in flight.

pub mod codec;
mod connection;
pub mod handshake;
// `pub(crate)` (not private) for `crate::fuzzing`, which drives their state machines.
pub(crate) mod inbound;
pub mod listener;
pub(crate) mod outbound;
