//! Redis session store.
//!
//! Layout, under a configurable prefix (default `auth:`):
//! * `{prefix}s:{hex key}`: a hash `v` (version), `u` (user id or empty),
//!   `r` (record JSON), expiring by TTL at the record's deadline;
//! * `{prefix}u:{user id}`: a set of the user's session keys, for listing and
//!   revoking; stale members are pruned when read.
//!
//! Every multi-step operation is one Lua script, so it is atomic. The
//! scripts derive the per-user index key from the prefix, so the store
//! targets a single Redis node (or a proxy), not Redis Cluster.

use std::fmt;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use redis::Script;
use redis::aio::ConnectionManager;

use super::{SaveOutcome, SessionKey, SessionRecord, SessionStore, StoreError};
use crate::clock::Timestamp;

/// Adds a session to its user's index and makes the index live at least as
/// long as the session. Needs Redis 7 (`PEXPIRETIME`).
const INDEX_ADD: &str = r"
local function index_add(prefix, user, hex, expire_at)
  local idx = prefix .. 'u:' .. user
  redis.call('SADD', idx, hex)
  if redis.call('PEXPIRETIME', idx) < tonumber(expire_at) then
    redis.call('PEXPIREAT', idx, expire_at)
  end
end
";

/// KEYS[1] session; ARGV version, user, record, expire_at, hex, prefix.
static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{INDEX_ADD}
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'u', ARGV[2], 'r', ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
if ARGV[2] ~= '' then index_add(ARGV[6], ARGV[2], ARGV[5], ARGV[4]) end
return 1"
    ))
});

/// KEYS[1] session; ARGV expected, new version, user, record, expire_at,
/// hex, prefix. Returns 0 missing, 1 conflict, 2 saved.
static SAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{INDEX_ADD}
local cur = redis.call('HMGET', KEYS[1], 'v', 'u')
if not cur[1] then return 0 end
if cur[1] ~= ARGV[1] then return 1 end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'u', ARGV[3], 'r', ARGV[4])
redis.call('PEXPIREAT', KEYS[1], ARGV[5])
if cur[2] ~= ARGV[3] and cur[2] ~= '' then
  redis.call('SREM', ARGV[7] .. 'u:' .. cur[2], ARGV[6])
end
if ARGV[3] ~= '' then index_add(ARGV[7], ARGV[3], ARGV[6], ARGV[5]) end
return 2"
    ))
});

/// KEYS[1] old, KEYS[2] new; ARGV expected, new version, user, record,
/// expire_at, old hex, new hex, prefix. Returns 0 missing, 1 conflict,
/// 2 saved, 3 collision.
static ROTATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{INDEX_ADD}
local cur = redis.call('HMGET', KEYS[1], 'v', 'u')
if not cur[1] then return 0 end
if cur[1] ~= ARGV[1] then return 1 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 3 end
redis.call('DEL', KEYS[1])
if cur[2] ~= '' then redis.call('SREM', ARGV[8] .. 'u:' .. cur[2], ARGV[6]) end
redis.call('HSET', KEYS[2], 'v', ARGV[2], 'u', ARGV[3], 'r', ARGV[4])
redis.call('PEXPIREAT', KEYS[2], ARGV[5])
if ARGV[3] ~= '' then index_add(ARGV[8], ARGV[3], ARGV[7], ARGV[5]) end
return 2"
    ))
});

/// KEYS[1] session; ARGV hex, prefix. Returns 1 if it existed.
static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local u = redis.call('HGET', KEYS[1], 'u')
if not u then return 0 end
redis.call('DEL', KEYS[1])
if u ~= '' then redis.call('SREM', ARGV[2] .. 'u:' .. u, ARGV[1]) end
return 1",
    )
});

/// ARGV prefix, user, hex to keep (or empty). Returns how many were deleted.
static DELETE_BY_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local idx = ARGV[1] .. 'u:' .. ARGV[2]
local n = 0
for _, hex in ipairs(redis.call('SMEMBERS', idx)) do
  if hex ~= ARGV[3] then
    n = n + redis.call('DEL', ARGV[1] .. 's:' .. hex)
    redis.call('SREM', idx, hex)
  end
end
return n",
    )
});

/// ARGV prefix, user. Returns [hex, version, record, ...]; prunes stale
/// index members.
static LIST_BY_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local idx = ARGV[1] .. 'u:' .. ARGV[2]
local out = {}
for _, hex in ipairs(redis.call('SMEMBERS', idx)) do
  local f = redis.call('HMGET', ARGV[1] .. 's:' .. hex, 'v', 'r')
  if f[1] then
    table.insert(out, hex)
    table.insert(out, f[1])
    table.insert(out, f[2])
  else
    redis.call('SREM', idx, hex)
  end
end
return out",
    )
});

/// Sessions in Redis, expiring by TTL; what several app instances share.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to `url` (`redis://host:port/db`) with a reconnecting
    /// connection manager.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new(client).await?;
        Ok(Self::from_connection(conn))
    }

    /// Uses an existing connection manager.
    pub fn from_connection(conn: ConnectionManager) -> Self {
        Self {
            conn,
            prefix: "auth:".to_owned(),
        }
    }

    /// Key prefix (default `auth:`), to share a database with other data.
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    fn session_key(&self, key: &SessionKey) -> String {
        format!("{}s:{}", self.prefix, key.to_hex())
    }
}

fn decode(version: &str, json: &str) -> Result<SessionRecord, StoreError> {
    let version = version
        .parse()
        .map_err(|_| StoreError::Backend("session version is not a number".into()))?;
    SessionRecord::from_json(json, version)
}

fn outcome(code: i64) -> Result<SaveOutcome, StoreError> {
    match code {
        0 => Ok(SaveOutcome::Missing),
        1 => Ok(SaveOutcome::Conflict),
        2 => Ok(SaveOutcome::Saved),
        3 => Err(StoreError::Collision),
        _ => Err(StoreError::Backend("unexpected script result".into())),
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn create(&self, key: &SessionKey, record: &SessionRecord) -> Result<(), StoreError> {
        let created: i64 = CREATE
            .key(self.session_key(key))
            .arg(record.version)
            .arg(record.user_id.as_deref().unwrap_or(""))
            .arg(record.to_json()?)
            .arg(record.expires_at().as_unix_millis())
            .arg(key.to_hex())
            .arg(&self.prefix)
            .invoke_async(&mut self.conn.clone())
            .await?;
        if created == 1 {
            Ok(())
        } else {
            Err(StoreError::Collision)
        }
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        let (version, json): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(self.session_key(key))
            .arg("v")
            .arg("r")
            .query_async(&mut self.conn.clone())
            .await?;
        match (version, json) {
            (Some(version), Some(json)) => decode(&version, &json).map(|r| Some(Arc::new(r))),
            _ => Ok(None),
        }
    }

    async fn save(
        &self,
        key: &SessionKey,
        record: &SessionRecord,
        expected_version: u64,
    ) -> Result<SaveOutcome, StoreError> {
        let code: i64 = SAVE
            .key(self.session_key(key))
            .arg(expected_version)
            .arg(expected_version + 1)
            .arg(record.user_id.as_deref().unwrap_or(""))
            .arg(record.to_json()?)
            .arg(record.expires_at().as_unix_millis())
            .arg(key.to_hex())
            .arg(&self.prefix)
            .invoke_async(&mut self.conn.clone())
            .await?;
        outcome(code)
    }

    async fn rotate(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        record: &SessionRecord,
        expected_version: u64,
    ) -> Result<SaveOutcome, StoreError> {
        let code: i64 = ROTATE
            .key(self.session_key(old))
            .key(self.session_key(new))
            .arg(expected_version)
            .arg(expected_version + 1)
            .arg(record.user_id.as_deref().unwrap_or(""))
            .arg(record.to_json()?)
            .arg(record.expires_at().as_unix_millis())
            .arg(old.to_hex())
            .arg(new.to_hex())
            .arg(&self.prefix)
            .invoke_async(&mut self.conn.clone())
            .await?;
        outcome(code)
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool, StoreError> {
        let deleted: i64 = DELETE
            .key(self.session_key(key))
            .arg(key.to_hex())
            .arg(&self.prefix)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(deleted == 1)
    }

    async fn delete_by_user(
        &self,
        user_id: &str,
        keep: Option<&SessionKey>,
    ) -> Result<u64, StoreError> {
        let deleted: u64 = DELETE_BY_USER
            .arg(&self.prefix)
            .arg(user_id)
            .arg(keep.map(SessionKey::to_hex).unwrap_or_default())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(deleted)
    }

    async fn list_by_user(
        &self,
        user_id: &str,
    ) -> Result<Vec<(SessionKey, SessionRecord)>, StoreError> {
        let flat: Vec<String> = LIST_BY_USER
            .arg(&self.prefix)
            .arg(user_id)
            .invoke_async(&mut self.conn.clone())
            .await?;
        flat.chunks_exact(3)
            .map(|chunk| {
                let key = SessionKey::from_hex(&chunk[0])
                    .ok_or_else(|| StoreError::Backend("malformed session index entry".into()))?;
                Ok((key, decode(&chunk[1], &chunk[2])?))
            })
            .collect()
    }

    async fn delete_expired(&self, _now: Timestamp) -> Result<u64, StoreError> {
        // Redis expires records by TTL; index entries are pruned when read.
        Ok(0)
    }
}
