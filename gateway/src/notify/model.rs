//! What the notification service keeps beside the wire types of
//! [`protocol::notification`]: a queued push, and a user's preferences as one value.

use protocol::notification::{Bindings, Consent, Provider, QuietHours, Route};
use serde::{Deserialize, Serialize};

/// A push waiting in the queue: which notification, through which provider, and how far it got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub notification: String,
    #[serde(rename = "route")]
    pub provider: Provider,
    pub user: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// For an aggregated push: how many notifications it stands for.
    #[serde(default)]
    pub count: u32,
}

impl Job {
    /// The route of the notification's record this push settles.
    pub fn route(&self) -> Route {
        Route::Push(self.provider)
    }

    /// Unique per notification and provider: the provider's idempotency key (WeChat
    /// `client_msg_id`, 球球 `request_id`), the same on every retry.
    pub fn key(&self) -> String {
        format!("{}-{}", self.notification, self.provider.as_str())
    }
}

/// What the routing and the sending need to know of a user's choices; `GET
/// /v1/users/{user}/preferences` shows them as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Preferences {
    pub quiet_hours: Option<QuietHours>,
    pub consent: Consent,
    pub bindings: Bindings,
}
