//! Redis session store, for a single node or a Redis Cluster.
//!
//! Layout, under a configurable prefix (default `auth:`):
//! * `{prefix}s:{<hex key>}`: a hash `v` (version), `u` (user id or empty),
//!   `r` (record JSON), `x` (until when the user's index is known to list
//!   it, Unix milliseconds), `w` (the id of the save that wrote it),
//!   expiring by TTL at the record's deadline. While a rotation is under
//!   way the new key holds only `u` and `p` (a reservation, 30 s TTL), which
//!   loads as no session; after it, the old key holds only `m` (the new
//!   key, 30 s TTL), and a deleted one only `d` (the id of the delete,
//!   30 s), which load as no session either and let the same step sent
//!   twice be recognised. (A marker holds its key for those 30 s: keys are
//!   random, so no create ever asks for it.)
//! * `{prefix}i:{<user id>}`: a sorted set of the user's session keys (hex),
//!   each scored with the time until which it may be live, for listing and
//!   revoking; expiring with its latest score. Members whose score passed
//!   more than five minutes ago by Redis's own clock (the clock that
//!   expires their keys; the five minutes cover a cluster's nodes) are
//!   dropped whenever a member is added; so an app instance whose clock
//!   runs ahead never drops a live session from the index.
//!
//! Every script that writes a session answers a second run of itself as
//! it answered the first (the cluster client sends a script again after a
//! slow answer, whether or not the server ran it).
//!
//! The braces are hash tags: each key is its own slot group, and every
//! script touches exactly one key, so the store runs unchanged on a single
//! node and on a Redis Cluster. (Keys of the earlier layout, `s:<hex>` and
//! `u:<user>`, are not read: an upgrade ends the sessions stored before it.)
//!
//! # Why this is safe without cross-key atomicity
//!
//! A session key and its user's index cannot share a slot (a load knows
//! only the session key), so no script keeps them in step. Instead:
//!
//! * **The index lists every live session of a user (a superset).** A
//!   session is added to its user's index *before* it becomes live under
//!   that user (create, a save that changes the user, a rotation), with a
//!   score no earlier than its deadline; a save that would carry a session
//!   past `x` or to another user first extends the index, then writes.
//!   Members are removed only when their session is provably gone for good
//!   (deleted by [`delete_by_user`](SessionStore::delete_by_user) or moved
//!   to another user) or five minutes after their score has passed (by
//!   Redis's clock, after the session's own key expired). A member
//!   whose session is merely absent stays: it may be a create under way.
//! * **A rotation never leaves two live keys, nor a key revocation missed.**
//!   `rotate` reserves the new key (collision check), lists it in the
//!   user's index, then deletes the old key by compare-and-set, and only
//!   then fills the reservation, which succeeds only while the reservation
//!   is still there. `delete_by_user` deletes what the index lists
//!   (reservations included), then reads the index again until a pass finds
//!   nothing new: a rotation that took the old key before the delete got to
//!   it had listed the new key before that, so the next pass deletes the
//!   reservation (the fill then fails: the session ends) or the filled key.
//! * A crash between the steps loses a session (its user logs in again) or
//!   leaves a stale index member; it never keeps a session alive.
//!
//! "Sign out everywhere" therefore ends every session that existed when it
//! began, as on one node; a login that finishes while it runs may survive,
//! as it would after it (the login flow re-checks the account's epoch for
//! that race). The security stamp checked on each load is independent of
//! all this. The index must not be evicted: run Redis with
//! `maxmemory-policy noeviction` ([`RedisStore::connect`] warns
//! otherwise).
//!
//! # Client-side cache (single node)
//!
//! [`RedisStore::connect`] to a single node caches loaded records in the
//! process, under server-assisted invalidation (RESP3 `CLIENT TRACKING ON
//! OPTIN`; Redis 6 or later, and the store needs Redis 7 anyway):
//!
//! * A load that misses costs one round trip: `CLIENT CACHING YES` and
//!   `HMGET` in one pipeline, which asks the server to report the next
//!   write of that key. A load that hits costs none. Only records are
//!   cached, never an absent key; every write stays a script.
//! * Any write of the key, by any instance (this one included), makes the
//!   server push an invalidation, which removes the record; this instance
//!   also forgets a key it writes as soon as the write returns, so it reads
//!   its own writes at once. Another instance's revocation is refused here
//!   from the first load after the push arrives (sub-millisecond on a
//!   LAN). A read's result is stored only if no invalidation arrived
//!   while it was under way (`redis_conn.rs` explains why that closes the
//!   race the redis crate's own cache has).
//! * Every load compares the record's deadline with the clock, cached or
//!   not: a cached record is never served past it.
//! * When the connection drops (the crate reports it, or a load or a write
//!   of a session record fails), the cache is emptied: invalidations sent while the
//!   connection was down are lost, so nothing read before is trusted. A
//!   connection that dies silently is caught by a bound instead: cached
//!   records are served only within 5 s of the send of the last load that
//!   Redis answered, after which a load goes to Redis again.
//!
//! A cluster connection, a store built from an existing connection
//! ([`RedisStore::from_connection`], [`RedisStore::from_cluster`]), and a
//! URL with `protocol=resp2` do not cache: each load is one round trip.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{RedisResult, Script};

use super::{SaveOutcome, SessionKey, SessionRecord, SessionStore, StoreError};
use crate::clock::{Clock, SystemClock, Timestamp};
use crate::redis_conn::{ClientCache, INDEX_ADD, RedisConn, maxmemory_policy, tracked_hmget};

/// Logs a warning unless Redis is set never to evict keys: "sign out
/// everywhere" ends the sessions a user's index lists, so an evicted index
/// would end none (a server that does not answer `CONFIG GET`, as managed
/// services often do, is taken as configured).
async fn warn_about_eviction(conn: &mut RedisConn) {
    if let Some(policy) = maxmemory_policy(conn).await
        && policy != "noeviction"
    {
        tracing::warn!(
            %policy,
            "session store: Redis may evict keys when full, including a user's session \
             index, after which sign out everywhere ends none of that user's sessions; \
             use maxmemory-policy noeviction (or no maxmemory)"
        );
    }
}

/// How long a rotation's reservation of the new key lives.
const RESERVATION_MS: i64 = 30_000;
/// `delete_by_user` passes over the index before it gives up (each pass
/// after the first needs a rotation or login of that user racing it).
const MAX_REVOKE_PASSES: usize = 32;

/// KEYS[1] session; ARGV version, user, record, expire_at, indexed until.
/// Returns 0 if the key is taken, else 1; 1 again when it holds exactly
/// this session (the cluster client sent the script again after a slow
/// answer: it must not read as a collision).
static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  local f = redis.call('HMGET', KEYS[1], 'v', 'u', 'r')
  if f[1] == ARGV[1] and f[2] == ARGV[2] and f[3] == ARGV[3] then return 1 end
  return 0
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'u', ARGV[2], 'r', ARGV[3], 'x', ARGV[5])
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
return 1",
    )
});

/// KEYS[1] session; ARGV expected, new version, user, record, expire_at,
/// indexed until (empty: unchanged), write id (random, one per `save`
/// call, kept in `w`). Returns 0 missing, 1 conflict, 2 saved (also when
/// this very save was applied already: the cluster client resends a script
/// after a slow answer; another request's save of the same version is a
/// conflict, however alike its record), 4 the index must list the session
/// first (a new user, or a deadline past `x`).
static SAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('HMGET', KEYS[1], 'v', 'u', 'x', 'w')
if not cur[1] then return 0 end
if cur[1] == ARGV[2] and cur[4] == ARGV[7] then return 2 end
if cur[1] ~= ARGV[1] then return 1 end
local x = cur[3] or '0'
if ARGV[6] ~= '' then
  x = ARGV[6]
elseif ARGV[3] ~= '' and (cur[2] ~= ARGV[3] or tonumber(x) < tonumber(ARGV[5])) then
  return 4
end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'u', ARGV[3], 'r', ARGV[4], 'x', x, 'w', ARGV[7])
redis.call('PEXPIREAT', KEYS[1], ARGV[5])
return 2",
    )
});

/// KEYS[1] new key; ARGV user, reservation ms. Returns 0 if taken, else
/// 1; 1 again when it is this user's reservation already (the script sent
/// again).
static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  local f = redis.call('HMGET', KEYS[1], 'p', 'u')
  if f[1] == '1' and f[2] == ARGV[1] then return 1 end
  return 0
end
redis.call('HSET', KEYS[1], 'u', ARGV[1], 'p', '1')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1",
    )
});

/// KEYS[1] old key; ARGV expected version, new key (hex), marker ms.
/// Replaces it, when the version matches, with a marker naming the new key
/// (no session: a load finds none), kept as long as a reservation, so the
/// same take sent again (the cluster client resends a script after a slow
/// answer) answers taken again instead of missing. Returns 0 missing,
/// 1 conflict, 2 taken.
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local f = redis.call('HMGET', KEYS[1], 'v', 'm')
if f[2] and f[2] == ARGV[2] then return 2 end
if not f[1] then return 0 end
if f[1] ~= ARGV[1] then return 1 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'm', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 2",
    )
});

/// KEYS[1] new key; ARGV version, user, record, expire_at, indexed until.
/// Fills the reservation if it is still there (else 0); 1 again when it
/// holds exactly this session already (the script sent again).
static FILL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local f = redis.call('HMGET', KEYS[1], 'p', 'u', 'v', 'r')
if f[1] ~= '1' and f[2] == ARGV[2] and f[3] == ARGV[1] and f[4] == ARGV[3] then return 1 end
if f[1] ~= '1' or f[2] ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'u', ARGV[2], 'r', ARGV[3], 'x', ARGV[5])
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
return 1",
    )
});

/// KEYS[1] session; ARGV write id (random, one per `delete` call), marker
/// ms. Deletes it (or a reservation); 1 if a session existed. A deleted
/// session leaves a marker naming the write (no session: a load finds
/// none), so the same delete sent again answers 1 again; another request's
/// delete answers 0, and leaves any marker alone (it is another write's
/// answer to its own resend).
static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local f = redis.call('HMGET', KEYS[1], 'v', 'd', 'p')
if f[2] and f[2] == ARGV[1] then return 1 end
if not f[1] then
  if f[3] then redis.call('DEL', KEYS[1]) end
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'd', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1",
    )
});

/// KEYS[1] session or reservation; ARGV user. Deletes it if it is the
/// user's: 1 (a session), 2 (a reservation); 0 absent, -1 another user's.
static DELETE_IF_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local f = redis.call('HMGET', KEYS[1], 'u', 'v')
if not f[1] then return 0 end
if f[1] ~= ARGV[1] then return -1 end
redis.call('DEL', KEYS[1])
if f[2] then return 1 end
return 2",
    )
});

/// Sessions in Redis (one node or a Redis Cluster), expiring by TTL; what
/// several app instances share.
///
/// Keys (default prefix `auth:`): `s:{<hex key>}` per session and
/// `i:{<user id>}` per user (a sorted set listing the user's sessions).
/// Every Lua script touches one key, so the same code runs on one node and
/// on a cluster. A user's index lists every live session of the user: an
/// entry is written before its session becomes live, and a rotation
/// reserves the new key, lists it, takes the old key by compare-and-set
/// and only then fills the reservation, which a concurrent
/// [`delete_by_user`](SessionStore::delete_by_user) deletes too. So "sign
/// out everywhere" ends every session that existed when it began, without
/// cross-slot transactions (the full argument is in `session/redis_store.rs`
/// and `docs/security.md`). Sessions stored under the layout before
/// cluster support are not read: upgrading ends them.
#[derive(Clone)]
pub struct RedisStore {
    conn: RedisConn,
    prefix: String,
    /// Loaded records, kept fresh by the server's invalidations (a single
    /// node connected by [`RedisStore::connect`]).
    cache: Option<Arc<ClientCache<Arc<SessionRecord>>>>,
    /// Sends every script twice, as the cluster client does after a slow
    /// answer (tests only).
    #[cfg(test)]
    resend: bool,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("cluster", &self.conn.is_cluster())
            .field("client_cache", &self.cache.is_some())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to `url`: one node (`redis://host:port/db`, a reconnecting
    /// connection manager), or a Redis Cluster given as comma-separated
    /// seed nodes (`redis://10.0.0.1:7000,redis://10.0.0.2:7000`; one seed
    /// with a trailing comma). Connects within 1 s; each command answers
    /// within 500 ms (a cluster request, with its retries, within 2 s).
    ///
    /// On a single node the store caches loaded sessions in this process
    /// under server-assisted invalidation (RESP3 client tracking, Redis 6
    /// or later; the module docs of `session/redis_store.rs` say how): a
    /// repeated load of a session nobody wrote costs no round trip. Add
    /// `protocol=resp2` to the URL to switch the cache off (for a proxy
    /// that does not speak RESP3). A cluster is not cached.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let cache = Arc::new(ClientCache::new());
        let (mut conn, tracked) = RedisConn::connect_tracked(url, &cache).await?;
        warn_about_eviction(&mut conn).await;
        let mut store = Self::with_conn(conn);
        store.cache = tracked.then_some(cache);
        Ok(store)
    }

    /// Uses an existing connection manager (one node), without a
    /// client-side cache.
    pub fn from_connection(conn: ConnectionManager) -> Self {
        Self::with_conn(conn.into())
    }

    /// Uses an existing Redis Cluster connection.
    pub fn from_cluster(conn: ClusterConnection) -> Self {
        Self::with_conn(conn.into())
    }

    fn with_conn(conn: RedisConn) -> Self {
        Self {
            conn,
            prefix: "auth:".to_owned(),
            cache: None,
            #[cfg(test)]
            resend: false,
        }
    }

    /// Whether loads are cached in this process (see
    /// [`connect`](Self::connect)).
    pub fn caches_loads(&self) -> bool {
        self.cache.is_some()
    }

    /// Runs a script (in tests, twice when `resend` is set: every script
    /// that writes must answer a second run as it answered the first).
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        script: &redis::ScriptInvocation<'_>,
    ) -> RedisResult<T> {
        #[cfg(test)]
        if self.resend {
            script.invoke_async::<T>(&mut self.conn.clone()).await?;
        }
        script.invoke_async(&mut self.conn.clone()).await
    }

    /// The outcome of a write to `redis_key`: the key is forgotten by the
    /// cache whatever happened (a failed write may have been applied), and
    /// the whole cache after an error (the connection may be gone).
    fn written<T>(&self, redis_key: &str, result: RedisResult<T>) -> Result<T, StoreError> {
        if let Some(cache) = &self.cache {
            cache.invalidate(redis_key.as_bytes());
            if result.is_err() {
                cache.clear();
            }
        }
        Ok(result?)
    }

    /// Reads a session through the cache: one round trip on a miss
    /// (`CLIENT CACHING YES` and `HMGET` in one pipeline), none on a hit.
    async fn load_cached(
        &self,
        cache: &ClientCache<Arc<SessionRecord>>,
        redis_key: &str,
    ) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        if let Some(record) = cache.get(redis_key.as_bytes()) {
            return Ok(Some(record));
        }
        let (ticket, fields): (_, Fields) =
            tracked_hmget(&self.conn, cache, redis_key, &["v", "r"]).await?;
        let record = match fields {
            (Some(version), Some(json)) => Some(Arc::new(decode(&version, &json)?)),
            _ => None,
        };
        // An expired record is not kept: it stays gone, but a create of
        // the same key must not find it.
        let keep = record
            .as_ref()
            .filter(|record| record.expires_at() > SystemClock.now())
            .map(Arc::clone);
        cache.answered(ticket, redis_key.as_bytes(), keep);
        Ok(record)
    }

    /// Key prefix (default `auth:`), to share a database with other data.
    /// A prefix with braces in it takes over the hash tag: every key of
    /// the store then lives in one cluster slot (`{}` must not appear).
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    fn session_key(&self, hex: &str) -> String {
        crate::redis_conn::tagged_key(&self.prefix, "s:", hex)
    }

    fn index_key(&self, user: &str) -> String {
        format!("{}i:{{{user}}}", self.prefix)
    }

    /// Lists `hex` in `user`'s index until `until`.
    async fn index_add(&self, user: &str, hex: &str, until: i64) -> Result<(), StoreError> {
        self.invoke::<()>(INDEX_ADD.key(self.index_key(user)).arg(hex).arg(until))
            .await?;
        Ok(())
    }

    /// The user's index members (hex keys).
    async fn index_members(&self, user: &str) -> Result<Vec<String>, StoreError> {
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.index_key(user))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(members)
    }

    /// Drops members whose sessions are gone for good or not the user's.
    async fn index_remove(&self, user: &str, members: &[String]) -> Result<(), StoreError> {
        if members.is_empty() {
            return Ok(());
        }
        redis::cmd("ZREM")
            .arg(self.index_key(user))
            .arg(members)
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        Ok(())
    }
}

/// A random id for one write (128 bits, hex): what tells a script sent
/// again from another request's write.
fn write_id() -> Result<String, StoreError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|_| StoreError::Rng)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Until when the index must list a session of `record`: its absolute
/// deadline (no save moves a session past it), so saves rarely touch the
/// index.
fn indexed_until(record: &SessionRecord) -> i64 {
    record
        .absolute_expires_at
        .max(record.expires_at())
        .as_unix_millis()
}

/// A session's `v` and `r` fields, as `HMGET` returns them.
type Fields = (Option<String>, Option<String>);

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
        _ => Err(StoreError::Backend("unexpected script result".into())),
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn create(&self, key: &SessionKey, record: &SessionRecord) -> Result<(), StoreError> {
        let hex = key.to_hex();
        let until = indexed_until(record);
        let user = record.user_id.as_deref().unwrap_or("");
        if !user.is_empty() {
            self.index_add(user, &hex, until).await?;
        }
        let session_key = self.session_key(&hex);
        let created = self
            .invoke::<i64>(
                CREATE
                    .key(&session_key)
                    .arg(record.version)
                    .arg(user)
                    .arg(record.to_json()?)
                    .arg(record.expires_at().as_unix_millis())
                    .arg(until),
            )
            .await;
        let created = self.written(&session_key, created)?;
        if created == 1 {
            Ok(())
        } else {
            Err(StoreError::Collision)
        }
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        let redis_key = self.session_key(&key.to_hex());
        let record = match &self.cache {
            Some(cache) => self.load_cached(cache, &redis_key).await?,
            None => {
                let (version, json): Fields = redis::cmd("HMGET")
                    .arg(&redis_key)
                    .arg("v")
                    .arg("r")
                    .query_async(&mut self.conn.clone())
                    .await?;
                match (version, json) {
                    (Some(version), Some(json)) => Some(Arc::new(decode(&version, &json)?)),
                    _ => None,
                }
            }
        };
        // Redis expires the key by TTL, but a cached record (or a key the
        // server has not expired yet) may be past its deadline.
        let now = SystemClock.now();
        Ok(record.filter(|record| record.expires_at() > now))
    }

    async fn save(
        &self,
        key: &SessionKey,
        record: &SessionRecord,
        expected_version: u64,
    ) -> Result<SaveOutcome, StoreError> {
        let hex = key.to_hex();
        let session_key = self.session_key(&hex);
        let user = record.user_id.as_deref().unwrap_or("");
        let json = record.to_json()?;
        let write = write_id()?;
        let attempt = |indexed: Option<i64>| {
            let mut script = SAVE.key(&session_key);
            script
                .arg(expected_version)
                .arg(expected_version.wrapping_add(1))
                .arg(user)
                .arg(&json)
                .arg(record.expires_at().as_unix_millis())
                .arg(indexed.map(|until| until.to_string()).unwrap_or_default())
                .arg(&write);
            script
        };
        let code = self.invoke::<i64>(&attempt(None)).await;
        let code = self.written(&session_key, code)?;
        if code != 4 {
            return outcome(code);
        }
        // A new user, or a deadline past what the index covers: list the
        // session first, then write (the write re-checks the version).
        let until = indexed_until(record);
        self.index_add(user, &hex, until).await?;
        let code = self.invoke::<i64>(&attempt(Some(until))).await;
        outcome(self.written(&session_key, code)?)
    }

    async fn rotate(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        record: &SessionRecord,
        expected_version: u64,
    ) -> Result<SaveOutcome, StoreError> {
        let (old_hex, new_hex) = (old.to_hex(), new.to_hex());
        let new_key = self.session_key(&new_hex);
        let user = record.user_id.as_deref().unwrap_or("");
        let until = indexed_until(record);
        // 1. Reserve the new key (a taken one changes nothing).
        let reserved = self
            .invoke::<i64>(RESERVE.key(&new_key).arg(user).arg(RESERVATION_MS))
            .await;
        let reserved = self.written(&new_key, reserved)?;
        if reserved != 1 {
            return Err(StoreError::Collision);
        }
        // 2. List it under its user before anything can find it live.
        if !user.is_empty() {
            self.index_add(user, &new_hex, until).await?;
        }
        // 3. Take the old key (compare-and-set on its version).
        let old_key = self.session_key(&old_hex);
        let taken = self
            .invoke::<i64>(
                TAKE.key(&old_key)
                    .arg(expected_version)
                    .arg(&new_hex)
                    .arg(RESERVATION_MS),
            )
            .await;
        let taken = self.written(&old_key, taken)?;
        if taken != 2 {
            let dropped = redis::cmd("DEL")
                .arg(&new_key)
                .query_async::<()>(&mut self.conn.clone())
                .await;
            self.written(&new_key, dropped)?;
            return outcome(taken);
        }
        // 4. Fill the reservation, unless a revocation deleted it meanwhile.
        let filled = self
            .invoke::<i64>(
                FILL.key(&new_key)
                    .arg(expected_version.wrapping_add(1))
                    .arg(user)
                    .arg(record.to_json()?)
                    .arg(record.expires_at().as_unix_millis())
                    .arg(until),
            )
            .await;
        let filled = self.written(&new_key, filled)?;
        Ok(if filled == 1 {
            SaveOutcome::Saved
        } else {
            SaveOutcome::Missing
        })
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool, StoreError> {
        let session_key = self.session_key(&key.to_hex());
        let write = write_id()?;
        let deleted = self
            .invoke::<i64>(DELETE.key(&session_key).arg(&write).arg(RESERVATION_MS))
            .await;
        Ok(self.written(&session_key, deleted)? == 1)
    }

    async fn delete_by_user(
        &self,
        user_id: &str,
        keep: Option<&SessionKey>,
    ) -> Result<u64, StoreError> {
        let mut seen: HashSet<String> = keep.map(SessionKey::to_hex).into_iter().collect();
        let mut deleted = 0;
        for _ in 0..MAX_REVOKE_PASSES {
            let fresh: Vec<String> = self
                .index_members(user_id)
                .await?
                .into_iter()
                .filter(|hex| !seen.contains(hex))
                .collect();
            if fresh.is_empty() {
                return Ok(deleted);
            }
            let mut gone = Vec::new();
            for hex in fresh {
                let session_key = self.session_key(&hex);
                let code = self
                    .invoke::<i64>(DELETE_IF_USER.key(&session_key).arg(user_id))
                    .await;
                let code = self.written(&session_key, code)?;
                if code == 1 {
                    deleted += 1;
                }
                // Absent (0) may be a create under way: it stays listed.
                if code != 0 {
                    gone.push(hex.clone());
                }
                seen.insert(hex);
            }
            self.index_remove(user_id, &gone).await?;
        }
        Err(StoreError::Backend(
            "the user's sessions kept changing while they were revoked".into(),
        ))
    }

    async fn list_by_user(
        &self,
        user_id: &str,
    ) -> Result<Vec<(SessionKey, SessionRecord)>, StoreError> {
        let mut out = Vec::new();
        let mut elsewhere = Vec::new();
        for hex in self.index_members(user_id).await? {
            let (version, user, json): (Option<String>, Option<String>, Option<String>) =
                redis::cmd("HMGET")
                    .arg(self.session_key(&hex))
                    .arg("v")
                    .arg("u")
                    .arg("r")
                    .query_async(&mut self.conn.clone())
                    .await?;
            match (version, user, json) {
                (Some(version), Some(user), Some(json)) if user == user_id => {
                    let key = SessionKey::from_hex(&hex).ok_or_else(|| {
                        StoreError::Backend("malformed session index entry".into())
                    })?;
                    out.push((key, decode(&version, &json)?));
                }
                // Moved to another user, who lists it now.
                (Some(_), Some(_), Some(_)) => elsewhere.push(hex),
                _ => {}
            }
        }
        self.index_remove(user_id, &elsewhere).await?;
        Ok(out)
    }

    async fn delete_expired(&self, _now: Timestamp) -> Result<u64, StoreError> {
        // Redis expires records by TTL; index members when their score
        // passes.
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::session::{AuthState, SessionId};

    /// `AUTH_TEST_REDIS_URL`, or `None` with a printed reason (a failure
    /// under `CI=true`, where the service tests must run).
    fn redis_url() -> Option<String> {
        match std::env::var("AUTH_TEST_REDIS_URL") {
            Ok(url) if !url.is_empty() => Some(url),
            _ if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("AUTH_TEST_REDIS_URL is not set, but CI=true requires the service tests")
            }
            _ => {
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED (service): AUTH_TEST_REDIS_URL is not set; run .ci/run or export it"
                );
                None
            }
        }
    }

    fn record(user: &str) -> SessionRecord {
        let now = SystemClock.now();
        SessionRecord {
            user_id: Some(user.to_owned()),
            auth: AuthState::Anonymous,
            created_at: now,
            last_seen_at: now,
            idle_expires_at: now.saturating_add(std::time::Duration::from_secs(3600)),
            absolute_expires_at: now.saturating_add(std::time::Duration::from_secs(7200)),
            persistent: false,
            ip: None,
            user_agent: None,
            security_stamp: Some("stamp".into()),
            data: BTreeMap::new(),
            version: 0,
        }
    }

    /// The Redis Cluster client sends a script again after a slow answer,
    /// whether or not the server ran it. Every script that writes a
    /// session, sent twice, answers as its first run did: a create is no
    /// collision, a save no conflict, a rotation neither loses the session
    /// nor leaves the new key unknown, the old key stays dead, and a delete
    /// still says the session existed. (A deletion by user sent twice
    /// answers "absent" the second time: the count "sign out everywhere"
    /// reports may then be low; the sessions are gone either way.)
    #[tokio::test]
    async fn scripts_sent_twice_answer_as_their_first_run() {
        let Some(url) = redis_url() else {
            return;
        };
        let nonce = SessionId::generate().unwrap().key().to_hex();
        let mut store = RedisStore::connect(&url)
            .await
            .unwrap()
            .with_prefix(format!("resend-{nonce}:"));
        store.resend = true;
        let user = format!("user-{nonce}");
        let key = SessionId::generate().unwrap().key();
        let mut record = record(&user);
        store.create(&key, &record).await.unwrap();
        assert_eq!(store.load(&key).await.unwrap().unwrap().version, 0);

        record.data.insert("n".into(), serde_json::json!(1));
        assert!(matches!(
            store.save(&key, &record, 0).await.unwrap(),
            SaveOutcome::Saved
        ));
        let saved = store.load(&key).await.unwrap().unwrap();
        assert_eq!(
            (saved.version, saved.data.get("n")),
            (1, Some(&serde_json::json!(1)))
        );

        let new = SessionId::generate().unwrap().key();
        assert!(matches!(
            store.rotate(&key, &new, &record, 1).await.unwrap(),
            SaveOutcome::Saved
        ));
        assert!(
            store.load(&key).await.unwrap().is_none(),
            "the old key is dead"
        );
        assert_eq!(store.load(&new).await.unwrap().unwrap().version, 2);
        let listed = store.list_by_user(&user).await.unwrap();
        assert_eq!(listed.len(), 1, "only the new key is a session");
        assert_eq!(listed[0].0, new);
        store.delete_by_user(&user, None).await.unwrap();
        assert!(store.load(&new).await.unwrap().is_none());

        // A delete sent twice still says the session existed; another
        // delete of it says it did not.
        let other = SessionId::generate().unwrap().key();
        store.create(&other, &record).await.unwrap();
        assert!(store.delete(&other).await.unwrap());
        assert!(store.load(&other).await.unwrap().is_none());
        assert!(!store.delete(&other).await.unwrap());
    }
}
