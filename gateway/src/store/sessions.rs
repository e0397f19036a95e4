//! MQTT sessions kept while their clients are away (`clean_session = 0`, or a Session Expiry
//! Interval), and the messages queued for them meanwhile. The store keeps both sealed and opaque:
//! the live layer decides what a session holds.

use super::StoreError;
use async_trait::async_trait;

/// Whose session: a device's (kept with its user's data, deleted with the user) or a client's
/// known only by its MQTT client id (dev mode, trusted backends).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SessionKey {
    Device { user: String, device: String },
    Client(String),
}

impl SessionKey {
    /// The key's text, unique across both kinds (each has its own prefix, and user and device
    /// ids hold no 0 byte): what it is stored and sealed under.
    pub fn name(&self) -> String {
        match self {
            Self::Device { user, device } => format!("d\0{user}\0{device}"),
            Self::Client(client_id) => format!("c\0{client_id}"),
        }
    }

    /// The key a [`name`](Self::name) was made from.
    pub fn parse(name: &str) -> Option<Self> {
        let mut parts = name.splitn(3, '\0');
        match (parts.next()?, parts.next()?, parts.next()) {
            ("d", user, Some(device)) => Some(Self::Device {
                user: user.to_string(),
                device: device.to_string(),
            }),
            ("c", client, None) => Some(Self::Client(client.to_string())),
            _ => None,
        }
    }
}

/// How much a session's queue holds at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueBound {
    pub messages: usize,
    /// The messages' bytes as queued.
    pub bytes: usize,
}

#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Keeps `state` as the session's, until `expires_at_ms` (then it is as if absent).
    async fn put_session(
        &self,
        key: &SessionKey,
        state: &[u8],
        expires_at_ms: u64,
    ) -> Result<(), StoreError>;

    /// The session's state, unless none is kept or it expired.
    async fn session(&self, key: &SessionKey) -> Result<Option<Vec<u8>>, StoreError>;

    /// Forgets the session and what is queued for it.
    async fn drop_session(&self, key: &SessionKey) -> Result<(), StoreError>;

    /// Queues a message for the session while its client is away, within `bound` (the oldest
    /// go first; the newest always stays); returns how many were dropped to make room.
    async fn enqueue(
        &self,
        key: &SessionKey,
        message: &[u8],
        bound: QueueBound,
    ) -> Result<u64, StoreError>;

    /// Takes everything queued for the session, oldest first, leaving none.
    async fn take_queued(&self, key: &SessionKey) -> Result<Vec<Vec<u8>>, StoreError>;

    /// Every session kept and not expired, for a starting gateway to take up again.
    async fn kept_sessions(&self) -> Result<Vec<(SessionKey, Vec<u8>)>, StoreError>;
}
