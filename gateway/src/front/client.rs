//! One client's session, whatever its transport: authorization of every subscribe and publish,
//! its subscriptions in the hub, and handling of the device → server topics.
//!
//! The MQTT connection and the JSON WebSocket both drive a [`ClientSession`]; they differ only
//! in how packets and frames are read and written.

use crate::acl::{Identity, PublishRoute, Refusal};
use crate::gateway::Gateway;
use crate::messages::Sender;
use crate::metrics::{DenialKind, DisconnectLabel, DisconnectReason, TransportLabel};
use crate::session_handle::{Delivery, Qos, SessionHandle};
use crate::sessions::Admission;
use bytes::Bytes;
use protocol::envelope::{ApprovalDecision, Reply, SendRequest, Transport};
use protocol::topics::{self, is_valid_id, DeviceAction};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;

pub struct ClientSession {
    gw: Arc<Gateway>,
    pub handle: Arc<SessionHandle>,
    transport: Transport,
    subscriptions: HashMap<String, Qos>,
    end: DisconnectReason,
    /// This transport's `messages_in` counter, looked up once rather than on every publish.
    messages_in: prometheus_client::metrics::counter::Counter,
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
            Identity::Anonymous { .. } => Admission::Approved,
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
        let session = Self {
            gw: gw.clone(),
            handle,
            transport,
            subscriptions: HashMap::new(),
            end: DisconnectReason::socket_closed,
            messages_in: gw
                .metrics
                .messages_in
                .get_or_create(&TransportLabel::from(transport))
                .clone(),
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
        }
        existed
    }

    /// Handles a publish from this client: a device request on its own device topic, or (dev
    /// mode) a plain broker publish.
    pub fn publish(&self, topic: &str, payload: Bytes, qos: Qos) -> Result<(), Refusal> {
        self.messages_in.inc();
        let route = match self.identity().may_publish(topic) {
            Ok(route) => route,
            Err(refusal) => {
                self.gw.metrics.deny(DenialKind::publish);
                return Err(refusal);
            }
        };
        match route {
            PublishRoute::Broker => {
                self.gw.hub.publish(topic, payload, qos, None);
                Ok(())
            }
            PublishRoute::DeviceRequest(action) => self.device_request(action, &payload),
        }
    }

    fn device_request(&self, action: DeviceAction, payload: &[u8]) -> Result<(), Refusal> {
        let Identity::Device { user, device, .. } = self.identity() else {
            return Err(Refusal::Forbidden);
        };
        if !self.handle.is_approved() {
            return Err(Refusal::ApprovalPending);
        }
        match action {
            DeviceAction::Send => {
                let request: SendRequest = parse(payload)?;
                if !is_valid_id(&request.to) {
                    return Err(Refusal::BadPayload("`to` is not a valid user id".into()));
                }
                let sender = Sender::Device {
                    user,
                    device,
                    session: self.handle.id,
                };
                self.gw.messages.accept(sender, &request.to, request.body);
                Ok(())
            }
            DeviceAction::Approve => {
                let decision: ApprovalDecision = parse(payload)?;
                self.gw
                    .sessions
                    .decide(user, &decision.device, decision.approve, Some(device))
                    .map_err(|e| Refusal::BadPayload(e.to_string()))
            }
            DeviceAction::Ack | DeviceAction::Sync => Err(Refusal::Unsupported(
                "cursor ack and sync arrive with message roaming; this gateway delivers live only",
            )),
        }
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
