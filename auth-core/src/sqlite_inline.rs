//! Point reads of a SQLite file on the calling thread.
//!
//! sqlx runs every SQLite connection on a worker thread of its own and
//! hands each query over through a channel: a one-row read by primary key
//! costs tens of microseconds of thread hand-offs, against a few for the
//! read itself (`docs/performance.md`). The two reads on every
//! authenticated request (the session, and its user) therefore go through
//! here: a small pool of `rusqlite` connections to the same file, used
//! inline.
//!
//! Safe to do inline because the store runs in WAL mode, where readers
//! never wait for the writer: a read sees the last committed state and
//! returns. Each connection is `query_only` with a zero busy timeout, so
//! if SQLite cannot answer at once (recovery, a truncating checkpoint) or
//! anything else goes wrong, the caller gets `None` and asks sqlx as
//! before. In-memory databases, files not in WAL mode and files these
//! connections cannot read (e.g. encrypted) never use it.

#[cfg(feature = "sqlite")]
use std::path::{Path, PathBuf};
#[cfg(feature = "sqlite")]
use std::sync::Arc;
#[cfg(feature = "sqlite")]
use std::sync::Mutex;
#[cfg(feature = "sqlite")]
use std::sync::atomic::{AtomicBool, Ordering};
#[cfg(feature = "sqlite")]
use std::time::Duration;

#[cfg(feature = "sqlite")]
use rusqlite::{Connection, OpenFlags};

/// A SQL store's inline reads: some for a SQLite file in WAL mode, none
/// otherwise (PostgreSQL, in-memory SQLite).
#[derive(Debug, Clone, Default)]
pub(crate) struct Inline {
    #[cfg(feature = "sqlite")]
    pub(crate) reader: Option<Arc<InlineReader>>,
}

impl Inline {
    /// The inline reads `pool` allows.
    pub(crate) fn of<P: InlinePool>(pool: &P) -> Self {
        pool.inline()
    }

    /// Runs `read` inline; `None` when there is no inline reader or it
    /// declined: ask sqlx.
    #[cfg(feature = "sqlite")]
    pub(crate) fn read<T>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Option<T> {
        self.reader.as_ref()?.read(read)
    }
}

/// Pools whose stores may read inline.
pub(crate) trait InlinePool {
    /// The inline reads of this pool.
    fn inline(&self) -> Inline;
}

#[cfg(feature = "sqlite")]
impl InlinePool for sqlx::SqlitePool {
    fn inline(&self) -> Inline {
        Inline {
            reader: InlineReader::for_pool(self).map(Arc::new),
        }
    }
}

#[cfg(feature = "postgres")]
impl InlinePool for sqlx::PgPool {
    fn inline(&self) -> Inline {
        Inline::default()
    }
}

#[cfg(feature = "sqlite")]
/// Idle connections kept (one per thread that reads at once is enough).
const MAX_IDLE: usize = 8;

/// Read-only connections to one SQLite file, for reads on the calling
/// thread.
#[cfg(feature = "sqlite")]
#[derive(Debug)]
pub(crate) struct InlineReader {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// Set when a connection could not even be opened: stop trying.
    broken: AtomicBool,
}

#[cfg(feature = "sqlite")]
impl InlineReader {
    /// A reader for the file behind `pool`, if it is a file in WAL mode
    /// that a plain connection can read.
    pub(crate) fn for_pool(pool: &sqlx::SqlitePool) -> Option<Self> {
        let path = pool.connect_options().get_filename().to_owned();
        Self::for_path(&path)
    }

    fn for_path(path: &Path) -> Option<Self> {
        if !path.is_file() {
            return None;
        }
        let reader = Self {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
            broken: AtomicBool::new(false),
        };
        let connection = reader.open().ok()?;
        let usable = connection
            .query_row("PRAGMA journal_mode", [], |row| row.get::<_, String>(0))
            .is_ok_and(|mode| mode.eq_ignore_ascii_case("wal"))
            && connection
                .query_row("SELECT count(*) FROM sqlite_master", [], |row| {
                    row.get::<_, i64>(0)
                })
                .is_ok();
        if !usable {
            return None;
        }
        reader.put(connection);
        Some(reader)
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        // Not created if missing, never written: `query_only`.
        let connection = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        connection.pragma_update(None, "query_only", true)?;
        connection.busy_timeout(Duration::ZERO)?;
        Ok(connection)
    }

    fn put(&self, connection: Connection) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(connection);
        }
    }

    /// Runs `read` on an idle connection (opening one when none is idle).
    /// `None` when it could not answer at once: the caller asks sqlx.
    pub(crate) fn read<T>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Option<T> {
        if self.broken.load(Ordering::Relaxed) {
            return None;
        }
        let idle = self.idle.lock().ok()?.pop();
        let connection = match idle {
            Some(connection) => connection,
            None => match self.open() {
                Ok(connection) => connection,
                Err(error) => {
                    tracing::warn!(%error, "sqlite: inline reads off, reads go through sqlx");
                    self.broken.store(true, Ordering::Relaxed);
                    return None;
                }
            },
        };
        match read(&connection) {
            Ok(value) => {
                self.put(connection);
                Some(value)
            }
            Err(error) => {
                // Busy, or something odd: this read goes through sqlx, and
                // the connection is not reused.
                tracing::debug!(%error, "sqlite: inline read declined");
                None
            }
        }
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;
    use crate::session::{SessionStore, SqliteStore};
    use crate::user::{NewUser, SqliteUserStore, UserStore};

    /// The stores read a SQLite file inline, and see what sqlx wrote at
    /// once (a revocation, a disabled user); an in-memory database never
    /// reads inline (another connection would see another database).
    #[tokio::test]
    async fn file_stores_read_inline_and_see_every_write() {
        let dir = std::env::temp_dir().join(format!("auth-inline-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("stores.db").display());
        let sessions = SqliteStore::connect(&url).await.unwrap();
        assert!(sessions.inline.reader.is_some(), "a file in WAL mode");
        let users = SqliteUserStore::from_pool(sessions.pool().clone())
            .await
            .unwrap();
        assert!(users.inline.reader.is_some());

        let user = users
            .create(NewUser {
                login: "alice".into(),
                display_name: "Alice".into(),
                password_hash: crate::password::HashedPassword::new("$argon2id$x".to_owned()),
                security_stamp: "stamp".into(),
            })
            .await
            .unwrap();
        let read = users.find_by_id(&user.id).await.unwrap().unwrap();
        assert_eq!((read.login.as_str(), read.disabled), ("alice", false));
        users.set_disabled(&user.id, true).await.unwrap();
        assert!(users.find_by_id(&user.id).await.unwrap().unwrap().disabled);
        assert!(users.find_by_id("nobody").await.unwrap().is_none());

        let key = crate::session::SessionKey::from_bytes([7; 32]);
        let now = crate::clock::Clock::now(&crate::clock::SystemClock);
        let later = now.saturating_add(Duration::from_secs(600));
        let record = crate::session::SessionRecord {
            user_id: Some(user.id.clone()),
            auth: crate::session::AuthState::Anonymous,
            created_at: now,
            last_seen_at: now,
            idle_expires_at: later,
            absolute_expires_at: later,
            persistent: false,
            ip: None,
            user_agent: None,
            security_stamp: None,
            data: std::collections::BTreeMap::new(),
            version: 0,
        };
        sessions.create(&key, &record).await.unwrap();
        assert!(sessions.load(&key).await.unwrap().is_some());
        assert!(sessions.delete(&key).await.unwrap());
        assert!(
            sessions.load(&key).await.unwrap().is_none(),
            "revoked at once"
        );

        let memory = SqliteStore::connect("sqlite::memory:").await.unwrap();
        assert!(memory.inline.reader.is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_files_in_wal_mode_are_read_inline() {
        let dir = std::env::temp_dir().join(format!(
            "auth-inline-{}-{}",
            std::process::id(),
            crate::session::SessionId::generate()
                .map(|id| id.encode()[..8].to_owned())
                .unwrap_or_default()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.db");
        assert!(InlineReader::for_path(&missing).is_none());
        assert!(!missing.exists(), "never created");

        let rollback = dir.join("rollback.db");
        let c = Connection::open(&rollback).unwrap();
        c.execute_batch("CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (1);")
            .unwrap();
        assert!(InlineReader::for_path(&rollback).is_none(), "not WAL");

        let wal = dir.join("wal.db");
        let c = Connection::open(&wal).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (7);",
        )
        .unwrap();
        let reader = InlineReader::for_path(&wal).expect("a WAL file is read inline");
        let read = |r: &InlineReader| {
            r.read(|c| c.query_row("SELECT v FROM t", [], |row| row.get::<_, i64>(0)))
        };
        assert_eq!(read(&reader), Some(7));
        // A write committed elsewhere is seen by the next read.
        c.execute("UPDATE t SET v = 8", []).unwrap();
        assert_eq!(read(&reader), Some(8));
        // Never writes.
        assert_eq!(reader.read(|c| c.execute("UPDATE t SET v = 9", [])), None);
        assert_eq!(read(&reader), Some(8));
        // Any failure (busy, a schema it does not know) declines, and the
        // next read works.
        assert_eq!(
            reader.read(|c| c.query_row("SELECT v FROM missing", [], |row| row.get::<_, i64>(0))),
            None
        );
        assert_eq!(read(&reader), Some(8));
        drop(c);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
