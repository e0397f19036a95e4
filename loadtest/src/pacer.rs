//! Paced sending: a fixed average rate, released in small bursts.
//!
//! Tokio timers have millisecond resolution, so sending one message per tick cannot go above
//! ~1000 msg/s. Instead each tick releases a burst of `ceil(rate / 1000)` messages, which keeps
//! bursts to a few messages at the rates where latency is measured. Missed ticks are caught up
//! (tokio's default), so a stalled sender does not silently lower the offered load.

use std::time::Duration;
use tokio::time::{interval, Interval};

/// At most this many ticks per second.
const MAX_TICKS_PER_SEC: u64 = 1_000;

pub struct Pacer {
    interval: Interval,
    burst: u64,
    left: u64,
}

impl Pacer {
    /// A pacer releasing `rate` (> 0) permits per second.
    pub fn new(rate: u64) -> Self {
        let (period, burst) = plan(rate);
        Self {
            interval: interval(period),
            burst,
            left: 0,
        }
    }

    /// Waits for the next permit.
    pub async fn wait(&mut self) {
        if self.left == 0 {
            self.interval.tick().await;
            self.left = self.burst;
        }
        self.left -= 1;
    }

    /// Whether the next [`wait`](Self::wait) returns at once, within the current burst.
    pub fn has_permit(&self) -> bool {
        self.left > 0
    }
}

/// The tick period and burst size for `rate` permits per second.
fn plan(rate: u64) -> (Duration, u64) {
    let rate = rate.max(1);
    let burst = rate.div_ceil(MAX_TICKS_PER_SEC);
    let period_ns = burst.saturating_mul(1_000_000_000) / rate;
    (Duration::from_nanos(period_ns.max(1)), burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_stay_small_and_rates_exact() {
        assert_eq!(plan(100), (Duration::from_millis(10), 1));
        assert_eq!(plan(1_000), (Duration::from_millis(1), 1));
        assert_eq!(plan(2_000), (Duration::from_millis(1), 2));
        assert_eq!(plan(50_000), (Duration::from_millis(1), 50));
        let (period, burst) = plan(1_500);
        assert_eq!(burst, 2);
        assert_eq!(period, Duration::from_nanos(1_333_333));
    }

    #[tokio::test(start_paused = true)]
    async fn releases_rate_permits_per_second() {
        let mut pacer = Pacer::new(2_000);
        let start = tokio::time::Instant::now();
        for _ in 0..2_000 {
            pacer.wait().await;
        }
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(995), "{elapsed:?}");
        assert!(elapsed <= Duration::from_millis(1_000), "{elapsed:?}");
    }
}
