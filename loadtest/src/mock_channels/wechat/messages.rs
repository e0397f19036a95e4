//! Template and subscribe message sends, with the provider's rules the channel depends on:
//! the checks in WeChat's order, once-only `client_msg_id`, the daily quota and the subscribe
//! value limits.

use super::errors::{error, error_with};
use super::{SendKind, SentMessage, WeChatState};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::time::Instant;

impl WeChatState {
    fn over_quota(&self, kind: SendKind) -> bool {
        self.quota_used.get(&kind).copied().unwrap_or(0) >= self.config.daily_quota
    }

    /// What both kinds of send check first, in WeChat's order: an injected failure, the token,
    /// the body, the openid and the template. Returns the request and the body as JSON, or the
    /// error answer.
    fn accept_send<R: Addressed>(
        &mut self,
        token: Option<&String>,
        body: &[u8],
        now: Instant,
    ) -> Result<(R, Value), Value> {
        if let Some(code) = self.injection.next_failure() {
            return Err(error(code));
        }
        self.check_token(token, now)?;
        let raw = serde_json::from_slice::<Value>(body).map_err(|_| error(47001))?;
        let request = R::deserialize(&raw).map_err(|_| error(47001))?;
        if !valid_openid(request.touser()) {
            return Err(error(40003));
        }
        if !self.config.templates.contains(request.template_id()) {
            return Err(error(40037));
        }
        Ok((request, raw))
    }

    pub(super) fn template(&mut self, token: Option<&String>, body: &[u8]) -> Value {
        let now = Instant::now();
        let (request, raw) = match self.accept_send::<TemplateRequest>(token, body, now) {
            Ok(accepted) => accepted,
            Err(reply) => return reply,
        };
        if !self.config.followers.contains(&request.touser) {
            return error(43004);
        }
        let client_msg_id = request.client_msg_id.filter(|id| !id.is_empty());
        if let Some(id) = &client_msg_id {
            let key = (request.touser.clone(), id.clone());
            if let Some((msgid, at)) = self.recent.get(&key) {
                if now.duration_since(*at) < self.config.dedup_window {
                    return json!({"errcode": 0, "errmsg": "ok", "msgid": msgid});
                }
            }
        }
        if self.over_quota(SendKind::Template) {
            return error(45009);
        }
        let msgid = self.next_msgid;
        self.next_msgid += 1;
        *self.quota_used.entry(SendKind::Template).or_default() += 1;
        if let Some(id) = &client_msg_id {
            self.recent
                .insert((request.touser.clone(), id.clone()), (msgid, now));
        }
        self.sends.push(SentMessage {
            kind: SendKind::Template,
            touser: request.touser,
            template_id: request.template_id,
            client_msg_id,
            data: raw.get("data").cloned().unwrap_or(Value::Null),
            body: raw,
            msgid: Some(msgid),
            at: now,
        });
        json!({"errcode": 0, "errmsg": "ok", "msgid": msgid})
    }

    pub(super) fn subscribe(&mut self, token: Option<&String>, body: &[u8]) -> Value {
        let now = Instant::now();
        let (request, raw) = match self.accept_send::<SubscribeRequest>(token, body, now) {
            Ok(accepted) => accepted,
            Err(reply) => return reply,
        };
        if self.config.refused.contains(&request.touser) {
            return error(43101);
        }
        if let Some(field) = invalid_subscribe_field(&request.data) {
            return error_with(
                47003,
                &format!("argument invalid! data.{field}.value invalid"),
            );
        }
        if self.over_quota(SendKind::Subscribe) {
            return error(45009);
        }
        *self.quota_used.entry(SendKind::Subscribe).or_default() += 1;
        self.sends.push(SentMessage {
            kind: SendKind::Subscribe,
            touser: request.touser,
            template_id: request.template_id,
            client_msg_id: None,
            data: Value::Object(request.data),
            body: raw,
            msgid: None,
            at: now,
        });
        json!({"errcode": 0, "errmsg": "ok"})
    }
}

#[derive(Deserialize)]
struct TemplateRequest {
    #[serde(default)]
    touser: String,
    #[serde(default)]
    template_id: String,
    client_msg_id: Option<String>,
}

#[derive(Deserialize)]
struct SubscribeRequest {
    #[serde(default)]
    touser: String,
    #[serde(default)]
    template_id: String,
    #[serde(default)]
    data: Map<String, Value>,
}

/// Who a send is for, which both kinds check alike.
trait Addressed: serde::de::DeserializeOwned {
    fn touser(&self) -> &str;
    fn template_id(&self) -> &str;
}

impl Addressed for TemplateRequest {
    fn touser(&self) -> &str {
        &self.touser
    }

    fn template_id(&self) -> &str {
        &self.template_id
    }
}

impl Addressed for SubscribeRequest {
    fn touser(&self) -> &str {
        &self.touser
    }

    fn template_id(&self) -> &str {
        &self.template_id
    }
}

/// Real openids are 28 characters of `[A-Za-z0-9_-]`; the double only insists on the alphabet.
fn valid_openid(openid: &str) -> bool {
    !openid.is_empty()
        && openid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The first `data` field whose value breaks WeChat's subscribe-message limits, by the field's
/// type (its name without the trailing number: `thing1` is a `thing`).
fn invalid_subscribe_field(data: &Map<String, Value>) -> Option<&str> {
    data.iter()
        .find(|(key, field)| {
            field
                .get("value")
                .and_then(Value::as_str)
                .is_none_or(|value| !subscribe_value_ok(key, value))
        })
        .map(|(key, _)| key.as_str())
}

/// Whether `value` fits the limits of the field named `key` (RESEARCH §4).
pub fn subscribe_value_ok(key: &str, value: &str) -> bool {
    if value.chars().any(char::is_control) {
        return false;
    }
    let kind = key.trim_end_matches(|c: char| c.is_ascii_digit());
    let max = match kind {
        "thing" => 20,
        "number" | "letter" | "character_string" => 32,
        "phone_number" => 17,
        "car_number" => 8,
        // 10 Chinese characters, or 20 when the name is written in letters only.
        "name" if value.is_ascii() => 20,
        "name" => 10,
        "phrase" => 5,
        _ => usize::MAX,
    };
    value.chars().count() <= max
}
