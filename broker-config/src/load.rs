//! Reading a configuration file, applying environment overrides, and validating the result.

use crate::channels::Channels;
use crate::sections::*;
use serde::de::DeserializeOwned;
use std::fmt;
use std::path::Path;

/// Environment variables `GATEWAY__SECTION__KEY=value` override `[section] key = value`.
/// The value is read as a TOML value when it parses as one (`100`, `true`, `["a","b"]`), and as
/// a string otherwise (`127.0.0.1:1883`, `10s`).
pub const ENV_PREFIX: &str = "GATEWAY__";

/// One problem with the configuration, at a dotted key such as `limits.max_inflight`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl Config {
    /// Reads `file` (when given), applies the `GATEWAY__…` variables of `env`, and validates.
    /// Returns every error found, each with its key.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, Vec<ConfigError>> {
        let text = match file {
            Some(path) => std::fs::read_to_string(path).map_err(|e| {
                vec![ConfigError::new(
                    "(file)",
                    format!("cannot read {}: {e}", path.display()),
                )]
            })?,
            None => String::new(),
        };
        let env: Vec<(String, String)> = env.into_iter().collect();
        let on_defaults_alone =
            file.is_none() && !env.iter().any(|(name, _)| name.starts_with(ENV_PREFIX));
        let mut config = Self::from_toml_str(&text, env)?;
        config.web.dev_mode.get_or_insert(on_defaults_alone);
        Ok(config)
    }

    /// Like [`Config::load`], from TOML text.
    pub fn from_toml_str(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, Vec<ConfigError>> {
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| vec![syntax_error(text, &e)])?;
        let mut errors = Vec::new();
        apply_env_overrides(&mut table, env, &mut errors);
        check_keys(&table, &mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| vec![ConfigError::new("(config)", e.message())])?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that are well-typed but unusable.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut check = |ok: bool, key: &str, message: &str| {
            if !ok {
                errors.push(ConfigError::new(key, message));
            }
        };
        let l = &self.limits;
        check(
            l.handshake_timeout.as_millis() >= 100,
            "limits.handshake_timeout",
            "must be at least 100ms",
        );
        check(
            l.max_connections >= 1,
            "limits.max_connections",
            "must be at least 1",
        );
        check(
            (1024..=256 * 1024 * 1024).contains(&l.max_packet_size),
            "limits.max_packet_size",
            "must be between 1024 and 268435456 bytes",
        );
        check(
            self.listeners.backlog >= 1,
            "listeners.backlog",
            "must be at least 1",
        );
        check(
            l.max_inflight >= 1,
            "limits.max_inflight",
            "must be at least 1",
        );
        check(
            l.max_subscriptions >= 1,
            "limits.max_subscriptions",
            "must be at least 1",
        );
        check(
            l.max_keepalive.as_secs() >= 15 * 60 && l.max_keepalive.as_secs() <= 65535,
            "limits.max_keepalive",
            "must be between 15m (mobile heartbeats go up to 15 minutes) and 65535s",
        );
        check(
            l.outbox_capacity >= 16,
            "limits.outbox_capacity",
            "must be at least 16",
        );
        check(
            l.ws_max_message >= 1024,
            "limits.ws_max_message",
            "must be at least 1024 bytes",
        );
        check(
            l.ws_ping_interval.as_millis() >= 100,
            "limits.ws_ping_interval",
            "must be at least 100ms",
        );
        check(
            l.http_max_body >= 1024,
            "limits.http_max_body",
            "must be at least 1024 bytes",
        );
        check(
            l.shutdown_grace.as_millis() >= 100,
            "limits.shutdown_grace",
            "must be at least 100ms",
        );
        check(
            l.receive_maximum >= 1,
            "limits.receive_maximum",
            "must be at least 1",
        );
        let rl = &self.rate_limits;
        for (rate, name) in [
            (rl.send, "rate_limits.send"),
            (rl.signal, "rate_limits.signal"),
            (rl.ack, "rate_limits.ack"),
            (rl.sync, "rate_limits.sync"),
            (rl.quiet_hours, "rate_limits.quiet_hours"),
            (rl.api_key, "rate_limits.api_key"),
        ] {
            check(
                rate.is_unlimited() || rate.burst >= 1,
                &format!("{name}.burst"),
                "must be at least 1 when per_second is set (per_second = 0 means no limit)",
            );
        }
        check(
            rl.max_devices >= 1,
            "rate_limits.max_devices",
            "must be at least 1",
        );
        let wechat = &self.channels.wechat;
        if let Some(key) = &wechat.encoding_aes_key {
            check(
                key.len() == 43
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/'),
                "channels.wechat.encoding_aes_key",
                "must be the account's 43-character EncodingAESKey",
            );
        }
        check(
            !wechat.enabled || wechat.callback_token.as_deref().is_some_and(|t| !t.is_empty()),
            "channels.wechat.callback_token",
            "required when channels.wechat.enabled: the account's server token, which signs WeChat's callbacks",
        );
        check(
            wechat.callback_window.as_secs() >= 1 && wechat.callback_max_nonces >= 1,
            "channels.wechat.callback_window",
            "must be at least 1s, with callback_max_nonces at least 1",
        );
        check(
            l.max_topic_length >= 64,
            "limits.max_topic_length",
            "must be at least 64 (user topics hold a user and a device id)",
        );
        check(
            l.http_request_timeout.as_millis() >= 100,
            "limits.http_request_timeout",
            "must be at least 100ms",
        );
        check(
            l.write_timeout.as_millis() >= 100,
            "limits.write_timeout",
            "must be at least 100ms",
        );
        check(
            (1..=4096).contains(&l.blocking_threads),
            "limits.blocking_threads",
            "must be between 1 and 4096",
        );
        check(
            self.sessions.max_queued_bytes >= 1024,
            "sessions.max_queued_bytes",
            "must be at least 1024",
        );
        check(
            self.sessions.max_queued >= 1,
            "sessions.max_queued",
            "must be at least 1",
        );
        check(
            self.sessions.max_expiry.as_secs() <= u32::MAX as u64,
            "sessions.max_expiry",
            "must be at most 4294967295s (MQTT's longest session expiry)",
        );
        if let Some(secret) = &self.auth.token_secret {
            check(
                secret.len() >= 32,
                "auth.token_secret",
                "must be at least 32 characters",
            );
        }
        check(
            self.auth.token_secret.is_none() || self.auth.token_keys.is_empty(),
            "auth.token_keys",
            "set either auth.token_secret or auth.token_keys, not both (token_secret is key id 0)",
        );
        for (i, key) in self.auth.token_keys.iter().enumerate() {
            let valid = key
                .split_once(':')
                .is_some_and(|(id, secret)| is_key_id(id) && secret.len() >= 32);
            check(
                valid,
                &format!("auth.token_keys[{i}]"),
                "must be \"id:secret\": an id of 1-32 letters, digits, '_' or '-', a secret of at least 32 characters",
            );
        }
        let ids: Vec<&str> = (self.auth.token_keys.iter())
            .filter_map(|key| key.split_once(':').map(|(id, _)| id))
            .collect();
        check(
            (1..ids.len()).all(|i| !ids[..i].contains(&ids[i])),
            "auth.token_keys",
            "key ids must differ",
        );
        self.check_jwt(&mut check);
        for (i, key) in self.auth.api_keys.iter().enumerate() {
            check(
                key.len() >= 16 && !key.contains(char::is_whitespace),
                &format!("auth.api_keys[{i}]"),
                "must be at least 16 characters without spaces",
            );
        }
        check(
            (1..=366 * 24 * 3600).contains(&self.auth.default_token_ttl.as_secs()),
            "auth.default_token_ttl",
            "must be between 1s and 366d (a revocation is kept that long)",
        );
        check(
            self.sessions.approval_timeout.as_secs() >= 1,
            "sessions.approval_timeout",
            "must be at least 1s",
        );
        let st = &self.store;
        for (i, key) in st.encryption_keys.iter().enumerate() {
            check(
                is_at_rest_key(key),
                &format!("store.encryption_keys[{i}]"),
                "must be \"id:key\": an id of 1-16 letters or digits, then 16 bytes (SM4's 128-bit key) as 32 hex digits",
            );
        }
        check(
            (1..=65536).contains(&st.max_batch),
            "store.max_batch",
            "must be between 1 and 65536",
        );
        check(
            st.max_queued_writes >= st.max_batch,
            "store.max_queued_writes",
            "must be at least store.max_batch",
        );
        check(
            (1..=1024).contains(&st.redis_queue_shards),
            "store.redis_queue_shards",
            "must be between 1 and 1024",
        );
        check(
            st.redis_seeds.is_empty() || st.redis_cluster,
            "store.redis_seeds",
            "are for a Redis Cluster: set store.redis_cluster = true",
        );
        check(
            (st.redis_wait_replicas == 0 && !st.redis_wait_aof)
                || st.redis_wait_timeout.as_millis() >= 1,
            "store.redis_wait_timeout",
            "must be at least 1ms when store.redis_wait_replicas or store.redis_wait_aof is set \
             (0 would wait forever)",
        );
        check(
            st.data_key_cache >= 1,
            "store.data_key_cache",
            "must be at least 1",
        );
        check(
            st.relay_queue >= 1,
            "store.relay_queue",
            "must be at least 1",
        );
        check(
            (1 << 20..=1 << 30).contains(&st.memtable_size),
            "store.memtable_size",
            "must be between 1 MiB and 1 GiB (in bytes)",
        );
        check(
            st.node_heartbeat.as_millis() >= 100,
            "store.node_heartbeat",
            "must be at least 100ms",
        );
        check(
            st.node_timeout >= st.node_heartbeat * 2,
            "store.node_timeout",
            "must be at least twice store.node_heartbeat",
        );
        if let Some(node) = &st.node_id {
            check(
                !node.is_empty()
                    && node.len() <= 64
                    && node
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "store.node_id",
                "must be 1-64 letters, digits, '-' or '_'",
            );
        }
        let r = &self.roaming;
        check(
            (1..=10_000).contains(&r.page_size),
            "roaming.page_size",
            "must be between 1 and 10000",
        );
        check(
            r.page_max_bytes >= 1024,
            "roaming.page_max_bytes",
            "must be at least 1024 bytes",
        );
        check(
            r.retention_count >= 1,
            "roaming.retention_count",
            "must be at least 1",
        );
        check(
            r.retention_age.as_secs() >= 60,
            "roaming.retention_age",
            "must be at least 1m",
        );
        check(
            r.sweep_interval.as_millis() >= 100 && r.sweep_interval.as_secs() <= 24 * 3600,
            "roaming.sweep_interval",
            "must be between 100ms and 24h",
        );
        check(
            r.max_read_limit >= 1,
            "roaming.max_read_limit",
            "must be at least 1",
        );
        check(
            r.idempotency_window.as_secs() >= 1 && r.idempotency_window.as_secs() <= 30 * 24 * 3600,
            "roaming.idempotency_window",
            "must be between 1s and 30d",
        );
        match (&self.tls.cert, &self.tls.key) {
            (Some(cert), Some(key)) => {
                for (name, path) in [("tls.cert", cert), ("tls.key", key)] {
                    check(
                        path.is_file(),
                        name,
                        &format!("file {} does not exist", path.display()),
                    );
                }
            }
            (None, None) => {}
            (Some(_), None) => check(false, "tls.key", "is required when tls.cert is set"),
            (None, Some(_)) => check(false, "tls.cert", "is required when tls.key is set"),
        }
        let n = &self.notify;
        check(
            n.max_attempts >= 1,
            "notify.max_attempts",
            "must be at least 1",
        );
        for (value, name) in [
            (n.concurrency, "notify.concurrency"),
            (n.decision_batch, "notify.decision_batch"),
            (n.decision_batches, "notify.decision_batches"),
            (n.max_per_request, "notify.max_per_request"),
            (n.max_waiting, "notify.max_waiting"),
        ] {
            check(value >= 1, name, "must be at least 1");
        }
        check(
            n.max_dedup_claims >= 2 * n.decision_batch,
            "notify.max_dedup_claims",
            "must be at least twice notify.decision_batch (a batch claims up to two per notification)",
        );
        check(
            (1 << 20..=1 << 30).contains(&n.ledger_memtable_size),
            "notify.ledger_memtable_size",
            "must be between 1 MiB and 1 GiB (in bytes)",
        );
        check(
            n.record_retention.as_secs() >= 3600,
            "notify.record_retention",
            "must be at least 1h",
        );
        check(
            n.poll_interval.as_millis() >= 10,
            "notify.poll_interval",
            "must be at least 10ms",
        );
        check(
            !n.mqtt_topic.is_empty()
                && !n.mqtt_topic.contains(['+', '#', '\0'])
                && !n.mqtt_topic.starts_with("u/")
                && !n.mqtt_topic.starts_with("pub/"),
            "notify.mqtt_topic",
            "must be a topic name without wildcards, outside u/ and pub/",
        );
        check(
            n.retry_base <= n.retry_max,
            "notify.retry_base",
            "must not exceed notify.retry_max",
        );
        let rec = &self.record;
        if let Some(path) = &rec.path {
            let dir = match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir,
                _ => Path::new("."),
            };
            check(
                dir.is_dir(),
                "record.path",
                &format!("directory {} does not exist", dir.display()),
            );
        }
        check(
            rec.max_bytes >= 4096,
            "record.max_bytes",
            "must be at least 4096 bytes",
        );
        check(
            (1..=1 << 24).contains(&rec.queue),
            "record.queue",
            "must be between 1 and 16777216 events",
        );
        check(
            rec.flush_interval.as_millis() >= 10 && rec.flush_interval.as_secs() <= 60,
            "record.flush_interval",
            "must be between 10ms and 60s",
        );
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// `id:hex` with a short alphanumeric id and SM4's 128-bit key in hex. The id travels with every
/// ciphertext, so old keys keep decrypting after rotation.
pub fn is_at_rest_key(key: &str) -> bool {
    let Some((id, hex)) = key.split_once(':') else {
        return false;
    };
    (1..=16).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric())
        && hex.len() == 32
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

fn syntax_error(text: &str, error: &toml::de::Error) -> ConfigError {
    let line = error
        .span()
        .map(|span| text[..span.start].lines().count().max(1));
    let key = line.map_or("(syntax)".to_string(), |l| format!("(line {l})"));
    ConfigError::new(key, error.message())
}

fn apply_env_overrides(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
    errors: &mut Vec<ConfigError>,
) {
    for (name, raw) in env {
        let Some(path) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let parts: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
        let [section, key] = parts.as_slice() else {
            errors.push(ConfigError::new(
                name.clone(),
                "expected GATEWAY__SECTION__KEY",
            ));
            continue;
        };
        let value = parse_env_value(&raw);
        let entry = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry.as_table_mut() {
            Some(section_table) => {
                section_table.insert(key.clone(), value);
            }
            None => errors.push(ConfigError::new(section.clone(), "must be a table")),
        }
    }
}

fn parse_env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

/// A token key's id: short, and free of the `.` and `:` that separate it.
fn is_key_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The JWT algorithms the gateway verifies, by their JOSE names.
pub const JWT_ALGORITHMS: [&str; 12] = [
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

impl Config {
    fn check_jwt(&self, check: &mut impl FnMut(bool, &str, &str)) {
        let jwt = &self.jwt;
        if !jwt.enabled {
            return;
        }
        check(
            !jwt.algorithms.is_empty(),
            "jwt.algorithms",
            "name at least one algorithm",
        );
        for (i, algorithm) in jwt.algorithms.iter().enumerate() {
            check(
                JWT_ALGORITHMS.contains(&algorithm.as_str()),
                &format!("jwt.algorithms[{i}]"),
                &format!("must be one of {}", JWT_ALGORITHMS.join(", ")),
            );
        }
        let hmac = jwt.algorithms.iter().any(|a| a.starts_with("HS"));
        let public = jwt.algorithms.iter().any(|a| !a.starts_with("HS"));
        check(
            !hmac || jwt.hmac_secret.as_ref().is_some_and(|s| s.len() >= 32),
            "jwt.hmac_secret",
            "required (at least 32 characters) when jwt.algorithms has an HMAC algorithm",
        );
        check(
            !public || (jwt.jwks_file.is_some() != jwt.jwks_url.is_some()),
            "jwt.jwks_file",
            "set one of jwt.jwks_file and jwt.jwks_url when jwt.algorithms has a public-key algorithm",
        );
        check(
            ["ios", "android", "web", "desktop"].contains(&jwt.default_platform.as_str()),
            "jwt.default_platform",
            "must be ios, android, web or desktop",
        );
        for (key, claim) in [
            ("jwt.user_claim", &jwt.user_claim),
            ("jwt.device_claim", &jwt.device_claim),
            ("jwt.platform_claim", &jwt.platform_claim),
        ] {
            check(!claim.is_empty(), key, "must name a claim");
        }
        check(
            jwt.jwks_refresh.as_secs() >= 1 && jwt.jwks_min_refetch.as_secs() >= 1,
            "jwt.jwks_refresh",
            "jwt.jwks_refresh and jwt.jwks_min_refetch must be at least 1s",
        );
    }
}

/// Checks every key on its own, so that all bad keys are reported rather than the first.
fn check_keys(table: &toml::Table, errors: &mut Vec<ConfigError>) {
    for (section, value) in table {
        let checker: fn(&str, &toml::Table, &mut Vec<ConfigError>) = match section.as_str() {
            "listeners" => check_section::<Listeners>,
            "tls" => check_section::<Tls>,
            "limits" => check_section::<Limits>,
            "rate_limits" => check_section::<RateLimits>,
            "auth" => check_section::<Auth>,
            "jwt" => check_section::<Jwt>,
            "sessions" => check_section::<Sessions>,
            "store" => check_section::<Store>,
            "roaming" => check_section::<Roaming>,
            "channels" => check_section::<Channels>,
            "notify" => check_section::<crate::notify::Notify>,
            "record" => check_section::<Record>,
            "log" => check_section::<Log>,
            "web" => check_section::<crate::web::Web>,
            _ => {
                errors.push(ConfigError::new(
                    section.clone(),
                    "unknown section (expected listeners, tls, limits, rate_limits, auth, jwt, sessions, store, roaming, channels, notify, record, log or web)",
                ));
                continue;
            }
        };
        match value.as_table() {
            Some(section_table) => checker(section, section_table, errors),
            None => errors.push(ConfigError::new(section.clone(), "must be a table")),
        }
    }
}

fn check_section<T: DeserializeOwned>(
    section: &str,
    table: &toml::Table,
    errors: &mut Vec<ConfigError>,
) {
    for (key, value) in table {
        let mut single = toml::Table::new();
        single.insert(key.clone(), value.clone());
        let deserializer = toml::Value::Table(single);
        if let Err(e) = serde_path_to_error::deserialize::<_, T>(deserializer) {
            let message = e.inner().message().to_string();
            errors.push(ConfigError::new(format!("{section}.{key}"), message));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn empty_config_is_the_default() {
        assert_eq!(
            Config::from_toml_str("", no_env()).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn shipped_file_parses_to_the_defaults() {
        assert_eq!(
            Config::from_toml_str(crate::DEFAULT_TOML, no_env()).unwrap(),
            Config::default()
        );
    }

    /// The quick start (no file, no variable) is in dev mode; anything configured is not,
    /// unless it says so.
    #[test]
    fn dev_mode_is_on_for_the_defaults_alone() {
        assert!(Config::load(None, no_env()).unwrap().web.dev_mode());
        let one_variable = vec![("GATEWAY__LOG__LEVEL".to_string(), "warn".to_string())];
        assert!(!Config::load(None, one_variable).unwrap().web.dev_mode());
        let asked = vec![("GATEWAY__WEB__DEV_MODE".to_string(), "true".to_string())];
        let config = Config::load(None, asked).unwrap();
        assert!(config.web.dev_mode() && config.web.demo());
        let file = std::env::temp_dir().join(format!("web-{}.toml", std::process::id()));
        std::fs::write(&file, "").unwrap();
        let from_file = Config::load(Some(&file), no_env()).unwrap();
        std::fs::remove_file(&file).unwrap();
        assert!(!from_file.web.dev_mode() && !from_file.web.demo());
    }

    #[test]
    fn every_error_is_reported_with_its_key() {
        let text = r#"
            [limits]
            max_inflight = "many"
            max_keepalive = "1m"
            typo_key = 3
            [auth]
            allow_anonymous = "yes"
            [nonsense]
        "#;
        let errors = Config::from_toml_str(text, no_env()).unwrap_err();
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        for expected in [
            "limits.max_inflight",
            "limits.typo_key",
            "auth.allow_anonymous",
            "nonsense",
        ] {
            assert!(keys.contains(&expected), "{expected} missing from {keys:?}");
        }
    }

    #[test]
    fn semantic_errors_after_types_are_fine() {
        let text = "[listeners]\nbacklog = 0\n[limits]\nmax_keepalive = \"1m\"\nmax_inflight = 0\n\
                    [tls]\ncert = \"/nope.pem\"\n[store]\nmemtable_size = 1000\n\
                    [roaming]\nidempotency_window = \"500ms\"\n";
        let errors = Config::from_toml_str(text, no_env()).unwrap_err();
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "listeners.backlog",
                "limits.max_inflight",
                "limits.max_keepalive",
                "store.memtable_size",
                "roaming.idempotency_window",
                "tls.key"
            ]
        );
    }

    #[test]
    fn an_enabled_wechat_needs_the_token_that_signs_its_callbacks() {
        let text = "[channels.wechat]\nenabled = true\n";
        let errors = Config::from_toml_str(text, no_env()).unwrap_err();
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["channels.wechat.callback_token"]);
        let text = "[channels.wechat]\nenabled = true\ncallback_token = \"t\"\n";
        assert!(Config::from_toml_str(text, no_env()).is_ok());
    }

    #[test]
    fn token_keys_and_jwt_settings_are_checked() {
        let keys = |text: &str| -> Vec<String> {
            match Config::from_toml_str(text, no_env()) {
                Ok(_) => Vec::new(),
                Err(errors) => errors.into_iter().map(|e| e.key).collect(),
            }
        };
        let secret = "s".repeat(32);
        assert_eq!(
            keys(&format!(
                "[auth]\ntoken_secret = \"{secret}\"\ntoken_keys = [\"a:{secret}\"]\n"
            )),
            ["auth.token_keys"]
        );
        assert_eq!(
            keys(&format!(
                "[auth]\ntoken_keys = [\"a.b:{secret}\", \"c:short\", \"{secret}\"]\n"
            )),
            [
                "auth.token_keys[0]",
                "auth.token_keys[1]",
                "auth.token_keys[2]"
            ]
        );
        assert_eq!(
            keys(&format!(
                "[auth]\ntoken_keys = [\"a:{secret}\", \"a:{secret}x\"]\n"
            )),
            ["auth.token_keys"]
        );
        assert!(keys(&format!(
            "[auth]\ntoken_keys = [\"k-2:{secret}\", \"k_1:{secret}\"]\n"
        ))
        .is_empty());

        assert_eq!(
            keys("[jwt]\nenabled = true\nalgorithms = [\"HS256\", \"RS256\", \"none\"]\n"),
            ["jwt.algorithms[2]", "jwt.hmac_secret", "jwt.jwks_file"]
        );
        assert_eq!(
            keys(
                "[jwt]\nenabled = true\njwks_url = \"https://idp/jwks\"\njwks_file = \"k.json\"\n"
            ),
            ["jwt.jwks_file"],
            "one source of keys"
        );
        assert!(keys("[jwt]\nenabled = true\njwks_url = \"https://idp/jwks\"\n").is_empty());
        assert!(
            keys("[jwt]\nalgorithms = [\"none\"]\n").is_empty(),
            "checked only when enabled"
        );
    }

    #[test]
    fn env_overrides_win_and_are_typed() {
        let env = vec![
            ("GATEWAY__LIMITS__MAX_INFLIGHT".into(), "7".into()),
            ("GATEWAY__LISTENERS__MQTT".into(), "127.0.0.1:0".into()),
            ("GATEWAY__AUTH__ALLOW_ANONYMOUS".into(), "true".into()),
            ("GATEWAY__LIMITS__HANDSHAKE_TIMEOUT".into(), "2s".into()),
            ("UNRELATED".into(), "x".into()),
        ];
        let config = Config::from_toml_str("[limits]\nmax_inflight = 3\n", env).unwrap();
        assert_eq!(config.limits.max_inflight, 7);
        assert_eq!(config.listeners.mqtt.port(), 0);
        assert!(config.auth.allow_anonymous);
        assert_eq!(config.limits.handshake_timeout, Duration::from_secs(2));
    }

    #[test]
    fn record_limits_are_checked_and_the_path_comes_from_the_environment() {
        let env = vec![
            ("GATEWAY__RECORD__PATH".into(), "/tmp/traffic.jsonl".into()),
            ("GATEWAY__RECORD__PAYLOADS".into(), "false".into()),
        ];
        let config = Config::from_toml_str("", env).unwrap();
        assert_eq!(
            config.record.path.as_deref(),
            Some(Path::new("/tmp/traffic.jsonl"))
        );
        assert!(!config.record.payloads);
        let text = "[record]\npath = \"/no/such/dir/t.jsonl\"\nmax_bytes = 10\nqueue = 0\nflush_interval = \"1ms\"\n";
        let errors = Config::from_toml_str(text, no_env()).unwrap_err();
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "record.path",
                "record.max_bytes",
                "record.queue",
                "record.flush_interval"
            ]
        );
        assert!(errors[0].message.contains("/no/such/dir"), "{}", errors[0]);
    }

    #[test]
    fn rate_limits_take_inline_tables_and_need_a_burst_when_limited() {
        let env = vec![(
            "GATEWAY__RATE_LIMITS__SEND".into(),
            "{ per_second = 0, burst = 0 }".into(),
        )];
        let config =
            Config::from_toml_str("[rate_limits]\nack = { per_second = 3, burst = 9 }\n", env)
                .unwrap();
        assert!(config.rate_limits.send.is_unlimited());
        assert_eq!(config.rate_limits.ack, Rate::new(3, 9));
        let text = "[rate_limits]\nsync = { per_second = 1, burst = 0 }\nmax_devices = 0\n";
        let errors = Config::from_toml_str(text, no_env()).unwrap_err();
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["rate_limits.sync.burst", "rate_limits.max_devices"]);
        let text = "[rate_limits]\nsend = { per_second = 1 }\n";
        let errors = Config::from_toml_str(text, no_env()).unwrap_err();
        assert_eq!(
            errors[0].key, "rate_limits.send",
            "both fields are required"
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let errors = Config::from_toml_str("[limits]\nmax_inflight = = 3\n", no_env()).unwrap_err();
        assert_eq!(errors[0].key, "(line 2)");
    }
}
