//! Who may subscribe to and publish on which topic (invariant 3: a device acts only as its
//! token's user and device).
//!
//! A device subscribes only to its own user's server → device topics and to `pub/…`, and publishes
//! only on its own device → server topics, which the gateway handles itself (they never reach other
//! clients as raw publishes). Anonymous clients (dev mode) are confined to topics outside `u/`;
//! since their wildcards could still match `u/…`, [`Identity::may_receive`] is checked again at
//! delivery.

use super::identity::Identity;
use protocol::topics::{
    self, is_valid_filter, is_valid_topic, DeviceAction, DeviceTopic, PUBLIC_PREFIX, USER_PREFIX,
};

/// Why a subscribe or publish was refused by the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("not allowed for this session")]
    Forbidden,
    #[error("malformed topic or filter")]
    InvalidTopic,
}

/// What a permitted publish is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishRoute {
    /// A device asks the server for something on its own device topic.
    DeviceRequest(DeviceAction),
    /// A dev-mode publish routed as in a plain broker.
    Broker,
    /// A backend's notification.
    Notification,
}

impl Identity {
    pub fn may_subscribe(&self, filter: &str) -> Result<(), Denied> {
        if !is_valid_filter(filter) {
            return Err(Denied::InvalidTopic);
        }
        let allowed = match self {
            Self::Device { user, device, .. } => {
                filter.starts_with(PUBLIC_PREFIX) && !filter[PUBLIC_PREFIX.len()..].is_empty()
                    || topics::own_server_topics(user, device)
                        .iter()
                        .any(|own| own == filter)
            }
            // Wildcards like `#` are allowed; delivery filters out `u/…` (may_receive).
            Self::Anonymous { .. } => !filter.starts_with(USER_PREFIX) && filter != "u",
            Self::Backend { .. } => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(Denied::Forbidden)
        }
    }

    pub fn may_publish(&self, topic: &str) -> Result<PublishRoute, Denied> {
        if !is_valid_topic(topic) {
            return Err(Denied::InvalidTopic);
        }
        match self {
            Self::Device { user, device, .. } => match DeviceTopic::parse(topic) {
                Some(t) if t.user == user && t.device == device => {
                    Ok(PublishRoute::DeviceRequest(t.action))
                }
                _ => Err(Denied::Forbidden),
            },
            Self::Anonymous { .. } if topic.starts_with(USER_PREFIX) || topic == "u" => {
                Err(Denied::Forbidden)
            }
            Self::Anonymous { .. } => Ok(PublishRoute::Broker),
            Self::Backend { notify_topic, .. } if topic == notify_topic => {
                Ok(PublishRoute::Notification)
            }
            Self::Backend { .. } => Err(Denied::Forbidden),
        }
    }

    /// Second line of defence at delivery: may a message on `topic` reach this session?
    pub fn may_receive(&self, topic: &str) -> bool {
        match self {
            Self::Device { user, device, .. } => {
                topic.starts_with(PUBLIC_PREFIX)
                    || topics::own_server_topics(user, device)
                        .iter()
                        .any(|own| own == topic)
            }
            Self::Anonymous { .. } => !topic.starts_with(USER_PREFIX) && topic != "u",
            Self::Backend { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::envelope::Platform;

    fn alice() -> Identity {
        Identity::Device {
            user: "alice".into(),
            device: "phone".into(),
            platform: Platform::Android,
        }
    }

    #[test]
    fn device_subscribes_only_to_its_own_topics_and_public() {
        let a = alice();
        for ok in [
            "u/alice/inbox",
            "u/alice/notify",
            "u/alice/presence",
            "u/alice/signal",
            "u/alice/d/phone/reply",
            "pub/#",
            "pub/news",
        ] {
            assert_eq!(a.may_subscribe(ok), Ok(()), "{ok}");
        }
        for denied in [
            "#",
            "+/#",
            "u/#",
            "u/+/inbox",
            "u/bob/inbox",
            "u/alice/#",
            "u/alice/+",
            "u/alice/d/tablet/reply",
            "u/alice/d/phone/send",
            "+/alice/inbox",
            "pub/",
        ] {
            assert_eq!(a.may_subscribe(denied), Err(Denied::Forbidden), "{denied}");
        }
        assert_eq!(a.may_subscribe("a/#/b"), Err(Denied::InvalidTopic));
    }

    #[test]
    fn device_publishes_only_on_its_own_device_topics() {
        let a = alice();
        assert_eq!(
            a.may_publish("u/alice/d/phone/send"),
            Ok(PublishRoute::DeviceRequest(DeviceAction::Send))
        );
        assert_eq!(
            a.may_publish("u/alice/d/phone/signal"),
            Ok(PublishRoute::DeviceRequest(DeviceAction::Signal))
        );
        for denied in [
            "u/bob/d/phone/send",
            "u/bob/d/phone/signal",
            "u/alice/d/tablet/send",
            "u/alice/signal",
            "u/alice/inbox",
            "u/bob/inbox",
            "pub/news",
            "anything",
        ] {
            assert_eq!(a.may_publish(denied), Err(Denied::Forbidden), "{denied}");
        }
        assert_eq!(a.may_publish("u/+/inbox"), Err(Denied::InvalidTopic));
    }

    #[test]
    fn anonymous_clients_stay_out_of_user_topics() {
        let anon = Identity::Anonymous {
            client_id: "x".into(),
        };
        assert_eq!(anon.may_subscribe("#"), Ok(()));
        assert_eq!(anon.may_subscribe("u/bob/inbox"), Err(Denied::Forbidden));
        assert_eq!(anon.may_publish("sensors/1"), Ok(PublishRoute::Broker));
        assert_eq!(anon.may_publish("u/bob/inbox"), Err(Denied::Forbidden));
        assert!(!anon.may_receive("u/bob/inbox"));
        assert!(anon.may_receive("sensors/1"));
    }
}
