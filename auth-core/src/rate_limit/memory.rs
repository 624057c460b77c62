use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use governor::nanos::Nanos;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use super::{Decision, IpBucket, LimitScope, ThrottleBackend, ThrottleConfig, ThrottleError};
use crate::clock::{Clock, Timestamp};

/// Consider key housekeeping every this many checks. A sweep visits every
/// key, so it runs only once at least as many checks as there are tracked
/// keys have passed since the last one: amortised O(1) per check even with
/// a million keys (the caps are still enforced on every check).
const HOUSEKEEPING_EVERY: u64 = 4096;
/// How often (in checks) the number of tracked IP keys is compared with
/// its cap. A divisor of [`HOUSEKEEPING_EVERY`].
const CAP_CHECK_EVERY: u64 = 256;

std::thread_local! {
    /// The time of the check running on this thread, as the caller read it:
    /// `governor` asks its clock again inside `check_key`, and a second
    /// clock read is a third of a check's cost.
    static CHECK_TIME: std::cell::Cell<Option<Timestamp>> = const { std::cell::Cell::new(None) };
}

/// Our [`Clock`] as a `governor` clock, so tests drive the GCRA too.
/// During a check it answers the check's time (one clock read per check).
#[derive(Debug, Clone)]
struct GovernorClock(Arc<dyn Clock>);

impl GovernorClock {
    fn nanos(time: Timestamp) -> Nanos {
        let millis = u64::try_from(time.as_unix_millis()).unwrap_or(0);
        Nanos::from(millis.saturating_mul(1_000_000))
    }
}

impl governor::clock::Clock for GovernorClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Self::nanos(CHECK_TIME.get().unwrap_or_else(|| self.0.now()))
    }
}

/// Sets [`CHECK_TIME`] for the duration of one synchronous check.
struct CheckTime;

impl CheckTime {
    fn set(now: Timestamp) -> Self {
        CHECK_TIME.set(Some(now));
        Self
    }
}

impl Drop for CheckTime {
    fn drop(&mut self) {
        CHECK_TIME.set(None);
    }
}

/// The IP map's hasher: std's SipHash with random keys. The keys are
/// client addresses an attacker can pick from a large prefix (or, through
/// a too-trusting proxy, at will), before any authentication: a faster
/// hasher without a HashDoS claim (foldhash measured ~20 ns less per
/// check) is not worth that.
type IpHasher = std::hash::RandomState;

type IpLimiter = RateLimiter<
    IpBucket,
    DashMapStateStore<IpBucket, IpHasher>,
    GovernorClock,
    governor::middleware::NoOpMiddleware<Nanos>,
>;

/// An account's key in the map (see `MemoryThrottle::account_key`).
type AccountKey = (u64, u64);

/// The account map hashes nothing again: its keys are keyed hashes
/// already, so the first half serves as the bucket hash.
#[derive(Debug, Default, Clone, Copy)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not reached for `(u64, u64)` keys; a fold keeps it correct.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        if self.0 == 0 {
            self.0 = n;
        }
    }
}

type AccountMap = HashMap<AccountKey, Account, std::hash::BuildHasherDefault<KeyHasher>>;

#[derive(Debug, Clone, Copy)]
struct Account {
    failures: u32,
    locked_until: Option<Timestamp>,
    last_failure: Timestamp,
}

/// In-process throttle state: a `governor` keyed GCRA limiter per IP
/// bucket, and consecutive-failure counts per account.
///
/// Memory stays bounded under key spraying: periodically (a sweep once at
/// least as many checks as tracked keys have passed, so amortised O(1) per
/// check), and whenever a cap is found passed (the IP count is taken every
/// 256 checks, so it may overshoot by that much), stale IP keys are dropped with
/// `retain_recent` + `shrink_to_fit`, and counts older than the failure
/// memory are forgotten. If live IP keys still exceed their cap, the IP
/// limiter starts afresh (one burst for everyone, logged): that takes a
/// million live addresses or /64s. Accounts are evicted oldest first among
/// those below the free allowance; an account at or past it is never
/// evicted, and when only such accounts remain, new account keys are refused
/// (fail closed).
#[derive(Debug)]
pub struct MemoryThrottle {
    config: ThrottleConfig,
    clock: Arc<dyn Clock>,
    ips: RwLock<IpLimiter>,
    accounts: Mutex<AccountMap>,
    /// A random SipHash key: an account's map key is its name hashed
    /// twice under it, in two domains (128 bits, keyed, so nobody can aim
    /// a name at another account's counter).
    account_key: std::hash::RandomState,
    checks: AtomicU64,
    /// `checks` at the last sweep.
    last_sweep: AtomicU64,
}

impl MemoryThrottle {
    /// A throttle with `config`, judging time by `clock`.
    pub fn new(config: ThrottleConfig, clock: Arc<dyn Clock>) -> Self {
        let ips = RwLock::new(Self::limiter(&config, &clock));
        Self {
            config,
            clock,
            ips,
            accounts: Mutex::default(),
            account_key: std::hash::RandomState::new(),
            checks: AtomicU64::new(0),
            last_sweep: AtomicU64::new(0),
        }
    }

    fn limiter(config: &ThrottleConfig, clock: &Arc<dyn Clock>) -> IpLimiter {
        let burst = NonZeroU32::new(config.ip_burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(config.ip_period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        RateLimiter::dashmap_with_clock_and_hasher(
            quota,
            GovernorClock(Arc::clone(clock)),
            IpHasher::default(),
        )
    }

    /// How many IP buckets and accounts are tracked.
    pub fn tracked(&self) -> (usize, usize) {
        let ips = self.ips.read().map_or(0, |l| l.len());
        (ips, self.lock_accounts().len())
    }

    /// Drops stale keys now (also done automatically).
    pub fn housekeeping(&self) {
        self.last_sweep
            .store(self.checks.load(Ordering::Relaxed), Ordering::Relaxed);
        let now = self.clock.now();
        if let Ok(limiter) = self.ips.read() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        let over_cap = self
            .ips
            .read()
            .is_ok_and(|l| l.len() > self.config.max_tracked_ips);
        if over_cap && let Ok(mut limiter) = self.ips.write() {
            tracing::warn!(
                cap = self.config.max_tracked_ips,
                "login throttle: more live client IPs than the cap; IP budgets start afresh"
            );
            *limiter = Self::limiter(&self.config, &self.clock);
        }
        let mut accounts = self.lock_accounts();
        let forget_before = now.saturating_sub(self.config.failure_memory);
        accounts.retain(|_, a| {
            a.last_failure > forget_before || a.locked_until.is_some_and(|until| until > now)
        });
        let cap = self.config.max_tracked_accounts;
        if accounts.len() >= cap {
            // Evict down to 90% of the cap, oldest first, but never an
            // account that has reached the free allowance: its count is what
            // keeps it locked. (If only such accounts remain, new keys are
            // refused by `check`.)
            let target = cap - cap / 10;
            let free = self.config.free_failures;
            let mut evictable: Vec<(Timestamp, AccountKey)> = accounts
                .iter()
                .filter(|(_, a)| a.failures < free)
                .map(|(key, a)| (a.last_failure, *key))
                .collect();
            evictable.sort_unstable();
            let excess = accounts.len().saturating_sub(target);
            for (_, key) in evictable.into_iter().take(excess) {
                accounts.remove(&key);
            }
        }
        accounts.shrink_to_fit();
    }

    /// The map key of `account`: a keyed 128-bit hash of the name, so the
    /// map holds no strings (no allocation per account, and a cleared map
    /// gives all its memory back).
    fn account_key(&self, account: &str) -> AccountKey {
        use std::hash::BuildHasher;
        let key = &self.account_key;
        (key.hash_one((0u8, account)), key.hash_one((1u8, account)))
    }

    fn lock_accounts(&self) -> std::sync::MutexGuard<'_, AccountMap> {
        self.accounts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl MemoryThrottle {
    /// One attempt from `ip`'s budget, with housekeeping when due.
    fn take_ip(&self, ip: IpBucket, now: Timestamp) -> Option<Duration> {
        let count = self.checks.fetch_add(1, Ordering::Relaxed) + 1;
        // Counting the keys takes a read lock on every shard of the map:
        // done every CAP_CHECK_EVERY checks, not on each (the cap may be
        // overshot by that many keys before it is enforced).
        let count_keys = count.is_multiple_of(CAP_CHECK_EVERY);
        let (result, ip_keys) = {
            let limiter = self
                .ips
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // No await between setting and clearing: the time is this
            // check's alone.
            let _time = CheckTime::set(now);
            let result = limiter
                .check_key(&ip)
                .map_err(|not_until| not_until.wait_time_from(GovernorClock::nanos(now)));
            (result, if count_keys { limiter.len() } else { 0 })
        };
        let sweep_due = count.is_multiple_of(HOUSEKEEPING_EVERY) && {
            let since = count.saturating_sub(self.last_sweep.load(Ordering::Relaxed));
            let keys = ip_keys.saturating_add(self.lock_accounts().len());
            since >= u64::try_from(keys).unwrap_or(u64::MAX)
        };
        if sweep_due || ip_keys > self.config.max_tracked_ips {
            self.housekeeping();
        }
        result.err()
    }
}

#[async_trait]
impl ThrottleBackend for MemoryThrottle {
    async fn check(
        &self,
        ip: IpBucket,
        account: &str,
        now: Timestamp,
    ) -> Result<Decision, ThrottleError> {
        if let Some(wait) = self.take_ip(ip, now) {
            return Ok(Decision::Limited {
                retry_after: wait,
                scope: LimitScope::Ip,
            });
        }
        let key = self.account_key(account);
        let mut accounts = self.lock_accounts();
        if !accounts.contains_key(&key) && accounts.len() >= self.config.max_tracked_accounts {
            drop(accounts);
            self.housekeeping();
            accounts = self.lock_accounts();
            if accounts.len() >= self.config.max_tracked_accounts {
                // Full of accounts under lock: refuse rather than let a new
                // key go uncounted (fail closed).
                return Ok(Decision::Limited {
                    retry_after: self.config.base_backoff,
                    scope: LimitScope::Account,
                });
            }
        }
        let forget_before = now.saturating_sub(self.config.failure_memory);
        let entry = accounts.entry(key).or_insert(Account {
            failures: 0,
            locked_until: None,
            last_failure: now,
        });
        if let Some(until) = entry.locked_until
            && until > now
        {
            return Ok(Decision::Limited {
                retry_after: self.config.announced(until.duration_since(now)),
                scope: LimitScope::Account,
            });
        }
        if entry.last_failure <= forget_before {
            entry.failures = 0;
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last_failure = now;
        entry.locked_until = self.config.lock_for(entry.failures).map(|lock| {
            if lock == Duration::MAX {
                Timestamp::from_unix_millis(i64::MAX)
            } else {
                now.saturating_add(lock)
            }
        });
        Ok(Decision::Allowed)
    }

    async fn check_ip(&self, ip: IpBucket, now: Timestamp) -> Result<Decision, ThrottleError> {
        Ok(match self.take_ip(ip, now) {
            Some(wait) => Decision::Limited {
                retry_after: wait,
                scope: LimitScope::Ip,
            },
            None => Decision::Allowed,
        })
    }

    async fn record_success(&self, account: &str) -> Result<(), ThrottleError> {
        let key = self.account_key(account);
        self.lock_accounts().remove(&key);
        Ok(())
    }

    async fn unlock(&self, account: &str) -> Result<(), ThrottleError> {
        let key = self.account_key(account);
        self.lock_accounts().remove(&key);
        Ok(())
    }
}
