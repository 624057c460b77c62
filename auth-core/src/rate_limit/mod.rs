//! Login throttling, by client IP and by account (ASVS 6.3.1, NIST
//! SP 800-63B 5.2.2), and the client-IP logic behind it.
//!
//! * Per client IP ([`IpBucket`]: an IPv4 address or an IPv6 /64): a GCRA
//!   budget (crate `governor` in memory), by default a burst of 30 attempts
//!   refilling one every 2 seconds. IPv6 clients also draw on the budgets
//!   of their /56 and /48 ([`Ipv6Tier`], configurable), so one site cannot
//!   multiply its budget by its 65,536 /64s. Every attempt counts.
//! * Per account (the flows key it by the account a login name finds,
//!   whatever name found it, and by the normalised name when it finds none):
//!   consecutive attempts without a success, counted when admitted. After
//!   the 5th, the account is locked with an exponential back-off (30 s,
//!   60 s, ... up to 15 min); a success clears the count. At 100 (NIST's
//!   ceiling) it is locked for the failure memory (24 h), after which the
//!   count starts again: at most 100 guesses in about two days, and never a
//!   lock without end. [`ThrottleBackend::unlock`] lifts it at once (a
//!   completed password reset).
//! * **Known devices** (OWASP's device cookies): a browser that completed a
//!   login to an account carries a device cookie, and its attempts on that
//!   account count against a budget of their own (the same back-off), not
//!   the account's. So an attacker who keeps an account locked does not
//!   lock its owner out of the browsers they use; a device that fails
//!   [`hard_lock_after`](ThrottleConfigBuilder::hard_lock_after) times in a
//!   row loses its standing and counts as unknown again.
//! * Answers carry the `Retry-After` duration.
//!
//! An account string that starts with U+0001 names an existing account
//! (the flows key those by user id, and no login name contains a control
//! character); any other is a name that found no account. No guessing
//! budget depends on the latter (they cannot log in), so backends keep them
//! in a fixed number of buckets: spraying names cannot grow the state, and
//! a full table never refuses anyone.
//!
//! Two backends share one test suite: [`MemoryThrottle`] (bounded under key
//! spraying) and, with the `redis` feature, [`RedisThrottle`] (atomic Lua
//! scripts, so several instances share one budget; it fails closed).

mod client_ip;
mod memory;
#[cfg(feature = "redis")]
mod redis_backend;

pub use crate::session::SessionKey as DeviceKey;

/// The most devices one account keeps known, in every backend: anyone
/// who can sign in makes a device with each sign-in that carries no device
/// cookie (a 90-day entry); one beyond the cap is not made known (it counts
/// against the account, as before its first sign-in).
pub const MAX_KNOWN_DEVICES: usize = 32;
pub use client_ip::{ForwardedHeader, InvalidProxy, IpBucket, TrustedProxies};
pub use memory::MemoryThrottle;
#[cfg(feature = "redis")]
pub use redis_backend::RedisThrottle;

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;

use crate::clock::{Clock, Timestamp};

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
    device_trust: Duration,
    ipv6_tiers: Vec<Ipv6Tier>,
    unknown_name_buckets: u32,
    max_tracked_ips: usize,
    max_tracked_accounts: usize,
}

/// A wider IPv6 budget: every attempt from an IPv6 address also draws on
/// the budget of its network of `prefix_len` bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Tier {
    /// The network's prefix length (1 to 63; the /64 is the base budget).
    pub prefix_len: u8,
    /// Attempts the network may make at once.
    pub burst: u32,
    /// One attempt comes back every `period`.
    pub period: Duration,
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
            device_trust: Duration::from_secs(90 * 24 * 60 * 60),
            ipv6_tiers: vec![
                Ipv6Tier {
                    prefix_len: 56,
                    burst: 60,
                    period: Duration::from_secs(1),
                },
                Ipv6Tier {
                    prefix_len: 48,
                    burst: 120,
                    period: Duration::from_millis(500),
                },
            ],
            unknown_name_buckets: 65_536,
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
    /// `None` while under the free allowance. At the hard limit: the
    /// failure memory (then the count starts again), unless
    /// [`ThrottleBackend::unlock`] lifts it sooner.
    pub fn lock_for(&self, failures: u32) -> Option<Duration> {
        if self.hard_lock_after.is_some_and(|hard| failures >= hard) {
            return Some(self.failure_memory.max(self.max_backoff));
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
    /// announces the maximum back-off: an attacker learns nothing of it).
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

    /// How long a device stays known after its last successful login.
    pub fn device_trust(&self) -> Duration {
        self.device_trust
    }

    /// The wider IPv6 budgets, narrowest first.
    pub fn ipv6_tiers(&self) -> &[Ipv6Tier] {
        &self.ipv6_tiers
    }

    /// Consecutive failures after which a device loses its standing (the
    /// hard lock's count), if any.
    pub fn device_failure_limit(&self) -> Option<u32> {
        self.hard_lock_after
    }

    /// How many buckets names without an account share.
    pub fn unknown_name_buckets(&self) -> u32 {
        self.unknown_name_buckets
    }

    /// The budgets an attempt from `ip` draws on, narrowest first, with the
    /// index of their quota: 0 is the base (the IPv4 address or the IPv6
    /// /64), `i` is `ipv6_tiers()[i - 1]`.
    pub fn ip_buckets(&self, ip: IpAddr) -> impl Iterator<Item = (usize, IpBucket)> + '_ {
        let base = IpBucket::of(ip);
        let wider = match base {
            IpBucket::V4(_) => &[][..],
            IpBucket::V6 { .. } => &self.ipv6_tiers[..],
        };
        std::iter::once((0, base)).chain(
            wider
                .iter()
                .enumerate()
                .map(move |(i, tier)| (i + 1, IpBucket::within(ip, tier.prefix_len))),
        )
    }

    /// The burst and period of quota `index` (see [`ip_buckets`](Self::ip_buckets)).
    pub fn ip_quota(&self, index: usize) -> (u32, Duration) {
        match index.checked_sub(1).and_then(|i| self.ipv6_tiers.get(i)) {
            Some(tier) => (tier.burst, tier.period),
            None => (self.ip_burst, self.ip_period),
        }
    }
}

/// Whether `account` names an existing account (see the module docs).
pub fn is_known_account(account: &str) -> bool {
    account.starts_with('\u{1}')
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

    /// Consecutive failures after which the account is locked for the
    /// failure memory, and a known device loses its standing (default 100,
    /// NIST's ceiling; at most 100).
    pub fn hard_lock_after(mut self, failures: u32) -> Self {
        self.0.hard_lock_after = Some(failures);
        self
    }

    /// How long failure counts are remembered (default 24 h).
    pub fn failure_memory(mut self, memory: Duration) -> Self {
        self.0.failure_memory = memory;
        self
    }

    /// How long a device stays known after its last successful login
    /// (default 90 days).
    pub fn device_trust(mut self, lifetime: Duration) -> Self {
        self.0.device_trust = lifetime;
        self
    }

    /// The wider IPv6 budgets (default: /56 with a burst of 60 and one back
    /// a second, /48 with 120 and one back every 500 ms). An empty list
    /// keeps the /64 budget alone.
    pub fn ipv6_tiers(mut self, tiers: impl IntoIterator<Item = Ipv6Tier>) -> Self {
        let mut tiers: Vec<Ipv6Tier> = tiers.into_iter().collect();
        tiers.sort_by_key(|tier| std::cmp::Reverse(tier.prefix_len));
        self.0.ipv6_tiers = tiers;
        self
    }

    /// How many buckets names without an account share (default 65,536):
    /// the bound on their state, whatever is sprayed.
    pub fn unknown_name_buckets(mut self, buckets: u32) -> Self {
        self.0.unknown_name_buckets = buckets;
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
        if c.ipv6_tiers
            .iter()
            .any(|t| !(1..64).contains(&t.prefix_len) || t.burst == 0 || t.period.is_zero())
            || c.ipv6_tiers
                .windows(2)
                .any(|w| w[0].prefix_len == w[1].prefix_len)
        {
            return Err(ThrottleError::Config(
                "IPv6 tiers: distinct prefix lengths 1 to 63, positive budgets",
            ));
        }
        if c.device_trust.is_zero() || c.unknown_name_buckets == 0 {
            return Err(ThrottleError::Config(
                "device trust and unknown-name buckets must be positive",
            ));
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
/// One attempt, as the throttle sees it.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// The client's address.
    pub ip: IpAddr,
    /// The account tried (see the module docs on names without one).
    pub account: &'a str,
    /// The key of the browser's device cookie, if it sent one.
    pub device: Option<&'a DeviceKey>,
}

/// Where throttle state lives. Implementations run the shared suite in
/// `auth-core/tests/rate_limit.rs`.
///
/// An attempt is counted *when it is admitted*, before the password is
/// checked, and cleared by [`record_success`]: so parallel requests cannot
/// all pass the check before any failure is recorded, and never more than
/// the free allowance reach the password check.
///
/// [`record_success`]: ThrottleBackend::record_success
#[async_trait]
pub trait ThrottleBackend: Send + Sync + fmt::Debug + 'static {
    /// The settings it applies.
    fn config(&self) -> &ThrottleConfig;

    /// The time to stamp an attempt with, read from `clock` (the
    /// authenticator's): [`Clock::now`] by default. A backend that pads
    /// every deadline it measures by [`Clock::coarse_lag`] may take the
    /// cheaper [`Clock::now_coarse`] ([`MemoryThrottle`] does).
    fn now(&self, clock: &dyn Clock) -> Timestamp {
        clock.now()
    }

    /// Takes one attempt from each of the client's IP budgets (narrowest
    /// first, stopping at the first refusal). Then, if the attempt's device
    /// is known for the account, counts it against the device's own budget
    /// (refused while that is locked); otherwise, if the account is not
    /// locked, counts it against the account (locking it once the count
    /// reaches the free allowance). Admitted attempts are `Allowed`.
    async fn check(&self, attempt: &Attempt<'_>, now: Timestamp)
    -> Result<Decision, ThrottleError>;

    /// Takes one attempt from `ip`'s budgets only (for actions with no
    /// account yet, such as registration).
    async fn check_ip(&self, ip: IpAddr, now: Timestamp) -> Result<Decision, ThrottleError>;

    /// After a successful attempt: a known device's count is cleared (the
    /// account's stays: only an unknown client's success, or
    /// [`unlock`](Self::unlock), clears that); otherwise the account's count
    /// is cleared. Either way `device`, when given, becomes (or stays) known
    /// for the account for [`ThrottleConfig::device_trust`].
    async fn record_success(
        &self,
        account: &str,
        device: Option<&DeviceKey>,
        now: Timestamp,
    ) -> Result<(), ThrottleError>;

    /// After a success that does not complete a sign-in (the password
    /// right, a second factor still to come): the counts
    /// [`record_success`](Self::record_success) clears are cleared, but
    /// `device` does not become known, nor is its standing renewed. A
    /// device earns standing only from a complete sign-in, so whoever has
    /// only the password cannot take the account's device slots. The
    /// default answers as `record_success` (a backend written before this
    /// method); [`MemoryThrottle`] and `RedisThrottle` implement it.
    async fn record_partial_success(
        &self,
        account: &str,
        device: Option<&DeviceKey>,
        now: Timestamp,
    ) -> Result<(), ThrottleError> {
        self.record_success(account, device, now).await
    }

    /// Lifts the account's lock, including the hard lock (an
    /// administrator; a completed password reset lifts the password's).
    async fn unlock(&self, account: &str) -> Result<(), ThrottleError>;

    /// Ends the standing of every device known for `account` but `keep`
    /// (a password change or reset, sign out everywhere, a user signed out
    /// by an administrator): whoever signed in before, an attacker with a
    /// phished password included, has no device budget of their own
    /// afterwards, and their slots are free. `keep` (the device that made
    /// the change) stays as it was, known or not; the account's own count
    /// and lock are untouched. The default does nothing (a backend written
    /// before this method: devices stay known until their trust ends);
    /// [`MemoryThrottle`] and `RedisThrottle` implement it.
    async fn forget_devices(
        &self,
        account: &str,
        keep: Option<&DeviceKey>,
    ) -> Result<(), ThrottleError> {
        let _ = (account, keep);
        Ok(())
    }
}
