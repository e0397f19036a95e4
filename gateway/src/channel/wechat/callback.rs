//! What WeChat posts back to the account's callback URL: the signature that proves it is
//! WeChat, and the `TEMPLATESENDJOBFINISH` / `MASSSENDJOBFINISH` events that say what finally
//! became of a template message or a mass send.

use super::safe_mode::SafeMode;
use quick_xml::events::Event;
use sha1::{Digest, Sha1};
use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// WeChat's signature on a callback: `signature`, `timestamp` and `nonce` in the query.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct CallbackSignature {
    pub signature: Option<String>,
    pub timestamp: Option<String>,
    pub nonce: Option<String>,
    /// Safe mode: `aes`, with `msg_signature` over the encrypted body.
    pub encrypt_type: Option<String>,
    pub msg_signature: Option<String>,
}

/// Longest nonce accepted: WeChat's are short numbers; a longer one is not WeChat's.
const MAX_NONCE: usize = 64;

/// WeChat's signature of a callback: SHA-1 over the token, `timestamp` and `nonce`, sorted and
/// joined, in lowercase hex.
pub fn signature(token: &str, timestamp: &str, nonce: &str) -> String {
    let mut parts = [token, timestamp, nonce];
    parts.sort_unstable();
    hex::encode(Sha1::digest(parts.concat().as_bytes()))
}

impl CallbackSignature {
    /// Whether the signature is WeChat's with `token`, compared in constant time.
    fn signed_with(&self, token: &str, timestamp: &str, nonce: &str) -> bool {
        let Some(signature) = &self.signature else {
            return false;
        };
        let digest = self::signature(token, timestamp, nonce);
        bool::from(
            digest
                .as_bytes()
                .ct_eq(signature.to_ascii_lowercase().as_bytes()),
        )
    }
}

/// Why a callback was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallbackRefusal {
    #[error("no WeChat callback_token is configured: callbacks are refused")]
    NotConfigured,
    #[error("missing or malformed WeChat signature, timestamp or nonce")]
    Unsigned,
    #[error("the callback's timestamp is outside channels.wechat.callback_window")]
    Stale,
    #[error("wrong WeChat signature")]
    BadSignature,
    #[error("this callback (timestamp and nonce) was already received")]
    Replayed,
    #[error("too many callbacks within channels.wechat.callback_window; try again later")]
    TooMany,
    #[error("safe mode is configured: the callback must be encrypted (encrypt_type=aes, msg_signature, Encrypt)")]
    NotEncrypted,
    #[error("the callback's Encrypt does not decrypt with channels.wechat.encoding_aes_key")]
    Undecryptable,
    #[error("the callback is for an app this gateway does not send as")]
    ForeignApp,
}

/// Checks WeChat's callbacks: signed with the account's token, timestamped within the window of
/// our clock, and each (timestamp, nonce) taken once, so a callback overheard cannot be replayed
/// to mark messages delivered again or flood the ledger.
pub struct CallbackGuard {
    token: String,
    window: Duration,
    seen: Mutex<SeenNonces>,
    /// When `channels.wechat.encoding_aes_key` is set: only encrypted callbacks are taken.
    safe_mode: Option<SafeMode>,
}

/// The (timestamp, nonce) pairs taken within the last two windows, oldest first. A pair must be
/// remembered as long as its timestamp is acceptable: at most a window past the time it came
/// plus the window it may have been early by.
struct SeenNonces {
    order: VecDeque<(u64, String)>,
    keys: HashSet<String>,
    max: usize,
}

impl CallbackGuard {
    pub fn new(token: &str, window: Duration, max_nonces: usize) -> Self {
        Self {
            token: token.to_owned(),
            window,
            seen: Mutex::new(SeenNonces {
                order: VecDeque::new(),
                keys: HashSet::new(),
                max: max_nonces,
            }),
            safe_mode: None,
        }
    }

    /// Takes only callbacks encrypted in WeChat's safe mode, with `safe_mode`.
    pub fn in_safe_mode(self, safe_mode: SafeMode) -> Self {
        Self {
            safe_mode: Some(safe_mode),
            ..self
        }
    }

    /// The callback's XML: `body` itself, or in safe mode what its `Encrypt` holds, once
    /// `msg_signature` is WeChat's over it. For a callback [`admit`](Self::admit)ted.
    pub fn open(
        &self,
        signed: &CallbackSignature,
        body: String,
    ) -> Result<String, CallbackRefusal> {
        let Some(safe_mode) = &self.safe_mode else {
            return Ok(body);
        };
        let encrypted = top_level_fields(&body)
            .and_then(|fields| fields.into_iter().find(|(name, _)| name == "Encrypt"))
            .map(|(_, encrypted)| encrypted);
        let (Some("aes"), Some(signature), Some(encrypted), Some(timestamp), Some(nonce)) = (
            signed.encrypt_type.as_deref(),
            signed.msg_signature.as_deref(),
            encrypted,
            signed.timestamp.as_deref(),
            signed.nonce.as_deref(),
        ) else {
            return Err(CallbackRefusal::NotEncrypted);
        };
        safe_mode.open(&self.token, (timestamp, nonce), signature, &encrypted)
    }

    /// Takes the callback signed by `signed` at `now` (Unix seconds), or says why not.
    pub fn admit(&self, signed: &CallbackSignature, now: u64) -> Result<(), CallbackRefusal> {
        let (Some(timestamp), Some(nonce)) = (&signed.timestamp, &signed.nonce) else {
            return Err(CallbackRefusal::Unsigned);
        };
        let Ok(at) = timestamp.parse::<u64>() else {
            return Err(CallbackRefusal::Unsigned);
        };
        if nonce.is_empty() || nonce.len() > MAX_NONCE {
            return Err(CallbackRefusal::Unsigned);
        }
        if at.abs_diff(now) > self.window.as_secs() {
            return Err(CallbackRefusal::Stale);
        }
        if !signed.signed_with(&self.token, timestamp, nonce) {
            return Err(CallbackRefusal::BadSignature);
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let remembered_for = 2 * self.window.as_secs();
        while seen
            .order
            .front()
            .is_some_and(|(came, _)| came + remembered_for < now)
        {
            if let Some((_, key)) = seen.order.pop_front() {
                seen.keys.remove(&key);
            }
        }
        let key = format!("{at}:{nonce}");
        if seen.keys.contains(&key) {
            return Err(CallbackRefusal::Replayed);
        }
        if seen.keys.len() >= seen.max {
            return Err(CallbackRefusal::TooMany);
        }
        seen.keys.insert(key.clone());
        seen.order.push_back((now, key));
        Ok(())
    }
}

/// A mass send's id as the gateway keeps it: apart from template messages' msgids, which are
/// another sequence.
pub(super) fn mass_send_id(msg_id: &str) -> String {
    format!("mass:{msg_id}")
}

/// A `TEMPLATESENDJOBFINISH` or `MASSSENDJOBFINISH` event: what finally became of a template
/// message or a mass send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFinish {
    /// The message id the send was answered with, as [`Outcome::Sent`]'s `provider_id` has it.
    pub msgid: String,
    pub status: JobStatus,
    /// A mass send's counts of followers.
    pub reach: Option<Reach>,
}

/// How many followers a mass send reached: `total` under the tag, `sent` received it, `errors`
/// did not (WeChat filters some out before sending, e.g. those over their monthly four).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    pub total: u64,
    pub sent: u64,
    pub errors: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobStatus {
    /// `success`, or a mass send's `send success`
    Delivered,
    /// `failed:user block`: the user blocked the account's messages.
    UserBlock,
    /// `failed: system failed`
    SystemFailed,
    /// Any other status, as sent (a mass send's `send fail`, or `err(20001)` when its content
    /// was refused).
    Other(String),
}

/// Reads a callback body; `None` unless it is a `TEMPLATESENDJOBFINISH` or `MASSSENDJOBFINISH`
/// event with a `MsgID`. The callback URL receives the account's other events too, which are
/// not this function's. Statuses are compared without case and spaces, as WeChat's spacing
/// varies.
pub fn parse_job_finish(xml: &str) -> Option<JobFinish> {
    let fields = top_level_fields(xml)?;
    let field = |name: &str| {
        fields
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.trim())
    };
    let event = field("Event")?;
    let mass = event.eq_ignore_ascii_case("MASSSENDJOBFINISH");
    if !mass && !event.eq_ignore_ascii_case("TEMPLATESENDJOBFINISH") {
        return None;
    }
    let msgid = field("MsgID").filter(|id| !id.is_empty())?;
    let msgid = if mass {
        mass_send_id(msgid)
    } else {
        msgid.to_owned()
    };
    let status = field("Status").unwrap_or_default();
    let normalized: String = status
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    let status = match normalized.as_str() {
        "success" | "sendsuccess" => JobStatus::Delivered,
        "failed:userblock" => JobStatus::UserBlock,
        "failed:systemfailed" => JobStatus::SystemFailed,
        _ => JobStatus::Other(status.to_owned()),
    };
    let count = |name: &str| field(name).and_then(|n| n.parse().ok());
    let reach = mass.then(|| Reach {
        total: count("TotalCount").unwrap_or(0),
        sent: count("SentCount").unwrap_or(0),
        errors: count("ErrorCount").unwrap_or(0),
    });
    Some(JobFinish {
        msgid,
        status,
        reach,
    })
}

/// The text of each child of the root element (`<xml><MsgID>1</MsgID>…</xml>`), CDATA and
/// escapes resolved; `None` for a body that is not well-formed XML.
fn top_level_fields(xml: &str) -> Option<Vec<(String, String)>> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut depth = 0usize;
    loop {
        let event = reader.read_event().ok()?;
        let text = match event {
            Event::Start(start) => {
                depth += 1;
                if depth == 2 {
                    let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                    fields.push((name, String::new()));
                }
                continue;
            }
            Event::End(_) => {
                depth = depth.checked_sub(1)?;
                continue;
            }
            // An unclosed element is a cut body.
            Event::Eof => return (depth == 0).then_some(fields),
            Event::Text(text) => text.xml_content().ok()?.into_owned(),
            Event::CData(cdata) => cdata.xml_content().ok()?.into_owned(),
            Event::GeneralRef(reference) => match reference.resolve_char_ref().ok()? {
                Some(c) => c.to_string(),
                None => {
                    let entity = format!("&{};", reference.decode().ok()?);
                    quick_xml::escape::unescape(&entity).ok()?.into_owned()
                }
            },
            _ => continue,
        };
        if depth == 2 {
            if let Some((_, value)) = fields.last_mut() {
                value.push_str(&text);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn signed(token: &str, timestamp: u64, nonce: &str) -> CallbackSignature {
        let signature = signature(token, &timestamp.to_string(), nonce);
        CallbackSignature {
            signature: Some(signature.to_uppercase()),
            timestamp: Some(timestamp.to_string()),
            nonce: Some(nonce.to_owned()),
            ..CallbackSignature::default()
        }
    }

    fn guard(max_nonces: usize) -> CallbackGuard {
        CallbackGuard::new("tok3n", Duration::from_secs(300), max_nonces)
    }

    #[test]
    fn a_signed_fresh_callback_is_taken_once() {
        let guard = guard(10);
        assert_eq!(guard.admit(&signed("tok3n", NOW - 10, "1"), NOW), Ok(()));
        assert_eq!(
            guard.admit(&signed("tok3n", NOW - 10, "1"), NOW + 5),
            Err(CallbackRefusal::Replayed)
        );
        assert_eq!(guard.admit(&signed("tok3n", NOW - 10, "2"), NOW), Ok(()));
    }

    #[test]
    fn unsigned_stale_and_forged_callbacks_are_refused() {
        let guard = guard(10);
        let mut unsigned = signed("tok3n", NOW, "1");
        unsigned.nonce = None;
        assert_eq!(guard.admit(&unsigned, NOW), Err(CallbackRefusal::Unsigned));
        assert_eq!(
            guard.admit(&signed("tok3n", NOW, &"9".repeat(65)), NOW),
            Err(CallbackRefusal::Unsigned)
        );
        assert_eq!(
            guard.admit(&signed("tok3n", NOW - 301, "1"), NOW),
            Err(CallbackRefusal::Stale)
        );
        assert_eq!(
            guard.admit(&signed("tok3n", NOW + 301, "1"), NOW),
            Err(CallbackRefusal::Stale)
        );
        assert_eq!(
            guard.admit(&signed("other", NOW, "1"), NOW),
            Err(CallbackRefusal::BadSignature)
        );
    }

    #[test]
    fn nonces_are_bounded_and_forgotten_after_two_windows() {
        let guard = guard(2);
        assert_eq!(guard.admit(&signed("tok3n", NOW, "1"), NOW), Ok(()));
        assert_eq!(guard.admit(&signed("tok3n", NOW, "2"), NOW), Ok(()));
        assert_eq!(
            guard.admit(&signed("tok3n", NOW, "3"), NOW),
            Err(CallbackRefusal::TooMany)
        );
        let later = NOW + 601;
        assert_eq!(guard.admit(&signed("tok3n", later, "3"), later), Ok(()));
        assert_eq!(guard.seen.lock().unwrap().keys.len(), 1);
    }

    #[test]
    fn a_mass_send_report_carries_its_reach() {
        let report = |status: &str| {
            format!(
                "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oX]]></FromUserName>\
                 <CreateTime>1700000000</CreateTime><MsgType><![CDATA[event]]></MsgType>\
                 <Event><![CDATA[MASSSENDJOBFINISH]]></Event><MsgID>1000001625</MsgID>\
                 <Status><![CDATA[{status}]]></Status><TotalCount>120</TotalCount>\
                 <FilterCount>119</FilterCount><SentCount>117</SentCount><ErrorCount>2</ErrorCount></xml>"
            )
        };
        let done = parse_job_finish(&report("send success")).unwrap();
        assert_eq!(
            done,
            JobFinish {
                msgid: "mass:1000001625".into(),
                status: JobStatus::Delivered,
                reach: Some(Reach {
                    total: 120,
                    sent: 117,
                    errors: 2
                }),
            }
        );
        let refused = parse_job_finish(&report("err(20001)")).unwrap();
        assert_eq!(refused.status, JobStatus::Other("err(20001)".into()));
        let template = "<xml><Event>TEMPLATESENDJOBFINISH</Event><MsgID>7</MsgID><Status>success</Status></xml>";
        assert_eq!(parse_job_finish(template).unwrap().reach, None);
    }

    #[test]
    fn other_events_and_broken_xml_are_not_job_reports() {
        let subscribe = "<xml><Event><![CDATA[subscribe]]></Event><MsgID>1</MsgID></xml>";
        assert_eq!(parse_job_finish(subscribe), None);
        assert_eq!(parse_job_finish("<xml><Event>TEMPLATESENDJOBFINISH"), None);
        let escaped = "<xml><Event>TEMPLATESENDJOBFINISH</Event><MsgID>7</MsgID>\
                       <Status>failed:&#32;odd &amp; new</Status></xml>";
        assert_eq!(
            parse_job_finish(escaped).map(|job| job.status),
            Some(JobStatus::Other("failed: odd & new".into()))
        );
    }
}
