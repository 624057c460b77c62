//! The refresh-token store contract (`auth_core::testing::refresh_store`),
//! run against every `RefreshStore` of the toolkit: memory, SQLite (a file
//! and in memory), PostgreSQL and Redis. Each case is its own test per
//! store (`sqlite::concurrent_rotations_one_wins`, ...).
//!
//! PostgreSQL and Redis read `AUTH_TEST_POSTGRES_URL` / `AUTH_TEST_REDIS_URL`
//! (`.ci/run` starts both). Without a URL a local run skips those cases with
//! a printed reason; under `CI=true` a missing URL fails the test.
#![cfg(all(feature = "testing", feature = "jwt"))]

use std::sync::Arc;

use auth_core::refresh_store_tests;
use auth_core::testing::RefreshStoreCaps;
use auth_core::token::refresh::{MemoryRefreshStore, RefreshStore};
#[cfg(any(feature = "sqlite", feature = "redis"))]
use auth_core::token::refresh::{RefreshToken, Rotation};

#[cfg(any(feature = "postgres", feature = "redis"))]
mod common;
#[cfg(any(feature = "postgres", feature = "redis"))]
use common::service_url;

#[cfg(any(feature = "sqlite", feature = "redis"))]
fn unique(tag: &str) -> String {
    format!("{tag}-{}", RefreshToken::generate().unwrap().key().to_hex())
}

/// A fresh family id.
#[cfg(feature = "redis")]
fn new_family_id() -> String {
    RefreshToken::generate().unwrap().key().family_id()
}

/// The key of a fresh token of family `id`.
#[cfg(feature = "redis")]
fn key_in(id: &str) -> auth_core::token::refresh::RefreshKey {
    auth_core::token::refresh::RefreshKey::new(
        id,
        *RefreshToken::generate().unwrap().key().as_bytes(),
    )
    .unwrap()
}

refresh_store_tests!(memory, RefreshStoreCaps::default(), {
    Some(Arc::new(MemoryRefreshStore::new()) as Arc<dyn RefreshStore>)
});

#[cfg(feature = "sqlite")]
refresh_store_tests!(sqlite, RefreshStoreCaps::default(), {
    // Cargo's scratch folder for integration tests (under `target/`).
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique("refresh-db"));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("refresh.db").display());
    let sessions = auth_core::SqliteStore::connect(&url).await.unwrap();
    let store = auth_core::token::refresh::SqliteRefreshStore::from_pool(sessions.pool().clone())
        .await
        .unwrap();
    Some(Arc::new(store) as Arc<dyn RefreshStore>)
});

#[cfg(feature = "sqlite")]
refresh_store_tests!(sqlite_in_memory, RefreshStoreCaps::default(), {
    let sessions = auth_core::SqliteStore::connect("sqlite::memory:")
        .await
        .unwrap();
    let store = auth_core::token::refresh::SqliteRefreshStore::from_pool(sessions.pool().clone())
        .await
        .unwrap();
    Some(Arc::new(store) as Arc<dyn RefreshStore>)
});

#[cfg(feature = "postgres")]
refresh_store_tests!(postgres, RefreshStoreCaps::default(), {
    let url = service_url("AUTH_TEST_POSTGRES_URL")?;
    let sessions = auth_core::PostgresStore::connect(&url).await.unwrap();
    let store = auth_core::token::refresh::PostgresRefreshStore::from_pool(sessions.pool().clone())
        .await
        .unwrap();
    Some(Arc::new(store) as Arc<dyn RefreshStore>)
});

#[cfg(feature = "redis")]
refresh_store_tests!(
    redis,
    RefreshStoreCaps {
        native_expiry: true
    },
    {
        let url = service_url("AUTH_TEST_REDIS_URL")?;
        Some(Arc::new(
            auth_core::token::refresh::RedisRefreshStore::connect_with_prefix(
                &url,
                format!("{}:", unique("test")),
            )
            .await
            .unwrap(),
        ) as Arc<dyn RefreshStore>)
    }
);

/// The one-call form runs every case too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_one_call_suite_passes_for_the_memory_store() {
    auth_core::testing::refresh_store_suite(
        Arc::new(MemoryRefreshStore::new()),
        RefreshStoreCaps::default(),
    )
    .await;
}

/// The SQL store shares a pool with the other stores, under its own
/// component in `auth_schema_migrations`; it keeps hex digests, never a
/// token, and one row per family however often it rotates; opening it
/// again migrates nothing and keeps the families; revocation and the purge
/// delete the rows; a schema newer than the code is refused.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn the_sqlite_store_shares_a_pool_and_reopens() {
    use std::time::Duration;

    use auth_core::clock::Timestamp;
    use auth_core::token::refresh::{Family, RefreshStoreError, SqliteRefreshStore};

    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique("refresh-db"));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("refresh.db").display());
    let sessions = auth_core::SqliteStore::connect(&url).await.unwrap();
    let pool = sessions.pool().clone();
    auth_core::SqliteTokenStore::from_pool(pool.clone())
        .await
        .unwrap();
    let store = SqliteRefreshStore::from_pool(pool.clone()).await.unwrap();
    let now = Timestamp::from_unix_millis(1_700_000_000_000);
    let family = |first: &RefreshToken, user: &str| Family {
        id: first.key().family_id(),
        user_id: user.into(),
        amr: vec!["pwd".into()],
        stamp: format!("stamp-{user}"),
        created_at: now,
        expires_at: now.saturating_add(Duration::from_secs(3_600)),
        idle_timeout: Duration::from_secs(600),
        last_used_at: now,
    };
    let first = RefreshToken::generate().unwrap();
    let f1 = family(&first, "u1");
    store.create(&f1, first.key()).await.unwrap();
    let mut current = first.clone();
    let mut at = now;
    for n in 1..=20 {
        let next = current.successor().unwrap();
        at = now.saturating_add(Duration::from_secs(n));
        assert!(matches!(
            store
                .rotate(current.key(), next.key(), b"sealed", at, None)
                .await
                .unwrap(),
            Rotation::Rotated(_)
        ));
        current = next;
    }

    let again = SqliteRefreshStore::from_pool(pool.clone()).await.unwrap();
    let versions: Vec<(String, i64)> =
        sqlx::query_as("SELECT component, version FROM auth_schema_migrations ORDER BY component")
            .fetch_all(&pool)
            .await
            .unwrap();
    for component in ["refresh_tokens", "sessions", "single_use_tokens"] {
        assert!(versions.iter().any(|(c, _)| c == component), "{versions:?}");
    }
    assert!(versions.contains(&("refresh_tokens".to_owned(), 1)));
    let rows = || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM auth_refresh_families")
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    // One row for 21 tokens, holding the current one's hex digest (the
    // token itself is nowhere); nothing in the token table of earlier
    // versions.
    assert_eq!(rows().await, 1);
    let (current_key, stamp): (String, String) =
        sqlx::query_as("SELECT current_key, stamp FROM auth_refresh_families")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(current_key, current.key().to_hex());
    assert_ne!(current_key, current.encode());
    assert_eq!(stamp, "stamp-u1");
    let token_rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM auth_refresh_tokens")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(token_rows, 0);
    assert!(again.is_live(&f1.id, at).await.unwrap());

    // Revocation (by the first token, long spent) and the purge delete
    // the rows.
    assert_eq!(
        again.revoke_by_token(first.key()).await.unwrap(),
        Some((f1.id.clone(), "u1".to_owned()))
    );
    assert_eq!(rows().await, 0);
    for _ in 0..3 {
        let first = RefreshToken::generate().unwrap();
        again
            .create(&family(&first, "u2"), first.key())
            .await
            .unwrap();
    }
    assert_eq!(again.revoke_user("u2").await.unwrap(), 3);
    for _ in 0..3 {
        let first = RefreshToken::generate().unwrap();
        again
            .create(&family(&first, "u3"), first.key())
            .await
            .unwrap();
    }
    let idle = now.saturating_add(Duration::from_secs(600));
    assert_eq!(again.purge(idle).await.unwrap(), 3);
    assert_eq!(rows().await, 0);

    sqlx::query("UPDATE auth_schema_migrations SET version = 2 WHERE component = 'refresh_tokens'")
        .execute(&pool)
        .await
        .unwrap();
    assert!(matches!(
        SqliteRefreshStore::from_pool(pool.clone()).await,
        Err(RefreshStoreError::Backend(_))
    ));
    pool.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A database an earlier version wrote (a row per token ever current in
/// `auth_refresh_tokens`) keeps working: the table stays (instances of the
/// earlier version still use it during an upgrade), its families stay
/// live until they end, and the purge deletes the token rows of families
/// that are gone; new families rotate without a token row.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn a_database_of_an_earlier_version_keeps_working() {
    use std::time::Duration;

    use auth_core::clock::Timestamp;
    use auth_core::token::refresh::{Family, SqliteRefreshStore};

    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique("refresh-v1"));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("refresh.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    for statement in [
        "CREATE TABLE auth_refresh_families (id TEXT PRIMARY KEY NOT NULL,
            user_id TEXT NOT NULL, amr TEXT NOT NULL, stamp TEXT NOT NULL,
            created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
            idle_timeout_ms INTEGER NOT NULL, last_used_at INTEGER NOT NULL,
            live_until INTEGER NOT NULL, current_key TEXT NOT NULL, previous_key TEXT,
            previous_spent_at INTEGER, sealed_successor BLOB)",
        "CREATE INDEX auth_refresh_families_user ON auth_refresh_families (user_id)",
        "CREATE INDEX auth_refresh_families_live_until ON auth_refresh_families (live_until)",
        "CREATE TABLE auth_refresh_tokens (key TEXT PRIMARY KEY NOT NULL,
            family_id TEXT NOT NULL)",
        "CREATE INDEX auth_refresh_tokens_family ON auth_refresh_tokens (family_id)",
        "CREATE TABLE auth_schema_migrations (component TEXT PRIMARY KEY NOT NULL,
            version INTEGER NOT NULL)",
        "INSERT INTO auth_schema_migrations VALUES ('refresh_tokens', 1)",
        "INSERT INTO auth_refresh_families VALUES ('legacy-family', 'u', '[\"pwd\"]', 's',
            1700000000000, 4000000000000, 3600000, 1700000000000, 4000000000000,
            'aa', NULL, NULL, NULL)",
        "INSERT INTO auth_refresh_tokens VALUES ('aa', 'legacy-family')",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    let store = SqliteRefreshStore::from_pool(pool.clone()).await.unwrap();
    let version: i64 = sqlx::query_scalar(
        "SELECT version FROM auth_schema_migrations WHERE component = 'refresh_tokens'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(version, 1, "nothing to migrate");
    let token_rows = || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM auth_refresh_tokens")
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let now = Timestamp::from_unix_millis(1_700_000_001_000);
    assert!(store.is_live("legacy-family", now).await.unwrap());
    assert_eq!(store.purge(now).await.unwrap(), 0);
    assert_eq!(token_rows().await, 1, "its family is live");
    assert_eq!(store.revoke_user("u").await.unwrap(), 1);
    assert_eq!(store.purge(now).await.unwrap(), 0);
    assert_eq!(token_rows().await, 0, "its family is gone");

    let first = RefreshToken::generate().unwrap();
    let family = Family {
        id: first.key().family_id(),
        user_id: "u".into(),
        amr: vec!["pwd".into()],
        stamp: "s".into(),
        created_at: now,
        expires_at: now.saturating_add(Duration::from_secs(3_600)),
        idle_timeout: Duration::from_secs(600),
        last_used_at: now,
    };
    store.create(&family, first.key()).await.unwrap();
    let next = first.successor().unwrap();
    assert!(matches!(
        store
            .rotate(first.key(), next.key(), b"", now, None)
            .await
            .unwrap(),
        Rotation::Rotated(_)
    ));
    assert_eq!(token_rows().await, 0);
    pool.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Every key the Redis store writes expires: a family (one hash, however
/// often it rotates) when it dies (its idle deadline, pushed on by a
/// rotation, or its expiry), a user's index no sooner than its
/// longest-lived family. There is no other key.
#[cfg(feature = "redis")]
#[tokio::test]
async fn every_redis_key_expires() {
    use std::collections::HashMap;
    use std::time::Duration;

    use auth_core::clock::{Clock, SystemClock};
    use auth_core::token::refresh::{Family, RedisRefreshStore};

    let Some(url) = service_url("AUTH_TEST_REDIS_URL") else {
        return;
    };
    let prefix = format!("{}:", unique("test"));
    let store = RedisRefreshStore::connect_with_prefix(&url, prefix.as_str())
        .await
        .unwrap();
    assert_eq!(store.prefix(), prefix);
    let now = SystemClock.now();
    let mut expiries = HashMap::new();
    for n in 0..4u64 {
        let family = Family {
            id: new_family_id(),
            user_id: format!("user-{}", n % 2),
            amr: vec!["pwd".into()],
            stamp: unique("stamp"),
            created_at: now,
            expires_at: now.saturating_add(Duration::from_secs(86_400 + n)),
            // Families 0 and 1 die idle, 2 and 3 at their expiry.
            idle_timeout: Duration::from_secs(if n < 2 { 3_600 } else { 10 * 86_400 }),
            last_used_at: now,
        };
        let first = key_in(&family.id);
        store.create(&family, first).await.unwrap();
        let mut dies = family
            .expires_at
            .min(now.saturating_add(family.idle_timeout));
        if n == 1 {
            // 20 rotations, and still one key.
            let mut current = first;
            for step in 1..=20 {
                let next = key_in(&family.id);
                let at = now.saturating_add(Duration::from_secs(40 + step));
                let rotated = store.rotate(current, next, b"s", at, None).await.unwrap();
                assert!(matches!(rotated, Rotation::Rotated(_)));
                current = next;
                dies = at.saturating_add(family.idle_timeout);
            }
        }
        expiries.insert(format!("{prefix}f:{{{}}}", family.id), dies);
        let index = format!("{prefix}user:{}", family.user_id);
        let longest = expiries.get(&index).copied().unwrap_or(family.expires_at);
        expiries.insert(index, longest.max(family.expires_at));
    }

    let mut conn = ::redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), expiries.len(), "{keys:?}");
    for key in &keys {
        let at: i64 = ::redis::cmd("PEXPIRETIME")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let expected = expiries
            .get(key)
            .unwrap_or_else(|| panic!("{key} unexpected"));
        if key.starts_with(&format!("{prefix}user:")) {
            assert!(at >= expected.as_unix_millis(), "{key} expires too soon");
        } else {
            assert_eq!(at, expected.as_unix_millis(), "{key}");
        }
    }
}

/// A Redis refresh store under a prefix of its own and a fresh family
/// (not stored yet): the URL, the prefix, the store, the family. `None`
/// without `AUTH_TEST_REDIS_URL`.
#[cfg(feature = "redis")]
async fn redis_store_and_family() -> Option<(
    String,
    String,
    auth_core::token::refresh::RedisRefreshStore,
    auth_core::token::refresh::Family,
)> {
    use std::time::Duration;

    use auth_core::clock::{Clock, SystemClock};
    use auth_core::token::refresh::{Family, RedisRefreshStore};

    let url = service_url("AUTH_TEST_REDIS_URL")?;
    let prefix = format!("{}:", unique("test"));
    let store = RedisRefreshStore::connect_with_prefix(&url, prefix.as_str())
        .await
        .unwrap();
    let now = SystemClock.now();
    let family = Family {
        id: new_family_id(),
        user_id: unique("user"),
        amr: vec!["pwd".into()],
        stamp: unique("stamp"),
        created_at: now,
        expires_at: now.saturating_add(Duration::from_secs(86_400)),
        idle_timeout: Duration::from_secs(3_600),
        last_used_at: now,
    };
    Some((url, prefix, store, family))
}

/// The Redis Cluster client sends a script again after a slow answer,
/// whether or not the server ran it: the same create, and the same
/// rotation (same presented token, same successor), answer as the first
/// time did, never as a collision or a reuse. A replay of the presented
/// token with another successor is still reuse.
#[cfg(feature = "redis")]
#[tokio::test]
async fn a_script_sent_again_answers_as_the_first_run() {
    use auth_core::clock::{Clock, SystemClock};

    let Some((_, _, store, family)) = redis_store_and_family().await else {
        return;
    };
    let now = SystemClock.now();
    let first = key_in(&family.id);
    store.create(&family, first).await.unwrap();
    store.create(&family, first).await.unwrap();
    let next = key_in(&family.id);
    for run in 0..2 {
        let rotated = store.rotate(first, next, b"s", now, None).await.unwrap();
        assert!(
            matches!(rotated, Rotation::Rotated(_)),
            "run {run}: {rotated:?}"
        );
    }
    assert!(store.is_live(&family.id, now).await.unwrap());
    let other = key_in(&family.id);
    let replayed = store.rotate(first, other, b"s", now, None).await.unwrap();
    assert!(matches!(replayed, Rotation::Reused { .. }), "{replayed:?}");
    assert!(!store.is_live(&family.id, now).await.unwrap());
}

/// A revocation whose clean-up of the user's index fails (the index's node
/// is down in a cluster; here the key has the wrong type) still answers
/// that the family was revoked: it was.
#[cfg(feature = "redis")]
#[tokio::test]
async fn a_revocation_stands_when_its_index_clean_up_fails() {
    use auth_core::clock::{Clock, SystemClock};

    let Some((url, prefix, store, family)) = redis_store_and_family().await else {
        return;
    };
    let now = SystemClock.now();
    store.create(&family, key_in(&family.id)).await.unwrap();
    let mut conn = ::redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let index = format!("{prefix}user:{}", family.user_id);
    ::redis::cmd("DEL")
        .arg(&index)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    ::redis::cmd("SET")
        .arg(&index)
        .arg("not a sorted set")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    assert!(store.revoke_family(&family.id).await.unwrap());
    assert!(!store.is_live(&family.id, now).await.unwrap());
}

/// A user's index keeps only families that may still live: each create
/// drops the ones whose expiry passed more than five minutes ago (by
/// Redis's clock), so a user who signs in every day does not grow it
/// without bound, and `revoke_user` does not walk every family the user
/// ever had. Families listed in the
/// set that indexed them before (a store from before the sorted set, or an
/// instance not yet upgraded) are still revoked.
#[cfg(feature = "redis")]
#[tokio::test]
async fn a_users_index_drops_expired_families_and_the_old_set_is_still_revoked() {
    use std::time::Duration;

    use auth_core::clock::{Clock, SystemClock};
    use auth_core::token::refresh::Family;

    let Some((url, prefix, store, first)) = redis_store_and_family().await else {
        return;
    };
    let mut conn = common::redis_admin(&url).await;
    let index = format!("{prefix}user:{}", first.user_id);
    store.create(&first, key_in(&first.id)).await.unwrap();
    // Families that expired ten minutes and a year ago (their own keys
    // gone with them), and one that expires in a minute, by Redis's clock.
    let now = common::redis_now_ms(&mut conn).await;
    let listed = [
        ("expired-ten-minutes-ago", now - 600_000),
        ("expired-a-year-ago", now - 365 * 86_400_000),
        ("expires-in-a-minute", now + 60_000),
    ];
    common::add_scored(&mut conn, &index, &listed).await;
    let second = Family {
        id: new_family_id(),
        ..first.clone()
    };
    store.create(&second, key_in(&second.id)).await.unwrap();
    let mut expected = vec![
        first.id.clone(),
        second.id.clone(),
        "expires-in-a-minute".to_owned(),
    ];
    expected.sort();
    assert_eq!(common::sorted_members(&mut conn, &index).await, expected);

    // A family listed only in the old set.
    let third = Family {
        id: new_family_id(),
        ..first.clone()
    };
    store.create(&third, key_in(&third.id)).await.unwrap();
    let old_set = format!("{prefix}u:{}", first.user_id);
    common::move_to_old_set(&mut conn, &index, &old_set, &third.id).await;

    assert_eq!(store.revoke_user(&first.user_id).await.unwrap(), 3);
    let at = SystemClock.now().saturating_add(Duration::from_secs(1));
    for family in [&first, &second, &third] {
        assert!(!store.is_live(&family.id, at).await.unwrap());
    }
    // Revoked families leave both indexes; the absent one stays listed (it
    // may be a create under way) until it expires.
    assert_eq!(
        common::sorted_members(&mut conn, &index).await,
        vec!["expires-in-a-minute"]
    );
    assert_eq!(
        common::set_members(&mut conn, &old_set).await,
        Vec::<String>::new()
    );
}

/// The old set unreadable (its cluster node down; here the key has the
/// wrong type): `revoke_user` still revokes every family of the index, and
/// answers the error.
#[cfg(feature = "redis")]
#[tokio::test]
async fn revoke_user_revokes_the_index_when_the_old_set_fails() {
    use auth_core::clock::{Clock, SystemClock};

    let Some((url, prefix, store, family)) = redis_store_and_family().await else {
        return;
    };
    store.create(&family, key_in(&family.id)).await.unwrap();
    let mut conn = common::redis_admin(&url).await;
    common::set_wrong_type(&mut conn, &format!("{prefix}u:{}", family.user_id)).await;
    assert!(store.revoke_user(&family.user_id).await.is_err());
    assert!(!store.is_live(&family.id, SystemClock.now()).await.unwrap());
}

/// A family checked on one instance is then checked from its cache (no
/// command); revoked through another instance, it is refused here once
/// the server's invalidation arrives; revoked here, at once.
#[cfg(feature = "redis")]
#[tokio::test]
async fn a_revocation_through_another_instance_ends_the_cached_family() {
    use std::time::Duration;

    use auth_core::clock::{Clock, SystemClock};
    use auth_core::token::refresh::{Family, RedisRefreshStore};

    // Its own database, so this store's connection is the only client there.
    const DB: u8 = 12;
    let Some(url) = service_url("AUTH_TEST_REDIS_URL") else {
        return;
    };
    let mut at_db = url::Url::parse(&url).unwrap();
    at_db.set_path(&format!("/{DB}"));
    let at_db = at_db.to_string();
    let mut admin = ::redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // `CLIENT LIST`'s `id` and last command of the clients on `DB`.
    async fn clients(admin: &mut ::redis::aio::MultiplexedConnection) -> Vec<(String, String)> {
        let list: String = ::redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(admin)
            .await
            .unwrap();
        list.lines()
            .filter(|line| line.split(' ').any(|field| field == format!("db={DB}")))
            .map(|line| {
                let field = |name: &str| {
                    line.split(' ')
                        .find_map(|f| f.strip_prefix(&format!("{name}=")))
                        .unwrap_or_default()
                        .to_owned()
                };
                (field("id"), field("cmd"))
            })
            .collect()
    }
    let prefix = format!("{}:", unique("cached"));
    let a = RedisRefreshStore::connect_with_prefix(&at_db, prefix.as_str())
        .await
        .unwrap();
    assert!(a.caches_checks());
    let found = clients(&mut admin).await;
    assert_eq!(found.len(), 1, "one client on database {DB}: {found:?}");
    let a_id = found[0].0.clone();
    let last_command = |admin: &mut ::redis::aio::MultiplexedConnection| {
        let a_id = a_id.clone();
        let mut admin = admin.clone();
        async move {
            clients(&mut admin)
                .await
                .into_iter()
                .find(|(id, _)| *id == a_id)
                .expect("A is connected")
                .1
        }
    };
    let b = RedisRefreshStore::connect_with_prefix(&at_db, prefix.as_str())
        .await
        .unwrap();
    let now = SystemClock.now();
    let family = |user: &str| Family {
        id: new_family_id(),
        user_id: user.to_owned(),
        amr: vec!["pwd".into()],
        stamp: unique("stamp"),
        created_at: now,
        expires_at: now.saturating_add(Duration::from_secs(3_600)),
        idle_timeout: Duration::from_secs(3_600),
        last_used_at: now,
    };

    // Checked twice on A: the second answer comes from the cache.
    let revoked_elsewhere = family("alice");
    b.create(&revoked_elsewhere, key_in(&revoked_elsewhere.id))
        .await
        .unwrap();
    assert!(a.is_live(&revoked_elsewhere.id, now).await.unwrap());
    assert_eq!(last_command(&mut admin).await, "hmget");
    assert!(!a.revoke_family("no-such-family").await.unwrap());
    let other = last_command(&mut admin).await;
    assert_ne!(other, "hmget");
    assert!(a.is_live(&revoked_elsewhere.id, now).await.unwrap());
    assert_eq!(
        last_command(&mut admin).await,
        other,
        "served from the cache"
    );

    // Revoked through B: refused on A once the invalidation arrives.
    assert!(b.revoke_family(&revoked_elsewhere.id).await.unwrap());
    tokio::time::timeout(Duration::from_secs(2), async {
        while a.is_live(&revoked_elsewhere.id, now).await.unwrap() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("B's revocation reaches A's cache");

    // Revoked through A: refused at once.
    let revoked_here = family("bob");
    a.create(&revoked_here, key_in(&revoked_here.id))
        .await
        .unwrap();
    assert!(a.is_live(&revoked_here.id, now).await.unwrap());
    assert!(a.is_live(&revoked_here.id, now).await.unwrap());
    assert_eq!(a.revoke_user("bob").await.unwrap(), 1);
    assert!(!a.is_live(&revoked_here.id, now).await.unwrap());

    // A cached deadline is compared with the clock at every check.
    let late = now.saturating_add(Duration::from_secs(3_601));
    let live = family("carol");
    b.create(&live, key_in(&live.id)).await.unwrap();
    assert!(a.is_live(&live.id, now).await.unwrap());
    assert!(!a.is_live(&live.id, late).await.unwrap());
}
