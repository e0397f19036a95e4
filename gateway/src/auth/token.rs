//! Device tokens: `v1.<claims>.<signature>`, base64url, HMAC-SHA256 over `v1.<claims>`.
//!
//! A token binds one user and one device (and the device's platform, which the login policy
//! counts). It is the MQTT password and the JSON WebSocket `auth` token. Verification is
//! constant-time and checks expiry; ids are checked so a token cannot carry topic syntax.

use crate::infra::time::{unix_millis, unix_seconds};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use protocol::envelope::Platform;
use protocol::topics::is_valid_id;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::time::Duration;

const VERSION: &str = "v1";

/// Who a token speaks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceClaims {
    #[serde(rename = "u")]
    pub user: String,
    #[serde(rename = "d")]
    pub device: String,
    #[serde(rename = "p")]
    pub platform: Platform,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// When the token was signed, milliseconds since the Unix epoch: a revocation refuses the
    /// tokens signed up to its moment. Tokens from before this field read as 0, so any
    /// revocation refuses them.
    #[serde(rename = "i", default)]
    pub issued_at_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token signature does not match")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("user and device ids may hold only letters, digits, '_', '-', '.' (1-64)")]
    InvalidId,
    #[error("token was revoked (logged out, or the account deleted); sign in again")]
    Revoked,
}

#[derive(Clone)]
pub struct TokenSigner {
    key: Vec<u8>,
}

impl TokenSigner {
    pub fn new(secret: &str) -> Self {
        Self {
            key: secret.as_bytes().to_vec(),
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts keys of any length")
    }

    /// Signs a token for `user`'s `device`, valid for `ttl`.
    pub fn sign(
        &self,
        user: &str,
        device: &str,
        platform: Platform,
        ttl: Duration,
    ) -> Result<(String, DeviceClaims), TokenError> {
        if !is_valid_id(user) || !is_valid_id(device) {
            return Err(TokenError::InvalidId);
        }
        let claims = DeviceClaims {
            user: user.to_string(),
            device: device.to_string(),
            platform,
            exp: unix_seconds().saturating_add(ttl.as_secs()),
            issued_at_ms: unix_millis(),
        };
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims serialize"));
        let signed = format!("{VERSION}.{body}");
        let mut mac = self.mac();
        mac.update(signed.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        Ok((format!("{signed}.{signature}"), claims))
    }

    /// Checks the signature, the expiry and the ids, and returns the claims.
    pub fn verify(&self, token: &str) -> Result<DeviceClaims, TokenError> {
        let (signed, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let (version, body) = signed.split_once('.').ok_or(TokenError::Malformed)?;
        if version != VERSION {
            return Err(TokenError::Malformed);
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(signed.as_bytes());
        mac.verify_slice(&signature)
            .map_err(|_| TokenError::BadSignature)?;
        let claims: DeviceClaims = URL_SAFE_NO_PAD
            .decode(body)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or(TokenError::Malformed)?;
        if !is_valid_id(&claims.user) || !is_valid_id(&claims.device) {
            return Err(TokenError::InvalidId);
        }
        if claims.exp <= unix_seconds() {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn signed_token_verifies() {
        let signer = TokenSigner::new("0123456789abcdef0123456789abcdef");
        let (token, claims) = signer.sign("alice", "phone", Platform::Ios, HOUR).unwrap();
        assert_eq!(signer.verify(&token).unwrap(), claims);
    }

    #[test]
    fn forged_expired_and_foreign_tokens_fail() {
        let signer = TokenSigner::new("0123456789abcdef0123456789abcdef");
        let other = TokenSigner::new("another-secret-another-secret-xx");
        let (token, _) = signer.sign("alice", "phone", Platform::Ios, HOUR).unwrap();
        assert_eq!(other.verify(&token), Err(TokenError::BadSignature));

        let (expired, _) = signer
            .sign("alice", "phone", Platform::Ios, Duration::ZERO)
            .unwrap();
        assert_eq!(signer.verify(&expired), Err(TokenError::Expired));

        // Claims swapped to bob's but signature kept: rejected.
        let (bob, _) = signer.sign("bob", "phone", Platform::Ios, HOUR).unwrap();
        let forged = format!(
            "{}.{}",
            bob.rsplit_once('.').unwrap().0,
            token.rsplit_once('.').unwrap().1
        );
        assert_eq!(signer.verify(&forged), Err(TokenError::BadSignature));
        for junk in ["", "v1", "v1.x.y", "v2.a.b", "not a token"] {
            assert!(signer.verify(junk).is_err(), "{junk}");
        }
    }

    #[test]
    fn ids_with_topic_syntax_cannot_be_signed() {
        let signer = TokenSigner::new("0123456789abcdef0123456789abcdef");
        for (user, device) in [("a/b", "d"), ("#", "d"), ("a", "+")] {
            assert_eq!(
                signer.sign(user, device, Platform::Web, HOUR).unwrap_err(),
                TokenError::InvalidId
            );
        }
    }
}
