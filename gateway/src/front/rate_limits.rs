//! How often one device may send, signal, ack, sync and set quiet hours (`[rate_limits]`): a
//! token bucket per device and action, and one sync answered at a time per device.
//!
//! The buckets are the device's, not its connection's, so a device that reconnects does not
//! come back with full ones: they are kept in a map by user and device. A bucket that is full
//! again holds nothing a new one would not, so the periodic [`sweep`](DeviceRateLimits::sweep)
//! forgets a device whose buckets are all full and that no connection holds; what stays are the
//! connected devices and those that used their buckets in the last few seconds. That is bounded
//! by connections and churn, and `rate_limits.max_devices` caps it against a flood of
//! short-lived devices: past it, a new device's buckets live as long as its connection.

use crate::infra::token_bucket::TokenBucket;
use broker_config::{Rate, RateLimits};
use dashmap::DashMap;
use protocol::topics::DeviceAction;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the map is swept of devices that need no memory.
pub const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// The actions with a bucket, in the order of [`DeviceBuckets::buckets`]. Approvals have none:
/// a device decides on its user's new devices, which are few.
const LIMITED: [DeviceAction; 5] = [
    DeviceAction::Send,
    DeviceAction::Signal,
    DeviceAction::Ack,
    DeviceAction::Sync,
    DeviceAction::QuietHours,
];

pub struct DeviceRateLimits {
    rates: [Rate; 5],
    max_devices: usize,
    devices: DashMap<(String, String), Arc<DeviceBuckets>>,
}

/// One device's buckets, and whether a sync of it is being answered.
pub struct DeviceBuckets {
    /// By [`LIMITED`]; `None` where the rate is unlimited.
    buckets: Mutex<[Option<TokenBucket>; 5]>,
    syncing: AtomicBool,
}

/// A sync being answered; dropping it lets the device ask for the next one.
pub struct SyncInFlight(Arc<DeviceBuckets>);

impl DeviceRateLimits {
    /// The limits of `config`, or `None` when they are off.
    pub fn new(config: &RateLimits) -> Option<Self> {
        config.enabled.then(|| Self {
            rates: [
                config.send,
                config.signal,
                config.ack,
                config.sync,
                config.quiet_hours,
            ],
            max_devices: config.max_devices,
            devices: DashMap::new(),
        })
    }

    /// The buckets of `user`'s `device`, as it left them.
    pub fn of(&self, user: &str, device: &str) -> Arc<DeviceBuckets> {
        let key = (user.to_string(), device.to_string());
        if let Some(kept) = self.devices.get(&key) {
            return kept.clone();
        }
        let fresh = || Arc::new(DeviceBuckets::new(&self.rates, Instant::now()));
        if self.devices.len() >= self.max_devices {
            return fresh();
        }
        self.devices.entry(key).or_insert_with(fresh).clone()
    }

    /// Forgets the devices that no connection holds and whose buckets are full again.
    pub fn sweep(&self) {
        let now = Instant::now();
        (self.devices).retain(|_, buckets| Arc::strong_count(buckets) > 1 || !buckets.idle(now));
    }

    /// Devices whose buckets are kept.
    pub fn kept(&self) -> usize {
        self.devices.len()
    }
}

impl DeviceBuckets {
    fn new(rates: &[Rate; 5], now: Instant) -> Self {
        let bucket = |rate: &Rate| {
            (!rate.is_unlimited()).then(|| TokenBucket::new(rate.per_second, rate.burst, now))
        };
        Self {
            buckets: Mutex::new(rates.each_ref().map(bucket)),
            syncing: AtomicBool::new(false),
        }
    }

    /// Takes a token for `action`, or says how long until there is one.
    pub fn take(&self, action: DeviceAction) -> Result<(), Duration> {
        let Some(slot) = LIMITED.iter().position(|limited| *limited == action) else {
            return Ok(());
        };
        let mut buckets = self.buckets.lock().expect("device buckets lock");
        match &mut buckets[slot] {
            Some(bucket) => bucket.take(Instant::now()),
            None => Ok(()),
        }
    }

    /// Marks a sync as being answered, unless one is already.
    pub fn start_sync(self: &Arc<Self>) -> Option<SyncInFlight> {
        let idle = self
            .syncing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        idle.then(|| SyncInFlight(self.clone()))
    }

    /// Nothing to remember: every bucket is full and no sync is being answered.
    fn idle(&self, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().expect("device buckets lock");
        !self.syncing.load(Ordering::Acquire)
            && buckets.iter_mut().flatten().all(|b| b.is_full(now))
    }
}

impl Drop for SyncInFlight {
    fn drop(&mut self) {
        self.0.syncing.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_devices: usize) -> DeviceRateLimits {
        let config = RateLimits {
            send: Rate::new(1, 2),
            signal: Rate::new(0, 0),
            max_devices,
            ..RateLimits::default()
        };
        DeviceRateLimits::new(&config).expect("enabled")
    }

    #[test]
    fn a_device_keeps_its_buckets_across_connections_and_unlimited_actions_pass() {
        let limits = limits(10);
        let first = limits.of("alice", "phone");
        assert!(first.take(DeviceAction::Send).is_ok());
        assert!(first.take(DeviceAction::Send).is_ok());
        drop(first);
        limits.sweep();
        let again = limits.of("alice", "phone");
        let wait = again.take(DeviceAction::Send).unwrap_err();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert!(
            limits
                .of("alice", "laptop")
                .take(DeviceAction::Send)
                .is_ok(),
            "each device its own"
        );
        for _ in 0..1000 {
            assert!(again.take(DeviceAction::Signal).is_ok());
            assert!(again.take(DeviceAction::Approve).is_ok());
        }
    }

    #[test]
    fn full_buckets_of_devices_no_connection_holds_are_forgotten() {
        let limits = limits(10);
        let held = limits.of("alice", "phone");
        drop(limits.of("bob", "phone"));
        assert_eq!(limits.kept(), 2);
        limits.sweep();
        assert_eq!(limits.kept(), 1, "bob's were full and not held");
        drop(held);
        limits.sweep();
        assert_eq!(limits.kept(), 0);
    }

    #[test]
    fn past_the_cap_a_device_gets_buckets_of_its_own_not_kept() {
        let limits = limits(1);
        let _alice = limits.of("alice", "phone");
        let bob = limits.of("bob", "phone");
        assert_eq!(limits.kept(), 1);
        assert!(
            bob.take(DeviceAction::Send).is_ok(),
            "still limited, not refused"
        );
    }

    #[test]
    fn one_sync_at_a_time() {
        let buckets = limits(10).of("alice", "phone");
        let first = buckets.start_sync().expect("none in flight");
        assert!(buckets.start_sync().is_none());
        drop(first);
        assert!(buckets.start_sync().is_some());
    }

    #[test]
    fn off_means_no_limits() {
        let config = RateLimits {
            enabled: false,
            ..RateLimits::default()
        };
        assert!(DeviceRateLimits::new(&config).is_none());
    }
}
