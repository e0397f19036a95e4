//! How a message is kept at rest, the same for every backend: its id in the clear (it names
//! nothing personal) and its content sealed with SM4-GCM under the log owner's data key (see
//! [`super::data_keys`]), bound to its log and id. Records from before data keys were sealed
//! under the configured keys themselves, and still open.
//!
//! A record is `[flags and id length][id][sealed content]`: the first byte's low 7 bits are the
//! id's length, its high bit says the entry is an in-app notification (delivered on
//! `u/{user}/notify`) rather than a message (on the inbox). Records written before the flag
//! existed have it clear, which is what they were: messages.

use super::data_keys::DataKeys;
use super::Sealed;
use super::{EntryKind, NewMessage, Origin, StoreError};
use crate::infra::cipher::{CipherError, KeyRing};
use crate::infra::data_key::{is_sealed_under_a_data_key, DataKey};
use bytes::Bytes;
use protocol::envelope::InboxMessage;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;

/// The content of a message, as sealed and as delivered (with `seq` and `ts` added). The body
/// is any JSON: a value handed in, or a typed one serialized without building a value first.
#[derive(Serialize)]
pub struct Content<'a, B: Serialize + ?Sized = Value> {
    pub id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_device: Option<&'a str>,
    pub to: &'a str,
    pub body: &'a B,
}

/// What opens the records of one log: its owner's data key, when the owner has one, and the
/// configured keys (for records sealed before data keys).
#[derive(Clone, Copy)]
pub struct Keys<'a> {
    pub ring: &'a KeyRing,
    pub data_key: Option<&'a DataKey>,
}

/// The first byte's bit that marks an in-app notification.
const NOTIFICATION: u8 = 0x80;

/// Seals a message `content` for `log`'s log (see [`seal_entry`]).
pub fn seal(
    keys: &DataKeys,
    log: &str,
    content: &Content<'_, impl Serialize + ?Sized>,
    origin: Option<Origin>,
) -> NewMessage {
    seal_entry(keys, log, content, origin, EntryKind::Message)
}

/// Seals `content` for `log`'s log as an entry of `kind`, under the log owner's data key when
/// it is held; else the store's writer seals it, in order, once it has the key.
pub fn seal_entry(
    keys: &DataKeys,
    log: &str,
    content: &Content<'_, impl Serialize + ?Sized>,
    origin: Option<Origin>,
    kind: EntryKind,
) -> NewMessage {
    let accepted_at = Instant::now();
    assert!(
        content.id.len() < NOTIFICATION as usize,
        "message ids are short"
    );
    let mut message = NewMessage {
        log: log.to_string(),
        id: content.id.to_string(),
        plaintext: serde_json::to_vec(content)
            .expect("message content serializes")
            .into(),
        sealed: None,
        origin,
        kind,
        accepted_at,
    };
    if let Some(key) = keys.held(log) {
        seal_under(&mut message, key);
    }
    message
}

/// Seals `message` under `key`, its log owner's data key (again, when it was sealed under a key
/// the owner no longer has).
pub fn seal_under(message: &mut NewMessage, key: Arc<DataKey>) {
    let flag = match message.kind {
        EntryKind::Message => 0,
        EntryKind::Notification => NOTIFICATION,
    };
    let id = message.id.as_bytes();
    let mut record = Vec::with_capacity(1 + id.len() + message.plaintext.len() + 48);
    record.push(id.len() as u8 | flag);
    record.extend_from_slice(id);
    record.extend_from_slice(&key.seal(&message.plaintext, &aad(&message.log, &message.id)));
    message.sealed = Some(Sealed { record, key });
}

/// An entry of a log as read back: who it is from and to, which is what readers filter by, and
/// the message as delivered: the sealed JSON with `seq` and `ts` in front, byte for byte what
/// the live path sent. A reader passes it on as it is, without parsing the body into a value
/// and writing it out again (a reconnecting device catches up on thousands of them).
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    pub seq: u64,
    pub kind: EntryKind,
    pub from: Option<String>,
    pub from_device: Option<String>,
    pub to: String,
    pub payload: Bytes,
}

impl LogEntry {
    /// The message, parsed: for readers that look inside it.
    pub fn message(&self) -> Result<InboxMessage, StoreError> {
        serde_json::from_slice(&self.payload).map_err(|_| self.unparsable())
    }

    /// Why an entry does not parse; named by its place alone, as an entry does not know its log
    /// (a message to `to` is in its sender's log too).
    fn unparsable(&self) -> StoreError {
        StoreError::Unreadable(format!(
            "log entry {} does not parse as a message",
            self.seq
        ))
    }

    /// The message as JSON to embed in a larger document (a sync page, an API answer).
    pub fn json(&self) -> Result<&RawValue, StoreError> {
        serde_json::from_slice(&self.payload).map_err(|_| self.unparsable())
    }
}

/// What readers filter a sealed message by. The id and the body are only checked to be there:
/// every entry read back is a message a reader can parse.
#[derive(Deserialize)]
struct Addressing {
    #[serde(rename = "id")]
    _id: IgnoredAny,
    from: Option<String>,
    from_device: Option<String>,
    to: String,
    #[serde(rename = "body")]
    _body: IgnoredAny,
}

/// Reads a record of `log` back into the entry it is at `seq` and time `hlc`; `None` for a
/// record sealed under a data key that was destroyed (a message that reached the log while its
/// owner was being deleted): reads leave it out, as the deletion would have.
pub fn open(
    keys: Keys<'_>,
    log: &str,
    seq: u64,
    hlc: u64,
    record: &[u8],
) -> Result<Option<LogEntry>, StoreError> {
    let (_, kind, _) = split(record).ok_or_else(|| damaged(log, seq))?;
    // The plaintext is opened straight into the payload, behind its `seq` and `ts`.
    let mut payload = payload_head(seq, hlc, record.len());
    let start = payload.len();
    if !unseal(keys, log, seq, record, &mut payload)? {
        return Ok(None);
    }
    let addressing: Addressing = match payload.get(start) {
        Some(b'{') => serde_json::from_slice(&payload[start..]).map_err(|_| damaged(log, seq))?,
        _ => return Err(damaged(log, seq)),
    };
    join_content(&mut payload, start);
    Ok(Some(LogEntry {
        seq,
        kind,
        from: addressing.from,
        from_device: addressing.from_device,
        to: addressing.to,
        payload: payload.into(),
    }))
}

/// A record of `log` at `seq` and time `hlc` as it was delivered live: what an append repeating
/// the one that stored it is answered with.
pub fn reopen_live(
    keys: Keys<'_>,
    log: &str,
    seq: u64,
    hlc: u64,
    record: &[u8],
) -> Result<Bytes, StoreError> {
    match open(keys, log, seq, hlc, record)? {
        Some(entry) => Ok(entry.payload),
        None => Err(StoreError::Unreadable(format!(
            "record {log}/{seq}: {}",
            CipherError::Shredded
        ))),
    }
}

/// A record's message id, the kind of entry it is, and its sealed content.
fn split(record: &[u8]) -> Option<(&str, EntryKind, &[u8])> {
    let (&first, rest) = record.split_first()?;
    let kind = match first & NOTIFICATION {
        0 => EntryKind::Message,
        _ => EntryKind::Notification,
    };
    let (id, sealed) = rest.split_at_checked(usize::from(first & !NOTIFICATION))?;
    Some((std::str::from_utf8(id).ok()?, kind, sealed))
}

/// Appends the content of a record of `log` at `seq`, as it was sealed, to `out`; false (and
/// nothing appended) when it was sealed under a data key that was destroyed.
fn unseal(
    keys: Keys<'_>,
    log: &str,
    seq: u64,
    record: &[u8],
    out: &mut Vec<u8>,
) -> Result<bool, StoreError> {
    let (id, _, sealed) = split(record).ok_or_else(|| damaged(log, seq))?;
    let aad = aad(log, id);
    let opened = match (is_sealed_under_a_data_key(sealed), keys.data_key) {
        (true, Some(key)) => key.open_into(sealed, &aad, out),
        (true, None) => Err(CipherError::Shredded),
        (false, _) => keys.ring.open_into(sealed, &aad, out),
    };
    match opened {
        Ok(()) => Ok(true),
        Err(CipherError::Shredded) => Ok(false),
        Err(e) => Err(StoreError::Unreadable(format!("record {log}/{seq}: {e}"))),
    }
}

fn damaged(log: &str, seq: u64) -> StoreError {
    StoreError::Unreadable(format!("record {log}/{seq} is damaged"))
}

/// The message as delivered live: the sealed JSON object with its position in front.
pub fn live_payload(plaintext: &[u8], seq: u64, hlc: u64) -> Bytes {
    let mut payload = payload_head(seq, hlc, plaintext.len());
    let start = payload.len();
    payload.extend_from_slice(plaintext);
    join_content(&mut payload, start);
    payload.into()
}

/// The start of a message as delivered, `{"seq":…,"ts":…`, with room for the `content` bytes
/// of the sealed JSON object that follows it (see [`join_content`]).
fn payload_head(seq: u64, hlc: u64, content: usize) -> Vec<u8> {
    use std::io::Write;
    let mut payload = Vec::with_capacity(40 + content);
    write!(payload, "{{\"seq\":{seq},\"ts\":{}", hlc_millis(hlc)).expect("writes to a Vec");
    payload
}

/// Joins the sealed JSON object at `payload[start..]` to the head before it: its opening brace
/// becomes the comma after `ts`.
fn join_content(payload: &mut [u8], start: usize) {
    debug_assert!(payload[start] == b'{' && payload.len() > start + 2);
    payload[start] = b',';
}

/// Whether an entry in `log`'s log is a direct message between `log` and `other`: what a
/// contact deletion removes.
pub fn between(entry: &LogEntry, log: &str, other: &str) -> bool {
    let from = entry.from.as_deref();
    (from == Some(other) && entry.to == log) || (from == Some(log) && entry.to == other)
}

/// Milliseconds since the Unix epoch of a hybrid logical clock time.
pub fn hlc_millis(hlc: u64) -> u64 {
    hlc >> 16
}

fn aad(log: &str, id: &str) -> Vec<u8> {
    [log.as_bytes(), b"\0", id.as_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_record_opens_to_the_message_delivered_live() {
        let ring = Arc::new(KeyRing::new(&["k1:000102030405060708090a0b0c0d0e0f".into()]).unwrap());
        let data_keys = DataKeys::new(ring.clone(), 10);
        let key = Arc::new(DataKey::generate());
        data_keys.hold("bob", key.clone());
        let keys = Keys {
            ring: &ring,
            data_key: Some(&key),
        };
        let body = json!({"text": "secret words"});
        let content = Content {
            id: "m1",
            from: Some("alice"),
            from_device: Some("phone"),
            to: "bob",
            body: &body,
        };
        let new = seal(&data_keys, "bob", &content, None);
        assert!(!String::from_utf8_lossy(new.record()).contains("secret"));
        let hlc = (1_700_000_000_000u64 << 16) | 3;
        let opened = open(keys, "bob", 7, hlc, new.record()).unwrap().unwrap();
        assert_eq!(opened.kind, EntryKind::Message);
        assert_eq!(opened.payload, live_payload(&new.plaintext, 7, hlc));
        assert_eq!(
            (opened.from.as_deref(), opened.from_device.as_deref()),
            (Some("alice"), Some("phone"))
        );
        let message = opened.message().unwrap();
        assert_eq!((message.seq, message.ts), (7, 1_700_000_000_000));
        assert_eq!((message.to.as_str(), &message.body), ("bob", &body));
        assert_eq!(opened.json().unwrap().get().as_bytes(), &opened.payload[..]);
        assert!(open(keys, "alice", 7, hlc, new.record()).is_err());
        let reopened = reopen_live(keys, "bob", 7, hlc, new.record()).unwrap();
        assert_eq!(reopened, live_payload(&new.plaintext, 7, hlc));
        let notification = seal_entry(&data_keys, "bob", &content, None, EntryKind::Notification);
        let opened = open(keys, "bob", 8, hlc, notification.record());
        assert_eq!(opened.unwrap().unwrap().kind, EntryKind::Notification);
        // Under bob's next data key (after bob was deleted), the record is gone; without a
        // data key, too.
        let next = DataKey::generate();
        let shredded = Keys {
            ring: &ring,
            data_key: Some(&next),
        };
        assert!(open(shredded, "bob", 7, hlc, new.record())
            .unwrap()
            .is_none());
        let keyless = Keys {
            ring: &ring,
            data_key: None,
        };
        assert!(open(keyless, "bob", 7, hlc, new.record())
            .unwrap()
            .is_none());
    }

    /// Records sealed under the configured keys, before data keys, still open.
    #[test]
    fn records_from_before_data_keys_open() {
        let ring = KeyRing::new(&["k1:000102030405060708090a0b0c0d0e0f".into()]).unwrap();
        let mut record = vec![2u8];
        record.extend_from_slice(b"m1");
        let plaintext = br#"{"id":"m1","to":"bob","body":1}"#;
        record.extend_from_slice(&ring.seal(plaintext, &aad("bob", "m1")));
        let keys = Keys {
            ring: &ring,
            data_key: None,
        };
        let entry = open(keys, "bob", 1, 0, &record).unwrap().unwrap();
        assert_eq!(entry.message().unwrap().body, json!(1));
        let garbled = LogEntry {
            payload: Bytes::from_static(b"{\"seq\":1,"),
            ..entry
        };
        assert!(matches!(garbled.message(), Err(StoreError::Unreadable(_))));
        assert!(garbled.json().is_err());
    }
}
