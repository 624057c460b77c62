//! The ready user table for SQLite and PostgreSQL (`auth_users`), created or
//! migrated on open (component `users` in `auth_schema_migrations`).
//!
//! Schema versions: 1 is the user table; 2 added TOTP columns and the
//! `auth_recovery_codes` table; 3 moves the TOTP enrolments into the
//! account store's `auth_totp` table (so the ready user table holds only
//! what any app's user table holds) and drops the columns the toolkit no
//! longer keeps there (`security_stamp`, `second_factors`, `totp_*`).

use std::sync::Arc;

use sqlx::Row;

use super::{LoginName, NewUser, User, UserStore, UserStoreError, new_random_id};
use crate::account::sql::TOTP_TABLE;
use crate::password::HashedPassword;
use crate::sql_deadline::Deadline;
use crate::sql_migration::migrate;
use crate::sqlite_inline::Inline;

struct Queries {
    schema: [&'static [&'static str]; 3],
    totp_table: &'static str,
    create_migrations: &'static str,
    read_migration: &'static str,
    write_migration: &'static str,
    lock_migrations: Option<&'static str>,
    by_login: &'static str,
    by_id: &'static str,
    insert: &'static str,
    set_hash: &'static str,
    set_disabled: &'static str,
}

const SCHEMA_VERSION: i64 = 3;

#[cfg(feature = "sqlite")]
const SQLITE: Queries = Queries {
    schema: [
        &["CREATE TABLE IF NOT EXISTS auth_users (
            id TEXT PRIMARY KEY NOT NULL,
            login TEXT NOT NULL UNIQUE,
            display_name TEXT NOT NULL,
            password_hash TEXT NOT NULL,
            security_stamp TEXT NOT NULL,
            disabled BOOLEAN NOT NULL DEFAULT FALSE,
            second_factors TEXT NOT NULL DEFAULT '[]'
        )"],
        &[
            "ALTER TABLE auth_users ADD COLUMN totp_secret TEXT",
            "ALTER TABLE auth_users ADD COLUMN totp_confirmed BOOLEAN NOT NULL DEFAULT FALSE",
            "ALTER TABLE auth_users ADD COLUMN totp_last_step INTEGER",
            "CREATE TABLE IF NOT EXISTS auth_recovery_codes (
                user_id TEXT NOT NULL,
                code_hash TEXT NOT NULL,
                PRIMARY KEY (user_id, code_hash)
            )",
        ],
        &[
            "INSERT INTO auth_totp (user_id, sealed_secret, confirmed, last_step)
                SELECT id, totp_secret, totp_confirmed, totp_last_step FROM auth_users
                WHERE totp_secret IS NOT NULL
                ON CONFLICT (user_id) DO NOTHING",
            "ALTER TABLE auth_users DROP COLUMN totp_secret",
            "ALTER TABLE auth_users DROP COLUMN totp_confirmed",
            "ALTER TABLE auth_users DROP COLUMN totp_last_step",
            "ALTER TABLE auth_users DROP COLUMN second_factors",
            "ALTER TABLE auth_users DROP COLUMN security_stamp",
        ],
    ],
    totp_table: TOTP_TABLE.0,
    create_migrations: "CREATE TABLE IF NOT EXISTS auth_schema_migrations (
        component TEXT PRIMARY KEY NOT NULL, version INTEGER NOT NULL)",
    read_migration: "SELECT version FROM auth_schema_migrations WHERE component = 'users'",
    write_migration: "INSERT INTO auth_schema_migrations (component, version) VALUES ('users', ?1)
        ON CONFLICT (component) DO UPDATE SET version = excluded.version",
    lock_migrations: None,
    by_login: "SELECT id, login, display_name, password_hash, disabled
        FROM auth_users WHERE login = ?1",
    by_id: "SELECT id, login, display_name, password_hash, disabled
        FROM auth_users WHERE id = ?1",
    insert: "INSERT INTO auth_users (id, login, display_name, password_hash)
        VALUES (?1, ?2, ?3, ?4)",
    set_hash: "UPDATE auth_users SET password_hash = ?3 WHERE id = ?1 AND password_hash = ?2",
    set_disabled: "UPDATE auth_users SET disabled = ?2 WHERE id = ?1",
};

#[cfg(feature = "postgres")]
const POSTGRES: Queries = Queries {
    schema: [
        &["CREATE TABLE IF NOT EXISTS auth_users (
            id TEXT PRIMARY KEY,
            login TEXT NOT NULL UNIQUE,
            display_name TEXT NOT NULL,
            password_hash TEXT NOT NULL,
            security_stamp TEXT NOT NULL,
            disabled BOOLEAN NOT NULL DEFAULT FALSE,
            second_factors TEXT NOT NULL DEFAULT '[]'
        )"],
        &[
            "ALTER TABLE auth_users ADD COLUMN IF NOT EXISTS totp_secret TEXT",
            "ALTER TABLE auth_users ADD COLUMN IF NOT EXISTS totp_confirmed BOOLEAN NOT NULL DEFAULT FALSE",
            "ALTER TABLE auth_users ADD COLUMN IF NOT EXISTS totp_last_step BIGINT",
            "CREATE TABLE IF NOT EXISTS auth_recovery_codes (
                user_id TEXT NOT NULL,
                code_hash TEXT NOT NULL,
                PRIMARY KEY (user_id, code_hash)
            )",
        ],
        &[
            "INSERT INTO auth_totp (user_id, sealed_secret, confirmed, last_step)
                SELECT id, totp_secret, totp_confirmed, totp_last_step FROM auth_users
                WHERE totp_secret IS NOT NULL
                ON CONFLICT (user_id) DO NOTHING",
            "ALTER TABLE auth_users DROP COLUMN IF EXISTS totp_secret",
            "ALTER TABLE auth_users DROP COLUMN IF EXISTS totp_confirmed",
            "ALTER TABLE auth_users DROP COLUMN IF EXISTS totp_last_step",
            "ALTER TABLE auth_users DROP COLUMN IF EXISTS second_factors",
            "ALTER TABLE auth_users DROP COLUMN IF EXISTS security_stamp",
        ],
    ],
    totp_table: TOTP_TABLE.1,
    create_migrations: "CREATE TABLE IF NOT EXISTS auth_schema_migrations (
        component TEXT PRIMARY KEY, version BIGINT NOT NULL)",
    read_migration: "SELECT version FROM auth_schema_migrations WHERE component = 'users'",
    write_migration: "INSERT INTO auth_schema_migrations (component, version) VALUES ('users', $1)
        ON CONFLICT (component) DO UPDATE SET version = excluded.version",
    lock_migrations: Some("SELECT pg_advisory_xact_lock(7329917254391)"),
    by_login: "SELECT id, login, display_name, password_hash, disabled
        FROM auth_users WHERE login = $1",
    by_id: "SELECT id, login, display_name, password_hash, disabled
        FROM auth_users WHERE id = $1",
    insert: "INSERT INTO auth_users (id, login, display_name, password_hash)
        VALUES ($1, $2, $3, $4)",
    set_hash: "UPDATE auth_users SET password_hash = $3 WHERE id = $1 AND password_hash = $2",
    set_disabled: "UPDATE auth_users SET disabled = $2 WHERE id = $1",
};

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// The columns of a user row, as read (`by_login`, `by_id`).
struct Columns {
    id: String,
    login: String,
    display_name: String,
    password_hash: String,
    disabled: bool,
}

impl Columns {
    fn user(self) -> User {
        User {
            id: self.id,
            login: self.login,
            display_name: self.display_name,
            password_hash: HashedPassword::new(self.password_hash),
            disabled: self.disabled,
        }
    }

    /// From a row of `by_id` / `by_login` (columns in that order).
    #[cfg(feature = "sqlite")]
    fn from_sqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            login: row.get(1)?,
            display_name: row.get(2)?,
            password_hash: row.get(3)?,
            disabled: row.get(4)?,
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
                let newer = UserStoreError::Backend(
                    "user schema is newer than this version of auth-core".into(),
                );
                migrate!(pool, $queries, SCHEMA_VERSION, newer, |tx, current| {
                    for (version, statements) in (1..).zip($queries.schema) {
                        if current >= version {
                            continue;
                        }
                        if version == 3 {
                            // The account store's table, for the TOTP rows.
                            sqlx::query($queries.totp_table).execute(&mut *tx).await?;
                        }
                        for statement in statements {
                            sqlx::query(*statement).execute(&mut *tx).await?;
                        }
                    }
                });
                Ok(Self {
                    inline: Inline::of(&pool).await,
                    pool,
                })
            }

            fn user(row: &$row) -> Result<User, UserStoreError> {
                Ok(Columns {
                    id: row.try_get("id")?,
                    login: row.try_get("login")?,
                    display_name: row.try_get("display_name")?,
                    password_hash: row.try_get("password_hash")?,
                    disabled: row.try_get("disabled")?,
                }
                .user())
            }

            /// The user by id, read inline when the store is a SQLite file
            /// (`sqlite_inline`) and kept until the file changes (its
            /// cache); `None`: ask sqlx.
            #[cfg(feature = "sqlite")]
            fn find_by_id_inline(&self, id: &str) -> Option<Arc<Option<Arc<User>>>> {
                self.inline.cached(
                    "users.by_id",
                    id.as_bytes(),
                    |c| {
                        use rusqlite::OptionalExtension;
                        c.prepare_cached($queries.by_id)?
                            .query_row([id], Columns::from_sqlite)
                            .optional()
                            .map(|columns| columns.map(|c| Arc::new(c.user())))
                    },
                    |_| true,
                )
            }

            async fn find(&self, sql: &'static str, key: &str) -> Result<Option<User>, UserStoreError> {
                let row = sqlx::query(sql).bind(key).fetch_optional(&self.pool).bounded::<$db>(&self.inline).await?;
                row.as_ref().map(Self::user).transpose()
            }

            /// Disables or re-enables a user: a disabled user cannot log
            /// in, and its sessions end at their next request (its refresh
            /// tokens at their next use). To end them all at once, and for
            /// good should the user be enabled again, call
            /// [`Authenticator::sign_out_user`](crate::Authenticator::sign_out_user)
            /// after disabling.
            pub async fn set_disabled(&self, id: &str, disabled: bool) -> Result<(), UserStoreError> {
                let done = sqlx::query($queries.set_disabled)
                    .bind(id)
                    .bind(disabled)
                    .execute(&self.pool)
                    .bounded::<$db>(&self.inline)
                    .await?;
                match done.rows_affected() {
                    0 => Err(UserStoreError::NotFound),
                    _ => Ok(()),
                }
            }
        }

        impl UserStore for $name {
            type User = User;

            async fn find_by_login(&self, login: &LoginName) -> Result<Option<User>, UserStoreError> {
                self.find($queries.by_login, login.normalized()).await
            }

            async fn find_by_id(&self, id: &String) -> Result<Option<User>, UserStoreError> {
                #[cfg(feature = "sqlite")]
                if let Some(user) = self.find_by_id_inline(id) {
                    return Ok(user.as_deref().cloned());
                }
                self.find($queries.by_id, id).await
            }

            /// The read of every authenticated request: the cached user
            /// itself, shared, where the file is unchanged.
            async fn find_by_id_shared(
                &self,
                id: &String,
            ) -> Result<Option<Arc<User>>, UserStoreError> {
                #[cfg(feature = "sqlite")]
                if let Some(user) = self.find_by_id_inline(id) {
                    return Ok(Option::clone(&user));
                }
                Ok(self.find($queries.by_id, id).await?.map(Arc::new))
            }

            async fn set_password_hash(
                &self,
                id: &String,
                current: &str,
                new: &str,
            ) -> Result<bool, UserStoreError> {
                let done = sqlx::query($queries.set_hash)
                    .bind(id)
                    .bind(current)
                    .bind(new)
                    .execute(&self.pool)
                    .bounded::<$db>(&self.inline)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn create(&self, new: NewUser) -> Result<User, UserStoreError> {
                let user = User {
                    id: new_random_id()?,
                    login: new.login.normalized().to_owned(),
                    display_name: new.login.as_typed().to_owned(),
                    password_hash: new.password_hash,
                    disabled: false,
                };
                let result = sqlx::query($queries.insert)
                    .bind(&user.id)
                    .bind(&user.login)
                    .bind(&user.display_name)
                    .bind(user.password_hash.as_str())
                    .execute(&self.pool)
                    .bounded::<$db>(&self.inline)
                    .await;
                match result {
                    Ok(_) => Ok(user),
                    Err(error) if is_unique_violation(&error) => Err(UserStoreError::LoginTaken),
                    Err(error) => Err(error.into()),
                }
            }
        }
    };
}

#[cfg(feature = "sqlite")]
sql_user_store!(
    /// The ready user table in SQLite (share the session store's pool:
    /// `SqliteUserStore::from_pool(session_store.pool().clone())`).
    SqliteUserStore,
    sqlx::Sqlite,
    sqlx::sqlite::SqliteRow,
    SQLITE
);

#[cfg(feature = "postgres")]
sql_user_store!(
    /// The ready user table in PostgreSQL.
    PostgresUserStore,
    sqlx::Postgres,
    sqlx::postgres::PgRow,
    POSTGRES
);
