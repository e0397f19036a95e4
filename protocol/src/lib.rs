//! The gateway's wire contract, shared by the gateway, the load tester and any Rust client.
//!
//! Everything a client can observe lives here: the topic names ([`topics`]), the JSON carried on
//! them ([`envelope`]), the JSON WebSocket frames ([`frames`]), notifications and their records
//! ([`notification`]), the machine-readable error codes ([`error_code`]) and the format of the
//! gateway's traffic recordings ([`recording`]). Changing anything here is a protocol change:
//! add, never rename.

pub mod envelope;
pub mod error_code;
pub mod frames;
pub mod notification;
pub mod recording;
pub mod topics;

pub use error_code::ErrorCode;
