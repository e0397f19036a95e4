//! The gateway's backend API as the load uses it: making users reachable on both channels,
//! and handing notifications in one by one or in batches, with the typed requests and the part
//! of the answers the tally reads.

use super::WECHAT_APP;
use crate::target::loopback_url;
use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// One HTTP call to the gateway; far beyond any healthy answer, so a stall is an error, not a hang.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The gateway's backend API, as the load uses it.
#[derive(Clone)]
pub(super) struct Api {
    http: reqwest::Client,
    base: String,
    api_key: String,
}

/// What became of one notification: its routes, or an error's class and detail.
pub(super) type Answer = Result<Routed, (String, String)>;

/// A notification as this tool hands it in.
#[derive(Serialize)]
pub(super) struct NewNotification {
    pub(super) user: String,
    pub(super) kind: &'static str,
    pub(super) title: String,
    pub(super) body: &'static str,
}

/// A 202's decision, read only as far as the tally needs: each route's status.
#[derive(Deserialize)]
pub(super) struct Routed {
    pub(super) routes: BTreeMap<String, RouteStatus>,
}

#[derive(Deserialize)]
pub(super) struct RouteStatus {
    pub(super) status: String,
}

/// One notification's part of a batch's 202: its decision, or its error.
#[derive(Deserialize)]
struct BatchItem {
    error: Option<Value>,
    routes: Option<BTreeMap<String, RouteStatus>>,
}

#[derive(Deserialize)]
pub(super) struct BatchAnswer {
    results: Vec<BatchItem>,
}

impl Api {
    pub(super) fn new(base: &str, api_key: String, connections: usize) -> Result<Self> {
        loopback_url(base, "--http")?;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .pool_max_idle_per_host(connections)
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            api_key,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &impl Serialize,
    ) -> reqwest::Result<reqwest::Response> {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.api_key)
            .json(body)
            .send()
            .await
    }

    /// Binds `user` to both channels and records both consents.
    pub(super) async fn reachable_user(&self, user: &str) -> Result<()> {
        let bindings = json!({"wechat": {WECHAT_APP: format!("o-{user}")}, "qiuqiu_devices": [format!("cid-{user}")]});
        let consent = json!({"wechat": true, "qiuqiu": true});
        for (what, body) in [("bindings", bindings), ("consent", consent)] {
            let path = format!("/v1/users/{user}/{what}");
            let response = self
                .call(reqwest::Method::PUT, &path, &body)
                .await
                .with_context(|| format!("PUT {path}"))?;
            let status = response.status();
            if !status.is_success() {
                let text = response.text().await.unwrap_or_default();
                bail!("PUT {path}: {status}: {text}");
            }
        }
        Ok(())
    }

    /// Posts and reads the 202's body; anything else is an error of the whole request, as its
    /// class (the HTTP status, or `timeout` / `connect` / `transport`) and detail.
    pub(super) async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, (String, String)> {
        match self.call(reqwest::Method::POST, path, body).await {
            Ok(response) if response.status() == reqwest::StatusCode::ACCEPTED => response
                .json::<T>()
                .await
                .map_err(|e| ("answer".to_owned(), e.to_string())),
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                Err((status.as_u16().to_string(), format!("{status}: {text}")))
            }
            Err(e) => {
                let class = if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connect"
                } else {
                    "transport"
                };
                Err((class.to_owned(), e.to_string()))
            }
        }
    }
}

/// Each notification's answer in a batch's 202: its routes, or its error (classed by code).
pub(super) fn batch_answers(answer: BatchAnswer) -> Vec<Answer> {
    answer
        .results
        .into_iter()
        .map(|item| match (item.error, item.routes) {
            (Some(error), _) => {
                let code = error["code"].as_str().unwrap_or("error").to_owned();
                Err((code, error.to_string()))
            }
            (None, Some(routes)) => Ok(Routed { routes }),
            (None, None) => Err((
                "answer".to_owned(),
                "an item with neither routes nor error".to_owned(),
            )),
        })
        .collect()
}
