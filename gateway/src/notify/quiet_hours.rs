//! Quiet hours: whether a moment falls in one of the user's windows, in the user's own time
//! zone, and when that window ends. Windows may cross midnight (22:00–07:00).

use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use protocol::notification::QuietHours;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuietHoursError {
    #[error("unknown time zone {0:?} (an IANA name such as Asia/Shanghai)")]
    TimeZone(String),
    #[error("{0:?} is not a time of day as HH:MM")]
    Time(String),
}

fn time_of_day(text: &str) -> Result<NaiveTime, QuietHoursError> {
    NaiveTime::parse_from_str(text, "%H:%M").map_err(|_| QuietHoursError::Time(text.to_string()))
}

/// Checks that the zone and every time parse.
pub fn validate(hours: &QuietHours) -> Result<(), QuietHoursError> {
    zone(hours)?;
    for window in &hours.windows {
        time_of_day(&window.start)?;
        time_of_day(&window.end)?;
    }
    Ok(())
}

fn zone(hours: &QuietHours) -> Result<Tz, QuietHoursError> {
    hours
        .time_zone
        .parse()
        .map_err(|_| QuietHoursError::TimeZone(hours.time_zone.clone()))
}

/// When `now` is inside one of the windows, the moment that window ends (the latest end, when
/// windows overlap); `None` outside quiet hours.
pub fn quiet_until(
    hours: &QuietHours,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, QuietHoursError> {
    let tz = zone(hours)?;
    let local = now.with_timezone(&tz);
    let mut until: Option<DateTime<Utc>> = None;
    for window in &hours.windows {
        let (start, end) = (time_of_day(&window.start)?, time_of_day(&window.end)?);
        if start == end {
            continue;
        }
        // The window that may contain `now` began today or, crossing midnight, yesterday.
        for days_back in [0, 1] {
            let day = local.date_naive() - Duration::days(days_back);
            let Some(begins) = tz.from_local_datetime(&day.and_time(start)).earliest() else {
                continue;
            };
            let end_day = if end > start {
                day
            } else {
                day + Duration::days(1)
            };
            let Some(ends) = tz.from_local_datetime(&end_day.and_time(end)).latest() else {
                continue;
            };
            if begins <= local && local < ends {
                let ends = ends.with_timezone(&Utc);
                until = Some(until.map_or(ends, |u| u.max(ends)));
            }
        }
    }
    Ok(until)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::notification::QuietWindow;

    fn shanghai_nights() -> QuietHours {
        QuietHours {
            time_zone: "Asia/Shanghai".into(),
            windows: vec![QuietWindow {
                start: "22:00".into(),
                end: "07:00".into(),
            }],
        }
    }

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn a_window_crossing_midnight_holds_until_the_morning_in_the_users_zone() {
        let hours = shanghai_nights();
        // 23:30 in Shanghai is 15:30 UTC; the window ends at 07:00 Shanghai = 23:00 UTC.
        assert_eq!(
            quiet_until(&hours, utc("2026-11-24T15:30:00Z")).unwrap(),
            Some(utc("2026-11-24T23:00:00Z"))
        );
        // 02:00 in Shanghai (18:00 UTC the day before): the window began yesterday.
        assert_eq!(
            quiet_until(&hours, utc("2026-11-24T18:00:00Z")).unwrap(),
            Some(utc("2026-11-24T23:00:00Z"))
        );
        // 07:00 sharp and noon are outside.
        assert_eq!(
            quiet_until(&hours, utc("2026-11-24T23:00:00Z")).unwrap(),
            None
        );
        assert_eq!(
            quiet_until(&hours, utc("2026-11-25T04:00:00Z")).unwrap(),
            None
        );
    }

    #[test]
    fn daylight_saving_zones_use_local_time() {
        let hours = QuietHours {
            time_zone: "America/New_York".into(),
            windows: vec![QuietWindow {
                start: "21:00".into(),
                end: "08:00".into(),
            }],
        };
        // 22:00 in New York in July (EDT, UTC-4) and in January (EST, UTC-5).
        assert_eq!(
            quiet_until(&hours, utc("2026-07-02T02:00:00Z")).unwrap(),
            Some(utc("2026-07-02T12:00:00Z"))
        );
        assert_eq!(
            quiet_until(&hours, utc("2026-01-02T03:00:00Z")).unwrap(),
            Some(utc("2026-01-02T13:00:00Z"))
        );
    }

    #[test]
    fn bad_zones_and_times_are_named() {
        let mut hours = shanghai_nights();
        hours.time_zone = "Mars/Olympus".into();
        assert_eq!(
            validate(&hours),
            Err(QuietHoursError::TimeZone("Mars/Olympus".into()))
        );
        let mut hours = shanghai_nights();
        hours.windows[0].end = "25:00".into();
        assert_eq!(validate(&hours), Err(QuietHoursError::Time("25:00".into())));
    }
}
