//! The gateway as a library: the binary in `main.rs` is a thin command line over it, and the
//! end-to-end tests use it to look inside the store (e.g. that a deleted user left nothing).
//!
//! Layers, from the top, each importing only those below it: [`app`] (the composition root)
//! → [`api`], [`front`] → [`cluster`] → [`notify`] → [`channel`] → [`observe`] → [`log`] →
//! [`live`] → [`auth`] → [`store`] → [`infra`]; [`shutdown`] is used by all and uses none.

pub mod api;
pub mod app;
pub mod auth;
pub mod channel;
pub mod cluster;
pub mod front;
#[doc(hidden)]
pub mod fuzzing;
pub mod infra;
pub mod live;
pub mod log;
pub mod notify;
pub mod observe;
pub mod shutdown;
pub mod store;
