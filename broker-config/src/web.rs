//! The gateway's own web pages: the demo chat at `/` and the operations console at `/console`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Web {
    /// Dev mode: `POST /dev/tokens` signs anyone in as any user and device without the API
    /// key, so the demo can be tried at once. Unset, it is on exactly when the gateway runs on
    /// its defaults alone (no configuration file and no `GATEWAY__` variable), as the quick
    /// start does; a deployment, which sets something, never gets it by accident.
    pub dev_mode: Option<bool>,
    /// The demo chat at `/`. Unset, it follows dev mode; outside dev mode it takes a pasted
    /// device token.
    pub demo: Option<bool>,
    /// The operations console at `/console`. The page holds nothing: what it shows comes from
    /// `/v1` routes, with the API key typed into it.
    pub console: bool,
    /// Whether `GET /v1/users/{user}/recent` (the console's view of a user's log) shows message
    /// bodies; off, it shows their metadata only (who, when, how big), which is what operating
    /// the service needs.
    pub show_bodies: bool,
}

impl Default for Web {
    fn default() -> Self {
        Self {
            dev_mode: None,
            demo: None,
            console: true,
            show_bodies: false,
        }
    }
}

impl Web {
    /// Whether dev mode is on; unset counts as off here, [`crate::Config::load`] having decided
    /// it for a gateway on its defaults alone.
    pub fn dev_mode(&self) -> bool {
        self.dev_mode == Some(true)
    }

    /// Whether the demo chat is served.
    pub fn demo(&self) -> bool {
        self.demo.unwrap_or(self.dev_mode())
    }
}
