//! Refresh-token families in Redis.
//!
//! Layout, under a prefix (default `auth:refresh:`):
//! * `{prefix}f:{<family id>}`: a hash: `u` (user id), `a` (amr, a JSON
//!   array), `st` (the session stamp), `c`, `e`, `l` (created, expires,
//!   last used: Unix milliseconds), `i` (idle timeout, milliseconds), `cur`
//!   (hex key of the current token), `prev`, `pat`, `s` (the token spent by
//!   the latest rotation, when, and the sealed successor). It expires
//!   (`PEXPIREAT`) when the family dies: the earlier of its expiry and its
//!   idle deadline, pushed on by each rotation. The braces are a hash tag:
//!   every key of one family's state is in one slot.
//! * `{prefix}t:{hex key}`: the family id of a token, for every token that
//!   was ever current (so a spent one is told from an unknown one),
//!   expiring with the family's absolute expiry.
//! * `{prefix}u:{user id}`: a set of the user's family ids, for
//!   [`RefreshStore::revoke_user`], expiring no sooner than its
//!   longest-lived family (stale members go with it).
//!
//! Every key expires. Rotation and each revocation are one Lua script, so
//! atomic. A script reaches from a token's key to its family's key and to
//! the user's index (`revoke_user` walks the per-user index), keys that
//! cannot share a slot: the store targets a single Redis node (or a proxy),
//! not Redis Cluster. Revocation deletes the family's hash; its token keys
//! then lead nowhere until they expire. Needs Redis 7 (`PEXPIRETIME`).

use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;
use redis::aio::ConnectionManager;

use super::{Family, RefreshKey, RefreshStore, RefreshStoreError, Rotation, millis};
use crate::clock::Timestamp;

/// Idle timeouts are kept to the millisecond, up to 2^50 ms (about 35,000
/// years): exact in Lua's numbers, and no overflow.
const MAX_IDLE_MS: i64 = 1 << 50;

/// KEYS family, first token, user index; ARGV id, user, amr, created,
/// expires, idle, last used, live until, hex, stamp. 0 if the family or the
/// token exists, else 1.
static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'u', ARGV[2], 'a', ARGV[3], 'c', ARGV[4], 'e', ARGV[5],
  'i', ARGV[6], 'l', ARGV[7], 'cur', ARGV[9], 'st', ARGV[10])
redis.call('PEXPIREAT', KEYS[1], ARGV[8])
redis.call('SET', KEYS[2], ARGV[1])
redis.call('PEXPIREAT', KEYS[2], ARGV[5])
redis.call('SADD', KEYS[3], ARGV[1])
if redis.call('PEXPIRETIME', KEYS[3]) < tonumber(ARGV[5]) then
  redis.call('PEXPIREAT', KEYS[3], ARGV[5])
end
return 1",
    )
});

/// KEYS presented token, next token; ARGV prefix, presented hex, next hex,
/// sealed successor, now, grace (milliseconds, -1 for none). Answers
/// `{'i'}` (invalid), `{'c'}` (the next key exists), `{'r', id, user,
/// amr, stamp, created, expires, idle, last used}` (rotated), `{'g', id,
/// user, amr, stamp, created, expires, idle, last used, sealed}` (grace) or
/// `{'u', id, user}` (reused: the family is deleted).
static ROTATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local id = redis.call('GET', KEYS[1])
if not id then return {'i'} end
local fk = ARGV[1] .. 'f:{' .. id .. '}'
local f = redis.call('HMGET', fk, 'u', 'a', 'c', 'e', 'i', 'l', 'cur', 'prev', 'pat', 'st')
if not (f[1] and f[2] and f[3] and f[4] and f[5] and f[6] and f[7] and f[10]) then
  return {'i'}
end
local now = tonumber(ARGV[5])
local expires = tonumber(f[4])
local idle = tonumber(f[5])
if math.min(expires, tonumber(f[6]) + idle) <= now then return {'i'} end
if f[7] == ARGV[2] then
  if redis.call('EXISTS', KEYS[2]) == 1 then return {'c'} end
  redis.call('HSET', fk, 'cur', ARGV[3], 'prev', ARGV[2], 'pat', ARGV[5], 's', ARGV[4], 'l', ARGV[5])
  redis.call('PEXPIREAT', fk, string.format('%d', math.min(expires, now + idle)))
  redis.call('SET', KEYS[2], id)
  redis.call('PEXPIREAT', KEYS[2], f[4])
  return {'r', id, f[1], f[2], f[10], f[3], f[4], f[5], ARGV[5]}
end
local grace = tonumber(ARGV[6])
if grace >= 0 and f[8] == ARGV[2] and f[9] and math.max(0, now - tonumber(f[9])) < grace then
  return {'g', id, f[1], f[2], f[10], f[3], f[4], f[5], f[6], redis.call('HGET', fk, 's') or ''}
end
redis.call('DEL', fk)
redis.call('SREM', ARGV[1] .. 'u:' .. f[1], id)
return {'u', id, f[1]}",
    )
});

/// KEYS token; ARGV prefix. Deletes the token's family; returns its id and
/// user, or nil.
static REVOKE_BY_TOKEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local id = redis.call('GET', KEYS[1])
if not id then return false end
local fk = ARGV[1] .. 'f:{' .. id .. '}'
local user = redis.call('HGET', fk, 'u')
if not user then return false end
redis.call('DEL', fk)
redis.call('SREM', ARGV[1] .. 'u:' .. user, id)
return {id, user}",
    )
});

/// KEYS family; ARGV prefix, id. Deletes the family; 1 if it existed.
static REVOKE_FAMILY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local user = redis.call('HGET', KEYS[1], 'u')
if not user then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', ARGV[1] .. 'u:' .. user, ARGV[2])
return 1",
    )
});

/// KEYS user index; ARGV prefix. Deletes every family in the per-user
/// index, and the index; returns how many families existed.
static REVOKE_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  n = n + redis.call('DEL', ARGV[1] .. 'f:{' .. id .. '}')
end
redis.call('DEL', KEYS[1])
return n",
    )
});

/// Refresh-token families in Redis, expiring natively; what several app
/// instances share. Deadlines are judged on the caller's clock (the `now`
/// passed in); Redis's own expiry frees the memory (keep the clocks in
/// sync, NTP, or a family may vanish early), so
/// [`RefreshStore::purge`] has nothing to do and answers 0.
#[derive(Clone)]
pub struct RedisRefreshStore {
    conn: ConnectionManager,
    prefix: String,
}

impl fmt::Debug for RedisRefreshStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRefreshStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisRefreshStore {
    /// The default key prefix.
    pub const DEFAULT_PREFIX: &str = "auth:refresh:";

    /// Connects to `url` (`redis://host:port/db`) with a reconnecting
    /// connection manager, with keys under
    /// [`DEFAULT_PREFIX`](Self::DEFAULT_PREFIX).
    pub async fn connect(url: &str) -> Result<Self, RefreshStoreError> {
        Self::connect_with_prefix(url, Self::DEFAULT_PREFIX).await
    }

    /// Connects to `url`, with every key under `prefix`.
    pub async fn connect_with_prefix(
        url: &str,
        prefix: impl Into<String>,
    ) -> Result<Self, RefreshStoreError> {
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

    fn family_key(&self, id: &str) -> String {
        format!("{}f:{{{id}}}", self.prefix)
    }

    fn token_key(&self, key: &RefreshKey) -> String {
        format!("{}t:{}", self.prefix, key.to_hex())
    }

    fn user_key(&self, user_id: &str) -> String {
        format!("{}u:{user_id}", self.prefix)
    }
}

fn text(bytes: Vec<u8>) -> Result<String, RefreshStoreError> {
    String::from_utf8(bytes).map_err(|_| RefreshStoreError::Corrupt)
}

fn number(bytes: Vec<u8>) -> Result<i64, RefreshStoreError> {
    text(bytes)?.parse().map_err(|_| RefreshStoreError::Corrupt)
}

/// A family from the script's fields: user, amr, stamp, created, expires,
/// idle, last used.
fn family(id: &str, fields: [Vec<u8>; 7]) -> Result<Family, RefreshStoreError> {
    let [
        user_id,
        amr,
        stamp,
        created_at,
        expires_at,
        idle,
        last_used_at,
    ] = fields;
    Ok(Family {
        id: id.to_owned(),
        user_id: text(user_id)?,
        amr: serde_json::from_slice(&amr).map_err(|_| RefreshStoreError::Corrupt)?,
        stamp: text(stamp)?,
        created_at: Timestamp::from_unix_millis(number(created_at)?),
        expires_at: Timestamp::from_unix_millis(number(expires_at)?),
        idle_timeout: Duration::from_millis(
            u64::try_from(number(idle)?).map_err(|_| RefreshStoreError::Corrupt)?,
        ),
        last_used_at: Timestamp::from_unix_millis(number(last_used_at)?),
    })
}

#[async_trait]
impl RefreshStore for RedisRefreshStore {
    async fn create(&self, family: &Family, first: RefreshKey) -> Result<(), RefreshStoreError> {
        let amr = serde_json::to_string(&family.amr).map_err(|_| RefreshStoreError::Corrupt)?;
        let idle = millis(family.idle_timeout).min(MAX_IDLE_MS);
        let live_until = family
            .expires_at
            .min(family.last_used_at.saturating_add(family.idle_timeout));
        let created: i64 = CREATE
            .key(self.family_key(&family.id))
            .key(self.token_key(&first))
            .key(self.user_key(&family.user_id))
            .arg(&family.id)
            .arg(&family.user_id)
            .arg(amr)
            .arg(family.created_at.as_unix_millis())
            .arg(family.expires_at.as_unix_millis())
            .arg(idle)
            .arg(family.last_used_at.as_unix_millis())
            .arg(live_until.as_unix_millis())
            .arg(first.to_hex())
            .arg(&family.stamp)
            .invoke_async(&mut self.conn.clone())
            .await?;
        if created == 1 {
            Ok(())
        } else {
            Err(RefreshStoreError::Collision)
        }
    }

    async fn rotate(
        &self,
        presented: RefreshKey,
        next: RefreshKey,
        sealed_successor: &[u8],
        now: Timestamp,
        grace: Option<Duration>,
    ) -> Result<Rotation, RefreshStoreError> {
        let answer: Vec<Vec<u8>> = ROTATE
            .key(self.token_key(&presented))
            .key(self.token_key(&next))
            .arg(&self.prefix)
            .arg(presented.to_hex())
            .arg(next.to_hex())
            .arg(sealed_successor)
            .arg(now.as_unix_millis())
            .arg(grace.map_or(-1, millis))
            .invoke_async(&mut self.conn.clone())
            .await?;
        let mut answer = answer.into_iter();
        let kind = answer.next().ok_or(RefreshStoreError::Corrupt)?;
        let rest: Vec<Vec<u8>> = answer.collect();
        match kind.as_slice() {
            b"i" => Ok(Rotation::Invalid),
            b"c" => Err(RefreshStoreError::Collision),
            b"r" => {
                let [id, user, amr, stamp, created, expires, idle, last_used]: [Vec<u8>; 8] =
                    rest.try_into().map_err(|_| RefreshStoreError::Corrupt)?;
                let fields = [user, amr, stamp, created, expires, idle, last_used];
                Ok(Rotation::Rotated(family(&text(id)?, fields)?))
            }
            b"g" => {
                let [
                    id,
                    user,
                    amr,
                    stamp,
                    created,
                    expires,
                    idle,
                    last_used,
                    sealed,
                ]: [Vec<u8>; 9] = rest.try_into().map_err(|_| RefreshStoreError::Corrupt)?;
                let fields = [user, amr, stamp, created, expires, idle, last_used];
                Ok(Rotation::Grace {
                    family: family(&text(id)?, fields)?,
                    sealed_successor: sealed,
                })
            }
            b"u" => {
                let [family_id, user_id]: [Vec<u8>; 2] =
                    rest.try_into().map_err(|_| RefreshStoreError::Corrupt)?;
                Ok(Rotation::Reused {
                    family_id: text(family_id)?,
                    user_id: text(user_id)?,
                })
            }
            _ => Err(RefreshStoreError::Corrupt),
        }
    }

    async fn revoke_by_token(
        &self,
        token: RefreshKey,
    ) -> Result<Option<(String, String)>, RefreshStoreError> {
        let revoked: Option<(String, String)> = REVOKE_BY_TOKEN
            .key(self.token_key(&token))
            .arg(&self.prefix)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(revoked)
    }

    async fn revoke_family(&self, family_id: &str) -> Result<bool, RefreshStoreError> {
        let revoked: i64 = REVOKE_FAMILY
            .key(self.family_key(family_id))
            .arg(&self.prefix)
            .arg(family_id)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(revoked == 1)
    }

    async fn revoke_user(&self, user_id: &str) -> Result<u64, RefreshStoreError> {
        let revoked: u64 = REVOKE_USER
            .key(self.user_key(user_id))
            .arg(&self.prefix)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(revoked)
    }

    async fn is_live(&self, family_id: &str, now: Timestamp) -> Result<bool, RefreshStoreError> {
        // One command.
        let (expires, idle, last_used): (Option<i64>, Option<i64>, Option<i64>) =
            redis::cmd("HMGET")
                .arg(self.family_key(family_id))
                .arg("e")
                .arg("i")
                .arg("l")
                .query_async(&mut self.conn.clone())
                .await?;
        let (Some(expires), Some(idle), Some(last_used)) = (expires, idle, last_used) else {
            return Ok(false);
        };
        let live_until = expires.min(last_used.saturating_add(idle));
        Ok(now.as_unix_millis() < live_until)
    }

    async fn purge(&self, _now: Timestamp) -> Result<u64, RefreshStoreError> {
        // Redis expires families (and their tokens and indexes) by TTL.
        Ok(0)
    }
}
