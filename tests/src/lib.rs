//! Test harness: starts the real `gateway` binary on free loopback ports and connects real
//! clients to it (rumqttc for MQTT 3.1.1 and 5 over TCP, TLS, WebSocket; tokio-tungstenite for the
//! JSON WebSocket; reqwest for the HTTP API).
//!
//! The binary is found beside the test executable (`target/<profile>/gateway`), or at
//! `GATEWAY_BIN`. `scripts/test` builds it before running the tests.

pub mod device;
pub mod dropping_proxy;
pub mod gateway;
pub mod json_ws;
pub mod mqtt;
pub mod raw_v5;
pub mod redis_cluster;
pub mod redis_server;
pub mod shared_redis;

pub use gateway::{Options, TestGateway};

use std::time::Duration;

/// How long a test waits for something that should happen promptly. Generous: machines are
/// shared and slow; this bounds a hang, it does not measure speed.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// How long a test waits to be confident that something does *not* arrive.
pub const QUIET: Duration = Duration::from_millis(600);
