//! The composition root: builds every service with the handles it needs, binds the listeners,
//! runs until SIGTERM (or Ctrl-C) and then shuts down in order, within `limits.shutdown_grace`.
//!
//! The order of building is the order of the layers, from the bottom: the data dir's secrets
//! and keys, the cluster membership, the live layer (hub, user topics, registry), the store
//! (whose commit feed is the user topics), the log, the notification service and its worker,
//! then the front and the API over all of them.

use crate::api::key_rates::ApiKeyRates;
use crate::api::{self, state::ApiState};
use crate::auth::jwt::JwtVerifier;
use crate::auth::{secrets, Auth};
use crate::channel::qiuqiu::QiuQiuChannel;
use crate::channel::token_cache::{LocalTokenCache, RedisTokenCache, TokenCache};
use crate::channel::wechat::callback::CallbackGuard;
use crate::channel::wechat::safe_mode::SafeMode;
use crate::channel::wechat::WeChatChannel;
use crate::channel::Channel;
use crate::cluster::{self, Membership};
use crate::front::mqtt::listener::{self as mqtt_listener, MqttListenerKind};
use crate::front::rate_limits::{self, DeviceRateLimits};
use crate::front::{self, Front};
use crate::infra::cipher::KeyRing;
use crate::infra::data_dir::DataDir;
use crate::infra::fatal;
use crate::infra::rate_limiter::RateLimiter;
use crate::infra::redis::{connect, Endpoint};
use crate::live::hub::Hub;
use crate::live::link::LinkIds;
use crate::live::registry::Registry;
use crate::live::retained::Retained;
use crate::live::sessions::Sessions;
use crate::live::signals::Signals;
use crate::live::user_topics::UserTopics;
use crate::log::accept::Messages;
use crate::notify::ledger::embedded::EmbeddedLedger;
use crate::notify::ledger::redis::RedisLedger;
use crate::notify::ledger::Ledger;
use crate::notify::worker::Worker;
use crate::notify::Notifications;
use crate::observe::metrics::Metrics;
use crate::observe::recorder::Recorder;
use crate::observe::throughput::{self, Throughput};
use crate::shutdown::Shutdown;
use crate::store::clock::HybridClock;
use crate::store::data_keys::DataKeys;
use crate::store::embedded::EmbeddedStore;
use crate::store::known_devices;
use crate::store::redis::RedisStore;
use crate::store::{CommitFeed, Confirmation, Settings, SharedStore};
use anyhow::{Context, Result};
use broker_config::{Config, StoreBackend};
use protocol::notification::Provider;
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::Instant;

/// How often sessions whose clients stayed away past their expiry are forgotten.
const SESSION_SWEEP: Duration = Duration::from_secs(60);

/// The running gateway's parts that shutdown has to reach.
pub struct App {
    config: Arc<Config>,
    front: Arc<Front>,
    api: Arc<ApiState>,
    ledger: Arc<dyn Ledger>,
    worker: Arc<Worker>,
    cluster: Arc<dyn Membership>,
    hub: Arc<Hub>,
    shutdown: Shutdown,
}

/// How a shutdown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Everything in flight was finished and stored.
    Drained,
    /// `limits.shutdown_grace` ran out first.
    GraceExpired,
    /// A write to the disk failed, which does not heal while the process runs (see
    /// [`fatal`]): stopped so that a restart recovers from the journals.
    Failed(&'static str),
}

impl App {
    /// Builds every service over the data dir `data`.
    pub async fn build(config: Config, data: &DataDir) -> Result<Self> {
        let config = Arc::new(config);
        let shutdown = Shutdown::new();
        let metrics = Arc::new(Metrics::new());
        let keys = Arc::new(KeyRing::configured_or_generated(
            &config.store.encryption_keys,
            data,
        )?);
        // The process's TLS provider, for the clients that take the default (Redis over TLS):
        // ring, as the listeners use.
        let _ = rustls::crypto::ring::default_provider().install_default();
        if let Some(path) = &config.store.redis_ca {
            let pem = std::fs::read(path)
                .with_context(|| format!("store.redis_ca {}", path.display()))?;
            crate::infra::redis::trust_ca(pem);
        }
        let cluster =
            cluster::join(&config.store, keys.clone(), metrics.dropped_relays.clone()).await?;
        let hub = Arc::new(Hub::new(
            metrics.dropped_deliveries.clone(),
            metrics.deferred_deliveries.clone(),
        ));
        let topics = Arc::new(UserTopics::new(
            hub.clone(),
            cluster.clone(),
            metrics.stored.clone(),
        ));
        let signals = Arc::new(Signals::new(topics.clone(), metrics.signals.clone()));
        let data_keys = Arc::new(DataKeys::new(keys.clone(), config.store.data_key_cache));
        let store = open_store(&config, data, data_keys.clone(), topics.clone(), &metrics).await?;
        known_devices::import_file(&*store, &data.path("known_devices.tsv")).await?;
        let registry = Arc::new(Registry::new(
            config.sessions.clone(),
            topics,
            store.clone(),
            shutdown.clone(),
        ));
        let auth = Arc::new(Auth {
            signer: secrets::token_signer(&config, data)?,
            jwt: JwtVerifier::configured(&config.jwt).await?,
            revocations: store.clone(),
            api_keys: secrets::api_keys(&config, data)?,
            allow_anonymous: config.auth.allow_anonymous,
            notify_topic: config.notify.mqtt_topic.clone(),
            anonymous_withheld: config.auth.anonymous_withheld.clone(),
        });
        let messages = Arc::new(Messages::new(
            store.clone(),
            data_keys,
            config.roaming.idempotency_window,
            metrics.append_seconds.clone(),
            metrics.store_failures.clone(),
        ));
        let ledger = open_ledger(&config, data, keys).await?;
        let retained = Arc::new(Retained::load(store.clone(), config.limits.max_retained).await?);
        let link_ids = Arc::new(LinkIds::default());
        let sessions = Arc::new(Sessions::new(
            store.clone(),
            hub.clone(),
            link_ids.clone(),
            config.sessions.clone(),
            config.limits.outbox_capacity,
            metrics.session_queue_dropped.clone(),
            shutdown.clone(),
        ));
        let notifications = Arc::new(Notifications::new(
            config.notify.clone(),
            config.channels.clone(),
            ledger.clone(),
            messages.clone(),
            registry.clone(),
            metrics.notify.clone(),
        ));
        let worker = notify_worker(&config, ledger.clone(), &metrics).await?;
        let recorder = Recorder::start(&config.record, metrics.record_events.clone())?;
        let front = Arc::new(Front {
            limits: config.limits.clone(),
            roaming: config.roaming.clone(),
            auth: auth.clone(),
            link_ids,
            registry: registry.clone(),
            hub: hub.clone(),
            retained,
            sessions,
            signals: signals.clone(),
            messages: messages.clone(),
            store: store.clone(),
            notifications: notifications.clone(),
            metrics: metrics.clone(),
            rate_limits: DeviceRateLimits::new(&config.rate_limits),
            recorder: recorder.clone(),
            shutdown: shutdown.clone(),
        });
        let key_rates = ApiKeyRates::new(
            &config.rate_limits,
            &auth.api_keys,
            rate_limiter(&config).await?,
        );
        let api = Arc::new(ApiState {
            throughput: Arc::new(Throughput::new(metrics.clone())),
            cluster: cluster.clone(),
            config: config.clone(),
            auth,
            key_rates,
            registry,
            signals,
            messages,
            store,
            notifications,
            metrics,
            recorder,
            front: front.clone(),
            wechat_callbacks: wechat_callbacks(&config.channels.wechat)?,
        });
        Ok(Self {
            config,
            front,
            api,
            ledger,
            worker,
            cluster,
            hub,
            shutdown,
        })
    }

    /// Binds the listeners, prints their addresses as one JSON line on stdout, starts the
    /// background work, and serves until SIGTERM or Ctrl-C; then shuts down.
    pub async fn serve(self, data_dir: &Path) -> Result<Stopped> {
        // Before any client connects: what is published from the start reaches them.
        match self.front.sessions.take_up_kept().await {
            Ok(0) => {}
            Ok(parked) => tracing::info!(
                parked,
                "took up the MQTT sessions kept while their clients are away"
            ),
            Err(e) => tracing::warn!("the kept MQTT sessions could not be read: {e}"),
        }
        let bound = self.listen()?;
        tracing::info!(listening = ?bound, data_dir = %data_dir.display(), "gateway started");
        // One machine-readable line on stdout, so scripts and tests learn the bound ports.
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", serde_json::json!({ "listening": bound }))?;
        stdout.flush()?;
        drop(stdout);
        self.start_background();
        let failure = tokio::select! {
            () = termination() => None,
            reason = fatal::raised() => Some(reason),
        };
        let stopped = self.stop().await;
        Ok(match failure {
            Some(reason) => Stopped::Failed(reason),
            None => stopped,
        })
    }

    fn listen(&self) -> Result<serde_json::Map<String, serde_json::Value>> {
        let listeners = &self.config.listeners;
        let mut bound = serde_json::Map::new();
        let mut mqtt = vec![
            ("mqtt", listeners.mqtt, MqttListenerKind::Tcp),
            ("mqtt_ws", listeners.mqtt_ws, MqttListenerKind::WebSocket),
        ];
        if let Some((cert, key)) = self.config.tls.pair() {
            let acceptor = front::tls::acceptor(cert, key)?;
            mqtt.push((
                "mqtt_tls",
                listeners.mqtt_tls,
                MqttListenerKind::Tls(acceptor.clone()),
            ));
            mqtt.push((
                "mqtt_wss",
                listeners.mqtt_wss,
                MqttListenerKind::SecureWebSocket(acceptor),
            ));
        }
        for (name, addr, kind) in mqtt {
            let listener = bind(name, addr, listeners.backlog)?;
            bound.insert(name.into(), listener.local_addr()?.to_string().into());
            let front = self.front.clone();
            self.shutdown
                .spawn(mqtt_listener::run(front, listener, kind));
        }
        let http = bind("http", listeners.http, listeners.backlog)?;
        bound.insert("http".into(), http.local_addr()?.to_string().into());
        api::pages::announce(&self.config.web, http.local_addr()?);
        let router = api::router(self.api.clone());
        self.shutdown
            .spawn(front::http::run(self.front.clone(), http, router));
        Ok(bound)
    }

    /// The work that runs beside the listeners until shutdown: the sweepers (of logs, of
    /// notification records, of expired MQTT sessions, of idle rate-limit buckets), the
    /// notification worker, the console's sampling of rates, and the cluster's.
    fn start_background(&self) {
        let (config, shutdown) = (&self.config, &self.shutdown);
        let sessions = self.front.sessions.clone();
        shutdown.spawn({
            let (sessions, shutdown) = (sessions.clone(), shutdown.clone());
            async move {
                shutdown
                    .every(SESSION_SWEEP, || {
                        let sessions = sessions.clone();
                        async move { sessions.sweep().await }
                    })
                    .await
            }
        });
        shutdown.spawn(crate::log::sweeper::run(
            self.front.store.clone(),
            config.roaming.retention_age,
            config.roaming.sweep_interval,
            self.front.metrics.rewrapped_keys.clone(),
            shutdown.clone(),
        ));
        shutdown.spawn(crate::notify::sweeper::run(
            self.ledger.clone(),
            config.notify.record_retention,
            config.roaming.sweep_interval,
            shutdown.clone(),
        ));
        shutdown.spawn(self.worker.clone().run(shutdown.clone()));
        shutdown.spawn({
            let (front, shutdown) = (self.front.clone(), shutdown.clone());
            async move {
                let Some(limits) = &front.rate_limits else {
                    return;
                };
                shutdown
                    .every(rate_limits::SWEEP_EVERY, || {
                        limits.sweep();
                        front.metrics.rate_limit_devices.set(limits.kept() as i64);
                        std::future::ready(())
                    })
                    .await
            }
        });
        shutdown.spawn({
            let (throughput, shutdown) = (self.api.throughput.clone(), shutdown.clone());
            async move {
                shutdown
                    .every(throughput::SAMPLE_EVERY, || {
                        throughput.sample();
                        std::future::ready(())
                    })
                    .await
            }
        });
        let registry = self.front.registry.clone();
        self.cluster
            .clone()
            .start(registry, self.hub.clone(), sessions, shutdown);
    }

    /// Stops accepting, tells every client the server is going away (MQTT 5 DISCONNECT 0x8B,
    /// JSON WebSocket close 1001), waits for the connections to answer what they have in flight
    /// and for the pushes being sent, then makes the stores durable and closed, leaves the
    /// cluster and writes out the recording. All within `limits.shutdown_grace`.
    async fn stop(self) -> Stopped {
        let deadline = Instant::now() + self.config.limits.shutdown_grace;
        tracing::info!("shutting down: closing sessions");
        self.shutdown.begin();
        self.front.registry.close_all();
        let left = deadline.saturating_duration_since(Instant::now());
        let drained = self.shutdown.wait_for_tasks(left).await;
        if !drained {
            tracing::warn!(
                running = self.shutdown.running(),
                "shutdown grace ran out with tasks still running"
            );
        }
        let closing = async {
            self.front.store.close().await;
            if let Err(e) = self.ledger.close().await {
                tracing::warn!("the notification ledger could not be made durable: {e}");
            }
            self.cluster.leave().await;
            if let Some(recorder) = self.front.recorder.clone() {
                // The sessions closed above have recorded their disconnects; write them out.
                let _ = tokio::task::spawn_blocking(move || recorder.finish()).await;
            }
        };
        let closed = tokio::time::timeout_at(deadline, closing).await.is_ok();
        if drained && closed {
            tracing::info!("shut down");
            Stopped::Drained
        } else {
            Stopped::GraceExpired
        }
    }
}

/// Resolves at SIGTERM or Ctrl-C.
async fn termination() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

fn bind(name: &str, addr: SocketAddr, backlog: u32) -> Result<TcpListener> {
    let listening = || {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        // As std's and tokio's own `bind` do: a restarted gateway must not wait out TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(backlog)
    };
    listening()
        .with_context(|| format!("cannot listen for {name} on {addr} (set listeners.{name})"))
}

/// The message store, handing its commits to `feed`.
/// What checks WeChat's callbacks: none without a `callback_token` (they are all refused), and
/// in safe mode with an `encoding_aes_key`.
fn wechat_callbacks(wechat: &broker_config::WeChat) -> Result<Option<CallbackGuard>> {
    let Some(token) = wechat.callback_token.as_deref() else {
        return Ok(None);
    };
    let guard = CallbackGuard::new(token, wechat.callback_window, wechat.callback_max_nonces);
    Ok(Some(match &wechat.encoding_aes_key {
        Some(key) => {
            let appids = wechat.apps.iter().map(|app| app.appid.clone()).collect();
            guard.in_safe_mode(SafeMode::new(key, appids)?)
        }
        None => guard,
    }))
}

async fn open_store(
    config: &Config,
    data: &DataDir,
    keys: Arc<DataKeys>,
    feed: Arc<dyn CommitFeed>,
    metrics: &Metrics,
) -> Result<SharedStore> {
    let clock = Arc::new(HybridClock::new());
    let settings = Settings {
        max_batch: config.store.max_batch,
        retention_count: config.roaming.retention_count,
        memtable_size: config.store.memtable_size,
        max_queued_writes: config.store.max_queued_writes,
        commit_seconds: Some(metrics.commit_seconds.clone()),
        budget: metrics.budget.clone(),
        confirmation: Confirmation {
            replicas: config.store.redis_wait_replicas,
            on_disk: config.store.redis_wait_aof,
            timeout: config.store.redis_wait_timeout,
        },
    };
    Ok(match config.store.backend {
        StoreBackend::Embedded => Arc::new(EmbeddedStore::open(
            &data.path("store"),
            keys,
            clock,
            feed,
            settings,
        )?),
        StoreBackend::Redis => Arc::new(
            RedisStore::open(&Endpoint::of(&config.store), keys, clock, feed, settings).await?,
        ),
    })
}

async fn open_ledger(
    config: &Config,
    data: &DataDir,
    keys: Arc<KeyRing>,
) -> Result<Arc<dyn Ledger>> {
    Ok(match config.store.backend {
        StoreBackend::Redis => {
            let retention = config.notify.record_retention;
            let (endpoint, shards) = (Endpoint::of(&config.store), config.store.redis_queue_shards);
            Arc::new(RedisLedger::open(&endpoint, shards, keys, retention).await?)
        }
        StoreBackend::Embedded => Arc::new(EmbeddedLedger::open(
            &data.path("notify"),
            keys,
            &config.notify,
        )?),
    })
}

/// Token buckets shared by the nodes of one Redis, or this process's own.
async fn rate_limiter(config: &Config) -> Result<RateLimiter> {
    Ok(match config.store.backend {
        StoreBackend::Redis => RateLimiter::Shared(connect(&Endpoint::of(&config.store)).await?),
        StoreBackend::Embedded => RateLimiter::Local(Default::default()),
    })
}

/// The worker that sends queued pushes over the channels that are enabled. Provider tokens and
/// rate limits are shared by the nodes sharing a Redis.
async fn notify_worker(
    config: &Config,
    ledger: Arc<dyn Ledger>,
    metrics: &Metrics,
) -> Result<Arc<Worker>> {
    let cache: Arc<dyn TokenCache> = match config.store.backend {
        StoreBackend::Redis => Arc::new(RedisTokenCache::new(
            connect(&Endpoint::of(&config.store)).await?,
        )),
        StoreBackend::Embedded => Arc::new(LocalTokenCache::new()),
    };
    let limiter = rate_limiter(config).await?;
    let channels = &config.channels;
    let timeout = channels.request_timeout;
    let mut enabled: HashMap<Provider, Arc<dyn Channel>> = HashMap::new();
    if channels.wechat.enabled {
        let wechat = WeChatChannel::new(&channels.wechat, timeout, cache.clone())?;
        enabled.insert(Provider::Wechat, Arc::new(wechat));
    }
    if channels.qiuqiu.enabled {
        let qiuqiu = QiuQiuChannel::new(&channels.qiuqiu, timeout, cache)?;
        enabled.insert(Provider::Qiuqiu, Arc::new(qiuqiu));
    }
    Ok(Arc::new(Worker {
        notify: config.notify.clone(),
        ledger,
        channels: enabled,
        limiter,
        metrics: metrics.notify.clone(),
    }))
}
