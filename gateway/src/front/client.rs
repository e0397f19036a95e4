//! One client's session, whatever its transport: authorization of every subscribe and publish,
//! its subscriptions in the hub, and handling of the device → server topics.
//!
//! The MQTT connection and the JSON WebSocket both drive a [`ClientSession`]; they differ only
//! in how packets and frames are read and written.

use crate::acl::{Identity, PublishRoute, Refusal};
use crate::gateway::Gateway;
use crate::messages::Sender;
use crate::metrics::{DenialKind, DisconnectLabel, DisconnectReason, TransportLabel};
use crate::notify::model::QuietHours;
use crate::notify::quiet_hours;
use crate::notify::router::RouteError;
use crate::notify::NotificationInput;
use crate::recorder::SessionRecording;
use crate::roam::sync;
use crate::session_handle::{Delivery, Qos, SessionHandle};
use crate::sessions::Admission;
use bytes::Bytes;
use protocol::envelope::{
    AckRequest, ApprovalDecision, Reply, SendRequest, SignalMessage, SyncRequest, Transport,
};
use protocol::topics::{self, is_valid_id, DeviceAction};
use protocol::ErrorCode;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

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

/// Requests that must take effect one after another, while the connection goes on reading:
/// each waits for the one before it to say it is done (or to be dropped).
#[derive(Default)]
struct InOrder {
    last: std::sync::Mutex<Option<oneshot::Receiver<()>>>,
}

/// A request's place in an [`InOrder`] line.
struct Turn {
    previous: Option<oneshot::Receiver<()>>,
    done: oneshot::Sender<()>,
}

impl InOrder {
    fn take_turn(&self) -> Turn {
        let (done, next) = oneshot::channel();
        let previous = self.last.lock().expect("in-order lock").replace(next);
        Turn { previous, done }
    }
}

impl Turn {
    /// Waits for the previous request; the returned sender lets the next one go when dropped.
    async fn wait(self) -> oneshot::Sender<()> {
        if let Some(previous) = self.previous {
            let _ = previous.await;
        }
        self.done
    }
}

pub struct ClientSession {
    gw: Arc<Gateway>,
    pub handle: Arc<SessionHandle>,
    transport: Transport,
    subscriptions: HashMap<String, Qos>,
    end: DisconnectReason,
    /// Acks and syncs take effect in the order the device sent them: a sync right after an ack
    /// starts from the acknowledged place.
    cursor_requests: InOrder,
    /// This transport's `messages_in` counter, looked up once rather than on every publish.
    messages_in: prometheus_client::metrics::counter::Counter,
    /// What the session does that the traffic recording keeps, when recording is on; dropped
    /// with the session, which records its disconnect.
    recording: Option<SessionRecording>,
}

impl ClientSession {
    /// Registers a new session (taking over an older one of the same device, applying the
    /// device policy) and returns it with the receiving end of its outbox.
    pub fn open(
        gw: &Arc<Gateway>,
        identity: Identity,
        transport: Transport,
    ) -> (Self, mpsc::Receiver<Delivery>) {
        let admission = match &identity {
            Identity::Device { user, device, .. } => gw.sessions.admission(user, device),
            Identity::Anonymous { .. } | Identity::Backend { .. } => Admission::Approved,
        };
        let approved = admission == Admission::Approved;
        let (handle, outbox) = SessionHandle::new(
            gw.next_session_id(),
            identity,
            gw.config.limits.outbox_capacity,
            approved,
        );
        gw.sessions.register(&handle, transport);
        if !approved {
            let gw = gw.clone();
            let pending = Arc::downgrade(&handle);
            tokio::spawn(async move {
                tokio::time::sleep(gw.config.sessions.approval_timeout).await;
                if let Some(handle) = pending.upgrade() {
                    gw.sessions.expire_pending(&handle);
                }
            });
        }
        gw.metrics
            .connections
            .get_or_create(&TransportLabel::from(transport))
            .inc();
        tracing::debug!(session = handle.id, who = %handle.identity.describe(), transport = transport.as_str(), "session opened");
        let recording = gw
            .recorder
            .as_ref()
            .and_then(|recorder| recorder.session(handle.id, &handle.identity, transport));
        let session = Self {
            gw: gw.clone(),
            handle,
            transport,
            subscriptions: HashMap::new(),
            end: DisconnectReason::socket_closed,
            cursor_requests: InOrder::default(),
            messages_in: gw
                .metrics
                .messages_in
                .get_or_create(&TransportLabel::from(transport))
                .clone(),
            recording,
        };
        (session, outbox)
    }

    pub fn identity(&self) -> &Identity {
        &self.handle.identity
    }

    /// Records why the session ends, for presence and metrics when it is dropped.
    pub fn set_end_reason(&mut self, reason: DisconnectReason) {
        self.end = reason;
    }

    pub fn subscribe(&mut self, filter: &str, qos: Qos) -> Result<Qos, Refusal> {
        if let Err(refusal) = self.identity().may_subscribe(filter) {
            self.gw.metrics.deny(DenialKind::subscribe);
            return Err(refusal);
        }
        if !self.subscriptions.contains_key(filter)
            && self.subscriptions.len() >= self.gw.config.limits.max_subscriptions
        {
            return Err(Refusal::TooManySubscriptions);
        }
        self.gw.hub.subscribe(&self.handle, filter, qos);
        self.subscriptions.insert(filter.to_string(), qos);
        if let Some(recording) = &self.recording {
            recording.subscribed(filter, qos);
        }
        if let Identity::Device { user, device, .. } = self.identity() {
            if !self.handle.is_approved() && filter == topics::reply(user, device) {
                self.gw
                    .sessions
                    .reply(user, device, &Reply::ApprovalPending);
            }
        }
        Ok(qos)
    }

    /// Returns whether the subscription existed.
    pub fn unsubscribe(&mut self, filter: &str) -> bool {
        let existed = self.subscriptions.remove(filter).is_some();
        if existed {
            self.gw.hub.unsubscribe(self.handle.id, filter);
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
            Err(refusal) => {
                self.gw.metrics.deny(DenialKind::publish);
                return Handled::Done(Err(refusal));
            }
        };
        let recorded = (self.recording.as_ref()).map(|r| r.publish(topic, payload.clone(), qos));
        let handled = match route {
            PublishRoute::Broker => {
                self.gw.hub.publish(topic, payload, qos, None);
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
        if !self.handle.is_approved() {
            return Handled::Done(Err(Refusal::ApprovalPending));
        }
        match action {
            DeviceAction::Send => match parse::<SendRequest>(payload) {
                Ok(request) => self.send(&request.to, &request.body),
                Err(refusal) => Handled::Done(Err(refusal)),
            },
            DeviceAction::Signal => Handled::Done(self.signal(payload)),
            DeviceAction::Approve => {
                Handled::Done(parse::<ApprovalDecision>(payload).and_then(|decision| {
                    self.gw
                        .sessions
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

    /// Sends a message from this device to user `to`; done once it is durable in the logs.
    pub fn send(&self, to: &str, body: &serde_json::Value) -> Handled {
        let Identity::Device { user, device, .. } = self.identity() else {
            return Handled::Done(Err(Refusal::Forbidden));
        };
        if let Err(refusal) = recipient(to) {
            return Handled::Done(Err(refusal));
        }
        let sender = Sender::Device {
            user,
            device,
            session: self.handle.id,
        };
        let (_, ticket) = self.gw.messages.accept(sender, to, body);
        Handled::Later(Box::pin(async move {
            ticket.wait().await?;
            Ok(())
        }))
    }

    /// Relays a live signal from this device (see [`crate::signals`]). Nothing is stored, so it
    /// is done once handed on: a device that is offline never sees it.
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
        crate::signals::relay(&self.gw, &request.to, &signal, Some(self.handle.id));
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
        let gw = self.gw.clone();
        Handled::Later(Box::pin(async move {
            match gw.notifications.submit(&gw, notification).await {
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
        let (ledger, user) = (self.gw.notifications.ledger.clone(), user.clone());
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
        let (store, user, device) = (self.gw.store.clone(), user.clone(), device.clone());
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
        let (gw, handle) = (self.gw.clone(), self.handle.clone());
        let (user, device) = (user.clone(), device.clone());
        let turn = self.cursor_requests.take_turn();
        tokio::spawn(async move {
            let (store, roaming) = (&gw.store, &gw.config.roaming);
            let done = turn.wait().await;
            let synced = match sync::begin(store, roaming, &user, &device, &request).await {
                Ok(catchup) => {
                    drop(done);
                    catchup
                        .send(
                            store,
                            roaming,
                            &handle,
                            &user,
                            &device,
                            &gw.metrics.sync_pages,
                        )
                        .await
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
                gw.sessions.reply(&user, &device, &reply);
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
        };
        self.gw.sessions.reply(user, device, &reply);
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

impl Drop for ClientSession {
    fn drop(&mut self) {
        for filter in self.subscriptions.keys() {
            self.gw.hub.unsubscribe(self.handle.id, filter);
        }
        let reason = format!("{:?}", self.end);
        self.gw.sessions.unregister(&self.handle, &reason);
        self.gw
            .metrics
            .connections
            .get_or_create(&TransportLabel::from(self.transport))
            .dec();
        self.gw
            .metrics
            .disconnects
            .get_or_create(&DisconnectLabel { reason: self.end })
            .inc();
        tracing::debug!(session = self.handle.id, who = %self.handle.identity.describe(), reason, "session closed");
    }
}
