//! Time, injectable: every deadline in the core is computed from a
//! [`Clock`], so tests drive timeouts with a [`ManualClock`] instead of
//! sleeping.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A point in time: milliseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// From milliseconds since the Unix epoch.
    pub const fn from_unix_millis(millis: i64) -> Self {
        Self(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_unix_millis(self) -> i64 {
        self.0
    }

    /// Whole seconds since the Unix epoch (rounded down).
    pub const fn as_unix_secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// `self + duration`, saturating.
    #[must_use]
    pub fn saturating_add(self, duration: Duration) -> Self {
        let millis = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(millis))
    }

    /// `self - duration`, saturating.
    #[must_use]
    pub fn saturating_sub(self, duration: Duration) -> Self {
        let millis = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        Self(self.0.saturating_sub(millis))
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub fn duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }
}

/// A source of the current time.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;

    /// The current time from a cheaper, coarser source: never ahead of the
    /// time, and behind it by at most [`coarse_lag`](Self::coarse_lag).
    /// Only for a user of the time that pads every deadline it measures by
    /// that lag (the in-memory login throttle). By default [`now`](Self::now).
    fn now_coarse(&self) -> Timestamp {
        self.now()
    }

    /// How far [`now_coarse`](Self::now_coarse) may be behind the time
    /// (zero by default: a clock that defines the time, such as
    /// [`ManualClock`], is exact).
    fn coarse_lag(&self) -> Duration {
        Duration::ZERO
    }
}

/// The system's wall clock.
///
/// On Linux, [`now_coarse`](Clock::now_coarse) reads
/// `CLOCK_REALTIME_COARSE`: the wall clock as of the kernel's last timer
/// tick, a few nanoseconds to read against tens for the full clock (which
/// asks the CPU's counter). It is never ahead of the wall clock; its
/// [`coarse_lag`](Clock::coarse_lag) is the tick (its `clock_getres`,
/// 1-4 ms with the usual `HZ`) plus the millisecond a [`Timestamp`]
/// truncates.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Timestamp(millis)
    }

    #[cfg(target_os = "linux")]
    fn now_coarse(&self) -> Timestamp {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
        Timestamp(
            t.tv_sec
                .saturating_mul(1000)
                .saturating_add(t.tv_nsec / 1_000_000),
        )
    }

    #[cfg(target_os = "linux")]
    fn coarse_lag(&self) -> Duration {
        let res = rustix::time::clock_getres(rustix::time::ClockId::RealtimeCoarse);
        let tick = Duration::new(
            u64::try_from(res.tv_sec).unwrap_or(0),
            u32::try_from(res.tv_nsec).unwrap_or(0),
        );
        // A tick the timekeeper has not taken yet, and the truncation to
        // whole milliseconds.
        tick.saturating_add(Duration::from_millis(1))
    }
}

/// A clock that moves only when told to: for tests of every timeout.
/// Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: Timestamp) -> Self {
        Self(Arc::new(AtomicI64::new(start.0)))
    }

    /// A clock stopped at the current system time.
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now())
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let millis = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.0.fetch_add(millis, Ordering::SeqCst);
    }

    /// Sets the clock.
    pub fn set(&self, to: Timestamp) {
        self.0.store(to.0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(Timestamp::from_unix_millis(1_000));
        let shared = clock.clone();
        assert_eq!(clock.now().as_unix_millis(), 1_000);
        shared.advance(Duration::from_secs(2));
        assert_eq!(clock.now().as_unix_millis(), 3_000);
        assert_eq!(clock.now().as_unix_secs(), 3);
        assert_eq!(
            clock.now().duration_since(Timestamp::from_unix_millis(500)),
            Duration::from_millis(2_500)
        );
        assert_eq!(
            Timestamp::from_unix_millis(0).duration_since(clock.now()),
            Duration::ZERO
        );
        assert_eq!(clock.now_coarse(), clock.now());
        assert_eq!(clock.coarse_lag(), Duration::ZERO);
    }

    #[test]
    fn the_coarse_system_clock_is_never_ahead() {
        let clock = SystemClock;
        let lag = clock.coarse_lag();
        assert!(lag < Duration::from_secs(1), "lag {lag:?}");
        for _ in 0..1000 {
            let before = clock.now();
            let coarse = clock.now_coarse();
            let after = clock.now();
            assert!(coarse <= after, "{coarse:?} ahead of {after:?}");
            // Behind by at most the lag, give or take a preemption between
            // the reads (a hang detector, not a threshold).
            assert!(
                coarse.saturating_add(lag + Duration::from_secs(1)) >= before,
                "{coarse:?} too far behind {before:?}"
            );
        }
    }
}
