//! Whether the gateway's per-channel token bucket held, judged from the instants the 球球
//! double received each push (`burst` mode).

use serde::Serialize;
use std::time::Duration;

/// The rate check's allowance is never below this many pushes (very low rates).
const MIN_TOLERANCE: u64 = 10;

/// The rate limit seen at the 球球 double.
///
/// The gateway's token bucket holds one second's worth (`R` tokens) and refills at `R` per
/// second, starting full. So in any interval of length `t` it lets through at most `R + R·t`
/// pushes: `R` beyond the rate (the bucket) at most, and at most `2R` in any 1-s window — the
/// first one, while the full bucket is spent. Both are checked, each allowing
/// `--jitter`'s worth of pushes (`tolerance`) for the way from the bucket to the double.
#[derive(Debug, Serialize)]
pub struct RateCheck {
    pub rate: u32,
    pub tolerance: u64,
    pub pushes: u64,
    /// From the first to the last push at the double.
    pub seconds: f64,
    pub mean_per_second: f64,
    /// Pushes in each 1-s bucket from the first push on (the last one is partial).
    pub per_second: Vec<u64>,
    pub max_bucket: u64,
    /// Most pushes in any 1-s window, wherever it starts.
    pub max_window: u64,
    /// Most pushes beyond the rate in any interval: max over intervals of count − R·length.
    pub max_excess: f64,
    /// From the first submission to the last push.
    pub total_seconds: f64,
}

impl RateCheck {
    /// `at`: seconds of each push since any origin, in order.
    pub(super) fn new(at: &[f64], rate: u32, total_seconds: f64, jitter: Duration) -> Self {
        let r = f64::from(rate);
        let tolerance = ((r * jitter.as_secs_f64()).ceil() as u64).max(MIN_TOLERANCE);
        let first = at.first().copied().unwrap_or(0.0);
        let seconds = at.last().map_or(0.0, |last| last - first);
        let mut per_second = Vec::new();
        for t in at {
            let bucket = (t - first) as usize;
            if per_second.len() <= bucket {
                per_second.resize(bucket + 1, 0);
            }
            per_second[bucket] += 1;
        }
        let (mut max_window, mut start) = (0, 0);
        for (end, t) in at.iter().enumerate() {
            while t - at[start] >= 1.0 {
                start += 1;
            }
            max_window = max_window.max(end - start + 1);
        }
        // count in [t_i, t_j] − R·(t_j − t_i) = f(j) − f(i) + 1 with f(k) = k − R·t_k.
        let (mut max_excess, mut lowest) = (0.0_f64, f64::INFINITY);
        for (k, t) in at.iter().enumerate() {
            let f = k as f64 - r * t;
            lowest = lowest.min(f);
            max_excess = max_excess.max(f - lowest + 1.0);
        }
        Self {
            rate,
            tolerance,
            pushes: at.len() as u64,
            seconds,
            mean_per_second: if seconds > 0.0 {
                at.len() as f64 / seconds
            } else {
                0.0
            },
            max_bucket: per_second.iter().copied().max().unwrap_or(0),
            per_second,
            max_window: max_window as u64,
            max_excess,
            total_seconds,
        }
    }

    pub(super) fn window_allowed(&self) -> u64 {
        2 * u64::from(self.rate) + self.tolerance
    }

    pub(super) fn excess_allowed(&self) -> f64 {
        f64::from(self.rate) + self.tolerance as f64
    }
}

#[cfg(test)]
mod tests {
    /// The default `--jitter`.
    const JITTER: std::time::Duration = std::time::Duration::from_millis(50);
    use super::*;

    #[test]
    fn an_even_pace_stays_within_the_rate() {
        // 128/s for 5 s, exactly (a power of two keeps the instants exact).
        let at: Vec<f64> = (0..640).map(|k| f64::from(k) / 128.0).collect();
        let check = RateCheck::new(&at, 128, 5.0, JITTER);
        assert_eq!(check.per_second, vec![128; 5]);
        assert_eq!(check.max_window, 128);
        assert!(check.max_excess <= 1.0 + 1e-9, "{}", check.max_excess);
        assert!((check.mean_per_second - 640.0 / (639.0 / 128.0)).abs() < 1e-6);
    }

    #[test]
    fn a_full_bucket_then_the_rate_is_allowed_and_more_is_not() {
        // The bucket's 100 at once, then 100/s: what the gateway's limiter does from cold.
        let mut at = vec![0.0; 100];
        at.extend((1..=300).map(|k| f64::from(k) / 100.0));
        let check = RateCheck::new(&at, 100, 3.0, JITTER);
        assert_eq!(check.max_window, 199);
        assert!(check.max_excess <= 101.0, "{}", check.max_excess);
        assert!(check.max_window <= check.window_allowed());
        assert!(check.max_excess <= check.excess_allowed());

        // 300 at once later on: beyond the bucket.
        at.extend(std::iter::repeat_n(3.5, 300));
        let check = RateCheck::new(&at, 100, 3.5, JITTER);
        assert!(check.max_window > check.window_allowed());
        assert!(check.max_excess > check.excess_allowed());
    }
}
