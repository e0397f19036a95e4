//! Who may subscribe to and publish on which topic (invariant 3: a device acts only as its
//! token's user and device).
//!
//! A device subscribes only to its own user's server → device topics and to `pub/…`, and publishes
//! only on its own device → server topics, which the gateway handles itself (they never reach other
//! clients as raw publishes), and on `svc/…`, which only backends read. Anonymous clients (dev
//! mode) are confined to topics outside `u/` and `svc/`, and may read `pub/` broadcasts but not
//! send them; since their wildcards could still match those, [`Identity::may_receive`] is checked
//! again at delivery. Shared subscriptions are for
//! backends (how they consume `svc/…`) and dev mode.

use super::identity::Identity;
use protocol::topics::{
    self, is_valid_filter, is_valid_topic, DeviceAction, DeviceTopic, PUBLIC_PREFIX,
    SERVICE_PREFIX, USER_PREFIX,
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
    /// A device sends to the backend's services (`svc/…`), stamped with who sent it.
    Service,
    /// A dev-mode publish routed as in a plain broker.
    Broker,
    /// A backend's notification.
    Notification,
}

/// Whether `topic` (or a filter) lies under `prefix` or is its bare first level.
fn under(topic: &str, prefix: &str) -> bool {
    topic.starts_with(prefix) || topic == &prefix[..prefix.len() - 1]
}

/// Topics outside what an anonymous client may touch: users' and services'.
fn reserved(topic: &str) -> bool {
    under(topic, USER_PREFIX) || under(topic, SERVICE_PREFIX)
}

impl Identity {
    /// May this session subscribe to `filter` (a plain filter; a shared subscription's filter
    /// without its `$share/{group}/`)? `shared` says it is one.
    pub fn may_subscribe(&self, filter: &str, shared: bool) -> Result<(), Denied> {
        if !is_valid_filter(filter) {
            return Err(Denied::InvalidTopic);
        }
        let allowed = match self {
            Self::Device { user, device, .. } => {
                !shared
                    && (filter.starts_with(PUBLIC_PREFIX)
                        && !filter[PUBLIC_PREFIX.len()..].is_empty()
                        || topics::own_server_topics(user, device)
                            .iter()
                            .any(|own| own == filter))
            }
            // Wildcards like `#` are allowed; delivery filters out `u/…` (may_receive).
            Self::Anonymous { .. } => !reserved(filter),
            Self::Backend { .. } => {
                filter.starts_with(SERVICE_PREFIX) && !filter[SERVICE_PREFIX.len()..].is_empty()
            }
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
            Self::Device { .. } if topic.starts_with(SERVICE_PREFIX) => Ok(PublishRoute::Service),
            Self::Device { user, device, .. } => match DeviceTopic::parse(topic) {
                Some(t) if t.user == user && t.device == device => {
                    Ok(PublishRoute::DeviceRequest(t.action))
                }
                _ => Err(Denied::Forbidden),
            },
            // Broadcasts under `pub/` reach every device: only backends (the API) send them.
            Self::Anonymous { .. } if reserved(topic) || under(topic, PUBLIC_PREFIX) => {
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
            Self::Anonymous { .. } => !reserved(topic),
            Self::Backend { .. } => topic.starts_with(SERVICE_PREFIX),
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
            assert_eq!(a.may_subscribe(ok, false), Ok(()), "{ok}");
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
            assert_eq!(
                a.may_subscribe(denied, false),
                Err(Denied::Forbidden),
                "{denied}"
            );
        }
        assert_eq!(a.may_subscribe("a/#/b", false), Err(Denied::InvalidTopic));
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
            "svc",
        ] {
            assert_eq!(a.may_publish(denied), Err(Denied::Forbidden), "{denied}");
        }
        assert_eq!(a.may_publish("svc/orders"), Ok(PublishRoute::Service));
        assert_eq!(a.may_publish("u/+/inbox"), Err(Denied::InvalidTopic));
    }

    #[test]
    fn anonymous_clients_stay_out_of_user_topics_and_send_no_broadcasts() {
        let anon = Identity::Anonymous {
            client_id: "x".into(),
        };
        assert_eq!(anon.may_subscribe("#", false), Ok(()));
        assert_eq!(anon.may_subscribe("jobs/+", true), Ok(()));
        assert_eq!(
            anon.may_subscribe("u/bob/inbox", false),
            Err(Denied::Forbidden)
        );
        assert_eq!(anon.may_subscribe("svc/#", true), Err(Denied::Forbidden));
        assert_eq!(anon.may_publish("sensors/1"), Ok(PublishRoute::Broker));
        assert_eq!(anon.may_publish("u/bob/inbox"), Err(Denied::Forbidden));
        assert_eq!(anon.may_publish("svc/orders"), Err(Denied::Forbidden));
        assert_eq!(anon.may_subscribe("pub/news", false), Ok(()));
        assert_eq!(anon.may_publish("pub/news"), Err(Denied::Forbidden));
        assert_eq!(anon.may_publish("pub"), Err(Denied::Forbidden));
        assert!(anon.may_receive("pub/news"));
        assert!(!anon.may_receive("u/bob/inbox"));
        assert!(!anon.may_receive("svc/orders"));
        assert!(anon.may_receive("sensors/1"));
    }

    #[test]
    fn backends_read_what_devices_send_to_services_and_nothing_else() {
        let backend = Identity::Backend {
            client_id: "orders-worker".into(),
            notify_topic: "svc-notify".into(),
        };
        assert_eq!(backend.may_subscribe("svc/orders/#", true), Ok(()));
        assert_eq!(backend.may_subscribe("svc/#", false), Ok(()));
        for denied in ["#", "u/+/inbox", "pub/#", "svc/"] {
            assert_eq!(
                backend.may_subscribe(denied, true),
                Err(Denied::Forbidden),
                "{denied}"
            );
        }
        assert!(backend.may_receive("svc/orders"));
        assert!(!backend.may_receive("u/alice/inbox"));
        assert_eq!(
            alice().may_subscribe("pub/news", true),
            Err(Denied::Forbidden)
        );
    }
}

/// Invariant 3 as properties: whatever topic or filter string a client sends (crafted from the
/// pieces of real topics, wildcards, look-alike ids and control characters, or arbitrary), what
/// the rules let through never reaches another user's or another device's topics.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use protocol::envelope::Platform;
    use protocol::topics::{device_topic, filter_matches, own_server_topics, DeviceAction};

    fn device(user: &str, device: &str) -> Identity {
        Identity::Device {
            user: user.into(),
            device: device.into(),
            platform: Platform::Ios,
        }
    }

    /// Every topic that belongs to someone other than alice's phone: bob's server and device
    /// topics, and the device topics and reply topic of alice's tablet.
    fn not_alices_phone() -> Vec<String> {
        let mut topics: Vec<String> = own_server_topics("bob", "phone").into();
        topics.push(own_server_topics("alice", "tablet")[4].clone());
        for (user, device) in [("bob", "phone"), ("alice", "tablet")] {
            topics.extend(DeviceAction::ALL.map(|action| device_topic(user, device, action)));
        }
        topics
    }

    /// Topic and filter strings built from the pieces an attacker would try, or anything.
    fn topic_like() -> impl Strategy<Value = String> {
        let level = prop::sample::select(vec![
            "u",
            "alice",
            "bob",
            "phone",
            "tablet",
            "d",
            "inbox",
            "notify",
            "presence",
            "signal",
            "reply",
            "send",
            "sync",
            "ack",
            "approve",
            "quiet-hours",
            "svc",
            "pub",
            "+",
            "#",
            "",
            "$share",
            "g",
            "al+ce",
            "alice\0",
            "ALICE",
            " alice",
            "alice ",
            "..",
            "u/",
            "é",
        ]);
        // Most strings start where the rules draw their lines, so the ones that matter (such as
        // `u/+/inbox`) come up often.
        let start = prop::sample::select(vec![
            "u/alice/",
            "u/bob/",
            "u/+/",
            "u/#",
            "+/",
            "#",
            "u/alice/d/",
            "u/alice/d/+/",
            "u/alice/d/phone/",
            "u/alice/d/tablet/",
            "u/bob/d/phone/",
            "svc/",
            "pub/",
            "$share/g/",
        ]);
        prop_oneof![
            3 => (start, prop::collection::vec(level.clone(), 0..4))
                .prop_map(|(start, levels)| format!("{start}{}", levels.join("/"))),
            2 => prop::collection::vec(level, 1..8).prop_map(|levels| levels.join("/")),
            1 => "\\PC{0,40}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn a_device_subscribes_to_nothing_of_anyone_else(filter in topic_like()) {
            let alice = device("alice", "phone");
            if alice.may_subscribe(&filter, false).is_ok() {
                for topic in not_alices_phone() {
                    prop_assert!(!filter_matches(&filter, &topic), "{filter:?} reaches {topic}");
                }
            }
            prop_assert!(alice.may_subscribe(&filter, true).is_err(), "shared: {filter:?}");
        }

        #[test]
        fn a_device_publishes_only_as_itself(topic in topic_like()) {
            let alice = device("alice", "phone");
            match alice.may_publish(&topic) {
                Ok(PublishRoute::DeviceRequest(action)) => {
                    prop_assert_eq!(topic, device_topic("alice", "phone", action))
                }
                Ok(PublishRoute::Service) => prop_assert!(topic.starts_with(SERVICE_PREFIX)),
                Ok(route) => prop_assert!(false, "{topic:?} routed as {route:?}"),
                Err(_) => {}
            }
        }

        #[test]
        fn a_device_receives_only_its_own_and_broadcasts(topic in topic_like()) {
            if device("alice", "phone").may_receive(&topic) {
                prop_assert!(
                    topic.starts_with(PUBLIC_PREFIX)
                        || own_server_topics("alice", "phone").contains(&topic),
                    "{topic:?}"
                );
            }
        }

        #[test]
        fn anonymous_and_backend_clients_never_touch_user_topics(text in topic_like()) {
            let anonymous = Identity::Anonymous { client_id: "x".into() };
            let backend = Identity::Backend {
                client_id: "b".into(),
                notify_topic: "svc/notify".into(),
            };
            let users = not_alices_phone()
                .into_iter()
                .chain(own_server_topics("alice", "phone"))
                .filter(|topic| topic.starts_with(USER_PREFIX));
            for topic in users {
                prop_assert!(!anonymous.may_receive(&topic));
                prop_assert!(!backend.may_receive(&topic));
                if backend.may_subscribe(&text, false).is_ok() {
                    prop_assert!(!filter_matches(&text, &topic), "backend {text:?} reaches {topic}");
                }
            }
            if anonymous.may_publish(&text).is_ok() {
                prop_assert!(!reserved(&text) && !under(&text, PUBLIC_PREFIX), "{text:?}");
            }
            if backend.may_publish(&text).is_ok() {
                prop_assert_eq!(text, "svc/notify");
            }
        }
    }
}
