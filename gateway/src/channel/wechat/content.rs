//! How a notification becomes a WeChat push: a template or subscribe message to the user's
//! openid in the first configured app the user is bound in, or a mass send of its text to the
//! followers under a tag; field values cut to what WeChat accepts.

use crate::channel::{Content, Prepared, Push, Shaping, Target};
use broker_config::{WeChatAction, WeChatApp};
use serde_json::{json, Map, Value};

/// The push for `shaping` from `apps` (in configuration order), or why there is none.
pub(super) fn prepare(apps: &[WeChatApp], shaping: &Shaping<'_>) -> Result<Prepared, String> {
    let n = shaping.notification;
    let pace = |app: &WeChatApp| format!("wechat:{}", app.name);
    if shaping.rule.wechat == WeChatAction::MassSend {
        let app = apps.first().ok_or("no WeChat app configured")?;
        let tag_id = n.wechat_tag.ok_or("no wechat_tag to broadcast to")?;
        let text = [Some(&n.title), Some(&n.body), n.link.as_ref()]
            .into_iter()
            .flatten()
            .filter(|part| !part.trim().is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join("\n");
        return Ok(Prepared {
            push: Push {
                key: shaping.key.clone(),
                target: Target::WeChatTag {
                    app: app.name.clone(),
                    tag_id,
                },
                content: Content::WeChatMassText { text },
            },
            pace: pace(app),
            per_second: app.per_second,
            daily_quota: app.daily_quota,
        });
    }
    let (app, openid) = apps
        .iter()
        .find_map(|app| (shaping.bindings.wechat.get(&app.name)).map(|openid| (app, openid)))
        .ok_or("no WeChat binding for a configured app")?;
    let template_id = app
        .templates
        .get(&n.kind)
        .ok_or_else(|| format!("app {:?} has no template for {:?}", app.name, n.kind))?
        .clone();
    let mut fields = vec![
        ("thing1".to_string(), n.title.clone()),
        ("thing2".to_string(), n.body.clone()),
    ];
    if let Some(data) = n.data.as_object() {
        fields.extend(
            data.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string()))),
        );
    }
    let content = match shaping.rule.wechat {
        WeChatAction::Subscribe => Content::WeChatSubscribe {
            template_id,
            page: n.link.clone(),
            fields,
        },
        _ => Content::WeChatTemplate {
            template_id,
            url: n.link.clone(),
            fields,
        },
    };
    Ok(Prepared {
        push: Push {
            key: shaping.key.clone(),
            target: Target::WeChat {
                app: app.name.clone(),
                openid: openid.clone(),
            },
            content,
        },
        pace: pace(app),
        per_second: app.per_second,
        daily_quota: app.daily_quota,
    })
}

/// The `data` object: each field as `{"value": …}`, its value cleaned and cut to its type's limit.
pub(super) fn data(fields: &[(String, String)]) -> Value {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
