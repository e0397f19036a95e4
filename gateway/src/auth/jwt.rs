//! Standard JWTs from a team's identity provider, accepted as device tokens (`[jwt]`).
//!
//! HMAC tokens are checked against `jwt.hmac_secret`; the others (RSA, RSA-PSS, ECDSA, EdDSA)
//! against the provider's public keys, a JWKS file or URL. The key set is read again every
//! `jwks_refresh`, and, when a token names a key id the set does not hold (the provider rotated
//! its keys), at once — at most once per `jwks_min_refetch`, so tokens with made-up key ids
//! cannot make the gateway hammer the provider. Whoever reloads does so for everyone; the
//! others keep verifying with the keys held meanwhile.
//!
//! The claims named by `jwt.user_claim`, `jwt.device_claim` and `jwt.platform_claim` say who
//! the token speaks for; `exp` is required, `nbf`, `iss` and `aud` are checked. `iat` (seconds)
//! is when it was issued, for revocations: a token without `iat` counts as issued at 0, so any
//! revocation of its user or device refuses it, and one issued in the second of a revocation
//! is refused too (a second is all `iat` tells).

use super::token::{DeviceClaims, TokenError};
use broker_config::Jwt as JwtConfig;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use protocol::envelope::Platform;
use protocol::topics::is_valid_id;
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::RwLock;
use std::time::Duration;
use tokio::time::Instant;

/// The longest a fetch of the JWKS URL may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the public keys come from.
enum KeySource {
    File(PathBuf),
    Url { url: String, http: reqwest::Client },
}

impl KeySource {
    async fn load(&self) -> anyhow::Result<JwkSet> {
        let text = match self {
            Self::File(path) => tokio::fs::read_to_string(path)
                .await
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?,
            Self::Url { url, http } => {
                let response = http.get(url).timeout(FETCH_TIMEOUT).send().await?;
                response.error_for_status()?.text().await?
            }
        };
        Ok(serde_json::from_str(&text)?)
    }

    fn describe(&self) -> String {
        match self {
            Self::File(path) => path.display().to_string(),
            Self::Url { url, .. } => url.clone(),
        }
    }
}

/// The provider's public keys, as last loaded.
struct PublicKeys {
    source: KeySource,
    set: RwLock<JwkSet>,
    refresh: Duration,
    min_refetch: Duration,
    /// When the set was last loaded (or tried): one caller at a time reloads.
    loaded_at: tokio::sync::Mutex<Option<Instant>>,
}

impl PublicKeys {
    /// Loads the set again when it is older than `older_than`; failures keep the old set.
    async fn reload_if_older(&self, older_than: Duration) {
        let Ok(mut loaded_at) = self.loaded_at.try_lock() else {
            return; // another caller is loading it
        };
        if loaded_at.is_some_and(|at| at.elapsed() < older_than) {
            return;
        }
        *loaded_at = Some(Instant::now());
        match self.source.load().await {
            Ok(set) => {
                tracing::info!(keys = set.keys.len(), source = %self.source.describe(), "JWT keys loaded");
                *self.set.write().unwrap_or_else(|p| p.into_inner()) = set;
            }
            Err(e) => {
                tracing::warn!(source = %self.source.describe(), "cannot load the JWT keys: {e:#}")
            }
        }
    }

    /// The keys that may have signed a token with `key_id` (all of the set when it names none).
    fn candidates(&self, key_id: Option<&str>) -> Vec<DecodingKey> {
        let set = self.set.read().unwrap_or_else(|p| p.into_inner());
        (set.keys.iter())
            .filter(|jwk| key_id.is_none() || jwk.common.key_id.as_deref() == key_id)
            .filter_map(|jwk| DecodingKey::from_jwk(jwk).ok())
            .collect()
    }

    fn holds(&self, key_id: &str) -> bool {
        let set = self.set.read().unwrap_or_else(|p| p.into_inner());
        set.find(key_id).is_some()
    }
}

/// Verifies standard JWTs as device tokens.
pub struct JwtVerifier {
    /// One per algorithm accepted: a validation holds the algorithms of one family only.
    validations: Vec<Validation>,
    hmac: Option<DecodingKey>,
    public: Option<PublicKeys>,
    user_claim: String,
    device_claim: String,
    platform_claim: String,
    default_platform: Platform,
}

impl JwtVerifier {
    /// The verifier `[jwt]` describes (checked by the configuration), its public keys loaded
    /// once; `None` when JWTs are not enabled. A JWKS file must be readable at start; a URL
    /// that cannot be fetched is tried again as tokens arrive.
    pub async fn configured(config: &JwtConfig) -> anyhow::Result<Option<Self>> {
        if !config.enabled {
            return Ok(None);
        }
        let algorithms: Vec<Algorithm> = (config.algorithms.iter())
            .map(|name| Algorithm::from_str(name).map_err(|e| anyhow::anyhow!("{name}: {e}")))
            .collect::<anyhow::Result<_>>()?;
        let mut validation = Validation::new(algorithms[0]);
        validation.leeway = config.leeway.as_secs();
        validation.validate_nbf = true;
        validation.validate_aud = config.audience.is_some();
        let mut required = vec!["exp"];
        if let Some(issuer) = &config.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        if let Some(audience) = &config.audience {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        let validations = (algorithms.iter())
            .map(|&algorithm| {
                let mut for_one = validation.clone();
                for_one.algorithms = vec![algorithm];
                for_one
            })
            .collect();
        let hmac = config
            .hmac_secret
            .as_ref()
            .map(|secret| DecodingKey::from_secret(secret.as_bytes()));
        let source = match (&config.jwks_file, &config.jwks_url) {
            (Some(path), _) => Some(KeySource::File(path.clone())),
            (None, Some(url)) => Some(KeySource::Url {
                url: url.clone(),
                http: reqwest::Client::new(),
            }),
            (None, None) => None,
        };
        let public = source.map(|source| PublicKeys {
            source,
            set: RwLock::new(JwkSet { keys: Vec::new() }),
            refresh: config.jwks_refresh,
            min_refetch: config.jwks_min_refetch,
            loaded_at: tokio::sync::Mutex::new(None),
        });
        if let Some(keys) = &public {
            if let KeySource::File(path) = &keys.source {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("jwt.jwks_file {}: {e}", path.display()))?;
                serde_json::from_str::<JwkSet>(&text)
                    .map_err(|e| anyhow::anyhow!("jwt.jwks_file {}: {e}", path.display()))?;
            }
            keys.reload_if_older(Duration::ZERO).await;
        }
        Ok(Some(Self {
            validations,
            hmac,
            public,
            user_claim: config.user_claim.clone(),
            device_claim: config.device_claim.clone(),
            platform_claim: config.platform_claim.clone(),
            default_platform: Platform::parse(&config.default_platform)
                .expect("checked with the configuration"),
        }))
    }

    /// Checks the signature, the time claims, the issuer and the audience, and returns who the
    /// token speaks for.
    pub async fn verify(&self, token: &str) -> Result<DeviceClaims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let validation = (self.validations.iter())
            .find(|validation| validation.algorithms == [header.alg])
            .ok_or(TokenError::NotAccepted(
                "its algorithm is not in jwt.algorithms",
            ))?;
        let keys = match (&header.alg, &self.hmac, &self.public) {
            (Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512, Some(secret), _) => {
                vec![secret.clone()]
            }
            (Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512, None, _) => {
                return Err(TokenError::UnknownKey)
            }
            (_, _, Some(public)) => {
                public.reload_if_older(public.refresh).await;
                if let Some(key_id) = header.kid.as_deref().filter(|id| !public.holds(id)) {
                    public.reload_if_older(public.min_refetch).await;
                    if !public.holds(key_id) {
                        return Err(TokenError::UnknownKey);
                    }
                }
                public.candidates(header.kid.as_deref())
            }
            (_, _, None) => return Err(TokenError::UnknownKey),
        };
        for key in keys
            .iter()
            .filter(|key| key.family() == header.alg.family())
        {
            match jsonwebtoken::decode::<Map<String, Value>>(token, key, validation) {
                Ok(data) => return self.claims(data.claims),
                // Not this key's signature: maybe another's (a set without key ids).
                Err(e) if signed_by_another(e.kind()) => continue,
                // The signature held; the claims did not.
                Err(e) => return Err(refusal(e.kind())),
            }
        }
        Err(TokenError::BadSignature)
    }

    fn claims(&self, claims: Map<String, Value>) -> Result<DeviceClaims, TokenError> {
        let text = |name: &str| claims.get(name).and_then(Value::as_str);
        let user = text(&self.user_claim).ok_or(TokenError::MissingClaim("user claim"))?;
        let device = text(&self.device_claim).ok_or(TokenError::MissingClaim("device claim"))?;
        if !is_valid_id(user) || !is_valid_id(device) {
            return Err(TokenError::InvalidId);
        }
        let platform = match text(&self.platform_claim) {
            Some(name) => Platform::parse(name).ok_or(TokenError::NotAccepted(
                "its platform is not ios, android, web or desktop",
            ))?,
            None => self.default_platform,
        };
        let seconds = |name: &str| claims.get(name).and_then(Value::as_u64);
        Ok(DeviceClaims {
            user: user.to_string(),
            device: device.to_string(),
            platform,
            exp: seconds("exp").ok_or(TokenError::MissingClaim("exp"))?,
            issued_at_ms: seconds("iat").unwrap_or(0).saturating_mul(1000),
        })
    }
}

/// Whether a failure says only that the key tried is not the one that signed.
fn signed_by_another(kind: &ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::InvalidSignature
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidKeyFormat
            | ErrorKind::InvalidAlgorithm
    )
}

/// What a JWT failure (past its signature) is called to the client.
fn refusal(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotAccepted("it is not valid yet (nbf)"),
        ErrorKind::InvalidIssuer => TokenError::NotAccepted("its issuer is not jwt.issuer"),
        ErrorKind::InvalidAudience => TokenError::NotAccepted("its audience is not jwt.audience"),
        ErrorKind::MissingRequiredClaim(_) => {
            TokenError::MissingClaim("required claim (exp, iss, aud)")
        }
        _ => TokenError::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infra::time::unix_seconds;
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const SECRET: &str = "a-shared-secret-of-32-characters";

    /// A key pair of `alg`'s family, as the provider holds it, and its public JWK named `id`.
    fn key_pair(alg: Algorithm, id: &str) -> (EncodingKey, Jwk) {
        let (scheme, encoding): (_, fn(&[u8]) -> EncodingKey) = match alg {
            Algorithm::ES256 => (&rcgen::PKCS_ECDSA_P256_SHA256, EncodingKey::from_ec_der),
            Algorithm::EdDSA => (&rcgen::PKCS_ED25519, EncodingKey::from_ed_der),
            other => panic!("no test keys for {other:?}"),
        };
        let pair = rcgen::KeyPair::generate_for(scheme).unwrap();
        let private = encoding(&pair.serialize_der());
        let mut public = match alg {
            // The crate makes no JWK of an Ed25519 key: its public half is `x`, as RFC 8037 says.
            Algorithm::EdDSA => serde_json::from_value(json!({
                "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA",
                "x": base64::Engine::encode(
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                    pair.public_key_raw(),
                ),
            }))
            .unwrap(),
            _ => Jwk::from_encoding_key(&private, alg).unwrap(),
        };
        public.common.key_id = Some(id.to_string());
        (private, public)
    }

    fn sign(alg: Algorithm, key_id: Option<&str>, key: &EncodingKey, claims: Value) -> String {
        let header = Header {
            kid: key_id.map(str::to_string),
            ..Header::new(alg)
        };
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    }

    fn claims() -> Value {
        json!({
            "sub": "alice", "device_id": "phone", "platform": "ios",
            "iss": "https://idp.test/", "aud": "gateway",
            "iat": unix_seconds(), "exp": unix_seconds() + 3600,
        })
    }

    fn config(jwks_file: Option<PathBuf>) -> JwtConfig {
        JwtConfig {
            enabled: true,
            algorithms: vec!["HS256".into(), "ES256".into(), "EdDSA".into()],
            hmac_secret: Some(SECRET.into()),
            jwks_file,
            issuer: Some("https://idp.test/".into()),
            audience: Some("gateway".into()),
            ..JwtConfig::default()
        }
    }

    /// A verifier whose public keys are `keys`, in a JWKS file.
    async fn verifier(keys: &[&Jwk]) -> (JwtVerifier, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, json!({ "keys": keys }).to_string()).unwrap();
        let verifier = JwtVerifier::configured(&config(Some(path))).await.unwrap();
        (verifier.unwrap(), dir)
    }

    #[tokio::test]
    async fn hmac_ecdsa_and_eddsa_tokens_say_who_they_speak_for() {
        let (es, es_public) = key_pair(Algorithm::ES256, "es-1");
        let (ed, ed_public) = key_pair(Algorithm::EdDSA, "ed-1");
        let (jwt, _dir) = verifier(&[&es_public, &ed_public]).await;
        let hmac = EncodingKey::from_secret(SECRET.as_bytes());
        for token in [
            sign(Algorithm::HS256, None, &hmac, claims()),
            sign(Algorithm::ES256, Some("es-1"), &es, claims()),
            sign(Algorithm::EdDSA, Some("ed-1"), &ed, claims()),
            sign(Algorithm::EdDSA, None, &ed, claims()),
        ] {
            let device = jwt.verify(&token).await.unwrap();
            assert_eq!(
                (
                    device.user.as_str(),
                    device.device.as_str(),
                    device.platform
                ),
                ("alice", "phone", Platform::Ios)
            );
            assert_eq!(
                device.issued_at_ms,
                claims()["iat"].as_u64().unwrap() * 1000
            );
        }
    }

    #[tokio::test]
    async fn tokens_that_do_not_hold_are_refused_with_the_reason() {
        let (es, es_public) = key_pair(Algorithm::ES256, "es-1");
        let (stranger, _) = key_pair(Algorithm::ES256, "es-1");
        let (jwt, _dir) = verifier(&[&es_public]).await;
        let with = |change: Value| {
            let mut claims = claims();
            for (name, value) in change.as_object().unwrap() {
                match value {
                    Value::Null => claims.as_object_mut().unwrap().remove(name),
                    value => claims
                        .as_object_mut()
                        .unwrap()
                        .insert(name.clone(), value.clone()),
                };
            }
            claims
        };
        let cases = [
            (
                sign(Algorithm::ES256, Some("es-1"), &stranger, claims()),
                TokenError::BadSignature,
            ),
            (
                sign(Algorithm::ES256, Some("es-9"), &es, claims()),
                TokenError::UnknownKey,
            ),
            (
                sign(
                    Algorithm::ES256,
                    Some("es-1"),
                    &es,
                    with(json!({"exp": unix_seconds() - 600})),
                ),
                TokenError::Expired,
            ),
            (
                sign(
                    Algorithm::ES256,
                    Some("es-1"),
                    &es,
                    with(json!({"iss": "https://evil/"})),
                ),
                TokenError::NotAccepted("its issuer is not jwt.issuer"),
            ),
            (
                sign(
                    Algorithm::ES256,
                    Some("es-1"),
                    &es,
                    with(json!({"aud": "other"})),
                ),
                TokenError::NotAccepted("its audience is not jwt.audience"),
            ),
            (
                sign(
                    Algorithm::ES256,
                    Some("es-1"),
                    &es,
                    with(json!({"device_id": null})),
                ),
                TokenError::MissingClaim("device claim"),
            ),
            (
                sign(
                    Algorithm::ES256,
                    Some("es-1"),
                    &es,
                    with(json!({"sub": "a/b"})),
                ),
                TokenError::InvalidId,
            ),
            (
                sign(
                    Algorithm::HS384,
                    None,
                    &EncodingKey::from_secret(SECRET.as_bytes()),
                    claims(),
                ),
                TokenError::NotAccepted("its algorithm is not in jwt.algorithms"),
            ),
            ("not.a.jwt".to_string(), TokenError::Malformed),
        ];
        for (token, refused) in cases {
            assert_eq!(jwt.verify(&token).await, Err(refused));
        }
    }

    /// The provider's public key offered as an HMAC secret: the signature an attacker can make
    /// with what is public never verifies.
    #[tokio::test]
    async fn a_public_key_is_never_taken_for_an_hmac_secret() {
        let (_, es_public) = key_pair(Algorithm::ES256, "es-1");
        let (jwt, _dir) = verifier(&[&es_public]).await;
        let public_bytes = serde_json::to_vec(&es_public).unwrap();
        let forged = sign(
            Algorithm::HS256,
            Some("es-1"),
            &EncodingKey::from_secret(&public_bytes),
            claims(),
        );
        assert_eq!(jwt.verify(&forged).await, Err(TokenError::BadSignature));
    }
}
