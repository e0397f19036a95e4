//! What the load is aimed at: the gateway (MQTT plus its backend API for device tokens) or a
//! plain MQTT broker such as mosquitto (no authentication).
//!
//! Only loopback addresses are accepted: this tool opens tens of thousands of connections and
//! floods them with messages, which is only acceptable against a broker on the same machine.

use crate::progress::Counter;
use crate::stages::{self, StageSnapshot};
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use futures_util::{stream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio_rustls::rustls;

/// Tokens are minted this many at a time: enough to hide HTTP round trips, few enough not to
/// turn token minting into a load test of its own.
pub(crate) const MINT_CONCURRENCY: usize = 64;

/// The platform the simulated devices claim; the gateway counts logins per platform.
const PLATFORM: &str = "android";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// The gateway: devices log in with tokens minted over its backend API.
    Gateway,
    /// A plain MQTT broker, anonymous access.
    Mqtt,
}

/// Where the gateway listens.
#[derive(Args, Clone, Debug)]
pub struct EndpointArgs {
    /// MQTT listener of the broker under test (loopback only).
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub mqtt: SocketAddr,
    /// Base URL of the gateway's backend HTTP API (loopback only).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub http: String,
    /// Backend API key, used to mint device tokens.
    #[arg(long, env = "LOADTEST_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

#[derive(Args, Clone, Debug)]
pub struct TargetArgs {
    /// Kind of broker under test.
    #[arg(long, value_enum, default_value_t = TargetKind::Gateway)]
    pub target: TargetKind,
    #[command(flatten)]
    pub endpoint: EndpointArgs,
}

pub enum Target {
    /// The API is boxed: a plain broker's target needs none of its room.
    Gateway {
        mqtt: SocketAddr,
        api: Box<GatewayApi>,
    },
    Mqtt {
        addr: SocketAddr,
    },
}

/// The MQTT client id and credentials of one simulated device.
#[derive(Clone)]
pub struct Credentials {
    pub client_id: String,
    /// Username and password, when the target wants them.
    pub login: Option<(String, String)>,
}

impl TargetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Mqtt => "mqtt",
        }
    }
}

impl Target {
    pub fn from_args(args: &TargetArgs) -> Result<Self> {
        match args.target {
            TargetKind::Gateway => Self::gateway(&args.endpoint),
            TargetKind::Mqtt => Self::mqtt(args.endpoint.mqtt),
        }
    }

    pub fn gateway(endpoint: &EndpointArgs) -> Result<Self> {
        require_loopback(endpoint.mqtt.ip(), "--mqtt")?;
        let Some(api_key) = endpoint.api_key.clone() else {
            bail!("the gateway target needs --api-key or LOADTEST_API_KEY to mint device tokens");
        };
        Ok(Self::Gateway {
            mqtt: endpoint.mqtt,
            api: Box::new(GatewayApi::new(&endpoint.http, api_key)?),
        })
    }

    pub fn mqtt(addr: SocketAddr) -> Result<Self> {
        require_loopback(addr.ip(), "--mqtt")?;
        Ok(Self::Mqtt { addr })
    }

    pub fn kind(&self) -> TargetKind {
        match self {
            Self::Gateway { .. } => TargetKind::Gateway,
            Self::Mqtt { .. } => TargetKind::Mqtt,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        match self {
            Self::Gateway { mqtt, .. } => *mqtt,
            Self::Mqtt { addr } => *addr,
        }
    }

    /// The gateway's per-stage histograms now; `None` for a plain broker, or when they cannot
    /// be read (the run goes on without them, and says so).
    pub async fn stages(&self) -> Option<StageSnapshot> {
        let Self::Gateway { api, .. } = self else {
            return None;
        };
        stages::scrape(&api.http, &api.metrics)
            .await
            .inspect_err(|e| eprintln!("no per-stage latency: {e:#}"))
            .ok()
    }

    /// Credentials for each `(user, device)`, in order. The gateway's need a token each,
    /// minted concurrently; `minted` counts them for the progress line.
    pub async fn credentials(
        &self,
        devices: &[(String, String)],
        minted: &Counter,
    ) -> Result<Vec<Credentials>> {
        match self {
            Self::Gateway { api, .. } => {
                stream::iter(devices)
                    .map(|(user, device)| async move {
                        let token = api.mint(user, device, PLATFORM).await?;
                        minted.add(1);
                        Ok::<_, anyhow::Error>(Credentials {
                            client_id: format!("{user}:{device}"),
                            login: Some((user.clone(), token)),
                        })
                    })
                    .buffered(MINT_CONCURRENCY)
                    .try_collect()
                    .await
            }
            Self::Mqtt { .. } => Ok(devices
                .iter()
                .map(|(user, device)| Credentials {
                    client_id: format!("{user}-{device}"),
                    login: None,
                })
                .collect()),
        }
    }
}

/// The gateway's HTTP API as the tool uses it: `POST /v1/tokens` and `/metrics`.
pub struct GatewayApi {
    http: reqwest::Client,
    tokens: reqwest::Url,
    metrics: reqwest::Url,
    api_key: String,
}

#[derive(Serialize)]
struct TokenRequest<'a> {
    user: &'a str,
    device: &'a str,
    platform: &'a str,
}

/// The answer also carries `expires_at`; runs are far shorter than a token's life.
#[derive(Deserialize)]
struct TokenResponse {
    token: String,
}

impl GatewayApi {
    fn new(base: &str, api_key: String) -> Result<Self> {
        let base = loopback_url(base, "--http")?;
        let url = |path: &str| {
            format!("{}{path}", base.as_str().trim_end_matches('/'))
                .parse::<reqwest::Url>()
                .with_context(|| format!("building the URL of {path}"))
        };
        let (tokens, metrics) = (url("/v1/tokens")?, url("/metrics")?);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            tokens,
            metrics,
            api_key,
        })
    }

    /// A token for `device` of `user`, claiming `platform` (`ios`, `android`, `web`, `desktop`).
    pub(crate) async fn mint(&self, user: &str, device: &str, platform: &str) -> Result<String> {
        let response = self
            .http
            .post(self.tokens.clone())
            .bearer_auth(&self.api_key)
            .json(&TokenRequest {
                user,
                device,
                platform,
            })
            .send()
            .await
            .with_context(|| format!("POST {} for {user}/{device}", self.tokens))?;
        let request = format!("POST {} for {user}/{device}", self.tokens);
        let response = crate::report::successful(response, &request).await?;
        let answer: TokenResponse = response
            .json()
            .await
            .with_context(|| format!("token answer for {user}/{device}"))?;
        Ok(answer.token)
    }
}

/// Parses `url` and checks that its host is a loopback address (or `localhost`): load is
/// only ever aimed at this machine.
pub(crate) fn loopback_url(url: &str, flag: &str) -> Result<reqwest::Url> {
    let parsed: reqwest::Url = url.parse().with_context(|| format!("{flag} {url}"))?;
    let host = parsed.host_str().unwrap_or_default();
    let host_ip = host.trim_start_matches('[').trim_end_matches(']');
    match host_ip.parse::<IpAddr>() {
        Ok(ip) => require_loopback(ip, flag)?,
        Err(_) if host == "localhost" => {}
        Err(_) => bail!("{flag} {url}: only loopback hosts are allowed"),
    }
    Ok(parsed)
}

/// The socket address of a loopback base URL such as `--http`'s (an IP address, or
/// `localhost` as 127.0.0.1).
pub(crate) fn loopback_socket_addr(url: &str, flag: &str) -> Result<SocketAddr> {
    let parsed = loopback_url(url, flag)?;
    let port = parsed
        .port_or_known_default()
        .with_context(|| format!("{flag} {url} has no port"))?;
    let host = parsed.host_str().unwrap_or_default();
    let ip = host
        .trim_matches(['[', ']'])
        .parse()
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    Ok(SocketAddr::new(ip, port))
}

fn require_loopback(ip: IpAddr, flag: &str) -> Result<()> {
    if !ip.is_loopback() {
        bail!("{flag} {ip}: only loopback targets are allowed");
    }
    Ok(())
}

/// A TLS client configuration trusting the PEM certificate(s) in `ca` (e.g. the `cert.pem` that
/// `gateway dev-cert` wrote).
pub fn tls_client_config(ca: &std::path::Path) -> Result<std::sync::Arc<rustls::ClientConfig>> {
    // rumqttc and reqwest each link a rustls crypto provider: pick one for this process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pem = std::fs::read(ca).with_context(|| format!("reading --ca {}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls_pemfile::certs(&mut pem.as_slice()) {
        let certificate = certificate.with_context(|| format!("parsing {}", ca.display()))?;
        roots
            .add(certificate)
            .context("trusting the --ca certificate")?;
    }
    if roots.is_empty() {
        bail!("--ca {}: no certificate in it", ca.display());
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_are_accepted() {
        assert!(Target::mqtt("127.0.0.1:1883".parse().unwrap()).is_ok());
        assert!(Target::mqtt("10.0.0.1:1883".parse().unwrap()).is_err());
        let endpoint = |http: &str| EndpointArgs {
            mqtt: "127.0.0.1:1883".parse().unwrap(),
            http: http.into(),
            api_key: Some("k".into()),
        };
        assert!(Target::gateway(&endpoint("http://127.0.0.1:8080")).is_ok());
        assert!(Target::gateway(&endpoint("http://localhost:8080")).is_ok());
        assert!(Target::gateway(&endpoint("http://[::1]:8080")).is_ok());
        assert!(Target::gateway(&endpoint("http://example.com")).is_err());
        let no_key = EndpointArgs {
            api_key: None,
            ..endpoint("http://127.0.0.1:8080")
        };
        assert!(Target::gateway(&no_key).is_err());
        let addr = |url| loopback_socket_addr(url, "--http").unwrap().to_string();
        assert_eq!(addr("http://127.0.0.1:8080"), "127.0.0.1:8080");
        assert_eq!(addr("http://localhost:81"), "127.0.0.1:81");
        assert_eq!(addr("http://[::1]:8080/"), "[::1]:8080");
        assert_eq!(addr("http://127.0.0.2"), "127.0.0.2:80");
    }
}
