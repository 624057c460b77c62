use std::fmt;
use std::net::IpAddr;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, KeyInit, Mac};
use redis::Script;
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use sha2::{Digest, Sha256};

use super::MAX_KNOWN_DEVICES;
use super::{
    Attempt, Decision, DeviceKey, LimitScope, ThrottleBackend, ThrottleConfig, ThrottleError,
    is_known_account,
};
use crate::clock::Timestamp;
use crate::redis_conn::RedisConn;

/// KEYS[1] ip key; ARGV now, emission interval, burst tolerance (ms).
/// GCRA: returns 0 (allowed) or the wait in ms.
const GCRA: &str = r"
local function gcra(key, now, interval, tolerance)
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  if now < tat - tolerance then return tat - tolerance - now end
  local next_tat = tat + interval
  redis.call('SET', key, next_tat, 'PX', math.max(1, next_tat - now + tolerance))
  return 0
end
";

/// KEYS: the IP keys, narrowest first; ARGV now, then interval and
/// tolerance per key. Returns 0 (allowed) or the wait in ms.
const TAKE_IPS: &str = r"
local function take_ips(count, now)
  for i = 1, count do
    local wait = gcra(KEYS[i], now, tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1]))
    if wait > 0 then return wait end
  end
  return 0
end
";

static CHECK_IP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{GCRA}\n{TAKE_IPS}\nreturn take_ips(#KEYS, tonumber(ARGV[1]))"
    ))
});

/// KEYS: n IP keys, the account key, then the device key (or none); ARGV
/// now, interval and tolerance per IP key, then n, failure memory (ms), the
/// longest back-off (ms), the device failure limit (0: none), the device
/// trust (ms), then the lock table (ms per count 1..). GCRA on the IPs;
/// then a known device's own budget, or the account's: refused while
/// locked, else the attempt is counted (and the lock it earns set) and
/// admitted. Returns 0 (admitted), a positive wait (IP) or a negative wait
/// (account).
static CHECK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{GCRA}
{TAKE_IPS}
local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2 * #KEYS])
local wait = take_ips(n, now)
if wait > 0 then return wait end
local base = 2 * #KEYS
local memory = tonumber(ARGV[base + 1])
local max_backoff = tonumber(ARGV[base + 2])
local device_limit = tonumber(ARGV[base + 3])
local first = base + 5
local table_len = #ARGV - first + 1
local function lock_for(count)
  return tonumber(ARGV[first - 1 + math.min(count, table_len)])
end
local function count_on(key, cap)
  local last = tonumber(redis.call('HGET', key, 't') or now)
  if last + memory <= now then redis.call('HSET', key, 'f', 0) end
  local count = redis.call('HINCRBY', key, 'f', 1)
  redis.call('HSET', key, 't', now)
  local lock = lock_for(count)
  if cap > 0 and lock > cap then lock = cap end
  if lock > 0 then redis.call('HSET', key, 'l', now + lock) end
  return lock
end
local device = KEYS[n + 2]
if device and tonumber(redis.call('HGET', device, 'u') or 0) > now then
  local locked = tonumber(redis.call('HGET', device, 'l') or 0)
  if locked > now then return -(locked - now) end
  local failures = tonumber(redis.call('HGET', device, 'f') or 0)
  local last = tonumber(redis.call('HGET', device, 't') or now)
  if device_limit == 0 or failures < device_limit or last + memory <= now then
    count_on(device, max_backoff)
    return 0
  end
  redis.call('DEL', device)
end
local account = KEYS[n + 1]
local locked = tonumber(redis.call('HGET', account, 'l') or 0)
if locked > now then return -(locked - now) end
local lock = count_on(account, 0)
redis.call('PEXPIRE', account, math.max(memory, lock))
return 0"
    ))
});

/// KEYS[1] account key, KEYS[2] device key and KEYS[3] the account's
/// index of known devices (both or neither); ARGV now, device trust (ms),
/// the most known devices an account keeps, 1 to remember the device (a
/// complete sign-in) or 0 (a partial one). A known device's count is
/// cleared (the account's stays; its standing renewed when remembering);
/// otherwise the account's, and when remembering the device becomes known
/// if the account has room. A device is known while its `u` (known until,
/// ms) is ahead of the clock; the index drops the devices that are gone
/// (expired, or spent by too many failures), so they free their slots.
///
/// The cap: anyone who can sign in makes a device entry with every
/// sign-in that carries no device cookie, a key that lives as long as the
/// trust (90 days). Without a cap one account could fill Redis (and a
/// `noeviction` Redis then refuses every login). A device beyond the cap
/// is simply not made known: it counts against the account, as before
/// its first sign-in.
static SUCCESS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local now = tonumber(ARGV[1])
local trust = tonumber(ARGV[2])
local remember = ARGV[4] == '1'
local device = KEYS[2]
local known = device and tonumber(redis.call('HGET', device, 'u') or 0) > now
if not known then
  redis.call('DEL', KEYS[1])
end
if known and not remember then
  redis.call('HSET', device, 'f', 0)
  redis.call('HDEL', device, 'l', 't')
  return 0
end
if device and remember then
  local index = KEYS[3]
  redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
  for _, member in ipairs(redis.call('ZRANGE', index, 0, -1)) do
    if redis.call('EXISTS', member) == 0 then redis.call('ZREM', index, member) end
  end
  if known or redis.call('ZSCORE', index, device)
      or redis.call('ZCARD', index) < tonumber(ARGV[3]) then
    redis.call('DEL', device)
    redis.call('HSET', device, 'f', 0, 'u', now + trust)
    redis.call('PEXPIRE', device, trust)
    redis.call('ZADD', index, now + trust, device)
    redis.call('PEXPIRE', index, trust)
  end
end
return 0",
    )
});

/// KEYS[1] an account's index of known devices; ARGV[1] the key of the
/// device to keep ('' for none). Deletes every other device it lists (they
/// share the account's hash tag) and drops them from the index.
static FORGET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if member ~= ARGV[1] then
    redis.call('DEL', member)
    redis.call('ZREM', KEYS[1], member)
  end
end
return 0",
    )
});

/// Throttle state in Redis (one node or a Redis Cluster), shared by every
/// instance. Each operation is one Lua script (atomic); time comes from the
/// caller's clock, so all instances should keep their clocks in sync (NTP). When Redis cannot be reached,
/// [`ThrottleBackend::check`] fails with [`ThrottleError::Unavailable`]: the
/// attempt is refused, never waved through.
///
/// Every key it writes expires (IP keys with their budget, accounts with
/// the failure memory, devices with their standing), and names without an
/// account share [`ThrottleConfig::unknown_name_buckets`] keys, bucketed by
/// an HMAC under a random key that the first instance stores in Redis: a
/// spray of names cannot grow the key count. Redis should still run with a
/// `maxmemory-policy` that never evicts these keys early (`noeviction`, or
/// a `volatile-*` policy with room to spare); [`connect`](Self::connect)
/// logs a warning when the policy is `allkeys-*`, which could drop a lock.
///
/// # Keys and Redis Cluster
///
/// Under the prefix (default `auth:throttle:`): `ip:<bucket>` per IP budget
/// (a string, GCRA), `a:{<account>}` per account (or `n:{<bucket>}` for the
/// bucket of names without an account), `a:{<account>}:d:<hex>` per known
/// device on that account (at most 32), `a:{<account>}:dv` indexing them,
/// and `bucket-key`. The braces are a hash tag: an
/// account and its devices share a slot, so the account script (lock
/// check, count, device budget) stays one atomic script on a cluster. On a
/// single node an attempt is one script over its IP budgets and its
/// account; on a cluster (where the IP keys live in other slots) the IP
/// budgets are taken first, one script each, narrowest first, then the
/// account script runs: each counter is still changed atomically, and an
/// attempt the IP budget refuses is never counted on the account, as on
/// one node. (Keys of the layout before hash tags are not read: an upgrade
/// starts every account's failure count afresh.)
#[derive(Clone)]
pub struct RedisThrottle {
    conn: RedisConn,
    config: ThrottleConfig,
    prefix: String,
    /// Lock (ms) per failure count 1..=n (the last repeats).
    lock_table: Vec<i64>,
    /// The HMAC that picks a name's bucket, keyed with the key shared
    /// through Redis.
    bucket_mac: Hmac<Sha256>,
}

impl fmt::Debug for RedisThrottle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisThrottle")
            .field("config", &self.config)
            .field("prefix", &self.prefix)
            .field("cluster", &self.conn.is_cluster())
            .finish_non_exhaustive()
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn unavailable(error: redis::RedisError) -> ThrottleError {
    ThrottleError::Unavailable(Box::new(error))
}

impl RedisThrottle {
    /// The default key prefix.
    pub const DEFAULT_PREFIX: &str = "auth:throttle:";

    /// Connects to `url`, with keys under
    /// [`DEFAULT_PREFIX`](Self::DEFAULT_PREFIX): one node
    /// (`redis://host:port/db`, a reconnecting connection manager), or a
    /// Redis Cluster given as comma-separated seed nodes
    /// (`redis://10.0.0.1:7000,redis://10.0.0.2:7000`; one seed with a
    /// trailing comma). Connects within 1 s; each command answers within
    /// 500 ms (a cluster request, with its retries, within 2 s).
    pub async fn connect(url: &str, config: ThrottleConfig) -> Result<Self, ThrottleError> {
        Self::connect_with_prefix(url, config, Self::DEFAULT_PREFIX).await
    }

    /// Connects to `url`, with every key under `prefix`.
    pub async fn connect_with_prefix(
        url: &str,
        config: ThrottleConfig,
        prefix: impl Into<String>,
    ) -> Result<Self, ThrottleError> {
        let conn = RedisConn::connect(url).await.map_err(unavailable)?;
        Self::with_conn(conn, config, prefix).await
    }

    /// Uses an existing connection manager (one node), with every key
    /// under `prefix`.
    pub async fn from_connection(
        conn: ConnectionManager,
        config: ThrottleConfig,
        prefix: impl Into<String>,
    ) -> Result<Self, ThrottleError> {
        Self::with_conn(conn.into(), config, prefix).await
    }

    /// Uses an existing Redis Cluster connection, with every key under
    /// `prefix`. A prefix with braces in it takes over the hash tag: every
    /// key then lives in one slot (`{}` must not appear).
    pub async fn from_cluster(
        conn: ClusterConnection,
        config: ThrottleConfig,
        prefix: impl Into<String>,
    ) -> Result<Self, ThrottleError> {
        Self::with_conn(conn.into(), config, prefix).await
    }

    async fn with_conn(
        mut conn: RedisConn,
        config: ThrottleConfig,
        prefix: impl Into<String>,
    ) -> Result<Self, ThrottleError> {
        let prefix = prefix.into();
        // Counts past the table reuse its last entry (the maximum back-off,
        // or the hard lock).
        let last = config.hard_lock_after.unwrap_or(config.free_failures + 32);
        let lock_table = (1..=last)
            .map(|failures| config.lock_for(failures).map_or(0, millis))
            .collect();
        warn_about_eviction(&mut conn).await;
        let bucket_mac = Self::bucket_mac(&mut conn, &prefix).await?;
        Ok(Self {
            conn,
            config,
            prefix,
            lock_table,
            bucket_mac,
        })
    }

    /// The shared bucket key: the first instance stores a random one.
    async fn bucket_mac(conn: &mut RedisConn, prefix: &str) -> Result<Hmac<Sha256>, ThrottleError> {
        let name = format!("{prefix}bucket-key");
        let fresh = crate::session::SessionId::generate()
            .map_err(|e| ThrottleError::Unavailable(Box::new(e)))?;
        // The first writer wins; everyone reads the winner's key.
        redis::cmd("SET")
            .arg(&name)
            .arg(fresh.key().to_hex())
            .arg("NX")
            .query_async::<Option<String>>(conn)
            .await
            .map_err(unavailable)?;
        let stored: String = redis::cmd("GET")
            .arg(&name)
            .query_async(conn)
            .await
            .map_err(unavailable)?;
        let key = crate::session::SessionKey::from_hex(&stored).ok_or_else(|| {
            ThrottleError::Unavailable(format!("{name} in Redis is not a 256-bit hex key").into())
        })?;
        Ok(<Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length")))
    }

    /// The key of `account`: known accounts by name, others by bucket. The
    /// name (or bucket) is a hash tag, which its devices share; it is never
    /// empty (a known account's name starts with a control character).
    fn account_key(&self, account: &str) -> String {
        if is_known_account(account) {
            return format!("{}a:{{{account}}}", self.prefix);
        }
        let mut mac = self.bucket_mac.clone();
        mac.update(account.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut head = [0u8; 8];
        head.copy_from_slice(&digest[..8]);
        let bucket = u64::from_be_bytes(head) % u64::from(self.config.unknown_name_buckets());
        format!("{}n:{{{bucket}}}", self.prefix)
    }

    /// The key of `device` on `account`: the account's key (its hash tag)
    /// and the device's hash.
    fn device_key(&self, account: &str, device: &DeviceKey) -> String {
        let mut digest = Sha256::new();
        digest.update(account.as_bytes());
        digest.update([0]);
        digest.update(device.as_bytes());
        let hex = crate::session::SessionKey::from_bytes(digest.finalize().into()).to_hex();
        format!("{}:d:{hex}", self.account_key(account))
    }

    /// The keys and GCRA parameters (emission interval and burst
    /// tolerance, in ms) of `ip`'s budgets, narrowest first.
    fn ip_keys(&self, ip: IpAddr) -> Vec<(String, i64, i64)> {
        self.config
            .ip_buckets(ip)
            .map(|(index, bucket)| {
                let (burst, period) = self.config.ip_quota(index);
                let interval = millis(period);
                (
                    format!("{}ip:{bucket}", self.prefix),
                    interval,
                    interval.saturating_mul(i64::from(burst) - 1),
                )
            })
            .collect()
    }
}

impl RedisThrottle {
    /// GCRA on `ips` in one script (one slot, or one node). Returns 0
    /// (allowed) or the wait in ms.
    async fn take_ips(
        &self,
        ips: &[(String, i64, i64)],
        now: Timestamp,
    ) -> Result<i64, ThrottleError> {
        let mut script = CHECK_IP.prepare_invoke();
        script.arg(now.as_unix_millis());
        for (key, interval, tolerance) in ips {
            script.key(key).arg(interval).arg(tolerance);
        }
        script
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    /// GCRA on each of `ips`, one script per key (each its own slot),
    /// narrowest first, stopping at the first refusal.
    async fn take_ips_one_by_one(
        &self,
        ips: &[(String, i64, i64)],
        now: Timestamp,
    ) -> Result<Option<Decision>, ThrottleError> {
        for ip in ips {
            let wait = self.take_ips(std::slice::from_ref(ip), now).await?;
            if wait > 0 {
                return Ok(Some(ip_decision(wait)));
            }
        }
        Ok(None)
    }

    /// The check script on `ips` (none on a cluster) and the attempt's
    /// account and device. Returns 0 (admitted), a positive wait (IP) or a
    /// negative wait (account).
    async fn run_check(
        &self,
        ips: &[(String, i64, i64)],
        attempt: &Attempt<'_>,
        now: Timestamp,
    ) -> Result<i64, ThrottleError> {
        let mut script = CHECK.prepare_invoke();
        for (key, _, _) in ips {
            script.key(key);
        }
        script.key(self.account_key(attempt.account));
        if let Some(device) = attempt.device {
            script.key(self.device_key(attempt.account, device));
        }
        script.arg(now.as_unix_millis());
        for (_, interval, tolerance) in ips {
            script.arg(interval).arg(tolerance);
        }
        // Pads ARGV so that `2 * #KEYS` indexes `n`, whatever the key count.
        let keys = ips.len() + 1 + usize::from(attempt.device.is_some());
        for _ in 1 + 2 * ips.len()..2 * keys - 1 {
            script.arg(0);
        }
        script
            .arg(ips.len())
            .arg(millis(self.config.failure_memory))
            .arg(millis(self.config.max_backoff))
            .arg(self.config.device_failure_limit().unwrap_or(0))
            .arg(millis(self.config.device_trust()))
            .arg(&self.lock_table);
        script
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }
}

/// The decision for an IP script's answer (0 or the wait in ms).
fn ip_decision(wait: i64) -> Decision {
    if wait > 0 {
        Decision::Limited {
            retry_after: Duration::from_millis(wait.unsigned_abs()),
            scope: LimitScope::Ip,
        }
    } else {
        Decision::Allowed
    }
}

/// Logs a warning when Redis may evict keys that are not about to expire
/// (a lock could vanish early). A server that does not answer `CONFIG GET`
/// (managed services often refuse it) is taken as configured.
async fn warn_about_eviction(conn: &mut RedisConn) {
    if let Some(policy) = crate::redis_conn::maxmemory_policy(conn).await
        && policy.starts_with("allkeys-")
    {
        tracing::warn!(
            %policy,
            "login throttle: Redis may evict any key when full, including a lock; \
             use noeviction or a volatile-* policy"
        );
    }
}

#[async_trait]
impl ThrottleBackend for RedisThrottle {
    fn config(&self) -> &ThrottleConfig {
        &self.config
    }

    async fn check(
        &self,
        attempt: &Attempt<'_>,
        now: Timestamp,
    ) -> Result<Decision, ThrottleError> {
        let ips = self.ip_keys(attempt.ip);
        let on_account = if self.conn.is_cluster() {
            // The IP keys are in other slots: their budgets first, one
            // script each, then the account's script alone.
            if let Some(limited) = self.take_ips_one_by_one(&ips, now).await? {
                return Ok(limited);
            }
            &[][..]
        } else {
            &ips[..]
        };
        let wait = self.run_check(on_account, attempt, now).await?;
        let wait_for = |ms: i64| Duration::from_millis(ms.unsigned_abs());
        Ok(match wait {
            0 => Decision::Allowed,
            ms if ms > 0 => Decision::Limited {
                retry_after: wait_for(ms),
                scope: LimitScope::Ip,
            },
            ms => Decision::Limited {
                retry_after: self.config.announced(wait_for(ms)),
                scope: LimitScope::Account,
            },
        })
    }

    async fn check_ip(&self, ip: IpAddr, now: Timestamp) -> Result<Decision, ThrottleError> {
        let ips = self.ip_keys(ip);
        if self.conn.is_cluster() {
            return Ok(self
                .take_ips_one_by_one(&ips, now)
                .await?
                .unwrap_or(Decision::Allowed));
        }
        Ok(ip_decision(self.take_ips(&ips, now).await?))
    }

    async fn record_success(
        &self,
        account: &str,
        device: Option<&DeviceKey>,
        now: Timestamp,
    ) -> Result<(), ThrottleError> {
        self.succeed(account, device, now, true).await
    }

    async fn record_partial_success(
        &self,
        account: &str,
        device: Option<&DeviceKey>,
        now: Timestamp,
    ) -> Result<(), ThrottleError> {
        self.succeed(account, device, now, false).await
    }

    async fn forget_devices(
        &self,
        account: &str,
        keep: Option<&DeviceKey>,
    ) -> Result<(), ThrottleError> {
        if !is_known_account(account) {
            return Ok(());
        }
        FORGET
            .key(format!("{}:dv", self.account_key(account)))
            .arg(keep.map_or_else(String::new, |device| self.device_key(account, device)))
            .invoke_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn unlock(&self, account: &str) -> Result<(), ThrottleError> {
        redis::cmd("DEL")
            .arg(self.account_key(account))
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }
}

impl RedisThrottle {
    /// A success (see [`SUCCESS`]); `remember`: a complete sign-in.
    async fn succeed(
        &self,
        account: &str,
        device: Option<&DeviceKey>,
        now: Timestamp,
        remember: bool,
    ) -> Result<(), ThrottleError> {
        let mut script = SUCCESS.prepare_invoke();
        let account_key = self.account_key(account);
        if let Some(device) = device.filter(|_| is_known_account(account)) {
            let index = format!("{account_key}:dv");
            script.key(&account_key);
            script.key(self.device_key(account, device));
            script.key(index);
        } else {
            script.key(&account_key);
        }
        script
            .arg(now.as_unix_millis())
            .arg(millis(self.config.device_trust()))
            .arg(MAX_KNOWN_DEVICES)
            .arg(u8::from(remember))
            .invoke_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }
}
