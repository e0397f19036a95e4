//! The gateway's shared state, built once at start and shared by every listener and task.

use crate::channel::{
    Channel, LocalTokenCache, QiuQiuChannel, RedisTokenCache, TokenCache, WeChatChannel,
};
use crate::cluster::Cluster;
use crate::data_dir::DataDir;
use crate::hub::Hub;
use crate::known_devices::KnownDevices;
use crate::messages::Messages;
use crate::metrics::{Metrics, NotifyMetrics};
use crate::notify::ledger::embedded::EmbeddedLedger;
use crate::notify::ledger::redis::RedisLedger;
use crate::notify::ledger::Ledger;
use crate::notify::rate::RateLimiter;
use crate::notify::worker::Worker;
use crate::notify::Notifications;
use crate::recorder::Recorder;
use crate::roam::clock::HybridClock;
use crate::session_handle::SessionId;
use crate::sessions::Sessions;
use crate::store::cipher::KeyRing;
use crate::store::embedded::EmbeddedStore;
use crate::store::redis::RedisStore;
use crate::store::{Settings, SharedStore};
use crate::token::TokenSigner;
use crate::user_topics::UserTopics;
use anyhow::Result;
use broker_config::{Config, StoreBackend};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub struct Gateway {
    pub config: Config,
    pub signer: TokenSigner,
    pub api_keys: Vec<String>,
    pub hub: Arc<Hub>,
    /// The users' topics on this node and, with a cluster, on the others.
    pub user_topics: Arc<UserTopics>,
    pub sessions: Sessions,
    pub messages: Messages,
    pub store: SharedStore,
    /// The other nodes sharing the Redis, with the Redis store.
    pub cluster: Option<Arc<Cluster>>,
    pub notifications: Notifications,
    pub metrics: Metrics,
    /// The traffic recording, when `record.path` is set.
    pub recorder: Option<Recorder>,
    next_session: AtomicU64,
}

impl Gateway {
    pub async fn new(config: Config, data: &DataDir) -> Result<Arc<Self>> {
        let signer = TokenSigner::new(&token_secret(&config, data)?);
        let api_keys = api_keys(&config, data)?;
        let metrics = Metrics::new();
        let hub = Arc::new(Hub::new(metrics.dropped_deliveries.clone()));
        let known = KnownDevices::open(&data.path("known_devices.tsv"))?;
        let keys = Arc::new(at_rest_keys(&config, data)?);
        let clock = Arc::new(HybridClock::new());
        let cluster = match config.store.backend {
            StoreBackend::Redis => Some(Cluster::join(&config.store).await?),
            StoreBackend::Embedded => None,
        };
        let topics = Arc::new(UserTopics::new(
            hub.clone(),
            cluster.clone(),
            metrics.stored.clone(),
        ));
        let commit_seconds = metrics.commit_seconds.clone();
        let store = open_store(
            &config,
            data,
            keys.clone(),
            clock,
            topics.clone(),
            commit_seconds,
        )
        .await?;
        let ledger: Arc<dyn Ledger> = match config.store.backend {
            StoreBackend::Redis => {
                let retention = config.notify.record_retention;
                Arc::new(RedisLedger::open(&config.store.redis_url, keys.clone(), retention).await?)
            }
            StoreBackend::Embedded => {
                let path = data.path("notify");
                Arc::new(EmbeddedLedger::open(&path, keys.clone(), &config.notify)?)
            }
        };
        // Provider tokens and rate limits are shared by the nodes sharing a Redis.
        let (token_cache, limiter): (Arc<dyn TokenCache>, RateLimiter) = match &cluster {
            Some(_) => {
                let redis = crate::store::redis::connect(&config.store.redis_url).await?;
                (
                    Arc::new(RedisTokenCache::new(redis.clone())),
                    RateLimiter::Shared(redis),
                )
            }
            None => (
                Arc::new(LocalTokenCache::new()),
                RateLimiter::Local(Default::default()),
            ),
        };
        let worker = notify_worker(
            &config,
            ledger.clone(),
            token_cache,
            limiter,
            metrics.notify.clone(),
        )?;
        let recorder = Recorder::start(&config.record, metrics.record_events.clone())?;
        Ok(Arc::new(Self {
            notifications: Notifications::new(ledger, worker, &config.notify),
            sessions: Sessions::new(
                config.sessions.clone(),
                topics.clone(),
                known,
                cluster.clone(),
            ),
            user_topics: topics,
            cluster,
            messages: Messages::new(
                store.clone(),
                keys,
                metrics.append_seconds.clone(),
                metrics.store_failures.clone(),
            ),
            store,
            hub,
            signer,
            api_keys,
            metrics,
            recorder,
            config,
            next_session: AtomicU64::new(1),
        }))
    }

    /// Whether `presented` is one of the backend API keys (HTTP bearer, or a trusted backend's
    /// MQTT password).
    pub fn is_api_key(&self, presented: &str) -> bool {
        self.api_keys
            .iter()
            .any(|key| constant_time_eq(key.as_bytes(), presented.as_bytes()))
    }

    pub fn next_session_id(&self) -> SessionId {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }
}

/// The token-signing secret: from configuration, else generated once into the data dir.
pub fn token_secret(config: &Config, data: &DataDir) -> Result<String> {
    match &config.auth.token_secret {
        Some(secret) => Ok(secret.clone()),
        None => data.secret("token_secret"),
    }
}

/// The keys that seal data at rest: from configuration, else one generated once into the data
/// dir (as key id `d0`).
pub fn at_rest_keys(config: &Config, data: &DataDir) -> Result<KeyRing> {
    if config.store.encryption_keys.is_empty() {
        let generated = data.secret("at_rest_key")?;
        KeyRing::new(&[format!("d0:{}", &generated[..32])])
    } else {
        KeyRing::new(&config.store.encryption_keys)
    }
}

async fn open_store(
    config: &Config,
    data: &DataDir,
    keys: Arc<KeyRing>,
    clock: Arc<HybridClock>,
    fanout: Arc<UserTopics>,
    commit_seconds: prometheus_client::metrics::histogram::Histogram,
) -> Result<SharedStore> {
    let settings = Settings {
        max_batch: config.store.max_batch,
        retention_count: config.roaming.retention_count,
        memtable_size: config.store.memtable_size,
        commit_seconds: Some(commit_seconds),
    };
    Ok(match config.store.backend {
        StoreBackend::Embedded => Arc::new(EmbeddedStore::open(
            &data.path("store"),
            keys,
            clock,
            fanout,
            settings,
        )?),
        StoreBackend::Redis => Arc::new(
            RedisStore::open(&config.store.redis_url, keys, clock, fanout, settings).await?,
        ),
    })
}

/// The worker that sends queued pushes, over the channels that are enabled.
fn notify_worker(
    config: &Config,
    ledger: Arc<dyn Ledger>,
    cache: Arc<dyn TokenCache>,
    limiter: RateLimiter,
    metrics: NotifyMetrics,
) -> Result<Arc<Worker>> {
    let channels = &config.channels;
    let timeout = channels.request_timeout;
    let wechat: Option<Arc<dyn Channel>> = match channels.wechat.enabled {
        true => Some(Arc::new(WeChatChannel::new(
            &channels.wechat,
            timeout,
            cache.clone(),
        )?)),
        false => None,
    };
    let qiuqiu: Option<Arc<dyn Channel>> = match channels.qiuqiu.enabled {
        true => Some(Arc::new(QiuQiuChannel::new(
            &channels.qiuqiu,
            timeout,
            cache,
        )?)),
        false => None,
    };
    Ok(Arc::new(Worker {
        notify: config.notify.clone(),
        channels: channels.clone(),
        ledger,
        wechat,
        qiuqiu,
        limiter,
        metrics,
    }))
}

/// The backend API keys: from configuration, else one generated once into the data dir.
pub fn api_keys(config: &Config, data: &DataDir) -> Result<Vec<String>> {
    if config.auth.api_keys.is_empty() {
        Ok(vec![data.secret("api_key")?])
    } else {
        Ok(config.auth.api_keys.clone())
    }
}

/// Compares without an early exit, so response time does not reveal how much of a key matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_keys() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
