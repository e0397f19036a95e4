//! Mass sends to a tag's followers (`message/mass/sendall`): text only, once per
//! `clientmsgid`, within the mass send quota.

use super::errors::{errmsg, error};
use super::{MassSend, WeChatState};
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Instant;

impl WeChatState {
    /// `message/mass/sendall`: text to a tag's followers (or to all), once per `clientmsgid`.
    pub(super) fn mass_send(&mut self, token: Option<&String>, body: &[u8]) -> Value {
        let now = Instant::now();
        if let Some(code) = self.injection.next_failure() {
            return error(code);
        }
        if let Err(reply) = self.check_token(token, now) {
            return reply;
        }
        let Ok(raw) = serde_json::from_slice::<Value>(body) else {
            return error(47001);
        };
        let Ok(request) = MassRequest::deserialize(&raw) else {
            return error(47001);
        };
        // The double takes text only; WeChat also takes mpnews, images, voice, video and cards.
        if request.msgtype != "text" {
            return error(40008);
        }
        let text = request.text.map(|t| t.content).unwrap_or_default();
        if text.trim().is_empty() || (!request.filter.is_to_all && request.filter.tag_id.is_none())
        {
            return error(47001);
        }
        let clientmsgid = request.clientmsgid.filter(|id| !id.is_empty());
        if let Some(id) = &clientmsgid {
            if id.len() > 64 {
                return error(45067);
            }
            if let Some(&(msg_id, first)) = self.mass_by_client.get(id) {
                if now.duration_since(first) < self.config.mass_retry_gap {
                    return error(45066);
                }
                return json!({"errcode": 45065, "errmsg": errmsg(45065), "msg_id": msg_id});
            }
        }
        if self.mass_sends.len() as u64 >= self.config.mass_quota {
            return error(45028);
        }
        let msg_id = self.next_msgid;
        self.next_msgid += 1;
        if let Some(id) = &clientmsgid {
            self.mass_by_client.insert(id.clone(), (msg_id, now));
        }
        self.mass_sends.push(MassSend {
            tag_id: request.filter.tag_id,
            is_to_all: request.filter.is_to_all,
            text,
            clientmsgid,
            msg_id,
            body: raw,
            at: now,
        });
        json!({"errcode": 0, "errmsg": "send job submission success", "msg_id": msg_id, "msg_data_id": msg_id + 1_000_000})
    }
}

#[derive(Deserialize)]
struct MassRequest {
    filter: MassFilter,
    #[serde(default)]
    msgtype: String,
    text: Option<MassText>,
    clientmsgid: Option<String>,
}

#[derive(Deserialize)]
struct MassFilter {
    #[serde(default)]
    is_to_all: bool,
    tag_id: Option<u64>,
}

#[derive(Deserialize)]
struct MassText {
    content: String,
}
