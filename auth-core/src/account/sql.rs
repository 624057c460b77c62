//! The account store's tables in SQLite and PostgreSQL, created or migrated
//! on open (component `accounts` in `auth_schema_migrations`):
//! `auth_totp` (one enrolment per user), `auth_recovery_codes` (one row per
//! code hash: consuming a code is one `DELETE`), `auth_account_epochs` and
//! (schema 2) `auth_emails` (one address per user, unique among verified
//! ones by a partial index).

use async_trait::async_trait;
use sqlx::Row;

use super::{AccountStore, StoredEmail, StoredTotp};
use crate::sql_deadline::Deadline;
use crate::sql_migration::migrate;
use crate::sqlite_inline::Inline;
use crate::user::UserStoreError;

/// `auth_totp` for (SQLite, PostgreSQL); the user store's schema 3 moves
/// its old TOTP columns here.
pub(crate) const TOTP_TABLE: (&str, &str) = (
    "CREATE TABLE IF NOT EXISTS auth_totp (
        user_id TEXT PRIMARY KEY NOT NULL,
        sealed_secret TEXT NOT NULL,
        confirmed BOOLEAN NOT NULL DEFAULT FALSE,
        last_step INTEGER
    )",
    "CREATE TABLE IF NOT EXISTS auth_totp (
        user_id TEXT PRIMARY KEY,
        sealed_secret TEXT NOT NULL,
        confirmed BOOLEAN NOT NULL DEFAULT FALSE,
        last_step BIGINT
    )",
);

struct Queries {
    schema_v1: [&'static str; 3],
    create_migrations: &'static str,
    read_migration: &'static str,
    write_migration: &'static str,
    lock_migrations: Option<&'static str>,
    totp_get: &'static str,
    totp_set_pending: &'static str,
    totp_confirm: &'static str,
    totp_record_step: &'static str,
    totp_reseal: &'static str,
    totp_remove: &'static str,
    /// Taken first by every replacement of a user's codes (PostgreSQL:
    /// under read committed, a replacement's delete does not see the rows
    /// a concurrent one inserts, and both sets would stay). SQLite needs
    /// none: its writers take turns, and the delete is the transaction's
    /// first statement, so it never upgrades a read.
    codes_lock: Option<&'static str>,
    codes_delete_all: &'static str,
    codes_insert: &'static str,
    codes_consume: &'static str,
    codes_count: &'static str,
    epoch_get: &'static str,
    epoch_raise: &'static str,
    schema_v2: [&'static str; 2],
    schema_v3: &'static str,
    email_set_pending: &'static str,
    email_promote: &'static str,
    email_get: &'static str,
    email_set: &'static str,
    email_verify: &'static str,
    email_find: &'static str,
}

const SCHEMA_VERSION: i64 = 3;

#[cfg(feature = "sqlite")]
const SQLITE: Queries = Queries {
    schema_v1: [
        TOTP_TABLE.0,
        "CREATE TABLE IF NOT EXISTS auth_recovery_codes (
            user_id TEXT NOT NULL,
            code_hash TEXT NOT NULL,
            PRIMARY KEY (user_id, code_hash)
        )",
        "CREATE TABLE IF NOT EXISTS auth_account_epochs (
            user_id TEXT PRIMARY KEY NOT NULL,
            epoch INTEGER NOT NULL
        )",
    ],
    create_migrations: "CREATE TABLE IF NOT EXISTS auth_schema_migrations (
        component TEXT PRIMARY KEY NOT NULL, version INTEGER NOT NULL)",
    read_migration: "SELECT version FROM auth_schema_migrations WHERE component = 'accounts'",
    write_migration: "INSERT INTO auth_schema_migrations (component, version)
        VALUES ('accounts', ?1)
        ON CONFLICT (component) DO UPDATE SET version = excluded.version",
    lock_migrations: None,
    totp_get: "SELECT sealed_secret, confirmed, last_step FROM auth_totp WHERE user_id = ?1",
    totp_set_pending: "INSERT INTO auth_totp (user_id, sealed_secret, confirmed, last_step)
        VALUES (?1, ?2, FALSE, NULL)
        ON CONFLICT (user_id) DO UPDATE SET sealed_secret = excluded.sealed_secret, last_step = NULL
        WHERE NOT auth_totp.confirmed",
    totp_confirm: "UPDATE auth_totp SET confirmed = TRUE, last_step = ?3
        WHERE user_id = ?1 AND sealed_secret = ?2 AND NOT confirmed",
    totp_reseal: "UPDATE auth_totp SET sealed_secret = ?3
        WHERE user_id = ?1 AND sealed_secret = ?2 AND confirmed",
    totp_record_step: "UPDATE auth_totp SET last_step = ?2
        WHERE user_id = ?1 AND confirmed AND (last_step IS NULL OR last_step < ?2)",
    totp_remove: "DELETE FROM auth_totp WHERE user_id = ?1",
    codes_lock: None,
    codes_delete_all: "DELETE FROM auth_recovery_codes WHERE user_id = ?1",
    codes_insert: "INSERT INTO auth_recovery_codes (user_id, code_hash) VALUES (?1, ?2)",
    codes_consume: "DELETE FROM auth_recovery_codes WHERE user_id = ?1 AND code_hash = ?2",
    codes_count: "SELECT COUNT(*) FROM auth_recovery_codes WHERE user_id = ?1",
    epoch_get: "SELECT epoch FROM auth_account_epochs WHERE user_id = ?1",
    epoch_raise: "INSERT INTO auth_account_epochs (user_id, epoch) VALUES (?1, 1)
        ON CONFLICT (user_id) DO UPDATE SET epoch = auth_account_epochs.epoch + 1
        RETURNING epoch",
    schema_v2: [
        "CREATE TABLE IF NOT EXISTS auth_emails (
            user_id TEXT PRIMARY KEY NOT NULL,
            address TEXT NOT NULL,
            verified BOOLEAN NOT NULL DEFAULT FALSE
        )",
        "CREATE UNIQUE INDEX IF NOT EXISTS auth_emails_verified_address
            ON auth_emails (address) WHERE verified",
    ],
    email_get: "SELECT address, verified, pending_address FROM auth_emails WHERE user_id = ?1",
    email_set: "INSERT INTO auth_emails (user_id, address, verified) VALUES (?1, ?2, FALSE)
        ON CONFLICT (user_id) DO UPDATE
        SET address = excluded.address, verified = FALSE, pending_address = NULL",
    schema_v3: "ALTER TABLE auth_emails ADD COLUMN pending_address TEXT",
    // One statement: a verified address stays and the new one waits; an
    // unverified one (or none) is simply replaced. Two statements would let
    // a verification landing between them be overwritten.
    email_set_pending:
        "INSERT INTO auth_emails (user_id, address, verified) VALUES (?1, ?2, FALSE)
        ON CONFLICT (user_id) DO UPDATE SET
        pending_address = CASE WHEN auth_emails.verified THEN excluded.address ELSE NULL END,
        address = CASE WHEN auth_emails.verified THEN auth_emails.address ELSE excluded.address END",
    email_promote:
        "UPDATE auth_emails SET address = pending_address, verified = TRUE, pending_address = NULL
        WHERE user_id = ?1 AND pending_address = ?2",
    email_verify: "UPDATE auth_emails SET verified = TRUE
        WHERE user_id = ?1 AND address = ?2 AND NOT verified",
    email_find: "SELECT user_id FROM auth_emails WHERE address = ?1 AND verified",
};
#[cfg(feature = "postgres")]
const POSTGRES: Queries = Queries {
    schema_v1: [
        TOTP_TABLE.1,
        "CREATE TABLE IF NOT EXISTS auth_recovery_codes (
            user_id TEXT NOT NULL,
            code_hash TEXT NOT NULL,
            PRIMARY KEY (user_id, code_hash)
        )",
        "CREATE TABLE IF NOT EXISTS auth_account_epochs (
            user_id TEXT PRIMARY KEY,
            epoch BIGINT NOT NULL
        )",
    ],
    create_migrations: "CREATE TABLE IF NOT EXISTS auth_schema_migrations (
        component TEXT PRIMARY KEY, version BIGINT NOT NULL)",
    read_migration: "SELECT version FROM auth_schema_migrations WHERE component = 'accounts'",
    write_migration: "INSERT INTO auth_schema_migrations (component, version)
        VALUES ('accounts', $1)
        ON CONFLICT (component) DO UPDATE SET version = excluded.version",
    // The same lock as the user store's migrations: both create `auth_totp`.
    lock_migrations: Some("SELECT pg_advisory_xact_lock(7329917254391)"),
    totp_get: "SELECT sealed_secret, confirmed, last_step FROM auth_totp WHERE user_id = $1",
    totp_set_pending: "INSERT INTO auth_totp (user_id, sealed_secret, confirmed, last_step)
        VALUES ($1, $2, FALSE, NULL)
        ON CONFLICT (user_id) DO UPDATE SET sealed_secret = excluded.sealed_secret, last_step = NULL
        WHERE NOT auth_totp.confirmed",
    totp_confirm: "UPDATE auth_totp SET confirmed = TRUE, last_step = $3
        WHERE user_id = $1 AND sealed_secret = $2 AND NOT confirmed",
    totp_reseal: "UPDATE auth_totp SET sealed_secret = $3
        WHERE user_id = $1 AND sealed_secret = $2 AND confirmed",
    totp_record_step: "UPDATE auth_totp SET last_step = $2
        WHERE user_id = $1 AND confirmed AND (last_step IS NULL OR last_step < $2)",
    totp_remove: "DELETE FROM auth_totp WHERE user_id = $1",
    // A transaction lock per user, in the two-key space (apart from the
    // one-key migration lock); 1382232132 is "Rc0D" in ASCII.
    codes_lock: Some("SELECT pg_advisory_xact_lock(1382232132, hashtext($1))"),
    codes_delete_all: "DELETE FROM auth_recovery_codes WHERE user_id = $1",
    codes_insert: "INSERT INTO auth_recovery_codes (user_id, code_hash) VALUES ($1, $2)",
    codes_consume: "DELETE FROM auth_recovery_codes WHERE user_id = $1 AND code_hash = $2",
    codes_count: "SELECT COUNT(*) FROM auth_recovery_codes WHERE user_id = $1",
    epoch_get: "SELECT epoch FROM auth_account_epochs WHERE user_id = $1",
    epoch_raise: "INSERT INTO auth_account_epochs (user_id, epoch) VALUES ($1, 1)
        ON CONFLICT (user_id) DO UPDATE SET epoch = auth_account_epochs.epoch + 1
        RETURNING epoch",
    schema_v2: [
        "CREATE TABLE IF NOT EXISTS auth_emails (
            user_id TEXT PRIMARY KEY,
            address TEXT NOT NULL,
            verified BOOLEAN NOT NULL DEFAULT FALSE
        )",
        "CREATE UNIQUE INDEX IF NOT EXISTS auth_emails_verified_address
            ON auth_emails (address) WHERE verified",
    ],
    email_get: "SELECT address, verified, pending_address FROM auth_emails WHERE user_id = $1",
    email_set: "INSERT INTO auth_emails (user_id, address, verified) VALUES ($1, $2, FALSE)
        ON CONFLICT (user_id) DO UPDATE
        SET address = excluded.address, verified = FALSE, pending_address = NULL",
    schema_v3: "ALTER TABLE auth_emails ADD COLUMN pending_address TEXT",
    // One statement: a verified address stays and the new one waits; an
    // unverified one (or none) is simply replaced. Two statements would let
    // a verification landing between them be overwritten.
    email_set_pending:
        "INSERT INTO auth_emails (user_id, address, verified) VALUES ($1, $2, FALSE)
        ON CONFLICT (user_id) DO UPDATE SET
        pending_address = CASE WHEN auth_emails.verified THEN excluded.address ELSE NULL END,
        address = CASE WHEN auth_emails.verified THEN auth_emails.address ELSE excluded.address END",
    email_promote:
        "UPDATE auth_emails SET address = pending_address, verified = TRUE, pending_address = NULL
        WHERE user_id = $1 AND pending_address = $2",
    email_verify: "UPDATE auth_emails SET verified = TRUE
        WHERE user_id = $1 AND address = $2 AND NOT verified",
    email_find: "SELECT user_id FROM auth_emails WHERE address = $1 AND verified",
};
macro_rules! sql_account_store {
    ($(#[$doc:meta])* $name:ident, $db:ty, $queries:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            pool: sqlx::Pool<$db>,
            // Read only with the `sqlite` feature.
            #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
            pub(crate) inline: Inline,
        }

        impl $name {
            /// Uses an existing pool (e.g. the session store's or the
            /// app's own), creating or migrating the account tables.
            pub async fn from_pool(pool: sqlx::Pool<$db>) -> Result<Self, UserStoreError> {
                let newer = UserStoreError::Backend(
                    "account schema is newer than this version of auth-core".into(),
                );
                migrate!(pool, $queries, SCHEMA_VERSION, newer, |tx, current| {
                    if current < 1 {
                        for statement in $queries.schema_v1 {
                            sqlx::query(statement).execute(&mut *tx).await?;
                        }
                    }
                    if current < 2 {
                        for statement in $queries.schema_v2 {
                            sqlx::query(statement).execute(&mut *tx).await?;
                        }
                    }
                    if current < 3 {
                        sqlx::query($queries.schema_v3).execute(&mut *tx).await?;
                    }
                });
                Ok(Self {
                    inline: Inline::of(&pool).await,
                    pool,
                })
            }

            async fn affected(&self, query: sqlx::query::Query<'_, $db, <$db as sqlx::Database>::Arguments>) -> Result<u64, UserStoreError> {
                Ok(query.execute(&self.pool).bounded::<$db>(&self.inline).await?.rows_affected())
            }

            async fn insert_codes(
                tx: &mut sqlx::Transaction<'_, $db>,
                user: &str,
                hashes: &[String],
            ) -> Result<(), UserStoreError> {
                if let Some(lock) = $queries.codes_lock {
                    sqlx::query(lock).bind(user).execute(&mut **tx).bounded::<$db>(&Inline::NONE).await?;
                }
                sqlx::query($queries.codes_delete_all).bind(user).execute(&mut **tx).bounded::<$db>(&Inline::NONE).await?;
                for hash in hashes {
                    sqlx::query($queries.codes_insert)
                        .bind(user)
                        .bind(hash)
                        .execute(&mut **tx)
                        .bounded::<$db>(&Inline::NONE)
                        .await?;
                }
                Ok(())
            }
        }

        #[async_trait]
        impl AccountStore for $name {
            async fn totp(&self, user: &str) -> Result<Option<StoredTotp>, UserStoreError> {
                // Read by pages that show the user's second factors (and by
                // every login): inline when the store is a SQLite file.
                // Kept until the file changes (`sqlite_inline`'s cache).
                #[cfg(feature = "sqlite")]
                if let Some(found) = self.inline.cached(
                    "accounts.totp",
                    user.as_bytes(),
                    |c| {
                        use rusqlite::OptionalExtension;
                        c.prepare_cached($queries.totp_get)?
                            .query_row([user], |row| {
                                Ok(StoredTotp {
                                    sealed_secret: row.get(0)?,
                                    confirmed: row.get(1)?,
                                    last_step: row.get(2)?,
                                })
                            })
                            .optional()
                    },
                    |_| true,
                ) {
                    return Ok(Option::clone(&found));
                }
                let row = sqlx::query($queries.totp_get)
                    .bind(user)
                    .fetch_optional(&self.pool)
                    .bounded::<$db>(&self.inline)
                    .await?;
                row.map(|row| {
                    Ok(StoredTotp {
                        sealed_secret: row.try_get("sealed_secret")?,
                        confirmed: row.try_get("confirmed")?,
                        last_step: row.try_get("last_step")?,
                    })
                })
                .transpose()
            }

            async fn set_pending_totp(&self, user: &str, sealed_secret: &str) -> Result<bool, UserStoreError> {
                let query = sqlx::query($queries.totp_set_pending).bind(user).bind(sealed_secret);
                Ok(self.affected(query).await? == 1)
            }

            async fn confirm_totp(
                &self,
                user: &str,
                sealed_secret: &str,
                step: i64,
                recovery_hashes: &[String],
            ) -> Result<bool, UserStoreError> {
                let mut tx = self.pool.begin().bounded::<$db>(&self.inline).await?;
                let confirmed = sqlx::query($queries.totp_confirm)
                    .bind(user)
                    .bind(sealed_secret)
                    .bind(step)
                    .execute(&mut *tx)
                    .bounded::<$db>(&self.inline)
                    .await?
                    .rows_affected();
                if confirmed != 1 {
                    tx.rollback().bounded::<$db>(&self.inline).await?;
                    return Ok(false);
                }
                Self::insert_codes(&mut tx, user, recovery_hashes).await?;
                tx.commit().bounded::<$db>(&self.inline).await?;
                Ok(true)
            }

            async fn record_totp_step(&self, user: &str, step: i64) -> Result<bool, UserStoreError> {
                let query = sqlx::query($queries.totp_record_step).bind(user).bind(step);
                Ok(self.affected(query).await? == 1)
            }

            async fn reseal_totp(
                &self,
                user: &str,
                old_sealed: &str,
                new_sealed: &str,
            ) -> Result<bool, UserStoreError> {
                let query = sqlx::query($queries.totp_reseal)
                    .bind(user)
                    .bind(old_sealed)
                    .bind(new_sealed);
                Ok(self.affected(query).await? == 1)
            }

            async fn remove_totp(&self, user: &str) -> Result<(), UserStoreError> {
                sqlx::query($queries.totp_remove)
                    .bind(user)
                    .execute(&self.pool)
                    .bounded::<$db>(&self.inline)
                    .await?;
                Ok(())
            }

            async fn replace_recovery_codes(
                &self,
                user: &str,
                hashes: &[String],
            ) -> Result<(), UserStoreError> {
                let mut tx = self.pool.begin().bounded::<$db>(&self.inline).await?;
                Self::insert_codes(&mut tx, user, hashes).await?;
                tx.commit().bounded::<$db>(&self.inline).await?;
                Ok(())
            }

            async fn consume_recovery_code(&self, user: &str, hash: &str) -> Result<bool, UserStoreError> {
                let query = sqlx::query($queries.codes_consume).bind(user).bind(hash);
                Ok(self.affected(query).await? == 1)
            }

            async fn recovery_codes_left(&self, user: &str) -> Result<u64, UserStoreError> {
                let count: i64 = sqlx::query_scalar($queries.codes_count)
                    .bind(user)
                    .fetch_one(&self.pool)
                    .bounded::<$db>(&self.inline)
                    .await?;
                Ok(u64::try_from(count).unwrap_or(0))
            }

            async fn epoch(&self, user: &str) -> Result<u64, UserStoreError> {
                let epoch: Option<i64> = sqlx::query_scalar($queries.epoch_get)
                    .bind(user)
                    .fetch_optional(&self.pool)
                    .bounded::<$db>(&self.inline)
                    .await?;
                Ok(epoch.and_then(|e| u64::try_from(e).ok()).unwrap_or(0))
            }

            async fn raise_epoch(&self, user: &str) -> Result<u64, UserStoreError> {
                let epoch: i64 = sqlx::query_scalar($queries.epoch_raise)
                    .bind(user)
                    .fetch_one(&self.pool)
                    .bounded::<$db>(&self.inline)
                    .await?;
                Ok(u64::try_from(epoch).unwrap_or(0))
            }

            async fn email(&self, user: &str) -> Result<Option<StoredEmail>, UserStoreError> {
                let row = sqlx::query($queries.email_get)
                    .bind(user)
                    .fetch_optional(&self.pool)
                    .bounded::<$db>(&self.inline)
                    .await?;
                row.map(|row| {
                    Ok(StoredEmail {
                        address: row.try_get("address")?,
                        verified: row.try_get("verified")?,
                        pending: row.try_get("pending_address")?,
                    })
                })
                .transpose()
            }

            async fn set_email(&self, user: &str, address: &str) -> Result<(), UserStoreError> {
                sqlx::query($queries.email_set)
                    .bind(user)
                    .bind(address)
                    .execute(&self.pool)
                    .bounded::<$db>(&self.inline)
                    .await?;
                Ok(())
            }

            async fn set_pending_email(&self, user: &str, address: &str) -> Result<(), UserStoreError> {
                sqlx::query($queries.email_set_pending)
                    .bind(user)
                    .bind(address)
                    .execute(&self.pool)
                    .bounded::<$db>(&self.inline)
                    .await?;
                Ok(())
            }

            async fn verify_email(&self, user: &str, address: &str) -> Result<bool, UserStoreError> {
                // The pending address replacing a verified one, else the
                // unverified address itself.
                for statement in [$queries.email_promote, $queries.email_verify] {
                    let query = sqlx::query(statement).bind(user).bind(address);
                    match query.execute(&self.pool).bounded::<$db>(&self.inline).await {
                        Ok(done) if done.rows_affected() == 1 => return Ok(true),
                        Ok(_) => {}
                        // Another user verified this address first.
                        Err(sqlx::Error::Database(error)) if error.is_unique_violation() => {
                            return Ok(false);
                        }
                        Err(other) => return Err(other.into()),
                    }
                }
                Ok(false)
            }

            async fn find_by_email(&self, address: &str) -> Result<Option<String>, UserStoreError> {
                Ok(sqlx::query_scalar($queries.email_find)
                    .bind(address)
                    .fetch_optional(&self.pool)
                    .bounded::<$db>(&self.inline)
                    .await?)
            }
        }
    };
}

#[cfg(feature = "sqlite")]
sql_account_store!(
    /// The account tables in SQLite (share a pool:
    /// `SqliteAccountStore::from_pool(session_store.pool().clone())`).
    SqliteAccountStore,
    sqlx::Sqlite,
    SQLITE
);

#[cfg(feature = "postgres")]
sql_account_store!(
    /// The account tables in PostgreSQL.
    PostgresAccountStore,
    sqlx::Postgres,
    POSTGRES
);
