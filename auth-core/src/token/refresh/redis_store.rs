//! Refresh-token families in Redis, for a single node or a Redis Cluster.
//!
//! Layout, under a prefix (default `auth:refresh:`):
//! * `{prefix}f:{<family id>}`: a hash: `u` (user id), `a` (amr, a JSON
//!   array), `st` (the session stamp), `c`, `e`, `l` (created, expires,
//!   last used: Unix milliseconds), `i` (idle timeout, milliseconds), `cur`
//!   (hex key of the current token), `prev`, `pat`, `s` (the token spent by
//!   the latest rotation, when, and the sealed successor). It expires
//!   (`PEXPIREAT`) when the family dies: the earlier of its expiry and its
//!   idle deadline, pushed on by each rotation.
//!
//! A presented token names its family ([`RefreshKey::family_id`]), so a
//! family is one hash however often it rotates: a key of a live family
//! that is neither its current token nor the latest spent one is reuse.
//! (Versions before 0.2 kept a key `{prefix}t:{hex key}` per token ever
//! current; nothing reads them any more and they expire with their
//! families; the 43-character tokens they stood for are refused.)
//!
//! * `{prefix}user:{user id}`: the user's family ids, for
//!   [`RefreshStore::revoke_user`]: a sorted set scored by each family's
//!   expiry, expiring no sooner than its longest-lived family. Each create
//!   drops the families that expired (more than five minutes ago, by
//!   Redis's clock), so it holds the families of the last 30 days (the
//!   default lifetime), not every one the user ever had.
//! * `{prefix}u:{user id}`: the set that indexed families before the
//!   sorted set; nothing adds to it any more, `revoke_user` still reads it
//!   (families created before an upgrade, or by an instance not yet
//!   upgraded), and it expires with its longest-lived family. Instances
//!   not yet upgraded read only this set: finish a rolling upgrade before
//!   relying on their `revoke_user` (a family it misses still ends at its
//!   next refresh, by the epoch in its stamp).
//!
//! # Client-side cache (single node)
//!
//! [`RedisRefreshStore::connect`] to a single node keeps, in this
//! process, when each family it was asked about stops being live (the
//! earlier of its expiry and its idle deadline), under the same
//! server-assisted invalidation as the session store (RESP3 client
//! tracking, opt-in per read; see `session/redis_store.rs`): a bearer
//! request whose family was checked before costs no round trip. Any write
//! of the family by any instance (a rotation, a revocation) evicts it; this
//! store's own writes evict it before they answer; an absent family is
//! never cached; the clock is compared at every check; a dropped
//! connection empties the cache. A rotation elsewhere that pushes the
//! idle deadline on reaches this process with its invalidation: until
//! then the family's older, earlier deadline is the one checked (never a
//! later one). A cluster, or a URL with `protocol=resp2`, is not cached.
//!
//! (The key names are those of the single-node layout before cluster
//! support: families stored before an upgrade keep working.) Every key
//! expires. Needs Redis 7 (`PEXPIRETIME`).
//!
//! # One slot per script
//!
//! Every script touches one key, so the store runs unchanged on one node
//! and on a Redis Cluster (the family key's braces are a hash tag; the
//! other keys are their own slot). All of a family's state (its current
//! and previous token, its deadlines) is in its one hash, so rotation,
//! reuse detection and revocation stay atomic: each is one script on that
//! hash. What spans keys is done in steps, in an order that never keeps a
//! family alive:
//!
//! * `create` lists the family in the user's index first, then writes the
//!   family.
//! * The user's index lists every live family (a superset): a family
//!   leaves it only once deleted or expired (ids are never reused);
//!   `revoke_user` deletes every family listed, so every family created
//!   before it began.

use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{RedisResult, Script};

use super::{Family, RefreshKey, RefreshStore, RefreshStoreError, Rotation, millis};
use crate::clock::Timestamp;
use crate::redis_conn::{ClientCache, INDEX_ADD, RedisConn, tracked_hmget};

/// Idle timeouts are kept to the millisecond, up to 2^50 ms (about 35,000
/// years): exact in Lua's numbers, and no overflow.
const MAX_IDLE_MS: i64 = 1 << 50;

/// KEYS family; ARGV id, user, amr, created, expires, idle, last used,
/// live until, hex, stamp. 0 if the family exists, else 1; 1 again when it
/// exists with this first token (the cluster client sent the script again
/// after a slow answer: it must not read as a collision).
static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'cur') == ARGV[9] then return 1 end
  return 0
end
redis.call('HSET', KEYS[1], 'u', ARGV[2], 'a', ARGV[3], 'c', ARGV[4], 'e', ARGV[5],
  'i', ARGV[6], 'l', ARGV[7], 'cur', ARGV[9], 'st', ARGV[10])
redis.call('PEXPIREAT', KEYS[1], ARGV[8])
return 1",
    )
});

/// KEYS family; ARGV presented hex, next hex, sealed successor, now,
/// grace (milliseconds, -1 for none). Answers `{'i'}` (invalid), `{'r', user, amr, stamp,
/// created, expires, idle, last used}` (rotated), `{'g', user, amr, stamp,
/// created, expires, idle, last used, sealed}` (grace) or `{'u', user}`
/// (reused: the family is deleted). The same rotation run again (the
/// cluster client resends a script after a slow answer) answers rotated
/// again: its successor is current and the presented token its
/// predecessor. A replay of the presented token comes with another
/// successor, so it is still reuse.
static ROTATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local fk = KEYS[1]
local f = redis.call('HMGET', fk, 'u', 'a', 'c', 'e', 'i', 'l', 'cur', 'prev', 'pat', 'st')
if not (f[1] and f[2] and f[3] and f[4] and f[5] and f[6] and f[7] and f[10]) then
  return {'i'}
end
local now = tonumber(ARGV[4])
local expires = tonumber(f[4])
local idle = tonumber(f[5])
if math.min(expires, tonumber(f[6]) + idle) <= now then return {'i'} end
if f[7] == ARGV[2] and f[8] == ARGV[1] then
  return {'r', f[1], f[2], f[10], f[3], f[4], f[5], f[6]}
end
if f[7] == ARGV[1] then
  redis.call('HSET', fk, 'cur', ARGV[2], 'prev', ARGV[1], 'pat', ARGV[4], 's', ARGV[3], 'l', ARGV[4])
  redis.call('PEXPIREAT', fk, string.format('%.0f', math.min(expires, now + idle)))
  return {'r', f[1], f[2], f[10], f[3], f[4], f[5], ARGV[4]}
end
local grace = tonumber(ARGV[5])
if grace >= 0 and f[8] == ARGV[1] and f[9] and math.max(0, now - tonumber(f[9])) < grace then
  return {'g', f[1], f[2], f[10], f[3], f[4], f[5], f[6], redis.call('HGET', fk, 's') or ''}
end
redis.call('DEL', fk)
return {'u', f[1]}",
    )
});

/// KEYS family; ARGV user. Deletes the family if it is the user's: 1;
/// 0 absent; -1 another user's.
static REVOKE_IF_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local user = redis.call('HGET', KEYS[1], 'u')
if not user then return 0 end
if user ~= ARGV[1] then return -1 end
redis.call('DEL', KEYS[1])
return 1",
    )
});

/// KEYS family. Deletes the family; returns its user, or nil.
static REVOKE_FAMILY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local user = redis.call('HGET', KEYS[1], 'u')
if not user then return false end
redis.call('DEL', KEYS[1])
return user",
    )
});

/// Refresh-token families in Redis (one node or a Redis Cluster),
/// expiring natively; what several app instances share. Deadlines are
/// judged on the caller's clock (the `now` passed in); Redis's own expiry
/// frees the memory (keep the clocks in sync, NTP, or a family may vanish
/// early), so [`RefreshStore::purge`] has nothing to do and answers 0.
#[derive(Clone)]
pub struct RedisRefreshStore {
    conn: RedisConn,
    prefix: String,
    /// When each family checked by `is_live` stops being live (Unix
    /// milliseconds), on a tracked connection.
    cache: Option<Arc<ClientCache<i64>>>,
}

impl fmt::Debug for RedisRefreshStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRefreshStore")
            .field("prefix", &self.prefix)
            .field("cluster", &self.conn.is_cluster())
            .field("client_cache", &self.cache.is_some())
            .finish_non_exhaustive()
    }
}

impl RedisRefreshStore {
    /// The default key prefix.
    pub const DEFAULT_PREFIX: &str = "auth:refresh:";

    /// Connects to `url`, with keys under
    /// [`DEFAULT_PREFIX`](Self::DEFAULT_PREFIX): one node
    /// (`redis://host:port/db`, a reconnecting connection manager), or a
    /// Redis Cluster given as comma-separated seed nodes
    /// (`redis://10.0.0.1:7000,redis://10.0.0.2:7000`; one seed with a
    /// trailing comma). Connects within 1 s; each command answers within
    /// 500 ms (a cluster request, with its retries, within 2 s).
    ///
    /// On a single node the store caches, in this process, whether the
    /// families it checks are live, under server-assisted invalidation
    /// (RESP3 client tracking, Redis 6 or later; see the module docs).
    /// Add `protocol=resp2` to the URL to switch the cache off.
    pub async fn connect(url: &str) -> Result<Self, RefreshStoreError> {
        Self::connect_with_prefix(url, Self::DEFAULT_PREFIX).await
    }

    /// Connects to `url`, with every key under `prefix`.
    pub async fn connect_with_prefix(
        url: &str,
        prefix: impl Into<String>,
    ) -> Result<Self, RefreshStoreError> {
        let cache = Arc::new(ClientCache::new());
        let (conn, tracked) = RedisConn::connect_tracked(url, &cache).await?;
        let mut store = Self::with_conn(conn, prefix);
        store.cache = tracked.then_some(cache);
        Ok(store)
    }

    /// Whether `is_live` answers are cached in this process (see
    /// [`connect`](Self::connect)).
    pub fn caches_checks(&self) -> bool {
        self.cache.is_some()
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
            cache: None,
        }
    }

    /// The key prefix. A prefix with braces in it takes over the hash tag:
    /// every key of the store then lives in one cluster slot (`{}` must not
    /// appear).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The outcome of a write to the family at `family_key`: the cache
    /// forgets it whatever happened (a failed write may have been
    /// applied), and forgets everything after an error (the connection may
    /// be gone).
    fn written<T>(&self, family_key: &str, result: RedisResult<T>) -> RedisResult<T> {
        if let Some(cache) = &self.cache {
            cache.invalidate(family_key.as_bytes());
            if result.is_err() {
                cache.clear();
            }
        }
        result
    }

    /// When the family at `family_key` stops being live, if it exists: one
    /// command (`HMGET`), or, with the cache, none on a hit and one round
    /// trip (`CLIENT CACHING YES` + `HMGET`) on a miss.
    async fn live_until(&self, family_key: &str) -> Result<Option<i64>, RefreshStoreError> {
        let Some(cache) = &self.cache else {
            let fields: Deadlines = redis::cmd("HMGET")
                .arg(family_key)
                .arg("e")
                .arg("i")
                .arg("l")
                .query_async(&mut self.conn.clone())
                .await?;
            return Ok(live_until(fields));
        };
        if let Some(until) = cache.get(family_key.as_bytes()) {
            return Ok(Some(until));
        }
        let (ticket, fields): (_, Deadlines) =
            tracked_hmget(&self.conn, cache, family_key, &["e", "i", "l"]).await?;
        let until = live_until(fields);
        cache.answered(ticket, family_key.as_bytes(), until);
        Ok(until)
    }

    fn family_key(&self, id: &str) -> String {
        crate::redis_conn::tagged_key(&self.prefix, "f:", id)
    }

    fn user_key(&self, user_id: &str) -> String {
        format!("{}user:{user_id}", self.prefix)
    }

    /// The set that indexed a user's families before [`user_key`]'s
    /// sorted set (see the module docs).
    ///
    /// [`user_key`]: Self::user_key
    fn legacy_user_key(&self, user_id: &str) -> String {
        format!("{}u:{user_id}", self.prefix)
    }

    /// Deletes family `id`; answers its user if it existed, and drops it
    /// from the user's index (it is gone for good).
    async fn delete_family(&self, id: &str) -> Result<Option<String>, RefreshStoreError> {
        let key = self.family_key(id);
        let deleted = REVOKE_FAMILY
            .key(&key)
            .invoke_async(&mut self.conn.clone())
            .await;
        let user: Option<String> = self.written(&key, deleted)?;
        // The family is gone: that is the revocation. Dropping it from its
        // user's index is housekeeping (a stale member is skipped later): its
        // failure (another cluster node down) must not answer an error for
        // a revocation that took place.
        if let Some(user) = &user
            && let Err(error) = self.unlist(user, id).await
        {
            tracing::warn!(%error, "refresh store: a revoked family stays in its user's index");
        }
        Ok(user)
    }

    /// Drops a deleted family from its user's index.
    async fn unlist(&self, user: &str, id: &str) -> Result<(), RefreshStoreError> {
        redis::cmd("ZREM")
            .arg(self.user_key(user))
            .arg(id)
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        Ok(())
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
        debug_assert_eq!(first.family_id(), family.id, "a key of another family");
        let amr = serde_json::to_string(&family.amr).map_err(|_| RefreshStoreError::Corrupt)?;
        let idle = millis(family.idle_timeout).min(MAX_IDLE_MS);
        let live_until = family
            .expires_at
            .min(family.last_used_at.saturating_add(family.idle_timeout));
        let expires = family.expires_at.as_unix_millis();
        // 1. Listed under the user before it exists.
        INDEX_ADD
            .key(self.user_key(&family.user_id))
            .arg(&family.id)
            .arg(expires)
            .invoke_async::<()>(&mut self.conn.clone())
            .await?;
        // 2. The family.
        let key = self.family_key(&family.id);
        let created = CREATE
            .key(&key)
            .arg(&family.id)
            .arg(&family.user_id)
            .arg(amr)
            .arg(family.created_at.as_unix_millis())
            .arg(expires)
            .arg(idle)
            .arg(family.last_used_at.as_unix_millis())
            .arg(live_until.as_unix_millis())
            .arg(first.to_hex())
            .arg(&family.stamp)
            .invoke_async(&mut self.conn.clone())
            .await;
        let created: i64 = self.written(&key, created)?;
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
        let id = presented.family_id();
        debug_assert_eq!(next.family_id(), id, "a successor of another family");
        let key = self.family_key(&id);
        let answer = ROTATE
            .key(&key)
            .arg(presented.to_hex())
            .arg(next.to_hex())
            .arg(sealed_successor)
            .arg(now.as_unix_millis())
            .arg(grace.map_or(-1, millis))
            .invoke_async(&mut self.conn.clone())
            .await;
        let answer: Vec<Vec<u8>> = self.written(&key, answer)?;
        let mut answer = answer.into_iter();
        let kind = answer.next().ok_or(RefreshStoreError::Corrupt)?;
        let rest: Vec<Vec<u8>> = answer.collect();
        match kind.as_slice() {
            b"i" => Ok(Rotation::Invalid),
            b"r" => {
                let [user, amr, stamp, created, expires, idle, last_used]: [Vec<u8>; 7] =
                    rest.try_into().map_err(|_| RefreshStoreError::Corrupt)?;
                let family = family(&id, [user, amr, stamp, created, expires, idle, last_used])?;
                Ok(Rotation::Rotated(family))
            }
            b"g" => {
                let [user, amr, stamp, created, expires, idle, last_used, sealed]: [Vec<u8>; 8] =
                    rest.try_into().map_err(|_| RefreshStoreError::Corrupt)?;
                let fields = [user, amr, stamp, created, expires, idle, last_used];
                Ok(Rotation::Grace {
                    family: family(&id, fields)?,
                    sealed_successor: sealed,
                })
            }
            b"u" => {
                let [user_id]: [Vec<u8>; 1] =
                    rest.try_into().map_err(|_| RefreshStoreError::Corrupt)?;
                let user_id = text(user_id)?;
                // Housekeeping: a failure must not hide the reuse from the
                // caller (which audits it).
                if let Err(error) = self.unlist(&user_id, &id).await {
                    tracing::warn!(%error, "auth: unlisting a revoked refresh-token family failed");
                }
                Ok(Rotation::Reused {
                    family_id: id,
                    user_id,
                })
            }
            _ => Err(RefreshStoreError::Corrupt),
        }
    }

    async fn revoke_by_token(
        &self,
        token: RefreshKey,
    ) -> Result<Option<(String, String)>, RefreshStoreError> {
        let id = token.family_id();
        Ok(self.delete_family(&id).await?.map(|user| (id, user)))
    }

    async fn revoke_family(&self, family_id: &str) -> Result<bool, RefreshStoreError> {
        Ok(self.delete_family(family_id).await?.is_some())
    }

    async fn revoke_user(&self, user_id: &str) -> Result<u64, RefreshStoreError> {
        let index = self.user_key(user_id);
        let legacy = self.legacy_user_key(user_id);
        let listed: Vec<String> = redis::cmd("ZRANGE")
            .arg(&index)
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn.clone())
            .await?;
        let mut revoked = 0;
        // Every family is tried, even after a failure (one node of a
        // cluster may be down): the first error is answered at the end.
        let mut failed: Option<RefreshStoreError> = None;
        let listed_before: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&legacy)
            .query_async(&mut self.conn.clone())
            .await
            .unwrap_or_else(|error| {
                failed = Some(error.into());
                Vec::new()
            });
        // Each id with the index that lists it and how it leaves that index.
        let members = listed.into_iter().map(|id| (id, &index, "ZREM"));
        let members = members.chain(listed_before.into_iter().map(|id| (id, &legacy, "SREM")));
        for (id, listed_in, unlist) in members {
            let key = self.family_key(&id);
            let code = REVOKE_IF_USER
                .key(&key)
                .arg(user_id)
                .invoke_async(&mut self.conn.clone())
                .await;
            let code: i64 = match self.written(&key, code) {
                Ok(code) => code,
                Err(error) => {
                    failed.get_or_insert(error.into());
                    continue;
                }
            };
            if code == 1 {
                revoked += 1;
            }
            // Deleted (gone for good) or another user's: unlisted. An
            // absent family may be a create under way: it stays listed
            // until it expires.
            if code != 0 {
                let unlisted = redis::cmd(unlist)
                    .arg(listed_in)
                    .arg(&id)
                    .query_async::<()>(&mut self.conn.clone())
                    .await;
                if let Err(error) = unlisted {
                    failed.get_or_insert(error.into());
                }
            }
        }
        match failed {
            Some(error) => Err(error),
            None => Ok(revoked),
        }
    }

    async fn is_live(&self, family_id: &str, now: Timestamp) -> Result<bool, RefreshStoreError> {
        let until = self.live_until(&self.family_key(family_id)).await?;
        Ok(until.is_some_and(|until| now.as_unix_millis() < until))
    }

    fn reads_families(&self) -> bool {
        true
    }

    async fn family(&self, family_id: &str) -> Result<Option<Family>, RefreshStoreError> {
        let fields: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
            .arg(self.family_key(family_id))
            .arg(&["u", "a", "st", "c", "e", "i", "l"])
            .query_async(&mut self.conn.clone())
            .await?;
        let fields: Option<Vec<Vec<u8>>> = fields.into_iter().collect();
        let Some(fields) = fields else {
            return Ok(None);
        };
        let fields: [Vec<u8>; 7] = fields.try_into().map_err(|_| RefreshStoreError::Corrupt)?;
        family(family_id, fields).map(Some)
    }

    async fn purge(&self, _now: Timestamp) -> Result<u64, RefreshStoreError> {
        // Redis expires families (and their indexes) by TTL.
        Ok(0)
    }
}

/// A family's `e`, `i` and `l` fields (expiry, idle timeout, last use), as
/// `HMGET` answers them.
type Deadlines = (Option<i64>, Option<i64>, Option<i64>);

/// When a family stops being live, from its `e`, `i` and `l` fields (the
/// earlier of its expiry and its idle deadline); `None` when it is gone.
fn live_until(fields: Deadlines) -> Option<i64> {
    let (Some(expires), Some(idle), Some(last_used)) = fields else {
        return None;
    };
    Some(expires.min(last_used.saturating_add(idle)))
}
