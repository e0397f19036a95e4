//! The front: everything between a client's socket and the gateway's core — accept loops,
//! TLS, WebSocket upgrades, MQTT and JSON framing, authentication and authorization.

pub mod client;
pub mod http_listener;
pub mod json_ws;
pub mod listener;
pub mod mqtt;
pub mod stream;
pub mod tls;
