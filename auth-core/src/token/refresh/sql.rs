//! Refresh-token families in SQLite and PostgreSQL, created or migrated on
//! open (component `refresh_tokens` in `auth_schema_migrations`):
//!
//! `auth_refresh_families` holds one row per family: its fields (`amr` as
//! a JSON array, the session `stamp`, times in Unix milliseconds,
//! `idle_timeout_ms`), the hex key of its current token, the token spent by
//! its latest rotation with when and the sealed successor, and
//! `live_until` (the earlier of the absolute expiry and the idle deadline;
//! indexed for the purge).
//!
//! A presented token names its family ([`RefreshKey::family_id`]), so a
//! family is one row however often it rotates: a key of a live family that
//! is neither its current token nor the latest spent one is reuse.
//!
//! A rotation is one transaction that starts with a conditional `UPDATE`
//! (`... WHERE id = family AND current_key = presented AND live_until >
//! now`): the first of concurrent rotations takes the row (PostgreSQL's
//! row lock; SQLite's write lock) and the others, after it commits, find
//! the token spent. Revocation deletes the family's row.
//!
//! `auth_refresh_tokens` (one row per token ever current, naming its
//! family) is what earlier versions found a token's family by. This one
//! never writes it: the table stays, so instances of an earlier version
//! keep working during a rolling upgrade, and the purge deletes its rows
//! as their families go. The 43-character refresh tokens of earlier
//! versions are refused (their clients sign in again; the access tokens
//! already issued live out their minutes); an instance of an earlier
//! version refuses the new 64-character ones in turn, so finish the
//! upgrade before relying on refreshes.

use async_trait::async_trait;
use sqlx::Row;

use super::{Family, RefreshKey, RefreshStore, RefreshStoreError, Rotation, millis};
use crate::clock::Timestamp;
use crate::sql_deadline::Deadline;
use crate::sql_migration::migrate;
use crate::sqlite_inline::Inline;

struct Queries {
    schema_v1: [&'static str; 5],
    /// Deletes the rows of the token table of earlier versions whose
    /// family is gone (see the module docs).
    delete_orphan_tokens: &'static str,
    create_migrations: &'static str,
    read_migration: &'static str,
    write_migration: &'static str,
    lock_migrations: Option<&'static str>,
    insert_family: &'static str,
    rotate: &'static str,
    read_family: &'static str,
    /// A family by id, outside any transaction.
    family: &'static str,
    delete_family: &'static str,
    delete_user_families: &'static str,
    delete_dead_families: &'static str,
    is_live: &'static str,
    /// `is_live`'s row without the time condition (for the SQLite
    /// file's read cache, where the time is compared after the read).
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    live_until: &'static str,
}

const SCHEMA_VERSION: i64 = 1;

/// Idle timeouts are kept to the millisecond, up to 2^50 ms (about 35,000
/// years), so `now + idle_timeout_ms` cannot overflow.
const MAX_IDLE_MS: i64 = 1 << 50;

#[cfg(feature = "sqlite")]
const SQLITE: Queries = Queries {
    schema_v1: [
        "CREATE TABLE IF NOT EXISTS auth_refresh_families (
            id TEXT PRIMARY KEY NOT NULL,
            user_id TEXT NOT NULL,
            amr TEXT NOT NULL,
            stamp TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            idle_timeout_ms INTEGER NOT NULL,
            last_used_at INTEGER NOT NULL,
            live_until INTEGER NOT NULL,
            current_key TEXT NOT NULL,
            previous_key TEXT,
            previous_spent_at INTEGER,
            sealed_successor BLOB
        )",
        "CREATE INDEX IF NOT EXISTS auth_refresh_families_user
            ON auth_refresh_families (user_id)",
        "CREATE INDEX IF NOT EXISTS auth_refresh_families_live_until
            ON auth_refresh_families (live_until)",
        "CREATE TABLE IF NOT EXISTS auth_refresh_tokens (
            key TEXT PRIMARY KEY NOT NULL,
            family_id TEXT NOT NULL
        )",
        "CREATE INDEX IF NOT EXISTS auth_refresh_tokens_family
            ON auth_refresh_tokens (family_id)",
    ],
    delete_orphan_tokens: "DELETE FROM auth_refresh_tokens
        WHERE NOT EXISTS (SELECT 1 FROM auth_refresh_families f
            WHERE f.id = auth_refresh_tokens.family_id)",
    create_migrations: "CREATE TABLE IF NOT EXISTS auth_schema_migrations (
        component TEXT PRIMARY KEY NOT NULL, version INTEGER NOT NULL)",
    read_migration: "SELECT version FROM auth_schema_migrations WHERE component = 'refresh_tokens'",
    write_migration: "INSERT INTO auth_schema_migrations (component, version)
        VALUES ('refresh_tokens', ?1)
        ON CONFLICT (component) DO UPDATE SET version = excluded.version",
    lock_migrations: None,
    insert_family: "INSERT INTO auth_refresh_families (id, user_id, amr, stamp, created_at,
            expires_at, idle_timeout_ms, last_used_at, live_until, current_key)
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    rotate: "UPDATE auth_refresh_families
        SET current_key = ?3, previous_key = ?2, previous_spent_at = ?4, sealed_successor = ?5,
            last_used_at = ?4, live_until = MIN(expires_at, ?4 + idle_timeout_ms)
        WHERE id = ?1 AND current_key = ?2 AND live_until > ?4
        RETURNING user_id, amr, stamp, created_at, expires_at, idle_timeout_ms, last_used_at",
    // The transaction holds the write lock already (its UPDATE).
    read_family: "SELECT user_id, amr, stamp, created_at, expires_at, idle_timeout_ms,
            last_used_at, live_until, current_key, previous_key, previous_spent_at,
            sealed_successor
        FROM auth_refresh_families WHERE id = ?1",
    family: "SELECT user_id, amr, stamp, created_at, expires_at, idle_timeout_ms, last_used_at
        FROM auth_refresh_families WHERE id = ?1",
    delete_family: "DELETE FROM auth_refresh_families WHERE id = ?1 RETURNING user_id",
    delete_user_families: "DELETE FROM auth_refresh_families WHERE user_id = ?1 RETURNING id",
    delete_dead_families: "DELETE FROM auth_refresh_families WHERE live_until <= ?1 RETURNING id",
    is_live: "SELECT 1 FROM auth_refresh_families WHERE id = ?1 AND live_until > ?2",
    live_until: "SELECT live_until FROM auth_refresh_families WHERE id = ?1",
};

#[cfg(feature = "postgres")]
const POSTGRES: Queries = Queries {
    schema_v1: [
        "CREATE TABLE IF NOT EXISTS auth_refresh_families (
            id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL,
            amr TEXT NOT NULL,
            stamp TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            expires_at BIGINT NOT NULL,
            idle_timeout_ms BIGINT NOT NULL,
            last_used_at BIGINT NOT NULL,
            live_until BIGINT NOT NULL,
            current_key TEXT NOT NULL,
            previous_key TEXT,
            previous_spent_at BIGINT,
            sealed_successor BYTEA
        )",
        "CREATE INDEX IF NOT EXISTS auth_refresh_families_user
            ON auth_refresh_families (user_id)",
        "CREATE INDEX IF NOT EXISTS auth_refresh_families_live_until
            ON auth_refresh_families (live_until)",
        "CREATE TABLE IF NOT EXISTS auth_refresh_tokens (
            key TEXT PRIMARY KEY,
            family_id TEXT NOT NULL
        )",
        "CREATE INDEX IF NOT EXISTS auth_refresh_tokens_family
            ON auth_refresh_tokens (family_id)",
    ],
    delete_orphan_tokens: "DELETE FROM auth_refresh_tokens
        WHERE NOT EXISTS (SELECT 1 FROM auth_refresh_families f
            WHERE f.id = auth_refresh_tokens.family_id)",
    create_migrations: "CREATE TABLE IF NOT EXISTS auth_schema_migrations (
        component TEXT PRIMARY KEY, version BIGINT NOT NULL)",
    read_migration: "SELECT version FROM auth_schema_migrations WHERE component = 'refresh_tokens'",
    write_migration: "INSERT INTO auth_schema_migrations (component, version)
        VALUES ('refresh_tokens', $1)
        ON CONFLICT (component) DO UPDATE SET version = excluded.version",
    // The same lock as the other stores' migrations: instances starting
    // together migrate one at a time.
    lock_migrations: Some("SELECT pg_advisory_xact_lock(7329917254391)"),
    insert_family: "INSERT INTO auth_refresh_families (id, user_id, amr, stamp, created_at,
            expires_at, idle_timeout_ms, last_used_at, live_until, current_key)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    // Waits for a concurrent rotation's row lock, then re-checks the
    // condition on the committed row.
    rotate: "UPDATE auth_refresh_families
        SET current_key = $3, previous_key = $2, previous_spent_at = $4, sealed_successor = $5,
            last_used_at = $4, live_until = LEAST(expires_at, $4 + idle_timeout_ms)
        WHERE id = $1 AND current_key = $2 AND live_until > $4
        RETURNING user_id, amr, stamp, created_at, expires_at, idle_timeout_ms, last_used_at",
    read_family: "SELECT user_id, amr, stamp, created_at, expires_at, idle_timeout_ms,
            last_used_at, live_until, current_key, previous_key, previous_spent_at,
            sealed_successor
        FROM auth_refresh_families WHERE id = $1 FOR UPDATE",
    family: "SELECT user_id, amr, stamp, created_at, expires_at, idle_timeout_ms, last_used_at
        FROM auth_refresh_families WHERE id = $1",
    delete_family: "DELETE FROM auth_refresh_families WHERE id = $1 RETURNING user_id",
    delete_user_families: "DELETE FROM auth_refresh_families WHERE user_id = $1 RETURNING id",
    delete_dead_families: "DELETE FROM auth_refresh_families WHERE live_until <= $1 RETURNING id",
    is_live: "SELECT 1 FROM auth_refresh_families WHERE id = $1 AND live_until > $2",
    live_until: "SELECT live_until FROM auth_refresh_families WHERE id = $1",
};

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// The earlier of the absolute expiry and the idle deadline.
fn live_until(family: &Family) -> i64 {
    family
        .expires_at
        .min(family.last_used_at.saturating_add(family.idle_timeout))
        .as_unix_millis()
}

macro_rules! sql_refresh_store {
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
            /// app's own), creating or migrating the refresh tables.
            pub async fn from_pool(pool: sqlx::Pool<$db>) -> Result<Self, RefreshStoreError> {
                let newer = RefreshStoreError::Backend(
                    "refresh token schema is newer than this version of auth-core".into(),
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

            /// The family `id` from a row with its fields.
            fn family(id: &str, row: &$row) -> Result<Family, RefreshStoreError> {
                let amr: String = row.try_get("amr")?;
                let idle_ms: i64 = row.try_get("idle_timeout_ms")?;
                Ok(Family {
                    id: id.to_owned(),
                    user_id: row.try_get("user_id")?,
                    amr: serde_json::from_str(&amr).map_err(|_| RefreshStoreError::Corrupt)?,
                    stamp: row.try_get("stamp")?,
                    created_at: Timestamp::from_unix_millis(row.try_get("created_at")?),
                    expires_at: Timestamp::from_unix_millis(row.try_get("expires_at")?),
                    idle_timeout: std::time::Duration::from_millis(
                        u64::try_from(idle_ms).map_err(|_| RefreshStoreError::Corrupt)?,
                    ),
                    last_used_at: Timestamp::from_unix_millis(row.try_get("last_used_at")?),
                })
            }
        }

        #[async_trait]
        impl RefreshStore for $name {
            async fn create(
                &self,
                family: &Family,
                first: RefreshKey,
            ) -> Result<(), RefreshStoreError> {
                debug_assert_eq!(first.family_id(), family.id, "a key of another family");
                let amr = serde_json::to_string(&family.amr)
                    .map_err(|_| RefreshStoreError::Corrupt)?;
                let inserted = sqlx::query($queries.insert_family)
                    .bind(family.id.as_str())
                    .bind(family.user_id.as_str())
                    .bind(amr)
                    .bind(family.stamp.as_str())
                    .bind(family.created_at.as_unix_millis())
                    .bind(family.expires_at.as_unix_millis())
                    .bind(millis(family.idle_timeout).min(MAX_IDLE_MS))
                    .bind(family.last_used_at.as_unix_millis())
                    .bind(live_until(family))
                    .bind(first.to_hex())
                    .execute(&self.pool)
                    .bounded::<$db>(&self.inline)
                    .await;
                match inserted {
                    Ok(_) => Ok(()),
                    Err(error) if is_unique_violation(&error) => Err(RefreshStoreError::Collision),
                    Err(error) => Err(error.into()),
                }
            }

            async fn rotate(
                &self,
                presented: RefreshKey,
                next: RefreshKey,
                sealed_successor: &[u8],
                now: Timestamp,
                grace: Option<std::time::Duration>,
            ) -> Result<Rotation, RefreshStoreError> {
                let family_id = presented.family_id();
                debug_assert_eq!(next.family_id(), family_id, "a successor of another family");
                let presented = presented.to_hex();
                let now_ms = now.as_unix_millis();
                // Starts with the write: of concurrent rotations, one
                // updates the row; the others wait for it, then see the
                // token spent.
                let mut tx = self.pool.begin().bounded::<$db>(&self.inline).await?;
                let rotated = sqlx::query($queries.rotate)
                    .bind(family_id.as_str())
                    .bind(presented.as_str())
                    .bind(next.to_hex())
                    .bind(now_ms)
                    .bind(sealed_successor)
                    .fetch_optional(&mut *tx)
                    .bounded::<$db>(&self.inline)
                    .await?;
                if let Some(row) = rotated {
                    let family = Self::family(&family_id, &row)?;
                    tx.commit().bounded::<$db>(&self.inline).await?;
                    return Ok(Rotation::Rotated(family));
                }
                // Not current (or dead): the state as the transaction sees
                // it (PostgreSQL: locked until the commit).
                let row = sqlx::query($queries.read_family)
                    .bind(family_id.as_str())
                    .fetch_optional(&mut *tx)
                    .bounded::<$db>(&self.inline)
                    .await?;
                let Some(row) = row else {
                    // Unknown, or revoked (deleted).
                    return Ok(Rotation::Invalid);
                };
                let live_until: i64 = row.try_get("live_until")?;
                let current: String = row.try_get("current_key")?;
                // The second test cannot hold (the update would have
                // matched); it is here so nothing can rotate twice.
                if live_until <= now_ms || current == presented {
                    return Ok(Rotation::Invalid);
                }
                let previous: Option<String> = row.try_get("previous_key")?;
                let spent_at: Option<i64> = row.try_get("previous_spent_at")?;
                if let (Some(grace), Some(previous), Some(spent_at)) = (grace, previous, spent_at) {
                    let spent_at = Timestamp::from_unix_millis(spent_at);
                    if previous == presented && now.duration_since(spent_at) < grace {
                        let sealed: Option<Vec<u8>> = row.try_get("sealed_successor")?;
                        return Ok(Rotation::Grace {
                            family: Self::family(&family_id, &row)?,
                            sealed_successor: sealed.unwrap_or_default(),
                        });
                    }
                }
                // A spent token: revoke the family.
                let user_id: String = row.try_get("user_id")?;
                sqlx::query($queries.delete_family)
                    .bind(family_id.as_str())
                    .execute(&mut *tx)
                    .bounded::<$db>(&self.inline)
                    .await?;
                tx.commit().bounded::<$db>(&self.inline).await?;
                Ok(Rotation::Reused { family_id, user_id })
            }

            async fn revoke_by_token(
                &self,
                token: RefreshKey,
            ) -> Result<Option<(String, String)>, RefreshStoreError> {
                let id = token.family_id();
                let user_id: Option<String> = sqlx::query_scalar($queries.delete_family)
                    .bind(id.as_str())
                    .fetch_optional(&self.pool)
                    .bounded::<$db>(&self.inline)
                    .await?;
                Ok(user_id.map(|user_id| (id, user_id)))
            }

            async fn revoke_family(&self, family_id: &str) -> Result<bool, RefreshStoreError> {
                Ok(sqlx::query($queries.delete_family)
                    .bind(family_id)
                    .fetch_optional(&self.pool)
                    .bounded::<$db>(&self.inline)
                    .await?
                    .is_some())
            }

            async fn revoke_user(&self, user_id: &str) -> Result<u64, RefreshStoreError> {
                let ids: Vec<String> = sqlx::query_scalar($queries.delete_user_families)
                    .bind(user_id)
                    .fetch_all(&self.pool)
                    .bounded::<$db>(&self.inline)
                    .await?;
                Ok(ids.len() as u64)
            }

            async fn is_live(
                &self,
                family_id: &str,
                now: Timestamp,
            ) -> Result<bool, RefreshStoreError> {
                // The read of every bearer request: inline and kept until
                // the file changes when the store is a SQLite file
                // (`sqlite_inline`).
                #[cfg(feature = "sqlite")]
                if let Some(live_until) = self.inline.cached(
                    "refresh.live_until",
                    family_id.as_bytes(),
                    |c| {
                        use rusqlite::OptionalExtension;
                        c.prepare_cached($queries.live_until)?
                            .query_row([family_id], |row| row.get::<_, i64>(0))
                            .optional()
                    },
                    |_| true,
                ) {
                    return Ok(live_until.is_some_and(|until| until > now.as_unix_millis()));
                }
                Ok(sqlx::query($queries.is_live)
                    .bind(family_id)
                    .bind(now.as_unix_millis())
                    .fetch_optional(&self.pool)
                    .bounded::<$db>(&self.inline)
                    .await?
                    .is_some())
            }

            fn reads_families(&self) -> bool {
                true
            }

            async fn family(&self, family_id: &str) -> Result<Option<Family>, RefreshStoreError> {
                let row = sqlx::query($queries.family)
                    .bind(family_id)
                    .fetch_optional(&self.pool)
                    .bounded::<$db>(&self.inline)
                    .await?;
                row.map(|row| Self::family(family_id, &row)).transpose()
            }

            async fn purge(&self, now: Timestamp) -> Result<u64, RefreshStoreError> {
                let ids: Vec<String> = sqlx::query_scalar($queries.delete_dead_families)
                    .bind(now.as_unix_millis())
                    .fetch_all(&self.pool)
                    .bounded::<$db>(&self.inline)
                    .await?;
                sqlx::query($queries.delete_orphan_tokens)
                    .execute(&self.pool)
                    .bounded::<$db>(&self.inline)
                    .await?;
                Ok(ids.len() as u64)
            }
        }
    };
}

#[cfg(feature = "sqlite")]
sql_refresh_store!(
    /// Refresh-token families in SQLite (share a pool:
    /// `SqliteRefreshStore::from_pool(session_store.pool().clone())`).
    SqliteRefreshStore,
    sqlx::Sqlite,
    sqlx::sqlite::SqliteRow,
    SQLITE
);

#[cfg(feature = "postgres")]
sql_refresh_store!(
    /// Refresh-token families in PostgreSQL: what several app instances
    /// share.
    PostgresRefreshStore,
    sqlx::Postgres,
    sqlx::postgres::PgRow,
    POSTGRES
);
