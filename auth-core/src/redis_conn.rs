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
//! and for the cluster at most 2 s per request including redirections and
//! retries (2 retries, at most 200 ms apart).

use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// Time to open a connection to one node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Time to wait for one node's answer.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
/// Time for one cluster request, redirections and retries included.
const CLUSTER_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

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
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT));
                Ok(Self::Single(
                    ConnectionManager::new_with_config(client, config).await?,
                ))
            }
        }
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

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
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
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
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

    #[tokio::test]
    async fn an_empty_seed_list_is_an_error() {
        let error = RedisConn::connect(" , ").await.expect_err("an error");
        assert!(error.to_string().contains("seed node"), "{error}");
    }
}
