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
    /// A client id is the client's to choose: it is shown escaped and cut to
    /// [`LOGGED_ID_CHARS`], so it can neither forge log lines nor fill them.
    pub fn describe(&self) -> String {
        match self {
            Self::Device { user, device, .. } => format!("{user}/{device}"),
            Self::Anonymous { client_id } => format!("anonymous:{}", for_logs(client_id)),
            Self::Backend { client_id, .. } => format!("backend:{}", for_logs(client_id)),
        }
    }
}

/// Characters of a client-chosen id that logs show.
pub const LOGGED_ID_CHARS: usize = 64;

/// A client-chosen id as logs show it: control characters and quotes escaped, at most
/// [`LOGGED_ID_CHARS`] characters of it, then `…` when it was longer.
pub fn for_logs(id: &str) -> String {
    let mut shown: String = id
        .chars()
        .take(LOGGED_ID_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if id.chars().nth(LOGGED_ID_CHARS).is_some() {
        shown.push('…');
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_escaped_and_cut_for_logs() {
        assert_eq!(for_logs("phone-1"), "phone-1");
        assert_eq!(for_logs("a\nINFO forged"), "a\\nINFO forged");
        let long = "x".repeat(1000);
        assert_eq!(for_logs(&long), format!("{}…", "x".repeat(LOGGED_ID_CHARS)));
    }
}
