//! How a notification becomes a 球球 push: to the user's bound devices (or alias), as a
//! notification, a pop-up with a badge, an aggregate ("3 new friend requests") or a silent
//! transmission, by its kind's rule.

use crate::channel::{Content, Prepared, Push, Shaping, Target};
use broker_config::{QiuQiu, QiuQiuAction};
use protocol::notification::Notification;

/// A push notification needs a body; a notification without one shows its title twice rather
/// than being refused.
fn text_or_title(n: &Notification) -> String {
    if n.body.trim().is_empty() {
        n.title.clone()
    } else {
        n.body.clone()
    }
}

/// The push for `shaping`, or why there is none (the user has no 球球 binding).
pub(super) fn prepare(config: &QiuQiu, shaping: &Shaping<'_>) -> Result<Prepared, String> {
    let (n, bindings) = (shaping.notification, shaping.bindings);
    let target = if !bindings.qiuqiu_devices.is_empty() {
        Target::QiuQiuDevices(bindings.qiuqiu_devices.clone())
    } else if let Some(alias) = &bindings.qiuqiu_alias {
        Target::QiuQiuAlias(alias.clone())
    } else {
        return Err("no 球球 binding".into());
    };
    let notification = |title: String, body: String, badge| Content::QiuQiuNotification {
        title,
        body,
        url: n.link.clone(),
        badge,
    };
    let count = shaping.count.max(1);
    let content = match shaping.rule.qiuqiu {
        QiuQiuAction::Silent => Content::QiuQiuTransmission {
            payload: serde_json::json!({"id": n.id, "kind": n.kind, "data": n.data}),
        },
        QiuQiuAction::Popup => notification(n.title.clone(), text_or_title(n), Some(1)),
        QiuQiuAction::Aggregate => notification(
            format!("{count} new {}", n.kind.replace('_', " ")),
            n.title.clone(),
            Some(count),
        ),
        _ => notification(n.title.clone(), text_or_title(n), None),
    };
    Ok(Prepared {
        push: Push {
            key: shaping.key.clone(),
            target,
            content,
        },
        pace: "qiuqiu".into(),
        per_second: config.per_second,
        daily_quota: config.daily_quota,
    })
}
