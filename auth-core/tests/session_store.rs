//! The session-store contract (`auth_core::testing::session_store`), run
//! against every `SessionStore` of the toolkit: memory, SQLite, PostgreSQL,
//! Redis and the tower-sessions bridge. Each case is its own test per store
//! (`sqlite::save_is_compare_and_set`, ...).
//!
//! PostgreSQL and Redis read `AUTH_TEST_POSTGRES_URL` / `AUTH_TEST_REDIS_URL`
//! (`.ci/run` starts both). Without a URL a local run skips those cases with
//! a printed reason; under `CI=true` a missing URL fails the test.
#![cfg(feature = "testing")]

use std::sync::Arc;

use auth_core::clock::Timestamp;
use auth_core::session::{SaveOutcome, SessionKey, SessionRecord, SessionStore, StoreError};
use auth_core::session_store_tests;
use auth_core::testing::SessionStoreCaps;

#[cfg(any(feature = "postgres", feature = "redis"))]
mod common;
#[cfg(any(feature = "postgres", feature = "redis"))]
use common::service_url;

#[cfg(any(feature = "sqlite", feature = "redis"))]
fn unique(tag: &str) -> String {
    format!(
        "{tag}-{}",
        auth_core::session::SessionId::generate()
            .unwrap()
            .key()
            .to_hex()
    )
}

session_store_tests!(memory, SessionStoreCaps::default(), {
    Some(Arc::new(auth_core::session::MemoryStore::new()) as Arc<dyn SessionStore>)
});

#[cfg(feature = "sqlite")]
session_store_tests!(sqlite, SessionStoreCaps::default(), {
    // Cargo's scratch folder for integration tests (under `target/`):
    // the suite's files do not pile up in /tmp.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique("sessions-db"));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("sessions.db").display());
    Some(Arc::new(
        auth_core::session::SqliteStore::connect(&url)
            .await
            .unwrap(),
    ) as Arc<dyn SessionStore>)
});

#[cfg(feature = "postgres")]
session_store_tests!(postgres, SessionStoreCaps::default(), {
    let url = service_url("AUTH_TEST_POSTGRES_URL")?;
    Some(Arc::new(
        auth_core::session::PostgresStore::connect(&url)
            .await
            .unwrap(),
    ) as Arc<dyn SessionStore>)
});

#[cfg(feature = "redis")]
session_store_tests!(
    redis,
    SessionStoreCaps {
        listing: true,
        native_expiry: true
    },
    {
        let url = service_url("AUTH_TEST_REDIS_URL")?;
        Some(Arc::new(
            auth_core::session::RedisStore::connect(&url)
                .await
                .unwrap()
                .with_prefix(format!("{}:", unique("test"))),
        ) as Arc<dyn SessionStore>)
    }
);

/// The one-call form runs every case too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_one_call_suite_passes_for_the_memory_store() {
    auth_core::testing::session_store_suite(
        || async { Arc::new(auth_core::session::MemoryStore::new()) as Arc<dyn SessionStore> },
        SessionStoreCaps::default(),
    )
    .await;
}

/// A store opened while another connection writes to the file waits for
/// it (the migration takes SQLite's write lock from the start) instead of
/// failing at once with "database is locked": a second instance starting
/// during a rolling restart, an admin tool writing.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_opened_while_another_connection_writes_waits_for_it() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique("busy-db"));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("auth.db").display());
    let first = auth_core::session::SqliteStore::connect(&url)
        .await
        .unwrap();
    // Another connection holds a write transaction for a while.
    let mut writer = first.pool().acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *writer)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE app_table (x INTEGER)")
        .execute(&mut *writer)
        .await
        .unwrap();
    let opening = tokio::spawn({
        let url = url.clone();
        async move { auth_core::session::SqliteStore::connect(&url).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // Still waiting (it cannot migrate without the write lock): an open
    // that failed at once would be finished by now.
    assert!(
        !opening.is_finished(),
        "the open did not wait for the writer"
    );
    sqlx::query("COMMIT").execute(&mut *writer).await.unwrap();
    opening
        .await
        .unwrap()
        .expect("opened once the writer committed");
}

/// The SQLite file holds hashes of session IDs, never an ID: neither its
/// cookie form nor its raw bytes appear anywhere in the file.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn the_sqlite_file_holds_no_session_id() {
    use auth_core::session::{SessionConfig, SessionManager};

    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique("sessions-db"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sessions.db");
    let store = auth_core::session::SqliteStore::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let manager = SessionManager::new(Arc::new(store.clone()), SessionConfig::default());
    let mut ids = Vec::new();
    for _ in 0..20 {
        let mut session = manager.create(Default::default()).await.unwrap();
        manager
            .insert(&mut session, "marker", &"present")
            .await
            .unwrap();
        ids.push(session.id().clone());
    }
    store.pool().close().await;
    // WAL mode: check the main file and the write-ahead log.
    let mut bytes = std::fs::read(&path).unwrap();
    if let Ok(wal) = std::fs::read(dir.join("sessions.db-wal")) {
        bytes.extend(wal);
    }
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(contains(b"present"), "the records are in the file");
    for id in &ids {
        let raw =
            <base64ct::Base64UrlUnpadded as base64ct::Encoding>::decode_vec(&id.encode()).unwrap();
        assert!(!contains(id.encode().as_bytes()), "cookie value stored");
        assert!(!contains(&raw), "raw session ID stored");
        assert!(contains(id.key().as_bytes()), "keyed by the hash");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A tower-sessions store as the docs of `tower_sessions_core` write one:
/// a map with no compare-and-set and no listing.
#[cfg(feature = "tower-sessions")]
mod tower_map {
    use std::collections::HashMap;

    use async_trait::async_trait;
    use tower_sessions_core::session::{Id, Record};
    use tower_sessions_core::session_store;

    #[derive(Debug, Default)]
    pub(super) struct MapStore(tokio::sync::Mutex<HashMap<Id, Record>>);

    #[async_trait]
    impl tower_sessions_core::SessionStore for MapStore {
        async fn save(&self, record: &Record) -> session_store::Result<()> {
            self.0.lock().await.insert(record.id, record.clone());
            Ok(())
        }

        async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
            let now = time::OffsetDateTime::now_utc();
            Ok(self
                .0
                .lock()
                .await
                .get(id)
                .filter(|r| r.expiry_date > now)
                .cloned())
        }

        async fn delete(&self, id: &Id) -> session_store::Result<()> {
            self.0.lock().await.remove(id);
            Ok(())
        }
    }
}

#[cfg(feature = "tower-sessions")]
session_store_tests!(
    tower_sessions,
    SessionStoreCaps {
        listing: false,
        native_expiry: true
    },
    {
        Some(Arc::new(auth_core::session::TowerSessionsStore::new(
            tower_map::MapStore::default(),
        )) as Arc<dyn SessionStore>)
    }
);

/// A store whose `save` is no compare-and-set (it writes over whatever
/// version is stored): the suite must catch it and name the case.
#[derive(Debug, Default)]
struct LostUpdates(auth_core::session::MemoryStore);

#[async_trait::async_trait]
impl SessionStore for LostUpdates {
    async fn create(&self, key: &SessionKey, record: &SessionRecord) -> Result<(), StoreError> {
        self.0.create(key, record).await
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        self.0.load(key).await
    }

    async fn save(
        &self,
        key: &SessionKey,
        record: &SessionRecord,
        _expected_version: u64,
    ) -> Result<SaveOutcome, StoreError> {
        let Some(stored) = self.0.load(key).await? else {
            return Ok(SaveOutcome::Missing);
        };
        self.0.save(key, record, stored.version).await
    }

    async fn rotate(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        record: &SessionRecord,
        expected_version: u64,
    ) -> Result<SaveOutcome, StoreError> {
        self.0.rotate(old, new, record, expected_version).await
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool, StoreError> {
        self.0.delete(key).await
    }

    async fn delete_by_user(
        &self,
        user_id: &str,
        keep: Option<&SessionKey>,
    ) -> Result<u64, StoreError> {
        self.0.delete_by_user(user_id, keep).await
    }

    async fn list_by_user(
        &self,
        user_id: &str,
    ) -> Result<Vec<(SessionKey, SessionRecord)>, StoreError> {
        self.0.list_by_user(user_id).await
    }

    async fn delete_expired(&self, now: Timestamp) -> Result<u64, StoreError> {
        self.0.delete_expired(now).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "case `save_is_compare_and_set` failed")]
async fn the_suite_catches_a_save_that_is_no_compare_and_set() {
    auth_core::testing::session_store_suite(
        || async { Arc::new(LostUpdates::default()) as Arc<dyn SessionStore> },
        SessionStoreCaps::default(),
    )
    .await;
}

/// The Redis store's client-side cache (server-assisted invalidation):
/// two stores on one Redis play two app instances. Each test uses its own
/// database, so that its clients can be told apart in `CLIENT LIST`
/// (the other Redis tests run on the URL's database at the same time).
#[cfg(feature = "redis")]
mod redis_client_cache {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::Duration;

    use auth_core::session::{
        RedisStore, SaveOutcome, SessionId, SessionKey, SessionRecord, SessionStore,
    };
    use auth_core::testing::session_store::record;

    use super::{service_url, unique};

    const HOUR: Duration = Duration::from_secs(3600);
    /// A hang detector for waits on Redis, not a performance bound.
    const PATIENCE: Duration = Duration::from_secs(2);

    /// A server that may evict keys gets a warning at connect, over RESP3
    /// (the cached connection: `CONFIG GET` answers a map there) and RESP2.
    #[tokio::test]
    async fn an_evicting_server_is_warned_about() {
        let Some(url) = service_url("AUTH_TEST_REDIS_URL") else {
            return;
        };
        #[derive(Clone, Default)]
        struct Buffer(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        /// Puts the server's eviction policy back as it was, also when
        /// the test fails half-way (the server may be a developer's own).
        struct Restore {
            url: String,
            policy: String,
        }
        impl Drop for Restore {
            fn drop(&mut self) {
                if let Ok(mut conn) =
                    redis::Client::open(self.url.as_str()).and_then(|c| c.get_connection())
                {
                    let _: redis::RedisResult<()> = redis::cmd("CONFIG")
                        .arg("SET")
                        .arg("maxmemory-policy")
                        .arg(&self.policy)
                        .query(&mut conn);
                }
            }
        }
        let mut sync = redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection())
            .unwrap();
        let before: std::collections::HashMap<String, String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query(&mut sync)
            .unwrap();
        let _restore = Restore {
            url: url.clone(),
            policy: before["maxmemory-policy"].clone(),
        };
        let mut admin = admin(&url).await;
        let set = |policy: &'static str| {
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("maxmemory-policy")
                .arg(policy)
                .clone()
        };
        // No maxmemory is set on the test server: nothing is evicted.
        set("allkeys-lru")
            .query_async::<()>(&mut admin)
            .await
            .unwrap();
        let warned = |buffer: &Buffer| {
            String::from_utf8_lossy(&buffer.0.lock().unwrap()).contains("session index")
        };
        for resp2 in [false, true] {
            buffer.0.lock().unwrap().clear();
            let _store = RedisStore::connect(&at_db(&url, 0, resp2)).await.unwrap();
            assert!(warned(&buffer), "resp2 {resp2}");
        }
        set("noeviction")
            .query_async::<()>(&mut admin)
            .await
            .unwrap();
        buffer.0.lock().unwrap().clear();
        let _store = RedisStore::connect(&url).await.unwrap();
        assert!(!warned(&buffer));
    }

    /// `url` with database `db` (and `protocol=resp2` if `resp2`).
    fn at_db(url: &str, db: u8, resp2: bool) -> String {
        let mut url = url::Url::parse(url).unwrap();
        url.set_path(&format!("/{db}"));
        if resp2 {
            url.query_pairs_mut().append_pair("protocol", "resp2");
        }
        url.to_string()
    }

    async fn admin(url: &str) -> redis::aio::MultiplexedConnection {
        redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// The clients connected to database `db`, as `CLIENT LIST` fields.
    async fn clients(
        admin: &mut redis::aio::MultiplexedConnection,
        db: u8,
    ) -> Vec<HashMap<String, String>> {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(admin)
            .await
            .unwrap();
        list.lines()
            .map(|line| {
                line.split(' ')
                    .filter_map(|field| field.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect::<HashMap<_, _>>()
            })
            .filter(|client| client.get("db").map(String::as_str) == Some(&db.to_string()))
            .collect()
    }

    /// The one client on database `db` (the store just connected there).
    async fn only_client(admin: &mut redis::aio::MultiplexedConnection, db: u8) -> String {
        let found = clients(admin, db).await;
        assert_eq!(found.len(), 1, "one client on database {db}: {found:?}");
        found[0]["id"].clone()
    }

    /// The last command client `id` sent (`CLIENT LIST`'s `cmd`).
    async fn last_command(
        admin: &mut redis::aio::MultiplexedConnection,
        db: u8,
        id: &str,
    ) -> String {
        clients(admin, db)
            .await
            .into_iter()
            .find(|client| client["id"] == id)
            .expect("the client is connected")["cmd"]
            .clone()
    }

    fn new_key() -> SessionKey {
        SessionId::generate().unwrap().key()
    }

    /// Loads `key` on `a` twice and proves that the second load made no
    /// round trip: between the loads `a` sends a `ZRANGE` (an empty
    /// listing), and Redis still reports it as `a`'s last command after
    /// the second load. Returns the (shared) record.
    async fn load_twice_cached(
        a: &RedisStore,
        admin: &mut redis::aio::MultiplexedConnection,
        db: u8,
        a_id: &str,
        key: &SessionKey,
    ) -> Arc<SessionRecord> {
        let first = a.load(key).await.unwrap().expect("the session is there");
        assert_eq!(last_command(admin, db, a_id).await, "hmget");
        assert!(a.list_by_user(&unique("nobody")).await.unwrap().is_empty());
        assert_eq!(last_command(admin, db, a_id).await, "zrange");
        let second = a.load(key).await.unwrap().expect("still there");
        assert_eq!(
            last_command(admin, db, a_id).await,
            "zrange",
            "the second load was served from the cache, without a command"
        );
        assert!(Arc::ptr_eq(&first, &second), "the cached record is shared");
        second
    }

    /// Loads `key` on `a` until it is gone (the invalidation arrived).
    async fn until_gone(a: &RedisStore, key: &SessionKey) {
        tokio::time::timeout(PATIENCE, async {
            while a.load(key).await.unwrap().is_some() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the other instance's write reaches this one's cache");
    }

    #[tokio::test]
    async fn a_revocation_through_another_instance_ends_the_cached_session() {
        const DB: u8 = 14;
        let Some(url) = service_url("AUTH_TEST_REDIS_URL") else {
            return;
        };
        let mut admin = admin(&url).await;
        let prefix = format!("{}:", unique("cache"));
        let url = at_db(&url, DB, false);
        let a = RedisStore::connect(&url)
            .await
            .unwrap()
            .with_prefix(&prefix);
        assert!(a.caches_loads());
        let a_id = only_client(&mut admin, DB).await;
        let b = RedisStore::connect(&url)
            .await
            .unwrap()
            .with_prefix(&prefix);
        let user = unique("user");

        // Deleted (signed out) through B.
        let key = new_key();
        b.create(&key, &record(Some(&user), HOUR)).await.unwrap();
        load_twice_cached(&a, &mut admin, DB, &a_id, &key).await;
        assert!(b.delete(&key).await.unwrap());
        until_gone(&a, &key).await;

        // Rotated through B: the old key ends.
        let key = new_key();
        b.create(&key, &record(Some(&user), HOUR)).await.unwrap();
        let cached = load_twice_cached(&a, &mut admin, DB, &a_id, &key).await;
        let new = new_key();
        assert_eq!(
            b.rotate(&key, &new, &cached, cached.version).await.unwrap(),
            SaveOutcome::Saved
        );
        until_gone(&a, &key).await;
        assert!(a.load(&new).await.unwrap().is_some());

        // Every session of the user revoked through B ("sign out
        // everywhere").
        let key = new_key();
        b.create(&key, &record(Some(&user), HOUR)).await.unwrap();
        load_twice_cached(&a, &mut admin, DB, &a_id, &key).await;
        assert!(b.delete_by_user(&user, None).await.unwrap() >= 1);
        until_gone(&a, &key).await;
        until_gone(&a, &new).await;

        // A's own write is seen by its next load, without waiting.
        let key = new_key();
        a.create(&key, &record(Some(&user), HOUR)).await.unwrap();
        let cached = load_twice_cached(&a, &mut admin, DB, &a_id, &key).await;
        assert_eq!(
            a.save(&key, &cached, cached.version).await.unwrap(),
            SaveOutcome::Saved
        );
        let after = a.load(&key).await.unwrap().expect("still there");
        assert_eq!(after.version, cached.version + 1);
        assert!(a.delete(&key).await.unwrap());
        assert_eq!(a.load(&key).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_cached_record_is_not_served_past_its_deadline() {
        const DB: u8 = 13;
        let Some(url) = service_url("AUTH_TEST_REDIS_URL") else {
            return;
        };
        let mut admin = admin(&at_db(&url, DB, false)).await;
        let prefix = format!("{}:", unique("cache"));
        let a = RedisStore::connect(&at_db(&url, DB, false))
            .await
            .unwrap()
            .with_prefix(&prefix);
        let a_id = clients(&mut admin, DB)
            .await
            .into_iter()
            .find(|client| client["flags"].contains('t'))
            .expect("A is connected")["id"]
            .clone();
        let key = new_key();
        let short = record(None, Duration::from_secs(2));
        a.create(&key, &short).await.unwrap();
        // Keep the key past the record's deadline (no TTL, so no expiry
        // and no invalidation): only the clock can end it now.
        let redis_key = format!("{prefix}s:{{{}}}", key.to_hex());
        let persisted: i64 = redis::cmd("PERSIST")
            .arg(&redis_key)
            .query_async(&mut admin)
            .await
            .unwrap();
        assert_eq!(persisted, 1);
        assert!(a.load(&key).await.unwrap().is_some(), "cached");
        assert!(a.list_by_user(&unique("nobody")).await.unwrap().is_empty());
        let left = short.expires_at().as_unix_millis()
            - auth_core::clock::Clock::now(&auth_core::clock::SystemClock).as_unix_millis();
        tokio::time::sleep(Duration::from_millis(left.max(0) as u64 + 20)).await;
        assert_eq!(a.load(&key).await.unwrap(), None);
        assert_eq!(
            last_command(&mut admin, DB, &a_id).await,
            "zrange",
            "the refused load was a cache hit"
        );
        let _: () = redis::cmd("DEL")
            .arg(&redis_key)
            .query_async(&mut admin)
            .await
            .unwrap();
    }

    /// A user's index drops a member five minutes after its score (the
    /// session's latest possible deadline) has passed by Redis's own clock,
    /// the clock that expires its key: not by the app's clock, which may
    /// run ahead of another instance's (and would then drop a live session,
    /// which "sign out everywhere" would miss).
    #[tokio::test]
    async fn a_users_index_drops_what_died_by_redis_clock() {
        let Some(url) = service_url("AUTH_TEST_REDIS_URL") else {
            return;
        };
        let mut admin = admin(&url).await;
        let prefix = format!("{}:", unique("index"));
        let store = RedisStore::connect(&url)
            .await
            .unwrap()
            .with_prefix(&prefix);
        let user = unique("user");
        let index = format!("{prefix}i:{{{user}}}");
        let (first, second) = (new_key(), new_key());
        store
            .create(&first, &record(Some(&user), HOUR))
            .await
            .unwrap();
        let redis_now = super::common::redis_now_ms(&mut admin).await;
        let scored = [
            ("died-ten-minutes-ago", redis_now - 600_000),
            ("died-a-minute-ago", redis_now - 60_000),
            ("dies-in-a-minute", redis_now + 60_000),
        ];
        super::common::add_scored(&mut admin, &index, &scored).await;
        store
            .create(&second, &record(Some(&user), HOUR))
            .await
            .unwrap();
        let listed = super::common::sorted_members(&mut admin, &index).await;
        let mut expected = vec![
            first.to_hex(),
            second.to_hex(),
            "died-a-minute-ago".to_owned(),
            "dies-in-a-minute".to_owned(),
        ];
        expected.sort();
        assert_eq!(listed, expected);
        assert_eq!(store.delete_by_user(&user, None).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn a_dropped_connection_drops_the_cache() {
        const DB: u8 = 15;
        let Some(url) = service_url("AUTH_TEST_REDIS_URL") else {
            return;
        };
        let mut admin = admin(&url).await;
        let prefix = format!("{}:", unique("cache"));
        let a = RedisStore::connect(&at_db(&url, DB, false))
            .await
            .unwrap()
            .with_prefix(&prefix);
        let a_id = only_client(&mut admin, DB).await;
        // B does not cache, so Redis tracks no key for it.
        let b = RedisStore::connect(&at_db(&url, DB, true))
            .await
            .unwrap()
            .with_prefix(&prefix);
        assert!(!b.caches_loads());

        let key = new_key();
        b.create(&key, &record(Some(&unique("user")), HOUR))
            .await
            .unwrap();
        let cached = load_twice_cached(&a, &mut admin, DB, &a_id, &key).await;

        // Drop A's connection; wait until A has connected again (tracked:
        // flag `t`), which it does on the crate's disconnection notice.
        let _: () = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(&a_id)
            .query_async(&mut admin)
            .await
            .unwrap();
        tokio::time::timeout(PATIENCE, async {
            loop {
                let back = clients(&mut admin, DB)
                    .await
                    .into_iter()
                    .any(|client| client["id"] != a_id && client["flags"].contains('t'));
                if back {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("A reconnects");

        // A change while A was away: no invalidation can reach A (its new
        // connection tracks nothing yet), so only an emptied cache sees it.
        assert_eq!(
            b.save(&key, &cached, cached.version).await.unwrap(),
            SaveOutcome::Saved
        );
        let now = a.load(&key).await.unwrap().expect("still there");
        assert_eq!(
            now.version,
            cached.version + 1,
            "the first load after the drop went to Redis"
        );
    }
}
