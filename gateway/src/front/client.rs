//! One connected client, whatever its transport: authorization of every subscribe and publish,
//! its subscriptions in the hub, and handling of the device → server topics.
//!
//! The MQTT connection and the JSON WebSocket both drive a [`Client`]; they differ only in how
//! packets and frames are read and written.

use super::in_order::InOrder;
use super::refusal::Refusal;
use super::Front;
use crate::auth::acl::PublishRoute;
use crate::auth::identity::Identity;
use crate::live::link::{Delivery, Link, Published, Qos};
use crate::live::registry::Admission;
use crate::log::accept::Sender;
use crate::log::sync;
use crate::notify::input::NotificationInput;
use crate::notify::quiet_hours;
use crate::notify::router::RouteError;
use crate::observe::metrics::{DenialKind, DisconnectLabel, TransportLabel};
use crate::observe::recorder::SessionRecording;
use crate::store::Origin;
use bytes::Bytes;
use protocol::envelope::{
    AckRequest, ApprovalDecision, ClientMsgId, DisconnectReason, Reply, SendRequest, SignalMessage,
    SyncRequest, Transport,
};
use protocol::notification::QuietHours;
use protocol::topics::{self, is_valid_id, DeviceAction};
use protocol::ErrorCode;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;

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
    subscriptions: HashMap<String, Qos>,
    end: DisconnectReason,
    /// Acks and syncs take effect in the order the device sent them: a sync right after an ack
    /// starts from the acknowledged place.
    cursor_requests: InOrder,
    /// This transport's `messages_in` counter, looked up once rather than on every publish.
    messages_in: prometheus_client::metrics::counter::Counter,
    /// What the client does that the traffic recording keeps, when recording is on; dropped
    /// with the client, which records its disconnect.
    recording: Option<SessionRecording>,
}

impl Client {
    /// Registers a new client (taking over an older connection of the same device, applying
    /// the device policy) and returns it with the receiving end of its outbox.
    pub fn open(
        front: &Arc<Front>,
        identity: Identity,
        transport: Transport,
    ) -> (Self, mpsc::Receiver<Delivery>) {
        let approved = front.registry.admission(&identity) == Admission::Approved;
        let (link, outbox) = Link::new(
            front.link_ids.next(),
            identity,
            front.limits.outbox_capacity,
            approved,
        );
        front.registry.register(&link, transport);
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
        let client = Self {
            front: front.clone(),
            link,
            transport,
            subscriptions: HashMap::new(),
            end: DisconnectReason::SocketClosed,
            cursor_requests: InOrder::default(),
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

    /// Records why the connection ends, for presence and metrics when it is dropped.
    pub fn set_end_reason(&mut self, reason: DisconnectReason) {
        self.end = reason;
    }

    pub fn subscribe(&mut self, filter: &str, qos: Qos) -> Result<Qos, Refusal> {
        if let Err(denied) = self.identity().may_subscribe(filter) {
            self.front.metrics.deny(DenialKind::subscribe);
            return Err(denied.into());
        }
        if !self.subscriptions.contains_key(filter)
            && self.subscriptions.len() >= self.front.limits.max_subscriptions
        {
            return Err(Refusal::TooManySubscriptions);
        }
        self.front.hub.subscribe(&self.link, filter, qos);
        self.subscriptions.insert(filter.to_string(), qos);
        if let Some(recording) = &self.recording {
            recording.subscribed(filter, qos);
        }
        if let Identity::Device { user, device, .. } = self.identity() {
            if !self.link.is_approved() && filter == topics::reply(user, device) {
                self.front
                    .registry
                    .reply(user, device, &Reply::ApprovalPending);
            }
        }
        Ok(qos)
    }

    /// Returns whether the subscription existed.
    pub fn unsubscribe(&mut self, filter: &str) -> bool {
        let existed = self.subscriptions.remove(filter).is_some();
        if existed {
            self.front.hub.unsubscribe(self.link.id, filter);
            if let Some(recording) = &self.recording {
                recording.unsubscribed(filter);
            }
        }
        existed
    }

    /// Handles a publish from this client: a device request on its own device topic, or (dev
    /// mode) a plain broker publish.
    pub fn publish(&self, topic: &str, payload: Bytes, qos: Qos) -> Handled {
        self.messages_in.inc();
        let route = match self.identity().may_publish(topic) {
            Ok(route) => route,
            Err(denied) => {
                self.front.metrics.deny(DenialKind::publish);
                return Handled::Done(Err(denied.into()));
            }
        };
        let recorded = (self.recording.as_ref()).map(|r| r.publish(topic, payload.clone(), qos));
        let handled = match route {
            PublishRoute::Broker => {
                self.front.hub.publish(topic, payload, qos, None);
                Handled::Done(Ok(()))
            }
            PublishRoute::DeviceRequest(action) => self.device_request(action, &payload),
            PublishRoute::Notification => self.notification(&payload),
        };
        match recorded {
            Some(publish) => handled.on_success(|| publish.accepted()),
            None => handled,
        }
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
            DeviceAction::Approve => {
                Handled::Done(parse::<ApprovalDecision>(payload).and_then(|decision| {
                    self.front
                        .registry
                        .decide(user, &decision.device, decision.approve, Some(device))
                        .map_err(|e| Refusal::BadPayload(e.to_string()))
                }))
            }
            DeviceAction::Ack => match parse::<AckRequest>(payload) {
                Ok(request) => self.ack(request.seq),
                Err(refusal) => Handled::Done(Err(refusal)),
            },
            DeviceAction::QuietHours => match parse::<QuietHours>(payload) {
                Ok(hours) => self.set_quiet_hours(hours),
                Err(refusal) => Handled::Done(Err(refusal)),
            },
            DeviceAction::Sync => Handled::Done(parse::<SyncRequest>(payload).map(|request| {
                self.sync(request);
            })),
        }
    }

    /// Sends a message from this device to user `to`; done once it is durable in the logs (or
    /// found there: a `client_msg_id` sent before within the window is not stored again).
    pub fn send(&self, to: &str, body: &serde_json::Value, id: Option<ClientMsgId>) -> Handled {
        let Identity::Device { user, device, .. } = self.identity() else {
            return Handled::Done(Err(Refusal::Forbidden));
        };
        if let Err(refusal) = recipient(to) {
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
        let (store, user, device) = (self.front.store.clone(), user.clone(), device.clone());
        let turn = self.cursor_requests.take_turn();
        Handled::Later(Box::pin(async move {
            let _done = turn.wait().await;
            store.ack(&user, &device, seq).await?;
            Ok(())
        }))
    }

    /// Starts catching this device up, after the device's earlier cursor requests; the pages
    /// arrive on its reply topic, and a failure is reported there too.
    pub fn sync(&self, request: SyncRequest) {
        let Identity::Device { user, device, .. } = self.identity() else {
            return;
        };
        let (front, link) = (self.front.clone(), self.link.clone());
        let (user, device) = (user.clone(), device.clone());
        let turn = self.cursor_requests.take_turn();
        self.front.shutdown.spawn(async move {
            let (store, roaming) = (&front.store, &front.roaming);
            let done = turn.wait().await;
            let reply_topic = topics::reply(&user, &device);
            let deliver = |page: Bytes| {
                let delivery = Delivery {
                    message: Arc::new(Published {
                        topic: reply_topic.clone(),
                        payload: page,
                    }),
                    qos: Qos::AtLeastOnce,
                };
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
                };
                front.registry.reply(&user, &device, &reply);
            }
        });
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
        };
        self.front.registry.reply(user, device, &reply);
    }
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
        for filter in self.subscriptions.keys() {
            self.front.hub.unsubscribe(self.link.id, filter);
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
