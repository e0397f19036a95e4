//! Who is online on which device: the registry of sessions per user, the device policy, session
//! takeover, presence events, and approval of logins from new devices.

use crate::acl::Identity;
use crate::cluster::Cluster;
use crate::known_devices::KnownDevices;
use crate::metrics::DisconnectReason;
use crate::session_handle::{unix_millis, CloseReason, SessionHandle};
use crate::user_topics::UserTopics;
use anyhow::Result;
use broker_config::{DevicePolicy, Sessions as SessionsConfig};
use dashmap::DashMap;
use protocol::envelope::{DeviceInfo, Platform, PresenceEvent, Reply, Transport};
use protocol::topics;
use std::sync::Arc;

struct DeviceEntry {
    device: String,
    platform: Platform,
    transport: Transport,
    connected_at: u64,
    handle: Arc<SessionHandle>,
}

impl DeviceEntry {
    fn info(&self) -> DeviceInfo {
        DeviceInfo {
            device: self.device.clone(),
            platform: self.platform,
            transport: self.transport,
            connected_at: self.connected_at,
            last_seen: self.handle.last_seen_ms(),
            approved: self.handle.is_approved(),
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

/// Whether a new session may use the user's traffic at once or waits for approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Approved,
    PendingApproval,
}

pub struct Sessions {
    config: SessionsConfig,
    topics: Arc<UserTopics>,
    known: KnownDevices,
    devices: DashMap<String, Vec<DeviceEntry>>,
    anonymous: DashMap<String, Arc<SessionHandle>>,
    /// The other nodes, when several share a Redis: presence is kept there.
    cluster: Option<Arc<Cluster>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecisionError {
    #[error("no device of this user is waiting for approval under that id")]
    NotPending,
}

impl Sessions {
    pub fn new(
        config: SessionsConfig,
        topics: Arc<UserTopics>,
        known: KnownDevices,
        cluster: Option<Arc<Cluster>>,
    ) -> Self {
        Self {
            config,
            topics,
            known,
            devices: DashMap::new(),
            anonymous: DashMap::new(),
            cluster,
        }
    }

    /// Whether a device of `user` starts approved: always, unless approval of new devices is on,
    /// the user has devices already, and this one is not among them.
    pub fn admission(&self, user: &str, device: &str) -> Admission {
        if self.config.new_device_approval
            && self.known.has_any(user)
            && !self.known.contains(user, device)
        {
            Admission::PendingApproval
        } else {
            Admission::Approved
        }
    }

    /// Registers a new session. An older session of the same user and device (or anonymous
    /// client id) is taken over; under the one-per-class policy the user's other device of the
    /// same class is kicked with a reason it can show.
    pub fn register(&self, handle: &Arc<SessionHandle>, transport: Transport) {
        let (user, device, platform) = match &handle.identity {
            Identity::Anonymous { client_id } | Identity::Backend { client_id, .. } => {
                if let Some(old) = self.anonymous.insert(client_id.clone(), handle.clone()) {
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
                    replaced.push(e.handle.clone());
                }
                !same_device
            });
            entries.push(DeviceEntry {
                device: device.clone(),
                platform,
                transport,
                connected_at: unix_millis(),
                handle: handle.clone(),
            });
        }
        for old in replaced {
            old.close(taken_over());
        }
        if handle.is_approved() {
            self.admit(user, device, platform, handle);
        } else {
            self.publish_presence(
                user,
                &PresenceEvent::ApprovalRequest {
                    device: device.clone(),
                    platform,
                },
                Some(handle.id),
            );
        }
    }

    /// Removes a session that ended. Only the session that is still registered is removed, so a
    /// session that was taken over does not remove its successor. Announces the device offline.
    pub fn unregister(&self, handle: &SessionHandle, reason: &str) {
        match &handle.identity {
            Identity::Anonymous { client_id } | Identity::Backend { client_id, .. } => {
                self.anonymous
                    .remove_if(client_id, |_, h| h.id == handle.id);
            }
            Identity::Device { user, device, .. } => {
                let mut removed = false;
                self.devices.remove_if_mut(user, |_, entries| {
                    let before = entries.len();
                    entries.retain(|e| e.handle.id != handle.id);
                    removed = entries.len() != before;
                    entries.is_empty()
                });
                if removed && handle.is_approved() {
                    if let Some(cluster) = &self.cluster {
                        cluster.device_offline(user, device);
                    }
                    self.publish_presence(
                        user,
                        &PresenceEvent::Offline {
                            device: device.clone(),
                            reason: reason.to_string(),
                        },
                        Some(handle.id),
                    );
                }
            }
        }
    }

    /// The user's online devices, on this node.
    pub fn devices(&self, user: &str) -> Vec<DeviceInfo> {
        self.devices
            .get(user)
            .map(|entries| entries.iter().map(DeviceEntry::info).collect())
            .unwrap_or_default()
    }

    /// Logs a device out on the backend's request. Returns false when it is not online.
    pub fn kick(&self, user: &str, device: &str, reason: &str) -> bool {
        let mut found = None;
        self.devices.remove_if_mut(user, |_, entries| {
            if let Some(pos) = entries.iter().position(|e| e.device == device) {
                found = Some(entries.remove(pos).handle);
            }
            entries.is_empty()
        });
        match found {
            Some(handle) => {
                self.kick_notice(user, device, &handle, reason.to_string());
                true
            }
            None => false,
        }
    }

    /// Closes the session of a device that connected to another node: the other node holds it
    /// now (and announced it), so this one leaves without an offline event.
    pub fn taken_over_elsewhere(&self, user: &str, device: &str) {
        let mut found = None;
        self.devices.remove_if_mut(user, |_, entries| {
            if let Some(pos) = entries.iter().position(|e| e.device == device) {
                found = Some(entries.remove(pos).handle);
            }
            entries.is_empty()
        });
        if let Some(handle) = found {
            handle.close(taken_over());
        }
    }

    /// Tells the user's devices, on every node, of a presence change found elsewhere (a device
    /// of a dead node).
    pub fn announce_elsewhere(&self, user: &str, event: &PresenceEvent) {
        self.publish_presence(user, event, None);
    }

    /// Logs out every device of a deleted user and forgets the devices it used.
    pub fn forget_user(&self, user: &str, reason: &str) -> Result<()> {
        if let Some((_, entries)) = self.devices.remove(user) {
            for entry in entries {
                self.kick_notice(user, &entry.device, &entry.handle, reason.to_string());
            }
        }
        self.known.forget_user(user)
    }

    /// Approves or denies a device waiting for approval. `by` is the deciding device, or `None`
    /// when the backend decided.
    pub fn decide(
        &self,
        user: &str,
        device: &str,
        approve: bool,
        by: Option<&str>,
    ) -> Result<(), DecisionError> {
        let pending = self
            .devices
            .get(user)
            .and_then(|entries| {
                entries
                    .iter()
                    .find(|e| e.device == device && !e.handle.is_approved())
                    .map(|e| e.handle.clone())
            })
            .ok_or(DecisionError::NotPending)?;
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
        } else {
            self.reply(user, device, &Reply::Denied);
            pending.close(CloseReason::new(
                DisconnectReason::approval_denied,
                "login denied from another device",
            ));
        }
        Ok(())
    }

    /// Closes a device still waiting for approval when its time is up.
    pub fn expire_pending(&self, handle: &SessionHandle) {
        if !handle.is_approved() {
            handle.close(CloseReason::new(
                DisconnectReason::approval_timeout,
                "no device approved this login in time",
            ));
        }
    }

    /// Closes every session, telling each client the server is shutting down.
    pub fn close_all(&self) {
        let shutdown = || CloseReason::new(DisconnectReason::shutdown, "server shutting down");
        for entries in self.devices.iter() {
            entries.iter().for_each(|e| e.handle.close(shutdown()));
        }
        self.anonymous.iter().for_each(|h| h.close(shutdown()));
    }

    /// Sends `reply` to one device's reply topic, on whichever node it is.
    pub fn reply(&self, user: &str, device: &str, reply: &Reply) {
        let payload = serde_json::to_vec(reply).expect("replies serialize");
        self.topics
            .publish(user, &topics::reply(user, device), payload.into(), None);
    }

    /// Lets an approved device in: applies the device policy (kicking the user's older device of
    /// the same class under one-per-class), remembers the device, and announces it online.
    fn admit(&self, user: &str, device: &str, platform: Platform, handle: &Arc<SessionHandle>) {
        let mut kicked = Vec::new();
        if self.config.device_policy == DevicePolicy::OnePerClass {
            if let Some(mut entries) = self.devices.get_mut(user) {
                entries.retain(|e| {
                    let same_class = e.handle.id != handle.id
                        && platform_class(e.platform) == platform_class(platform);
                    if same_class {
                        kicked.push((e.device.clone(), e.handle.clone()));
                    }
                    !same_class
                });
            }
        }
        let class = platform_class(platform);
        for (old_device, old) in kicked {
            let reason = format!("logged in on another {class} ({device})");
            self.kick_notice(user, &old_device, &old, reason);
        }
        if let Err(e) = self.known.remember(user, device) {
            tracing::warn!(%user, %device, "cannot record known device: {e:#}");
        }
        self.announce_online(user, device, handle);
    }

    fn announce_online(&self, user: &str, device: &str, handle: &Arc<SessionHandle>) {
        let info = self.devices.get(user).and_then(|entries| {
            entries
                .iter()
                .find(|e| e.device == device)
                .map(DeviceEntry::info)
        });
        if let Some(info) = info {
            if let Some(cluster) = &self.cluster {
                cluster.device_online(user, info.clone());
            }
            self.publish_presence(
                user,
                &PresenceEvent::Online { device: info },
                Some(handle.id),
            );
        }
    }

    /// Tells all of the user's devices (the kicked one included, so it can show why) and then
    /// closes the kicked session once that notice is written.
    fn kick_notice(&self, user: &str, device: &str, handle: &SessionHandle, reason: String) {
        if let Some(cluster) = &self.cluster {
            cluster.device_offline(user, device);
        }
        self.publish_presence(
            user,
            &PresenceEvent::Kicked {
                device: device.to_string(),
                reason: reason.clone(),
            },
            None,
        );
        handle.close(CloseReason::new(DisconnectReason::kicked, reason));
    }

    fn publish_presence(&self, user: &str, event: &PresenceEvent, exclude: Option<u64>) {
        let payload = serde_json::to_vec(event).expect("presence events serialize");
        self.topics
            .publish(user, &topics::presence(user), payload.into(), exclude);
    }
}

fn taken_over() -> CloseReason {
    CloseReason::new(
        DisconnectReason::taken_over,
        "a new connection of this device took over the session",
    )
}
