//! The WeChat channel: Official Account template messages and subscribe messages (RESEARCH §4),
//! and mass sends to the followers under a tag (`message/mass/sendall`). [`content`] shapes a
//! notification into its push, [`errors`] says what WeChat's codes mean, and [`callback`] reads
//! the `TEMPLATESENDJOBFINISH` and `MASSSENDJOBFINISH` reports that WeChat posts back later.

pub mod callback;
mod content;
pub mod errors;
pub mod safe_mode;

use super::http;
use super::token_cache::{FreshToken, TokenCache, Tokens};
use super::{Channel, Content, Outcome, Prepared, Push, Shaping, Target};
use protocol::notification::Provider;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub struct WeChatChannel {
    base_url: String,
    /// The configured apps, in configuration order (a push goes out from the first app the
    /// user is bound in; a mass send from the first app).
    apps: Vec<broker_config::WeChatApp>,
    http: reqwest::Client,
    /// Keyed by appid: two configured names for one account share its token.
    tokens: Tokens,
}

impl WeChatChannel {
    /// `timeout` bounds each call to WeChat (`channels.request_timeout`).
    pub fn new(
        config: &broker_config::WeChat,
        timeout: Duration,
        cache: Arc<dyn TokenCache>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            apps: config.apps.clone(),
            http: http::client(timeout)?,
            tokens: Tokens::new(Provider::Wechat, cache, config.refresh_early),
        })
    }

    /// `POST /cgi-bin/stable_token` without `force_refresh`: while the account's token is valid
    /// every caller gets that same token, so nodes refreshing at once do not invalidate each
    /// other's (as `/cgi-bin/token` would).
    async fn fetch_token(&self, app: &broker_config::WeChatApp) -> Result<FreshToken, Outcome> {
        let answer = http::post_json(
            self.http
                .post(format!("{}/cgi-bin/stable_token", self.base_url))
                .json(&json!({
                    "grant_type": "client_credential",
                    "appid": app.appid,
                    "secret": app.secret,
                    "force_refresh": false,
                })),
        )
        .await?;
        let errcode = http::code(&answer, "errcode", Some(0))?;
        if errcode != 0 {
            return Err(errors::outcome(
                errcode,
                errors::errmsg(&answer),
                SystemTime::now(),
            ));
        }
        let value = answer.get("access_token").and_then(Value::as_str);
        let lives = answer
            .get("expires_in")
            .and_then(|v| http::text(v)?.parse().ok());
        match (value, lives) {
            (Some(value), Some(seconds)) if !value.is_empty() => Ok(FreshToken {
                value: value.to_owned(),
                lives: Duration::from_secs(seconds),
            }),
            _ => Err(http::bad_reply(
                "a token answer without access_token or expires_in",
            )),
        }
    }
}

#[async_trait::async_trait]
impl Channel for WeChatChannel {
    fn provider(&self) -> Provider {
        Provider::Wechat
    }

    fn prepare(&self, shaping: &Shaping<'_>) -> Result<Prepared, String> {
        content::prepare(&self.apps, shaping)
    }

    async fn send(&self, push: &Push) -> Outcome {
        let (app, path, body) = match (&push.target, &push.content) {
            (
                Target::WeChat { app, openid },
                Content::WeChatTemplate {
                    template_id,
                    url,
                    fields,
                },
            ) => {
                let mut body = json!({
                    "touser": openid,
                    "template_id": template_id,
                    "client_msg_id": push.key,
                    "data": content::data(fields),
                });
                if let Some(url) = url {
                    body["url"] = json!(url);
                }
                (app, "template/send", body)
            }
            // Subscribe messages have no `client_msg_id`: a retry after a timeout may deliver
            // twice, which WeChat gives no way to prevent.
            (
                Target::WeChat { app, openid },
                Content::WeChatSubscribe {
                    template_id,
                    page,
                    fields,
                },
            ) => {
                let mut body = json!({
                    "touser": openid,
                    "template_id": template_id,
                    "miniprogram_state": "formal",
                    "lang": "zh_CN",
                    "data": content::data(fields),
                });
                if let Some(page) = page {
                    body["page"] = json!(page);
                }
                (app, "subscribe/send", body)
            }
            // `clientmsgid` makes a retry safe: WeChat answers a repeat with 45065 and the
            // first send's msg_id instead of broadcasting again.
            (Target::WeChatTag { app, tag_id }, Content::WeChatMassText { text }) => {
                let body = json!({
                    "filter": {"is_to_all": false, "tag_id": tag_id},
                    "text": {"content": text},
                    "msgtype": "text",
                    "clientmsgid": push.key,
                });
                (app, "mass/sendall", body)
            }
            _ => return misrouted("a target and content that do not go together"),
        };
        let Some(app) = self.apps.iter().find(|configured| configured.name == *app) else {
            return Outcome::Failed {
                code: "unknown_app".into(),
                message: format!("no WeChat app named {app:?} is configured"),
            };
        };
        let url = format!("{}/cgi-bin/message/{path}", self.base_url);
        let mut refreshed = false;
        loop {
            let token = match self.tokens.get(&app.appid, || self.fetch_token(app)).await {
                Ok(token) => token,
                Err(outcome) => return outcome,
            };
            let request = self
                .http
                .post(&url)
                .query(&[("access_token", &token)])
                .json(&body);
            let answer = match http::post_json(request).await {
                Ok(answer) => answer,
                Err(outcome) => return outcome,
            };
            let errcode = match http::code(&answer, "errcode", Some(0)) {
                Ok(errcode) => errcode,
                Err(outcome) => return outcome,
            };
            // 45065: a mass send with this `clientmsgid` went out already (a retry whose first
            // answer was lost); the answer names it.
            if errcode == 0 || errcode == 45065 {
                let provider_id = match answer.get("msg_id").and_then(http::text) {
                    Some(mass) => Some(callback::mass_send_id(&mass)),
                    None => answer.get("msgid").and_then(http::text),
                };
                return Outcome::Sent { provider_id };
            }
            if errors::token_rejected(errcode) && !refreshed {
                refreshed = true;
                self.tokens.reject(&app.appid, &token).await;
                continue;
            }
            return errors::outcome(errcode, errors::errmsg(&answer), SystemTime::now());
        }
    }
}

fn misrouted(what: &str) -> Outcome {
    Outcome::Failed {
        code: "misrouted".into(),
        message: format!("the WeChat channel was given {what}"),
    }
}
