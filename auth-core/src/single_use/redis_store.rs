//! Single-use tokens in Redis.
//!
//! Layout, under a prefix (default `auth:token:`):
//! * `{prefix}t:{hex key}`: a hash `p` (purpose), `u` (user id), `b`
//!   (binding), `e` (expiry, Unix milliseconds), expiring (`PEXPIREAT`) at
//!   the token's expiry;
//! * `{prefix}u:{purpose}:{user id}`: a set of the hex keys of that user's
//!   tokens for that purpose, for [`TokenStore::delete_for_user`], expiring
//!   no sooner than its longest-lived member (stale members go with it).
//!
//! Every key expires. Each operation is one Lua script, so it is atomic;
//! the scripts derive the set's key from the prefix, so the store targets a
//! single Redis node (or a proxy), not Redis Cluster. Needs Redis 7
//! (`PEXPIRETIME`).

use std::fmt;
use std::sync::LazyLock;

use async_trait::async_trait;
use redis::Script;
use redis::aio::ConnectionManager;

use super::{Purpose, TokenKey, TokenRecord, TokenStore, TokenStoreError};
use crate::clock::Timestamp;

/// KEYS[1] token; ARGV purpose, user, binding, expires_at, hex, prefix.
/// Returns 0 if the key exists, else 1.
static INSERT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'p', ARGV[1], 'u', ARGV[2], 'b', ARGV[3], 'e', ARGV[4])
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
local idx = ARGV[6] .. 'u:' .. ARGV[1] .. ':' .. ARGV[2]
redis.call('SADD', idx, ARGV[5])
if redis.call('PEXPIRETIME', idx) < tonumber(ARGV[4]) then
  redis.call('PEXPIREAT', idx, ARGV[4])
end
return 1",
    )
});

/// KEYS[1] token; ARGV hex, prefix. Reads and deletes the token in one
/// step: returns its purpose, user, binding and expiry, nil if it does not
/// exist, or an empty list for a malformed record (deleted too). Purpose
/// and expiry are judged by the caller, on its own clock.
static CONSUME: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local f = redis.call('HMGET', KEYS[1], 'p', 'u', 'b', 'e')
if redis.call('DEL', KEYS[1]) == 0 then return false end
if not (f[1] and f[2] and f[3] and f[4]) then return {} end
redis.call('SREM', ARGV[2] .. 'u:' .. f[1] .. ':' .. f[2], ARGV[1])
return f",
    )
});

/// ARGV prefix, purpose, user. Deletes the user's tokens for the purpose
/// and their set; returns how many tokens were deleted.
static DELETE_FOR_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local idx = ARGV[1] .. 'u:' .. ARGV[2] .. ':' .. ARGV[3]
local n = 0
for _, hex in ipairs(redis.call('SMEMBERS', idx)) do
  n = n + redis.call('DEL', ARGV[1] .. 't:' .. hex)
end
redis.call('DEL', idx)
return n",
    )
});

/// Single-use tokens in Redis, expiring natively at their deadline; what
/// several app instances share. Expiry is judged on the caller's clock
/// (the `now` of [`TokenStore::consume`]); Redis's own expiry frees the
/// memory (keep the clocks in sync, NTP, or a token may vanish early), so
/// [`TokenStore::delete_expired`] has nothing to do and answers 0.
#[derive(Clone)]
pub struct RedisTokenStore {
    conn: ConnectionManager,
    prefix: String,
}

impl fmt::Debug for RedisTokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTokenStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisTokenStore {
    /// The default key prefix.
    pub const DEFAULT_PREFIX: &str = "auth:token:";

    /// Connects to `url` (`redis://host:port/db`) with a reconnecting
    /// connection manager, with keys under
    /// [`DEFAULT_PREFIX`](Self::DEFAULT_PREFIX).
    pub async fn connect(url: &str) -> Result<Self, TokenStoreError> {
        Self::connect_with_prefix(url, Self::DEFAULT_PREFIX).await
    }

    /// Connects to `url`, with every key under `prefix`.
    pub async fn connect_with_prefix(
        url: &str,
        prefix: impl Into<String>,
    ) -> Result<Self, TokenStoreError> {
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new(client).await?;
        Ok(Self::from_connection(conn, prefix))
    }

    /// Uses an existing connection manager, with every key under `prefix`.
    pub fn from_connection(conn: ConnectionManager, prefix: impl Into<String>) -> Self {
        Self {
            conn,
            prefix: prefix.into(),
        }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn token_key(&self, key: &TokenKey) -> String {
        format!("{}t:{}", self.prefix, key.to_hex())
    }
}

#[async_trait]
impl TokenStore for RedisTokenStore {
    async fn insert(&self, key: &TokenKey, record: &TokenRecord) -> Result<(), TokenStoreError> {
        let inserted: i64 = INSERT
            .key(self.token_key(key))
            .arg(record.purpose.as_str())
            .arg(&record.user_id)
            .arg(&record.binding)
            .arg(record.expires_at.as_unix_millis())
            .arg(key.to_hex())
            .arg(&self.prefix)
            .invoke_async(&mut self.conn.clone())
            .await?;
        if inserted == 1 {
            Ok(())
        } else {
            Err(TokenStoreError::Collision)
        }
    }

    async fn consume(
        &self,
        key: &TokenKey,
        purpose: Purpose,
        now: Timestamp,
    ) -> Result<Option<TokenRecord>, TokenStoreError> {
        let fields: Option<Vec<String>> = CONSUME
            .key(self.token_key(key))
            .arg(key.to_hex())
            .arg(&self.prefix)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let Some(fields) = fields else {
            return Ok(None);
        };
        let [stored, user_id, binding, expires_at]: [String; 4] =
            fields.try_into().map_err(|_| TokenStoreError::Corrupt)?;
        let record = TokenRecord {
            purpose: Purpose::parse(&stored).ok_or(TokenStoreError::Corrupt)?,
            user_id,
            binding,
            expires_at: Timestamp::from_unix_millis(
                expires_at.parse().map_err(|_| TokenStoreError::Corrupt)?,
            ),
        };
        Ok(record.usable(purpose, now))
    }

    async fn delete_for_user(
        &self,
        user_id: &str,
        purpose: Purpose,
    ) -> Result<u64, TokenStoreError> {
        let deleted: u64 = DELETE_FOR_USER
            .arg(&self.prefix)
            .arg(purpose.as_str())
            .arg(user_id)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(deleted)
    }

    async fn delete_expired(&self, _now: Timestamp) -> Result<u64, TokenStoreError> {
        // Redis expires tokens (and their sets) by TTL.
        Ok(0)
    }
}
