//! The single-use token store contract (`auth_core::testing::token_store`),
//! run against every `TokenStore` of the toolkit: memory, SQLite (a file
//! and in memory), PostgreSQL and Redis. Each case is its own test per
//! store (`sqlite::concurrent_consumes_one_wins`, ...).
//!
//! PostgreSQL and Redis read `AUTH_TEST_POSTGRES_URL` / `AUTH_TEST_REDIS_URL`
//! (`.ci/run` starts both). Without a URL a local run skips those cases with
//! a printed reason; under `CI=true` a missing URL fails the test.
#![cfg(feature = "testing")]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use auth_core::clock::Timestamp;
use auth_core::single_use::{Purpose, TokenKey, TokenRecord, TokenStoreError};
use auth_core::testing::TokenStoreCaps;
use auth_core::token_store_tests;
use auth_core::{MemoryTokenStore, TokenStore};

#[cfg(any(feature = "postgres", feature = "redis"))]
mod common;
#[cfg(any(feature = "postgres", feature = "redis"))]
use common::service_url;

#[cfg(any(feature = "sqlite", feature = "redis"))]
fn unique(tag: &str) -> String {
    format!(
        "{tag}-{}",
        auth_core::single_use::SingleUseToken::generate()
            .unwrap()
            .key()
            .to_hex()
    )
}

token_store_tests!(memory, TokenStoreCaps::default(), {
    Some(Arc::new(MemoryTokenStore::new()) as Arc<dyn TokenStore>)
});

#[cfg(feature = "sqlite")]
token_store_tests!(sqlite, TokenStoreCaps::default(), {
    // Cargo's scratch folder for integration tests (under `target/`).
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique("tokens-db"));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("tokens.db").display());
    let sessions = auth_core::SqliteStore::connect(&url).await.unwrap();
    let tokens = auth_core::SqliteTokenStore::from_pool(sessions.pool().clone())
        .await
        .unwrap();
    Some(Arc::new(tokens) as Arc<dyn TokenStore>)
});

#[cfg(feature = "sqlite")]
token_store_tests!(sqlite_in_memory, TokenStoreCaps::default(), {
    let sessions = auth_core::SqliteStore::connect("sqlite::memory:")
        .await
        .unwrap();
    let tokens = auth_core::SqliteTokenStore::from_pool(sessions.pool().clone())
        .await
        .unwrap();
    Some(Arc::new(tokens) as Arc<dyn TokenStore>)
});

#[cfg(feature = "postgres")]
token_store_tests!(postgres, TokenStoreCaps::default(), {
    let url = service_url("AUTH_TEST_POSTGRES_URL")?;
    let sessions = auth_core::PostgresStore::connect(&url).await.unwrap();
    let tokens = auth_core::PostgresTokenStore::from_pool(sessions.pool().clone())
        .await
        .unwrap();
    Some(Arc::new(tokens) as Arc<dyn TokenStore>)
});

#[cfg(feature = "redis")]
token_store_tests!(
    redis,
    TokenStoreCaps {
        native_expiry: true,
        ..TokenStoreCaps::default()
    },
    {
        let url = service_url("AUTH_TEST_REDIS_URL")?;
        Some(Arc::new(
            auth_core::RedisTokenStore::connect_with_prefix(&url, format!("{}:", unique("test")))
                .await
                .unwrap(),
        ) as Arc<dyn TokenStore>)
    }
);

/// The one-call form runs every case too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_one_call_suite_passes_for_the_memory_store() {
    auth_core::testing::token_store_suite(
        Arc::new(MemoryTokenStore::new()),
        TokenStoreCaps::default(),
    )
    .await;
}

/// The SQL store shares a pool with the other stores, under its own
/// component in `auth_schema_migrations`; opening it again migrates
/// nothing and keeps the tokens, and a schema newer than the code is
/// refused.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn the_sqlite_store_shares_a_pool_and_reopens() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique("tokens-db"));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("tokens.db").display());
    let sessions = auth_core::SqliteStore::connect(&url).await.unwrap();
    let pool = sessions.pool().clone();
    auth_core::SqliteAccountStore::from_pool(pool.clone())
        .await
        .unwrap();
    let tokens = auth_core::SqliteTokenStore::from_pool(pool.clone())
        .await
        .unwrap();
    let now = Timestamp::from_unix_millis(1_700_000_000_000);
    let key = TokenKey::from_bytes([9; 32]);
    let record = TokenRecord {
        purpose: Purpose::EmailVerification,
        user_id: "u1".into(),
        binding: "a@example.org".into(),
        expires_at: now.saturating_add(Purpose::EmailVerification.lifetime()),
    };
    tokens.insert(&key, &record).await.unwrap();

    let again = auth_core::SqliteTokenStore::from_pool(pool.clone())
        .await
        .unwrap();
    let versions: Vec<(String, i64)> =
        sqlx::query_as("SELECT component, version FROM auth_schema_migrations ORDER BY component")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(
        versions.contains(&("single_use_tokens".to_owned(), 1)),
        "{versions:?}"
    );
    assert!(
        versions.iter().any(|(c, _)| c == "accounts"),
        "{versions:?}"
    );
    assert!(
        versions.iter().any(|(c, _)| c == "sessions"),
        "{versions:?}"
    );
    // Keyed by the hex digest.
    let stored: String = sqlx::query_scalar("SELECT key FROM auth_single_use_tokens")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, key.to_hex());
    assert_eq!(
        again
            .consume(&key, Purpose::EmailVerification, now)
            .await
            .unwrap(),
        Some(record)
    );

    sqlx::query(
        "UPDATE auth_schema_migrations SET version = 2 WHERE component = 'single_use_tokens'",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert!(matches!(
        auth_core::SqliteTokenStore::from_pool(pool.clone()).await,
        Err(TokenStoreError::Backend(_))
    ));
    pool.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Every key the Redis store writes expires: a token at its own expiry, a
/// user's index no sooner than its longest-lived token.
#[cfg(feature = "redis")]
#[tokio::test]
async fn every_redis_key_expires() {
    let Some(url) = service_url("AUTH_TEST_REDIS_URL") else {
        return;
    };
    let prefix = format!("{}:", unique("test"));
    let store = auth_core::RedisTokenStore::connect_with_prefix(&url, prefix.as_str())
        .await
        .unwrap();
    assert_eq!(store.prefix(), prefix);
    let now = auth_core::clock::Clock::now(&auth_core::clock::SystemClock);
    let mut expiries = HashMap::new();
    for (n, purpose) in Purpose::ALL.into_iter().cycle().take(9).enumerate() {
        let key = auth_core::single_use::SingleUseToken::generate()
            .unwrap()
            .key();
        let record = TokenRecord {
            purpose,
            user_id: format!("user-{}", n % 2),
            binding: String::new(),
            expires_at: now.saturating_add(purpose.lifetime() + Duration::from_secs(n as u64)),
        };
        store.insert(&key, &record).await.unwrap();
        expiries.insert(format!("{prefix}t:{}", key.to_hex()), record.expires_at);
        let index = format!("{prefix}user:{}:{}", purpose.as_str(), record.user_id);
        let longest = expiries.get(&index).copied().unwrap_or(record.expires_at);
        expiries.insert(index, longest.max(record.expires_at));
        if n == 4 {
            assert!(store.consume(&key, purpose, now).await.unwrap().is_some());
        }
    }
    store
        .delete_for_user("user-0", Purpose::MagicLink)
        .await
        .unwrap();

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
    assert!(keys.len() >= 8, "{keys:?}");
    for key in &keys {
        let at: i64 = ::redis::cmd("PEXPIRETIME")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(at > 0, "{key} does not expire");
        let expected = expiries
            .get(key)
            .unwrap_or_else(|| panic!("{key} unexpected"));
        assert!(
            at >= expected.as_unix_millis(),
            "{key} expires at {at}, before {expected:?}"
        );
        if key.starts_with(&format!("{prefix}t:")) {
            assert_eq!(
                at,
                expected.as_unix_millis(),
                "{key} expires with its token"
            );
        }
    }
}

/// A store whose `consume` reads, then deletes, in two steps: right one
/// at a time, wrong under concurrency. The suite must catch it.
#[derive(Debug, Default)]
struct RacyConsume(Mutex<HashMap<TokenKey, TokenRecord>>);

#[async_trait]
impl TokenStore for RacyConsume {
    async fn insert(&self, key: &TokenKey, record: &TokenRecord) -> Result<(), TokenStoreError> {
        let mut tokens = self.0.lock().unwrap();
        if tokens.contains_key(key) {
            return Err(TokenStoreError::Collision);
        }
        tokens.insert(*key, record.clone());
        Ok(())
    }

    async fn consume(
        &self,
        key: &TokenKey,
        purpose: Purpose,
        now: Timestamp,
    ) -> Result<Option<TokenRecord>, TokenStoreError> {
        let found = self.0.lock().unwrap().get(key).cloned();
        let Some(record) = found else {
            return Ok(None);
        };
        // A round trip to the database between the read and the delete.
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.0.lock().unwrap().remove(key);
        Ok((record.purpose == purpose && now < record.expires_at).then_some(record))
    }

    async fn delete_for_user(
        &self,
        user_id: &str,
        purpose: Purpose,
    ) -> Result<u64, TokenStoreError> {
        let mut tokens = self.0.lock().unwrap();
        let before = tokens.len();
        tokens.retain(|_, r| !(r.user_id == user_id && r.purpose == purpose));
        Ok((before - tokens.len()) as u64)
    }

    async fn delete_expired(&self, now: Timestamp) -> Result<u64, TokenStoreError> {
        let mut tokens = self.0.lock().unwrap();
        let before = tokens.len();
        tokens.retain(|_, r| r.expires_at > now);
        Ok((before - tokens.len()) as u64)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "case `concurrent_consumes_one_wins` failed")]
async fn the_suite_catches_a_token_used_twice() {
    auth_core::testing::token_store_suite(
        Arc::new(RacyConsume::default()),
        TokenStoreCaps::default(),
    )
    .await;
}

/// A store that keeps `peek`'s default passes the peek case only when it
/// says so (`without_peek`); one that claims to peek and does not fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_without_peek_says_so() {
    auth_core::testing::token_store::peek_leaves_the_token(
        Arc::new(RacyConsume::default()),
        TokenStoreCaps {
            without_peek: true,
            ..TokenStoreCaps::default()
        },
    )
    .await;
    let claimed = tokio::spawn(auth_core::testing::token_store::peek_leaves_the_token(
        Arc::new(RacyConsume::default()),
        TokenStoreCaps::default(),
    ))
    .await;
    assert!(
        claimed.is_err(),
        "a store that does not peek fails the case"
    );
}

/// The Redis Cluster client sends a script again after a slow answer: the
/// same insert run twice answers as the first run did, never a
/// collision; another record under the key is still one.
#[cfg(feature = "redis")]
#[tokio::test]
async fn a_redis_insert_sent_again_is_no_collision() {
    use auth_core::clock::{Clock, SystemClock};

    let Some(url) = service_url("AUTH_TEST_REDIS_URL") else {
        return;
    };
    let store =
        auth_core::RedisTokenStore::connect_with_prefix(&url, format!("{}:", unique("test")))
            .await
            .unwrap();
    let key = auth_core::single_use::SingleUseToken::generate()
        .unwrap()
        .key();
    let record = TokenRecord {
        purpose: Purpose::MagicLink,
        user_id: unique("user"),
        binding: "binding".to_owned(),
        expires_at: SystemClock.now().saturating_add(Duration::from_secs(600)),
    };
    store.insert(&key, &record).await.unwrap();
    store.insert(&key, &record).await.unwrap();
    let other = TokenRecord {
        user_id: unique("other"),
        ..record.clone()
    };
    assert!(store.insert(&key, &other).await.is_err());
    let now = SystemClock.now();
    assert_eq!(
        store
            .consume(&key, Purpose::MagicLink, now)
            .await
            .unwrap()
            .map(|r| r.user_id),
        Some(record.user_id)
    );
}

/// A Redis token store under a prefix of its own, a plain connection to
/// its server, and a record for a fresh user and `purpose` (10 minutes):
/// `(conn, prefix, store, record)`. `None` without `AUTH_TEST_REDIS_URL`.
#[cfg(feature = "redis")]
async fn redis_store_and_record(
    purpose: Purpose,
) -> Option<(
    ::redis::aio::MultiplexedConnection,
    String,
    auth_core::RedisTokenStore,
    TokenRecord,
)> {
    use auth_core::clock::{Clock, SystemClock};

    let url = service_url("AUTH_TEST_REDIS_URL")?;
    let prefix = format!("{}:", unique("test"));
    let store = auth_core::RedisTokenStore::connect_with_prefix(&url, prefix.as_str())
        .await
        .unwrap();
    let record = TokenRecord {
        purpose,
        user_id: unique("user"),
        binding: String::new(),
        expires_at: SystemClock.now().saturating_add(Duration::from_secs(600)),
    };
    Some((common::redis_admin(&url).await, prefix, store, record))
}

/// A user's index keeps only tokens that may still live: each insert drops
/// the ones whose expiry passed more than five minutes ago (by Redis's
/// clock), so a user who asks for mail again and again does not grow it
/// without bound. A consumed token leaves it at once. Tokens listed in the
/// set that indexed them before (a store from before the sorted set, or an
/// instance not yet upgraded) are still deleted by `delete_for_user`.
#[cfg(feature = "redis")]
#[tokio::test]
async fn a_users_token_index_drops_expired_tokens_and_the_old_set_is_still_read() {
    use auth_core::clock::{Clock, SystemClock};
    use auth_core::single_use::SingleUseToken;

    let purpose = Purpose::PasswordReset;
    let Some((mut conn, prefix, store, record)) = redis_store_and_record(purpose).await else {
        return;
    };
    let user = record.user_id.clone();
    let index = format!("{prefix}user:{}:{user}", purpose.as_str());
    let now = SystemClock.now();
    let first = SingleUseToken::generate().unwrap().key();
    store.insert(&first, &record).await.unwrap();
    // By Redis's clock, which prunes the index.
    let millis = common::redis_now_ms(&mut conn).await;
    let listed = [
        ("expired-ten-minutes-ago", millis - 600_000),
        ("expired-a-year-ago", millis - 365 * 86_400_000),
        ("expires-in-a-minute", millis + 60_000),
    ];
    common::add_scored(&mut conn, &index, &listed).await;
    let second = SingleUseToken::generate().unwrap().key();
    store.insert(&second, &record).await.unwrap();
    let mut expected = vec![
        first.to_hex(),
        second.to_hex(),
        "expires-in-a-minute".to_owned(),
    ];
    expected.sort();
    assert_eq!(common::sorted_members(&mut conn, &index).await, expected);

    let consumed = store.consume(&second, purpose, now).await.unwrap();
    assert!(consumed.is_some());
    let mut expected = vec![first.to_hex(), "expires-in-a-minute".to_owned()];
    expected.sort();
    assert_eq!(common::sorted_members(&mut conn, &index).await, expected);

    // A token listed only in the old set.
    let third = SingleUseToken::generate().unwrap().key();
    store.insert(&third, &record).await.unwrap();
    let old_set = format!("{prefix}u:{}:{user}", purpose.as_str());
    common::move_to_old_set(&mut conn, &index, &old_set, &third.to_hex()).await;

    assert_eq!(store.delete_for_user(&user, purpose).await.unwrap(), 2);
    for key in [&first, &third] {
        assert!(store.peek(key, purpose, now).await.unwrap().is_none());
    }
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
/// wrong type): `delete_for_user` still deletes every token of the index,
/// and answers the error.
#[cfg(feature = "redis")]
#[tokio::test]
async fn delete_for_user_deletes_the_index_when_the_old_set_fails() {
    use auth_core::clock::{Clock, SystemClock};
    use auth_core::single_use::SingleUseToken;

    let purpose = Purpose::MagicLink;
    let Some((mut conn, prefix, store, record)) = redis_store_and_record(purpose).await else {
        return;
    };
    let key = SingleUseToken::generate().unwrap().key();
    store.insert(&key, &record).await.unwrap();
    let old_set = format!("{prefix}u:{}:{}", purpose.as_str(), record.user_id);
    common::set_wrong_type(&mut conn, &old_set).await;
    assert!(
        store
            .delete_for_user(&record.user_id, purpose)
            .await
            .is_err()
    );
    let now = SystemClock.now();
    assert!(store.peek(&key, purpose, now).await.unwrap().is_none());
}
