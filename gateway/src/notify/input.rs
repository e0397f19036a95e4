//! A notification as a backend hands it in, over HTTP or MQTT, before it is checked and given
//! an id.

use crate::infra::time::unix_millis;
use protocol::notification::{Notification, Priority};

/// Longest title, body, link or dedup key, in characters.
pub const MAX_TEXT: usize = 4096;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationInput {
    pub user: String,
    pub kind: String,
    pub title: String,
    pub body: String,
    #[serde(default)]
    pub data: serde_json::Value,
    #[serde(default)]
    pub priority: Priority,
    pub dedup_key: Option<String>,
    pub link: Option<String>,
    pub wechat_tag: Option<u64>,
}

impl NotificationInput {
    /// Checks it and gives it an id and a time.
    pub fn into_notification(self) -> Result<Notification, String> {
        if !protocol::topics::is_valid_id(&self.user) {
            return Err(format!("{:?} is not a valid user id", self.user));
        }
        let texts = [
            Some(&self.title),
            Some(&self.body),
            self.link.as_ref(),
            self.dedup_key.as_ref(),
        ];
        if texts.iter().flatten().any(|t| t.chars().count() > MAX_TEXT) {
            return Err(format!(
                "title, body, link and dedup_key hold at most {MAX_TEXT} characters"
            ));
        }
        Ok(Notification {
            id: uuid::Uuid::now_v7().to_string(),
            user: self.user,
            kind: self.kind,
            title: self.title,
            body: self.body,
            data: self.data,
            priority: self.priority,
            dedup_key: self.dedup_key,
            link: self.link,
            wechat_tag: self.wechat_tag,
            created_at: unix_millis(),
        })
    }
}
