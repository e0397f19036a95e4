//! Device tokens: `v1.<key id>.<claims>.<signature>`, base64url claims, HMAC-SHA256 over
//! everything before the last dot with the key named by the id.
//!
//! A token binds one user and one device (and the device's platform, which the login policy
//! counts). It is the MQTT password and the JSON WebSocket `auth` token. Verification is
//! constant-time and checks expiry; ids are checked so a token cannot carry topic syntax.
//!
//! The key id lets the secret be rotated: the signer holds several keys, signs with the first
//! and verifies with the one a token names, so tokens signed before a new key came in still
//! connect until their key is removed. Tokens from before key ids (`v1.<claims>.<signature>`)
//! are verified against every key held.

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
    #[error("token was signed with a key this gateway does not hold (any more)")]
    UnknownKey,
    #[error("token is not accepted here: {0}")]
    NotAccepted(&'static str),
    #[error("token names no {0}")]
    MissingClaim(&'static str),
}

/// A signing key and the id tokens name it by.
#[derive(Clone)]
struct TokenKey {
    id: String,
    secret: Vec<u8>,
}

impl TokenKey {
    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC accepts keys of any length")
    }

    /// Whether `signature` is this key's over `signed`, compared in constant time.
    fn signed(&self, signed: &str, signature: &[u8]) -> bool {
        let mut mac = self.mac();
        mac.update(signed.as_bytes());
        mac.verify_slice(signature).is_ok()
    }
}

#[derive(Clone)]
pub struct TokenSigner {
    /// The first signs; every one verifies.
    keys: Vec<TokenKey>,
}

/// The key id of `auth.token_secret` and of the secret generated into the data dir.
pub const SINGLE_KEY_ID: &str = "0";

impl TokenSigner {
    /// A signer with one key, [`SINGLE_KEY_ID`].
    pub fn new(secret: &str) -> Self {
        Self::with_keys([(SINGLE_KEY_ID, secret)])
    }

    /// A signer with `(id, secret)` keys: the first signs. Ids hold no `.` (the configuration
    /// checks them).
    pub fn with_keys<'a>(keys: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let keys: Vec<TokenKey> = (keys.into_iter())
            .map(|(id, secret)| TokenKey {
                id: id.to_string(),
                secret: secret.as_bytes().to_vec(),
            })
            .collect();
        assert!(!keys.is_empty(), "a token signer needs a key");
        Self { keys }
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
        let key = &self.keys[0];
        let signed = format!("{VERSION}.{}.{body}", key.id);
        let mut mac = key.mac();
        mac.update(signed.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        Ok((format!("{signed}.{signature}"), claims))
    }

    /// Whether `token` is one of ours (rather than a standard JWT).
    pub fn is_ours(token: &str) -> bool {
        token.starts_with(VERSION) && token[VERSION.len()..].starts_with('.')
    }

    /// Checks the signature, the expiry and the ids, and returns the claims.
    pub fn verify(&self, token: &str) -> Result<DeviceClaims, TokenError> {
        let (signed, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let mut parts = signed.split('.');
        let (key_id, body) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(VERSION), Some(body), None, _) => (None, body),
            (Some(VERSION), Some(key_id), Some(body), None) => (Some(key_id), body),
            _ => return Err(TokenError::Malformed),
        };
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Malformed)?;
        let verified = match key_id {
            Some(id) => (self.keys.iter().find(|key| key.id == id))
                .ok_or(TokenError::UnknownKey)?
                .signed(signed, &signature),
            None => self.keys.iter().any(|key| key.signed(signed, &signature)),
        };
        if !verified {
            return Err(TokenError::BadSignature);
        }
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
        for junk in [
            "",
            "v1",
            "v1.x.y",
            "v2.a.b",
            "v1.0.a.b.c",
            "v1..",
            "not a token",
        ] {
            assert!(signer.verify(junk).is_err(), "{junk}");
        }
    }

    const OLD: &str = "old-secret-old-secret-old-secret";
    const NEW: &str = "new-secret-new-secret-new-secret";

    #[test]
    fn a_rotated_signer_verifies_old_tokens_until_their_key_goes() {
        let before = TokenSigner::with_keys([("k1", OLD)]);
        let during = TokenSigner::with_keys([("k2", NEW), ("k1", OLD)]);
        let after = TokenSigner::with_keys([("k2", NEW)]);
        let (old, _) = before.sign("alice", "phone", Platform::Ios, HOUR).unwrap();
        let (new, _) = during.sign("alice", "phone", Platform::Ios, HOUR).unwrap();
        assert!(old.starts_with("v1.k1.") && new.starts_with("v1.k2."));

        assert!(during.verify(&old).is_ok(), "the old key still verifies");
        assert!(during.verify(&new).is_ok());
        assert_eq!(before.verify(&new), Err(TokenError::UnknownKey));
        assert_eq!(after.verify(&old), Err(TokenError::UnknownKey));
        assert!(after.verify(&new).is_ok());

        // Naming another key does not make its signature that key's.
        let renamed = old.replacen("v1.k1.", "v1.k2.", 1);
        assert_eq!(during.verify(&renamed), Err(TokenError::BadSignature));
    }

    #[test]
    fn tokens_from_before_key_ids_verify_against_every_key() {
        let (token, claims) = TokenSigner::with_keys([("k1", OLD)])
            .sign("alice", "phone", Platform::Ios, HOUR)
            .unwrap();
        // The same claims signed the old way: `v1.<claims>`, no key id.
        let body = token.split('.').nth(2).unwrap();
        let signed = format!("v1.{body}");
        let mut mac = Hmac::<Sha256>::new_from_slice(OLD.as_bytes()).unwrap();
        mac.update(signed.as_bytes());
        let legacy = format!(
            "{signed}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        );
        let during = TokenSigner::with_keys([("k2", NEW), ("k1", OLD)]);
        assert_eq!(during.verify(&legacy), Ok(claims));
        let after = TokenSigner::with_keys([("k2", NEW)]);
        assert_eq!(after.verify(&legacy), Err(TokenError::BadSignature));
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
