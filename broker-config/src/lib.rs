//! The gateway's configuration: typed sections with defaults, environment overrides, and
//! validation that reports every error with the key it is at.
//!
//! Every field has a default, so an empty file (or no file) is a working configuration. The
//! annotated defaults live in `gateway.toml` beside this crate; [`DEFAULT_TOML`] embeds it.

mod channels;
mod load;
mod notify;
mod sections;
mod web;

pub use channels::*;
pub use load::{is_at_rest_key, ConfigError, ENV_PREFIX};
pub use notify::*;
pub use sections::*;
pub use web::*;

/// The documented default configuration file, every key at its default value.
pub const DEFAULT_TOML: &str = include_str!("../gateway.toml");
