//! A token bucket: `burst` requests at once, then `per_second` on average. It is plain data,
//! timed by the instants its caller passes, so whoever holds it chooses the lock (one per
//! device, one per map of buckets) and tests need no clock.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    /// A full bucket: a newcomer may use its whole burst at once. `per_second` and `burst` are
    /// at least 1 (a rate of 0 means "no limit", which is the caller's to skip).
    pub fn new(per_second: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            per_second: f64::from(per_second.max(1)),
            burst,
            tokens: burst,
            refilled: now,
        }
    }

    /// Takes a token, or says how long until one is there.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.per_second,
            ))
        }
    }

    /// Whether the bucket is full again at `now`: it then holds nothing a fresh bucket would
    /// not, so whoever keeps buckets may forget it.
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.refilled = self.refilled.max(now);
    }
}

/// A wait in whole milliseconds, rounded up, as clients are told it: retrying after them is
/// never too early.
pub fn millis_up(wait: Duration) -> u64 {
    wait.as_nanos().div_ceil(1_000_000) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_with_the_wait_said() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 3, start);
        for _ in 0..3 {
            assert_eq!(bucket.take(start), Ok(()));
        }
        assert_eq!(bucket.take(start), Err(Duration::from_millis(100)));
        assert!(!bucket.is_full(start));
        let later = start + Duration::from_millis(50);
        assert_eq!(
            bucket.take(later),
            Err(Duration::from_millis(50)),
            "half a token back"
        );
        let refilled = start + Duration::from_millis(100);
        assert_eq!(bucket.take(refilled), Ok(()));
        assert!(bucket.take(refilled).is_err(), "one token came back");
        let idle = refilled + Duration::from_secs(60);
        assert!(bucket.is_full(idle), "never more than the burst");
        for _ in 0..3 {
            assert_eq!(bucket.take(idle), Ok(()));
        }
        assert!(bucket.take(idle).is_err());
    }

    #[test]
    fn an_instant_from_before_the_last_one_changes_nothing() {
        let start = Instant::now() + Duration::from_secs(1);
        let mut bucket = TokenBucket::new(1, 1, start);
        assert_eq!(bucket.take(start), Ok(()));
        let earlier = start - Duration::from_millis(500);
        assert_eq!(bucket.take(earlier), Err(Duration::from_secs(1)));
    }
}
