//! What the gateway sends one MQTT client, and what it waits for the client to acknowledge:
//! QoS 1 and 2 deliveries in flight (no more than the client's Receive Maximum and our
//! `limits.max_inflight`), their packet ids, the QoS 2 release, topic aliases towards the client
//! and its Maximum Packet Size.

use super::codec::{Codec, PublishOut};
use crate::infra::latency_budget::{LatencyBudget, Stage};
use crate::live::link::{Delivery, Qos};
use crate::live::message::Published;
use crate::live::sessions::KeptDelivery;
use bytes::BytesMut;
use prometheus_client::metrics::counter::Counter;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

/// A QoS 1 or 2 delivery the client has not finished acknowledging.
struct InFlight {
    pkid: u16,
    delivery: Delivery,
    /// QoS 2: the PUBREC came and the PUBREL went; only the PUBCOMP is awaited.
    released: bool,
    /// When it was sent, for an entry just committed to a user's log: its acknowledgement ends
    /// the last stage of its durable path.
    sent_at: Option<Instant>,
}

/// What a delivery became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Sent; for QoS 1 and 2 its acknowledgement is awaited.
    Sent,
    /// Not sent: it expired, or it is larger than the client takes (counted).
    Skipped,
}

/// An entry of the user's log the client now holds (it acknowledged it, or its PUBREC came).
pub type Received = Option<u64>;

pub struct Outbound {
    codec: Codec,
    /// Most deliveries in flight at once.
    window: usize,
    inflight: VecDeque<InFlight>,
    next_pkid: u16,
    /// Topic aliases given to the client, by topic, up to the number it allows.
    aliases: HashMap<Arc<str>, u16>,
    alias_maximum: u16,
    sent: Counter,
    too_large: Counter,
    budget: LatencyBudget,
}

impl Outbound {
    pub fn new(
        codec: Codec,
        window: usize,
        alias_maximum: u16,
        sent: Counter,
        too_large: Counter,
        budget: LatencyBudget,
    ) -> Self {
        Self {
            codec,
            window: window.max(1),
            inflight: VecDeque::new(),
            next_pkid: 0,
            aliases: HashMap::new(),
            alias_maximum,
            sent,
            too_large,
            budget,
        }
    }

    /// Whether another QoS 1 or 2 delivery may go out now.
    pub fn has_room(&self) -> bool {
        self.inflight.len() < self.window
    }

    /// Whether `delivery` may go out now (QoS 0 always may).
    pub fn takes(&self, delivery: &Delivery) -> bool {
        delivery.qos == Qos::AtMostOnce || self.has_room()
    }

    /// Writes a PUBLISH for `delivery` into `out`.
    pub fn write(&mut self, delivery: Delivery, out: &mut BytesMut) -> Written {
        let now = Instant::now();
        if delivery.message.is_expired(now) {
            return Written::Skipped;
        }
        let pkid = match delivery.qos {
            Qos::AtMostOnce => 0,
            _ => self.allocate_pkid(),
        };
        let message = &delivery.message;
        let (topic, topic_alias, new_alias) = self.alias_for(&message.topic);
        let publish = PublishOut {
            topic,
            payload: message.payload.clone(),
            qos: delivery.qos,
            pkid,
            dup: false,
            retain: delivery.retain,
            properties: message.properties(),
            expiry_left: message.expiry_left(now),
            subscription_ids: delivery.subscription_ids.as_slice(),
            topic_alias,
        };
        if self.codec.publish(&publish, out).is_none() {
            self.too_large.inc();
            return Written::Skipped;
        }
        if let Some(alias) = new_alias {
            self.aliases.insert(message.topic.as_str().into(), alias);
        }
        self.sent.inc();
        if let Some(durable_at) = message.durable_at {
            self.budget.observe(Stage::delivered, durable_at, now);
        }
        if delivery.qos != Qos::AtMostOnce {
            let sent_at = message.durable_at.map(|_| now);
            self.inflight.push_back(InFlight {
                pkid,
                delivery,
                released: false,
                sent_at,
            });
        }
        Written::Sent
    }

    /// The topic to write and the alias to send with it: the alias alone for a topic the client
    /// knows by one, a new alias while the client takes more (the third value, kept once the
    /// PUBLISH is written), else the topic alone.
    fn alias_for<'a>(&self, topic: &'a str) -> (&'a str, Option<u16>, Option<u16>) {
        if let Some(&alias) = self.aliases.get(topic) {
            return ("", Some(alias), None);
        }
        let count = self.aliases.len() as u16;
        if count < self.alias_maximum {
            let alias = count + 1;
            return (topic, Some(alias), Some(alias));
        }
        (topic, None, None)
    }

    fn allocate_pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.wrapping_add(1).max(1);
            if !self.inflight.iter().any(|f| f.pkid == self.next_pkid) {
                return self.next_pkid;
            }
        }
    }

    /// Ends the delivery `pkid` (`released`: a QoS 2 one whose PUBCOMP came).
    fn take(&mut self, pkid: u16, released: bool) -> Option<InFlight> {
        let matches = |f: &InFlight| f.pkid == pkid && f.released == released;
        // Acknowledgements mostly come in the order of the sends.
        let done = match self.inflight.front().is_some_and(matches) {
            true => self.inflight.pop_front(),
            false => {
                let at = self.inflight.iter().position(matches)?;
                self.inflight.remove(at)
            }
        }?;
        if let Some(sent_at) = done.sent_at {
            (self.budget).observe(Stage::acknowledged, sent_at, Instant::now());
        }
        Some(done)
    }

    /// A PUBACK came: the QoS 1 delivery is done.
    pub fn acknowledged(&mut self, pkid: u16) -> Received {
        let done = self.take(pkid, false)?;
        (done.delivery.qos == Qos::AtLeastOnce)
            .then_some(done.delivery.message.seq)
            .flatten()
    }

    /// A PUBREC came: the client holds the QoS 2 delivery; the PUBREL goes out and its PUBCOMP
    /// is awaited. A v5 PUBREC may refuse it: then it is done too (`refused`).
    pub fn received(&mut self, pkid: u16, refused: bool, out: &mut BytesMut) -> Received {
        let at = self
            .inflight
            .iter()
            .position(|f| f.pkid == pkid && !f.released && f.delivery.qos == Qos::ExactlyOnce)?;
        let seq = self.inflight[at].delivery.message.seq;
        if refused {
            self.inflight.remove(at);
        } else {
            self.inflight[at].released = true;
            self.codec.pubrel(pkid, out);
        }
        seq
    }

    /// A PUBCOMP came: the QoS 2 delivery is done.
    pub fn completed(&mut self, pkid: u16) {
        self.take(pkid, true);
    }

    /// What is in flight, as a session keeps it when its client leaves.
    pub fn keep(&self) -> Vec<KeptDelivery> {
        self.inflight
            .iter()
            .map(|f| KeptDelivery {
                pkid: f.pkid,
                qos: f.delivery.qos.level(),
                released: f.released,
                message: f.delivery.message.keep(None),
                retain: f.delivery.retain,
                subscription_ids: f.delivery.subscription_ids.as_slice().to_vec(),
            })
            .collect()
    }

    /// Sends again what a session had in flight when its client left, under the same packet
    /// ids (MQTT 4.4): PUBLISH with DUP set, or PUBREL for a QoS 2 delivery the client had
    /// received. Returns the log entries among them.
    pub fn resend(&mut self, kept: Vec<KeptDelivery>, out: &mut BytesMut) -> Vec<u64> {
        let mut entries = Vec::new();
        let now = Instant::now();
        for kept in kept {
            let (message, _) = Published::unkeep(kept.message);
            let qos = Qos::from_level(kept.qos).unwrap_or(Qos::AtLeastOnce);
            if qos == Qos::AtMostOnce || self.inflight.iter().any(|f| f.pkid == kept.pkid) {
                continue;
            }
            entries.extend(message.seq);
            if kept.released {
                self.codec.pubrel(kept.pkid, out);
            } else {
                let publish = PublishOut {
                    topic: &message.topic,
                    payload: message.payload.clone(),
                    qos,
                    pkid: kept.pkid,
                    dup: true,
                    retain: kept.retain,
                    properties: message.properties(),
                    expiry_left: message.expiry_left(now),
                    subscription_ids: &kept.subscription_ids,
                    topic_alias: None,
                };
                if self.codec.publish(&publish, out).is_none() {
                    self.too_large.inc();
                    continue;
                }
                self.sent.inc();
            }
            self.inflight.push_back(InFlight {
                pkid: kept.pkid,
                delivery: Delivery {
                    message: Arc::new(message),
                    qos,
                    retain: kept.retain,
                    subscription_ids: kept.subscription_ids.into(),
                },
                released: kept.released,
                sent_at: None,
            });
        }
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::mqtt::codec::Version;

    fn outbound(window: usize, aliases: u16) -> Outbound {
        let codec = Codec {
            version: Version::V5,
            max_packet_size: 1 << 20,
            client_max_packet: Some(200),
        };
        Outbound::new(
            codec,
            window,
            aliases,
            Counter::default(),
            Counter::default(),
            LatencyBudget::default(),
        )
    }

    fn delivery(topic: &str, payload: &'static [u8], qos: Qos) -> Delivery {
        Delivery::of(Arc::new(Published::new(topic, payload.into())), qos)
    }

    fn read(out: &mut BytesMut) -> Vec<rumqttc::v5::mqttbytes::v5::Packet> {
        let mut packets = Vec::new();
        while !out.is_empty() {
            packets.push(rumqttc::v5::mqttbytes::v5::Packet::read(out, None).unwrap());
        }
        packets
    }

    #[test]
    fn the_window_bounds_what_is_in_flight_and_qos_2_is_released_then_completed() {
        let mut out = BytesMut::new();
        let mut outbound = outbound(2, 0);
        assert_eq!(
            outbound.write(delivery("t", b"1", Qos::AtLeastOnce), &mut out),
            Written::Sent
        );
        assert_eq!(
            outbound.write(delivery("t", b"2", Qos::ExactlyOnce), &mut out),
            Written::Sent
        );
        assert!(!outbound.has_room());
        assert!(outbound.takes(&delivery("t", b"3", Qos::AtMostOnce)));
        assert_eq!(outbound.acknowledged(1), None);
        assert!(outbound.has_room());
        out.clear();
        outbound.received(2, false, &mut out);
        assert!(matches!(
            read(&mut out)[..],
            [rumqttc::v5::mqttbytes::v5::Packet::PubRel(_)]
        ));
        assert_eq!(outbound.keep().len(), 1, "awaiting its PUBCOMP");
        outbound.completed(2);
        assert!(outbound.keep().is_empty());
    }

    #[test]
    fn topics_get_aliases_while_the_client_takes_them_and_big_messages_are_skipped() {
        use rumqttc::v5::mqttbytes::v5::Packet;
        let mut out = BytesMut::new();
        let mut outbound = outbound(10, 1);
        for payload in [&b"a"[..], b"b"] {
            outbound.write(delivery("TopicA", payload, Qos::AtMostOnce), &mut out);
        }
        outbound.write(delivery("TopicB", b"c", Qos::AtMostOnce), &mut out);
        let big = delivery("TopicB", &[0; 300], Qos::AtLeastOnce);
        assert_eq!(outbound.write(big, &mut out), Written::Skipped);
        assert!(
            outbound.keep().is_empty(),
            "a skipped message is not in flight"
        );
        let topics: Vec<_> = read(&mut out)
            .into_iter()
            .map(|p| match p {
                Packet::Publish(p) => (
                    String::from_utf8(p.topic.to_vec()).unwrap(),
                    p.properties.and_then(|p| p.topic_alias),
                ),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            topics,
            [
                ("TopicA".to_string(), Some(1)),
                (String::new(), Some(1)),
                ("TopicB".to_string(), None)
            ]
        );
    }

    #[test]
    fn what_was_in_flight_is_sent_again_with_dup_under_its_packet_id() {
        use rumqttc::v5::mqttbytes::v5::Packet;
        let mut out = BytesMut::new();
        let mut before = outbound(10, 0);
        let entry = Published {
            seq: Some(7),
            ..Published::new("u/a/inbox", "x".into())
        };
        before.write(Delivery::of(Arc::new(entry), Qos::AtLeastOnce), &mut out);
        before.write(delivery("t", b"2", Qos::ExactlyOnce), &mut out);
        before.received(2, false, &mut out);
        let kept = before.keep();
        out.clear();
        let mut after = outbound(10, 0);
        assert_eq!(after.resend(kept, &mut out), [7]);
        let packets = read(&mut out);
        assert!(matches!(&packets[0], Packet::Publish(p) if p.dup && p.pkid == 1));
        assert!(matches!(&packets[1], Packet::PubRel(r) if r.pkid == 2));
        assert_eq!(after.acknowledged(1), Some(7));
    }
}
