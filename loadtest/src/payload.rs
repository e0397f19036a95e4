//! The load test's message body and how it travels on each kind of target.
//!
//! Every message carries who sent it, its sequence number and its send time, so that a
//! subscriber alone can measure latency and detect lost, duplicated or reordered messages
//! without talking to the publisher. The body is padded so that what goes on the wire is the
//! size asked for, which keeps gateway and plain-broker runs comparable.

use protocol::envelope::{InboxMessage, SendRequest, SignalMessage};
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch: the wall clock is the only clock publisher and subscriber
/// tasks share in a form that can travel inside a message.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// How messages are wrapped on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// Published as a [`SendRequest`] on the device's `send` topic, delivered as an
    /// [`InboxMessage`] whose `body` is ours.
    Gateway,
    /// Published as a [`SendRequest`] on the device's `signal` topic, delivered as a
    /// [`SignalMessage`] whose `body` is ours.
    Signal,
    /// The body itself is the MQTT payload, as a plain broker passes it through untouched.
    Plain,
}

/// What a subscriber reads back out of a message; the padding is skipped, not allocated.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Stamp {
    /// The run that sent it, so leftovers of earlier runs are not mistaken for losses.
    pub run: String,
    /// Index of the sending publisher.
    pub p: u32,
    pub seq: u64,
    pub sent_ns: u64,
}

#[derive(Serialize)]
struct Body<'a> {
    run: &'a str,
    p: u32,
    seq: u64,
    sent_ns: u64,
    pad: &'a str,
}

impl Wire {
    /// The path a run took, for its report.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gateway => "messages",
            Self::Signal => "signals",
            Self::Plain => "plain",
        }
    }

    /// Reads the stamp out of a received MQTT payload.
    pub fn decode(self, payload: &[u8]) -> Result<Stamp, serde_json::Error> {
        match self {
            Self::Gateway => {
                let message: InboxMessage = serde_json::from_slice(payload)?;
                serde_json::from_value(message.body)
            }
            Self::Signal => Ok(serde_json::from_slice::<SignalMessage<Stamp>>(payload)?.body),
            Self::Plain => serde_json::from_slice(payload),
        }
    }
}

/// Builds one publisher's payloads, each `size` bytes long on the wire whenever `size` leaves
/// room for the fixed fields.
pub struct PayloadBuilder {
    wire: Wire,
    /// The recipient user, used only by the gateway's send envelope.
    to: String,
    run: String,
    publisher: u32,
    size: usize,
    /// Length of the payload with `seq` and `sent_ns` both 0 (one digit each) and no padding.
    base_len: usize,
    /// `size` bytes of padding, sliced to what each message needs.
    pad: String,
}

impl PayloadBuilder {
    pub fn new(wire: Wire, to: &str, run: &str, publisher: u32, size: usize) -> Self {
        let mut builder = Self {
            wire,
            to: to.to_owned(),
            run: run.to_owned(),
            publisher,
            size,
            base_len: 0,
            pad: "x".repeat(size),
        };
        builder.base_len = builder.encode(0, 0, "").len();
        builder
    }

    /// The payload for message `seq`, stamped with `sent_ns`.
    pub fn build(&self, seq: u64, sent_ns: u64) -> Vec<u8> {
        let unpadded = self.base_len - 2 + digits(seq) + digits(sent_ns);
        let pad_len = self.size.saturating_sub(unpadded);
        self.encode(seq, sent_ns, &self.pad[..pad_len])
    }

    fn encode(&self, seq: u64, sent_ns: u64, pad: &str) -> Vec<u8> {
        let body = Body {
            run: &self.run,
            p: self.publisher,
            seq,
            sent_ns,
            pad,
        };
        // Serializing plain strings and integers cannot fail.
        match self.wire {
            Wire::Gateway | Wire::Signal => serde_json::to_vec(&SendRequest {
                to: self.to.clone(),
                body: serde_json::to_value(body).expect("body serializes"),
                client_msg_id: None,
            }),
            Wire::Plain => serde_json::to_vec(&body),
        }
        .expect("payload serializes")
    }
}

/// Decimal digits of `n`, which is how long serde_json writes it.
fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_the_requested_size() {
        for wire in [Wire::Gateway, Wire::Signal, Wire::Plain] {
            for size in [100, 257, 4096] {
                let builder = PayloadBuilder::new(wire, "lt-s0", "r1a2", 7, size);
                for seq in [0, 9, 10, 99_999, 12_345_678_901] {
                    for sent_ns in [0, 5, now_ns()] {
                        let payload = builder.build(seq, sent_ns);
                        assert_eq!(payload.len(), size, "{wire:?} size {size} seq {seq}");
                    }
                }
            }
        }
    }

    #[test]
    fn small_sizes_drop_the_padding_only() {
        let builder = PayloadBuilder::new(Wire::Plain, "", "run", 0, 10);
        let payload = builder.build(3, 4);
        assert_eq!(
            payload,
            br#"{"run":"run","p":0,"seq":3,"sent_ns":4,"pad":""}"#.to_vec()
        );
    }

    #[test]
    fn plain_payload_round_trips() {
        let builder = PayloadBuilder::new(Wire::Plain, "", "run", 3, 100);
        let stamp = Wire::Plain.decode(&builder.build(42, 1_000)).unwrap();
        let expected = Stamp {
            run: "run".into(),
            p: 3,
            seq: 42,
            sent_ns: 1_000,
        };
        assert_eq!(stamp, expected);
    }

    #[test]
    fn gateway_delivery_is_decoded_from_the_inbox_envelope() {
        let builder = PayloadBuilder::new(Wire::Gateway, "lt-s1", "run", 2, 100);
        let sent: SendRequest = serde_json::from_slice(&builder.build(5, 77)).unwrap();
        assert_eq!(sent.to, "lt-s1");
        let delivered = serde_json::to_vec(&InboxMessage {
            seq: 1,
            id: "m1".into(),
            from: Some("lt-p2".into()),
            from_device: Some("d0".into()),
            to: sent.to,
            body: sent.body,
            ts: 1,
        })
        .unwrap();
        let stamp = Wire::Gateway.decode(&delivered).unwrap();
        assert_eq!((stamp.p, stamp.seq, stamp.sent_ns), (2, 5, 77));
    }

    #[test]
    fn gateway_signal_is_decoded_from_the_signal_envelope() {
        let builder = PayloadBuilder::new(Wire::Signal, "lt-s1", "run", 2, 100);
        let sent: SendRequest = serde_json::from_slice(&builder.build(5, 77)).unwrap();
        let delivered = serde_json::to_vec(&SignalMessage {
            from: Some("lt-p2".into()),
            from_device: Some("d0".into()),
            body: sent.body,
        })
        .unwrap();
        let stamp = Wire::Signal.decode(&delivered).unwrap();
        assert_eq!((stamp.p, stamp.seq, stamp.sent_ns), (2, 5, 77));
    }
}
