//! Who is online on which device: the registry of links per user, the device policy, takeover
//! of a device's older connection, presence events, and approval of logins from new devices.

use super::link::{CloseReason, Link};
use super::sessions::session_key;
use super::user_topics::UserTopics;
use crate::auth::identity::Identity;
use crate::infra::time::unix_millis;
use crate::shutdown::Shutdown;
use crate::store::known_devices::Standing;
use crate::store::sessions::SessionKey;
use crate::store::{SharedStore, StoreError};
use anyhow::Result;
use broker_config::{DevicePolicy, Sessions as SessionsConfig};
use dashmap::DashMap;
use protocol::envelope::{DeviceInfo, DisconnectReason, Platform, PresenceEvent, Reply, Transport};
use protocol::topics;
use std::sync::Arc;

struct DeviceEntry {
    device: String,
    platform: Platform,
    transport: Transport,
    connected_at: u64,
    link: Arc<Link>,
}

impl DeviceEntry {
    fn info(&self) -> DeviceInfo {
        DeviceInfo {
            device: self.device.clone(),
            platform: self.platform,
            transport: self.transport,
            connected_at: self.connected_at,
            last_seen: self.link.last_seen_ms(),
            approved: self.link.is_approved(),
        }
    }
}

/// The classes the one-per-class policy counts: a phone, a desktop, a browser.
fn platform_class(platform: Platform) -> &'static str {
    match platform {
        Platform::Ios | Platform::Android => "phone",
        Platform::Desktop => "desktop",
        Platform::Web => "web",
    }
}

/// Whether a new link may use the user's traffic at once or waits for approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Approved,
    PendingApproval,
}

/// How long a deletion waits for the user's connections to end.
pub const CONNECTIONS_END: std::time::Duration = std::time::Duration::from_secs(5);

pub struct Registry {
    config: SessionsConfig,
    topics: Arc<UserTopics>,
    /// Where each user's known devices are kept (see [`crate::store::known_devices`]).
    store: SharedStore,
    devices: DashMap<String, Vec<DeviceEntry>>,
    /// Links of clients known by their client id (dev mode, backends), by their session's key:
    /// an anonymous client and a backend with the same client id are two clients, and neither
    /// takes over the other.
    clients: DashMap<SessionKey, Arc<Link>>,
    /// Watched by the approval timers, which end early when the gateway shuts down.
    shutdown: Shutdown,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecisionError {
    #[error("no device of this user is waiting for approval under that id")]
    NotPending,
    /// The other nodes, where the device may wait, cannot be reached now.
    #[error("{0}")]
    Unavailable(String),
}

impl Registry {
    pub fn new(
        config: SessionsConfig,
        topics: Arc<UserTopics>,
        store: SharedStore,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            config,
            topics,
            store,
            devices: DashMap::new(),
            clients: DashMap::new(),
            shutdown,
        }
    }

    /// Whether a device of `user` starts approved: always, unless approval of new devices is on,
    /// the user has devices already, and this one is not among them. With approval off a new
    /// device is remembered at once, so that turning approval on later knows it.
    pub async fn admission(&self, identity: &Identity) -> Result<Admission, StoreError> {
        let Identity::Device { user, device, .. } = identity else {
            return Ok(Admission::Approved);
        };
        match self.store.standing(user, device).await? {
            Standing::First | Standing::Known => Ok(Admission::Approved),
            Standing::New if self.config.new_device_approval => Ok(Admission::PendingApproval),
            Standing::New => {
                self.store.remember_device(user, device).await?;
                Ok(Admission::Approved)
            }
        }
    }

    /// Registers a new link. An older link of the same user and device (or anonymous client id)
    /// is taken over; under the one-per-class policy the user's other device of the same class
    /// is kicked with a reason it can show. A link waiting for approval is closed when
    /// `sessions.approval_timeout` passes without a decision.
    pub fn register(&self, link: &Arc<Link>, transport: Transport) {
        let (user, device, platform) = match &link.identity {
            Identity::Anonymous { .. } | Identity::Backend { .. } => {
                let key = session_key(&link.identity);
                if let Some(old) = self.clients.insert(key, link.clone()) {
                    old.close(taken_over());
                }
                return;
            }
            Identity::Device {
                user,
                device,
                platform,
            } => (user, device, *platform),
        };
        let mut replaced = Vec::new();
        {
            let mut entries = self.devices.entry(user.clone()).or_default();
            entries.retain(|e| {
                let same_device = e.device == *device;
                if same_device {
                    replaced.push(e.link.clone());
                }
                !same_device
            });
            entries.push(DeviceEntry {
                device: device.clone(),
                platform,
                transport,
                connected_at: unix_millis(),
                link: link.clone(),
            });
        }
        for old in replaced {
            old.close(taken_over());
        }
        if link.is_approved() {
            self.admit(user, device, platform, link);
        } else {
            if let Some(info) = self.info(user, device) {
                self.topics.nodes().device_online(user, info);
            }
            self.publish_presence(
                user,
                &PresenceEvent::ApprovalRequest {
                    device: device.clone(),
                    platform,
                },
                Some(link.id),
            );
            self.expire_pending_later(link);
        }
    }

    /// Closes `link` if it still waits for approval when `sessions.approval_timeout` has passed.
    fn expire_pending_later(&self, link: &Arc<Link>) {
        let pending = Arc::downgrade(link);
        let (timeout, shutdown) = (self.config.approval_timeout, self.shutdown.clone());
        self.shutdown.spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(timeout) => {}
                () = shutdown.cancelled() => return,
            }
            if let Some(link) = pending.upgrade() {
                if !link.is_approved() {
                    link.close(CloseReason::new(
                        DisconnectReason::ApprovalTimeout,
                        "no device approved this login in time",
                    ));
                }
            }
        });
    }

    /// Removes a link that ended. Only the link that is still registered is removed, so a link
    /// that was taken over does not remove its successor. Announces the device offline.
    pub fn unregister(&self, link: &Link, reason: DisconnectReason) {
        match &link.identity {
            Identity::Anonymous { .. } | Identity::Backend { .. } => {
                let key = session_key(&link.identity);
                self.clients.remove_if(&key, |_, l| l.id == link.id);
            }
            Identity::Device { user, device, .. } => {
                let mut removed = false;
                self.devices.remove_if_mut(user, |_, entries| {
                    let before = entries.len();
                    entries.retain(|e| e.link.id != link.id);
                    removed = entries.len() != before;
                    entries.is_empty()
                });
                if removed {
                    // Other nodes know a device waiting for approval too, so that a decision
                    // made there reaches it.
                    self.topics.nodes().device_offline(user, device);
                }
                if removed && link.is_approved() {
                    self.publish_presence(
                        user,
                        &PresenceEvent::Offline {
                            device: device.clone(),
                            reason: reason.as_str().to_string(),
                        },
                        Some(link.id),
                    );
                }
            }
        }
    }

    /// The user's online devices on this node.
    pub fn devices(&self, user: &str) -> Vec<DeviceInfo> {
        self.devices
            .get(user)
            .map(|entries| entries.iter().map(DeviceEntry::info).collect())
            .unwrap_or_default()
    }

    /// The user's online devices on every node.
    pub async fn devices_everywhere(&self, user: &str) -> Result<Vec<DeviceInfo>, StoreError> {
        let mut devices = self.devices(user);
        for elsewhere in self.topics.nodes().devices(user).await? {
            if !devices.iter().any(|here| here.device == elsewhere.device) {
                devices.push(elsewhere);
            }
        }
        Ok(devices)
    }

    /// Logs a device out on the backend's request, on whichever node holds it. Returns false
    /// when it is not online.
    pub async fn kick_anywhere(
        &self,
        user: &str,
        device: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        if self.kick(user, device, reason) {
            return Ok(true);
        }
        self.topics.nodes().kick(user, device, reason).await
    }

    /// Logs a device of this node out. Returns false when it is not online here.
    pub fn kick(&self, user: &str, device: &str, reason: &str) -> bool {
        let mut found = None;
        self.devices.remove_if_mut(user, |_, entries| {
            if let Some(pos) = entries.iter().position(|e| e.device == device) {
                found = Some(entries.remove(pos).link);
            }
            entries.is_empty()
        });
        match found {
            Some(link) => {
                self.kick_notice(user, device, &link, kicked_for(reason));
                true
            }
            None => false,
        }
    }

    /// Closes this node's link of a device that connected to another node: that node holds it
    /// now (and announced it), so this one leaves without an offline event.
    pub fn taken_over_elsewhere(&self, user: &str, device: &str) {
        let mut found = None;
        self.devices.remove_if_mut(user, |_, entries| {
            if let Some(pos) = entries.iter().position(|e| e.device == device) {
                found = Some(entries.remove(pos).link);
            }
            entries.is_empty()
        });
        if let Some(link) = found {
            link.close(CloseReason {
                moved_elsewhere: true,
                ..taken_over()
            });
        }
    }

    /// Tells the user's devices, on every node, of a presence change found elsewhere (a device
    /// of a dead node).
    pub fn announce_elsewhere(&self, user: &str, event: &PresenceEvent) {
        self.publish_presence(user, event, None);
    }

    /// Closes every connection of a deleted user, on the other nodes (told over the cluster)
    /// and here, and forgets the devices it used; returns once they ended (each node's waited
    /// for up to [`CONNECTIONS_END`]), their last writes (a cursor, a session) done, so a
    /// deletion that follows leaves nothing they would write back.
    pub async fn forget_user(&self, user: &str, reason: &str) -> Result<()> {
        self.topics.nodes().forget_user(user).await?;
        self.forget_user_and_wait(user, reason).await?;
        Ok(())
    }

    /// Closes this node's connections of the user as [`forget_user_here`](Self::forget_user_here)
    /// does and waits, up to [`CONNECTIONS_END`], for them to end; returns them.
    async fn forget_user_and_wait(&self, user: &str, reason: &str) -> Result<Vec<Arc<Link>>> {
        let closed = self.forget_user_here(user, reason)?;
        let ended = futures_util::future::join_all(closed.iter().map(|link| link.ended()));
        if tokio::time::timeout(CONNECTIONS_END, ended).await.is_err() {
            tracing::warn!(%user, "a connection of a deleted user did not end in time");
        }
        Ok(closed)
    }

    /// For another node deleting the user: closes this node's connections of the user, waits
    /// for them to end, then takes their devices out of the cluster's presence, which is what
    /// the deleting node waits for before it deletes.
    pub async fn forget_user_for_another_node(&self, user: &str, reason: &str) -> Result<()> {
        for link in &self.forget_user_and_wait(user, reason).await? {
            if let Identity::Device { device, .. } = &link.identity {
                self.topics.nodes().device_offline(user, device);
            }
        }
        Ok(())
    }

    /// Closes this node's connections of a deleted user as `account_deleted` (no will, no
    /// session kept) and forgets the devices it used here.
    pub fn forget_user_here(&self, user: &str, reason: &str) -> Result<Vec<Arc<Link>>> {
        let mut closed = Vec::new();
        if let Some((_, entries)) = self.devices.remove(user) {
            for entry in entries {
                let reason = CloseReason::new(DisconnectReason::AccountDeleted, reason);
                self.kick_notice(user, &entry.device, &entry.link, reason);
                closed.push(entry.link);
            }
        }
        Ok(closed)
    }

    /// Approves or denies a device waiting for approval. `by` is the deciding device, or `None`
    /// when the backend decided. An approved device is remembered as one of the user's before
    /// this returns.
    pub async fn decide(
        &self,
        user: &str,
        device: &str,
        approve: bool,
        by: Option<&str>,
    ) -> Result<(), DecisionError> {
        let pending = self.devices.get(user).and_then(|entries| {
            entries
                .iter()
                .find(|e| e.device == device && !e.link.is_approved())
                .map(|e| e.link.clone())
        });
        let Some(pending) = pending else {
            // It may wait on another node.
            let relayed = (self.topics.nodes().decide(user, device, approve, by).await)
                .map_err(|e| DecisionError::Unavailable(e.to_string()))?;
            return relayed.then_some(()).ok_or(DecisionError::NotPending);
        };
        self.publish_presence(
            user,
            &PresenceEvent::ApprovalResolved {
                device: device.to_string(),
                approved: approve,
                by: by.map(str::to_string),
            },
            Some(pending.id),
        );
        if approve {
            pending.approve();
            self.reply(user, device, &Reply::Approved);
            let Identity::Device { platform, .. } = pending.identity else {
                unreachable!("only devices wait for approval")
            };
            self.admit(user, device, platform, &pending);
            // The device is in now; should the store not take it, its next login asks for
            // approval again.
            if let Err(e) = self.store.remember_device(user, device).await {
                tracing::warn!(%user, %device, "cannot record an approved device: {e}");
            }
        } else {
            self.reply(user, device, &Reply::Denied);
            pending.close(CloseReason::new(
                DisconnectReason::ApprovalDenied,
                "login denied from another device",
            ));
        }
        Ok(())
    }

    /// Closes every link, telling each client the server is shutting down.
    pub fn close_all(&self) {
        for entries in self.devices.iter() {
            entries
                .iter()
                .for_each(|e| e.link.close(CloseReason::shutdown()));
        }
        self.clients
            .iter()
            .for_each(|l| l.close(CloseReason::shutdown()));
    }

    /// Sends `reply` to one device's reply topic, on whichever node it is.
    pub fn reply(&self, user: &str, device: &str, reply: &Reply) {
        let payload = serde_json::to_vec(reply).expect("replies serialize");
        self.topics
            .publish(user, &topics::reply(user, device), payload.into(), None);
    }

    /// Lets an approved device in: applies the device policy (kicking the user's older device of
    /// the same class under one-per-class), remembers the device, and announces it online.
    fn admit(&self, user: &str, device: &str, platform: Platform, link: &Arc<Link>) {
        let mut kicked = Vec::new();
        if self.config.device_policy == DevicePolicy::OnePerClass {
            if let Some(mut entries) = self.devices.get_mut(user) {
                entries.retain(|e| {
                    let same_class = e.link.id != link.id
                        && platform_class(e.platform) == platform_class(platform);
                    if same_class {
                        kicked.push((e.device.clone(), e.link.clone()));
                    }
                    !same_class
                });
            }
        }
        let class = platform_class(platform);
        for (old_device, old) in kicked {
            let reason = format!("logged in on another {class} ({device})");
            self.kick_notice(user, &old_device, &old, kicked_for(reason));
        }
        if self.config.device_policy == DevicePolicy::OnePerClass {
            self.kick_same_class_elsewhere(user, device, platform);
        }
        self.announce_online(user, device, link);
    }

    /// Under one-per-class, logs out the user's devices of `platform`'s class that other nodes
    /// hold and that came online before this one: in the background, as the device is in
    /// already. Of two phones logging in at once on two nodes, the later one stays.
    fn kick_same_class_elsewhere(&self, user: &str, device: &str, platform: Platform) {
        let nodes = self.topics.nodes().clone();
        let (user, device) = (user.to_string(), device.to_string());
        let (class, admitted_at) = (platform_class(platform), unix_millis());
        tokio::spawn(async move {
            let elsewhere = match nodes.devices(&user).await {
                Ok(devices) => devices,
                Err(e) => {
                    tracing::warn!(%user, %device, "cannot apply the device policy on other nodes: {e}");
                    return;
                }
            };
            let older = elsewhere.into_iter().filter(|other| {
                other.device != device
                    && platform_class(other.platform) == class
                    && other.connected_at <= admitted_at
            });
            for other in older {
                let reason = format!("logged in on another {class} ({device})");
                if let Err(e) = nodes.kick(&user, &other.device, &reason).await {
                    tracing::warn!(%user, device = %other.device, "cannot log out an older {class}: {e}");
                }
            }
        });
    }

    /// What this node says of `user`'s `device`, when it holds it.
    fn info(&self, user: &str, device: &str) -> Option<DeviceInfo> {
        self.devices.get(user).and_then(|entries| {
            entries
                .iter()
                .find(|e| e.device == device)
                .map(DeviceEntry::info)
        })
    }

    fn announce_online(&self, user: &str, device: &str, link: &Arc<Link>) {
        if let Some(info) = self.info(user, device) {
            self.topics.nodes().device_online(user, info.clone());
            self.publish_presence(user, &PresenceEvent::Online { device: info }, Some(link.id));
        }
    }

    /// Tells all of the user's devices (the kicked one included, so it can show why) and then
    /// closes the kicked link once that notice is written.
    fn kick_notice(&self, user: &str, device: &str, link: &Link, reason: CloseReason) {
        self.topics.nodes().device_offline(user, device);
        self.publish_presence(
            user,
            &PresenceEvent::Kicked {
                device: device.to_string(),
                reason: reason.message.clone(),
            },
            None,
        );
        link.close(reason);
    }

    fn publish_presence(&self, user: &str, event: &PresenceEvent, exclude: Option<u64>) {
        let payload = serde_json::to_vec(event).expect("presence events serialize");
        self.topics
            .publish(user, &topics::presence(user), payload.into(), exclude);
    }
}

fn kicked_for(reason: impl Into<String>) -> CloseReason {
    CloseReason::new(DisconnectReason::Kicked, reason)
}

fn taken_over() -> CloseReason {
    CloseReason::new(
        DisconnectReason::TakenOver,
        "a new connection of this device took over the session",
    )
}
