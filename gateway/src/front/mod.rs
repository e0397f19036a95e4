//! The front: everything between a client's socket and the gateway's core — accept loops,
//! TLS, WebSocket upgrades, MQTT and JSON framing, authentication and authorization — and the
//! HTTP listener the API is served on.
//!
//! [`Front`] holds the handles the front needs, built once by the composition root.

pub mod accept;
pub mod client;
pub mod dev_cert;
pub mod goodbye;
pub mod http;
mod in_order;
pub mod json_ws;
pub mod log_follower;
pub mod mqtt;
pub mod rate_limits;
pub mod refusal;
pub mod stream;
pub mod tls;
pub mod write_deadline;

use crate::auth::Auth;
use crate::live::hub::Hub;
use crate::live::link::LinkIds;
use crate::live::registry::Registry;
use crate::live::retained::Retained;
use crate::live::sessions::Sessions;
use crate::live::signals::Signals;
use crate::log::accept::Messages;
use crate::notify::Notifications;
use crate::observe::metrics::Metrics;
use crate::observe::recorder::Recorder;
use crate::shutdown::Shutdown;
use crate::store::SharedStore;
use broker_config::{Limits, Roaming};
use std::sync::Arc;

/// What a client connection reaches: its own layer's settings and the services below it.
pub struct Front {
    pub limits: Limits,
    pub roaming: Roaming,
    pub auth: Arc<Auth>,
    pub link_ids: Arc<LinkIds>,
    pub registry: Arc<Registry>,
    pub hub: Arc<Hub>,
    pub retained: Arc<Retained>,
    pub sessions: Arc<Sessions>,
    pub signals: Arc<Signals>,
    pub messages: Arc<Messages>,
    pub store: SharedStore,
    pub notifications: Arc<Notifications>,
    pub metrics: Arc<Metrics>,
    /// The devices' rate-limit buckets; `None` when `rate_limits.enabled` is off.
    pub rate_limits: Option<rate_limits::DeviceRateLimits>,
    /// The traffic recording, when `record.path` is set.
    pub recorder: Option<Recorder>,
    pub shutdown: Shutdown,
}
