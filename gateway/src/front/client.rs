//! One connected client, whatever its transport: authorization of every subscribe and publish,
//! its subscriptions in the hub, and handling of the device → server topics.
//!
//! The MQTT connection and the JSON WebSocket both drive a [`Client`]; they differ only in how
//! packets and frames are read and written.

use super::in_order::InOrder;
use super::rate_limits::DeviceBuckets;
use super::refusal::Refusal;
use super::Front;
use crate::auth::acl::PublishRoute;
use crate::auth::identity::Identity;
use crate::live::hub::SubscriptionOptions;
use crate::live::link::{CloseReason, Delivery, Link, LinkId, Qos};
use crate::live::message::{MessageProperties, Published};
use crate::live::outbox::Outbox;
use crate::live::registry::{Admission, DecisionError};
use crate::live::sessions::KeptSubscription;
use crate::log::accept::Sender;
use crate::log::sync;
use crate::notify::input::NotificationInput;
use crate::notify::quiet_hours;
use crate::notify::router::RouteError;
use crate::observe::metrics::{DenialKind, DisconnectLabel, RateLimited, TransportLabel};
use crate::observe::recorder::SessionRecording;
use crate::store::{EntryKind, Origin};
use bytes::Bytes;
use protocol::envelope::{
    AckRequest, ApprovalDecision, ClientMsgId, DisconnectReason, Reply, SendRequest, SignalMessage,
    SyncRequest, Transport,
};
use protocol::notification::QuietHours;
use protocol::topics::{self, is_valid_id, DeviceAction};
use protocol::ErrorCode;
use serde_json::value::RawValue;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a publish was handled: at once, or by work that finishes later (a durable append, a
/// cursor move), whose result the transport reports when it is done, in order.
pub enum Handled {
    Done(Result<(), Refusal>),
    Later(Pin<Box<dyn Future<Output = Result<(), Refusal>> + Send>>),
}

impl Handled {
    pub async fn finish(self) -> Result<(), Refusal> {
        match self {
            Self::Done(result) => result,
            Self::Later(work) => work.await,
        }
    }

    /// Runs `then` once the publish turns out handled successfully, when that is known.
    fn on_success(self, then: impl FnOnce() + Send + 'static) -> Self {
        match self {
            Self::Done(result) => {
                if result.is_ok() {
                    then();
                }
                Self::Done(result)
            }
            Self::Later(work) => Self::Later(Box::pin(async move {
                let result = work.await;
                if result.is_ok() {
                    then();
                }
                result
            })),
        }
    }
}

pub struct Client {
    front: Arc<Front>,
    pub link: Arc<Link>,
    transport: Transport,
    /// The subscriptions, in the order they were made: a list, not a map, as there are few
    /// (`limits.max_subscriptions`) and an idle connection holds one or two, for which a hash
    /// table's smallest allocation was bigger than the subscriptions themselves.
    subscriptions: Vec<KeptSubscription>,
    end: DisconnectReason,
    /// Acks and syncs take effect in the order the device sent them: a sync right after an ack
    /// starts from the acknowledged place.
    cursor_requests: InOrder,
    /// The device's rate-limit buckets, when `[rate_limits]` is on and the client is a device.
    rate: Option<Arc<DeviceBuckets>>,
    /// This transport's `messages_in` counter, looked up once rather than on every publish.
    messages_in: prometheus_client::metrics::counter::Counter,
    /// What the client does that the traffic recording keeps, when recording is on; dropped
    /// with the client, which records its disconnect.
    recording: Option<SessionRecording>,
}

/// Whether a new subscription gets the retained messages it matches (MQTT 5 Retain Handling;
/// 3.1.1 always sends them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetainHandling {
    Send,
    SendIfNew,
    DoNotSend,
}

/// What a client asks to subscribe to.
#[derive(Debug, Clone)]
pub struct SubscribeRequest<'a> {
    /// As sent: a plain filter or `$share/{group}/{filter}`.
    pub filter: &'a str,
    pub options: SubscriptionOptions,
    pub retain_handling: RetainHandling,
}

/// A subscription made.
pub struct Subscribed {
    pub granted: Qos,
    /// The retained messages it matches, to send after the SUBACK.
    pub retained: Vec<Delivery>,
    /// It follows one of the user's logged topics (inbox or notifications).
    pub logged: Option<EntryKind>,
}

/// A message a client publishes, with what MQTT 5 lets it attach.
#[derive(Debug, Clone)]
pub struct Publication {
    pub topic: String,
    pub payload: Bytes,
    pub qos: Qos,
    pub retain: bool,
    pub properties: MessageProperties,
    /// Message Expiry Interval, seconds.
    pub expiry: Option<u32>,
}

impl Publication {
    /// A message with nothing but a topic and payload (the JSON bridge's).
    pub fn plain(topic: &str, payload: Bytes, qos: Qos) -> Self {
        Self {
            topic: topic.to_string(),
            payload,
            qos,
            retain: false,
            properties: MessageProperties::default(),
            expiry: None,
        }
    }
}

impl Client {
    /// Registers a new client (taking over an older connection of the same device, applying
    /// the device policy) and returns it with the receiving end of its outbox.
    pub fn open(
        front: &Arc<Front>,
        identity: Identity,
        transport: Transport,
        admission: Admission,
    ) -> (Self, Outbox) {
        let approved = admission == Admission::Approved;
        let (link, outbox) = Link::new(
            front.link_ids.next(),
            identity,
            front.limits.outbox_capacity,
            approved,
        );
        front.registry.register(&link, transport);
        // A client whose handshake ends while the server shuts down is told so like the others:
        // registered after the shutdown closed every link, it would otherwise stay open until the
        // grace ran out, and be reset then. (The shutdown begins before it closes the links.)
        if front.shutdown.is_cancelled() {
            link.close(CloseReason::shutdown());
        }
        front
            .metrics
            .connections
            .get_or_create(&TransportLabel::from(transport))
            .inc();
        tracing::debug!(link = link.id, who = %link.identity.describe(), transport = transport.as_str(), "client connected");
        let recording = front
            .recorder
            .as_ref()
            .and_then(|recorder| recorder.session(link.id, &link.identity, transport));
        let rate = match (&front.rate_limits, &link.identity) {
            (Some(limits), Identity::Device { user, device, .. }) => Some(limits.of(user, device)),
            _ => None,
        };
        let client = Self {
            front: front.clone(),
            link,
            transport,
            subscriptions: Vec::new(),
            end: DisconnectReason::SocketClosed,
            cursor_requests: InOrder::default(),
            rate,
            messages_in: front
                .metrics
                .messages_in
                .get_or_create(&TransportLabel::from(transport))
                .clone(),
            recording,
        };
        (client, outbox)
    }

    pub fn identity(&self) -> &Identity {
        &self.link.identity
    }

    pub fn front(&self) -> &Arc<Front> {
        &self.front
    }

    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Records why the connection ends, for presence and metrics when it is dropped.
    pub fn set_end_reason(&mut self, reason: DisconnectReason) {
        self.end = reason;
    }

    pub fn end_reason(&self) -> DisconnectReason {
        self.end
    }

    /// The subscriptions as a session keeps them.
    pub fn subscriptions(&self) -> Vec<KeptSubscription> {
        self.subscriptions.clone()
    }

    pub fn subscribe(&mut self, request: &SubscribeRequest<'_>) -> Result<Subscribed, Refusal> {
        if !self.within_topic_limit(request.filter) {
            self.front.metrics.deny(DenialKind::subscribe);
            return Err(Refusal::InvalidTopic);
        }
        let (share, filter) = match topics::shared_subscription(request.filter) {
            Some((group, filter)) => (Some(group), filter),
            None if request.filter.starts_with("$share/") => return Err(Refusal::InvalidTopic),
            None => (None, request.filter),
        };
        if let Err(denied) = self.identity().may_subscribe(filter, share.is_some()) {
            self.front.metrics.deny(DenialKind::subscribe);
            return Err(denied.into());
        }
        if self.front.auth.withheld(self.identity(), filter) {
            self.front.metrics.deny(DenialKind::subscribe);
            return Err(Refusal::Withheld);
        }
        let existing = (self.subscriptions.iter()).position(|kept| kept.is_named(request.filter));
        if existing.is_none() && self.subscriptions.len() >= self.front.limits.max_subscriptions {
            return Err(Refusal::TooManySubscriptions);
        }
        let options = request.options;
        self.front.hub.subscribe(&self.link, filter, share, options);
        let kept = KeptSubscription {
            filter: filter.to_string(),
            share: share.map(str::to_string),
            qos: options.qos.level(),
            no_local: options.no_local,
            retain_as_published: options.retain_as_published,
            id: options.id,
        };
        match existing {
            Some(index) => self.subscriptions[index] = kept,
            None => {
                self.subscriptions.reserve_exact(1);
                self.subscriptions.push(kept);
            }
        }
        if let Some(recording) = &self.recording {
            recording.subscribed(request.filter, options.qos);
        }
        let mut logged = None;
        if let Identity::Device { user, device, .. } = self.identity() {
            if !self.link.is_approved() && filter == topics::reply(user, device) {
                self.front
                    .registry
                    .reply(user, device, &Reply::ApprovalPending);
            }
            if share.is_none() && filter == topics::inbox(user) {
                logged = Some(EntryKind::Message);
            } else if share.is_none() && filter == topics::notify(user) {
                logged = Some(EntryKind::Notification);
            }
        }
        let sends_retained = match request.retain_handling {
            RetainHandling::Send => true,
            RetainHandling::SendIfNew => existing.is_none(),
            RetainHandling::DoNotSend => false,
        };
        let retained = if share.is_none() && sends_retained {
            self.retained_for(filter, options)
        } else {
            Vec::new()
        };
        Ok(Subscribed {
            granted: options.qos,
            retained,
            logged,
        })
    }

    /// The retained messages a new subscription to `filter` gets, at the lower of their QoS and
    /// the subscription's, flagged as retained.
    fn retained_for(&self, filter: &str, options: SubscriptionOptions) -> Vec<Delivery> {
        if !self.link.is_approved() {
            return Vec::new();
        }
        self.front
            .retained
            .matching(filter)
            .into_iter()
            .filter(|(message, _)| self.identity().may_receive(&message.topic))
            .map(|(message, qos)| Delivery {
                message,
                qos: qos.min(options.qos),
                retain: true,
                subscription_ids: options.id.into_iter().collect(),
            })
            .collect()
    }

    /// Topics and filters are at most `limits.max_topic_length` bytes: they are kept per
    /// subscription and session, logged and matched against every publish.
    fn within_topic_limit(&self, topic: &str) -> bool {
        topic.len() <= self.front.limits.max_topic_length
    }

    /// Returns the subscription that existed under `filter` (as the client named it).
    pub fn unsubscribe(&mut self, filter: &str) -> Option<KeptSubscription> {
        let index = (self.subscriptions.iter()).position(|kept| kept.is_named(filter))?;
        let existed = self.subscriptions.remove(index);
        self.front
            .hub
            .unsubscribe(self.link.id, &existed.filter, existed.share.as_deref());
        if let Some(recording) = &self.recording {
            recording.unsubscribed(filter);
        }
        Some(existed)
    }

    /// Handles a publish from this client: a device request on its own device topic, a
    /// device's message to the backend's services, a backend's notification, or (dev mode) a
    /// plain broker publish.
    pub fn publish(&self, publication: Publication) -> Handled {
        self.messages_in.inc();
        let topic = publication.topic.as_str();
        let route = match self.identity().may_publish(topic) {
            _ if !self.within_topic_limit(topic) => Err(Refusal::InvalidTopic),
            Ok(PublishRoute::Service) if topic == self.front.auth.notify_topic => {
                Err(Refusal::Forbidden)
            }
            Ok(_) if self.front.auth.withheld(self.identity(), topic) => Err(Refusal::Withheld),
            Ok(route) => Ok(route),
            Err(denied) => Err(denied.into()),
        };
        let route = match route {
            Ok(route) => route,
            Err(refusal) => {
                self.front.metrics.deny(DenialKind::publish);
                return Handled::Done(Err(refusal));
            }
        };
        let recorded = (self.recording.as_ref())
            .map(|r| r.publish(topic, publication.payload.clone(), publication.qos));
        let handled = match route {
            PublishRoute::Broker => broadcast(&self.front, self.link.id, publication),
            PublishRoute::Service => self.to_services(publication),
            PublishRoute::DeviceRequest(action) => {
                self.device_request(action, &publication.payload)
            }
            PublishRoute::Notification => self.notification(&publication.payload),
        };
        match recorded {
            Some(publish) => handled.on_success(|| publish.accepted()),
            None => handled,
        }
    }

    /// A device's message to the backend's services: stamped with the device's user and id
    /// (replacing any the device set itself), never retained.
    fn to_services(&self, publication: Publication) -> Handled {
        broadcast(&self.front, self.link.id, self.stamped(publication))
    }

    /// A device's publication to the services, stamped with the device's user and id
    /// (replacing any the device set itself), never retained.
    fn stamped(&self, mut publication: Publication) -> Publication {
        if let Identity::Device { user, device, .. } = self.identity() {
            let properties = &mut publication.properties.user_properties;
            properties.retain(|(key, _)| key != SENDER_USER && key != SENDER_DEVICE);
            properties.push((SENDER_USER.to_string(), user.clone()));
            properties.push((SENDER_DEVICE.to_string(), device.clone()));
        }
        publication.retain = false;
        publication
    }

    fn device_request(&self, action: DeviceAction, payload: &[u8]) -> Handled {
        let Identity::Device { user, device, .. } = self.identity() else {
            return Handled::Done(Err(Refusal::Forbidden));
        };
        if !self.link.is_approved() {
            return Handled::Done(Err(Refusal::ApprovalPending));
        }
        match action {
            DeviceAction::Send => match parse::<SendRequest>(payload) {
                Ok(request) => self.send(&request.to, &request.body, request.client_msg_id),
                Err(refusal) => Handled::Done(Err(refusal)),
            },
            DeviceAction::Signal => Handled::Done(self.signal(payload)),
            DeviceAction::Approve => match parse::<ApprovalDecision>(payload) {
                Ok(decision) => {
                    let registry = self.front.registry.clone();
                    let (user, by) = (user.clone(), device.clone());
                    Handled::Later(Box::pin(async move {
                        (registry.decide(&user, &decision.device, decision.approve, Some(&by)))
                            .await
                            .map_err(|e| match e {
                                DecisionError::NotPending => Refusal::BadPayload(e.to_string()),
                                DecisionError::Unavailable(why) => Refusal::StoreUnavailable(why),
                            })
                    }))
                }
                Err(refusal) => Handled::Done(Err(refusal)),
            },
            DeviceAction::Ack => match parse::<AckRequest>(payload) {
                Ok(request) => self.ack(request.seq),
                Err(refusal) => Handled::Done(Err(refusal)),
            },
            DeviceAction::QuietHours => match parse::<QuietHours>(payload) {
                Ok(hours) => self.set_quiet_hours(hours),
                Err(refusal) => Handled::Done(Err(refusal)),
            },
            DeviceAction::Sync => {
                Handled::Done(parse::<SyncRequest>(payload).and_then(|request| self.sync(request)))
            }
        }
    }

    /// Sends a message from this device to user `to`; done once it is durable in the logs (or
    /// found there: a `client_msg_id` sent before within the window is not stored again).
    pub fn send(&self, to: &str, body: &serde_json::Value, id: Option<ClientMsgId>) -> Handled {
        let Identity::Device { user, device, .. } = self.identity() else {
            return Handled::Done(Err(Refusal::Forbidden));
        };
        if let Err(refusal) = self
            .within_rate(DeviceAction::Send)
            .and_then(|()| recipient(to))
        {
            return Handled::Done(Err(refusal));
        }
        let sender = Sender::Device {
            user,
            device,
            origin: Origin(self.link.id),
        };
        let (_, ticket) = self.front.messages.accept(sender, to, body, id.as_ref());
        Handled::Later(Box::pin(async move {
            ticket.wait().await?;
            Ok(())
        }))
    }

    /// Relays a live signal from this device (see [`crate::live::signals`]). Nothing is stored,
    /// so it is done once handed on: a device that is offline never sees it.
    fn signal(&self, payload: &[u8]) -> Result<(), Refusal> {
        let Identity::Device { user, device, .. } = self.identity() else {
            return Err(Refusal::Forbidden);
        };
        self.within_rate(DeviceAction::Signal)?;
        let request: SendRequest<&RawValue> =
            serde_json::from_slice(payload).map_err(|e| Refusal::BadPayload(e.to_string()))?;
        recipient(&request.to)?;
        let signal = SignalMessage {
            from: Some(user.clone()),
            from_device: Some(device.clone()),
            body: request.body,
        };
        (self.front.signals).relay(&request.to, &signal, Some(self.link.id));
        Ok(())
    }

    /// Routes a backend's notification; done once its decisions are recorded.
    fn notification(&self, payload: &[u8]) -> Handled {
        let notification = match parse::<NotificationInput>(payload)
            .and_then(|input| input.into_notification().map_err(Refusal::BadPayload))
        {
            Ok(notification) => notification,
            Err(refusal) => return Handled::Done(Err(refusal)),
        };
        let notifications = self.front.notifications.clone();
        Handled::Later(Box::pin(async move {
            match notifications.submit(notification).await {
                Ok(_) => Ok(()),
                Err(RouteError::UnknownKind(..)) => {
                    Err(Refusal::BadPayload("unknown notification kind".into()))
                }
                Err(RouteError::Store(e)) => Err(e.into()),
            }
        }))
    }

    /// Sets the user's quiet hours from this device; done once stored.
    fn set_quiet_hours(&self, hours: QuietHours) -> Handled {
        let Identity::Device { user, .. } = self.identity() else {
            return Handled::Done(Err(Refusal::Forbidden));
        };
        if let Err(refusal) = self.within_rate(DeviceAction::QuietHours) {
            return Handled::Done(Err(refusal));
        }
        if let Err(e) = quiet_hours::validate(&hours) {
            return Handled::Done(Err(Refusal::BadPayload(e.to_string())));
        }
        let (ledger, user) = (self.front.notifications.ledger.clone(), user.clone());
        Handled::Later(Box::pin(async move {
            ledger.set_quiet_hours(&user, &hours).await?;
            Ok(())
        }))
    }

    /// Moves this device's cursor to `seq`, after the device's earlier cursor requests.
    pub fn ack(&self, seq: u64) -> Handled {
        let Identity::Device { user, device, .. } = self.identity() else {
            return Handled::Done(Err(Refusal::Forbidden));
        };
        if let Err(refusal) = self.within_rate(DeviceAction::Ack) {
            return Handled::Done(Err(refusal));
        }
        let (store, user, device) = (self.front.store.clone(), user.clone(), device.clone());
        let turn = self.cursor_requests.take_turn();
        Handled::Later(Box::pin(async move {
            let _done = turn.wait().await;
            store.ack(&user, &device, seq).await?;
            Ok(())
        }))
    }

    /// Starts catching this device up, after the device's earlier cursor requests; the pages
    /// arrive on its reply topic, and a failure is reported there too. A device has one sync
    /// answered at a time: a second one meanwhile would read the same pages again.
    pub fn sync(&self, request: SyncRequest) -> Result<(), Refusal> {
        let Identity::Device { user, device, .. } = self.identity() else {
            return Err(Refusal::Forbidden);
        };
        let in_flight = match &self.rate {
            Some(buckets) => Some(buckets.start_sync().ok_or_else(|| {
                self.front.metrics.rate_limit(RateLimited::sync_in_flight);
                Refusal::SyncInFlight
            })?),
            None => None,
        };
        self.within_rate(DeviceAction::Sync)?;
        let (front, link) = (self.front.clone(), self.link.clone());
        let (user, device) = (user.clone(), device.clone());
        let turn = self.cursor_requests.take_turn();
        self.front.shutdown.spawn(async move {
            let _in_flight = in_flight;
            let (store, roaming) = (&front.store, &front.roaming);
            let done = turn.wait().await;
            let reply_topic = topics::reply(&user, &device);
            let deliver = |page: Bytes| {
                let message = Arc::new(Published::new(reply_topic.clone(), page));
                let delivery = Delivery::of(message, Qos::AtLeastOnce);
                let link = link.clone();
                async move { link.deliver_waiting(delivery).await }
            };
            let synced = match sync::begin(store, roaming, &user, &device, &request).await {
                Ok(catchup) => {
                    drop(done);
                    let pages = &front.metrics.sync_pages;
                    catchup.send(store, roaming, &user, pages, deliver).await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = synced {
                tracing::warn!(%user, %device, "sync failed: {e}");
                let reply = Reply::Error {
                    action: DeviceAction::Sync.as_str().to_string(),
                    code: ErrorCode::Unavailable,
                    message: format!("{e}; retry the sync"),
                    retry_after_ms: None,
                };
                front.registry.reply(&user, &device, &reply);
            }
        });
        Ok(())
    }

    /// Takes a token for `action` from this device's bucket (`[rate_limits]`).
    fn within_rate(&self, action: DeviceAction) -> Result<(), Refusal> {
        let Some(buckets) = &self.rate else {
            return Ok(());
        };
        buckets.take(action).map_err(|retry_after| {
            if let Some(kind) = RateLimited::of(action) {
                self.front.metrics.rate_limit(kind);
            }
            Refusal::RateLimited {
                action: action.as_str(),
                retry_after,
            }
        })
    }

    /// Runs work whose answer nobody waits for (a QoS 0 publish's, a will's) to its end, also
    /// when the gateway shuts down meanwhile.
    pub fn finish_later<F>(&self, work: F)
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.front.shutdown.spawn(work);
    }

    /// Publishes the client's will `delay` after its connection ended (MQTT 5 Will Delay
    /// Interval), or when the gateway shuts down first, unless `still_away` then says its session
    /// was taken up again. A will on a device's own request topic is handled at once, as the
    /// device's last request.
    pub fn publish_will(
        &self,
        will: Publication,
        delay: Duration,
        still_away: impl FnOnce() -> bool + Send + 'static,
    ) {
        let id = self.link.id;
        let route = self.identity().may_publish(&will.topic);
        let delayed = matches!(route, Ok(PublishRoute::Broker | PublishRoute::Service));
        if delay.is_zero() || !delayed {
            let handled = self.publish(will);
            self.finish_later(async move {
                if let Err(refusal) = handled.finish().await {
                    tracing::debug!(link = id, "will refused: {refusal}");
                }
            });
            return;
        }
        let front = self.front.clone();
        let will = match route {
            Ok(PublishRoute::Service) => self.stamped(will),
            _ => will,
        };
        self.front.shutdown.spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = front.shutdown.cancelled() => {}
            }
            if still_away() {
                if let Err(refusal) = broadcast(&front, id, will).finish().await {
                    tracing::debug!(link = id, "will refused: {refusal}");
                }
            }
        });
    }

    /// Tells the device on its reply topic why a request on a device topic failed. Refusals of
    /// the topic itself (forbidden, malformed) get no reply: that topic is not the device's.
    pub fn reply_refusal(&self, topic: &str, refusal: &Refusal) {
        let (Identity::Device { user, device, .. }, Some(request)) =
            (self.identity(), topics::DeviceTopic::parse(topic))
        else {
            return;
        };
        if matches!(refusal, Refusal::Forbidden | Refusal::InvalidTopic) {
            return;
        }
        let reply = Reply::Error {
            action: request.action.as_str().to_string(),
            code: refusal.error_code(),
            message: refusal.to_string(),
            retry_after_ms: refusal.retry_after_ms(),
        };
        self.front.registry.reply(user, device, &reply);
    }
}

/// The user property naming the user whose device sent a message to the services.
pub const SENDER_USER: &str = "gw-user";
/// The user property naming the device that sent a message to the services.
pub const SENDER_DEVICE: &str = "gw-device";

/// When a message published with the Message Expiry Interval `expiry` (seconds) expires. An
/// interval of 0 is read as none: delivery starts at once either way. `pub(crate)` for
/// [`crate::fuzzing`].
pub(crate) fn expires_at(expiry: Option<u32>) -> Option<Instant> {
    expiry
        .filter(|&secs| secs > 0)
        .map(|secs| Instant::now() + Duration::from_secs(u64::from(secs)))
}

/// Publishes to every matching subscription on this node, as a plain broker does (dev mode, and
/// devices' messages to the services), retaining it when asked. Done once handed to the hub,
/// or, for a retained message, once the store keeps it: a message that cannot be retained (the
/// store is away, or `limits.max_retained` is reached) is still delivered, and the client told.
fn broadcast(front: &Front, origin: LinkId, publication: Publication) -> Handled {
    let Publication {
        topic,
        payload,
        qos,
        retain,
        properties,
        expiry,
    } = publication;
    let message = Arc::new(Published {
        topic,
        payload,
        properties: properties.boxed(),
        expires_at: expires_at(expiry),
        retain,
        origin: Some(origin),
        seq: None,
        durable_at: None,
    });
    front.hub.publish(message.clone(), qos, None);
    if !retain {
        return Handled::Done(Ok(()));
    }
    let retained = front.retained.clone();
    Handled::Later(Box::pin(async move {
        retained.set(&message, qos).await.map_err(Refusal::from)
    }))
}

/// Checks the `to` of a send or signal request.
fn recipient(to: &str) -> Result<(), Refusal> {
    if is_valid_id(to) {
        Ok(())
    } else {
        Err(Refusal::BadPayload("`to` is not a valid user id".into()))
    }
}

fn parse<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(payload).map_err(|e| Refusal::BadPayload(e.to_string()))
}

impl Drop for Client {
    fn drop(&mut self) {
        for kept in &self.subscriptions {
            (self.front.hub).unsubscribe(self.link.id, &kept.filter, kept.share.as_deref());
        }
        self.front.registry.unregister(&self.link, self.end);
        let metrics = &self.front.metrics;
        metrics
            .connections
            .get_or_create(&TransportLabel::from(self.transport))
            .dec();
        metrics
            .disconnects
            .get_or_create(&DisconnectLabel::from(self.end))
            .inc();
        tracing::debug!(link = self.link.id, who = %self.link.identity.describe(), reason = self.end.as_str(), "client disconnected");
    }
}
