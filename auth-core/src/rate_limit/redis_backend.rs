use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;
use redis::aio::ConnectionManager;

use super::{Decision, IpBucket, LimitScope, ThrottleBackend, ThrottleConfig, ThrottleError};
use crate::clock::Timestamp;

/// KEYS[1] ip key, KEYS[2] account key; ARGV now, emission interval, burst
/// tolerance (all ms). GCRA on the IP, then the account lock. Returns 0
/// (allowed), a positive wait (IP) or a negative wait (account), in ms.
static CHECK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if now < tat - tolerance then return tat - tolerance - now end
local next_tat = tat + interval
redis.call('SET', KEYS[1], next_tat, 'PX', math.max(1, next_tat - now + tolerance))
local locked = tonumber(redis.call('HGET', KEYS[2], 'l') or 0)
if locked > now then return -(locked - now) end
return 0",
    )
});

/// KEYS[1] account key; ARGV now, failure memory, and the lock (ms) this
/// failure count earns is computed in Rust from the returned count, so the
/// script only counts and stores: ARGV[3..] is the lock table
/// [lock for count 1, lock for count 2, ...] up to the hard lock (-1).
static FAIL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local now = tonumber(ARGV[1])
local memory = tonumber(ARGV[2])
local last = tonumber(redis.call('HGET', KEYS[1], 't') or now)
local locked = tonumber(redis.call('HGET', KEYS[1], 'l') or 0)
if last + memory <= now and locked <= now then redis.call('DEL', KEYS[1]) end
local failures = redis.call('HINCRBY', KEYS[1], 'f', 1)
redis.call('HSET', KEYS[1], 't', now)
local table_len = #ARGV - 2
local lock = tonumber(ARGV[2 + math.min(failures, table_len)])
if lock == -1 then
  redis.call('HSET', KEYS[1], 'l', '9223372036854775807')
  redis.call('PERSIST', KEYS[1])
  return -1
end
if lock > 0 then redis.call('HSET', KEYS[1], 'l', now + lock) end
redis.call('PEXPIRE', KEYS[1], memory)
return lock",
    )
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
}

#[async_trait]
impl ThrottleBackend for RedisThrottle {
    async fn check(
        &self,
        ip: IpBucket,
        account: &str,
        now: Timestamp,
    ) -> Result<Decision, ThrottleError> {
        let interval = millis(self.config.ip_period);
        let tolerance = interval.saturating_mul(i64::from(self.config.ip_burst) - 1);
        let wait: i64 = CHECK
            .key(format!("{}ip:{ip}", self.prefix))
            .key(self.account_key(account))
            .arg(now.as_unix_millis())
            .arg(interval)
            .arg(tolerance)
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

    async fn record_failure(
        &self,
        account: &str,
        now: Timestamp,
    ) -> Result<Option<Duration>, ThrottleError> {
        let lock: i64 = FAIL
            .key(self.account_key(account))
            .arg(now.as_unix_millis())
            .arg(millis(self.config.failure_memory))
            .arg(&self.lock_table)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(match lock {
            0 => None,
            -1 => Some(Duration::MAX),
            ms => Some(Duration::from_millis(ms.unsigned_abs())),
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
