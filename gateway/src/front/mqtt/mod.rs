//! MQTT 3.1.1 and 5 in front of the gateway: the listeners, the wire codec and the connection.

pub mod codec;
pub mod connection;
pub mod listener;
