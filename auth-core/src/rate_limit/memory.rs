use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use governor::nanos::Nanos;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use super::MAX_KNOWN_DEVICES;
use super::{
    Attempt, Decision, DeviceKey, IpBucket, LimitScope, ThrottleBackend, ThrottleConfig,
    ThrottleError, is_known_account,
};
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
        Self::nanos(CHECK_TIME.get().unwrap_or_else(|| self.0.now_coarse()))
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

/// The IP map's key: a bucket's address bits, 16 bytes. Every IPv6
/// bucket is a network of at most 64 bits (the /64, and the wider tiers,
/// which the config keeps within 1..64), and each limiter holds buckets of
/// one length, so the upper 64 bits name it. (`IpBucket` keeps a `u128`,
/// aligned to 16: as the key it made each map entry 48 bytes instead of
/// 24, and a 1M-address spray's peak 102 MiB instead of ~54.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum IpKey {
    V4(u32),
    V6(u64),
}

impl From<IpBucket> for IpKey {
    fn from(bucket: IpBucket) -> Self {
        match bucket {
            IpBucket::V4(v4) => Self::V4(v4),
            IpBucket::V6 { network, len } => {
                debug_assert!(len <= 64, "IPv6 buckets are at most /64");
                // The upper half: what a network of at most 64 bits holds.
                Self::V6(u64::try_from(network >> 64).unwrap_or(u64::MAX))
            }
        }
    }
}

type IpLimiter = RateLimiter<
    IpKey,
    DashMapStateStore<IpKey, IpHasher>,
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

type AccountMap = HashMap<AccountKey, Entry, std::hash::BuildHasherDefault<KeyHasher>>;

/// An account's key to its known devices' keys.
type DeviceIndex = HashMap<AccountKey, Vec<AccountKey>, std::hash::BuildHasherDefault<KeyHasher>>;

/// A budget of consecutive failures: an account's, a known device's on an
/// account, or a bucket of names without an account.
#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    locked_until: Option<Timestamp>,
    last_failure: Timestamp,
    /// For a device: known for the account until then.
    trusted_until: Option<Timestamp>,
}

impl Entry {
    fn new(now: Timestamp) -> Self {
        Self {
            failures: 0,
            locked_until: None,
            last_failure: now,
            trusted_until: None,
        }
    }

    /// Until when the entry matters: its lock, its failure memory, its
    /// device standing.
    fn expires(&self, memory: Duration) -> Timestamp {
        let mut until = self.last_failure.saturating_add(memory);
        for t in [self.locked_until, self.trusted_until]
            .into_iter()
            .flatten()
        {
            until = until.max(t);
        }
        until
    }

    /// The wait while locked.
    fn locked(&self, now: Timestamp) -> Option<Duration> {
        self.locked_until
            .filter(|until| *until > now)
            .map(|until| until.duration_since(now))
    }

    /// Counts one admitted attempt; `cap` bounds the lock it earns. The
    /// failure memory and the lock are padded by `lag` (see
    /// [`MemoryThrottle`] on the clock).
    fn count(
        &mut self,
        config: &ThrottleConfig,
        now: Timestamp,
        cap: Option<Duration>,
        lag: Duration,
    ) {
        if self.forgotten(now, config.failure_memory.saturating_add(lag)) {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        self.last_failure = now;
        self.locked_until = config.lock_for(self.failures).map(|lock| {
            now.saturating_add(cap.map_or(lock, |cap| lock.min(cap)))
                .saturating_add(lag)
        });
    }

    /// Whether the failures are older than `memory`.
    fn forgotten(&self, now: Timestamp, memory: Duration) -> bool {
        self.last_failure <= now.saturating_sub(memory)
    }
}

/// In-process throttle state: `governor` keyed GCRA limiters per IP bucket
/// (one per quota: the base, and each IPv6 tier), and consecutive-failure
/// counts per account, per known device, and per bucket of names without
/// an account.
///
/// Memory stays bounded under key spraying, and a full table never refuses
/// anyone:
/// * Names without an account share [`ThrottleConfig::unknown_name_buckets`]
///   buckets (a keyed hash picks the bucket): however many are sprayed, the
///   state is bounded, and no budget of a real account depends on them.
/// * Accounts and known devices (only real accounts and successful logins
///   make them) are capped; at the cap, known devices make room first, then
///   the accounts with the fewest failures (soonest expiring among equals),
///   a tenth of the cap at a time, so a sweep is amortised.
/// * Stale IP keys are dropped periodically (a sweep once at least as many
///   checks as tracked keys have passed, so amortised O(1) per check) and
///   whenever the cap is found passed (counted every 256 checks); if live
///   IP keys still exceed it, the IP limiters start afresh (logged).
///
/// It stamps attempts with the clock's cheap
/// [`now_coarse`](Clock::now_coarse) (see [`ThrottleBackend::now`]),
/// which may be behind the time by up to the clock's
/// [`coarse_lag`](Clock::coarse_lag) `L` (a few ms for [`SystemClock`];
/// zero for a [`ManualClock`]), so an interval between two stamps may read
/// up to `L` longer than it was. Every deadline is padded by `L`, so none
/// is shorter in real time than configured: a lock lasts `L` longer, the
/// failure memory is `L` longer, a device's standing `L` shorter, and the
/// IP budgets refill one attempt per `period + L` (in any window of real
/// length `D`, at most `burst + floor((D + L) / (period + L))`, never more
/// than `burst + floor(D / period)`, attempts get through).
///
/// [`SystemClock`]: crate::clock::SystemClock
/// [`ManualClock`]: crate::clock::ManualClock
#[derive(Debug)]
pub struct MemoryThrottle {
    config: ThrottleConfig,
    clock: Arc<dyn Clock>,
    /// The clock's coarse lag: every deadline's padding.
    lag: Duration,
    /// One limiter per quota (see [`ThrottleConfig::ip_buckets`]).
    ips: RwLock<Vec<IpLimiter>>,
    accounts: Mutex<AccountMap>,
    /// The known devices of each account (keys into `accounts`), at most
    /// [`MAX_KNOWN_DEVICES`] each; pruned of devices gone from `accounts`
    /// when touched and at housekeeping. Locked inside `accounts`.
    devices: Mutex<DeviceIndex>,
    names: Mutex<HashMap<u32, Entry>>,
    /// A random SipHash key: an account's map key is its name hashed
    /// twice under it, in two domains (128 bits, keyed, so nobody can aim
    /// a name at another account's counter or a bucket).
    account_key: std::hash::RandomState,
    checks: AtomicU64,
    /// `checks` at the last sweep.
    last_sweep: AtomicU64,
}

impl MemoryThrottle {
    /// A throttle with `config`, judging time by `clock`.
    pub fn new(config: ThrottleConfig, clock: Arc<dyn Clock>) -> Self {
        let lag = clock.coarse_lag();
        let ips = RwLock::new(Self::limiters(&config, &clock, lag));
        Self {
            config,
            clock,
            lag,
            ips,
            accounts: Mutex::default(),
            devices: Mutex::default(),
            names: Mutex::default(),
            account_key: std::hash::RandomState::new(),
            checks: AtomicU64::new(0),
            last_sweep: AtomicU64::new(0),
        }
    }

    fn limiters(config: &ThrottleConfig, clock: &Arc<dyn Clock>, lag: Duration) -> Vec<IpLimiter> {
        (0..=config.ipv6_tiers().len())
            .map(|index| {
                let (burst, period) = config.ip_quota(index);
                let period = period.saturating_add(lag);
                let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
                let quota = Quota::with_period(period)
                    .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
                    .allow_burst(burst);
                RateLimiter::dashmap_with_clock_and_hasher(
                    quota,
                    GovernorClock(Arc::clone(clock)),
                    IpHasher::default(),
                )
            })
            .collect()
    }

    /// How many IP buckets, and how many account, device and name-bucket
    /// entries, are tracked.
    pub fn tracked(&self) -> (usize, usize) {
        let ips = self
            .ips
            .read()
            .map_or(0, |l| l.iter().map(IpLimiter::len).sum());
        (ips, self.lock_accounts().len() + self.lock_names().len())
    }

    /// Drops stale keys now (also done automatically).
    pub fn housekeeping(&self) {
        self.last_sweep
            .store(self.checks.load(Ordering::Relaxed), Ordering::Relaxed);
        let now = self.clock.now();
        let mut ip_keys = 0;
        if let Ok(limiters) = self.ips.read() {
            for limiter in limiters.iter() {
                limiter.retain_recent();
                limiter.shrink_to_fit();
                ip_keys += limiter.len();
            }
        }
        if ip_keys > self.config.max_tracked_ips
            && let Ok(mut limiters) = self.ips.write()
        {
            tracing::warn!(
                cap = self.config.max_tracked_ips,
                "login throttle: more live client IPs than the cap; IP budgets start afresh"
            );
            *limiters = Self::limiters(&self.config, &self.clock, self.lag);
        }
        let memory = self.memory();
        let mut accounts = self.lock_accounts();
        accounts.retain(|_, entry| entry.expires(memory) > now);
        accounts.shrink_to_fit();
        let mut devices = self.lock_devices();
        devices.retain(|_, known| {
            known.retain(|key| still_known(&accounts, key, now));
            !known.is_empty()
        });
        devices.shrink_to_fit();
        drop(devices);
        drop(accounts);
        let mut names = self.lock_names();
        names.retain(|_, entry| entry.expires(memory) > now);
        names.shrink_to_fit();
    }

    /// Room for one more account or device entry: at the cap, the expired
    /// entries go, then, down to 90% of the cap, known devices (soonest
    /// expiring first) before any account's count or lock, and accounts by
    /// their count, fewest failures first. Anyone with an account can make
    /// device entries (each sign-in without the cookie makes one, for 90
    /// days): filling the table with them must cost other accounts their
    /// device standing at worst (they count against the account again),
    /// never their locks; and a spray of single failures over many names
    /// goes before an older count that is nearer its end.
    fn make_room(&self, accounts: &mut AccountMap, now: Timestamp) {
        let cap = self.config.max_tracked_accounts;
        if accounts.len() < cap {
            return;
        }
        let memory = self.memory();
        accounts.retain(|_, entry| entry.expires(memory) > now);
        let target = cap - cap / 10;
        let excess = accounts.len().saturating_sub(target);
        if excess == 0 {
            return;
        }
        tracing::warn!(
            cap,
            "login throttle: account table full; devices, then the accounts with the fewest failures, make room"
        );
        // Devices first (`false` sorts before `true`), soonest expiring
        // first; then accounts by their count, fewest failures first (a
        // spray of one failure each never evicts an older lock), soonest
        // expiring among equals.
        let mut by_expiry: Vec<((bool, u32, Timestamp), AccountKey)> = accounts
            .iter()
            .map(|(key, entry)| {
                let device = entry.trusted_until.is_some();
                let failures = if device { 0 } else { entry.failures };
                ((!device, failures, entry.expires(memory)), *key)
            })
            .collect();
        by_expiry.select_nth_unstable(excess - 1);
        for (_, key) in by_expiry.into_iter().take(excess) {
            accounts.remove(&key);
        }
    }

    /// The failure memory, padded by the clock's lag.
    fn memory(&self) -> Duration {
        self.config.failure_memory.saturating_add(self.lag)
    }

    fn hash(&self, value: impl std::hash::Hash) -> u64 {
        use std::hash::BuildHasher;
        self.account_key.hash_one(value)
    }

    /// The map key of a known `account`: a keyed 128-bit hash of the name,
    /// so the map holds no strings (no allocation per account, and a
    /// cleared map gives all its memory back).
    fn account_key(&self, account: &str) -> AccountKey {
        (self.hash((0u8, account)), self.hash((1u8, account)))
    }

    /// The map key of `device` on `account`.
    fn device_key(&self, account: &str, device: &DeviceKey) -> AccountKey {
        let bytes = device.as_bytes();
        (
            self.hash((2u8, account, bytes)),
            self.hash((3u8, account, bytes)),
        )
    }

    /// The bucket of a name without an account.
    fn name_bucket(&self, name: &str) -> u32 {
        let buckets = u64::from(self.config.unknown_name_buckets());
        u32::try_from(self.hash((4u8, name)) % buckets).unwrap_or(0)
    }

    fn lock_accounts(&self) -> std::sync::MutexGuard<'_, AccountMap> {
        self.accounts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_devices(&self) -> std::sync::MutexGuard<'_, DeviceIndex> {
        self.devices
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `device` may be known for `account`: it is already, or the
    /// account knows fewer than [`MAX_KNOWN_DEVICES`] (then it is listed).
    /// Anyone who can sign in makes a device with every sign-in without
    /// the cookie: without a cap one account could fill the table.
    fn room_for_device(
        &self,
        accounts: &AccountMap,
        account: AccountKey,
        device: AccountKey,
        now: Timestamp,
    ) -> bool {
        let mut index = self.lock_devices();
        let known = index.entry(account).or_default();
        known.retain(|key| still_known(accounts, key, now));
        if known.contains(&device) {
            return true;
        }
        if known.len() >= MAX_KNOWN_DEVICES {
            return false;
        }
        known.push(device);
        true
    }

    fn lock_names(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Entry>> {
        self.names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An account-scope refusal for a lock lasting `wait`.
    fn locked(&self, wait: Duration) -> Decision {
        Decision::Limited {
            retry_after: self.config.announced(wait),
            scope: LimitScope::Account,
        }
    }

    /// One attempt from each of `ip`'s budgets, narrowest first, with
    /// housekeeping when due.
    fn take_ip(&self, ip: IpAddr, now: Timestamp) -> Option<Duration> {
        let count = self.checks.fetch_add(1, Ordering::Relaxed) + 1;
        // Counting the keys takes a read lock on every shard of the maps:
        // done every CAP_CHECK_EVERY checks, not on each (the cap may be
        // overshot by that many keys before it is enforced).
        let count_keys = count.is_multiple_of(CAP_CHECK_EVERY);
        let (result, ip_keys) = {
            let limiters = self
                .ips
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // No await between setting and clearing: the time is this
            // check's alone.
            let _time = CheckTime::set(now);
            let result = self
                .config
                .ip_buckets(ip)
                .find_map(|(index, bucket)| {
                    limiters.get(index)?.check_key(&IpKey::from(bucket)).err()
                })
                .map(|not_until| not_until.wait_time_from(GovernorClock::nanos(now)));
            let keys = if count_keys {
                limiters.iter().map(IpLimiter::len).sum()
            } else {
                0
            };
            (result, keys)
        };
        let sweep_due = count.is_multiple_of(HOUSEKEEPING_EVERY) && {
            let since = count.saturating_sub(self.last_sweep.load(Ordering::Relaxed));
            let keys = ip_keys
                .saturating_add(self.lock_accounts().len())
                .saturating_add(self.lock_names().len());
            since >= u64::try_from(keys).unwrap_or(u64::MAX)
        };
        if sweep_due || ip_keys > self.config.max_tracked_ips {
            self.housekeeping();
        }
        result
    }
}

impl MemoryThrottle {
    /// A success for `account` from `device`: a known device's count is
    /// cleared (its standing renewed when `remember`), else the account's
    /// (and the device made known when `remember` and there is room).
    fn succeed(&self, account: &str, device: Option<&DeviceKey>, now: Timestamp, remember: bool) {
        if !is_known_account(account) {
            let bucket = self.name_bucket(account);
            self.lock_names().remove(&bucket);
            return;
        }
        // Padded the other way: a standing never outlasts the trust.
        let trusted_until = now.saturating_add(self.config.device_trust().saturating_sub(self.lag));
        let mut accounts = self.lock_accounts();
        if let Some(device) = device {
            let key = self.device_key(account, device);
            if let Some(entry) = accounts
                .get_mut(&key)
                .filter(|e| e.trusted_until.is_some_and(|until| until > now))
            {
                // Admitted on the device's budget: the account's count stays.
                let until = if remember {
                    Some(trusted_until)
                } else {
                    entry.trusted_until
                };
                *entry = Entry {
                    trusted_until: until,
                    ..Entry::new(now)
                };
                return;
            }
        }
        let account_key = self.account_key(account);
        accounts.remove(&account_key);
        if let Some(device) = device.filter(|_| remember) {
            let key = self.device_key(account, device);
            if !self.room_for_device(&accounts, account_key, key, now) {
                return;
            }
            self.make_room(&mut accounts, now);
            accounts.insert(
                key,
                Entry {
                    trusted_until: Some(trusted_until),
                    ..Entry::new(now)
                },
            );
        }
    }
}

#[async_trait]
impl ThrottleBackend for MemoryThrottle {
    fn config(&self) -> &ThrottleConfig {
        &self.config
    }

    /// The clock's cheap coarse time: every deadline here is padded by its
    /// lag (see [`MemoryThrottle`]).
    fn now(&self, clock: &dyn Clock) -> Timestamp {
        clock.now_coarse()
    }

    async fn check(
        &self,
        attempt: &Attempt<'_>,
        now: Timestamp,
    ) -> Result<Decision, ThrottleError> {
        if let Some(wait) = self.take_ip(attempt.ip, now) {
            return Ok(Decision::Limited {
                retry_after: wait,
                scope: LimitScope::Ip,
            });
        }
        let config = &self.config;
        if !is_known_account(attempt.account) {
            let bucket = self.name_bucket(attempt.account);
            let mut names = self.lock_names();
            let entry = names.entry(bucket).or_insert_with(|| Entry::new(now));
            if let Some(wait) = entry.locked(now) {
                return Ok(self.locked(wait));
            }
            entry.count(config, now, None, self.lag);
            return Ok(Decision::Allowed);
        }
        let mut accounts = self.lock_accounts();
        if let Some(device) = attempt.device {
            let key = self.device_key(attempt.account, device);
            if let Some(entry) = accounts
                .get_mut(&key)
                .filter(|e| e.trusted_until.is_some_and(|until| until > now))
            {
                if let Some(wait) = entry.locked(now) {
                    return Ok(self.locked(wait));
                }
                let forgotten = entry.forgotten(now, self.memory());
                let spent = config
                    .device_failure_limit()
                    .is_some_and(|limit| entry.failures >= limit);
                if forgotten || !spent {
                    entry.count(config, now, Some(config.max_backoff), self.lag);
                    return Ok(Decision::Allowed);
                }
                // Too many failures in a row: the device is unknown again.
                accounts.remove(&key);
            }
        }
        let key = self.account_key(attempt.account);
        if !accounts.contains_key(&key) {
            self.make_room(&mut accounts, now);
        }
        let entry = accounts.entry(key).or_insert_with(|| Entry::new(now));
        if let Some(wait) = entry.locked(now) {
            return Ok(self.locked(wait));
        }
        entry.count(config, now, None, self.lag);
        Ok(Decision::Allowed)
    }

    async fn check_ip(&self, ip: IpAddr, now: Timestamp) -> Result<Decision, ThrottleError> {
        Ok(match self.take_ip(ip, now) {
            Some(wait) => Decision::Limited {
                retry_after: wait,
                scope: LimitScope::Ip,
            },
            None => Decision::Allowed,
        })
    }

    async fn record_success(
        &self,
        account: &str,
        device: Option<&DeviceKey>,
        now: Timestamp,
    ) -> Result<(), ThrottleError> {
        self.succeed(account, device, now, true);
        Ok(())
    }

    async fn record_partial_success(
        &self,
        account: &str,
        device: Option<&DeviceKey>,
        now: Timestamp,
    ) -> Result<(), ThrottleError> {
        self.succeed(account, device, now, false);
        Ok(())
    }

    async fn forget_devices(
        &self,
        account: &str,
        keep: Option<&DeviceKey>,
    ) -> Result<(), ThrottleError> {
        if !is_known_account(account) {
            return Ok(());
        }
        let account_key = self.account_key(account);
        let keep = keep.map(|device| self.device_key(account, device));
        let mut accounts = self.lock_accounts();
        let mut index = self.lock_devices();
        if let Some(known) = index.get_mut(&account_key) {
            known.retain(|device| {
                let kept = Some(*device) == keep;
                if !kept {
                    accounts.remove(device);
                }
                kept
            });
            if known.is_empty() {
                index.remove(&account_key);
            }
        }
        Ok(())
    }

    async fn unlock(&self, account: &str) -> Result<(), ThrottleError> {
        if is_known_account(account) {
            let key = self.account_key(account);
            self.lock_accounts().remove(&key);
        } else {
            let bucket = self.name_bucket(account);
            self.lock_names().remove(&bucket);
        }
        Ok(())
    }
}

/// Whether the entry at `key` is a device known at `now`.
fn still_known(accounts: &AccountMap, key: &AccountKey, now: Timestamp) -> bool {
    accounts
        .get(key)
        .is_some_and(|entry| entry.trusted_until.is_some_and(|until| until > now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    /// The compact key tells apart what the bucket tells apart (a /64 and
    /// its neighbour, an IPv4 address and an IPv6 network with the same
    /// bits), and stays 16 bytes.
    #[test]
    fn ip_keys_are_the_buckets_in_16_bytes() {
        use std::net::IpAddr;
        let key =
            |ip: &str, len: u8| IpKey::from(IpBucket::within(ip.parse::<IpAddr>().unwrap(), len));
        assert_eq!(key("2001:db8:0:1::1", 64), key("2001:db8:0:1:ffff::9", 64));
        assert_ne!(key("2001:db8:0:1::1", 64), key("2001:db8:0:2::1", 64));
        assert_eq!(key("2001:db8:0:1::1", 48), key("2001:db8:0:2::1", 48));
        assert_ne!(key("2001:db8:1::1", 48), key("2001:db8:2::1", 48));
        assert_ne!(key("0.0.0.1", 64), key("::1", 64));
        assert_eq!(key("10.0.0.1", 64), IpKey::V4(0x0a00_0001));
        assert_eq!(std::mem::size_of::<IpKey>(), 16);
    }

    /// A clock whose coarse time lags by `lag` (a coarse reading's worst
    /// case).
    #[derive(Debug)]
    struct Coarse(ManualClock, Duration);

    impl Clock for Coarse {
        fn now(&self) -> Timestamp {
            self.0.now()
        }
        fn now_coarse(&self) -> Timestamp {
            self.0.now().saturating_sub(self.1)
        }
        fn coarse_lag(&self) -> Duration {
            self.1
        }
    }

    const LAG: Duration = Duration::from_millis(4);
    const ALICE: &str = "\u{1}id:alice";

    fn throttle(config: ThrottleConfig) -> (MemoryThrottle, Timestamp) {
        let manual = ManualClock::new(Timestamp::from_unix_millis(1_000_000));
        let t0 = manual.now();
        (
            MemoryThrottle::new(config, Arc::new(Coarse(manual, LAG))),
            t0,
        )
    }

    fn attempt(account: &str) -> Attempt<'_> {
        Attempt {
            ip: IpAddr::from([192, 0, 2, 1]),
            account,
            device: None,
        }
    }

    /// A lock stamped with a lagging time still lasts its full length in
    /// real time (it would end `LAG` early without the padding).
    #[tokio::test]
    async fn a_lagging_stamp_never_ends_a_lock_early() {
        let lock = Duration::from_secs(30);
        let config = ThrottleConfig::builder()
            .per_account(1, lock, lock)
            .build()
            .unwrap();
        let (throttle, t0) = throttle(config);
        // Admitted at real time t0, stamped up to LAG behind: the lock.
        let first = throttle
            .check(&attempt(ALICE), t0.saturating_sub(LAG))
            .await
            .unwrap();
        assert_eq!(first, Decision::Allowed);
        // Stamped exactly, 1 ms before the real end of the lock: refused.
        let almost = t0.saturating_add(lock - Duration::from_millis(1));
        assert!(matches!(
            throttle.check(&attempt(ALICE), almost).await.unwrap(),
            Decision::Limited {
                scope: LimitScope::Account,
                ..
            }
        ));
        // At the real end: admitted.
        let end = t0.saturating_add(lock);
        assert_eq!(
            throttle.check(&attempt(ALICE), end).await.unwrap(),
            Decision::Allowed
        );
    }

    /// The IP budget refills no faster in real time than configured,
    /// whatever the stamps' lag.
    #[tokio::test]
    async fn a_lagging_stamp_never_refills_an_ip_budget_early() {
        let period = Duration::from_secs(1);
        let config = ThrottleConfig::builder().per_ip(1, period).build().unwrap();
        let (throttle, t0) = throttle(config);
        let ip = attempt(ALICE).ip;
        assert_eq!(
            throttle.check_ip(ip, t0.saturating_sub(LAG)).await.unwrap(),
            Decision::Allowed
        );
        let almost = t0.saturating_add(period - Duration::from_millis(1));
        assert!(matches!(
            throttle.check_ip(ip, almost).await.unwrap(),
            Decision::Limited {
                scope: LimitScope::Ip,
                ..
            }
        ));
        assert_eq!(
            throttle
                .check_ip(ip, t0.saturating_add(period))
                .await
                .unwrap(),
            Decision::Allowed
        );
    }

    /// The throttle takes the clock's coarse time; a manual clock's is
    /// exact (and pads nothing).
    #[test]
    fn the_throttle_reads_the_coarse_time() {
        let (throttle, t0) = throttle(ThrottleConfig::default());
        assert_eq!(
            throttle.now(throttle.clock.as_ref()),
            t0.saturating_sub(LAG)
        );
        let manual = ManualClock::new(t0);
        let exact = MemoryThrottle::new(ThrottleConfig::default(), Arc::new(manual.clone()));
        assert_eq!(exact.now(&manual), t0);
        assert_eq!(exact.lag, Duration::ZERO);
    }
}
