use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;
use redis::aio::ConnectionManager;

use super::{Decision, IpBucket, LimitScope, ThrottleBackend, ThrottleConfig, ThrottleError};
use crate::clock::Timestamp;

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

/// KEYS[1] ip key; ARGV now, interval, tolerance.
static CHECK_IP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{GCRA}\nreturn gcra(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))"
    ))
});

/// KEYS[1] ip key, KEYS[2] account key; ARGV now, interval, tolerance,
/// failure memory (ms), then the lock table (ms per count 1..n, -1 for the
/// hard lock). GCRA on the IP, then the account: refused while locked, else
/// the attempt is counted (and the lock it earns set) and admitted.
/// Returns 0 (admitted), a positive wait (IP) or a negative wait (account).
static CHECK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{GCRA}
local now = tonumber(ARGV[1])
local wait = gcra(KEYS[1], now, tonumber(ARGV[2]), tonumber(ARGV[3]))
if wait > 0 then return wait end
local locked = tonumber(redis.call('HGET', KEYS[2], 'l') or 0)
if locked > now then return -(locked - now) end
local memory = tonumber(ARGV[4])
local last = tonumber(redis.call('HGET', KEYS[2], 't') or now)
if last + memory <= now then redis.call('DEL', KEYS[2]) end
local count = redis.call('HINCRBY', KEYS[2], 'f', 1)
redis.call('HSET', KEYS[2], 't', now)
local table_len = #ARGV - 4
local lock = tonumber(ARGV[4 + math.min(count, table_len)])
if lock == -1 then
  redis.call('HSET', KEYS[2], 'l', '9223372036854775807')
  redis.call('PERSIST', KEYS[2])
  return 0
end
if lock > 0 then redis.call('HSET', KEYS[2], 'l', now + lock) end
redis.call('PEXPIRE', KEYS[2], memory)
return 0"
    ))
});

/// Throttle state in Redis, shared by every instance. Each operation is one
/// Lua script (atomic); time comes from the caller's clock, so all instances
/// should keep their clocks in sync (NTP). When Redis cannot be reached,
/// [`ThrottleBackend::check`] fails with [`ThrottleError::Unavailable`]: the
/// attempt is refused, never waved through.
#[derive(Clone)]
pub struct RedisThrottle {
    conn: ConnectionManager,
    config: ThrottleConfig,
    prefix: String,
    /// Lock (ms) per failure count 1..=n, ending in -1 for the hard lock or
    /// the maximum back-off repeated.
    lock_table: Vec<i64>,
}

impl fmt::Debug for RedisThrottle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisThrottle")
            .field("config", &self.config)
            .field("prefix", &self.prefix)
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
    /// Connects to `url`.
    pub async fn connect(url: &str, config: ThrottleConfig) -> Result<Self, ThrottleError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let conn = ConnectionManager::new(client).await.map_err(unavailable)?;
        Ok(Self::from_connection(conn, config))
    }

    /// Uses an existing connection manager.
    pub fn from_connection(conn: ConnectionManager, config: ThrottleConfig) -> Self {
        // Counts past the table reuse its last entry (the maximum back-off,
        // or the hard lock).
        let last = config.hard_lock_after.unwrap_or(config.free_failures + 32);
        let lock_table = (1..=last)
            .map(|failures| match config.lock_for(failures) {
                None => 0,
                Some(Duration::MAX) => -1,
                Some(lock) => millis(lock),
            })
            .collect();
        Self {
            conn,
            config,
            prefix: "auth:throttle:".to_owned(),
            lock_table,
        }
    }

    /// Key prefix (default `auth:throttle:`).
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    fn account_key(&self, account: &str) -> String {
        format!("{}a:{account}", self.prefix)
    }

    fn ip_key(&self, ip: IpBucket) -> String {
        format!("{}ip:{ip}", self.prefix)
    }

    /// GCRA emission interval and burst tolerance, in ms.
    fn gcra_params(&self) -> (i64, i64) {
        let interval = millis(self.config.ip_period);
        (
            interval,
            interval.saturating_mul(i64::from(self.config.ip_burst) - 1),
        )
    }
}

#[async_trait]
impl ThrottleBackend for RedisThrottle {
    async fn check(
        &self,
        ip: IpBucket,
        account: &str,
        now: Timestamp,
    ) -> Result<Decision, ThrottleError> {
        let (interval, tolerance) = self.gcra_params();
        let wait: i64 = CHECK
            .key(self.ip_key(ip))
            .key(self.account_key(account))
            .arg(now.as_unix_millis())
            .arg(interval)
            .arg(tolerance)
            .arg(millis(self.config.failure_memory))
            .arg(&self.lock_table)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
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

    async fn check_ip(&self, ip: IpBucket, now: Timestamp) -> Result<Decision, ThrottleError> {
        let (interval, tolerance) = self.gcra_params();
        let wait: i64 = CHECK_IP
            .key(self.ip_key(ip))
            .arg(now.as_unix_millis())
            .arg(interval)
            .arg(tolerance)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(if wait > 0 {
            Decision::Limited {
                retry_after: Duration::from_millis(wait.unsigned_abs()),
                scope: LimitScope::Ip,
            }
        } else {
            Decision::Allowed
        })
    }

    async fn record_success(&self, account: &str) -> Result<(), ThrottleError> {
        redis::cmd("DEL")
            .arg(self.account_key(account))
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn unlock(&self, account: &str) -> Result<(), ThrottleError> {
        self.record_success(account).await
    }
}
