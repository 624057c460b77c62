//! The migration frame every SQL store runs on open (sessions, users,
//! accounts): one transaction, PostgreSQL's advisory lock or SQLite's
//! write lock from the start (so instances starting together migrate one
//! at a time), the shared
//! `auth_schema_migrations` table, the component's current version, a
//! refusal of a schema newer than this code knows, then the store's own
//! steps, the new version and the commit.

/// `migrate!(pool, queries, LATEST, error_if_newer, |tx, current| { steps })`:
/// `queries` has `lock_migrations`, `create_migrations`, `read_migration`
/// and `write_migration`; `steps` runs with the open transaction `tx` and
/// the version found, `current` (0 for a new database).
macro_rules! migrate {
    ($pool:expr, $queries:expr, $latest:expr, $newer:expr, |$tx:ident, $current:ident| $steps:block) => {{
        let queries = &$queries;
        let mut $tx = match queries.lock_migrations {
            Some(_) => $pool.begin().await?,
            // SQLite (no advisory lock): the write lock from the start. A
            // deferred transaction that reads and then writes fails at once
            // (`SQLITE_BUSY`) when another connection wrote meanwhile; this
            // one waits for it under the busy timeout.
            None => $pool.begin_with("BEGIN IMMEDIATE").await?,
        };
        if let Some(lock) = queries.lock_migrations {
            sqlx::query(lock).execute(&mut *$tx).await?;
        }
        sqlx::query(queries.create_migrations).execute(&mut *$tx).await?;
        let $current: i64 = sqlx::query_scalar(queries.read_migration)
            .fetch_optional(&mut *$tx)
            .await?
            .unwrap_or(0);
        if $current > $latest {
            return Err($newer);
        }
        $steps
        sqlx::query(queries.write_migration)
            .bind($latest)
            .execute(&mut *$tx)
            .await?;
        $tx.commit().await?;
    }};
}

pub(crate) use migrate;
