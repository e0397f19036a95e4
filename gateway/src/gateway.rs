//! The gateway's shared state, built once at start and shared by every listener and task.

use crate::data_dir::DataDir;
use crate::hub::Hub;
use crate::known_devices::KnownDevices;
use crate::messages::Messages;
use crate::metrics::Metrics;
use crate::session_handle::SessionId;
use crate::sessions::Sessions;
use crate::token::TokenSigner;
use anyhow::Result;
use broker_config::Config;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub struct Gateway {
    pub config: Config,
    pub signer: TokenSigner,
    pub api_keys: Vec<String>,
    pub hub: Arc<Hub>,
    pub sessions: Sessions,
    pub messages: Messages,
    pub metrics: Metrics,
    next_session: AtomicU64,
}

impl Gateway {
    pub fn new(config: Config, data: &DataDir) -> Result<Arc<Self>> {
        let signer = TokenSigner::new(&token_secret(&config, data)?);
        let api_keys = api_keys(&config, data)?;
        let metrics = Metrics::new();
        let hub = Arc::new(Hub::new(metrics.dropped_deliveries.clone()));
        let known = KnownDevices::open(&data.path("known_devices.tsv"))?;
        Ok(Arc::new(Self {
            sessions: Sessions::new(config.sessions.clone(), hub.clone(), known),
            messages: Messages::new(hub.clone()),
            hub,
            signer,
            api_keys,
            metrics,
            config,
            next_session: AtomicU64::new(1),
        }))
    }

    pub fn next_session_id(&self) -> SessionId {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }
}

/// The token-signing secret: from configuration, else generated once into the data dir.
pub fn token_secret(config: &Config, data: &DataDir) -> Result<String> {
    match &config.auth.token_secret {
        Some(secret) => Ok(secret.clone()),
        None => data.secret("token_secret"),
    }
}

/// The backend API keys: from configuration, else one generated once into the data dir.
pub fn api_keys(config: &Config, data: &DataDir) -> Result<Vec<String>> {
    if config.auth.api_keys.is_empty() {
        Ok(vec![data.secret("api_key")?])
    } else {
        Ok(config.auth.api_keys.clone())
    }
}
