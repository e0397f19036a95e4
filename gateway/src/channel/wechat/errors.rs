//! What WeChat's error codes mean for a push (RESEARCH §4's table).

use crate::channel::provider_day::next_provider_midnight;
use crate::channel::Outcome;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::time::{Duration, SystemTime};

/// How long to hold back after 45011 (the per-minute limit): WeChat says "retry next minute".
const NEXT_MINUTE: Duration = Duration::from_secs(60);

/// 40001 (invalid or replaced), 40014 (malformed), 42001 (expired).
pub(super) fn token_rejected(errcode: i64) -> bool {
    matches!(errcode, 40001 | 40014 | 42001)
}

pub(super) fn errmsg(answer: &Value) -> String {
    answer
        .get("errmsg")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// What an `errcode` other than 0 means for the push (RESEARCH §4's table).
pub(super) fn outcome(errcode: i64, errmsg: String, now: SystemTime) -> Outcome {
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
    next_provider_midnight(DateTime::<Utc>::from(now)).into()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
