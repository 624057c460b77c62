//! Passkeys in SQLite and PostgreSQL, created or migrated on open
//! (component `passkeys` in `auth_schema_migrations`): one table,
//! `auth_passkeys`, one row per passkey, keyed by the raw credential id
//! (`BLOB` / `BYTEA`), indexed by `(user_id, created_at)` for the list and
//! the count; times in Unix milliseconds, the credential as the WebAuthn
//! library's JSON (`TEXT`).
//!
//! Every operation is one statement: `insert` is
//! `INSERT ... ON CONFLICT DO NOTHING` (no row written: the id is taken),
//! `record_use` an `UPDATE ... WHERE credential_id = ? AND credential =
//! expected` (PostgreSQL re-checks the condition on the row a concurrent
//! update committed; SQLite runs one writer at a time), `rename` and
//! `delete` name the user in their `WHERE`.

use async_trait::async_trait;
use sqlx::Row;

use super::{PasskeyStore, PasskeyStoreError, StoredPasskey};
use crate::clock::Timestamp;
use crate::sql_deadline::Deadline;
use crate::sql_migration::migrate;
use crate::sqlite_inline::Inline;

struct Queries {
    schema_v1: [&'static str; 2],
    create_migrations: &'static str,
    read_migration: &'static str,
    write_migration: &'static str,
    lock_migrations: Option<&'static str>,
    insert: &'static str,
    list: &'static str,
    find: &'static str,
    record_use: &'static str,
    rename: &'static str,
    delete: &'static str,
    count: &'static str,
}

const SCHEMA_VERSION: i64 = 1;

#[cfg(feature = "sqlite")]
const SQLITE: Queries = Queries {
    schema_v1: [
        "CREATE TABLE IF NOT EXISTS auth_passkeys (
            credential_id BLOB PRIMARY KEY NOT NULL,
            user_id TEXT NOT NULL,
            name TEXT NOT NULL,
            credential TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            last_used_at INTEGER,
            backup_eligible BOOLEAN NOT NULL,
            backed_up BOOLEAN NOT NULL
        )",
        "CREATE INDEX IF NOT EXISTS auth_passkeys_user
            ON auth_passkeys (user_id, created_at)",
    ],
    create_migrations: "CREATE TABLE IF NOT EXISTS auth_schema_migrations (
        component TEXT PRIMARY KEY NOT NULL, version INTEGER NOT NULL)",
    read_migration: "SELECT version FROM auth_schema_migrations WHERE component = 'passkeys'",
    write_migration: "INSERT INTO auth_schema_migrations (component, version)
        VALUES ('passkeys', ?1)
        ON CONFLICT (component) DO UPDATE SET version = excluded.version",
    lock_migrations: None,
    insert: "INSERT INTO auth_passkeys (credential_id, user_id, name, credential, created_at,
            last_used_at, backup_eligible, backed_up)
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
        ON CONFLICT (credential_id) DO NOTHING",
    list: "SELECT credential_id, user_id, name, credential, created_at, last_used_at,
            backup_eligible, backed_up
        FROM auth_passkeys WHERE user_id = ?1 ORDER BY created_at, credential_id",
    find: "SELECT credential_id, user_id, name, credential, created_at, last_used_at,
            backup_eligible, backed_up
        FROM auth_passkeys WHERE credential_id = ?1",
    record_use: "UPDATE auth_passkeys SET credential = ?3, backed_up = ?4, last_used_at = ?5
        WHERE credential_id = ?1 AND credential = ?2",
    rename: "UPDATE auth_passkeys SET name = ?3 WHERE credential_id = ?2 AND user_id = ?1",
    delete: "DELETE FROM auth_passkeys WHERE credential_id = ?2 AND user_id = ?1",
    count: "SELECT COUNT(*) FROM auth_passkeys WHERE user_id = ?1",
};

#[cfg(feature = "postgres")]
const POSTGRES: Queries = Queries {
    schema_v1: [
        "CREATE TABLE IF NOT EXISTS auth_passkeys (
            credential_id BYTEA PRIMARY KEY,
            user_id TEXT NOT NULL,
            name TEXT NOT NULL,
            credential TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            last_used_at BIGINT,
            backup_eligible BOOLEAN NOT NULL,
            backed_up BOOLEAN NOT NULL
        )",
        "CREATE INDEX IF NOT EXISTS auth_passkeys_user
            ON auth_passkeys (user_id, created_at)",
    ],
    create_migrations: "CREATE TABLE IF NOT EXISTS auth_schema_migrations (
        component TEXT PRIMARY KEY, version BIGINT NOT NULL)",
    read_migration: "SELECT version FROM auth_schema_migrations WHERE component = 'passkeys'",
    write_migration: "INSERT INTO auth_schema_migrations (component, version)
        VALUES ('passkeys', $1)
        ON CONFLICT (component) DO UPDATE SET version = excluded.version",
    // Every store takes the same lock, so app instances starting together
    // migrate one at a time.
    lock_migrations: Some("SELECT pg_advisory_xact_lock(7329917254391)"),
    insert: "INSERT INTO auth_passkeys (credential_id, user_id, name, credential, created_at,
            last_used_at, backup_eligible, backed_up)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        ON CONFLICT (credential_id) DO NOTHING",
    list: "SELECT credential_id, user_id, name, credential, created_at, last_used_at,
            backup_eligible, backed_up
        FROM auth_passkeys WHERE user_id = $1 ORDER BY created_at, credential_id",
    find: "SELECT credential_id, user_id, name, credential, created_at, last_used_at,
            backup_eligible, backed_up
        FROM auth_passkeys WHERE credential_id = $1",
    // A concurrent use's update holds the row: this one waits for it, then
    // re-checks `credential = $2` on the committed row (and writes nothing).
    record_use: "UPDATE auth_passkeys SET credential = $3, backed_up = $4, last_used_at = $5
        WHERE credential_id = $1 AND credential = $2",
    rename: "UPDATE auth_passkeys SET name = $3 WHERE credential_id = $2 AND user_id = $1",
    delete: "DELETE FROM auth_passkeys WHERE credential_id = $2 AND user_id = $1",
    count: "SELECT COUNT(*) FROM auth_passkeys WHERE user_id = $1",
};

macro_rules! sql_passkey_store {
    ($(#[$doc:meta])* $name:ident, $db:ty, $row:ty, $queries:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            pool: sqlx::Pool<$db>,
            // Read only with the `sqlite` feature.
            #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
            inline: Inline,
        }

        impl $name {
            /// Uses an existing pool (e.g. the session store's or the
            /// app's own), creating or migrating the passkey table.
            pub async fn from_pool(pool: sqlx::Pool<$db>) -> Result<Self, PasskeyStoreError> {
                let newer = PasskeyStoreError::Backend(
                    "passkey schema is newer than this version of auth-core".into(),
                );
                migrate!(pool, $queries, SCHEMA_VERSION, newer, |tx, current| {
                    if current < 1 {
                        for statement in $queries.schema_v1 {
                            sqlx::query(statement).execute(&mut *tx).await?;
                        }
                    }
                });
                Ok(Self {
                    inline: Inline::of(&pool).await,
                    pool,
                })
            }

            /// The connection pool.
            pub fn pool(&self) -> &sqlx::Pool<$db> {
                &self.pool
            }

            /// A passkey from a row with every column.
            fn passkey(row: &$row) -> Result<StoredPasskey, PasskeyStoreError> {
                let last_used_at: Option<i64> = row.try_get("last_used_at")?;
                Ok(StoredPasskey {
                    credential_id: row.try_get("credential_id")?,
                    user_id: row.try_get("user_id")?,
                    name: row.try_get("name")?,
                    credential: row.try_get("credential")?,
                    created_at: Timestamp::from_unix_millis(row.try_get("created_at")?),
                    last_used_at: last_used_at.map(Timestamp::from_unix_millis),
                    backup_eligible: row.try_get("backup_eligible")?,
                    backed_up: row.try_get("backed_up")?,
                })
            }
        }

        #[async_trait]
        impl PasskeyStore for $name {
            async fn insert(&self, passkey: &StoredPasskey) -> Result<(), PasskeyStoreError> {
                let inserted = sqlx::query($queries.insert)
                    .bind(passkey.credential_id.as_slice())
                    .bind(passkey.user_id.as_str())
                    .bind(passkey.name.as_str())
                    .bind(passkey.credential.as_str())
                    .bind(passkey.created_at.as_unix_millis())
                    .bind(passkey.last_used_at.map(Timestamp::as_unix_millis))
                    .bind(passkey.backup_eligible)
                    .bind(passkey.backed_up)
                    .execute(&self.pool)
                    .bounded::<$db>(&self.inline)
                    .await?
                    .rows_affected();
                if inserted == 0 {
                    return Err(PasskeyStoreError::CredentialTaken);
                }
                Ok(())
            }

            async fn list(
                &self,
                user_id: &str,
            ) -> Result<Vec<StoredPasskey>, PasskeyStoreError> {
                // Read by pages that show the user's second factors: inline
                // and kept until the file changes when the store is a SQLite
                // file (`sqlite_inline`).
                #[cfg(feature = "sqlite")]
                if let Some(list) = self.inline.cached(
                    "passkeys.list",
                    user_id.as_bytes(),
                    |c| {
                        let mut statement = c.prepare_cached($queries.list)?;
                        let rows = statement.query_map([user_id], |row| {
                            let last_used_at: Option<i64> = row.get(5)?;
                            Ok(StoredPasskey {
                                credential_id: row.get(0)?,
                                user_id: row.get(1)?,
                                name: row.get(2)?,
                                credential: row.get(3)?,
                                created_at: Timestamp::from_unix_millis(row.get(4)?),
                                last_used_at: last_used_at.map(Timestamp::from_unix_millis),
                                backup_eligible: row.get(6)?,
                                backed_up: row.get(7)?,
                            })
                        })?;
                        rows.collect::<rusqlite::Result<Vec<_>>>()
                    },
                    |_| true,
                ) {
                    return Ok(Vec::clone(&list));
                }
                sqlx::query($queries.list)
                    .bind(user_id)
                    .fetch_all(&self.pool)
                    .bounded::<$db>(&self.inline)
                    .await?
                    .iter()
                    .map(Self::passkey)
                    .collect()
            }

            async fn find(
                &self,
                credential_id: &[u8],
            ) -> Result<Option<StoredPasskey>, PasskeyStoreError> {
                sqlx::query($queries.find)
                    .bind(credential_id)
                    .fetch_optional(&self.pool)
                    .bounded::<$db>(&self.inline)
                    .await?
                    .as_ref()
                    .map(Self::passkey)
                    .transpose()
            }

            async fn record_use(
                &self,
                credential_id: &[u8],
                expected: &str,
                credential: &str,
                backed_up: bool,
                used_at: Timestamp,
            ) -> Result<bool, PasskeyStoreError> {
                let updated = sqlx::query($queries.record_use)
                    .bind(credential_id)
                    .bind(expected)
                    .bind(credential)
                    .bind(backed_up)
                    .bind(used_at.as_unix_millis())
                    .execute(&self.pool)
                    .bounded::<$db>(&self.inline)
                    .await?
                    .rows_affected();
                Ok(updated > 0)
            }

            async fn rename(
                &self,
                user_id: &str,
                credential_id: &[u8],
                name: &str,
            ) -> Result<bool, PasskeyStoreError> {
                let updated = sqlx::query($queries.rename)
                    .bind(user_id)
                    .bind(credential_id)
                    .bind(name)
                    .execute(&self.pool)
                    .bounded::<$db>(&self.inline)
                    .await?
                    .rows_affected();
                Ok(updated > 0)
            }

            async fn delete(
                &self,
                user_id: &str,
                credential_id: &[u8],
            ) -> Result<bool, PasskeyStoreError> {
                let deleted = sqlx::query($queries.delete)
                    .bind(user_id)
                    .bind(credential_id)
                    .execute(&self.pool)
                    .bounded::<$db>(&self.inline)
                    .await?
                    .rows_affected();
                Ok(deleted > 0)
            }

            async fn count(&self, user_id: &str) -> Result<u64, PasskeyStoreError> {
                let count: i64 = sqlx::query_scalar($queries.count)
                    .bind(user_id)
                    .fetch_one(&self.pool)
                    .bounded::<$db>(&self.inline)
                    .await?;
                u64::try_from(count).map_err(|_| PasskeyStoreError::Corrupt)
            }
        }
    };
}

#[cfg(feature = "sqlite")]
sql_passkey_store!(
    /// Passkeys in SQLite (share a pool:
    /// `SqlitePasskeyStore::from_pool(session_store.pool().clone())`).
    SqlitePasskeyStore,
    sqlx::Sqlite,
    sqlx::sqlite::SqliteRow,
    SQLITE
);

#[cfg(feature = "postgres")]
sql_passkey_store!(
    /// Passkeys in PostgreSQL: what several app instances share.
    PostgresPasskeyStore,
    sqlx::Postgres,
    sqlx::postgres::PgRow,
    POSTGRES
);
