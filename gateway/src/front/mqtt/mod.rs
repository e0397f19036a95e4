//! MQTT 3.1.1 and 5 in front of the gateway: the listeners, the wire codec, the handshake that
//! takes up a client's session, and the connection with what it sends and receives in flight.

pub mod codec;
mod connection;
pub mod handshake;
mod inbound;
pub mod listener;
mod outbound;
