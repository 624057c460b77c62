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
