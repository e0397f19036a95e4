//! The WeChat channel: Official Account template messages and subscribe messages (RESEARCH §4),
//! mass sends to the followers under a tag (`message/mass/sendall`), and the
//! `TEMPLATESENDJOBFINISH` and `MASSSENDJOBFINISH` reports that WeChat posts back later.

use super::http;
use super::token_cache::{FreshToken, TokenCache, Tokens};
use super::{Channel, ChannelName, Content, Outcome, Push, Target};
use chrono::{DateTime, Utc};
use quick_xml::events::Event;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How long to hold back after 45011 (the per-minute limit): WeChat says "retry next minute".
const NEXT_MINUTE: Duration = Duration::from_secs(60);

pub struct WeChatChannel {
    base_url: String,
    /// The configured apps by `name`, the name targets refer to.
    apps: HashMap<String, broker_config::WeChatApp>,
    http: reqwest::Client,
    /// Keyed by appid: two configured names for one account share its token.
    tokens: Tokens,
}

impl WeChatChannel {
    /// `timeout` bounds each call to WeChat (`channels.request_timeout`).
    pub fn new(
        config: &broker_config::WeChat,
        timeout: Duration,
        cache: Arc<dyn TokenCache>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            apps: config
                .apps
                .iter()
                .map(|app| (app.name.clone(), app.clone()))
                .collect(),
            http: http::client(timeout)?,
            tokens: Tokens::new(ChannelName::WeChat, cache, config.refresh_early),
        })
    }

    /// `POST /cgi-bin/stable_token` without `force_refresh`: while the account's token is valid
    /// every caller gets that same token, so nodes refreshing at once do not invalidate each
    /// other's (as `/cgi-bin/token` would).
    async fn fetch_token(&self, app: &broker_config::WeChatApp) -> Result<FreshToken, Outcome> {
        let answer = http::post_json(
            self.http
                .post(format!("{}/cgi-bin/stable_token", self.base_url))
                .json(&json!({
                    "grant_type": "client_credential",
                    "appid": app.appid,
                    "secret": app.secret,
                    "force_refresh": false,
                })),
        )
        .await?;
        let errcode = http::code(&answer, "errcode", Some(0))?;
        if errcode != 0 {
            return Err(outcome(errcode, errmsg(&answer), SystemTime::now()));
        }
        let value = answer.get("access_token").and_then(Value::as_str);
        let lives = answer
            .get("expires_in")
            .and_then(|v| http::text(v)?.parse().ok());
        match (value, lives) {
            (Some(value), Some(seconds)) if !value.is_empty() => Ok(FreshToken {
                value: value.to_owned(),
                lives: Duration::from_secs(seconds),
            }),
            _ => Err(http::bad_reply(
                "a token answer without access_token or expires_in",
            )),
        }
    }
}

#[async_trait::async_trait]
impl Channel for WeChatChannel {
    fn name(&self) -> ChannelName {
        ChannelName::WeChat
    }

    async fn send(&self, push: &Push) -> Outcome {
        let (app, path, body) = match (&push.target, &push.content) {
            (
                Target::WeChat { app, openid },
                Content::WeChatTemplate {
                    template_id,
                    url,
                    fields,
                },
            ) => {
                let mut body = json!({
                    "touser": openid,
                    "template_id": template_id,
                    "client_msg_id": push.key,
                    "data": data(fields),
                });
                if let Some(url) = url {
                    body["url"] = json!(url);
                }
                (app, "template/send", body)
            }
            // Subscribe messages have no `client_msg_id`: a retry after a timeout may deliver
            // twice, which WeChat gives no way to prevent.
            (
                Target::WeChat { app, openid },
                Content::WeChatSubscribe {
                    template_id,
                    page,
                    fields,
                },
            ) => {
                let mut body = json!({
                    "touser": openid,
                    "template_id": template_id,
                    "miniprogram_state": "formal",
                    "lang": "zh_CN",
                    "data": data(fields),
                });
                if let Some(page) = page {
                    body["page"] = json!(page);
                }
                (app, "subscribe/send", body)
            }
            // `clientmsgid` makes a retry safe: WeChat answers a repeat with 45065 and the
            // first send's msg_id instead of broadcasting again.
            (Target::WeChatTag { app, tag_id }, Content::WeChatMassText { text }) => {
                let body = json!({
                    "filter": {"is_to_all": false, "tag_id": tag_id},
                    "text": {"content": text},
                    "msgtype": "text",
                    "clientmsgid": push.key,
                });
                (app, "mass/sendall", body)
            }
            _ => return misrouted("a target and content that do not go together"),
        };
        let Some(app) = self.apps.get(app) else {
            return Outcome::Failed {
                code: "unknown_app".into(),
                message: format!("no WeChat app named {app:?} is configured"),
            };
        };
        let url = format!("{}/cgi-bin/message/{path}", self.base_url);
        let mut refreshed = false;
        loop {
            let token = match self.tokens.get(&app.appid, || self.fetch_token(app)).await {
                Ok(token) => token,
                Err(outcome) => return outcome,
            };
            let request = self
                .http
                .post(&url)
                .query(&[("access_token", &token)])
                .json(&body);
            let answer = match http::post_json(request).await {
                Ok(answer) => answer,
                Err(outcome) => return outcome,
            };
            let errcode = match http::code(&answer, "errcode", Some(0)) {
                Ok(errcode) => errcode,
                Err(outcome) => return outcome,
            };
            // 45065: a mass send with this `clientmsgid` went out already (a retry whose first
            // answer was lost); the answer names it.
            if errcode == 0 || errcode == 45065 {
                let provider_id = match answer.get("msg_id").and_then(http::text) {
                    Some(mass) => Some(mass_send_id(&mass)),
                    None => answer.get("msgid").and_then(http::text),
                };
                return Outcome::Sent { provider_id };
            }
            if token_rejected(errcode) && !refreshed {
                refreshed = true;
                self.tokens.reject(&app.appid, &token).await;
                continue;
            }
            return outcome(errcode, errmsg(&answer), SystemTime::now());
        }
    }
}

/// A mass send's id as the gateway keeps it: apart from template messages' msgids, which are
/// another sequence.
fn mass_send_id(msg_id: &str) -> String {
    format!("mass:{msg_id}")
}

fn misrouted(what: &str) -> Outcome {
    Outcome::Failed {
        code: "misrouted".into(),
        message: format!("the WeChat channel was given {what}"),
    }
}

/// 40001 (invalid or replaced), 40014 (malformed), 42001 (expired).
fn token_rejected(errcode: i64) -> bool {
    matches!(errcode, 40001 | 40014 | 42001)
}

fn errmsg(answer: &Value) -> String {
    answer
        .get("errmsg")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// What an `errcode` other than 0 means for the push (RESEARCH §4's table).
fn outcome(errcode: i64, errmsg: String, now: SystemTime) -> Outcome {
    let code = errcode.to_string();
    match errcode {
        // System busy; or a token rejected again right after a refresh, which is WeChat's
        // token service catching up.
        -1 | 40001 | 40014 | 42001 => Outcome::Retry { code, after: None },
        // 45011: the per-minute limit; 45066: a mass send's `clientmsgid` repeated within a
        // minute of the first try.
        45011 | 45066 => Outcome::Retry {
            code,
            after: Some(NEXT_MINUTE),
        },
        // Hot retries would only burn through tomorrow's quota the moment it resets (45028: no
        // mass send left today).
        45009 | 45028 => Outcome::Park {
            code,
            until: next_quota_day(now),
        },
        // 40003 invalid openid, 40037 invalid template, 43004 the user unfollowed, 43101 the
        // user refused subscribe messages, 47003 values over the limits; and every code not in
        // the table (bad credentials, malformed request …), where a retry would fail the same.
        _ => Outcome::Failed {
            code,
            message: errmsg,
        },
    }
}

/// WeChat's daily quotas reset at midnight in China (UTC+8, no daylight saving).
pub fn next_quota_day(now: SystemTime) -> SystemTime {
    crate::notify::rate::next_provider_midnight(DateTime::<Utc>::from(now)).into()
}

/// The `data` object: each field as `{"value": …}`, its value cleaned and cut to its type's limit.
fn data(fields: &[(String, String)]) -> Value {
    let data: Map<String, Value> = fields
        .iter()
        .map(|(key, value)| (key.clone(), json!({ "value": field_value(key, value) })))
        .collect();
    Value::Object(data)
}

/// `value` without control characters (newlines included, which WeChat rejects) and cut to the
/// limit of the field's type, which is the key without its number (`thing3` is a `thing`).
/// Cut, not rejected: an over-long value fails the whole message with 47003, and a shortened
/// title is better than none. Limits count characters, so a cut never splits one.
pub fn field_value(key: &str, value: &str) -> String {
    let clean: String = value.chars().filter(|c| !c.is_control()).collect();
    let limit = match key.trim_end_matches(|c: char| c.is_ascii_digit()) {
        "thing" => 20,
        "number" | "letter" | "character_string" => 32,
        "phone_number" => 17,
        "car_number" => 8,
        // 20 when written in letters, 10 when in Chinese characters.
        "name" if clean.is_ascii() => 20,
        "name" => 10,
        "phrase" => 5,
        _ => return clean,
    };
    clean.chars().take(limit).collect()
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
    use chrono::TimeZone;

    #[test]
    fn values_are_cut_by_characters_to_their_type() {
        let long = "巧克力".repeat(10);
        assert_eq!(field_value("thing1", &long).chars().count(), 20);
        assert_eq!(field_value("thing12", "a\nb\tc\u{7}"), "abc");
        assert_eq!(field_value("phrase3", "已发货了吗"), "已发货了吗");
        assert_eq!(field_value("phrase3", "已经发货了吗"), "已经发货了");
        assert_eq!(field_value("name2", &"a".repeat(25)), "a".repeat(20));
        assert_eq!(field_value("name2", &"张".repeat(12)), "张".repeat(10));
        assert_eq!(field_value("car_number4", "粤B12345678"), "粤B123456");
        assert_eq!(field_value("phone_number1", &"1".repeat(20)).len(), 17);
        assert_eq!(field_value("character_string9", &"x".repeat(40)).len(), 32);
        assert_eq!(field_value("amount2", &"9".repeat(40)).len(), 40);
    }

    #[test]
    fn the_quota_day_turns_at_midnight_in_china() {
        let at =
            |y, m, d, h, min| SystemTime::from(Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap());
        // 15:59 UTC is 23:59 in China: a minute to go.
        assert_eq!(
            next_quota_day(at(2025, 3, 1, 15, 59)),
            at(2025, 3, 1, 16, 0)
        );
        // 16:00 UTC is midnight in China: the next one is a day away.
        assert_eq!(next_quota_day(at(2025, 3, 1, 16, 0)), at(2025, 3, 2, 16, 0));
        assert_eq!(
            next_quota_day(at(2025, 12, 31, 20, 0)),
            at(2026, 1, 1, 16, 0)
        );
    }

    #[test]
    fn every_code_of_the_table_has_its_action() {
        let now = SystemTime::now();
        for code in [-1, 40001, 40014, 42001] {
            assert!(matches!(
                outcome(code, String::new(), now),
                Outcome::Retry { after: None, .. }
            ));
        }
        assert_eq!(
            outcome(45011, String::new(), now),
            Outcome::Retry {
                code: "45011".into(),
                after: Some(NEXT_MINUTE)
            }
        );
        assert_eq!(
            outcome(45066, String::new(), now),
            Outcome::Retry {
                code: "45066".into(),
                after: Some(NEXT_MINUTE)
            }
        );
        for code in [45009, 45028] {
            assert!(
                matches!(outcome(code, String::new(), now), Outcome::Park { until, .. } if until > now)
            );
        }
        for code in [40003, 40037, 43004, 43101, 47003] {
            assert!(matches!(
                outcome(code, String::new(), now),
                Outcome::Failed { .. }
            ));
        }
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
