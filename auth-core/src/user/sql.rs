//! The ready user table for SQLite and PostgreSQL (`auth_users`), created or
//! migrated on open (component `users` in `auth_schema_migrations`).

use async_trait::async_trait;
use sqlx::Row;

use super::{NewUser, User, UserStore, UserStoreError};
use crate::password::HashedPassword;
use crate::session::Factor;

struct Queries {
    schema_v1: &'static [&'static str],
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
}

const SCHEMA_VERSION: i64 = 1;

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
};

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// A new user id: 128 random bits, base64url.
fn new_id() -> Result<String, UserStoreError> {
    super::new_security_stamp()
}

macro_rules! sql_user_store {
    ($(#[$doc:meta])* $name:ident, $db:ty, $row:ty, $queries:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            pool: sqlx::Pool<$db>,
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
                sqlx::query(q.write_migration)
                    .bind(SCHEMA_VERSION)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(Self { pool })
            }

            fn user(row: &$row) -> Result<User, UserStoreError> {
                let factors: String = row.try_get("second_factors")?;
                Ok(User {
                    id: row.try_get("id")?,
                    login: row.try_get("login")?,
                    display_name: row.try_get("display_name")?,
                    password_hash: HashedPassword::new(row.try_get::<String, _>("password_hash")?),
                    security_stamp: row.try_get("security_stamp")?,
                    disabled: row.try_get("disabled")?,
                    second_factors: serde_json::from_str::<Vec<Factor>>(&factors)
                        .map_err(|e| UserStoreError::Backend(Box::new(e)))?,
                })
            }

            async fn find(&self, sql: &'static str, key: &str) -> Result<Option<User>, UserStoreError> {
                let row = sqlx::query(sql).bind(key).fetch_optional(&self.pool).await?;
                row.as_ref().map(Self::user).transpose()
            }

            async fn update(&self, query: sqlx::query::Query<'_, $db, <$db as sqlx::Database>::Arguments>) -> Result<u64, UserStoreError> {
                Ok(query.execute(&self.pool).await?.rows_affected())
            }
        }

        #[async_trait]
        impl UserStore for $name {
            async fn find_by_login(&self, login: &str) -> Result<Option<User>, UserStoreError> {
                self.find($queries.by_login, login).await
            }

            async fn find_by_id(&self, id: &str) -> Result<Option<User>, UserStoreError> {
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
