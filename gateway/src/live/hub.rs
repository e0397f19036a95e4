//! Live fan-out on this node: which link subscribed to which filter, and delivery of a
//! published message to every matching link.
//!
//! Authenticated devices subscribe to exact topics (their own) and to filters under `pub/`, so the
//! index is a map from exact topic to subscribers plus a map from *first level* to wildcard
//! subscriptions. A message on `u/bob/inbox` costs one hash lookup and a scan of the (normally
//! empty) wildcard buckets `u`, `+` and `#`; it never scans every device's `pub/#`.

use super::link::{Delivered, Delivery, Link, LinkId, Published, Qos};
use dashmap::DashMap;
use prometheus_client::metrics::counter::Counter;
use protocol::topics::filter_matches;
use std::sync::Arc;

#[derive(Clone)]
struct Subscriber {
    link: Arc<Link>,
    filter: Arc<str>,
    qos: Qos,
}

pub struct Hub {
    exact: DashMap<Box<str>, Vec<Subscriber>>,
    wildcard_by_first_level: DashMap<Box<str>, Vec<Subscriber>>,
    /// Deliveries dropped because the receiving link's outbox was full.
    dropped: Counter,
}

/// Where a filter is indexed: exact filters by themselves, wildcard filters by first level.
fn index_key(filter: &str) -> (bool, &str) {
    if filter.contains(['+', '#']) {
        (false, filter.split('/').next().unwrap_or(filter))
    } else {
        (true, filter)
    }
}

impl Hub {
    pub fn new(dropped: Counter) -> Self {
        Self {
            exact: DashMap::new(),
            wildcard_by_first_level: DashMap::new(),
            dropped,
        }
    }

    fn bucket(&self, exact: bool) -> &DashMap<Box<str>, Vec<Subscriber>> {
        if exact {
            &self.exact
        } else {
            &self.wildcard_by_first_level
        }
    }

    /// Adds (or replaces, for the same link and filter) a subscription.
    pub fn subscribe(&self, link: &Arc<Link>, filter: &str, qos: Qos) {
        let (exact, key) = index_key(filter);
        let mut entry = self.bucket(exact).entry(key.into()).or_default();
        entry.retain(|s| !(s.link.id == link.id && &*s.filter == filter));
        entry.push(Subscriber {
            link: link.clone(),
            filter: filter.into(),
            qos,
        });
    }

    pub fn unsubscribe(&self, link: LinkId, filter: &str) {
        let (exact, key) = index_key(filter);
        let bucket = self.bucket(exact);
        bucket.remove_if_mut(key, |_, subscribers| {
            subscribers.retain(|s| !(s.link.id == link && &*s.filter == filter));
            subscribers.is_empty()
        });
    }

    /// Delivers `payload` on `topic` to every matching link except `exclude`, once per
    /// link at the highest granted QoS (capped at `qos`). Returns how many links got it.
    pub fn publish(
        &self,
        topic: &str,
        payload: bytes::Bytes,
        qos: Qos,
        exclude: Option<LinkId>,
    ) -> usize {
        let mut targets: Vec<(Arc<Link>, Qos)> = Vec::new();
        let mut add = |s: &Subscriber| {
            if Some(s.link.id) == exclude {
                return;
            }
            let granted = s.qos.min(qos);
            match targets.iter_mut().find(|(t, _)| t.id == s.link.id) {
                Some((_, q)) => *q = (*q).max(granted),
                None => targets.push((s.link.clone(), granted)),
            }
        };
        if let Some(subscribers) = self.exact.get(topic) {
            subscribers.iter().for_each(&mut add);
        }
        let first = topic.split('/').next().unwrap_or(topic);
        for key in [first, "+", "#"] {
            if let Some(subscribers) = self.wildcard_by_first_level.get(key) {
                subscribers
                    .iter()
                    .filter(|s| filter_matches(&s.filter, topic))
                    .for_each(&mut add);
            }
        }
        if targets.is_empty() {
            return 0;
        }
        let message = Arc::new(Published {
            topic: topic.to_string(),
            payload,
        });
        // A device waiting for approval receives only its own reply topic.
        let held_back = |link: &Link| !link.is_approved() && !topic.ends_with("/reply");
        let mut queued = 0;
        for (link, qos) in targets {
            if !link.identity.may_receive(topic) || held_back(&link) {
                continue;
            }
            let delivery = Delivery {
                message: message.clone(),
                qos,
            };
            match link.deliver(delivery) {
                Delivered::Queued => queued += 1,
                Delivered::Dropped => {
                    self.dropped.inc();
                }
                Delivered::Gone => {}
            }
        }
        queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::identity::Identity;
    use protocol::envelope::Platform;

    fn device(id: LinkId, user: &str) -> (Arc<Link>, tokio::sync::mpsc::Receiver<Delivery>) {
        let identity = Identity::Device {
            user: user.into(),
            device: "d".into(),
            platform: Platform::Web,
        };
        Link::new(id, identity, 16, true)
    }

    #[test]
    fn exact_and_wildcard_subscribers_get_one_copy_each() {
        let hub = Hub::new(Counter::default());
        let (a, mut a_rx) = device(1, "a");
        let (b, mut b_rx) = device(2, "b");
        hub.subscribe(&a, "u/a/inbox", Qos::AtLeastOnce);
        hub.subscribe(&a, "pub/#", Qos::AtMostOnce);
        hub.subscribe(&a, "pub/news", Qos::AtLeastOnce);
        hub.subscribe(&b, "pub/#", Qos::AtLeastOnce);

        assert_eq!(
            hub.publish("u/a/inbox", "x".into(), Qos::AtLeastOnce, None),
            1
        );
        assert_eq!(
            hub.publish("pub/news", "y".into(), Qos::AtLeastOnce, None),
            2
        );
        assert_eq!(
            hub.publish("pub/news", "z".into(), Qos::AtLeastOnce, Some(2)),
            1
        );

        let got: Vec<_> = std::iter::from_fn(|| a_rx.try_recv().ok()).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[1].qos, Qos::AtLeastOnce, "highest granted QoS wins");
        assert_eq!(std::iter::from_fn(|| b_rx.try_recv().ok()).count(), 1);
    }

    #[test]
    fn unsubscribe_stops_delivery_and_frees_the_bucket() {
        let hub = Hub::new(Counter::default());
        let (a, _rx) = device(1, "a");
        hub.subscribe(&a, "u/a/inbox", Qos::AtLeastOnce);
        hub.unsubscribe(1, "u/a/inbox");
        assert_eq!(
            hub.publish("u/a/inbox", "x".into(), Qos::AtLeastOnce, None),
            0
        );
        assert!(hub.exact.is_empty());
    }

    #[test]
    fn a_full_outbox_drops_qos0_and_closes_the_session_on_qos1() {
        let dropped = Counter::default();
        let hub = Hub::new(dropped.clone());
        let identity = Identity::Anonymous {
            client_id: "slow".into(),
        };
        let (slow, _rx) = Link::new(1, identity, 1, true);
        hub.subscribe(&slow, "t", Qos::AtLeastOnce);
        assert_eq!(hub.publish("t", "1".into(), Qos::AtMostOnce, None), 1);
        assert_eq!(hub.publish("t", "2".into(), Qos::AtMostOnce, None), 0);
        assert_eq!(dropped.get(), 1);
        let open = futures_util::FutureExt::now_or_never(slow.closed());
        assert!(
            open.is_none(),
            "a dropped QoS 0 message leaves the link open"
        );
        assert_eq!(hub.publish("t", "3".into(), Qos::AtLeastOnce, None), 0);
        let reason = futures_util::FutureExt::now_or_never(slow.closed()).expect("closed");
        assert_eq!(
            reason.kind,
            protocol::envelope::DisconnectReason::SlowConsumer
        );
    }
}
