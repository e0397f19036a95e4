//! The 球球 push channel: notifications and silent transmissions to the app's devices through
//! the provider's REST API (shaped like Getui's v2, RESEARCH §5). [`content`] shapes a
//! notification into its push; [`errors`] says what the provider's codes mean.

mod content;
pub mod errors;

use super::http;
use super::token_cache::{FreshToken, TokenCache, Tokens};
use super::{Channel, Content, Outcome, Prepared, Push, Shaping, Target};
use crate::infra::time::millis_of;
use protocol::notification::Provider;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub struct QiuQiuChannel {
    config: broker_config::QiuQiu,
    /// `{base_url}/v2/{app_id}`.
    app_url: String,
    app_id: String,
    app_key: String,
    master_secret: String,
    ttl_ms: u64,
    http: reqwest::Client,
    tokens: Tokens,
}

impl QiuQiuChannel {
    /// `timeout` bounds each call to the provider (`channels.request_timeout`).
    pub fn new(
        config: &broker_config::QiuQiu,
        timeout: Duration,
        cache: Arc<dyn TokenCache>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            config: config.clone(),
            app_url: format!(
                "{}/v2/{}",
                config.base_url.trim_end_matches('/'),
                config.app_id
            ),
            app_id: config.app_id.clone(),
            app_key: config.app_key.clone(),
            master_secret: config.master_secret.clone(),
            ttl_ms: u64::try_from(config.ttl.as_millis()).unwrap_or(u64::MAX),
            http: http::client(timeout)?,
            tokens: Tokens::new(Provider::Qiuqiu, cache, config.refresh_early),
        })
    }

    /// `POST /auth`, signed with the master secret, which itself never leaves the gateway.
    async fn fetch_token(&self) -> Result<FreshToken, Outcome> {
        let now = SystemTime::now();
        let timestamp = millis_of(now).to_string();
        let answer = http::post_json(self.http.post(format!("{}/auth", self.app_url)).json(
            &json!({
                "sign": sign(&self.app_key, &timestamp, &self.master_secret),
                "timestamp": timestamp,
                "appkey": self.app_key,
            }),
        ))
        .await?;
        let code = http::code(&answer, "code", None)?;
        if code != 0 {
            return Err(errors::outcome(code, &answer));
        }
        let data = answer.get("data");
        let value = data
            .and_then(|data| data.get("token"))
            .and_then(Value::as_str);
        let expire_time = data
            .and_then(|data| data.get("expire_time"))
            .and_then(|time| http::text(time)?.parse::<u64>().ok());
        match (value, expire_time) {
            (Some(value), Some(expire_time)) if !value.is_empty() => Ok(FreshToken {
                value: value.to_owned(),
                lives: Duration::from_millis(expire_time.saturating_sub(millis_of(now))),
            }),
            _ => Err(http::bad_reply(
                "an auth answer without data.token or data.expire_time",
            )),
        }
    }

    /// One push, retried once with a new token when the provider rejects the token.
    async fn push(&self, kind: &str, audience: Value, key: &str, message: Value) -> Outcome {
        let url = format!("{}/push/single/{kind}", self.app_url);
        let body = json!({
            "request_id": request_id(key),
            "settings": {"ttl": self.ttl_ms},
            "audience": {kind: audience},
            "push_message": message,
        });
        let mut refreshed = false;
        loop {
            let token = match self.tokens.get(&self.app_id, || self.fetch_token()).await {
                Ok(token) => token,
                Err(outcome) => return outcome,
            };
            let request = self.http.post(&url).header("token", &token).json(&body);
            let answer = match http::post_json(request).await {
                Ok(answer) => answer,
                Err(outcome) => return outcome,
            };
            let code = match http::code(&answer, "code", None) {
                Ok(code) => code,
                Err(outcome) => return outcome,
            };
            if code == 0 {
                // `data` is `{task id: {target: status}}`.
                let task = answer
                    .get("data")
                    .and_then(Value::as_object)
                    .and_then(|data| data.keys().next().cloned());
                return Outcome::Sent { provider_id: task };
            }
            if code == errors::TOKEN_REJECTED && !refreshed {
                refreshed = true;
                self.tokens.reject(&self.app_id, &token).await;
                continue;
            }
            return errors::outcome(code, &answer);
        }
    }
}

#[async_trait::async_trait]
impl Channel for QiuQiuChannel {
    fn provider(&self) -> Provider {
        Provider::Qiuqiu
    }

    fn prepare(&self, shaping: &Shaping<'_>) -> Result<Prepared, String> {
        content::prepare(&self.config, shaping)
    }

    /// All of a user's devices are one push (`audience.cid` takes several), so one
    /// `request_id` covers them and a retry cannot reach a device twice.
    async fn send(&self, push: &Push) -> Outcome {
        let message = match &push.content {
            Content::QiuQiuNotification {
                title,
                body,
                url,
                badge,
            } => {
                let mut notification = json!({"title": title, "body": body});
                match url {
                    Some(url) => {
                        notification["click_type"] = json!("url");
                        notification["url"] = json!(url);
                    }
                    None => notification["click_type"] = json!("startapp"),
                }
                if let Some(badge) = badge {
                    notification["badge"] = json!(badge);
                }
                json!({ "notification": notification })
            }
            Content::QiuQiuTransmission { payload } => {
                json!({ "transmission": payload.to_string() })
            }
            _ => return misrouted("content that is not a 球球 push"),
        };
        let (kind, audience) = match &push.target {
            Target::QiuQiuDevices(devices) if devices.is_empty() => {
                return Outcome::Failed {
                    code: "no_target".into(),
                    message: "the push names no 球球 device".into(),
                };
            }
            Target::QiuQiuDevices(devices) => ("cid", json!(devices)),
            Target::QiuQiuAlias(alias) => ("alias", json!([alias])),
            Target::WeChat { .. } | Target::WeChatTag { .. } => return misrouted("a WeChat user"),
        };
        self.push(kind, audience, &push.key, message).await
    }
}

fn misrouted(what: &str) -> Outcome {
    Outcome::Failed {
        code: "misrouted".into(),
        message: format!("the 球球 channel was given {what}"),
    }
}

/// `hex(sha256(app_key + timestamp + master_secret))`.
fn sign(app_key: &str, timestamp: &str, master_secret: &str) -> String {
    hex::encode(Sha256::digest(format!(
        "{app_key}{timestamp}{master_secret}"
    )))
}

/// The push's `request_id`: the provider wants 10 to 32 characters. A key that fits is used as
/// it is; any other (the gateway's keys are usually longer) becomes the first 32 hex digits of
/// `sha256(key)`: the same on every retry, and as unique as the key.
pub fn request_id(key: &str) -> String {
    if (10..=32).contains(&key.chars().count()) {
        key.to_owned()
    } else {
        hex::encode(Sha256::digest(key))[..32].to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_fit_the_provider_and_stay_the_same() {
        assert_eq!(request_id("order-8812-shipped"), "order-8812-shipped");
        let long = "0198c4f5-7a2e-7c31-9d0b-3f4e5a6b7c8d-qiuqiu";
        assert_eq!(request_id(long).len(), 32);
        assert_eq!(request_id(long), request_id(long));
        assert_ne!(
            request_id(long),
            request_id("0198c4f5-7a2e-7c31-9d0b-3f4e5a6b7c8e-qiuqiu")
        );
        assert_eq!(request_id("short").len(), 32);
    }
}
