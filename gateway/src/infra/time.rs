//! Wall-clock time as the gateway stores and sends it: milliseconds since the Unix epoch.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in milliseconds since the Unix epoch.
pub fn unix_millis() -> u64 {
    millis_of(SystemTime::now())
}

/// `time` in milliseconds since the Unix epoch (0 for a time before it).
pub fn millis_of(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// Now, in whole seconds since the Unix epoch (token expiry).
pub fn unix_seconds() -> u64 {
    unix_millis() / 1000
}
