//! What WeChat posts back to the account's callback URL: the signature that proves it is
//! WeChat, and the `TEMPLATESENDJOBFINISH` / `MASSSENDJOBFINISH` events that say what finally
//! became of a template message or a mass send.

use quick_xml::events::Event;
use sha1::{Digest, Sha1};

/// WeChat's signature on a callback: `signature`, `timestamp` and `nonce` in the query.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct CallbackSignature {
    pub signature: Option<String>,
    pub timestamp: Option<String>,
    pub nonce: Option<String>,
}

impl CallbackSignature {
    /// SHA-1 over the token, `timestamp` and `nonce`, sorted and joined, as WeChat signs.
    pub fn is_valid(&self, token: &str) -> bool {
        let (Some(signature), Some(timestamp), Some(nonce)) =
            (&self.signature, &self.timestamp, &self.nonce)
        else {
            return false;
        };
        let mut parts = [token, timestamp.as_str(), nonce.as_str()];
        parts.sort_unstable();
        let digest = Sha1::digest(parts.concat().as_bytes());
        hex::encode(digest).eq_ignore_ascii_case(signature)
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
