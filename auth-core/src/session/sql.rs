//! SQLite and PostgreSQL session stores, on `sqlx`.
//!
//! One table, `auth_sessions`: the key (SHA-256 of the session ID, never the
//! ID), the user id and expiry as indexed columns for revoke-all, listing and
//! clean-up, the compare-and-set version, and the record as JSON. The schema
//! is created or migrated when the store is opened (table
//! `auth_schema_migrations` records the applied version).

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::Row;

use super::{SaveOutcome, SessionKey, SessionRecord, SessionStore, StoreError};
use crate::clock::{Clock, SystemClock, Timestamp};
use crate::sql_deadline::Deadline;
use crate::sql_migration::migrate;
use crate::sqlite_inline::Inline;

/// The SQL one backend needs; placeholders differ (`?1` vs `$1`).
struct Queries {
    /// Statements of schema version 1, in order.
    schema_v1: &'static [&'static str],
    create_migrations: &'static str,
    read_migration: &'static str,
    write_migration: &'static str,
    lock_migrations: Option<&'static str>,
    purge_key: &'static str,
    insert: &'static str,
    load: &'static str,
    save: &'static str,
    rotate: &'static str,
    version_of: &'static str,
    delete: &'static str,
    delete_by_user: &'static str,
    list_by_user: &'static str,
    delete_expired: &'static str,
}

const SCHEMA_VERSION: i64 = 1;

#[cfg(feature = "sqlite")]
const SQLITE: Queries = Queries {
    schema_v1: &[
        "CREATE TABLE IF NOT EXISTS auth_sessions (
            key BLOB PRIMARY KEY NOT NULL,
            user_id TEXT,
            expires_at INTEGER NOT NULL,
            version INTEGER NOT NULL,
            record TEXT NOT NULL
        )",
        "CREATE INDEX IF NOT EXISTS auth_sessions_user ON auth_sessions (user_id)",
        "CREATE INDEX IF NOT EXISTS auth_sessions_expires ON auth_sessions (expires_at)",
    ],
    create_migrations: "CREATE TABLE IF NOT EXISTS auth_schema_migrations (
        component TEXT PRIMARY KEY NOT NULL, version INTEGER NOT NULL)",
    read_migration: "SELECT version FROM auth_schema_migrations WHERE component = 'sessions'",
    write_migration:
        "INSERT INTO auth_schema_migrations (component, version) VALUES ('sessions', ?1)
        ON CONFLICT (component) DO UPDATE SET version = excluded.version",
    lock_migrations: None,
    purge_key: "DELETE FROM auth_sessions WHERE key = ?1 AND expires_at <= ?2",
    insert: "INSERT INTO auth_sessions (key, user_id, expires_at, version, record)
        VALUES (?1, ?2, ?3, ?4, ?5)",
    load: "SELECT version, record FROM auth_sessions WHERE key = ?1 AND expires_at > ?2",
    save: "UPDATE auth_sessions SET user_id = ?2, expires_at = ?3, version = ?4, record = ?5
        WHERE key = ?1 AND version = ?6 AND expires_at > ?7",
    rotate:
        "UPDATE auth_sessions SET key = ?2, user_id = ?3, expires_at = ?4, version = ?5, record = ?6
        WHERE key = ?1 AND version = ?7 AND expires_at > ?8",
    version_of: "SELECT version FROM auth_sessions WHERE key = ?1 AND expires_at > ?2",
    delete: "DELETE FROM auth_sessions WHERE key = ?1",
    delete_by_user: "DELETE FROM auth_sessions WHERE user_id = ?1 AND key <> ?2
        RETURNING expires_at",
    list_by_user: "SELECT key, version, record FROM auth_sessions
        WHERE user_id = ?1 AND expires_at > ?2",
    delete_expired: "DELETE FROM auth_sessions WHERE expires_at <= ?1",
};

#[cfg(feature = "postgres")]
const POSTGRES: Queries = Queries {
    schema_v1: &[
        "CREATE TABLE IF NOT EXISTS auth_sessions (
            key BYTEA PRIMARY KEY,
            user_id TEXT,
            expires_at BIGINT NOT NULL,
            version BIGINT NOT NULL,
            record TEXT NOT NULL
        )",
        "CREATE INDEX IF NOT EXISTS auth_sessions_user ON auth_sessions (user_id)",
        "CREATE INDEX IF NOT EXISTS auth_sessions_expires ON auth_sessions (expires_at)",
    ],
    create_migrations: "CREATE TABLE IF NOT EXISTS auth_schema_migrations (
        component TEXT PRIMARY KEY, version BIGINT NOT NULL)",
    read_migration: "SELECT version FROM auth_schema_migrations WHERE component = 'sessions'",
    write_migration:
        "INSERT INTO auth_schema_migrations (component, version) VALUES ('sessions', $1)
        ON CONFLICT (component) DO UPDATE SET version = excluded.version",
    // Several app instances may start at once: one migrates, the others wait.
    lock_migrations: Some("SELECT pg_advisory_xact_lock(7329917254391)"),
    purge_key: "DELETE FROM auth_sessions WHERE key = $1 AND expires_at <= $2",
    insert: "INSERT INTO auth_sessions (key, user_id, expires_at, version, record)
        VALUES ($1, $2, $3, $4, $5)",
    load: "SELECT version, record FROM auth_sessions WHERE key = $1 AND expires_at > $2",
    save: "UPDATE auth_sessions SET user_id = $2, expires_at = $3, version = $4, record = $5
        WHERE key = $1 AND version = $6 AND expires_at > $7",
    rotate:
        "UPDATE auth_sessions SET key = $2, user_id = $3, expires_at = $4, version = $5, record = $6
        WHERE key = $1 AND version = $7 AND expires_at > $8",
    version_of: "SELECT version FROM auth_sessions WHERE key = $1 AND expires_at > $2",
    delete: "DELETE FROM auth_sessions WHERE key = $1",
    delete_by_user: "DELETE FROM auth_sessions WHERE user_id = $1 AND key <> $2
        RETURNING expires_at",
    list_by_user: "SELECT key, version, record FROM auth_sessions
        WHERE user_id = $1 AND expires_at > $2",
    delete_expired: "DELETE FROM auth_sessions WHERE expires_at <= $1",
};

fn decode(version: i64, json: &str) -> Result<SessionRecord, StoreError> {
    SessionRecord::from_json(json, u64::try_from(version).unwrap_or(0))
}

fn version(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

macro_rules! sql_store {
    ($(#[$doc:meta])* $name:ident, $db:ty, $queries:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            pool: sqlx::Pool<$db>,
            clock: Arc<dyn Clock>,
            // Read only with the `sqlite` feature.
            #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
            pub(crate) inline: Inline,
        }

        impl $name {
            /// Uses an existing pool, creating or migrating the schema.
            pub async fn from_pool(pool: sqlx::Pool<$db>) -> Result<Self, StoreError> {
                let mut store = Self {
                    pool,
                    clock: Arc::new(SystemClock),
                    inline: Inline::default(),
                };
                store.migrate().await?;
                store.inline = Inline::of(&store.pool).await;
                Ok(store)
            }

            /// Judges expiry by `clock` instead of the system clock.
            #[must_use]
            pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
                self.clock = clock;
                self
            }

            /// The connection pool.
            pub fn pool(&self) -> &sqlx::Pool<$db> {
                &self.pool
            }

            async fn migrate(&self) -> Result<(), StoreError> {
                let newer = StoreError::Backend(
                    "session schema is newer than this version of auth-core".into(),
                );
                migrate!(self.pool, $queries, SCHEMA_VERSION, newer, |tx, current| {
                    if current < 1 {
                        for statement in $queries.schema_v1 {
                            sqlx::query(*statement).execute(&mut *tx).await?;
                        }
                    }
                });
                Ok(())
            }

            fn now(&self) -> i64 {
                self.clock.now().as_unix_millis()
            }

            /// `Conflict` if the key is live with another version, else `Missing`.
            async fn miss_or_conflict(&self, key: &SessionKey) -> Result<SaveOutcome, StoreError> {
                let found: Option<i64> = sqlx::query_scalar($queries.version_of)
                    .bind(key.as_bytes().as_slice())
                    .bind(self.now())
                    .fetch_optional(&self.pool)
                    .bounded::<$db>(&self.inline)
                    .await?;
                Ok(if found.is_some() {
                    SaveOutcome::Conflict
                } else {
                    SaveOutcome::Missing
                })
            }
        }

        #[async_trait]
        impl SessionStore for $name {
            async fn create(&self, key: &SessionKey, record: &SessionRecord) -> Result<(), StoreError> {
                let q = &$queries;
                sqlx::query(q.purge_key)
                    .bind(key.as_bytes().as_slice())
                    .bind(self.now())
                    .execute(&self.pool)
                    .bounded::<$db>(&self.inline)
                    .await?;
                let result = sqlx::query(q.insert)
                    .bind(key.as_bytes().as_slice())
                    .bind(record.user_id.as_deref())
                    .bind(record.expires_at().as_unix_millis())
                    .bind(version(record.version))
                    .bind(record.to_json()?)
                    .execute(&self.pool)
                    .bounded::<$db>(&self.inline)
                    .await;
                match result {
                    Ok(_) => Ok(()),
                    Err(error) if is_unique_violation(&error) => Err(StoreError::Collision),
                    Err(error) => Err(error.into()),
                }
            }

            async fn load(&self, key: &SessionKey) -> Result<Option<Arc<SessionRecord>>, StoreError> {
                // The read of every authenticated request: inline when the
                // store is a SQLite file (`sqlite_inline`).
                // A record decoded once is kept until the file changes
                // (`sqlite_inline`'s cache); an unknown key is not cached
                // (anyone can send one).
                #[cfg(feature = "sqlite")]
                {
                    let now = self.now();
                    let found = self.inline.cached(
                        "sessions.load",
                        key.as_bytes(),
                        |c| {
                            use rusqlite::OptionalExtension;
                            c.prepare_cached($queries.load)?
                                .query_row(
                                    rusqlite::params![key.as_bytes().as_slice(), now],
                                    |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)),
                                )
                                .optional()
                                .map(|row| row.map(|(v, json)| decode(v, &json).map(Arc::new)))
                        },
                        |found| matches!(found, Some(Ok(_))),
                    );
                    match found.as_deref() {
                        Some(Some(Ok(record))) if record.expires_at().as_unix_millis() > now => {
                            return Ok(Some(Arc::clone(record)));
                        }
                        // Gone, or expired since it was cached.
                        Some(None | Some(Ok(_))) => return Ok(None),
                        // Corrupt (never cached): sqlx's read reports it.
                        Some(Some(Err(_))) | None => {}
                    }
                }
                let row = sqlx::query($queries.load)
                    .bind(key.as_bytes().as_slice())
                    .bind(self.now())
                    .fetch_optional(&self.pool)
                    .bounded::<$db>(&self.inline)
                    .await?;
                row.map(|row| decode(row.try_get("version")?, row.try_get("record")?).map(Arc::new))
                    .transpose()
            }

            async fn save(
                &self,
                key: &SessionKey,
                record: &SessionRecord,
                expected_version: u64,
            ) -> Result<SaveOutcome, StoreError> {
                let updated = sqlx::query($queries.save)
                    .bind(key.as_bytes().as_slice())
                    .bind(record.user_id.as_deref())
                    .bind(record.expires_at().as_unix_millis())
                    .bind(version(expected_version + 1))
                    .bind(record.to_json()?)
                    .bind(version(expected_version))
                    .bind(self.now())
                    .execute(&self.pool)
                    .bounded::<$db>(&self.inline)
                    .await?
                    .rows_affected();
                if updated == 1 {
                    Ok(SaveOutcome::Saved)
                } else {
                    self.miss_or_conflict(key).await
                }
            }

            async fn rotate(
                &self,
                old: &SessionKey,
                new: &SessionKey,
                record: &SessionRecord,
                expected_version: u64,
            ) -> Result<SaveOutcome, StoreError> {
                let result = sqlx::query($queries.rotate)
                    .bind(old.as_bytes().as_slice())
                    .bind(new.as_bytes().as_slice())
                    .bind(record.user_id.as_deref())
                    .bind(record.expires_at().as_unix_millis())
                    .bind(version(expected_version + 1))
                    .bind(record.to_json()?)
                    .bind(version(expected_version))
                    .bind(self.now())
                    .execute(&self.pool)
                    .bounded::<$db>(&self.inline)
                    .await;
                match result {
                    Ok(done) if done.rows_affected() == 1 => Ok(SaveOutcome::Saved),
                    Ok(_) => self.miss_or_conflict(old).await,
                    Err(error) if is_unique_violation(&error) => Err(StoreError::Collision),
                    Err(error) => Err(error.into()),
                }
            }

            async fn delete(&self, key: &SessionKey) -> Result<bool, StoreError> {
                let deleted = sqlx::query($queries.delete)
                    .bind(key.as_bytes().as_slice())
                    .execute(&self.pool)
                    .bounded::<$db>(&self.inline)
                    .await?
                    .rows_affected();
                Ok(deleted > 0)
            }

            async fn delete_by_user(
                &self,
                user_id: &str,
                keep: Option<&SessionKey>,
            ) -> Result<u64, StoreError> {
                // An empty key never matches a real one.
                let keep: &[u8] = keep.map_or(&[], |k| k.as_bytes().as_slice());
                // Every row goes; only live sessions count as ended.
                let now = self.now();
                let rows = sqlx::query($queries.delete_by_user)
                    .bind(user_id)
                    .bind(keep)
                    .fetch_all(&self.pool)
                    .bounded::<$db>(&self.inline)
                    .await?;
                let ended = rows
                    .iter()
                    .filter(|row| row.try_get::<i64, _>(0).is_ok_and(|at| at > now))
                    .count();
                Ok(ended as u64)
            }

            async fn list_by_user(
                &self,
                user_id: &str,
            ) -> Result<Vec<(SessionKey, SessionRecord)>, StoreError> {
                let rows = sqlx::query($queries.list_by_user)
                    .bind(user_id)
                    .bind(self.now())
                    .fetch_all(&self.pool)
                    .bounded::<$db>(&self.inline)
                    .await?;
                rows.iter()
                    .map(|row| {
                        let key: Vec<u8> = row.try_get("key")?;
                        let key: [u8; 32] = key.try_into().map_err(|_| {
                            StoreError::Backend("session key column is not 32 bytes".into())
                        })?;
                        let record = decode(row.try_get("version")?, row.try_get("record")?)?;
                        Ok((SessionKey::from_bytes(key), record))
                    })
                    .collect()
            }

            async fn delete_expired(&self, now: Timestamp) -> Result<u64, StoreError> {
                Ok(sqlx::query($queries.delete_expired)
                    .bind(now.as_unix_millis())
                    .execute(&self.pool)
                    .bounded::<$db>(&self.inline)
                    .await?
                    .rows_affected())
            }
        }
    };
}

#[cfg(feature = "sqlite")]
sql_store!(
    /// Sessions in a SQLite file: the embedded default. WAL mode, a busy
    /// timeout, schema created or migrated on open.
    SqliteStore,
    sqlx::Sqlite,
    SQLITE
);

#[cfg(feature = "sqlite")]
impl SqliteStore {
    /// Opens (creating if missing) the database at `url`, e.g.
    /// `sqlite://demo.db` or `sqlite::memory:`, in WAL mode.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
        use std::str::FromStr;
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(std::time::Duration::from_secs(5));
        // A file in this process: no liveness ping before each query (it
        // doubled the cost of a session read).
        let pool = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        Self::from_pool(pool).await
    }
}

#[cfg(feature = "postgres")]
sql_store!(
    /// Sessions in PostgreSQL: what several app instances share. Schema
    /// created or migrated on open, under an advisory lock.
    PostgresStore,
    sqlx::Postgres,
    POSTGRES
);

#[cfg(feature = "postgres")]
impl PostgresStore {
    /// Connects to `url` (`postgres://...`). The pool waits at most 3 s
    /// for a connection (sqlx's default is 30 s), the liveness ping of a
    /// pooled connection included: with the server unreachable or
    /// stalled, a request fails within that (503) instead of hanging.
    /// Every statement of this crate's SQL stores on PostgreSQL then has
    /// 5 s to finish (a network that stops in the middle of a query):
    /// past that it fails the same way.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(std::time::Duration::from_secs(3))
            .connect(url)
            .await?;
        Self::from_pool(pool).await
    }
}
