//! What the 球球 push provider's codes mean for a push (RESEARCH §5).

use crate::channel::Outcome;
use serde_json::Value;
use std::time::Duration;

/// How long to hold back after 10003 / 10005, the provider's per-minute limits.
const NEXT_MINUTE: Duration = Duration::from_secs(60);

/// Token missing, wrong or expired.
pub(super) const TOKEN_REJECTED: i64 = 10001;

/// What a `code` other than 0 means for the push (RESEARCH §5).
pub(super) fn outcome(code: i64, answer: &Value) -> Outcome {
    let message = answer
        .get("msg")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let code_text = code.to_string();
    match code {
        // The service is starting; or the token was rejected again right after a refresh.
        2 | TOKEN_REJECTED => Outcome::Retry {
            code: code_text,
            after: None,
        },
        10003 | 10005 => Outcome::Retry {
            code: code_text,
            after: Some(NEXT_MINUTE),
        },
        // 20001 parameter error; 10002 auth rejected (wrong credentials or clock); anything
        // unknown, where a retry would fail the same.
        _ => Outcome::Failed {
            code: code_text,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_code_has_its_action() {
        let answer = json!({"code": 0, "msg": "m"});
        for code in [2, TOKEN_REJECTED] {
            assert!(matches!(
                outcome(code, &answer),
                Outcome::Retry { after: None, .. }
            ));
        }
        for code in [10003, 10005] {
            assert!(matches!(
                outcome(code, &answer),
                Outcome::Retry {
                    after: Some(NEXT_MINUTE),
                    ..
                }
            ));
        }
        for code in [20001, 10002, 99999] {
            assert!(matches!(outcome(code, &answer), Outcome::Failed { .. }));
        }
    }
}
