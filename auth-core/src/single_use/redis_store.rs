//! Single-use tokens in Redis, for a single node or a Redis Cluster.
//!
//! Layout, under a prefix (default `auth:token:`):
//! * `{prefix}t:{hex key}`: a hash `p` (purpose), `u` (user id), `b`
//!   (binding), `e` (expiry, Unix milliseconds), expiring (`PEXPIREAT`) at
//!   the token's expiry;
//! * `{prefix}user:{purpose}:{user id}`: the hex keys of that user's
//!   tokens for that purpose, for [`TokenStore::delete_for_user`]: a sorted
//!   set scored by each token's expiry, expiring no sooner than its
//!   longest-lived member. Each insert drops the members that expired (more
//!   than five minutes ago, by Redis's clock), so it holds only tokens of
//!   the last lifetime, however often the user asks for mail.
//! * `{prefix}u:{purpose}:{user id}`: the set that indexed tokens before
//!   the sorted set; nothing adds to it any more, `delete_for_user` still
//!   reads it (tokens issued before an upgrade, or by an instance not yet
//!   upgraded), and it expires with its longest-lived member. Instances
//!   not yet upgraded read only this set: finish a rolling upgrade before
//!   relying on their `delete_for_user` (a reset or magic link it misses
//!   still dies with a password change, being bound to the password).
//!
//! Every key expires. Needs Redis 7 (`PEXPIRETIME`). Every script touches
//! one key, so the store runs unchanged on one node and on a Redis Cluster
//! (no hash tags needed; the key names are those of the single-node store
//! before cluster support, so tokens issued before an upgrade still work).
//!
//! A token and its user's index cannot share a slot, so no script keeps
//! them in step; instead the index lists every live token of the user (a
//! superset): `insert` adds the token to the index *before* it writes the
//! token, and a member leaves the index only once its token is gone for
//! good (consumed, expired, or deleted by `delete_for_user`: keys are never
//! reused). `delete_for_user` therefore deletes every token inserted before
//! it began. Consuming is one script on the token's key, atomic as before;
//! dropping it from the index afterwards is best effort (a stale member
//! only waits for its expiry).

use std::fmt;
use std::sync::LazyLock;

use async_trait::async_trait;
use redis::Script;
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;

use super::{Purpose, TokenKey, TokenRecord, TokenStore, TokenStoreError};
use crate::clock::Timestamp;
use crate::redis_conn::{INDEX_ADD, RedisConn};

/// KEYS[1] token; ARGV purpose, user, binding, expires_at. Returns 0 if
/// the key exists, else 1; 1 again if it exists with exactly this record
/// (the cluster client resent the script after a slow answer).
static INSERT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  local f = redis.call('HMGET', KEYS[1], 'p', 'u', 'b', 'e')
  if f[1] == ARGV[1] and f[2] == ARGV[2] and f[3] == ARGV[3] and f[4] == ARGV[4] then
    return 1
  end
  return 0
end
redis.call('HSET', KEYS[1], 'p', ARGV[1], 'u', ARGV[2], 'b', ARGV[3], 'e', ARGV[4])
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
return 1",
    )
});

/// KEYS[1] token. Reads and deletes the token in one step: returns its
/// purpose, user, binding and expiry, nil if it does not exist, or an
/// empty list for a malformed record (deleted too). Purpose and expiry are
/// judged by the caller, on its own clock. Not made safe to run twice: a
/// rerun cannot be told from a second use, so the cluster client's resend
/// after a slow answer refuses the link (the safe side).
static CONSUME: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local f = redis.call('HMGET', KEYS[1], 'p', 'u', 'b', 'e')
if redis.call('DEL', KEYS[1]) == 0 then return false end
if not (f[1] and f[2] and f[3] and f[4]) then return {} end
return f",
    )
});

/// KEYS[1] token; ARGV purpose, user. Deletes the token if it is that
/// user's for that purpose: 1; 0 absent; -1 another's.
static DELETE_IF_OWNED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local f = redis.call('HMGET', KEYS[1], 'p', 'u')
if not f[1] then return 0 end
if f[1] ~= ARGV[1] or f[2] ~= ARGV[2] then return -1 end
redis.call('DEL', KEYS[1])
return 1",
    )
});

/// Single-use tokens in Redis, expiring natively at their deadline; what
/// several app instances share. Expiry is judged on the caller's clock
/// (the `now` of [`TokenStore::consume`]); Redis's own expiry frees the
/// memory (keep the clocks in sync, NTP, or a token may vanish early), so
/// [`TokenStore::delete_expired`] has nothing to do and answers 0.
#[derive(Clone)]
pub struct RedisTokenStore {
    conn: RedisConn,
    prefix: String,
}

impl fmt::Debug for RedisTokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTokenStore")
            .field("prefix", &self.prefix)
            .field("cluster", &self.conn.is_cluster())
            .finish_non_exhaustive()
    }
}

impl RedisTokenStore {
    /// The default key prefix.
    pub const DEFAULT_PREFIX: &str = "auth:token:";

    /// Connects to `url`, with keys under
    /// [`DEFAULT_PREFIX`](Self::DEFAULT_PREFIX): one node
    /// (`redis://host:port/db`, a reconnecting connection manager), or a
    /// Redis Cluster given as comma-separated seed nodes
    /// (`redis://10.0.0.1:7000,redis://10.0.0.2:7000`; one seed with a
    /// trailing comma). Connects within 1 s; each command answers within
    /// 500 ms (a cluster request, with its retries, within 2 s).
    pub async fn connect(url: &str) -> Result<Self, TokenStoreError> {
        Self::connect_with_prefix(url, Self::DEFAULT_PREFIX).await
    }

    /// Connects to `url`, with every key under `prefix`.
    pub async fn connect_with_prefix(
        url: &str,
        prefix: impl Into<String>,
    ) -> Result<Self, TokenStoreError> {
        Ok(Self::with_conn(RedisConn::connect(url).await?, prefix))
    }

    /// Uses an existing connection manager (one node), with every key
    /// under `prefix`.
    pub fn from_connection(conn: ConnectionManager, prefix: impl Into<String>) -> Self {
        Self::with_conn(conn.into(), prefix)
    }

    /// Uses an existing Redis Cluster connection, with every key under
    /// `prefix`.
    pub fn from_cluster(conn: ClusterConnection, prefix: impl Into<String>) -> Self {
        Self::with_conn(conn.into(), prefix)
    }

    fn with_conn(conn: RedisConn, prefix: impl Into<String>) -> Self {
        Self {
            conn,
            prefix: prefix.into(),
        }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn token_key(&self, hex: &str) -> String {
        format!("{}t:{hex}", self.prefix)
    }

    fn index_key(&self, purpose: Purpose, user_id: &str) -> String {
        format!("{}user:{}:{user_id}", self.prefix, purpose.as_str())
    }

    /// The set that indexed tokens before [`index_key`]'s sorted set (see
    /// the module docs).
    ///
    /// [`index_key`]: Self::index_key
    fn legacy_index_key(&self, purpose: Purpose, user_id: &str) -> String {
        format!("{}u:{}:{user_id}", self.prefix, purpose.as_str())
    }
}

#[async_trait]
impl TokenStore for RedisTokenStore {
    async fn insert(&self, key: &TokenKey, record: &TokenRecord) -> Result<(), TokenStoreError> {
        let hex = key.to_hex();
        // Listed first: the index never misses a live token.
        INDEX_ADD
            .key(self.index_key(record.purpose, &record.user_id))
            .arg(&hex)
            .arg(record.expires_at.as_unix_millis())
            .invoke_async::<()>(&mut self.conn.clone())
            .await?;
        let inserted: i64 = INSERT
            .key(self.token_key(&hex))
            .arg(record.purpose.as_str())
            .arg(&record.user_id)
            .arg(&record.binding)
            .arg(record.expires_at.as_unix_millis())
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
            .key(self.token_key(&key.to_hex()))
            .invoke_async(&mut self.conn.clone())
            .await?;
        let Some(fields) = fields else {
            return Ok(None);
        };
        let [stored, user_id, binding, expires_at]: [String; 4] =
            fields.try_into().map_err(|_| TokenStoreError::Corrupt)?;
        // The token is gone for good: drop it from its index. Best effort:
        // the token is consumed either way, and a stale member only waits
        // for its expiry.
        if let Err(error) = redis::cmd("ZREM")
            .arg(format!("{}user:{stored}:{user_id}", self.prefix))
            .arg(key.to_hex())
            .query_async::<()>(&mut self.conn.clone())
            .await
        {
            tracing::debug!(%error, "single-use token: could not drop a consumed token from its index");
        }
        decode([stored, user_id, binding, expires_at], purpose, now)
    }

    async fn peek(
        &self,
        key: &TokenKey,
        purpose: Purpose,
        now: Timestamp,
    ) -> Result<Option<TokenRecord>, TokenStoreError> {
        let fields: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.token_key(&key.to_hex()))
            .arg(&["p", "u", "b", "e"])
            .query_async(&mut self.conn.clone())
            .await?;
        let Ok([Some(stored), Some(user_id), Some(binding), Some(expires_at)]) =
            <[Option<String>; 4]>::try_from(fields)
        else {
            return Ok(None);
        };
        decode([stored, user_id, binding, expires_at], purpose, now)
    }

    async fn delete_for_user(
        &self,
        user_id: &str,
        purpose: Purpose,
    ) -> Result<u64, TokenStoreError> {
        let index = self.index_key(purpose, user_id);
        let legacy = self.legacy_index_key(purpose, user_id);
        let listed: Vec<String> = redis::cmd("ZRANGE")
            .arg(&index)
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn.clone())
            .await?;
        // The old set last, and its failure answered only after the index's
        // tokens are deleted (on a cluster its node may be the one down).
        let (listed_before, failed) = match redis::cmd("SMEMBERS")
            .arg(&legacy)
            .query_async::<Vec<String>>(&mut self.conn.clone())
            .await
        {
            Ok(members) => (members, None),
            Err(error) => (Vec::new(), Some(error)),
        };
        let mut deleted = 0;
        // Each index with its members and how a member leaves it.
        for (index, members, unlist) in [(&index, listed, "ZREM"), (&legacy, listed_before, "SREM")]
        {
            let mut gone = Vec::new();
            for hex in members {
                let code: i64 = DELETE_IF_OWNED
                    .key(self.token_key(&hex))
                    .arg(purpose.as_str())
                    .arg(user_id)
                    .invoke_async(&mut self.conn.clone())
                    .await?;
                if code == 1 {
                    deleted += 1;
                }
                // Absent (0) may be an insert under way: it stays listed.
                if code != 0 {
                    gone.push(hex);
                }
            }
            if !gone.is_empty() {
                redis::cmd(unlist)
                    .arg(index)
                    .arg(&gone)
                    .query_async::<()>(&mut self.conn.clone())
                    .await?;
            }
        }
        match failed {
            Some(error) => Err(error.into()),
            None => Ok(deleted),
        }
    }

    async fn delete_expired(&self, _now: Timestamp) -> Result<u64, TokenStoreError> {
        // Redis expires tokens (and their indexes) by TTL.
        Ok(0)
    }
}

/// A token's stored fields (purpose, user, binding, expiry) as its record,
/// if it is for `purpose` and alive at `now`.
fn decode(
    [stored, user_id, binding, expires_at]: [String; 4],
    purpose: Purpose,
    now: Timestamp,
) -> Result<Option<TokenRecord>, TokenStoreError> {
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
