//! Login throttling, by client IP and by account (ASVS 6.3.1, NIST
//! SP 800-63B 5.2.2), and the client-IP logic behind it.
//!
//! * Per client IP ([`IpBucket`]: an IPv4 address or an IPv6 /64): a GCRA
//!   budget (crate `governor` in memory), by default a burst of 30 attempts
//!   refilling one every 2 seconds. Every attempt counts.
//! * Per account (the flows key it by the account a login name finds,
//!   whatever name found it, and by the normalised name when it finds none):
//!   consecutive attempts without a success, counted when admitted. After
//!   the 5th, the account is locked with an exponential back-off (30 s,
//!   60 s, ... up to 15 min); a success clears the count. At 100 it stays
//!   locked until [`ThrottleBackend::unlock`] (NIST's ceiling).
//! * Answers carry the `Retry-After` duration.
//!
//! Two backends share one test suite: [`MemoryThrottle`] (bounded under key
//! spraying) and, with the `redis` feature, [`RedisThrottle`] (atomic Lua
//! scripts, so several instances share one budget; it fails closed).

mod client_ip;
mod memory;
#[cfg(feature = "redis")]
mod redis_backend;

pub use client_ip::{ForwardedHeader, InvalidProxy, IpBucket, TrustedProxies};
pub use memory::MemoryThrottle;
#[cfg(feature = "redis")]
pub use redis_backend::RedisThrottle;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::clock::Timestamp;

/// Throttle settings, validated by [`ThrottleConfigBuilder::build`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleConfig {
    ip_burst: u32,
    ip_period: Duration,
    free_failures: u32,
    base_backoff: Duration,
    max_backoff: Duration,
    hard_lock_after: Option<u32>,
    failure_memory: Duration,
    max_tracked_ips: usize,
    max_tracked_accounts: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            ip_burst: 30,
            ip_period: Duration::from_secs(2),
            free_failures: 5,
            base_backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(15 * 60),
            hard_lock_after: Some(100),
            failure_memory: Duration::from_secs(24 * 60 * 60),
            max_tracked_ips: 1_000_000,
            max_tracked_accounts: 1_000_000,
        }
    }
}

impl ThrottleConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> ThrottleConfigBuilder {
        ThrottleConfigBuilder(Self::default())
    }

    /// How long an account is locked after `failures` consecutive failures;
    /// `None` while under the free allowance. `Duration::MAX` means locked
    /// until [`ThrottleBackend::unlock`].
    pub fn lock_for(&self, failures: u32) -> Option<Duration> {
        if self.hard_lock_after.is_some_and(|hard| failures >= hard) {
            return Some(Duration::MAX);
        }
        let over = failures.checked_sub(self.free_failures)?;
        let factor = 2u32.checked_pow(over).unwrap_or(u32::MAX);
        Some(
            self.base_backoff
                .checked_mul(factor)
                .unwrap_or(self.max_backoff)
                .min(self.max_backoff),
        )
    }

    /// The `Retry-After` to announce for a lock lasting `lock` (a hard lock
    /// announces the maximum back-off).
    pub fn announced(&self, lock: Duration) -> Duration {
        lock.min(self.max_backoff)
    }

    /// The IP budget: burst size.
    pub fn ip_burst(&self) -> u32 {
        self.ip_burst
    }

    /// The IP budget: one attempt comes back every `ip_period`.
    pub fn ip_period(&self) -> Duration {
        self.ip_period
    }

    /// How long failure counts are remembered without a new failure.
    pub fn failure_memory(&self) -> Duration {
        self.failure_memory
    }
}

/// Builds a [`ThrottleConfig`].
#[derive(Debug)]
#[must_use]
pub struct ThrottleConfigBuilder(ThrottleConfig);

impl ThrottleConfigBuilder {
    /// Per-IP burst and refill period (default 30 attempts, one back every
    /// 2 s).
    pub fn per_ip(mut self, burst: u32, period: Duration) -> Self {
        self.0.ip_burst = burst;
        self.0.ip_period = period;
        self
    }

    /// Failures allowed before the first lock (default 5), the first lock
    /// (default 30 s, doubling each further failure) and the longest
    /// (default 15 min).
    pub fn per_account(mut self, free_failures: u32, base: Duration, max: Duration) -> Self {
        self.0.free_failures = free_failures;
        self.0.base_backoff = base;
        self.0.max_backoff = max;
        self
    }

    /// Consecutive failures after which the account stays locked until
    /// unlocked (default 100, NIST's ceiling; at most 100).
    pub fn hard_lock_after(mut self, failures: u32) -> Self {
        self.0.hard_lock_after = Some(failures);
        self
    }

    /// How long failure counts are remembered (default 24 h).
    pub fn failure_memory(mut self, memory: Duration) -> Self {
        self.0.failure_memory = memory;
        self
    }

    /// Caps on tracked keys in memory (default 1,000,000 each).
    pub fn max_tracked(mut self, ips: usize, accounts: usize) -> Self {
        self.0.max_tracked_ips = ips;
        self.0.max_tracked_accounts = accounts;
        self
    }

    /// Validates the settings.
    pub fn build(self) -> Result<ThrottleConfig, ThrottleError> {
        let c = self.0;
        if c.ip_burst == 0 || c.ip_period.is_zero() {
            return Err(ThrottleError::Config("the per-IP budget must be positive"));
        }
        if c.free_failures == 0 || c.base_backoff.is_zero() || c.max_backoff < c.base_backoff {
            return Err(ThrottleError::Config(
                "per-account: at least one free failure, 0 < base <= max back-off",
            ));
        }
        if c.hard_lock_after
            .is_some_and(|h| h > 100 || h <= c.free_failures)
        {
            return Err(ThrottleError::Config(
                "hard lock must come after the free failures and at most at 100",
            ));
        }
        if c.failure_memory < c.max_backoff || c.max_tracked_ips == 0 || c.max_tracked_accounts == 0
        {
            return Err(ThrottleError::Config(
                "failure memory must outlast the longest back-off; caps must be positive",
            ));
        }
        Ok(c)
    }
}

/// Which budget refused an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitScope {
    /// The client IP's budget.
    Ip,
    /// The account is locked after consecutive failures.
    Account,
}

/// The throttle's answer.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allowed,
    /// Refused; answer 429 with `Retry-After: retry_after` (rounded up to
    /// whole seconds).
    Limited {
        /// When to try again.
        retry_after: Duration,
        /// Which budget refused.
        scope: LimitScope,
    },
}

impl Decision {
    /// `Retry-After` in whole seconds, rounded up, at least 1.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::Allowed => None,
            Self::Limited { retry_after, .. } => {
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                Some(secs.max(1))
            }
        }
    }
}

/// Throttle failures.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ThrottleError {
    /// The shared backend is unreachable: the attempt is refused (fail
    /// closed); answer 503.
    #[error("login throttle unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Invalid configuration.
    #[error("invalid throttle configuration: {0}")]
    Config(&'static str),
}

/// Where throttle state lives. Implementations run the shared suite in
/// `auth-core/tests/rate_limit.rs`.
///
/// An attempt is counted against the account *when it is admitted*, before
/// the password is checked, and cleared by [`record_success`]: so parallel
/// requests cannot all pass the check before any failure is recorded, and
/// never more than the free allowance reach the password check.
///
/// [`record_success`]: ThrottleBackend::record_success
#[async_trait]
pub trait ThrottleBackend: Send + Sync + fmt::Debug + 'static {
    /// Takes one attempt from `ip`'s budget; if the account is not locked,
    /// counts the attempt against it (locking it once the count reaches the
    /// free allowance) and admits it.
    async fn check(
        &self,
        ip: IpBucket,
        account: &str,
        now: Timestamp,
    ) -> Result<Decision, ThrottleError>;

    /// Takes one attempt from `ip`'s budget only (for actions with no
    /// account yet, such as registration).
    async fn check_ip(&self, ip: IpBucket, now: Timestamp) -> Result<Decision, ThrottleError>;

    /// Clears `account`'s count after a successful attempt.
    async fn record_success(&self, account: &str) -> Result<(), ThrottleError>;

    /// Lifts a lock, including the hard lock (an administrator, or a
    /// completed password reset).
    async fn unlock(&self, account: &str) -> Result<(), ThrottleError>;
}
