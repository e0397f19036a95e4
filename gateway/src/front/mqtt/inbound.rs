//! What one MQTT client sends the gateway and is not finished yet: QoS 1 and 2 publishes being
//! handled, QoS 2 publishes waiting for their PUBREL, counted against the Receive Maximum the
//! gateway announced, and the topic aliases the client set.

use super::codec::{DisconnectCode, PublishIn, Version};
use std::collections::HashMap;

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
    /// A QoS 2 publish sent again that was taken already: answer PUBREC again, take it no more.
    Repeat,
    /// A QoS 2 publish sent again while the first is still being handled: its answer will come.
    Pending,
}

/// Why the connection must end.
pub type Violation = (DisconnectCode, &'static str);

pub struct InboundState {
    version: Version,
    receive_maximum: usize,
    /// QoS 1 and 2 publishes being handled.
    unanswered: usize,
    exactly: HashMap<u16, Exactly>,
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
    /// QoS 2 ones not yet released) is in breach of it.
    pub fn admit(&mut self, qos: u8, pkid: u16) -> Result<Admission, Violation> {
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

    /// A publish was answered: a QoS 2 one taken now waits for its PUBREL.
    pub fn answered(&mut self, qos: u8, pkid: u16, taken: bool) {
        if qos == 0 {
            return;
        }
        self.unanswered = self.unanswered.saturating_sub(1);
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

    /// Takes up the QoS 2 publishes a session kept waiting for their PUBREL.
    pub fn resume(&mut self, awaiting_release: &[u16]) {
        for &pkid in awaiting_release {
            self.exactly.insert(pkid, Exactly::Received);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos_2_is_taken_once_and_unreleased_ones_count_against_the_receive_maximum() {
        let mut state = InboundState::new(Version::V5, 2, 0);
        assert_eq!(state.admit(2, 7), Ok(Admission::New));
        assert_eq!(state.admit(2, 7), Ok(Admission::Pending));
        state.answered(2, 7, true);
        assert_eq!(state.admit(2, 7), Ok(Admission::Repeat));
        assert_eq!(state.admit(1, 8), Ok(Admission::New));
        assert!(!state.is_full(), "one publish is being handled");
        let breach = state.admit(2, 9).unwrap_err();
        assert_eq!(breach.0, DisconnectCode::ReceiveMaximumExceeded);
        assert!(state.released(7));
        assert!(!state.released(7), "released once");
        state.answered(1, 8, true);
        assert_eq!(state.admit(2, 9), Ok(Admission::New));
    }

    #[test]
    fn a_3_1_1_client_is_never_in_breach_it_waits() {
        let mut state = InboundState::new(Version::V311, 1, 0);
        assert_eq!(state.admit(1, 1), Ok(Admission::New));
        assert!(state.is_full());
        assert_eq!(state.admit(1, 2), Ok(Admission::New));
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
