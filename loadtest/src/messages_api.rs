//! The gateway's `POST /v1/messages`, as the backend calls it: the way scenarios put messages
//! into users' logs.

use crate::report::successful;
use crate::target::{loopback_url, EndpointArgs};
use anyhow::{Context, Result};
use futures_util::{stream, StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

pub struct MessagesApi {
    http: reqwest::Client,
    url: reqwest::Url,
    api_key: String,
}

/// The part of the answer scenarios check.
#[derive(Deserialize)]
struct Accepted {
    seq: u64,
}

impl MessagesApi {
    pub fn new(endpoint: &EndpointArgs) -> Result<Self> {
        let base = loopback_url(&endpoint.http, "--http")?;
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .context("building the HTTP client")?,
            url: base
                .join("/v1/messages")
                .context("building the messages URL")?,
            api_key: endpoint.api_key.clone().unwrap_or_default(),
        })
    }

    /// Posts a `{"to", "body"}` request; returns the message's sequence in the user's log.
    /// Anything but a 2xx answer is an error that carries the answer.
    pub async fn post(&self, request: Vec<u8>) -> Result<u64> {
        let response = self
            .http
            .post(self.url.clone())
            .bearer_auth(&self.api_key)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(request)
            .send()
            .await
            .with_context(|| format!("POST {}", self.url))?;
        let response = successful(response, &format!("POST {}", self.url)).await?;
        let accepted: Accepted = response.json().await.context("the answer to a post")?;
        Ok(accepted.seq)
    }

    /// Posts `count` messages `{"n": i}` to `user`, `concurrency` at a time, calling `posted`
    /// after each; returns their sequences, sorted.
    pub async fn fill(
        &self,
        user: &str,
        count: u64,
        concurrency: usize,
        posted: impl Fn() + Copy,
    ) -> Result<Vec<u64>> {
        let mut seqs: Vec<u64> = stream::iter(0..count)
            .map(|n| async move {
                let request = json!({ "to": user, "body": { "n": n } }).to_string();
                let seq = self
                    .post(request.into_bytes())
                    .await
                    .with_context(|| format!("message {n} to {user}"))?;
                posted();
                Ok::<_, anyhow::Error>(seq)
            })
            .buffer_unordered(concurrency)
            .try_collect()
            .await?;
        seqs.sort_unstable();
        Ok(seqs)
    }
}
