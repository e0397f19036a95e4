//! MQTT 3.1.1 and 5 in front of the gateway: wire codec and connection handling.

pub mod codec;
pub mod connection;
