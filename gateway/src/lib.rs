//! The gateway as a library: the binary in `main.rs` is a thin command line over it, and the
//! end-to-end tests use it to look inside the store (e.g. that a deleted user left nothing).

pub mod acl;
pub mod api;
pub mod batcher;
pub mod channel;
pub mod cluster;
pub mod data_dir;
pub mod dev_cert;
pub mod front;
pub mod gateway;
pub mod hub;
pub mod known_devices;
pub mod messages;
pub mod metrics;
pub mod notify;
pub mod recorder;
pub mod roam;
pub mod session_handle;
pub mod sessions;
pub mod signals;
pub mod store;
pub mod token;
pub mod user_topics;
