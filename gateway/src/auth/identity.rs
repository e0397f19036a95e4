//! Who is behind a connection, once authenticated.

use protocol::envelope::Platform;

/// The authenticated party behind a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Device {
        user: String,
        device: String,
        platform: Platform,
    },
    /// A token-less client in dev mode, known by its MQTT client id.
    Anonymous { client_id: String },
    /// A trusted backend over MQTT (its password is an API key): it hands in notifications on
    /// `notify_topic` and may do nothing else.
    Backend {
        client_id: String,
        notify_topic: String,
    },
}

impl Identity {
    /// A short name for logs and the metrics of this session.
    pub fn describe(&self) -> String {
        match self {
            Self::Device { user, device, .. } => format!("{user}/{device}"),
            Self::Anonymous { client_id } => format!("anonymous:{client_id}"),
            Self::Backend { client_id, .. } => format!("backend:{client_id}"),
        }
    }
}
