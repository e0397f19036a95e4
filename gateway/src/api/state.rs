//! What the HTTP handlers reach: the router's state, built once by the composition root.

use super::key_rates::ApiKeyRates;
use crate::auth::Auth;
use crate::channel::wechat::callback::CallbackGuard;
use crate::cluster::Membership;
use crate::front::Front;
use crate::live::registry::Registry;
use crate::live::signals::Signals;
use crate::log::accept::Messages;
use crate::notify::Notifications;
use crate::observe::metrics::Metrics;
use crate::observe::recorder::Recorder;
use crate::observe::throughput::Throughput;
use crate::store::SharedStore;
use broker_config::Config;
use std::sync::Arc;

pub struct ApiState {
    pub config: Arc<Config>,
    pub auth: Arc<Auth>,
    pub registry: Arc<Registry>,
    pub signals: Arc<Signals>,
    pub messages: Arc<Messages>,
    pub store: SharedStore,
    pub notifications: Arc<Notifications>,
    pub metrics: Arc<Metrics>,
    /// The recent rates the console charts.
    pub throughput: Arc<Throughput>,
    /// The nodes, for their health.
    pub cluster: Arc<dyn Membership>,
    /// The traffic recording, when `record.path` is set.
    pub recorder: Option<Recorder>,
    /// The JSON WebSocket (`/ws`) is a client connection like the MQTT ones.
    pub front: Arc<Front>,
    /// Checks WeChat's callbacks; `None` without a `channels.wechat.callback_token`, and then
    /// every callback is refused.
    pub wechat_callbacks: Option<CallbackGuard>,
    /// Each API key's rate limit; `None` when off.
    pub key_rates: Option<ApiKeyRates>,
}

/// The router's state, as handlers take it: `State(api): State<Api>`.
pub type Api = Arc<ApiState>;
