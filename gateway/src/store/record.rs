//! How a message is kept at rest, the same for every backend: its id in the clear (it names
//! nothing personal) and its content sealed with SM4-GCM, bound to its log and id.
//!
//! A record is `[flags and id length][id][sealed content]`: the first byte's low 7 bits are the
//! id's length, its high bit says the entry is an in-app notification (delivered on
//! `u/{user}/notify`) rather than a message (on the inbox). Records written before the flag
//! existed have it clear, which is what they were: messages.

use super::{EntryKind, NewMessage, Origin, StoreError};
use crate::infra::cipher::KeyRing;
use bytes::Bytes;
use protocol::envelope::InboxMessage;
use serde::Serialize;
use serde_json::Value;

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

/// The first byte's bit that marks an in-app notification.
const NOTIFICATION: u8 = 0x80;

/// Seals a message `content` for `log`'s log.
pub fn seal(
    keys: &KeyRing,
    log: &str,
    content: &Content<'_, impl Serialize + ?Sized>,
    origin: Option<Origin>,
) -> NewMessage {
    seal_entry(keys, log, content, origin, EntryKind::Message)
}

/// Seals `content` for `log`'s log as an entry of `kind`.
pub fn seal_entry(
    keys: &KeyRing,
    log: &str,
    content: &Content<'_, impl Serialize + ?Sized>,
    origin: Option<Origin>,
    kind: EntryKind,
) -> NewMessage {
    let plaintext = serde_json::to_vec(content).expect("message content serializes");
    let id = content.id.as_bytes();
    assert!(id.len() < NOTIFICATION as usize, "message ids are short");
    let flag = match kind {
        EntryKind::Message => 0,
        EntryKind::Notification => NOTIFICATION,
    };
    let mut record = Vec::with_capacity(1 + id.len() + plaintext.len() + 48);
    record.push(id.len() as u8 | flag);
    record.extend_from_slice(id);
    record.extend_from_slice(&keys.seal(&plaintext, &aad(log, content.id)));
    NewMessage {
        log: log.to_string(),
        plaintext: plaintext.into(),
        record,
        origin,
        kind,
    }
}

/// Reads a record of `log` back into the message it was, at `seq` and time `hlc`, and what kind
/// of entry it is.
pub fn open(
    keys: &KeyRing,
    log: &str,
    seq: u64,
    hlc: u64,
    record: &[u8],
) -> Result<(InboxMessage, EntryKind), StoreError> {
    let (_, kind, _) = split(record).ok_or_else(|| damaged(log, seq))?;
    let plaintext = unseal(keys, log, seq, record)?;
    let mut message: InboxMessage =
        serde_json::from_slice(&plaintext).map_err(|_| damaged(log, seq))?;
    message.seq = seq;
    message.ts = hlc_millis(hlc);
    Ok((message, kind))
}

/// A record of `log` at `seq` and time `hlc` as it was delivered live: what an append repeating
/// the one that stored it is answered with.
pub fn reopen_live(
    keys: &KeyRing,
    log: &str,
    seq: u64,
    hlc: u64,
    record: &[u8],
) -> Result<Bytes, StoreError> {
    Ok(live_payload(&unseal(keys, log, seq, record)?, seq, hlc))
}

/// The message id a record carries in the clear.
pub fn id_of(record: &[u8]) -> Option<&str> {
    split(record).map(|(id, _, _)| id)
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

/// The content of a record of `log` at `seq`, as it was sealed.
fn unseal(keys: &KeyRing, log: &str, seq: u64, record: &[u8]) -> Result<Vec<u8>, StoreError> {
    let (id, _, sealed) = split(record).ok_or_else(|| damaged(log, seq))?;
    keys.open(sealed, &aad(log, id))
        .map_err(|e| StoreError::Unreadable(format!("record {log}/{seq}: {e}")))
}

fn damaged(log: &str, seq: u64) -> StoreError {
    StoreError::Unreadable(format!("record {log}/{seq} is damaged"))
}

/// The message as delivered live: the sealed JSON object with its position in front.
pub fn live_payload(plaintext: &[u8], seq: u64, hlc: u64) -> Bytes {
    debug_assert!(plaintext.starts_with(b"{") && plaintext.len() > 2);
    let head = format!("{{\"seq\":{seq},\"ts\":{},", hlc_millis(hlc));
    let mut payload = Vec::with_capacity(head.len() + plaintext.len());
    payload.extend_from_slice(head.as_bytes());
    payload.extend_from_slice(&plaintext[1..]);
    payload.into()
}

/// Whether a message in `log`'s log is a direct message between `log` and `other`: what a
/// contact deletion removes.
pub fn between(message: &InboxMessage, log: &str, other: &str) -> bool {
    let from = message.from.as_deref();
    (from == Some(other) && message.to == log) || (from == Some(log) && message.to == other)
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
        let keys = KeyRing::new(&["k1:000102030405060708090a0b0c0d0e0f".into()]).unwrap();
        let body = json!({"text": "secret words"});
        let content = Content {
            id: "m1",
            from: Some("alice"),
            from_device: Some("phone"),
            to: "bob",
            body: &body,
        };
        let new = seal(&keys, "bob", &content, None);
        assert!(!String::from_utf8_lossy(&new.record).contains("secret"));
        let hlc = (1_700_000_000_000u64 << 16) | 3;
        let (opened, kind) = open(&keys, "bob", 7, hlc, &new.record).unwrap();
        assert_eq!(kind, EntryKind::Message);
        let live: InboxMessage =
            serde_json::from_slice(&live_payload(&new.plaintext, 7, hlc)).unwrap();
        assert_eq!(opened, live);
        assert_eq!((opened.seq, opened.ts), (7, 1_700_000_000_000));
        assert!(open(&keys, "alice", 7, hlc, &new.record).is_err());
        let reopened = reopen_live(&keys, "bob", 7, hlc, &new.record).unwrap();
        assert_eq!(reopened, live_payload(&new.plaintext, 7, hlc));
        assert_eq!(id_of(&new.record), Some("m1"));
        let notification = seal_entry(&keys, "bob", &content, None, EntryKind::Notification);
        let (_, kind) = open(&keys, "bob", 8, hlc, &notification.record).unwrap();
        assert_eq!(kind, EntryKind::Notification);
    }
}
