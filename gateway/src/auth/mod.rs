//! Who a client is and what it may do: device tokens, the backend's API keys, the identity a
//! connection authenticates as, and the topic rules of that identity.

pub mod acl;
pub mod api_keys;
pub mod identity;
pub mod jwt;
pub mod secrets;
pub mod token;

use crate::store::revocations::RevocationStore;
use api_keys::ApiKeys;
use identity::Identity;
use jwt::JwtVerifier;
use std::sync::Arc;
use token::{TokenError, TokenSigner};

/// Authenticates connections and API calls.
pub struct Auth {
    pub signer: TokenSigner,
    /// Standard JWTs, when `[jwt]` is enabled.
    pub jwt: Option<JwtVerifier>,
    /// Which tokens were revoked, as every node sees it.
    pub revocations: Arc<dyn RevocationStore>,
    pub api_keys: ApiKeys,
    /// Dev mode: clients without a token connect as anonymous (`auth.allow_anonymous`).
    pub allow_anonymous: bool,
    /// Where a trusted backend client hands in notifications (`notify.mqtt_topic`).
    pub notify_topic: String,
    /// Filters anonymous clients may not touch (`auth.anonymous_withheld`).
    pub anonymous_withheld: Vec<String>,
}

/// Why a connection is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The credentials do not admit the client (MQTT "not authorized", JSON `unauthorized`).
    #[error("{0}")]
    NotAuthorized(String),
    /// Whether the token was revoked cannot be learned now (MQTT "server unavailable", JSON
    /// `unavailable`): a token is never admitted unchecked.
    #[error("cannot check the token now: {0}")]
    Unavailable(String),
}

impl From<TokenError> for Refusal {
    fn from(error: TokenError) -> Self {
        Self::NotAuthorized(error.to_string())
    }
}

/// What an MQTT CONNECT presents.
pub struct Credentials<'a> {
    pub client_id: &'a str,
    pub password: Option<&'a str>,
    /// The topic of the client's will, which it must be allowed to publish on.
    pub will_topic: Option<&'a str>,
}

impl Auth {
    /// Authenticates an MQTT client: a device token as the password, an API key (a trusted
    /// backend), or no password at all in dev mode. `assign_id` names an anonymous client that
    /// gave no client id. The error's text is the reason, for the log and the v5 CONNACK.
    pub async fn connect(
        &self,
        credentials: &Credentials<'_>,
        assign_id: impl FnOnce() -> String,
    ) -> Result<Identity, Refusal> {
        let identity = match credentials.password.filter(|p| !p.is_empty()) {
            Some(key) if self.api_keys.contains(key) => Identity::Backend {
                client_id: credentials.client_id.to_string(),
                notify_topic: self.notify_topic.clone(),
            },
            Some(token) => self.device(token).await?,
            None if self.allow_anonymous => Identity::Anonymous {
                client_id: match credentials.client_id {
                    "" => assign_id(),
                    given => given.to_string(),
                },
            },
            None => {
                return Err(Refusal::NotAuthorized(
                    "a device token is required as the password".into(),
                ))
            }
        };
        if let Some(topic) = credentials.will_topic {
            identity.may_publish(topic).map_err(|_| {
                Refusal::NotAuthorized(format!("this client may not publish its will on {topic}"))
            })?;
        }
        Ok(identity)
    }

    /// Whether `topic` (or a filter) is withheld from `identity`: in dev mode, the configured
    /// topics anonymous clients may neither subscribe to nor publish on.
    pub fn withheld(&self, identity: &Identity, topic: &str) -> bool {
        matches!(identity, Identity::Anonymous { .. })
            && self
                .anonymous_withheld
                .iter()
                .any(|filter| filter == topic || protocol::topics::filter_matches(filter, topic))
    }

    /// The device a token speaks for (the JSON WebSocket's `auth`, or an MQTT password): one of
    /// ours, or a standard JWT when they are accepted; unless the token was revoked.
    pub async fn device(&self, token: &str) -> Result<Identity, Refusal> {
        let claims = match &self.jwt {
            Some(jwt) if !TokenSigner::is_ours(token) => jwt.verify(token).await?,
            _ => self.signer.verify(token)?,
        };
        let revoked_until = (self.revocations)
            .revoked_until(&claims.user, &claims.device)
            .await
            .map_err(|e| Refusal::Unavailable(e.to_string()))?;
        if claims.issued_at_ms <= revoked_until {
            return Err(TokenError::Revoked.into());
        }
        Ok(Identity::Device {
            user: claims.user,
            device: claims.device,
            platform: claims.platform,
        })
    }
}
