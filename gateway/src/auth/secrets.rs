//! Where the secrets that prove identities come from: configuration when set, else generated
//! once into the data dir, so that `gateway token`, `gateway api-key` and `gateway serve` with
//! the same data dir agree without any setup.

use super::api_keys::ApiKeys;
use super::token::TokenSigner;
use crate::infra::data_dir::DataDir;
use anyhow::Result;
use broker_config::Config;

/// The signer of device tokens, with `auth.token_keys`, or `auth.token_secret`, or the data
/// dir's secret.
pub fn token_signer(config: &Config, data: &DataDir) -> Result<TokenSigner> {
    if !config.auth.token_keys.is_empty() {
        let keys = (config.auth.token_keys.iter())
            .map(|key| key.split_once(':').expect("checked with the configuration"));
        return Ok(TokenSigner::with_keys(keys));
    }
    let secret = match &config.auth.token_secret {
        Some(secret) => secret.clone(),
        None => data.secret("token_secret")?,
    };
    Ok(TokenSigner::new(&secret))
}

/// `auth.api_keys`, or one key generated into the data dir when none is configured.
pub fn api_keys(config: &Config, data: &DataDir) -> Result<ApiKeys> {
    Ok(ApiKeys::new(if config.auth.api_keys.is_empty() {
        vec![data.secret("api_key")?]
    } else {
        config.auth.api_keys.clone()
    }))
}
