//! The token table in SQLite and PostgreSQL, created or migrated on open
//! (component `single_use_tokens` in `auth_schema_migrations`):
//! `auth_single_use_tokens`, one row per token, keyed by the hex SHA-256 of
//! the token (never the token). Consuming a token is one
//! `DELETE ... RETURNING`: of two concurrent uses, one gets the row.

use async_trait::async_trait;
use sqlx::Row;

use super::{Purpose, TokenKey, TokenRecord, TokenStore, TokenStoreError};
use crate::clock::Timestamp;
use crate::sql_deadline::Deadline;
use crate::sql_migration::migrate;
use crate::sqlite_inline::Inline;

struct Queries {
    schema_v1: [&'static str; 3],
    create_migrations: &'static str,
    read_migration: &'static str,
    write_migration: &'static str,
    lock_migrations: Option<&'static str>,
    insert: &'static str,
    consume: &'static str,
    peek: &'static str,
    delete_for_user: &'static str,
    delete_expired: &'static str,
}

const SCHEMA_VERSION: i64 = 1;

#[cfg(feature = "sqlite")]
const SQLITE: Queries = Queries {
    schema_v1: [
        "CREATE TABLE IF NOT EXISTS auth_single_use_tokens (
            key TEXT PRIMARY KEY NOT NULL,
            purpose TEXT NOT NULL,
            user_id TEXT NOT NULL,
            binding TEXT NOT NULL,
            expires_at INTEGER NOT NULL
        )",
        "CREATE INDEX IF NOT EXISTS auth_single_use_tokens_user
            ON auth_single_use_tokens (user_id, purpose)",
        "CREATE INDEX IF NOT EXISTS auth_single_use_tokens_expires
            ON auth_single_use_tokens (expires_at)",
    ],
    create_migrations: "CREATE TABLE IF NOT EXISTS auth_schema_migrations (
        component TEXT PRIMARY KEY NOT NULL, version INTEGER NOT NULL)",
    read_migration: "SELECT version FROM auth_schema_migrations WHERE component = 'single_use_tokens'",
    write_migration: "INSERT INTO auth_schema_migrations (component, version)
        VALUES ('single_use_tokens', ?1)
        ON CONFLICT (component) DO UPDATE SET version = excluded.version",
    lock_migrations: None,
    insert: "INSERT INTO auth_single_use_tokens (key, purpose, user_id, binding, expires_at)
        VALUES (?1, ?2, ?3, ?4, ?5)",
    consume: "DELETE FROM auth_single_use_tokens WHERE key = ?1
        RETURNING purpose, user_id, binding, expires_at",
    peek: "SELECT purpose, user_id, binding, expires_at FROM auth_single_use_tokens WHERE key = ?1",
    delete_for_user: "DELETE FROM auth_single_use_tokens WHERE user_id = ?1 AND purpose = ?2",
    delete_expired: "DELETE FROM auth_single_use_tokens WHERE expires_at <= ?1",
};

#[cfg(feature = "postgres")]
const POSTGRES: Queries = Queries {
    schema_v1: [
        "CREATE TABLE IF NOT EXISTS auth_single_use_tokens (
            key TEXT PRIMARY KEY,
            purpose TEXT NOT NULL,
            user_id TEXT NOT NULL,
            binding TEXT NOT NULL,
            expires_at BIGINT NOT NULL
        )",
        "CREATE INDEX IF NOT EXISTS auth_single_use_tokens_user
            ON auth_single_use_tokens (user_id, purpose)",
        "CREATE INDEX IF NOT EXISTS auth_single_use_tokens_expires
            ON auth_single_use_tokens (expires_at)",
    ],
    create_migrations: "CREATE TABLE IF NOT EXISTS auth_schema_migrations (
        component TEXT PRIMARY KEY, version BIGINT NOT NULL)",
    read_migration: "SELECT version FROM auth_schema_migrations WHERE component = 'single_use_tokens'",
    write_migration: "INSERT INTO auth_schema_migrations (component, version)
        VALUES ('single_use_tokens', $1)
        ON CONFLICT (component) DO UPDATE SET version = excluded.version",
    // The same lock as the other stores' migrations: instances starting
    // together migrate one at a time.
    lock_migrations: Some("SELECT pg_advisory_xact_lock(7329917254391)"),
    insert: "INSERT INTO auth_single_use_tokens (key, purpose, user_id, binding, expires_at)
        VALUES ($1, $2, $3, $4, $5)",
    consume: "DELETE FROM auth_single_use_tokens WHERE key = $1
        RETURNING purpose, user_id, binding, expires_at",
    peek: "SELECT purpose, user_id, binding, expires_at FROM auth_single_use_tokens WHERE key = $1",
    delete_for_user: "DELETE FROM auth_single_use_tokens WHERE user_id = $1 AND purpose = $2",
    delete_expired: "DELETE FROM auth_single_use_tokens WHERE expires_at <= $1",
};

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

macro_rules! sql_token_store {
    ($(#[$doc:meta])* $name:ident, $db:ty, $queries:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            pool: sqlx::Pool<$db>,
        }

        impl $name {
            /// Uses an existing pool (e.g. the session store's or the
            /// app's own), creating or migrating the token table.
            pub async fn from_pool(pool: sqlx::Pool<$db>) -> Result<Self, TokenStoreError> {
                let newer = TokenStoreError::Backend(
                    "single-use token schema is newer than this version of auth-core".into(),
                );
                migrate!(pool, $queries, SCHEMA_VERSION, newer, |tx, current| {
                    if current < 1 {
                        for statement in $queries.schema_v1 {
                            sqlx::query(statement).execute(&mut *tx).await?;
                        }
                    }
                });
                Ok(Self { pool })
            }

            /// The connection pool.
            pub fn pool(&self) -> &sqlx::Pool<$db> {
                &self.pool
            }

            /// The record of `key` that `sql` answers (the consuming
            /// delete, or the plain select), if it is for `purpose` and
            /// alive at `now`.
            async fn read_one(
                &self,
                sql: &'static str,
                key: &TokenKey,
                purpose: Purpose,
                now: Timestamp,
            ) -> Result<Option<TokenRecord>, TokenStoreError> {
                let Some(row) = sqlx::query(sql)
                    .bind(key.to_hex())
                    .fetch_optional(&self.pool)
                    .bounded::<$db>(&Inline::NONE)
                    .await?
                else {
                    return Ok(None);
                };
                let stored: String = row.try_get("purpose")?;
                let record = TokenRecord {
                    purpose: Purpose::parse(&stored).ok_or(TokenStoreError::Corrupt)?,
                    user_id: row.try_get("user_id")?,
                    binding: row.try_get("binding")?,
                    expires_at: Timestamp::from_unix_millis(row.try_get("expires_at")?),
                };
                Ok(record.usable(purpose, now))
            }
        }

        #[async_trait]
        impl TokenStore for $name {
            async fn insert(
                &self,
                key: &TokenKey,
                record: &TokenRecord,
            ) -> Result<(), TokenStoreError> {
                let result = sqlx::query($queries.insert)
                    .bind(key.to_hex())
                    .bind(record.purpose.as_str())
                    .bind(record.user_id.as_str())
                    .bind(record.binding.as_str())
                    .bind(record.expires_at.as_unix_millis())
                    .execute(&self.pool)
                    .bounded::<$db>(&Inline::NONE)
                    .await;
                match result {
                    Ok(_) => Ok(()),
                    Err(error) if is_unique_violation(&error) => Err(TokenStoreError::Collision),
                    Err(error) => Err(error.into()),
                }
            }

            async fn consume(
                &self,
                key: &TokenKey,
                purpose: Purpose,
                now: Timestamp,
            ) -> Result<Option<TokenRecord>, TokenStoreError> {
                // One statement: the row is gone whoever reads it, so of two
                // concurrent uses one gets it. Purpose and expiry are judged
                // here, after the delete (a token shown for another purpose
                // was exposed: it goes too).
                self.read_one($queries.consume, key, purpose, now).await
            }

            async fn peek(
                &self,
                key: &TokenKey,
                purpose: Purpose,
                now: Timestamp,
            ) -> Result<Option<TokenRecord>, TokenStoreError> {
                self.read_one($queries.peek, key, purpose, now).await
            }

            async fn delete_for_user(
                &self,
                user_id: &str,
                purpose: Purpose,
            ) -> Result<u64, TokenStoreError> {
                Ok(sqlx::query($queries.delete_for_user)
                    .bind(user_id)
                    .bind(purpose.as_str())
                    .execute(&self.pool)
                    .bounded::<$db>(&Inline::NONE)
                    .await?
                    .rows_affected())
            }

            async fn delete_expired(&self, now: Timestamp) -> Result<u64, TokenStoreError> {
                Ok(sqlx::query($queries.delete_expired)
                    .bind(now.as_unix_millis())
                    .execute(&self.pool)
                    .bounded::<$db>(&Inline::NONE)
                    .await?
                    .rows_affected())
            }
        }
    };
}

#[cfg(feature = "sqlite")]
sql_token_store!(
    /// Single-use tokens in SQLite (share a pool:
    /// `SqliteTokenStore::from_pool(session_store.pool().clone())`).
    SqliteTokenStore,
    sqlx::Sqlite,
    SQLITE
);

#[cfg(feature = "postgres")]
sql_token_store!(
    /// Single-use tokens in PostgreSQL: what several app instances share.
    PostgresTokenStore,
    sqlx::Postgres,
    POSTGRES
);
