//! The topic contract.
//!
//! Server → device: `u/{user}/inbox`, `u/{user}/notify`, `u/{user}/presence`,
//! `u/{user}/signal`, `u/{user}/d/{device}/reply`, and public broadcasts under `pub/`.
//! Device → server: `u/{user}/d/{device}/{send|signal|ack|sync|approve|quiet-hours}`.
//! Device → backend: anything under `svc/`, which only backends (API-key clients) read, usually
//! through a shared subscription `$share/{group}/svc/…`, each message stamped with who sent it.
//!
//! User and device ids are restricted to [`is_valid_id`] so that an id can never smuggle a level
//! separator or a wildcard into a topic.

/// Prefix of every per-user topic. Nothing outside a user's own devices may touch it.
pub const USER_PREFIX: &str = "u/";
/// Prefix of public broadcasts, readable by every device.
pub const PUBLIC_PREFIX: &str = "pub/";
/// Prefix of what devices send to the app's backend services.
pub const SERVICE_PREFIX: &str = "svc/";
/// The filter a device uses to receive every public broadcast.
pub const PUBLIC_FILTER: &str = "pub/#";
/// Longest user or device id accepted.
pub const MAX_ID_LEN: usize = 64;

/// True for ids made of ASCII letters, digits, `_`, `-` and `.`, 1 to [`MAX_ID_LEN`] long.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Messages to the user, roamed to all of the user's devices.
pub fn inbox(user: &str) -> String {
    format!("u/{user}/inbox")
}

/// In-app notifications for the user.
pub fn notify(user: &str) -> String {
    format!("u/{user}/notify")
}

/// The user's own devices going online and offline, approval requests, kicks.
pub fn presence(user: &str) -> String {
    format!("u/{user}/presence")
}

/// Live signals to the user (typing, game moves, call set-up): relayed at once to the user's
/// devices online now, never stored.
pub fn signal(user: &str) -> String {
    format!("u/{user}/signal")
}

/// Whether `topic` is a user's [`signal`] topic.
pub fn is_signal(topic: &str) -> bool {
    topic
        .strip_prefix("u/")
        .and_then(|rest| rest.strip_suffix("/signal"))
        .is_some_and(is_valid_id)
}

/// Answers to one device's requests.
pub fn reply(user: &str, device: &str) -> String {
    format!("u/{user}/d/{device}/reply")
}

/// What a device may ask of the server, one topic each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceAction {
    /// Send a message: payload [`crate::envelope::SendRequest`].
    Send,
    /// Relay a live signal, not stored: payload [`crate::envelope::SendRequest`], delivered as
    /// a [`crate::envelope::SignalMessage`] on the recipient's [`signal`] topic.
    Signal,
    /// Acknowledge the highest sequence held.
    Ack,
    /// Ask for everything after a cursor.
    Sync,
    /// Approve or deny a new device: payload [`crate::envelope::ApprovalDecision`].
    Approve,
    /// Set the user's quiet hours from a device: `{"time_zone": "Asia/Shanghai",
    /// "windows": [{"start": "22:00", "end": "07:00"}]}`.
    QuietHours,
}

impl DeviceAction {
    pub const ALL: [DeviceAction; 6] = [
        Self::Send,
        Self::Signal,
        Self::Ack,
        Self::Sync,
        Self::Approve,
        Self::QuietHours,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Send => "send",
            Self::Signal => "signal",
            Self::Ack => "ack",
            Self::Sync => "sync",
            Self::Approve => "approve",
            Self::QuietHours => "quiet-hours",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// The topic on which `device` of `user` asks for `action`.
pub fn device_topic(user: &str, device: &str, action: DeviceAction) -> String {
    format!("u/{user}/d/{device}/{}", action.as_str())
}

/// A device → server topic, split into its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceTopic<'a> {
    pub user: &'a str,
    pub device: &'a str,
    pub action: DeviceAction,
}

impl<'a> DeviceTopic<'a> {
    /// Parses `u/{user}/d/{device}/{action}`; anything else is `None`.
    pub fn parse(topic: &'a str) -> Option<Self> {
        let mut levels = topic.split('/');
        let (Some("u"), Some(user), Some("d"), Some(device), Some(action), None) = (
            levels.next(),
            levels.next(),
            levels.next(),
            levels.next(),
            levels.next(),
            levels.next(),
        ) else {
            return None;
        };
        if !is_valid_id(user) || !is_valid_id(device) {
            return None;
        }
        Some(Self {
            user,
            device,
            action: DeviceAction::parse(action)?,
        })
    }
}

/// The server → device topics a device of `user` may subscribe to, besides `pub/…`.
pub fn own_server_topics(user: &str, device: &str) -> [String; 5] {
    [
        inbox(user),
        notify(user),
        presence(user),
        signal(user),
        reply(user, device),
    ]
}

/// True when `topic` (no wildcards) matches `filter` by MQTT rules, including `+` and `#`,
/// and the rule that wildcards at the first level never match topics starting with `$`.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for filter_level in filter.split('/') {
        match filter_level {
            "#" => return true,
            "+" => {
                if topic_levels.next().is_none() {
                    return false;
                }
            }
            exact => {
                if topic_levels.next() != Some(exact) {
                    return false;
                }
            }
        }
    }
    topic_levels.next().is_none()
}

/// A shared subscription's group and filter, from `$share/{group}/{filter}`; `None` for a filter
/// that is not one. The group may not be empty nor hold a wildcard.
pub fn shared_subscription(filter: &str) -> Option<(&str, &str)> {
    let rest = filter.strip_prefix("$share/")?;
    let (group, filter) = rest.split_once('/')?;
    let valid = !group.is_empty() && !group.contains(['+', '#']) && is_valid_filter(filter);
    valid.then_some((group, filter))
}

/// True when `filter` is a well-formed MQTT filter: not empty, `#` only as the whole last level,
/// `+` only as a whole level, no NUL.
pub fn is_valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    levels.iter().enumerate().all(|(i, level)| {
        if level.contains('#') {
            *level == "#" && i == levels.len() - 1
        } else {
            !level.contains('+') || *level == "+"
        }
    })
}

/// True when `topic` is a well-formed topic name to publish on: not empty, no wildcards, no NUL.
pub fn is_valid_topic(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_topics_are_told_apart() {
        assert!(is_signal(&signal("alice")));
        assert!(!is_signal("u/alice/inbox"));
        assert!(!is_signal("u/alice/d/phone/signal"));
        assert!(!is_signal("pub/signal"));
    }

    #[test]
    fn device_topics_round_trip() {
        for action in DeviceAction::ALL {
            let topic = device_topic("alice", "phone-1", action);
            let parsed = DeviceTopic::parse(&topic).unwrap();
            assert_eq!(
                (parsed.user, parsed.device, parsed.action),
                ("alice", "phone-1", action)
            );
        }
        assert!(DeviceTopic::parse("u/alice/d/phone/reply").is_none());
        assert!(DeviceTopic::parse("u/alice/d/phone/send/x").is_none());
        assert!(DeviceTopic::parse("u/al+ce/d/phone/send").is_none());
    }

    #[test]
    fn filters_match_by_mqtt_rules() {
        assert!(filter_matches("#", "u/bob/inbox"));
        assert_eq!(
            shared_subscription("$share/workers/svc/+/orders"),
            Some(("workers", "svc/+/orders"))
        );
        for not_shared in [
            "$share/",
            "$share//t",
            "$share/g+/t",
            "$share/g",
            "t/#",
            "$share/g/a/#/b",
        ] {
            assert_eq!(shared_subscription(not_shared), None, "{not_shared}");
        }
        assert!(filter_matches("u/+/inbox", "u/bob/inbox"));
        assert!(filter_matches("pub/#", "pub/news/today"));
        assert!(filter_matches("pub/#", "pub"));
        assert!(!filter_matches("pub/+", "pub/a/b"));
        assert!(!filter_matches("#", "$SYS/x"));
        assert!(!filter_matches("u/bob", "u/bob/inbox"));
    }

    #[test]
    fn filter_and_topic_validity() {
        assert!(is_valid_filter("a/+/#"));
        assert!(!is_valid_filter("a/#/b"));
        assert!(!is_valid_filter("a/b+"));
        assert!(!is_valid_filter(""));
        assert!(is_valid_topic("a/b"));
        assert!(!is_valid_topic("a/+"));
    }

    #[test]
    fn ids_cannot_carry_separators_or_wildcards() {
        assert!(is_valid_id("alice_01.x-y"));
        for bad in ["", "a/b", "a+", "#", "a b", &"x".repeat(65)] {
            assert!(!is_valid_id(bad), "{bad}");
        }
    }
}
