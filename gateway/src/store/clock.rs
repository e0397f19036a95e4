//! A hybrid logical clock: wall-clock milliseconds in the high 48 bits, a counter in the low 16.
//!
//! It never goes backwards, and it moves past any time it has seen from another node, so
//! messages accepted on different nodes are stamped in an order consistent with their causes
//! even when the nodes' wall clocks disagree.

use crate::infra::time::unix_millis;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct HybridClock {
    last: AtomicU64,
}

impl HybridClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// A time later than every time this clock gave out or observed.
    pub fn now(&self) -> u64 {
        self.advance(unix_millis() << 16, 0)
    }

    /// A time later than `floor` (for instance the last time in a log) and than `now()`.
    pub fn after(&self, floor: u64) -> u64 {
        self.advance(unix_millis() << 16, floor)
    }

    /// Takes note of a time seen from another node.
    pub fn observe(&self, remote: u64) {
        self.last.fetch_max(remote, Ordering::AcqRel);
    }

    fn advance(&self, wall: u64, floor: u64) -> u64 {
        let mut last = self.last.load(Ordering::Acquire);
        loop {
            let next = wall.max(last + 1).max(floor + 1);
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_goes_backwards_and_passes_what_it_observed() {
        let clock = HybridClock::new();
        let a = clock.now();
        let b = clock.now();
        assert!(b > a);
        let ahead = (unix_millis() + 60_000) << 16;
        clock.observe(ahead);
        assert!(clock.now() > ahead);
        assert!(clock.after(ahead + 100) > ahead + 100);
    }
}
