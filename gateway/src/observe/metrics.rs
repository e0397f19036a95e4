//! Prometheus metrics, served on `/metrics`.

use crate::infra::latency_budget::LatencyBudget;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use protocol::envelope::{DisconnectReason, Transport};
use protocol::topics::DeviceAction;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabel {
    pub transport: TransportName,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum TransportName {
    mqtt,
    mqtt_tls,
    mqtt_ws,
    mqtt_wss,
    json_ws,
}

impl From<Transport> for TransportLabel {
    fn from(t: Transport) -> Self {
        let transport = match t {
            Transport::Mqtt => TransportName::mqtt,
            Transport::MqttTls => TransportName::mqtt_tls,
            Transport::MqttWs => TransportName::mqtt_ws,
            Transport::MqttWss => TransportName::mqtt_wss,
            Transport::JsonWs => TransportName::json_ws,
        };
        Self { transport }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenialLabel {
    pub kind: DenialKind,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum DenialKind {
    subscribe,
    publish,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RateLimitedLabel {
    pub kind: RateLimited,
}

/// What a rate limit refused (`[rate_limits]`): a device's action, a device's second sync
/// while its first is answered, or an API key's call.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RateLimited {
    send,
    signal,
    ack,
    sync,
    quiet_hours,
    sync_in_flight,
    api_key,
}

impl RateLimited {
    /// The limit a device's `action` met; approvals have none.
    pub fn of(action: DeviceAction) -> Option<Self> {
        match action {
            DeviceAction::Send => Some(Self::send),
            DeviceAction::Signal => Some(Self::signal),
            DeviceAction::Ack => Some(Self::ack),
            DeviceAction::Sync => Some(Self::sync),
            DeviceAction::QuietHours => Some(Self::quiet_hours),
            DeviceAction::Approve => None,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabel {
    pub reason: RejectReason,
}

/// Why a socket was closed before it became a session.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RejectReason {
    connection_limit,
    handshake_timeout,
    handshake_failed,
    protocol_error,
}

/// Why an established session ended: a [`DisconnectReason`]'s name.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DisconnectLabel {
    pub reason: &'static str,
}

impl From<DisconnectReason> for DisconnectLabel {
    fn from(reason: DisconnectReason) -> Self {
        Self {
            reason: reason.as_str(),
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RecordLabel {
    pub status: RecordStatus,
}

/// What became of one event offered to the recorder.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RecordStatus {
    /// Written to the file.
    written,
    /// The writer's queue was full.
    dropped,
    /// Recording had stopped: the file reached `record.max_bytes` or could not be written.
    stopped,
}

/// A notification route and what happened on it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotifyLabel {
    pub route: &'static str,
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: &'static str,
}

/// A provider call's route and the provider's answer code (`0` for success).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabel {
    pub route: &'static str,
    pub code: String,
}

fn attempt_buckets() -> Histogram {
    // 1 ms to about 16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

/// What the notification router and its worker count.
#[derive(Clone)]
pub struct NotifyMetrics {
    /// Route decisions and outcomes (queued, held, deduplicated, skipped, sent, delivered,
    /// failed, dead).
    pub routes: Family<NotifyLabel, Counter>,
    pub attempts: Family<AttemptLabel, Counter>,
    pub attempt_seconds: Family<RouteLabel, Histogram, fn() -> Histogram>,
    /// Pushes in the queue (queued, held, parked), sampled by the worker.
    pub queue_depth: Gauge,
    /// Dedup claims the embedded ledger holds in memory, sampled by the worker.
    pub dedup_claims: Gauge,
    /// Notifications routed together: near 1 means no load to coalesce, at
    /// `notify.decision_batch` means the router is the bottleneck.
    pub decision_batch: Histogram,
    /// Notifications routed (each once, whatever its routes did).
    pub routed: Counter,
}

impl NotifyMetrics {
    pub fn count(&self, route: &'static str, status: &'static str) {
        self.routes
            .get_or_create(&NotifyLabel { route, status })
            .inc();
    }
}

pub struct Metrics {
    pub registry: Registry,
    pub connections: Family<TransportLabel, Gauge>,
    pub messages_in: Family<TransportLabel, Counter>,
    pub messages_out: Family<TransportLabel, Counter>,
    pub auth_failures: Family<TransportLabel, Counter>,
    pub acl_denials: Family<DenialLabel, Counter>,
    /// Requests refused by `[rate_limits]`, by what was limited.
    pub rate_limited: Family<RateLimitedLabel, Counter>,
    /// Devices whose rate-limit buckets are kept (see `front::rate_limits`), as of the last
    /// sweep.
    pub rate_limit_devices: Gauge,
    pub rejected: Family<RejectLabel, Counter>,
    pub disconnects: Family<DisconnectLabel, Counter>,
    pub api_messages: Counter,
    /// Live signals relayed (each once, however many devices got it).
    pub signals: Counter,
    pub dropped_deliveries: Counter,
    /// Many nodes: relays and presence changes a full `store.relay_queue` dropped.
    pub dropped_relays: Counter,
    /// Entries of a user's log a client's full outbox could not take, which it then read from
    /// the log (nothing is lost).
    pub deferred_deliveries: Counter,
    /// Messages not sent because they exceed the client's Maximum Packet Size (MQTT 5).
    pub too_large_for_client: Counter,
    /// SUBACKs and UNSUBACKs not sent because they exceed the client's Maximum Packet Size
    /// (MQTT 5): the client waits for them in vain.
    pub answers_too_large_for_client: Counter,
    /// Messages queued for away sessions that pushed older ones out (`sessions.max_queued`).
    pub session_queue_dropped: Counter,
    /// Log entries made durable (a device's message counts twice: recipient's and sender's log).
    pub stored: Counter,
    /// Time from accepting a message to its being durable, as its sender waits.
    pub append_seconds: Histogram,
    /// One batch made durable by the store: one fsync, or one Redis round trip.
    pub commit_seconds: Histogram,
    /// Each stored message's time, stage by stage.
    pub budget: LatencyBudget,
    /// Appends the store could not take (the sender got a retryable error).
    pub store_failures: Counter,
    /// Users' data keys the sweeper wrapped again under a new `store.encryption_keys` key:
    /// once it stays still after a rotation, the old configured key opens no data key.
    pub rewrapped_keys: Counter,
    pub sync_pages: Counter,
    pub notify: NotifyMetrics,
    /// Events offered to the traffic recorder, by what became of them.
    pub record_events: Family<RecordLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gateway");
        let metrics = Self {
            connections: Family::default(),
            messages_in: Family::default(),
            messages_out: Family::default(),
            auth_failures: Family::default(),
            acl_denials: Family::default(),
            rate_limited: Family::default(),
            rate_limit_devices: Gauge::default(),
            rejected: Family::default(),
            disconnects: Family::default(),
            api_messages: Counter::default(),
            signals: Counter::default(),
            dropped_deliveries: Counter::default(),
            dropped_relays: Counter::default(),
            deferred_deliveries: Counter::default(),
            too_large_for_client: Counter::default(),
            answers_too_large_for_client: Counter::default(),
            session_queue_dropped: Counter::default(),
            stored: Counter::default(),
            // 100 µs to about 3 s.
            append_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            // 50 µs to about 1.6 s.
            commit_seconds: Histogram::new(exponential_buckets(0.00005, 2.0, 16)),
            budget: LatencyBudget::default(),
            store_failures: Counter::default(),
            rewrapped_keys: Counter::default(),
            sync_pages: Counter::default(),
            notify: NotifyMetrics {
                routes: Family::default(),
                attempts: Family::default(),
                attempt_seconds: Family::new_with_constructor(attempt_buckets),
                queue_depth: Gauge::default(),
                dedup_claims: Gauge::default(),
                decision_batch: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
                routed: Counter::default(),
            },
            record_events: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "connections",
            "Open client sessions per transport",
            metrics.connections.clone(),
        );
        registry.register(
            "messages_in",
            "PUBLISH packets and pub frames received from clients",
            metrics.messages_in.clone(),
        );
        registry.register(
            "messages_out",
            "Messages delivered to clients",
            metrics.messages_out.clone(),
        );
        registry.register(
            "auth_failures",
            "Connections refused for a missing, bad, forged or expired token",
            metrics.auth_failures.clone(),
        );
        registry.register(
            "acl_denials",
            "Subscribes and publishes refused by authorization",
            metrics.acl_denials.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused by a rate limit, by what was limited",
            metrics.rate_limited.clone(),
        );
        registry.register(
            "rate_limit_devices",
            "Devices whose rate-limit buckets are kept in memory",
            metrics.rate_limit_devices.clone(),
        );
        registry.register(
            "rejected_sockets",
            "Sockets closed before they became sessions",
            metrics.rejected.clone(),
        );
        registry.register(
            "disconnects",
            "Sessions ended, by reason",
            metrics.disconnects.clone(),
        );
        registry.register(
            "api_messages",
            "Messages accepted through POST /v1/messages",
            metrics.api_messages.clone(),
        );
        registry.register(
            "signals",
            "Live signals relayed from devices (not stored)",
            metrics.signals.clone(),
        );
        registry.register(
            "dropped_deliveries",
            "QoS 0 deliveries dropped because the receiving client's outbox was full",
            metrics.dropped_deliveries.clone(),
        );
        registry.register(
            "cluster_dropped_relays",
            "Relays and presence changes for other nodes dropped because store.relay_queue was full",
            metrics.dropped_relays.clone(),
        );
        registry.register(
            "deferred_deliveries",
            "Entries of a user's log a client's full outbox could not take; the client reads them from the log",
            metrics.deferred_deliveries.clone(),
        );
        registry.register(
            "too_large_for_client",
            "Messages not sent because they exceed the client's MQTT 5 Maximum Packet Size",
            metrics.too_large_for_client.clone(),
        );
        registry.register(
            "answers_too_large_for_client",
            "SUBACKs and UNSUBACKs not sent because they exceed the client's MQTT 5 Maximum Packet Size",
            metrics.answers_too_large_for_client.clone(),
        );
        registry.register(
            "session_queue_dropped",
            "Messages queued for away MQTT sessions that pushed older ones out (sessions.max_queued)",
            metrics.session_queue_dropped.clone(),
        );
        registry.register(
            "messages_stored",
            "Log entries made durable (a device's message is stored in both users' logs)",
            metrics.stored.clone(),
        );
        registry.register(
            "store_append_seconds",
            "Time from accepting a message until it is durable and its sender is answered",
            metrics.append_seconds.clone(),
        );
        registry.register(
            "store_commit_seconds",
            "Time the store took to make one batch of appends durable (one fsync, or one Redis round trip)",
            metrics.commit_seconds.clone(),
        );
        metrics.budget.register(&mut registry);
        registry.register(
            "store_failures",
            "Messages refused with a retryable error because the store could not take them",
            metrics.store_failures.clone(),
        );
        registry.register(
            "store_rewrapped_keys",
            "Users' data keys wrapped again under the sealing key of store.encryption_keys",
            metrics.rewrapped_keys.clone(),
        );
        registry.register(
            "sync_pages",
            "Pages of catch-up sent to devices",
            metrics.sync_pages.clone(),
        );
        registry.register(
            "notify_routes",
            "Notification route decisions and outcomes, by route and status",
            metrics.notify.routes.clone(),
        );
        registry.register(
            "notify_attempts",
            "Calls to push providers, by route and the provider's code (0: success)",
            metrics.notify.attempts.clone(),
        );
        registry.register(
            "notify_attempt_seconds",
            "Latency of calls to push providers",
            metrics.notify.attempt_seconds.clone(),
        );
        registry.register(
            "notify_queue_depth",
            "Pushes waiting in the notification queue (queued, held, parked)",
            metrics.notify.queue_depth.clone(),
        );
        registry.register(
            "notify_dedup_claims",
            "Dedup claims the embedded ledger holds in memory (notify.max_dedup_claims at most)",
            metrics.notify.dedup_claims.clone(),
        );
        registry.register(
            "notify_decision_batch_size",
            "Notifications routed together in one batch (one dedup claim, one ledger write)",
            metrics.notify.decision_batch.clone(),
        );
        registry.register(
            "notify_routed",
            "Notifications routed",
            metrics.notify.routed.clone(),
        );
        registry.register(
            "record_events",
            "Events offered to the traffic recorder: written, dropped (queue full), stopped (limit reached)",
            metrics.record_events.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    pub fn reject(&self, reason: RejectReason) {
        self.rejected.get_or_create(&RejectLabel { reason }).inc();
    }

    pub fn deny(&self, kind: DenialKind) {
        self.acl_denials.get_or_create(&DenialLabel { kind }).inc();
    }

    pub fn rate_limit(&self, kind: RateLimited) {
        self.rate_limited
            .get_or_create(&RateLimitedLabel { kind })
            .inc();
    }

    /// Open sessions per transport, without adding a zero series for a transport never used.
    pub fn connections_now(&self) -> Vec<(Transport, i64)> {
        Transport::ALL
            .into_iter()
            .map(|transport| {
                let label = TransportLabel::from(transport);
                let open = self.connections.get(&label).map_or(0, |gauge| gauge.get());
                (transport, open)
            })
            .collect()
    }

    /// Messages written to clients, on every transport.
    pub fn delivered_total(&self) -> u64 {
        Transport::ALL
            .into_iter()
            .filter_map(|transport| {
                let label = TransportLabel::from(transport);
                self.messages_out.get(&label).map(|counter| counter.get())
            })
            .sum()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
