//! Who a client is and what it may do: device tokens, the backend's API keys, the identity a
//! connection authenticates as, and the topic rules of that identity.

pub mod acl;
pub mod api_keys;
pub mod identity;
pub mod secrets;
pub mod token;

use api_keys::ApiKeys;
use identity::Identity;
use token::{TokenError, TokenSigner};

/// Authenticates connections and API calls.
pub struct Auth {
    pub signer: TokenSigner,
    pub api_keys: ApiKeys,
    /// Dev mode: clients without a token connect as anonymous (`auth.allow_anonymous`).
    pub allow_anonymous: bool,
    /// Where a trusted backend client hands in notifications (`notify.mqtt_topic`).
    pub notify_topic: String,
    /// Filters anonymous clients may not touch (`auth.anonymous_withheld`).
    pub anonymous_withheld: Vec<String>,
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
    /// gave no client id. The error is the reason, for the log and the v5 CONNACK.
    pub fn connect(
        &self,
        credentials: &Credentials<'_>,
        assign_id: impl FnOnce() -> String,
    ) -> Result<Identity, String> {
        let identity = match credentials.password.filter(|p| !p.is_empty()) {
            Some(key) if self.api_keys.contains(key) => Identity::Backend {
                client_id: credentials.client_id.to_string(),
                notify_topic: self.notify_topic.clone(),
            },
            Some(token) => self.device(token).map_err(|e| e.to_string())?,
            None if self.allow_anonymous => Identity::Anonymous {
                client_id: match credentials.client_id {
                    "" => assign_id(),
                    given => given.to_string(),
                },
            },
            None => return Err("a device token is required as the password".into()),
        };
        if let Some(topic) = credentials.will_topic {
            identity
                .may_publish(topic)
                .map_err(|_| format!("this client may not publish its will on {topic}"))?;
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

    /// The device a token speaks for (the JSON WebSocket's `auth`, or an MQTT password).
    pub fn device(&self, token: &str) -> Result<Identity, TokenError> {
        let claims = self.signer.verify(token)?;
        Ok(Identity::Device {
            user: claims.user,
            device: claims.device,
            platform: claims.platform,
        })
    }
}
