//! MQTT sessions that outlive a connection (3.1.1 `clean_session = 0`, or a v5 Session Expiry
//! Interval): what they hold, how a new connection takes one up, and where it waits meanwhile.
//!
//! A session is held by at most one connection at a time: each has a slot whose lock the
//! connection holds for as long as it runs, so a connection that takes over (the same device
//! reconnecting) gets the session only once the one before has handed it back, with every
//! delivery it had left unacknowledged. While its client is away, a session with subscriptions
//! outside the users' topics (`pub/…`, `svc/…`, dev mode) is *parked*: a link of its own stays
//! subscribed in the hub and queues what arrives at QoS 1 and 2 in the store, bounded by
//! `sessions.max_queued` and `max_queued_bytes`. Subscriptions to the user's inbox and
//! notifications need no queue: the user's log is the queue, read from the device's cursor when
//! it comes back. The user's presence, signals and replies are live only (a signal is never
//! kept, by design): those subscriptions are simply made again.
//!
//! Every session is kept in the store too (on every change of its subscriptions, and when its
//! client leaves), so it survives a restart and can be taken up on another node.

use super::hub::{Hub, SubscriptionOptions};
use super::link::{Delivery, Link, LinkIds, Qos};
use super::message::{KeptMessage, Published};
use super::outbox::Outbox;
use crate::auth::identity::Identity;
use crate::infra::time::unix_millis;
use crate::shutdown::Shutdown;
use crate::store::sessions::{QueueBound, SessionKey, SessionStore};
use crate::store::StoreError;
use dashmap::DashMap;
use prometheus_client::metrics::counter::Counter;
use protocol::topics;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, OwnedMutexGuard};

/// How long a parked session empties its connection's outbox at most.
const LEFTOVER: Duration = Duration::from_secs(5);

/// A subscription as a session keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptSubscription {
    pub filter: String,
    /// The group of a shared subscription (`$share/{group}/{filter}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<String>,
    pub qos: u8,
    #[serde(default)]
    pub no_local: bool,
    #[serde(default)]
    pub retain_as_published: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
}

impl KeptSubscription {
    /// The filter as the client named it: `$share/{group}/{filter}` for a shared one.
    pub fn requested(&self) -> String {
        match &self.share {
            Some(group) => format!("$share/{group}/{}", self.filter),
            None => self.filter.clone(),
        }
    }

    /// Whether the client named this subscription `requested` (see [`Self::requested`]).
    pub fn is_named(&self, requested: &str) -> bool {
        match &self.share {
            Some(group) => topics::shared_subscription(requested)
                .is_some_and(|(named, filter)| named == group && filter == self.filter),
            None => requested == self.filter,
        }
    }

    pub fn options(&self) -> SubscriptionOptions {
        SubscriptionOptions {
            qos: Qos::from_level(self.qos).unwrap_or(Qos::AtLeastOnce),
            no_local: self.no_local,
            retain_as_published: self.retain_as_published,
            id: self.id,
        }
    }

    /// Whether what the subscription gets is queued while its client is away: anything but the
    /// users' own topics, which the log covers (inbox, notifications) or which are live only
    /// (presence, signals, replies).
    pub fn queues_while_away(&self) -> bool {
        self.share.is_some() || !self.filter.starts_with(topics::USER_PREFIX)
    }
}

/// The session a client's identity holds: a device's own, or one per MQTT client id for
/// anonymous clients and backends (each kind apart, so neither can take the other's).
pub fn session_key(identity: &Identity) -> SessionKey {
    match identity {
        Identity::Device { user, device, .. } => SessionKey::Device {
            user: user.clone(),
            device: device.clone(),
        },
        Identity::Anonymous { client_id } => SessionKey::Client(format!("anonymous:{client_id}")),
        Identity::Backend { client_id, .. } => SessionKey::Client(format!("backend:{client_id}")),
    }
}

/// Who a session kept in the store belongs to, for the link that holds it while its client is
/// away (which only receives: a backend's notification topic and a device's platform do not
/// matter to it).
fn identity_of(key: &SessionKey) -> Option<Identity> {
    Some(match key {
        SessionKey::Device { user, device } => Identity::Device {
            user: user.clone(),
            device: device.clone(),
            platform: protocol::envelope::Platform::Android,
        },
        SessionKey::Client(name) => match name.split_once(':')? {
            ("anonymous", client_id) => Identity::Anonymous {
                client_id: client_id.to_string(),
            },
            ("backend", client_id) => Identity::Backend {
                client_id: client_id.to_string(),
                notify_topic: String::new(),
            },
            _ => return None,
        },
    })
}

/// A delivery the client had not acknowledged when it left, sent again (DUP) when it comes back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeptDelivery {
    pub pkid: u16,
    pub qos: u8,
    /// A QoS 2 delivery whose PUBREC came: only its PUBREL is sent again.
    pub released: bool,
    pub message: KeptMessage,
    #[serde(default)]
    pub retain: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscription_ids: Vec<u32>,
}

/// What a session holds between connections.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SessionState {
    /// How long it is kept after its client leaves.
    pub expiry_secs: u32,
    pub subscriptions: Vec<KeptSubscription>,
    /// Packet ids of QoS 2 publishes the client sent and the gateway answered (PUBREC), whose
    /// PUBREL has not come: a publish sent again under one of them is not taken twice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub awaiting_release: Vec<u16>,
    /// The last QoS 1 publishes the client sent and the gateway took, by packet id and
    /// fingerprint: one sent again with DUP after a reconnect is answered, not taken twice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answered: Vec<(u16, u64)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unacknowledged: Vec<KeptDelivery>,
    /// For a device following its user's log: where the session began to (no entry before it
    /// is the session's), in the log of `log_epoch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_from: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_epoch: Option<String>,
}

impl KeptDelivery {
    /// The delivery as it was, to be sent again.
    pub fn delivery(self) -> Delivery {
        let (message, _) = Published::unkeep(self.message);
        Delivery {
            message: std::sync::Arc::new(message),
            qos: Qos::from_level(self.qos).unwrap_or(Qos::AtLeastOnce),
            retain: self.retain,
            subscription_ids: self.subscription_ids.into(),
        }
    }
}

impl SessionState {
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a session serializes")
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }

    fn parks(&self) -> bool {
        self.subscriptions
            .iter()
            .any(KeptSubscription::queues_while_away)
    }
}

/// One session's place: the lock a connection holds while it runs, and what is kept between.
#[derive(Default)]
struct Slot {
    held: Arc<Mutex<Held>>,
    /// Counts the connections that took the session up: a delayed will is published only if
    /// no new connection took it up meanwhile.
    generation: AtomicU64,
}

#[derive(Default)]
struct Held {
    /// The state handed back by the last connection, when the store could not take it.
    state: Option<SessionState>,
    /// When the state (in memory or in the store) stops being kept.
    expires: Option<Instant>,
    parked: Option<Parked>,
}

/// A parked session's link and the task that queues what it gets.
struct Parked {
    link: Arc<Link>,
    done: tokio::task::JoinHandle<()>,
}

/// A session taken up by a connection; hand it back with [`Sessions::release`].
pub struct Claim {
    pub key: SessionKey,
    /// The session's lock; `None` once let go (see [`Sessions::let_go`]).
    held: Option<OwnedMutexGuard<Held>>,
    /// Which connection of the session this is (see [`Sessions::still_away`]).
    pub generation: u64,
    /// The store may hold a state of the session (one was taken up, or the connection kept
    /// one): a session that ends must then be dropped from it.
    pub stored: bool,
}

/// What a claim takes up of a session kept while its client was away.
pub struct TakenUp {
    /// The session's state, when one was kept (CONNACK's Session Present).
    pub state: Option<SessionState>,
    /// What was queued for it while its client was away, with the QoS it was queued at.
    pub queued: Vec<(Published, Qos)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("the connection holding this session did not hand it back in time")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Sessions {
    slots: Arc<DashMap<SessionKey, Arc<Slot>>>,
    store: Arc<dyn SessionStore>,
    hub: Arc<Hub>,
    link_ids: Arc<LinkIds>,
    config: broker_config::Sessions,
    outbox_capacity: usize,
    /// Messages queued for away sessions that pushed older ones out.
    dropped: Counter,
    shutdown: Shutdown,
}

impl Sessions {
    pub fn new(
        store: Arc<dyn SessionStore>,
        hub: Arc<Hub>,
        link_ids: Arc<LinkIds>,
        config: broker_config::Sessions,
        outbox_capacity: usize,
        dropped: Counter,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            slots: Arc::default(),
            store,
            hub,
            link_ids,
            config,
            outbox_capacity,
            dropped,
            shutdown,
        }
    }

    /// The longest a session is kept (`sessions.max_expiry`), in seconds.
    pub fn max_expiry_secs(&self) -> u32 {
        u32::try_from(self.config.max_expiry.as_secs()).unwrap_or(u32::MAX)
    }

    fn slot(&self, key: &SessionKey) -> Arc<Slot> {
        self.slots.entry(key.clone()).or_default().clone()
    }

    /// Takes the session up for a new connection, waiting up to `wait` for a connection that
    /// still holds it to hand it back. `clean_start` discards what was kept.
    pub async fn claim(
        &self,
        key: SessionKey,
        clean_start: bool,
        wait: Duration,
    ) -> Result<(Claim, TakenUp), ClaimError> {
        let slot = self.slot(&key);
        let mut held = tokio::time::timeout(wait, slot.held.clone().lock_owned())
            .await
            .map_err(|_| ClaimError::Busy)?;
        let generation = slot.generation.fetch_add(1, Ordering::AcqRel) + 1;
        if let Some(parked) = held.parked.take() {
            parked.link.close(super::link::CloseReason::new(
                protocol::envelope::DisconnectReason::TakenOver,
                "the session's client is back",
            ));
            let _ = parked.done.await;
        }
        // The store's copy is the truth (another node may have held the session since);
        // the one in memory stands in while the store is away.
        let remembered = held
            .state
            .take()
            .filter(|_| held.expires.is_none_or(|at| at > Instant::now()));
        held.expires = None;
        let kept = match self.store.session(&key).await {
            Ok(bytes) => bytes.and_then(|bytes| SessionState::decode(&bytes)),
            Err(e) => match remembered {
                Some(state) => {
                    tracing::warn!("taking up a session from memory, the store is away: {e}");
                    Some(state)
                }
                None => return Err(e.into()),
            },
        };
        let (state, queued) = match (kept, clean_start) {
            (Some(_), true) => {
                self.store.drop_session(&key).await?;
                (None, Vec::new())
            }
            (None, _) => (None, Vec::new()),
            (Some(state), false) if !state.parks() => (Some(state), Vec::new()),
            (Some(state), false) => {
                let queued = self.store.take_queued(&key).await?;
                let now = Instant::now();
                let queued = queued
                    .iter()
                    .filter_map(|bytes| Published::decode(bytes))
                    .filter(|(message, _)| !message.is_expired(now))
                    .map(|(message, qos)| {
                        let qos = qos.and_then(Qos::from_level).unwrap_or(Qos::AtLeastOnce);
                        (message, qos)
                    })
                    .collect();
                (Some(state), queued)
            }
        };
        let claim = Claim {
            key,
            held: Some(held),
            generation,
            stored: state.is_some(),
        };
        Ok((claim, TakenUp { state, queued }))
    }

    /// Keeps a persistent session's state in the store while its connection runs, so that a
    /// change of its subscriptions holds across a crash and on another node.
    pub async fn keep(&self, key: &SessionKey, state: &SessionState) -> Result<(), StoreError> {
        let expires = unix_millis() + u64::from(self.config_expiry(state)) * 1000;
        // While the connection runs it may live longer than the expiry: keep it at least as
        // long as the longest session, and set the real expiry when the client leaves.
        let expires = expires.max(unix_millis() + self.config.max_expiry.as_millis() as u64);
        self.store.put_session(key, &state.encode(), expires).await
    }

    fn config_expiry(&self, state: &SessionState) -> u32 {
        state.expiry_secs.min(self.max_expiry_secs())
    }

    /// Hands a session back as its connection ends: kept (in memory, in the store, and parked
    /// when it has subscriptions to queue for) when `state` is given and its expiry is not 0,
    /// else forgotten. `identity` is the client's, for the parked link; `leftover` its outbox,
    /// which the parked session empties into its queue, so that nothing published between the
    /// connection's end and the parking is lost (call this before the client's subscriptions
    /// go). `moved` is true when another node took the session over: that node holds it now.
    pub async fn release(
        &self,
        mut claim: Claim,
        state: Option<SessionState>,
        identity: &Identity,
        leftover: Outbox,
        moved: bool,
    ) {
        if moved {
            return;
        }
        let key = claim.key.clone();
        let state = state.filter(|state| state.expiry_secs > 0);
        let (Some(state), Some(mut held)) = (state, claim.held.take()) else {
            if claim.stored {
                if let Err(e) = self.store.drop_session(&key).await {
                    tracing::warn!("a session ended but stays in the store until it expires: {e}");
                }
            }
            self.let_go(&mut claim);
            return;
        };
        let expiry = Duration::from_secs(u64::from(self.config_expiry(&state)));
        let expires_at_ms = unix_millis() + expiry.as_millis() as u64;
        let stored = match (self.store)
            .put_session(&key, &state.encode(), expires_at_ms)
            .await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!("a session is kept in memory only, the store is away: {e}");
                false
            }
        };
        if state.parks() && !self.shutdown.is_cancelled() {
            let parked = self.park(&key, &state, identity, expiry, Some(leftover));
            held.parked = Some(parked);
        } else if state.parks() {
            // Shutting down: no parking, but what the client was not sent yet is queued, to be
            // sent when it comes back after the restart.
            let mut leftover = leftover;
            self.queue(&key).put_all(&mut leftover).await;
        }
        held.expires = Some(Instant::now() + expiry);
        // The store holds it: memory keeps only what the store could not take.
        held.state = (!stored).then_some(state);
    }

    /// Lets go of a session that ends with its connection (a clean one): nothing will be handed
    /// over when it ends, so a new connection of the client need not wait for it, and an idle
    /// connection holds no slot.
    pub fn let_go(&self, claim: &mut Claim) {
        if claim.held.take().is_some() {
            (self.slots).remove_if(&claim.key, |_, slot| slot.held.try_lock().is_ok());
        }
    }

    fn queue(&self, key: &SessionKey) -> SessionQueue {
        SessionQueue {
            store: self.store.clone(),
            key: key.clone(),
            bound: QueueBound {
                messages: self.config.max_queued,
                bytes: self.config.max_queued_bytes,
            },
            dropped: self.dropped.clone(),
        }
    }

    /// Whether no connection took the session up since `generation`: a delayed will goes out
    /// only then.
    pub fn still_away(&self, key: &SessionKey, generation: u64) -> bool {
        self.slots
            .get(key)
            .is_some_and(|slot| slot.generation.load(Ordering::Acquire) == generation)
    }

    /// Subscribes a link of the session's own in the hub, and queues what it gets in the store
    /// until the client is back or the session expires.
    fn park(
        &self,
        key: &SessionKey,
        state: &SessionState,
        identity: &Identity,
        expiry: Duration,
        leftover: Option<Outbox>,
    ) -> Parked {
        let (link, mut outbox) = Link::new(
            self.link_ids.next(),
            identity.clone(),
            self.outbox_capacity,
            true,
        );
        link.drop_when_full();
        let parked: Vec<_> = state
            .subscriptions
            .iter()
            .filter(|s| s.queues_while_away())
            .cloned()
            .collect();
        for s in &parked {
            self.hub
                .subscribe(&link, &s.filter, s.share.as_deref(), s.options());
        }
        let (store, hub, key, queue) = (
            self.store.clone(),
            self.hub.clone(),
            key.clone(),
            self.queue(key),
        );
        let holder = link.clone();
        let slots = self.slots.clone();
        let shutdown = self.shutdown.clone();
        let done = self.shutdown.spawn(async move {
            // First what the connection's outbox still holds or gets until its link is gone.
            // Until then both links are subscribed, and a message published meanwhile reaches
            // both: the one the parked link got as well is kept, to be queued once.
            let mut taken_from_leftover: Vec<Arc<Published>> = Vec::new();
            if let Some(mut leftover) = leftover {
                let drained = async {
                    while let Some(delivery) = leftover.recv().await {
                        queue.put(&delivery).await;
                        taken_from_leftover.push(delivery.message);
                    }
                };
                // The link is gone once its client is: this is a bound, not a wait.
                let _ = tokio::time::timeout(LEFTOVER, drained).await;
            }
            // One publish put both twins: those of what the leftover held are in this outbox
            // by now.
            while let Some(delivery) = outbox.try_recv() {
                let twin = (taken_from_leftover.iter())
                    .position(|taken| Arc::ptr_eq(taken, &delivery.message));
                match twin {
                    Some(at) => drop(taken_from_leftover.swap_remove(at)),
                    None => queue.put(&delivery).await,
                }
            }
            drop(taken_from_leftover);
            let expired = tokio::time::sleep(expiry);
            tokio::pin!(expired);
            let closed = holder.closed();
            tokio::pin!(closed);
            let mut expired_now = false;
            loop {
                tokio::select! {
                    Some(delivery) = outbox.recv() => queue.put(&delivery).await,
                    _ = &mut closed => break,
                    // What arrived is queued; the session is taken up again at the next start.
                    () = shutdown.cancelled() => break,
                    () = &mut expired => {
                        expired_now = true;
                        break;
                    }
                }
            }
            for s in &parked {
                hub.unsubscribe(holder.id, &s.filter, s.share.as_deref());
            }
            queue.put_all(&mut outbox).await;
            if expired_now {
                if let Err(e) = store.drop_session(&key).await {
                    tracing::warn!("an expired session stays in the store: {e}");
                }
                slots.remove_if(&key, |_, slot| slot.held.try_lock().is_ok());
            }
        });
        Parked { link, done }
    }

    /// Takes up the sessions kept in the store when the gateway starts: those with
    /// subscriptions outside the user's log are parked again.
    pub async fn take_up_kept(&self) -> Result<usize, StoreError> {
        let kept = self.store.kept_sessions().await?;
        let mut parked = 0;
        for (key, bytes) in kept {
            let Some(state) = SessionState::decode(&bytes) else {
                continue;
            };
            if !state.parks() {
                continue;
            }
            let Some(identity) = identity_of(&key) else {
                continue;
            };
            let slot = self.slot(&key);
            let mut held = slot.held.clone().lock_owned().await;
            let expiry = Duration::from_secs(u64::from(self.config_expiry(&state)));
            held.parked = Some(self.park(&key, &state, &identity, expiry, None));
            held.expires = Some(Instant::now() + expiry);
            parked += 1;
        }
        Ok(parked)
    }

    /// Forgets the sessions whose clients stayed away past their expiry, in memory and in the
    /// store (a parked session forgets itself when it expires).
    pub async fn sweep(&self) {
        let now = Instant::now();
        let expired: Vec<SessionKey> = self
            .slots
            .iter()
            .filter(|slot| {
                slot.held.try_lock().is_ok_and(|held| {
                    held.parked.is_none() && held.expires.is_some_and(|at| at <= now)
                })
            })
            .map(|slot| slot.key().clone())
            .collect();
        for key in expired {
            self.slots.remove_if(&key, |_, slot| {
                slot.held
                    .try_lock()
                    .is_ok_and(|held| held.expires.is_some_and(|at| at <= now))
            });
            if let Err(e) = self.store.drop_session(&key).await {
                tracing::warn!("an expired session stays in the store: {e}");
            }
        }
    }

    /// Closes what a session parked here holds when its device came back on another node.
    pub fn moved_elsewhere(&self, key: &SessionKey) {
        if let Some(slot) = self.slots.get(key) {
            if let Ok(mut held) = slot.held.try_lock() {
                if let Some(parked) = held.parked.take() {
                    parked.link.close(super::link::CloseReason::new(
                        protocol::envelope::DisconnectReason::TakenOver,
                        "the session's client is back on another node",
                    ));
                }
                held.state = None;
            }
        }
    }
}

/// An away session's queue in the store, within its bound, counting what the bound pushes out.
#[derive(Clone)]
struct SessionQueue {
    store: Arc<dyn SessionStore>,
    key: SessionKey,
    bound: QueueBound,
    dropped: Counter,
}

impl SessionQueue {
    /// Queues one delivery: not at QoS 0, nor expired, nor an entry of the user's log (the
    /// cursor brings those back).
    async fn put(&self, delivery: &Delivery) {
        let message = &delivery.message;
        if delivery.qos == Qos::AtMostOnce
            || message.seq.is_some()
            || message.is_expired(Instant::now())
        {
            return;
        }
        let bytes = message.encode(Some(delivery.qos.level()));
        match self.store.enqueue(&self.key, &bytes, self.bound).await {
            Ok(pushed_out) => {
                self.dropped.inc_by(pushed_out);
            }
            Err(e) => tracing::warn!("a message for an away session is lost: {e}"),
        }
    }

    /// Queues what `outbox` holds now.
    async fn put_all(&self, outbox: &mut Outbox) {
        while let Some(delivery) = outbox.try_recv() {
            self.put(&delivery).await;
        }
    }
}
