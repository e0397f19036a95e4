//! Live fan-out on this node: which link subscribed to which filter, with what options, and
//! delivery of a published message to every matching link.
//!
//! Authenticated devices subscribe to exact topics (their own) and to filters under `pub/`, so the
//! index is a map from exact topic to subscribers plus a map from *first level* to wildcard
//! subscriptions. A message on `u/bob/inbox` costs one hash lookup and a scan of the (normally
//! empty) wildcard buckets `u`, `+` and `#`; it never scans every device's `pub/#`. Shared
//! subscriptions (`$share/{group}/{filter}`) are indexed the same way, one group per name and
//! filter, each message going to one member of the group in turn.

use super::link::{Delivered, Delivery, Link, LinkId, Qos};
use super::message::Published;
use dashmap::DashMap;
use prometheus_client::metrics::counter::Counter;
use protocol::topics::filter_matches;
use std::sync::Arc;

/// What a subscription asked for, besides its filter (MQTT 5 subscription options; a 3.1.1
/// subscription has only its QoS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionOptions {
    /// The highest QoS the subscriber takes messages at.
    pub qos: Qos,
    /// Messages the subscriber's own link published are not sent back to it.
    pub no_local: bool,
    /// Messages keep the retain flag they were published with.
    pub retain_as_published: bool,
    /// The MQTT 5 Subscription Identifier, sent back with every message the subscription matches.
    pub id: Option<u32>,
}

impl SubscriptionOptions {
    /// A plain subscription at `qos`.
    pub fn at(qos: Qos) -> Self {
        Self {
            qos,
            no_local: false,
            retain_as_published: false,
            id: None,
        }
    }
}

#[derive(Clone)]
struct Subscriber {
    link: Arc<Link>,
    filter: Arc<str>,
    options: SubscriptionOptions,
}

/// The members of one shared subscription, and who gets the next message.
struct SharedGroup {
    name: Box<str>,
    filter: Arc<str>,
    members: Vec<Subscriber>,
    next: usize,
}

/// What one link gets of one message, gathered over its matching subscriptions.
struct Target {
    link: Arc<Link>,
    qos: Qos,
    retain: bool,
    subscription_ids: Vec<u32>,
}

pub struct Hub {
    exact: DashMap<Box<str>, Vec<Subscriber>>,
    wildcard_by_first_level: DashMap<Box<str>, Vec<Subscriber>>,
    /// Shared subscriptions by the first level of their filter, as wildcard ones are.
    shared_by_first_level: DashMap<Box<str>, Vec<SharedGroup>>,
    /// Deliveries dropped because the receiving link's outbox was full.
    dropped: Counter,
    /// Entries of a user's log left for a link to read from the log (see
    /// [`Delivered::Deferred`]).
    deferred: Counter,
}

/// Where a filter is indexed: exact filters by themselves, wildcard filters by first level.
fn index_key(filter: &str) -> (bool, &str) {
    if filter.contains(['+', '#']) {
        (false, filter.split('/').next().unwrap_or(filter))
    } else {
        (true, filter)
    }
}

fn first_level(filter: &str) -> &str {
    filter.split('/').next().unwrap_or(filter)
}

impl Hub {
    pub fn new(dropped: Counter, deferred: Counter) -> Self {
        Self {
            exact: DashMap::new(),
            wildcard_by_first_level: DashMap::new(),
            shared_by_first_level: DashMap::new(),
            dropped,
            deferred,
        }
    }

    fn bucket(&self, exact: bool) -> &DashMap<Box<str>, Vec<Subscriber>> {
        if exact {
            &self.exact
        } else {
            &self.wildcard_by_first_level
        }
    }

    /// Adds (or replaces, for the same link and filter) a subscription; `share` names the
    /// shared subscription's group.
    pub fn subscribe(
        &self,
        link: &Arc<Link>,
        filter: &str,
        share: Option<&str>,
        options: SubscriptionOptions,
    ) {
        let subscriber = Subscriber {
            link: link.clone(),
            filter: filter.into(),
            options,
        };
        let same = |s: &Subscriber| s.link.id == link.id && &*s.filter == filter;
        match share {
            None => {
                let (exact, key) = index_key(filter);
                let mut entry = self.bucket(exact).entry(key.into()).or_default();
                entry.retain(|s| !same(s));
                entry.push(subscriber);
            }
            Some(name) => {
                let mut groups = self
                    .shared_by_first_level
                    .entry(first_level(filter).into())
                    .or_default();
                let group = match groups
                    .iter_mut()
                    .position(|g| &*g.name == name && &*g.filter == filter)
                {
                    Some(at) => &mut groups[at],
                    None => {
                        groups.push(SharedGroup {
                            name: name.into(),
                            filter: filter.into(),
                            members: Vec::new(),
                            next: 0,
                        });
                        groups.last_mut().expect("just pushed")
                    }
                };
                group.members.retain(|s| !same(s));
                group.members.push(subscriber);
            }
        }
    }

    pub fn unsubscribe(&self, link: LinkId, filter: &str, share: Option<&str>) {
        let other = |s: &Subscriber| !(s.link.id == link && &*s.filter == filter);
        match share {
            None => {
                let (exact, key) = index_key(filter);
                self.bucket(exact).remove_if_mut(key, |_, subscribers| {
                    subscribers.retain(other);
                    subscribers.is_empty()
                });
            }
            Some(name) => {
                self.shared_by_first_level
                    .remove_if_mut(first_level(filter), |_, groups| {
                        for group in groups.iter_mut() {
                            if &*group.name == name && &*group.filter == filter {
                                group.members.retain(other);
                            }
                        }
                        groups.retain(|g| !g.members.is_empty());
                        groups.is_empty()
                    });
            }
        }
    }

    /// Delivers `message` to every matching link except `exclude`, once per link at the highest
    /// QoS its matching subscriptions grant (capped at `cap`) and with all their subscription
    /// identifiers, and to one member of each matching shared subscription. Returns how many
    /// deliveries were queued.
    pub fn publish(&self, message: Arc<Published>, cap: Qos, exclude: Option<LinkId>) -> usize {
        let topic = message.topic.as_str();
        let mut targets: Vec<Target> = Vec::new();
        let mut add = |s: &Subscriber| {
            if Some(s.link.id) == exclude
                || (s.options.no_local && message.origin == Some(s.link.id))
            {
                return;
            }
            let qos = s.options.qos.min(cap);
            let retain = s.options.retain_as_published && message.retain;
            match targets.iter_mut().find(|t| t.link.id == s.link.id) {
                Some(target) => {
                    target.qos = target.qos.max(qos);
                    target.retain |= retain;
                    target.subscription_ids.extend(s.options.id);
                }
                None => targets.push(Target {
                    link: s.link.clone(),
                    qos,
                    retain,
                    subscription_ids: s.options.id.into_iter().collect(),
                }),
            }
        };
        if let Some(subscribers) = self.exact.get(topic) {
            subscribers.iter().for_each(&mut add);
        }
        let first = first_level(topic);
        for key in [first, "+", "#"] {
            if let Some(subscribers) = self.wildcard_by_first_level.get(key) {
                subscribers
                    .iter()
                    .filter(|s| filter_matches(&s.filter, topic))
                    .for_each(&mut add);
            }
        }
        let shared = self.shared_targets(&message, cap, exclude);
        if targets.is_empty() && shared.is_empty() {
            return 0;
        }
        targets
            .into_iter()
            .chain(shared)
            .filter(|target| admitted(&target.link, topic))
            .map(|target| {
                let delivery = Delivery {
                    message: message.clone(),
                    qos: target.qos,
                    retain: target.retain,
                    subscription_ids: target.subscription_ids.into(),
                };
                match target.link.deliver(delivery) {
                    Delivered::Queued => 1,
                    Delivered::Dropped => {
                        self.dropped.inc();
                        0
                    }
                    Delivered::Deferred => {
                        self.deferred.inc();
                        0
                    }
                    Delivered::Gone => 0,
                }
            })
            .sum()
    }

    /// One member of each shared subscription matching the message: the next in turn that may
    /// take it.
    fn shared_targets(
        &self,
        message: &Published,
        cap: Qos,
        exclude: Option<LinkId>,
    ) -> Vec<Target> {
        let topic = message.topic.as_str();
        let mut targets = Vec::new();
        for key in [first_level(topic), "+", "#"] {
            let Some(mut groups) = self.shared_by_first_level.get_mut(key) else {
                continue;
            };
            for group in groups.iter_mut() {
                if !filter_matches(&group.filter, topic) {
                    continue;
                }
                let members = group.members.len();
                let chosen = (0..members)
                    .map(|offset| (group.next + offset) % members)
                    .find(|&at| {
                        let member = &group.members[at];
                        Some(member.link.id) != exclude
                            && !(member.options.no_local && message.origin == Some(member.link.id))
                            && admitted(&member.link, topic)
                    });
                if let Some(at) = chosen {
                    group.next = (at + 1) % members;
                    let member = &group.members[at];
                    targets.push(Target {
                        link: member.link.clone(),
                        qos: member.options.qos.min(cap),
                        retain: member.options.retain_as_published && message.retain,
                        subscription_ids: member.options.id.into_iter().collect(),
                    });
                }
            }
        }
        targets
    }
}

/// The second line of defence at delivery (a wildcard could match what the link may not read),
/// and a device waiting for approval receives only its own reply topic.
fn admitted(link: &Link, topic: &str) -> bool {
    link.identity.may_receive(topic) && (link.is_approved() || topic.ends_with("/reply"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::identity::Identity;
    use crate::live::outbox::Outbox;
    use protocol::envelope::Platform;

    fn device(id: LinkId, user: &str) -> (Arc<Link>, Outbox) {
        let identity = Identity::Device {
            user: user.into(),
            device: "d".into(),
            platform: Platform::Web,
        };
        Link::new(id, identity, 16, true)
    }

    fn anonymous(id: LinkId) -> (Arc<Link>, Outbox) {
        let identity = Identity::Anonymous {
            client_id: format!("c{id}"),
        };
        Link::new(id, identity, 16, true)
    }

    fn message(topic: &str, payload: &'static str) -> Arc<Published> {
        Arc::new(Published::new(topic, payload.into()))
    }

    fn hub() -> Hub {
        Hub::new(Counter::default(), Counter::default())
    }

    #[test]
    fn exact_and_wildcard_subscribers_get_one_copy_each() {
        let hub = hub();
        let (a, mut a_rx) = device(1, "a");
        let (b, mut b_rx) = device(2, "b");
        let at = SubscriptionOptions::at;
        hub.subscribe(&a, "u/a/inbox", None, at(Qos::AtLeastOnce));
        hub.subscribe(&a, "pub/#", None, at(Qos::AtMostOnce));
        hub.subscribe(&a, "pub/news", None, at(Qos::AtLeastOnce));
        hub.subscribe(&b, "pub/#", None, at(Qos::AtLeastOnce));

        assert_eq!(
            hub.publish(message("u/a/inbox", "x"), Qos::AtLeastOnce, None),
            1
        );
        assert_eq!(
            hub.publish(message("pub/news", "y"), Qos::AtLeastOnce, None),
            2
        );
        assert_eq!(
            hub.publish(message("pub/news", "z"), Qos::AtLeastOnce, Some(2)),
            1
        );

        let got: Vec<_> = std::iter::from_fn(|| a_rx.try_recv()).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[1].qos, Qos::AtLeastOnce, "highest granted QoS wins");
        assert_eq!(std::iter::from_fn(|| b_rx.try_recv()).count(), 1);
    }

    #[test]
    fn overlapping_subscriptions_carry_every_identifier_and_the_highest_qos() {
        let hub = hub();
        let (a, mut rx) = anonymous(1);
        let with = |qos, id| SubscriptionOptions {
            id: Some(id),
            ..SubscriptionOptions::at(qos)
        };
        hub.subscribe(&a, "t/#", None, with(Qos::AtMostOnce, 1));
        hub.subscribe(&a, "t/+", None, with(Qos::ExactlyOnce, 2));
        hub.publish(message("t/x", "m"), Qos::ExactlyOnce, None);
        let got = rx.try_recv().unwrap();
        assert_eq!(got.qos, Qos::ExactlyOnce);
        let mut ids = got.subscription_ids.as_slice().to_vec();
        ids.sort();
        assert_eq!(ids, [1, 2]);
        assert!(rx.try_recv().is_none(), "one copy");
    }

    #[test]
    fn no_local_and_retain_as_published_follow_the_subscription() {
        let hub = hub();
        let (a, mut a_rx) = anonymous(1);
        let (b, mut b_rx) = anonymous(2);
        let local = SubscriptionOptions {
            no_local: true,
            ..SubscriptionOptions::at(Qos::AtLeastOnce)
        };
        let rap = SubscriptionOptions {
            retain_as_published: true,
            ..SubscriptionOptions::at(Qos::AtLeastOnce)
        };
        hub.subscribe(&a, "t", None, local);
        hub.subscribe(&b, "t", None, rap);
        let from_a = Arc::new(Published {
            origin: Some(1),
            retain: true,
            ..Published::new("t", "m".into())
        });
        assert_eq!(hub.publish(from_a, Qos::AtLeastOnce, None), 1);
        assert!(a_rx.try_recv().is_none(), "not sent back to its publisher");
        assert!(b_rx.try_recv().unwrap().retain);
    }

    #[test]
    fn a_shared_subscription_hands_each_message_to_one_member_in_turn() {
        let hub = hub();
        let (a, mut a_rx) = anonymous(1);
        let (b, mut b_rx) = anonymous(2);
        let at = SubscriptionOptions::at(Qos::AtLeastOnce);
        hub.subscribe(&a, "jobs/+", Some("workers"), at);
        hub.subscribe(&b, "jobs/+", Some("workers"), at);
        for n in 0..4 {
            assert_eq!(
                hub.publish(message("jobs/x", "m"), Qos::AtLeastOnce, None),
                1,
                "{n}"
            );
        }
        assert_eq!(std::iter::from_fn(|| a_rx.try_recv()).count(), 2);
        assert_eq!(std::iter::from_fn(|| b_rx.try_recv()).count(), 2);
        hub.unsubscribe(1, "jobs/+", Some("workers"));
        hub.publish(message("jobs/x", "m"), Qos::AtLeastOnce, None);
        assert_eq!(std::iter::from_fn(|| b_rx.try_recv()).count(), 1);
        hub.unsubscribe(2, "jobs/+", Some("workers"));
        assert!(hub.shared_by_first_level.is_empty());
    }

    #[test]
    fn unsubscribe_stops_delivery_and_frees_the_bucket() {
        let hub = hub();
        let (a, _rx) = device(1, "a");
        hub.subscribe(
            &a,
            "u/a/inbox",
            None,
            SubscriptionOptions::at(Qos::AtLeastOnce),
        );
        hub.unsubscribe(1, "u/a/inbox", None);
        assert_eq!(
            hub.publish(message("u/a/inbox", "x"), Qos::AtLeastOnce, None),
            0
        );
        assert!(hub.exact.is_empty());
    }

    #[test]
    fn a_full_outbox_drops_qos0_and_closes_the_link_on_qos1() {
        let dropped = Counter::default();
        let hub = Hub::new(dropped.clone(), Counter::default());
        let identity = Identity::Anonymous {
            client_id: "slow".into(),
        };
        let (slow, _rx) = Link::new(1, identity, 1, true);
        hub.subscribe(&slow, "t", None, SubscriptionOptions::at(Qos::AtLeastOnce));
        assert_eq!(hub.publish(message("t", "1"), Qos::AtMostOnce, None), 1);
        assert_eq!(hub.publish(message("t", "2"), Qos::AtMostOnce, None), 0);
        assert_eq!(dropped.get(), 1);
        let open = futures_util::FutureExt::now_or_never(slow.closed());
        assert!(
            open.is_none(),
            "a dropped QoS 0 message leaves the link open"
        );
        assert_eq!(hub.publish(message("t", "3"), Qos::AtLeastOnce, None), 0);
        let reason = futures_util::FutureExt::now_or_never(slow.closed()).expect("closed");
        assert_eq!(
            reason.kind,
            protocol::envelope::DisconnectReason::SlowConsumer
        );
    }

    #[test]
    fn a_log_entry_that_does_not_fit_is_deferred_when_the_link_follows_its_log() {
        let deferred = Counter::default();
        let hub = Hub::new(Counter::default(), deferred.clone());
        let identity = Identity::Device {
            user: "a".into(),
            device: "d".into(),
            platform: Platform::Web,
        };
        let (full, _rx) = Link::new(2, identity, 1, true);
        full.follow_log();
        hub.subscribe(
            &full,
            "u/a/inbox",
            None,
            SubscriptionOptions::at(Qos::AtLeastOnce),
        );
        let entry = |seq| {
            Arc::new(Published {
                seq: Some(seq),
                ..Published::new("u/a/inbox", "m".into())
            })
        };
        assert_eq!(hub.publish(entry(1), Qos::AtLeastOnce, None), 1);
        assert_eq!(hub.publish(entry(2), Qos::AtLeastOnce, None), 0);
        assert_eq!(deferred.get(), 1);
        assert!(futures_util::FutureExt::now_or_never(full.closed()).is_none());
    }
}
