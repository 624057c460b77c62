//! The ready user table for SQLite and PostgreSQL (`auth_users`), created or
//! migrated on open (component `users` in `auth_schema_migrations`).
//!
//! Schema versions: 1 is the user table; 2 adds the TOTP columns
//! (`totp_secret`: the encrypted secret, `totp_confirmed`,
//! `totp_last_step`) and the `auth_recovery_codes` table (user id and code
//! hash; consuming a code is one `DELETE`).

use async_trait::async_trait;
use sqlx::Row;

use super::{NewUser, StoredTotp, User, UserStore, UserStoreError};
use crate::password::HashedPassword;
use crate::session::Factor;
use crate::sqlite_inline::Inline;

struct Queries {
    schema_v1: &'static [&'static str],
    schema_v2: &'static [&'static str],
    create_migrations: &'static str,
    read_migration: &'static str,
    write_migration: &'static str,
    lock_migrations: Option<&'static str>,
    by_login: &'static str,
    by_id: &'static str,
    insert: &'static str,
    replace_hash: &'static str,
    change_password: &'static str,
    set_stamp: &'static str,
    set_disabled: &'static str,
    factors_get: &'static str,
    totp_get: &'static str,
    totp_set_pending: &'static str,
    totp_confirm: &'static str,
    totp_record_step: &'static str,
    totp_remove: &'static str,
    codes_delete_all: &'static str,
    codes_insert: &'static str,
    codes_consume: &'static str,
    codes_count: &'static str,
}

const SCHEMA_VERSION: i64 = 2;
/// Attempts of a compare-and-swap on the second-factor list.
const MAX_CAS_ATTEMPTS: usize = 8;

#[cfg(feature = "sqlite")]
const SQLITE: Queries = Queries {
    schema_v1: &["CREATE TABLE IF NOT EXISTS auth_users (
        id TEXT PRIMARY KEY NOT NULL,
        login TEXT NOT NULL UNIQUE,
        display_name TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        security_stamp TEXT NOT NULL,
        disabled BOOLEAN NOT NULL DEFAULT FALSE,
        second_factors TEXT NOT NULL DEFAULT '[]'
    )"],
    schema_v2: &[
        "ALTER TABLE auth_users ADD COLUMN totp_secret TEXT",
        "ALTER TABLE auth_users ADD COLUMN totp_confirmed BOOLEAN NOT NULL DEFAULT FALSE",
        "ALTER TABLE auth_users ADD COLUMN totp_last_step INTEGER",
        "CREATE TABLE IF NOT EXISTS auth_recovery_codes (
            user_id TEXT NOT NULL,
            code_hash TEXT NOT NULL,
            PRIMARY KEY (user_id, code_hash)
        )",
    ],
    create_migrations: "CREATE TABLE IF NOT EXISTS auth_schema_migrations (
        component TEXT PRIMARY KEY NOT NULL, version INTEGER NOT NULL)",
    read_migration: "SELECT version FROM auth_schema_migrations WHERE component = 'users'",
    write_migration: "INSERT INTO auth_schema_migrations (component, version) VALUES ('users', ?1)
        ON CONFLICT (component) DO UPDATE SET version = excluded.version",
    lock_migrations: None,
    by_login:
        "SELECT id, login, display_name, password_hash, security_stamp, disabled, second_factors
        FROM auth_users WHERE login = ?1",
    by_id: "SELECT id, login, display_name, password_hash, security_stamp, disabled, second_factors
        FROM auth_users WHERE id = ?1",
    insert: "INSERT INTO auth_users (id, login, display_name, password_hash, security_stamp)
        VALUES (?1, ?2, ?3, ?4, ?5)",
    replace_hash: "UPDATE auth_users SET password_hash = ?3 WHERE id = ?1 AND password_hash = ?2",
    change_password: "UPDATE auth_users SET password_hash = ?3, security_stamp = ?4
        WHERE id = ?1 AND password_hash = ?2",
    set_stamp: "UPDATE auth_users SET security_stamp = ?2 WHERE id = ?1",
    set_disabled: "UPDATE auth_users SET disabled = ?2 WHERE id = ?1",
    factors_get: "SELECT second_factors FROM auth_users WHERE id = ?1",
    totp_get: "SELECT totp_secret, totp_confirmed, totp_last_step FROM auth_users WHERE id = ?1",
    totp_set_pending: "UPDATE auth_users
        SET totp_secret = ?2, totp_confirmed = FALSE, totp_last_step = NULL
        WHERE id = ?1 AND NOT totp_confirmed",
    totp_confirm: "UPDATE auth_users
        SET totp_confirmed = TRUE, totp_last_step = ?3, second_factors = ?5
        WHERE id = ?1 AND totp_secret = ?2 AND NOT totp_confirmed AND second_factors = ?4",
    totp_record_step: "UPDATE auth_users SET totp_last_step = ?2
        WHERE id = ?1 AND totp_confirmed AND (totp_last_step IS NULL OR totp_last_step < ?2)",
    totp_remove: "UPDATE auth_users
        SET totp_secret = NULL, totp_confirmed = FALSE, totp_last_step = NULL, second_factors = ?3
        WHERE id = ?1 AND second_factors = ?2",
    codes_delete_all: "DELETE FROM auth_recovery_codes WHERE user_id = ?1",
    codes_insert: "INSERT INTO auth_recovery_codes (user_id, code_hash) VALUES (?1, ?2)",
    codes_consume: "DELETE FROM auth_recovery_codes WHERE user_id = ?1 AND code_hash = ?2",
    codes_count: "SELECT COUNT(*) FROM auth_recovery_codes WHERE user_id = ?1",
};

#[cfg(feature = "postgres")]
const POSTGRES: Queries = Queries {
    schema_v1: &["CREATE TABLE IF NOT EXISTS auth_users (
        id TEXT PRIMARY KEY,
        login TEXT NOT NULL UNIQUE,
        display_name TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        security_stamp TEXT NOT NULL,
        disabled BOOLEAN NOT NULL DEFAULT FALSE,
        second_factors TEXT NOT NULL DEFAULT '[]'
    )"],
    schema_v2: &[
        "ALTER TABLE auth_users ADD COLUMN IF NOT EXISTS totp_secret TEXT",
        "ALTER TABLE auth_users ADD COLUMN IF NOT EXISTS totp_confirmed BOOLEAN NOT NULL DEFAULT FALSE",
        "ALTER TABLE auth_users ADD COLUMN IF NOT EXISTS totp_last_step BIGINT",
        "CREATE TABLE IF NOT EXISTS auth_recovery_codes (
            user_id TEXT NOT NULL,
            code_hash TEXT NOT NULL,
            PRIMARY KEY (user_id, code_hash)
        )",
    ],
    create_migrations: "CREATE TABLE IF NOT EXISTS auth_schema_migrations (
        component TEXT PRIMARY KEY, version BIGINT NOT NULL)",
    read_migration: "SELECT version FROM auth_schema_migrations WHERE component = 'users'",
    write_migration: "INSERT INTO auth_schema_migrations (component, version) VALUES ('users', $1)
        ON CONFLICT (component) DO UPDATE SET version = excluded.version",
    lock_migrations: Some("SELECT pg_advisory_xact_lock(7329917254391)"),
    by_login:
        "SELECT id, login, display_name, password_hash, security_stamp, disabled, second_factors
        FROM auth_users WHERE login = $1",
    by_id: "SELECT id, login, display_name, password_hash, security_stamp, disabled, second_factors
        FROM auth_users WHERE id = $1",
    insert: "INSERT INTO auth_users (id, login, display_name, password_hash, security_stamp)
        VALUES ($1, $2, $3, $4, $5)",
    replace_hash: "UPDATE auth_users SET password_hash = $3 WHERE id = $1 AND password_hash = $2",
    change_password: "UPDATE auth_users SET password_hash = $3, security_stamp = $4
        WHERE id = $1 AND password_hash = $2",
    set_stamp: "UPDATE auth_users SET security_stamp = $2 WHERE id = $1",
    set_disabled: "UPDATE auth_users SET disabled = $2 WHERE id = $1",
    factors_get: "SELECT second_factors FROM auth_users WHERE id = $1",
    totp_get: "SELECT totp_secret, totp_confirmed, totp_last_step FROM auth_users WHERE id = $1",
    totp_set_pending: "UPDATE auth_users
        SET totp_secret = $2, totp_confirmed = FALSE, totp_last_step = NULL
        WHERE id = $1 AND NOT totp_confirmed",
    totp_confirm: "UPDATE auth_users
        SET totp_confirmed = TRUE, totp_last_step = $3, second_factors = $5
        WHERE id = $1 AND totp_secret = $2 AND NOT totp_confirmed AND second_factors = $4",
    totp_record_step: "UPDATE auth_users SET totp_last_step = $2
        WHERE id = $1 AND totp_confirmed AND (totp_last_step IS NULL OR totp_last_step < $2)",
    totp_remove: "UPDATE auth_users
        SET totp_secret = NULL, totp_confirmed = FALSE, totp_last_step = NULL, second_factors = $3
        WHERE id = $1 AND second_factors = $2",
    codes_delete_all: "DELETE FROM auth_recovery_codes WHERE user_id = $1",
    codes_insert: "INSERT INTO auth_recovery_codes (user_id, code_hash) VALUES ($1, $2)",
    codes_consume: "DELETE FROM auth_recovery_codes WHERE user_id = $1 AND code_hash = $2",
    codes_count: "SELECT COUNT(*) FROM auth_recovery_codes WHERE user_id = $1",
};

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// A new user id: 128 random bits, base64url.
fn new_id() -> Result<String, UserStoreError> {
    super::new_security_stamp()
}

/// The columns of a user row, as read (`by_login`, `by_id`).
struct Columns {
    id: String,
    login: String,
    display_name: String,
    password_hash: String,
    security_stamp: String,
    disabled: bool,
    second_factors: String,
}

impl Columns {
    fn user(self) -> Result<User, UserStoreError> {
        Ok(User {
            id: self.id,
            login: self.login,
            display_name: self.display_name,
            password_hash: HashedPassword::new(self.password_hash),
            security_stamp: self.security_stamp,
            disabled: self.disabled,
            second_factors: serde_json::from_str::<Vec<Factor>>(&self.second_factors)
                .map_err(|e| UserStoreError::Backend(Box::new(e)))?,
        })
    }

    /// From a row of `by_id` / `by_login` (columns in that order).
    #[cfg(feature = "sqlite")]
    fn from_sqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            login: row.get(1)?,
            display_name: row.get(2)?,
            password_hash: row.get(3)?,
            security_stamp: row.get(4)?,
            disabled: row.get(5)?,
            second_factors: row.get(6)?,
        })
    }
}

macro_rules! sql_user_store {
    ($(#[$doc:meta])* $name:ident, $db:ty, $row:ty, $queries:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            pool: sqlx::Pool<$db>,
            // Read only with the `sqlite` feature.
            #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
            pub(crate) inline: Inline,
        }

        impl $name {
            /// Uses an existing pool (e.g. the session store's), creating or
            /// migrating the `auth_users` table.
            pub async fn from_pool(pool: sqlx::Pool<$db>) -> Result<Self, UserStoreError> {
                let q = &$queries;
                let mut tx = pool.begin().await?;
                if let Some(lock) = q.lock_migrations {
                    sqlx::query(lock).execute(&mut *tx).await?;
                }
                sqlx::query(q.create_migrations).execute(&mut *tx).await?;
                let current: Option<i64> = sqlx::query_scalar(q.read_migration)
                    .fetch_optional(&mut *tx)
                    .await?;
                if current.unwrap_or(0) > SCHEMA_VERSION {
                    return Err(UserStoreError::Backend(
                        "user schema is newer than this version of auth-core".into(),
                    ));
                }
                if current.unwrap_or(0) < 1 {
                    for statement in q.schema_v1 {
                        sqlx::query(*statement).execute(&mut *tx).await?;
                    }
                }
                if current.unwrap_or(0) < 2 {
                    for statement in q.schema_v2 {
                        sqlx::query(*statement).execute(&mut *tx).await?;
                    }
                }
                sqlx::query(q.write_migration)
                    .bind(SCHEMA_VERSION)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(Self {
                    inline: Inline::of(&pool).await,
                    pool,
                })
            }

            fn user(row: &$row) -> Result<User, UserStoreError> {
                Columns {
                    id: row.try_get("id")?,
                    login: row.try_get("login")?,
                    display_name: row.try_get("display_name")?,
                    password_hash: row.try_get("password_hash")?,
                    security_stamp: row.try_get("security_stamp")?,
                    disabled: row.try_get("disabled")?,
                    second_factors: row.try_get("second_factors")?,
                }
                .user()
            }

            async fn find(&self, sql: &'static str, key: &str) -> Result<Option<User>, UserStoreError> {
                let row = sqlx::query(sql).bind(key).fetch_optional(&self.pool).await?;
                row.as_ref().map(Self::user).transpose()
            }

            async fn update(&self, query: sqlx::query::Query<'_, $db, <$db as sqlx::Database>::Arguments>) -> Result<u64, UserStoreError> {
                Ok(query.execute(&self.pool).await?.rows_affected())
            }

            /// The raw second-factor column (for a compare-and-swap) and
            /// its parsed form with `change` applied, as JSON.
            async fn factors_changed(
                &self,
                id: &str,
                change: impl Fn(&mut Vec<Factor>),
            ) -> Result<Option<(String, String)>, UserStoreError> {
                let raw: Option<String> = sqlx::query_scalar($queries.factors_get)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                let Some(raw) = raw else {
                    return Ok(None);
                };
                let mut factors = serde_json::from_str::<Vec<Factor>>(&raw)
                    .map_err(|e| UserStoreError::Backend(Box::new(e)))?;
                change(&mut factors);
                let new = serde_json::to_string(&factors)
                    .map_err(|e| UserStoreError::Backend(Box::new(e)))?;
                Ok(Some((raw, new)))
            }

            async fn insert_codes(
                tx: &mut sqlx::Transaction<'_, $db>,
                id: &str,
                hashes: &[String],
            ) -> Result<(), UserStoreError> {
                sqlx::query($queries.codes_delete_all).bind(id).execute(&mut **tx).await?;
                for hash in hashes {
                    sqlx::query($queries.codes_insert)
                        .bind(id)
                        .bind(hash)
                        .execute(&mut **tx)
                        .await?;
                }
                Ok(())
            }
        }

        #[async_trait]
        impl UserStore for $name {
            async fn find_by_login(&self, login: &str) -> Result<Option<User>, UserStoreError> {
                self.find($queries.by_login, login).await
            }

            async fn find_by_id(&self, id: &str) -> Result<Option<User>, UserStoreError> {
                // The read of every authenticated request: inline when the
                // store is a SQLite file (`sqlite_inline`).
                #[cfg(feature = "sqlite")]
                if let Some(columns) = self.inline.read(|c| {
                    use rusqlite::OptionalExtension;
                    c.prepare_cached($queries.by_id)?
                        .query_row([id], Columns::from_sqlite)
                        .optional()
                }) {
                    return columns.map(Columns::user).transpose();
                }
                self.find($queries.by_id, id).await
            }

            async fn create(&self, new: NewUser) -> Result<User, UserStoreError> {
                let id = new_id()?;
                let result = sqlx::query($queries.insert)
                    .bind(&id)
                    .bind(&new.login)
                    .bind(&new.display_name)
                    .bind(new.password_hash.as_str())
                    .bind(&new.security_stamp)
                    .execute(&self.pool)
                    .await;
                match result {
                    Ok(_) => Ok(User {
                        id,
                        login: new.login,
                        display_name: new.display_name,
                        password_hash: new.password_hash,
                        security_stamp: new.security_stamp,
                        disabled: false,
                        second_factors: Vec::new(),
                    }),
                    Err(error) if is_unique_violation(&error) => Err(UserStoreError::LoginTaken),
                    Err(error) => Err(error.into()),
                }
            }

            async fn replace_password_hash(
                &self,
                id: &str,
                current: &HashedPassword,
                new: &HashedPassword,
            ) -> Result<bool, UserStoreError> {
                let query = sqlx::query($queries.replace_hash)
                    .bind(id)
                    .bind(current.as_str())
                    .bind(new.as_str());
                Ok(self.update(query).await? == 1)
            }

            async fn change_password(
                &self,
                id: &str,
                current: &HashedPassword,
                new: &HashedPassword,
                new_stamp: &str,
            ) -> Result<bool, UserStoreError> {
                let query = sqlx::query($queries.change_password)
                    .bind(id)
                    .bind(current.as_str())
                    .bind(new.as_str())
                    .bind(new_stamp);
                Ok(self.update(query).await? == 1)
            }

            async fn set_security_stamp(&self, id: &str, stamp: &str) -> Result<(), UserStoreError> {
                let query = sqlx::query($queries.set_stamp).bind(id).bind(stamp);
                match self.update(query).await? {
                    0 => Err(UserStoreError::NotFound),
                    _ => Ok(()),
                }
            }

            async fn set_disabled(&self, id: &str, disabled: bool) -> Result<(), UserStoreError> {
                let query = sqlx::query($queries.set_disabled).bind(id).bind(disabled);
                match self.update(query).await? {
                    0 => Err(UserStoreError::NotFound),
                    _ => Ok(()),
                }
            }

            async fn totp(&self, id: &str) -> Result<Option<StoredTotp>, UserStoreError> {
                let row = sqlx::query($queries.totp_get)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let sealed: Option<String> = row.try_get("totp_secret")?;
                let Some(sealed_secret) = sealed else {
                    return Ok(None);
                };
                Ok(Some(StoredTotp {
                    sealed_secret,
                    confirmed: row.try_get("totp_confirmed")?,
                    last_step: row.try_get("totp_last_step")?,
                }))
            }

            async fn set_pending_totp(&self, id: &str, sealed_secret: &str) -> Result<bool, UserStoreError> {
                let query = sqlx::query($queries.totp_set_pending).bind(id).bind(sealed_secret);
                Ok(self.update(query).await? == 1)
            }

            async fn confirm_totp(
                &self,
                id: &str,
                sealed_secret: &str,
                step: i64,
                recovery_hashes: &[String],
            ) -> Result<bool, UserStoreError> {
                for _ in 0..MAX_CAS_ATTEMPTS {
                    let change = |factors: &mut Vec<Factor>| {
                        if !factors.contains(&Factor::Totp) {
                            factors.push(Factor::Totp);
                        }
                    };
                    let Some((old, new)) = self.factors_changed(id, change).await? else {
                        return Ok(false);
                    };
                    let mut tx = self.pool.begin().await?;
                    let confirmed = sqlx::query($queries.totp_confirm)
                        .bind(id)
                        .bind(sealed_secret)
                        .bind(step)
                        .bind(&old)
                        .bind(&new)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if confirmed == 1 {
                        Self::insert_codes(&mut tx, id, recovery_hashes).await?;
                        tx.commit().await?;
                        return Ok(true);
                    }
                    tx.rollback().await?;
                    // Lost to a concurrent change of the factor list: retry;
                    // the pending secret itself changed: give up.
                    match self.totp(id).await? {
                        Some(t) if !t.confirmed && t.sealed_secret == sealed_secret => {}
                        _ => return Ok(false),
                    }
                }
                Ok(false)
            }

            async fn record_totp_step(&self, id: &str, step: i64) -> Result<bool, UserStoreError> {
                let query = sqlx::query($queries.totp_record_step).bind(id).bind(step);
                Ok(self.update(query).await? == 1)
            }

            async fn replace_recovery_codes(
                &self,
                id: &str,
                hashes: &[String],
            ) -> Result<(), UserStoreError> {
                let mut tx = self.pool.begin().await?;
                Self::insert_codes(&mut tx, id, hashes).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn consume_recovery_code(&self, id: &str, hash: &str) -> Result<bool, UserStoreError> {
                let query = sqlx::query($queries.codes_consume).bind(id).bind(hash);
                Ok(self.update(query).await? == 1)
            }

            async fn recovery_codes_left(&self, id: &str) -> Result<u64, UserStoreError> {
                let count: i64 = sqlx::query_scalar($queries.codes_count)
                    .bind(id)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(u64::try_from(count).unwrap_or(0))
            }

            async fn remove_totp(&self, id: &str) -> Result<(), UserStoreError> {
                for _ in 0..MAX_CAS_ATTEMPTS {
                    let change = |factors: &mut Vec<Factor>| factors.retain(|f| *f != Factor::Totp);
                    let Some((old, new)) = self.factors_changed(id, change).await? else {
                        return Err(UserStoreError::NotFound);
                    };
                    let mut tx = self.pool.begin().await?;
                    let removed = sqlx::query($queries.totp_remove)
                        .bind(id)
                        .bind(&old)
                        .bind(&new)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if removed == 1 {
                        sqlx::query($queries.codes_delete_all).bind(id).execute(&mut *tx).await?;
                        tx.commit().await?;
                        return Ok(());
                    }
                    tx.rollback().await?;
                }
                Err(UserStoreError::Backend(
                    "second factors changed concurrently too often".into(),
                ))
            }
        }
    };
}

#[cfg(feature = "sqlite")]
sql_user_store!(
    /// The user table in SQLite (share the session store's pool:
    /// `SqliteUserStore::from_pool(session_store.pool().clone())`).
    SqliteUserStore,
    sqlx::Sqlite,
    sqlx::sqlite::SqliteRow,
    SQLITE
);

#[cfg(feature = "postgres")]
sql_user_store!(
    /// The user table in PostgreSQL.
    PostgresUserStore,
    sqlx::Postgres,
    sqlx::postgres::PgRow,
    POSTGRES
);
