//! The one Redis connection of the Redis stores: a single node through a
//! reconnecting [`ConnectionManager`], or a Redis Cluster through the
//! `redis` crate's async cluster client.
//!
//! # URL forms
//!
//! * `redis://host:port/db` (or `rediss://`, `redis+unix://`, ...): one
//!   node, as [`redis::Client::open`] reads it.
//! * A comma-separated list of `redis://` (or `rediss://`) seed nodes,
//!   `redis://10.0.0.1:7000,redis://10.0.0.2:7000,redis://10.0.0.3:7000`:
//!   a Redis Cluster; each entry is what [`redis::cluster::ClusterClient`]
//!   takes as an initial node (no database number: a cluster has only
//!   database 0). One seed is enough; write it with a trailing comma
//!   (`redis://10.0.0.1:7000,`) to say that it is a cluster.
//!
//! # Timeouts
//!
//! Both forms answer or fail within a bounded time, so a dead node never
//! hangs a request: 1 s to connect, 500 ms per response (the redis crate's
//! defaults for the connection manager, set explicitly for the cluster),
//! one connection attempt per reconnection of a single node (a command
//! waits for at most one, and one more when the first was refused and it
//! is sent again),
//! and for the cluster at most 2 s per request including redirections and
//! retries (2 retries, at most 200 ms apart).
//!
//! # Server-assisted client-side caching
//!
//! [`RedisConn::connect_tracked`] opens a single-node connection that
//! speaks RESP3 and has `CLIENT TRACKING ON OPTIN` switched on at every
//! (re)connection (the redis crate's `cache-aio` handshake, whose own
//! cache is left unused: it stores a reply after the invalidation that
//! should have removed it can already have been applied, and serves it
//! until its TTL). A read sent as `CLIENT CACHING YES` + the read, in one
//! pipeline, is tracked by the server, which then pushes an invalidation
//! for the key at its next write by anyone. [`ClientCache`] holds what
//! such reads returned and guarantees:
//!
//! * **No lost invalidation.** Every invalidation (a push, a local write,
//!   a dropped connection) bumps a generation; a read's result is stored
//!   only if the generation did not move since the read was sent. A push
//!   for a write after the read follows the read's reply on the wire, so
//!   it is either applied before the store (which it then refuses) or
//!   after it (and removes it).
//! * **No cache without a connection.** A dropped connection (the
//!   crate's disconnection notice, or any error of a command) empties the
//!   cache; entries are served only while a read sent in the last
//!   [`LIVENESS`] got its answer, so a connection that died silently (no
//!   FIN) stops serving cached entries within that time.
//!
//! A cluster connection is never tracked (the crate's cluster cache has
//! the same insert race, and tracking would have to follow every node).

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redis::aio::{
    AsyncPushSender, ConnectionLike, ConnectionManager, ConnectionManagerConfig, SendError,
};
use redis::caching::{CacheConfig, CacheMode};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{
    Cmd, FromRedisValue, IntoConnectionInfo, Pipeline, ProtocolVersion, PushInfo, PushKind,
    RedisFuture, RedisResult, Value,
};

/// Time to open a connection to one node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Time to wait for one node's answer.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
/// Time for one cluster request, redirections and retries included.
const CLUSTER_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// How long after a read was sent its answer vouches for the connection:
/// cached entries are served only within this time of the last answered
/// read (a silently dead connection delivers no invalidations).
pub(crate) const LIVENESS: Duration = Duration::from_secs(5);

/// The most entries a [`ClientCache`] holds (one arbitrary entry is
/// dropped to make room).
const CACHE_CAPACITY: usize = 16_384;

/// A client-side cache of reads tracked by the server (see the module
/// docs): values by Redis key, emptied by invalidation pushes, local
/// writes and dropped connections.
pub(crate) struct ClientCache<V> {
    state: Mutex<CacheState<V>>,
}

struct CacheState<V> {
    /// Bumped by every invalidation: a read's result is stored only if it
    /// did not move while the read was under way.
    generation: u64,
    /// Bumped when the connection drops (or may have).
    connection: u64,
    /// When the last answered read (on the current connection) was sent.
    confirmed: Option<Instant>,
    // foldhash (seeded), not SipHash: the keys are built from digests and
    // our own ids, never from text a client chooses.
    entries: HashMap<Box<[u8]>, V, foldhash::fast::RandomState>,
}

/// What a read saw of the cache when it was sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    generation: u64,
    connection: u64,
    sent: Instant,
}

impl<V: Clone> ClientCache<V> {
    /// An empty cache.
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(CacheState {
                generation: 0,
                connection: 0,
                confirmed: None,
                entries: HashMap::default(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, CacheState<V>> {
        // The state stays consistent at every step: a panic elsewhere
        // leaves nothing half-done.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cached value of `key`, if any and the connection answered a
    /// read within [`LIVENESS`].
    pub(crate) fn get(&self, key: &[u8]) -> Option<V> {
        let state = self.lock();
        let confirmed = state.confirmed?;
        if confirmed.elapsed() >= LIVENESS {
            return None;
        }
        state.entries.get(key).cloned()
    }

    /// Taken just before a tracked read is sent.
    pub(crate) fn ticket(&self) -> Ticket {
        let state = self.lock();
        Ticket {
            generation: state.generation,
            connection: state.connection,
            sent: Instant::now(),
        }
    }

    /// The read of `ticket` was answered: the connection was alive when it
    /// was sent. Stores `value` under `key` if nothing was invalidated
    /// since.
    pub(crate) fn answered(&self, ticket: Ticket, key: &[u8], value: Option<V>) {
        let mut state = self.lock();
        if ticket.connection != state.connection {
            return;
        }
        if state.confirmed.is_none_or(|at| at < ticket.sent) {
            state.confirmed = Some(ticket.sent);
        }
        let Some(value) = value else { return };
        if ticket.generation != state.generation {
            return;
        }
        if state.entries.len() >= CACHE_CAPACITY
            && !state.entries.contains_key(key)
            && let Some(victim) = state.entries.keys().next().cloned()
        {
            state.entries.remove(&victim);
        }
        state.entries.insert(key.into(), value);
    }

    /// Forgets `key` (it was or may have been written).
    pub(crate) fn invalidate(&self, key: &[u8]) {
        let mut state = self.lock();
        state.generation += 1;
        state.entries.remove(key);
    }

    /// Forgets everything, and that the connection was alive.
    pub(crate) fn clear(&self) {
        let mut state = self.lock();
        state.generation += 1;
        state.connection += 1;
        state.confirmed = None;
        state.entries.clear();
    }

    /// How many entries are cached.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

/// KEYS[1] a per-user index: a sorted set of members scored by when the
/// key each names dies (Unix milliseconds); ARGV member, dies at. Lists the
/// member (never lowering its score), drops the members whose keys died
/// more than five minutes ago by Redis's own clock, and keeps the index
/// alive at least until `dies at` (never shortens it). On one node the
/// keys expired by that same clock (`PEXPIREAT` of the same milliseconds),
/// so no member of a live key is dropped however far the app's clock is
/// from Redis's; the five minutes cover the clocks of a cluster's nodes,
/// which hold the index and its keys apart. So the index holds what lived
/// recently, not every key a user ever had. One key: one cluster slot.
/// Needs Redis 7 (`PEXPIRETIME`, `ZADD GT`).
pub(crate) static INDEX_ADD: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
redis.call('ZADD', KEYS[1], 'GT', ARGV[2], ARGV[1])
local t = redis.call('TIME')
local cut = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - 300000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('(%.0f', cut))
if redis.call('PEXPIRETIME', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIREAT', KEYS[1], ARGV[2])
end
return 1",
    )
});

/// `{prefix}{kind}{{{tag}}}`: a key whose hash tag is `tag`. Every
/// authenticated request builds one, so the pieces are pushed, not
/// formatted.
pub(crate) fn tagged_key(prefix: &str, kind: &str, tag: &str) -> String {
    let mut key = String::with_capacity(prefix.len() + kind.len() + tag.len() + 2);
    key.push_str(prefix);
    key.push_str(kind);
    key.push('{');
    key.push_str(tag);
    key.push('}');
    key
}

/// A tracked read for `cache`: `fields` of the hash at `key`, read with
/// `CLIENT CACHING YES` and `HMGET` in one pipeline (one round trip), so
/// the server reports the next change of `key`. Answers the ticket taken
/// before it was sent, for [`ClientCache::answered`]; empties the whole
/// cache when it fails (the connection may be gone).
pub(crate) async fn tracked_hmget<V: Clone, T: FromRedisValue>(
    conn: &RedisConn,
    cache: &ClientCache<V>,
    key: &str,
    fields: &[&str],
) -> RedisResult<(Ticket, T)> {
    let ticket = cache.ticket();
    let reply: RedisResult<(Value, T)> = redis::pipe()
        .cmd("CLIENT")
        .arg("CACHING")
        .arg("YES")
        .cmd("HMGET")
        .arg(key)
        .arg(fields)
        .query_async(&mut conn.clone())
        .await;
    let (_, answer) = reply.inspect_err(|_| cache.clear())?;
    Ok((ticket, answer))
}

/// Applies the server's invalidation pushes and the crate's
/// disconnection notices to a [`ClientCache`].
struct Invalidator<V>(Arc<ClientCache<V>>);

impl<V: Clone + Send + 'static> AsyncPushSender for Invalidator<V> {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        match info.kind {
            PushKind::Invalidate => match info.data.first() {
                Some(Value::Array(keys)) => {
                    for key in keys {
                        match key {
                            Value::BulkString(key) => self.0.invalidate(key),
                            Value::SimpleString(key) => self.0.invalidate(key.as_bytes()),
                            // Not a key we can read: forget everything.
                            _ => self.0.clear(),
                        }
                    }
                }
                // Nil after FLUSHALL / FLUSHDB, or a shape we do not know.
                _ => self.0.clear(),
            },
            PushKind::Disconnection => self.0.clear(),
            _ => {}
        }
        Ok(())
    }
}

/// A connection to a single Redis node or to a Redis Cluster. Cheap to
/// clone (both kinds multiplex one connection per node).
#[derive(Clone)]
pub(crate) enum RedisConn {
    /// One node (or a proxy in front of several).
    Single(ConnectionManager),
    /// A Redis Cluster: each command goes to the node of its keys' slot.
    Cluster(ClusterConnection),
}

impl fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No address: a URL may carry a password.
        f.write_str(match self {
            Self::Single(_) => "RedisConn::Single",
            Self::Cluster(_) => "RedisConn::Cluster",
        })
    }
}

/// A single node's connection manager: the timeouts above, and one
/// connection attempt per reconnection. Every command issued while the
/// manager reconnects waits for that reconnection; the crate's default
/// (six retries from 100 ms, doubling) held each for 6 to 13 s while
/// Redis was away. A failed attempt fails the commands waiting on it, and
/// the next command starts another.
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(0)
}

/// The seed nodes of a cluster URL, or `None` for a single-node URL.
fn cluster_seeds(url: &str) -> Option<Vec<&str>> {
    url.contains(',').then(|| {
        url.split(',')
            .map(str::trim)
            .filter(|seed| !seed.is_empty())
            .collect()
    })
}

impl RedisConn {
    /// Connects to `url`: one node, or a cluster when `url` is a
    /// comma-separated list of seed nodes (see the module docs).
    pub(crate) async fn connect(url: &str) -> RedisResult<Self> {
        match cluster_seeds(url) {
            Some(seeds) => Self::connect_cluster(seeds).await,
            None => {
                let client = redis::Client::open(url)?;
                Ok(Self::Single(
                    ConnectionManager::new_with_config(client, manager_config()).await?,
                ))
            }
        }
    }

    /// Like [`connect`](Self::connect), with server-assisted caching into
    /// `cache` for a single node (see the module docs). Returns whether
    /// the connection is tracked: not for a cluster, nor when the URL asks
    /// for RESP2 (`protocol=resp2`), which is how to switch caching off.
    pub(crate) async fn connect_tracked<V: Clone + Send + 'static>(
        url: &str,
        cache: &Arc<ClientCache<V>>,
    ) -> RedisResult<(Self, bool)> {
        if cluster_seeds(url).is_some() {
            return Ok((Self::connect(url).await?, false));
        }
        let info = url.into_connection_info()?;
        if url.contains("protocol=") && !info.redis_settings().protocol().supports_resp3() {
            return Ok((Self::connect(url).await?, false));
        }
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(settings))?;
        let config = manager_config()
            // Only for `CLIENT TRACKING ON OPTIN` at each connection: no
            // command opts in to the crate's own cache.
            .set_cache_config(
                CacheConfig::new()
                    .set_mode(CacheMode::OptIn)
                    .set_size(NonZeroUsize::MIN),
            )
            .set_push_sender(Invalidator(Arc::clone(cache)));
        let conn = ConnectionManager::new_with_config(client, config).await?;
        cache.clear();
        Ok((Self::Single(conn), true))
    }

    async fn connect_cluster(seeds: Vec<&str>) -> RedisResult<Self> {
        if seeds.is_empty() {
            return Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "a Redis Cluster URL needs at least one seed node",
            )));
        }
        let client = ClusterClientBuilder::new(seeds)
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .overall_response_timeout(Some(CLUSTER_REQUEST_TIMEOUT))
            .retries(2)
            .min_retry_wait(10)
            .max_retry_wait(200)
            .build()?;
        Ok(Self::Cluster(client.get_async_connection().await?))
    }

    /// Whether this is a cluster connection (commands of one call must
    /// then keep to one slot).
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

impl From<ConnectionManager> for RedisConn {
    fn from(conn: ConnectionManager) -> Self {
        Self::Single(conn)
    }
}

impl From<ClusterConnection> for RedisConn {
    fn from(conn: ClusterConnection) -> Self {
        Self::Cluster(conn)
    }
}

/// A single node's command that failed because the manager's last
/// reconnection attempt was refused is sent once more: a refusal comes
/// only from a connection attempt, so the command never reached Redis, and
/// the manager has just started a new attempt, which the second send waits
/// for. So the first command after Redis comes back is answered, not
/// failed with the refusal of an attempt made while it was away.
impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => Box::pin(async move {
                match conn.req_packed_command(cmd).await {
                    Err(error) if error.is_connection_refusal() => {
                        conn.req_packed_command(cmd).await
                    }
                    answer => answer,
                }
            }),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => Box::pin(async move {
                match conn.req_packed_commands(pipeline, offset, count).await {
                    Err(error) if error.is_connection_refusal() => {
                        conn.req_packed_commands(pipeline, offset, count).await
                    }
                    answer => answer,
                }
            }),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

/// The server's `maxmemory-policy`, or `None` when it does not answer
/// `CONFIG GET` (managed services often refuse it).
pub(crate) async fn maxmemory_policy(conn: &mut RedisConn) -> Option<String> {
    // A map over RESP3, a flat list of pairs over RESP2: a map reads both.
    let mut reply: std::collections::HashMap<String, String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(conn)
        .await
        .ok()?;
    reply.remove("maxmemory-policy")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_are_lists() {
        assert_eq!(cluster_seeds("redis://127.0.0.1:6379/0"), None);
        assert_eq!(
            cluster_seeds("redis://a:7000, redis://b:7001"),
            Some(vec!["redis://a:7000", "redis://b:7001"])
        );
        assert_eq!(
            cluster_seeds("redis://a:7000,"),
            Some(vec!["redis://a:7000"])
        );
        assert_eq!(cluster_seeds(","), Some(vec![]));
    }

    #[test]
    fn tagged_keys_put_the_tag_in_braces() {
        assert_eq!(tagged_key("auth:", "s:", "ab12"), "auth:s:{ab12}");
        assert_eq!(tagged_key("", "f:", "x"), "f:{x}");
    }

    fn ticket_and_answer(cache: &ClientCache<u32>, key: &[u8], value: u32) {
        let ticket = cache.ticket();
        cache.answered(ticket, key, Some(value));
    }

    #[test]
    fn a_read_stores_and_an_invalidation_forgets() {
        let cache = ClientCache::new();
        assert_eq!(cache.get(b"k"), None);
        ticket_and_answer(&cache, b"k", 1);
        assert_eq!(cache.get(b"k"), Some(1));
        cache.invalidate(b"k");
        assert_eq!(cache.get(b"k"), None);
    }

    #[test]
    fn an_invalidation_during_a_read_keeps_its_result_out() {
        let cache = ClientCache::new();
        let ticket = cache.ticket();
        // The push for a write after the read, applied before its reply
        // is stored (another key's push counts too).
        cache.invalidate(b"other");
        cache.answered(ticket, b"k", Some(1));
        assert_eq!(cache.get(b"k"), None);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn a_dropped_connection_empties_the_cache_and_voids_reads_under_way() {
        let cache = ClientCache::new();
        ticket_and_answer(&cache, b"a", 1);
        let under_way = cache.ticket();
        cache.clear();
        assert_eq!(cache.get(b"a"), None);
        // A reply read from the old connection neither stores nor vouches
        // for the new one.
        cache.answered(under_way, b"b", Some(2));
        assert_eq!(cache.len(), 0);
        let ticket = cache.ticket();
        cache.answered(ticket, b"c", None);
        assert_eq!(cache.get(b"c"), None);
    }

    #[test]
    fn pushes_invalidate_keys_and_disconnections_clear() {
        let cache = Arc::new(ClientCache::new());
        let pushes = Invalidator(Arc::clone(&cache));
        ticket_and_answer(&cache, b"a", 1);
        ticket_and_answer(&cache, b"b", 2);
        pushes
            .send(PushInfo {
                kind: PushKind::Invalidate,
                data: vec![Value::Array(vec![Value::BulkString(b"a".to_vec())])],
            })
            .unwrap();
        assert_eq!(cache.get(b"a"), None);
        assert_eq!(cache.get(b"b"), Some(2));
        ticket_and_answer(&cache, b"a", 1);
        pushes
            .send(PushInfo {
                kind: PushKind::Invalidate,
                data: vec![Value::Nil],
            })
            .unwrap();
        assert_eq!(cache.len(), 0);
        ticket_and_answer(&cache, b"a", 1);
        pushes
            .send(PushInfo {
                kind: PushKind::Disconnection,
                data: vec![],
            })
            .unwrap();
        assert_eq!(cache.len(), 0);
        assert_eq!(cache.get(b"a"), None);
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = ClientCache::new();
        for i in 0..CACHE_CAPACITY + 10 {
            ticket_and_answer(&cache, format!("k{i}").as_bytes(), 0);
        }
        assert_eq!(cache.len(), CACHE_CAPACITY);
    }

    #[tokio::test]
    async fn an_empty_seed_list_is_an_error() {
        let error = RedisConn::connect(" , ").await.expect_err("an error");
        assert!(error.to_string().contains("seed node"), "{error}");
    }
}
