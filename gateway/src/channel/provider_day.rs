//! The providers' day: WeChat's and 球球's daily quotas reset at midnight in China (UTC+8, no
//! daylight saving).

use chrono::{DateTime, Duration as Days, FixedOffset, Utc};

fn china() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset")
}

/// The provider's day of `now`, as `YYYY-MM-DD` in UTC+8: the key of its daily quota.
pub fn provider_day(now: DateTime<Utc>) -> String {
    now.with_timezone(&china()).format("%Y-%m-%d").to_string()
}

/// The next midnight in UTC+8, when daily quotas reset.
pub fn next_provider_midnight(now: DateTime<Utc>) -> DateTime<Utc> {
    let local = now.with_timezone(&china());
    let tomorrow = local.date_naive() + Days::days(1);
    tomorrow
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_local_timezone(china())
        .single()
        .expect("a fixed offset has no gaps")
        .with_timezone(&Utc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_provider_day_turns_at_midnight_in_china() {
        let before: DateTime<Utc> = "2026-11-24T15:59:59Z".parse().unwrap();
        let after: DateTime<Utc> = "2026-11-24T16:00:00Z".parse().unwrap();
        assert_eq!(provider_day(before), "2026-11-24");
        assert_eq!(provider_day(after), "2026-11-25");
        assert_eq!(next_provider_midnight(before), after);
        let at = |text: &str| text.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            next_provider_midnight(at("2025-03-01T16:00:00Z")),
            at("2025-03-02T16:00:00Z")
        );
        assert_eq!(
            next_provider_midnight(at("2025-12-31T20:00:00Z")),
            at("2026-01-01T16:00:00Z")
        );
    }
}
