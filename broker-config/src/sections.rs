//! The configuration sections. Each section denies unknown keys so a typo is an error, not a
//! silently ignored setting.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub listeners: Listeners,
    pub tls: Tls,
    pub limits: Limits,
    pub rate_limits: RateLimits,
    pub auth: Auth,
    pub jwt: Jwt,
    pub sessions: Sessions,
    pub store: Store,
    pub roaming: Roaming,
    pub channels: crate::channels::Channels,
    pub notify: crate::notify::Notify,
    pub record: Record,
    pub log: Log,
    pub web: crate::web::Web,
}

/// Where each listener binds. Port 0 picks a free port; the bound addresses are printed at start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listeners {
    /// MQTT 3.1.1 and 5 over TCP.
    pub mqtt: SocketAddr,
    /// MQTT over WebSocket (path `/mqtt`, subprotocol `mqtt`).
    pub mqtt_ws: SocketAddr,
    /// HTTP API, JSON WebSocket (`/ws`), `/metrics`, `/healthz`.
    pub http: SocketAddr,
    /// MQTT over TLS; only when `tls.cert` and `tls.key` are set.
    pub mqtt_tls: SocketAddr,
    /// MQTT over secure WebSocket; only when `tls.cert` and `tls.key` are set.
    pub mqtt_wss: SocketAddr,
    /// Connections each listener lets wait to be accepted. A reconnect storm (every device of a
    /// region coming back after an outage) overflows a short queue, and each dropped SYN costs
    /// its device a retransmit of one second or more. The kernel caps it at
    /// `net.core.somaxconn`.
    pub backlog: u32,
}

impl Default for Listeners {
    fn default() -> Self {
        let any = |port| SocketAddr::from(([0, 0, 0, 0], port));
        Self {
            mqtt: any(1883),
            mqtt_ws: any(8083),
            http: any(8080),
            mqtt_tls: any(8883),
            mqtt_wss: any(8084),
            backlog: 4096,
        }
    }
}

/// Server certificate for the TLS listeners (PEM). `gateway dev-cert` writes a self-signed pair.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl Tls {
    /// The certificate and key, when both are configured.
    pub fn pair(&self) -> Option<(&PathBuf, &PathBuf)> {
        self.cert.as_ref().zip(self.key.as_ref())
    }
}

/// Limits that protect the gateway from slow, idle, greedy or malicious clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Time a new socket has for its TLS / WebSocket handshake and its CONNECT (or `auth`).
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Open connections per listener; further sockets are closed at once.
    pub max_connections: usize,
    /// Largest MQTT packet accepted, in bytes (v5 clients are told in CONNACK).
    pub max_packet_size: u32,
    /// Unacknowledged QoS 1 messages in flight to one client.
    pub max_inflight: u16,
    /// Subscriptions one client may hold.
    pub max_subscriptions: usize,
    /// Longest topic or filter, in bytes (a shared subscription's `$share/{group}/` included);
    /// longer ones are refused as invalid (SUBACK `0x8F`, PUBACK `0x90`, JSON `invalid_topic`).
    pub max_topic_length: usize,
    /// Longest keepalive accepted; v5 clients asking for more get this as Server Keep Alive.
    #[serde(with = "humantime_serde")]
    pub max_keepalive: Duration,
    /// Messages queued for one client before it is disconnected as too slow.
    pub outbox_capacity: usize,
    /// Largest JSON WebSocket message, in bytes; larger ones close the socket with 1009.
    pub ws_max_message: usize,
    /// Idle time after which the server pings a JSON WebSocket; no answer within the same time
    /// closes it.
    #[serde(with = "humantime_serde")]
    pub ws_ping_interval: Duration,
    /// Largest HTTP request body, in bytes.
    pub http_max_body: usize,
    /// Longest an HTTP request may take from its headers to its answer, its body included: a
    /// client that trickles its body gets 408 (the headers have `handshake_timeout`, which also
    /// bounds an idle keep-alive connection's wait for its next request).
    #[serde(with = "humantime_serde")]
    pub http_request_timeout: Duration,
    /// On SIGTERM, how long the gateway may take to stop accepting, tell its clients, finish
    /// the requests in flight and make them durable before it exits anyway.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// QoS 1 and 2 publishes one client may have unanswered (MQTT 5 Receive Maximum, told in
    /// CONNACK): the gateway stops reading while that many are being stored, and disconnects
    /// a client that sends more.
    pub receive_maximum: u16,
    /// Topic aliases a v5 client may use towards the gateway (Topic Alias Maximum).
    pub topic_alias_maximum: u16,
    /// Topics holding a retained message; past it, retaining on a new topic is refused.
    pub max_retained: usize,
    /// Threads for blocking work (the embedded store's reads, MQTT sessions, retained
    /// messages); more would only queue for the cores.
    pub blocking_threads: usize,
    /// Longest a write to a client may take. A client that stops reading fills its socket's
    /// buffers, and its next write waits: past this it is disconnected (`write_timeout`), so a
    /// stalled peer holds neither its task nor its session. Kicks, takeovers and shutdown are
    /// seen while a write waits.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            max_connections: 200_000,
            max_packet_size: 256 * 1024,
            max_inflight: 64,
            max_subscriptions: 32,
            max_topic_length: 256,
            max_keepalive: Duration::from_secs(20 * 60),
            outbox_capacity: 1024,
            ws_max_message: 64 * 1024,
            ws_ping_interval: Duration::from_secs(30),
            http_max_body: 1024 * 1024,
            http_request_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            receive_maximum: 64,
            topic_alias_maximum: 16,
            max_retained: 100_000,
            blocking_threads: 32,
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// How often one device may do each thing, and one backend API key call the HTTP API: a token
/// bucket each, holding `burst` requests and refilled at `per_second`. Without them any device
/// could send a user 100,000 junk messages in a minute, pushing the user's real history out of
/// `roaming.retention_count`; with them that takes the better part of an hour and shows in the
/// `rate_limited` metric. Refusals say when to retry (MQTT 5 PUBACK `0x97` and a `rate_limited`
/// reply, JSON `rate_limited` with `retry_after_ms`, HTTP 429 with `Retry-After`).
///
/// A device's buckets outlive its connection, so reconnecting does not refill them; they are
/// kept on the node the device is connected to (a device that moves to another node starts
/// full there), and an API key's on each node (N nodes serve N times its rate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    /// Off for benchmarks and load tools, which push from a few devices far beyond what a
    /// person does; every limit of this section (the one-sync-at-a-time rule too) is lifted.
    pub enabled: bool,
    /// Messages a device sends (`u/{user}/d/{device}/send`, JSON `pub` there). A person types
    /// far below one a second; the burst lets an app flush the outbox it filled offline (100 at
    /// once, then 20 a second: a thousand queued messages go in under a minute).
    pub send: Rate,
    /// Live signals a device relays (typing, call setup: a call's ICE candidates come in dozens
    /// within a second).
    pub signal: Rate,
    /// Acknowledgements a device sends (`…/ack`, JSON `ack`): one per message or page at most.
    pub ack: Rate,
    /// Syncs a device asks for (`…/sync`, JSON `sync`): one answers with every page the device
    /// lacks, so an app needs one per reconnect or resume. Besides the rate, a device has one
    /// sync answered at a time; a second one meanwhile is refused as `busy`.
    pub sync: Rate,
    /// Quiet-hours updates from a device (`…/quiet_hours`): a settings screen's saves.
    pub quiet_hours: Rate,
    /// Calls to the HTTP API (`/v1/…`) per API key. A backend speaks for all its users: this
    /// is about what one node's API serves, so it catches a runaway job, not normal load.
    pub api_key: Rate,
    /// Devices whose buckets are kept at most (~350 bytes each). A device's buckets are
    /// forgotten once they are full again (a full bucket is a fresh one) and it is not
    /// connected, so this bounds memory under a flood of short-lived devices only; past it, a
    /// new device's buckets last as long as its connection.
    pub max_devices: usize,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            enabled: true,
            send: Rate::new(20, 100),
            signal: Rate::new(50, 200),
            ack: Rate::new(100, 500),
            sync: Rate::new(5, 20),
            quiet_hours: Rate::new(1, 5),
            api_key: Rate::new(2000, 4000),
            max_devices: 500_000,
        }
    }
}

/// A token bucket's settings: `burst` requests at once, then `per_second`. A `per_second` of 0
/// means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

impl Rate {
    pub const fn new(per_second: u32, burst: u32) -> Self {
        Self { per_second, burst }
    }

    pub fn is_unlimited(&self) -> bool {
        self.per_second == 0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    /// Dev mode, as in mosquitto: clients without a token may connect, confined to topics that
    /// do not start with `u/`.
    pub allow_anonymous: bool,
    /// Secret that signs device tokens (at least 32 characters), as key id `0`. When neither
    /// it nor `token_keys` is set, one is generated once into the data dir.
    pub token_secret: Option<String>,
    /// Token keys as `"id:secret"` (id: 1-32 letters, digits, `_`, `-`; secret: at least 32
    /// characters), instead of `token_secret`: the first signs, every one verifies, so a new
    /// secret can be rolled in before the old one is removed, without logging anyone out.
    pub token_keys: Vec<String>,
    /// Bearer keys for the backend HTTP API. When empty, one is generated into the data dir
    /// (`gateway api-key` prints it).
    pub api_keys: Vec<String>,
    /// Lifetime of tokens made by `gateway token` when `--ttl` is not given.
    #[serde(with = "humantime_serde")]
    pub default_token_ttl: Duration,
    /// Topics (or filters) anonymous clients may neither subscribe to nor publish on, refused
    /// without saying why (MQTT 5 reason 0x80, "unspecified"), as a broker that does not tell
    /// which topics exist. For dev setups that mirror a production ACL.
    pub anonymous_withheld: Vec<String>,
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            allow_anonymous: false,
            token_secret: None,
            token_keys: Vec::new(),
            api_keys: Vec::new(),
            default_token_ttl: Duration::from_secs(24 * 3600),
            anonymous_withheld: Vec::new(),
        }
    }
}

/// Standard JWTs from a team's identity provider, accepted as device tokens beside the
/// gateway's own (which start with `v1.`), so an app can hand the gateway the token it already has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Jwt {
    pub enabled: bool,
    /// The signature algorithms accepted: `HS256`, `HS384`, `HS512`, `RS256`, `RS384`, `RS512`,
    /// `PS256`, `PS384`, `PS512`, `ES256`, `ES384`, `EdDSA`. A token's `alg` must be one of them.
    pub algorithms: Vec<String>,
    /// The shared secret of the HMAC algorithms (at least 32 characters).
    pub hmac_secret: Option<String>,
    /// The public keys of the other algorithms, as a JWKS file: read at start and again every
    /// `jwks_refresh`.
    pub jwks_file: Option<PathBuf>,
    /// Or as a JWKS URL (`https://…/.well-known/jwks.json`): fetched at start and every
    /// `jwks_refresh`, and at once when a token names a key id not held (at most once per
    /// `jwks_min_refetch`), so the provider's key rotation needs no restart.
    pub jwks_url: Option<String>,
    #[serde(with = "humantime_serde")]
    pub jwks_refresh: Duration,
    #[serde(with = "humantime_serde")]
    pub jwks_min_refetch: Duration,
    /// The `iss` a token must carry, when set.
    pub issuer: Option<String>,
    /// The `aud` a token must carry, when set.
    pub audience: Option<String>,
    /// The claim that names the user (its value must be a valid id, as any user id).
    pub user_claim: String,
    /// The claim that names the device.
    pub device_claim: String,
    /// The claim that names the platform (`ios`, `android`, `web`, `desktop`); when a token has
    /// none, `default_platform`.
    pub platform_claim: String,
    pub default_platform: String,
    /// Clock difference allowed when checking `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
}

impl Default for Jwt {
    fn default() -> Self {
        Self {
            enabled: false,
            algorithms: vec!["RS256".into(), "ES256".into(), "EdDSA".into()],
            hmac_secret: None,
            jwks_file: None,
            jwks_url: None,
            jwks_refresh: Duration::from_secs(600),
            jwks_min_refetch: Duration::from_secs(30),
            issuer: None,
            audience: None,
            user_claim: "sub".into(),
            device_claim: "device_id".into(),
            platform_claim: "platform".into(),
            default_platform: "android".into(),
            leeway: Duration::from_secs(30),
        }
    }
}

/// How many devices of one user may be online at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DevicePolicy {
    /// Every device may be online at once (as 球球 does).
    #[default]
    AllActive,
    /// One device per class (mobile, desktop, web): a new login kicks the older device of its
    /// class with a reason it can show (as WeChat does: one phone plus one desktop).
    OnePerClass,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sessions {
    pub device_policy: DevicePolicy,
    /// A login from a device the user never used before waits for approval from one of the
    /// user's online devices (or the backend over HTTP).
    pub new_device_approval: bool,
    /// How long a new device may wait for approval before it is disconnected.
    #[serde(with = "humantime_serde")]
    pub approval_timeout: Duration,
    /// The longest an MQTT session is kept while its client is away: a 3.1.1 client with
    /// `clean_session = 0` gets this, a v5 client what it asks for up to this.
    #[serde(with = "humantime_serde")]
    pub max_expiry: Duration,
    /// QoS 1 and 2 messages on topics outside the user's log (`pub/…`, dev mode) queued for
    /// a session while its client is away; past it the oldest go. A device's inbox needs no
    /// queue: the user's log is its queue.
    pub max_queued: usize,
    /// The most bytes those queued messages take (as stored, sealed); past it the oldest go.
    pub max_queued_bytes: usize,
}

impl Default for Sessions {
    fn default() -> Self {
        Self {
            device_policy: DevicePolicy::AllActive,
            new_device_approval: false,
            approval_timeout: Duration::from_secs(5 * 60),
            max_expiry: Duration::from_secs(7 * 24 * 3600),
            max_queued: 1000,
            max_queued_bytes: 1024 * 1024,
        }
    }
}

/// Where messages, cursors and presence are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreBackend {
    /// On disk in the data dir (`store.redb`): one node, no other service needed.
    #[default]
    Embedded,
    /// In Redis at `store.redis_url`: several nodes pointed at one Redis form one service.
    Redis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Store {
    pub backend: StoreBackend,
    /// Used when `backend = "redis"`: `redis://[user:password@]host:port/`, or `rediss://…` for
    /// TLS. A user and password are Redis ACL credentials.
    pub redis_url: String,
    /// With `rediss://`: the CA certificate (PEM) that signed the server's, when it is not one
    /// the system trusts.
    pub redis_ca: Option<PathBuf>,
    /// `redis_url` names one node of a Redis Cluster, not a single Redis: the gateway learns the
    /// cluster's slots from it and follows them (redirections, failovers, resharding).
    pub redis_cluster: bool,
    /// With `redis_cluster`: more nodes to learn the cluster from, tried when `redis_url`'s node
    /// is down at start (same form as `redis_url`).
    pub redis_seeds: Vec<String>,
    /// How many hash slots the Redis notification queue is spread over (`gw:notify:{queue:N}:…`);
    /// each user's pushes are in one of them, and workers take from all in turn. On a Redis
    /// Cluster more shards spread the queue's load over more primaries. Change it only while the
    /// queue is empty: a push stays in the shard it was queued in.
    pub redis_queue_shards: u32,
    /// Redis replicas every batch of appends must reach (`WAIT`) before it is acknowledged; 0
    /// acknowledges once the primary executed it. With replicas, a failover to one of them
    /// loses nothing acknowledged.
    pub redis_wait_replicas: u32,
    /// Every batch of appends must be in the append-only file on disk (`WAITAOF`) before it
    /// is acknowledged: on the primary, and on `redis_wait_replicas` replicas (on disk there
    /// too, not only received). A power loss then loses nothing acknowledged without
    /// `appendfsync always` on the servers, whose batches are fsynced once a second instead of
    /// once per write. Needs Redis 7.2 or later (or Valkey) with `appendonly yes`: the gateway
    /// checks at start and refuses to run otherwise.
    pub redis_wait_aof: bool,
    /// How long a batch waits for `redis_wait_replicas` and `redis_wait_aof`; past it the batch
    /// is answered as unavailable (it may be stored: a retry with an idempotency key stores it
    /// once).
    #[serde(with = "humantime_serde")]
    pub redis_wait_timeout: Duration,
    /// SM4-GCM keys for data at rest, as `"id:32 hex digits"`. The first one encrypts; all of
    /// them decrypt, so a key is rotated by putting a new one first and keeping the old ones.
    /// When empty, one is generated once into the data dir (`at_rest_key`).
    pub encryption_keys: Vec<String>,
    /// Most appends committed together (with one fsync, or one Redis round trip).
    pub max_batch: usize,
    /// Writes waiting for the store's writer at most. Past it a new message is refused as the
    /// store being unavailable (MQTT 5 PUBACK `0x83`, JSON `unavailable`, HTTP 503) rather than
    /// queued without bound, and the sender sends it again later; cursor and session writes
    /// wait for room.
    pub max_queued_writes: usize,
    /// Many nodes: presence changes and relays waiting to go to the other nodes. Past it (Redis
    /// slow or away) new ones are dropped and counted: live delivery across nodes is best
    /// effort, every device catches up from the log.
    pub relay_queue: usize,
    /// Users' data keys held unwrapped in memory for sealing, at most. Each user's log entries
    /// are sealed under a key of the user's own, stored wrapped under `encryption_keys` and
    /// destroyed when the user is deleted; past this many, the held keys are dropped and
    /// unwrapped again as they are needed.
    pub data_key_cache: usize,
    /// Embedded store: bytes of messages held in memory before they are written out as a table.
    /// Smaller means more tables to flush and compact: every table of user-spread keys is merged
    /// into the whole of the next level. Switching to a fresh memtable stalls appends for a
    /// moment; with mimalloc and one flush worker 32 MiB has the same or a shorter tail than
    /// 8 MiB (durable QoS 1 at half the maximum: p99 5.5–6.3 ms against 7.7 ms, p99.9 15 ms
    /// against 35–45 ms) and makes routing notifications ~4% cheaper. Fixed when the data dir's
    /// store is created. (The notification ledger has its own, `notify.ledger_memtable_size`.)
    pub memtable_size: u64,
    /// This node's name among the nodes sharing a Redis; a random one when unset.
    pub node_id: Option<String>,
    /// How often a node renews its liveness key in Redis.
    #[serde(with = "humantime_serde")]
    pub node_heartbeat: Duration,
    /// A node whose liveness key is older than this is dead; its devices are marked offline.
    #[serde(with = "humantime_serde")]
    pub node_timeout: Duration,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Embedded,
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_ca: None,
            redis_cluster: false,
            redis_seeds: Vec::new(),
            redis_queue_shards: 16,
            redis_wait_replicas: 0,
            redis_wait_aof: false,
            redis_wait_timeout: Duration::from_secs(1),
            encryption_keys: Vec::new(),
            max_batch: 1024,
            max_queued_writes: 65_536,
            relay_queue: 65_536,
            data_key_cache: 100_000,
            memtable_size: 32 << 20,
            node_id: None,
            node_heartbeat: Duration::from_secs(2),
            node_timeout: Duration::from_secs(10),
        }
    }
}

/// Message roaming: each user's log, and how devices catch up on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Roaming {
    /// Messages per sync page.
    pub page_size: usize,
    /// Largest sync page in bytes: a page of big messages is cut short (and `more` set) rather
    /// than exceed what a client's MQTT packet limit may be. A single bigger message still goes,
    /// alone in its page.
    pub page_max_bytes: usize,
    /// Messages a device new to the user receives on its first sync.
    pub new_device_history: usize,
    /// Messages kept per user; older ones are cut as new ones arrive.
    pub retention_count: u64,
    /// Age after which messages are cut by the sweeper.
    #[serde(with = "humantime_serde")]
    pub retention_age: Duration,
    /// How often the sweeper cuts old messages and purges deleted contacts' messages (at most
    /// 24h: that is how long a deleted conversation may stay on disk).
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// Largest `limit` of `GET /v1/users/{user}/messages`.
    pub max_read_limit: usize,
    /// How long a client message id (a send's `client_msg_id`, the `Idempotency-Key` of
    /// `POST /v1/messages`) is remembered: a repeat within it is answered as the first send
    /// was and not stored again. A day outlasts a phone's retries across a day offline (an
    /// app's outbox, an MQTT session resuming its unacknowledged publishes), which is what
    /// payment and notification APIs settled on; every key is kept that long, so the store's
    /// cost grows with window × sends (see the README).
    #[serde(with = "humantime_serde")]
    pub idempotency_window: Duration,
}

impl Default for Roaming {
    fn default() -> Self {
        Self {
            page_size: 100,
            page_max_bytes: 64 * 1024,
            new_device_history: 50,
            retention_count: 100_000,
            retention_age: Duration::from_secs(30 * 24 * 3600),
            sweep_interval: Duration::from_secs(3600),
            max_read_limit: 1000,
            idempotency_window: Duration::from_secs(24 * 3600),
        }
    }
}

/// Traffic recording: connects, subscribes, publishes and API calls, with their timing, to a
/// JSON Lines file that `loadtest replay` plays back. Off unless `path` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Record {
    /// The recording file, created (or truncated) at start. Recording is off when unset.
    pub path: Option<PathBuf>,
    /// Size at which recording stops (one warning is logged), so a forgotten recording cannot
    /// fill the disk.
    pub max_bytes: u64,
    /// Events waiting for the file writer. When it is full, events are dropped and counted
    /// rather than slowing a client down.
    pub queue: usize,
    /// Record publish payloads and API bodies; when false only their sizes are kept (such a
    /// recording shows the traffic's shape but cannot be replayed).
    pub payloads: bool,
    /// How often buffered events are written out to the file.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
}

impl Default for Record {
    fn default() -> Self {
        Self {
            path: None,
            max_bytes: 1024 * 1024 * 1024,
            queue: 65536,
            payloads: false,
            flush_interval: Duration::from_millis(100),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    /// A `tracing` filter, e.g. `info` or `gateway=debug,info`. `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}
