//! The passkey store contract (`auth_core::testing::passkey_store`), run
//! against every `PasskeyStore` of the toolkit: memory, SQLite (a file and
//! in memory) and PostgreSQL. Each case is its own test per store
//! (`sqlite::concurrent_uses_one_wins`, ...).
//!
//! PostgreSQL reads `AUTH_TEST_POSTGRES_URL` (`.ci/run` starts it). Without
//! it a local run skips those cases with a printed reason; under `CI=true`
//! a missing URL fails the test.
#![cfg(all(feature = "testing", feature = "passkeys"))]

use std::sync::Arc;

use auth_core::passkey::{MemoryPasskeyStore, PasskeyStore};
use auth_core::passkey_store_tests;

#[cfg(feature = "postgres")]
mod common;
#[cfg(feature = "postgres")]
use common::service_url;

#[cfg(feature = "sqlite")]
fn unique(tag: &str) -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).unwrap();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{tag}-{hex}")
}

passkey_store_tests!(memory, {
    Some(Arc::new(MemoryPasskeyStore::new()) as Arc<dyn PasskeyStore>)
});

#[cfg(feature = "sqlite")]
passkey_store_tests!(sqlite, {
    // Cargo's scratch folder for integration tests (under `target/`).
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique("passkey-db"));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("passkeys.db").display());
    let sessions = auth_core::SqliteStore::connect(&url).await.unwrap();
    let store = auth_core::passkey::SqlitePasskeyStore::from_pool(sessions.pool().clone())
        .await
        .unwrap();
    Some(Arc::new(store) as Arc<dyn PasskeyStore>)
});

#[cfg(feature = "sqlite")]
passkey_store_tests!(sqlite_in_memory, {
    let sessions = auth_core::SqliteStore::connect("sqlite::memory:")
        .await
        .unwrap();
    let store = auth_core::passkey::SqlitePasskeyStore::from_pool(sessions.pool().clone())
        .await
        .unwrap();
    Some(Arc::new(store) as Arc<dyn PasskeyStore>)
});

#[cfg(feature = "postgres")]
passkey_store_tests!(postgres, {
    let url = service_url("AUTH_TEST_POSTGRES_URL")?;
    let sessions = auth_core::PostgresStore::connect(&url).await.unwrap();
    let store = auth_core::passkey::PostgresPasskeyStore::from_pool(sessions.pool().clone())
        .await
        .unwrap();
    Some(Arc::new(store) as Arc<dyn PasskeyStore>)
});

/// The one-call form runs every case too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_one_call_suite_passes_for_the_memory_store() {
    auth_core::testing::passkey_store_suite(Arc::new(MemoryPasskeyStore::new())).await;
}

/// The SQLite store shares a pool with the other stores, under its own
/// component in `auth_schema_migrations`; it keeps the credential id as
/// raw bytes; opening it again migrates nothing and keeps the passkeys; a
/// schema newer than the code is refused.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn the_sqlite_store_shares_a_pool_and_reopens() {
    use auth_core::clock::Timestamp;
    use auth_core::passkey::{PasskeyStoreError, SqlitePasskeyStore, StoredPasskey};

    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique("passkey-db"));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("passkeys.db").display());
    let sessions = auth_core::SqliteStore::connect(&url).await.unwrap();
    let pool = sessions.pool().clone();
    auth_core::SqliteTokenStore::from_pool(pool.clone())
        .await
        .unwrap();
    let store = SqlitePasskeyStore::from_pool(pool.clone()).await.unwrap();
    let passkey = StoredPasskey {
        credential_id: vec![0, 1, 2, 0xff],
        user_id: "u1".into(),
        name: "Phone".into(),
        credential: r#"{"counter":1}"#.into(),
        created_at: Timestamp::from_unix_millis(1_700_000_000_000),
        last_used_at: None,
        backup_eligible: true,
        backed_up: true,
    };
    store.insert(&passkey).await.unwrap();

    let again = SqlitePasskeyStore::from_pool(pool.clone()).await.unwrap();
    let versions: Vec<(String, i64)> =
        sqlx::query_as("SELECT component, version FROM auth_schema_migrations ORDER BY component")
            .fetch_all(&pool)
            .await
            .unwrap();
    for component in ["passkeys", "sessions", "single_use_tokens"] {
        assert!(versions.iter().any(|(c, _)| c == component), "{versions:?}");
    }
    assert!(versions.contains(&("passkeys".to_owned(), 1)));
    let ids: Vec<Vec<u8>> = sqlx::query_scalar("SELECT credential_id FROM auth_passkeys")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(ids, vec![vec![0, 1, 2, 0xff]], "raw bytes");
    assert_eq!(
        again.find(&passkey.credential_id).await.unwrap(),
        Some(passkey.clone())
    );
    assert_eq!(again.pool().size(), pool.size());

    sqlx::query("UPDATE auth_schema_migrations SET version = 2 WHERE component = 'passkeys'")
        .execute(&pool)
        .await
        .unwrap();
    assert!(matches!(
        SqlitePasskeyStore::from_pool(pool.clone()).await,
        Err(PasskeyStoreError::Backend(_))
    ));
    pool.close().await;
    let _ = std::fs::remove_dir_all(dir);
}
