//! What one MQTT client sends the gateway and is not finished yet: QoS 1 and 2 publishes being
//! handled, QoS 2 publishes waiting for their PUBREL, counted against the Receive Maximum the
//! gateway announced, the last QoS 1 publishes answered (a client that did not get the answer
//! sends them again with DUP), and the topic aliases the client set.

use super::codec::{DisconnectCode, PublishIn, Version};
use std::collections::{HashMap, VecDeque};

/// How a QoS 2 publish from the client stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exactly {
    /// Being handled; its PUBREC goes out when it is.
    Handling,
    /// Taken and answered with PUBREC; its PUBREL is awaited.
    Received,
}

/// What to do with a publish from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Handle it.
    New,
    /// A publish sent again that was taken already (QoS 2 awaiting its release, or QoS 1 with
    /// DUP matching one just answered): answer it again, take it no more.
    Repeat,
    /// A QoS 2 publish sent again while the first is still being handled: its answer will come.
    Pending,
    /// A v5 client's QoS 1 publish under the packet id of its QoS 2 publish still in flight:
    /// the client's state and ours disagree (PUBACK 0x91).
    InUse,
}

/// Why the connection must end.
pub type Violation = (DisconnectCode, &'static str);

pub struct InboundState {
    version: Version,
    receive_maximum: usize,
    /// QoS 1 and 2 publishes being handled.
    unanswered: usize,
    exactly: HashMap<u16, Exactly>,
    /// The last QoS 1 publishes taken, by packet id and fingerprint, at most the Receive
    /// Maximum of them: the client may not have had their PUBACKs.
    answered: VecDeque<(u16, u64)>,
    /// Topic aliases the client set, by alias.
    aliases: HashMap<u16, String>,
    alias_maximum: u16,
}

impl InboundState {
    pub fn new(version: Version, receive_maximum: u16, alias_maximum: u16) -> Self {
        Self {
            version,
            receive_maximum: usize::from(receive_maximum.max(1)),
            unanswered: 0,
            exactly: HashMap::new(),
            answered: VecDeque::new(),
            aliases: HashMap::new(),
            alias_maximum,
        }
    }

    /// Whether reading waits: as many publishes as the Receive Maximum are being handled. A
    /// client that keeps to the Receive Maximum never meets this; a 3.1.1 client, which is not
    /// told one, simply waits.
    pub fn is_full(&self) -> bool {
        self.unanswered >= self.receive_maximum
    }

    /// Resolves the publish's topic from its alias (MQTT 5), or sets the alias.
    pub fn resolve_topic(&mut self, publish: &mut PublishIn) -> Result<(), Violation> {
        let Some(alias) = publish.topic_alias else {
            return Ok(());
        };
        if alias == 0 || alias > self.alias_maximum {
            return Err((
                DisconnectCode::TopicAliasInvalid,
                "topic alias 0 or above the Topic Alias Maximum",
            ));
        }
        if publish.topic.is_empty() {
            match self.aliases.get(&alias) {
                Some(topic) => publish.topic.clone_from(topic),
                None => {
                    return Err((
                        DisconnectCode::ProtocolError,
                        "a topic alias used before it was set",
                    ))
                }
            }
        } else {
            self.aliases.insert(alias, publish.topic.clone());
        }
        Ok(())
    }

    /// Counts a publish in; a v5 client past the Receive Maximum (publishes being handled and
    /// QoS 2 ones not yet released) is in breach of it. `fingerprint` tells a QoS 1 publish
    /// sent again (`dup`) from a new one under the same packet id.
    pub fn admit(
        &mut self,
        qos: u8,
        pkid: u16,
        dup: bool,
        fingerprint: u64,
    ) -> Result<Admission, Violation> {
        if qos == 1 && dup && self.answered.contains(&(pkid, fingerprint)) {
            return Ok(Admission::Repeat);
        }
        if qos == 1 && self.version == Version::V5 && self.exactly.contains_key(&pkid) {
            return Ok(Admission::InUse);
        }
        if qos == 2 {
            match self.exactly.get(&pkid) {
                Some(Exactly::Received) => return Ok(Admission::Repeat),
                Some(Exactly::Handling) => return Ok(Admission::Pending),
                None => {}
            }
        }
        if qos == 0 {
            return Ok(Admission::New);
        }
        let unreleased = self
            .exactly
            .values()
            .filter(|e| **e == Exactly::Received)
            .count();
        if self.version == Version::V5 && self.unanswered + unreleased >= self.receive_maximum {
            return Err((
                DisconnectCode::ReceiveMaximumExceeded,
                "more unacknowledged QoS 1 and 2 publishes than the Receive Maximum",
            ));
        }
        self.unanswered += 1;
        if qos == 2 {
            self.exactly.insert(pkid, Exactly::Handling);
        }
        Ok(Admission::New)
    }

    /// A publish was answered: a QoS 2 one taken now waits for its PUBREL, a QoS 1 one taken
    /// is remembered for a while.
    pub fn answered(&mut self, qos: u8, pkid: u16, taken: bool, fingerprint: u64) {
        if qos == 0 {
            return;
        }
        self.unanswered = self.unanswered.saturating_sub(1);
        if qos == 1 && taken && fingerprint != NOT_REMEMBERED {
            // An older entry under the same packet id may stay: it was taken too, so a DUP
            // matching it is as much a repeat.
            if self.answered.len() == self.receive_maximum {
                self.answered.pop_front();
            }
            self.answered.push_back((pkid, fingerprint));
        }
        if qos == 2 {
            if taken {
                self.exactly.insert(pkid, Exactly::Received);
            } else {
                self.exactly.remove(&pkid);
            }
        }
    }

    /// A PUBREL came; returns whether a publish waited for it.
    pub fn released(&mut self, pkid: u16) -> bool {
        match self.exactly.get(&pkid) {
            Some(Exactly::Received) => {
                self.exactly.remove(&pkid);
                true
            }
            _ => false,
        }
    }

    /// The QoS 2 publishes taken and not yet released, as a session keeps them.
    pub fn awaiting_release(&self) -> Vec<u16> {
        let mut pkids: Vec<u16> = (self.exactly.iter())
            .filter(|(_, e)| **e == Exactly::Received)
            .map(|(pkid, _)| *pkid)
            .collect();
        pkids.sort_unstable();
        pkids
    }

    /// The last QoS 1 publishes taken, as a session keeps them.
    pub fn recently_answered(&self) -> Vec<(u16, u64)> {
        self.answered.iter().copied().collect()
    }

    /// Takes up what a session kept: QoS 2 publishes waiting for their PUBREL, and the last
    /// QoS 1 publishes taken.
    pub fn resume(&mut self, awaiting_release: &[u16], answered: &[(u16, u64)]) {
        for &pkid in awaiting_release {
            self.exactly.insert(pkid, Exactly::Received);
        }
        self.answered
            .extend(answered.iter().take(self.receive_maximum));
    }
}

/// The fingerprint of a publish not remembered: a clean session's, which no reconnect sends
/// again (its client drops what it had in flight with the session).
pub const NOT_REMEMBERED: u64 = 0;

/// What tells a QoS 1 publish sent again from another under the same packet id: a hash of its
/// topic and payload. (std's SipHash with fixed keys: the same in every process of one build; a
/// mismatch after an upgrade only lets one DUP through as new.)
pub fn fingerprint(topic: &str, payload: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    topic.hash(&mut hasher);
    payload.hash(&mut hasher);
    hasher.finish().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos_2_is_taken_once_and_unreleased_ones_count_against_the_receive_maximum() {
        let mut state = InboundState::new(Version::V5, 2, 0);
        assert_eq!(state.admit(2, 7, false, 0), Ok(Admission::New));
        assert_eq!(state.admit(2, 7, true, 0), Ok(Admission::Pending));
        state.answered(2, 7, true, 0);
        assert_eq!(state.admit(2, 7, true, 0), Ok(Admission::Repeat));
        assert_eq!(
            state.admit(2, 7, false, 0),
            Ok(Admission::Repeat),
            "DUP or not"
        );
        assert_eq!(state.admit(1, 7, false, 0), Ok(Admission::InUse));
        assert_eq!(state.admit(1, 8, false, 0), Ok(Admission::New));
        assert!(!state.is_full(), "one publish is being handled");
        let breach = state.admit(2, 9, false, 0).unwrap_err();
        assert_eq!(breach.0, DisconnectCode::ReceiveMaximumExceeded);
        assert!(state.released(7));
        assert!(!state.released(7), "released once");
        state.answered(1, 8, true, 0);
        assert_eq!(state.admit(2, 9, false, 0), Ok(Admission::New));
    }

    #[test]
    fn a_qos_1_publish_sent_again_with_dup_is_taken_once() {
        let mut state = InboundState::new(Version::V311, 2, 0);
        let (a, b) = (fingerprint("t", b"a"), fingerprint("t", b"b"));
        assert_eq!(state.admit(1, 1, false, a), Ok(Admission::New));
        state.answered(1, 1, true, a);
        assert_eq!(state.admit(1, 1, true, a), Ok(Admission::Repeat));
        assert_eq!(
            state.admit(1, 1, true, b),
            Ok(Admission::New),
            "another message"
        );
        state.answered(1, 1, true, b);
        assert_eq!(
            state.admit(1, 1, false, b),
            Ok(Admission::New),
            "not sent again"
        );
        state.answered(1, 1, true, b);
        let mut resumed = InboundState::new(Version::V311, 2, 0);
        resumed.resume(&[], &state.recently_answered());
        assert_eq!(resumed.admit(1, 1, true, b), Ok(Admission::Repeat));
    }

    #[test]
    fn a_3_1_1_client_is_never_in_breach_it_waits() {
        let mut state = InboundState::new(Version::V311, 1, 0);
        assert_eq!(state.admit(1, 1, false, 0), Ok(Admission::New));
        assert!(state.is_full());
        assert_eq!(state.admit(1, 2, false, 0), Ok(Admission::New));
    }

    #[test]
    fn aliases_resolve_and_bad_ones_end_the_connection() {
        let mut state = InboundState::new(Version::V5, 10, 2);
        let mut publish = |topic: &str, alias: u16| {
            let mut p = PublishIn {
                topic: topic.into(),
                payload: Default::default(),
                qos: 0,
                pkid: 0,
                retain: false,
                dup: false,
                properties: Default::default(),
                expiry: None,
                topic_alias: Some(alias),
                has_subscription_ids: false,
            };
            state.resolve_topic(&mut p).map(|()| p.topic)
        };
        assert_eq!(publish("TopicA", 1), Ok("TopicA".to_string()));
        assert_eq!(publish("", 1), Ok("TopicA".to_string()));
        assert_eq!(publish("", 2).unwrap_err().0, DisconnectCode::ProtocolError);
        assert_eq!(
            publish("x", 0).unwrap_err().0,
            DisconnectCode::TopicAliasInvalid
        );
        assert_eq!(
            publish("x", 3).unwrap_err().0,
            DisconnectCode::TopicAliasInvalid
        );
    }
}
