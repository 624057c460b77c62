//! One store suite, written once, run against every `SessionStore`: memory,
//! SQLite, PostgreSQL and Redis. Each case is its own test per store.
//!
//! PostgreSQL and Redis read `AUTH_TEST_POSTGRES_URL` / `AUTH_TEST_REDIS_URL`
//! (`.ci/run` starts both). Without a URL a local run skips those cases with
//! a printed reason; under `CI=true` a missing URL fails the test.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use auth_core::clock::{Clock, SystemClock};
use auth_core::session::{
    AuthState, SaveOutcome, SessionConfig, SessionId, SessionKey, SessionManager, SessionRecord,
    SessionStore, StoreError,
};

#[cfg(any(feature = "postgres", feature = "redis"))]
mod common;
#[cfg(any(feature = "postgres", feature = "redis"))]
use common::service_url;

fn unique(tag: &str) -> String {
    format!("{tag}-{}", SessionId::generate().unwrap().key().to_hex())
}

fn record(user: Option<&str>, ttl: Duration) -> SessionRecord {
    let now = SystemClock.now();
    SessionRecord {
        user_id: user.map(str::to_owned),
        auth: AuthState::Anonymous,
        created_at: now,
        last_seen_at: now,
        idle_expires_at: now.saturating_add(ttl),
        absolute_expires_at: now.saturating_add(ttl * 2),
        persistent: false,
        ip: Some("192.0.2.1".into()),
        user_agent: Some("suite".into()),
        security_stamp: Some("stamp".into()),
        data: BTreeMap::from([("k".to_owned(), serde_json::json!({"n": 1}))]),
        version: 0,
    }
}

fn expired(user: Option<&str>) -> SessionRecord {
    let mut r = record(user, Duration::from_secs(60));
    let past = SystemClock.now().saturating_sub(Duration::from_secs(5));
    r.idle_expires_at = past;
    r.absolute_expires_at = past;
    r
}

fn new_key() -> SessionKey {
    SessionId::generate().unwrap().key()
}

const HOUR: Duration = Duration::from_secs(3600);

/// What a store can do beyond the common core.
#[derive(Debug, Clone, Copy)]
struct Caps {
    /// Lists and deletes by user (all but the tower-sessions bridge).
    listing: bool,
    /// Expires records natively (TTL), so `delete_expired` counts nothing.
    native_expiry: bool,
}

mod cases {
    use super::*;

    pub(super) async fn round_trip(store: Arc<dyn SessionStore>, _caps: Caps) {
        let key = new_key();
        let user = unique("u");
        let rec = record(Some(&user), HOUR);
        store.create(&key, &rec).await.unwrap();
        assert_eq!(store.load(&key).await.unwrap(), Some(rec));
        assert_eq!(store.load(&new_key()).await.unwrap(), None);
    }

    pub(super) async fn expired_records_are_never_loaded(store: Arc<dyn SessionStore>, caps: Caps) {
        let key = new_key();
        let user = unique("u");
        store.create(&key, &expired(Some(&user))).await.unwrap();
        assert_eq!(store.load(&key).await.unwrap(), None);
        if caps.listing {
            assert!(store.list_by_user(&user).await.unwrap().is_empty());
        }
        // Nor saved back to life.
        let outcome = store
            .save(&key, &record(Some(&user), HOUR), 0)
            .await
            .unwrap();
        assert_eq!(outcome, SaveOutcome::Missing);
        assert_eq!(store.load(&key).await.unwrap(), None);
    }

    pub(super) async fn create_never_overwrites(store: Arc<dyn SessionStore>, _caps: Caps) {
        let key = new_key();
        let first = record(Some(&unique("u")), HOUR);
        store.create(&key, &first).await.unwrap();
        let second = record(Some(&unique("v")), HOUR);
        assert!(matches!(
            store.create(&key, &second).await,
            Err(StoreError::Collision)
        ));
        assert_eq!(store.load(&key).await.unwrap(), Some(first));
        // An expired record does not block its key.
        let stale = new_key();
        store.create(&stale, &expired(None)).await.unwrap();
        store.create(&stale, &second).await.unwrap();
        assert_eq!(store.load(&stale).await.unwrap(), Some(second));
    }

    pub(super) async fn save_is_compare_and_set(store: Arc<dyn SessionStore>, _caps: Caps) {
        let key = new_key();
        let mut rec = record(None, HOUR);
        store.create(&key, &rec).await.unwrap();
        rec.data.insert("a".into(), 1.into());
        assert_eq!(store.save(&key, &rec, 0).await.unwrap(), SaveOutcome::Saved);
        let loaded = store.load(&key).await.unwrap().unwrap();
        assert_eq!(loaded.version, 1);
        assert_eq!(loaded.data.get("a"), Some(&1.into()));
        // A writer that read version 0 loses.
        rec.data.insert("b".into(), 2.into());
        assert_eq!(
            store.save(&key, &rec, 0).await.unwrap(),
            SaveOutcome::Conflict
        );
        assert!(
            !store
                .load(&key)
                .await
                .unwrap()
                .unwrap()
                .data
                .contains_key("b")
        );
        // Saving an unknown key never creates it.
        let ghost = new_key();
        assert_eq!(
            store.save(&ghost, &rec, 0).await.unwrap(),
            SaveOutcome::Missing
        );
        assert_eq!(store.load(&ghost).await.unwrap(), None);
    }

    pub(super) async fn rotation_moves_the_record_and_kills_the_old_key(
        store: Arc<dyn SessionStore>,
        caps: Caps,
    ) {
        let user = unique("u");
        let old = new_key();
        let new = new_key();
        let mut rec = record(Some(&user), HOUR);
        store.create(&old, &rec).await.unwrap();
        rec.auth = AuthState::Authenticated {
            factors: vec![],
            at: SystemClock.now(),
        };
        assert_eq!(
            store.rotate(&old, &new, &rec, 0).await.unwrap(),
            SaveOutcome::Saved
        );
        assert_eq!(store.load(&old).await.unwrap(), None);
        let moved = store.load(&new).await.unwrap().unwrap();
        assert_eq!(moved.version, 1);
        assert_eq!(moved.auth, rec.auth);
        if caps.listing {
            let listed: Vec<SessionKey> = store
                .list_by_user(&user)
                .await
                .unwrap()
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            assert_eq!(listed, vec![new]);
        }
        // The old key cannot be rotated again, nor saved.
        assert_eq!(
            store.rotate(&old, &new_key(), &rec, 1).await.unwrap(),
            SaveOutcome::Missing
        );
        assert_eq!(
            store.save(&old, &rec, 1).await.unwrap(),
            SaveOutcome::Missing
        );
        // Stale version: conflict. Taken target: collision, nothing moves.
        assert_eq!(
            store.rotate(&new, &new_key(), &rec, 0).await.unwrap(),
            SaveOutcome::Conflict
        );
        let taken = new_key();
        store.create(&taken, &record(None, HOUR)).await.unwrap();
        assert!(matches!(
            store.rotate(&new, &taken, &rec, 1).await,
            Err(StoreError::Collision)
        ));
        assert!(store.load(&new).await.unwrap().is_some());
    }

    pub(super) async fn delete_is_final(store: Arc<dyn SessionStore>, caps: Caps) {
        let user = unique("u");
        let key = new_key();
        store
            .create(&key, &record(Some(&user), HOUR))
            .await
            .unwrap();
        assert!(store.delete(&key).await.unwrap());
        assert!(!store.delete(&key).await.unwrap());
        assert_eq!(store.load(&key).await.unwrap(), None);
        if caps.listing {
            assert!(store.list_by_user(&user).await.unwrap().is_empty());
        }
        assert_eq!(
            store
                .save(&key, &record(Some(&user), HOUR), 0)
                .await
                .unwrap(),
            SaveOutcome::Missing
        );
        assert_eq!(store.load(&key).await.unwrap(), None);
    }

    pub(super) async fn revoke_all_of_a_user(store: Arc<dyn SessionStore>, caps: Caps) {
        let alice = unique("alice");
        let bob = unique("bob");
        if !caps.listing {
            // Revoke-all goes through the security stamp instead.
            assert!(matches!(
                store.delete_by_user(&alice, None).await,
                Err(StoreError::Unsupported)
            ));
            return;
        }
        let keys: Vec<SessionKey> = (0..3).map(|_| new_key()).collect();
        for key in &keys {
            store
                .create(key, &record(Some(&alice), HOUR))
                .await
                .unwrap();
        }
        let bobs = new_key();
        store
            .create(&bobs, &record(Some(&bob), HOUR))
            .await
            .unwrap();
        assert_eq!(
            store.delete_by_user(&alice, Some(&keys[0])).await.unwrap(),
            2
        );
        assert!(store.load(&keys[0]).await.unwrap().is_some());
        assert!(store.load(&keys[1]).await.unwrap().is_none());
        assert!(store.load(&keys[2]).await.unwrap().is_none());
        assert!(store.load(&bobs).await.unwrap().is_some());
        assert_eq!(store.delete_by_user(&alice, None).await.unwrap(), 1);
        assert!(store.load(&keys[0]).await.unwrap().is_none());
        assert_eq!(store.list_by_user(&bob).await.unwrap().len(), 1);
    }

    pub(super) async fn list_by_user(store: Arc<dyn SessionStore>, caps: Caps) {
        let alice = unique("alice");
        if !caps.listing {
            assert!(matches!(
                store.list_by_user(&alice).await,
                Err(StoreError::Unsupported)
            ));
            return;
        }
        let a1 = new_key();
        let a2 = new_key();
        store
            .create(&a1, &record(Some(&alice), HOUR))
            .await
            .unwrap();
        store
            .create(&a2, &record(Some(&alice), HOUR))
            .await
            .unwrap();
        store
            .create(&new_key(), &expired(Some(&alice)))
            .await
            .unwrap();
        store
            .create(&new_key(), &record(Some(&unique("bob")), HOUR))
            .await
            .unwrap();
        store.create(&new_key(), &record(None, HOUR)).await.unwrap();
        let mut listed: Vec<SessionKey> = store
            .list_by_user(&alice)
            .await
            .unwrap()
            .into_iter()
            .map(|(k, r)| {
                assert_eq!(r.user_id.as_deref(), Some(alice.as_str()));
                k
            })
            .collect();
        listed.sort();
        let mut expected = vec![a1, a2];
        expected.sort();
        assert_eq!(listed, expected);
        // A save that changes the user moves the session between users.
        let carol = unique("carol");
        let mut moved = store.load(&a1).await.unwrap().unwrap();
        moved.user_id = Some(carol.clone());
        assert_eq!(
            store.save(&a1, &moved, 0).await.unwrap(),
            SaveOutcome::Saved
        );
        assert_eq!(store.list_by_user(&alice).await.unwrap().len(), 1);
        assert_eq!(store.list_by_user(&carol).await.unwrap().len(), 1);
    }

    pub(super) async fn concurrent_updates_lose_nothing(store: Arc<dyn SessionStore>, _caps: Caps) {
        let manager = SessionManager::new(Arc::clone(&store), SessionConfig::default());
        let session = manager.create(Default::default()).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..16 {
            let manager = manager.clone();
            let mut session = session.clone();
            tasks.push(tokio::spawn(async move {
                manager
                    .insert(&mut session, &format!("writer-{i}"), &i)
                    .await
                    .unwrap();
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let loaded = store.load(session.key()).await.unwrap().unwrap();
        for i in 0..16 {
            assert_eq!(
                loaded.data.get(&format!("writer-{i}")),
                Some(&serde_json::json!(i)),
                "writer {i} lost"
            );
        }
        assert_eq!(loaded.version, 16);
    }

    pub(super) async fn concurrent_writers_never_resurrect(
        store: Arc<dyn SessionStore>,
        _caps: Caps,
    ) {
        let manager = SessionManager::new(Arc::clone(&store), SessionConfig::default());
        let session = manager.create(Default::default()).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..8 {
            let manager = manager.clone();
            let mut session = session.clone();
            tasks.push(tokio::spawn(async move {
                let _ = manager.insert(&mut session, &format!("w{i}"), &i).await;
            }));
        }
        manager.destroy(session.clone()).await.unwrap();
        for task in tasks {
            task.await.unwrap();
        }
        let mut late = session.clone();
        assert!(manager.insert(&mut late, "late", &1).await.is_err());
        assert_eq!(store.load(session.key()).await.unwrap(), None);
    }

    pub(super) async fn delete_expired(store: Arc<dyn SessionStore>, caps: Caps) {
        let stale = new_key();
        let live = new_key();
        store.create(&stale, &expired(None)).await.unwrap();
        store.create(&live, &record(None, HOUR)).await.unwrap();
        let removed = store.delete_expired(SystemClock.now()).await.unwrap();
        if !caps.native_expiry {
            assert!(removed >= 1, "the expired record was deleted");
        }
        assert_eq!(store.load(&stale).await.unwrap(), None);
        assert!(store.load(&live).await.unwrap().is_some());
        // Deleted for good: its key is free again.
        store.create(&stale, &record(None, HOUR)).await.unwrap();
    }
}

macro_rules! store_cases {
    ($($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if let Some(store) = store().await {
                    cases::$case(store, CAPS).await;
                }
            }
        )*
    };
}

macro_rules! store_suite {
    ($name:ident, $caps:expr, $make:block) => {
        mod $name {
            use super::*;

            const CAPS: Caps = $caps;

            async fn store() -> Option<Arc<dyn SessionStore>> $make

            store_cases!(
                round_trip,
                expired_records_are_never_loaded,
                create_never_overwrites,
                save_is_compare_and_set,
                rotation_moves_the_record_and_kills_the_old_key,
                delete_is_final,
                revoke_all_of_a_user,
                list_by_user,
                concurrent_updates_lose_nothing,
                concurrent_writers_never_resurrect,
                delete_expired,
            );
        }
    };
}

store_suite!(
    memory,
    Caps {
        listing: true,
        native_expiry: false
    },
    { Some(Arc::new(auth_core::session::MemoryStore::new()) as Arc<dyn SessionStore>) }
);

#[cfg(feature = "sqlite")]
store_suite!(
    sqlite,
    Caps {
        listing: true,
        native_expiry: false
    },
    {
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
    }
);

#[cfg(feature = "postgres")]
store_suite!(
    postgres,
    Caps {
        listing: true,
        native_expiry: false
    },
    {
        let url = service_url("AUTH_TEST_POSTGRES_URL")?;
        Some(Arc::new(
            auth_core::session::PostgresStore::connect(&url)
                .await
                .unwrap(),
        ) as Arc<dyn SessionStore>)
    }
);

#[cfg(feature = "redis")]
store_suite!(
    redis,
    Caps {
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

/// The SQLite file holds hashes of session IDs, never an ID: neither its
/// cookie form nor its raw bytes appear anywhere in the file.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn the_sqlite_file_holds_no_session_id() {
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
store_suite!(
    tower_sessions,
    Caps {
        listing: false,
        native_expiry: true
    },
    {
        Some(Arc::new(auth_core::session::TowerSessionsStore::new(
            tower_map::MapStore::default(),
        )) as Arc<dyn SessionStore>)
    }
);
