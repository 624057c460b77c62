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
//! before. A read of a page that is in neither SQLite's nor the OS's cache
//! does block the async worker for one disk read (a point read by primary
//! key: a few pages). In-memory databases, pools with a `vfs` or
//! `immutable` option, files not in WAL mode and files these connections
//! cannot read (e.g. encrypted) never use it.
//!
//! ## The read cache
//!
//! The hottest reads ([`Inline::cached`]: the session record, its user, the
//! user's second factors, an API token's refresh family) are also kept,
//! decoded, in a cache of the reader, which is valid only while the file is
//! unchanged. Before every cached read the reader asks SQLite's
//! `PRAGMA data_version` on a connection of its own, which never writes:
//! its answer changes whenever any other connection, of this process
//! (sqlx's, so every write of ours) or of another process, has committed
//! a change to the file. A changed answer empties the cache. Most probes
//! need not ask: every commit rewrites the header of the file's WAL index
//! (`-shm`), and while that header is the one read just before the last
//! answer, that answer stands ([`Probe`]: one `pread` instead of a read
//! transaction). So a revocation committed anywhere is seen by the next request that starts
//! after the commit, and no record is served that the file no longer
//! holds; between writes a request decodes nothing. The version is read
//! before the row it guards, so a row read concurrently with a commit is
//! at worst newer than its tag (and dropped at the next probe), never
//! older.
//!
//! Every store on one file shares one reader (its connections, its probe
//! and its cache), and the reads of one step of a request (the session
//! and its user; a user's second factors) run in one step
//! ([`RequestProbe::step`]): the first
//! cached read of the step asks for the version, the others of the same
//! step reuse its answer. A step therefore sees the file as it was at its
//! first read, or newer. A step never reads a row it wrote itself.
//!
//! The later steps of one request (the handler's reads after the load)
//! reuse the request's latest probe ([`RequestProbe`]) while no SQLite
//! statement of this process's stores has finished since it was taken and
//! it is younger than 100 ms: a write of this process (the request's own
//! included) is seen by the next step that starts after it, and a commit
//! made elsewhere (another process, or the app's own connections to the
//! file) by the next request that starts after it (or the next step
//! 100 ms on).

#[cfg(feature = "sqlite")]
use std::any::Any;
#[cfg(feature = "sqlite")]
use std::collections::HashMap;
#[cfg(feature = "sqlite")]
use std::path::{Path, PathBuf};
#[cfg(feature = "sqlite")]
use std::sync::Arc;
#[cfg(feature = "sqlite")]
use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(feature = "sqlite")]
use std::sync::{Mutex, Weak};
#[cfg(feature = "sqlite")]
use std::time::{Duration, Instant};

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
    /// No inline reads (a store that caches nothing).
    pub(crate) const NONE: Self = Self {
        #[cfg(feature = "sqlite")]
        reader: None,
    };

    /// Counts a finished statement of a store on this file (see
    /// [`RequestProbe`]).
    pub(crate) fn statement_finished(&self) {
        #[cfg(feature = "sqlite")]
        if let Some(reader) = &self.reader {
            reader.statements.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The inline reads `pool` allows.
    pub(crate) async fn of<P: InlinePool>(pool: &P) -> Self {
        pool.inline().await
    }

    /// A read through the reader's cache (see the module docs): the value
    /// cached under (`kind`, `key`) while the file is unchanged, else
    /// `read`'s answer, which is cached if `keep` says so. `None` when
    /// there is no inline reader or it declined: ask sqlx. `kind` names the
    /// query, so two queries of one store never share an entry.
    #[cfg(feature = "sqlite")]
    pub(crate) fn cached<T: Send + Sync + 'static>(
        &self,
        kind: &'static str,
        key: &[u8],
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
        keep: impl FnOnce(&T) -> bool,
    ) -> Option<Arc<T>> {
        self.reader.as_ref()?.cached(kind, key, read, keep)
    }
}

/// Pools whose stores may read inline.
pub(crate) trait InlinePool {
    /// The inline reads of this pool.
    fn inline(&self) -> impl std::future::Future<Output = Inline> + Send;
}

#[cfg(feature = "sqlite")]
impl InlinePool for sqlx::SqlitePool {
    async fn inline(&self) -> Inline {
        Inline {
            reader: InlineReader::for_pool(self).await,
        }
    }
}

/// Where the current thread's poll is: outside any step, or
/// inside one, with the answer of its first probe (for one reader: a
/// second file's reads just probe again).
#[cfg(feature = "sqlite")]
#[derive(Debug, Clone, Copy)]
enum Step {
    Outside,
    Inside(Option<Probed>),
}

/// A probe's answer, kept for the rest of its step, and through a
/// [`RequestProbe`] for the request's later steps.
#[cfg(feature = "sqlite")]
#[derive(Debug, Clone, Copy)]
struct Probed {
    /// The reader asked (its address).
    reader: usize,
    version: u64,
    /// The reader's `statements` just before the probe.
    statements: u64,
    /// Just before the probe.
    at: Instant,
    /// Taken over from an earlier step of the request: checked (no
    /// statement since, young enough) at the step's first cached read.
    inherited: bool,
}

/// How long a request's later steps may reuse the probe of an earlier one
/// (see [`RequestProbe`]).
#[cfg(feature = "sqlite")]
const REUSE_FOR: Duration = Duration::from_millis(100);

/// The latest probe of one request's steps, for its later steps: they
/// reuse it while no SQLite statement of this process has finished since
/// it was taken (no write of ours can have been missed) and it is younger
/// than [`REUSE_FOR`]. Else they probe again.
///
/// So a request pays one probe for its load and its handler's reads, sees
/// every write of this process's stores (its own included) at its next
/// step, and a commit by another process, or by the app's own connections
/// to the file, at its next request, or at a step that starts 100 ms after
/// the commit. (A request loads its session and user once: a revocation is
/// seen by the next request, not in the middle of a long-lived one.)
///
/// A database file replaced or deleted under a running process (a backup
/// restored over it) is not seen: the reader keeps the file it opened, as
/// SQLite's own connections do; SQLite warns against it ("How To Corrupt
/// An SQLite Database File", 2.4). Restart the process after such a swap.
#[cfg(feature = "sqlite")]
#[derive(Debug, Default)]
pub(crate) struct RequestProbe(Mutex<Option<Probed>>);

#[cfg(feature = "sqlite")]
impl RequestProbe {
    /// Runs `reads` as one step (one probe per file for all of its cached
    /// reads), starting from this request's latest probe when it is still
    /// good, and keeping the step's own.
    pub(crate) fn step<F: std::future::Future>(&self, reads: F) -> OneProbe<'_, F> {
        let earlier = self.0.lock().ok().and_then(|latest| *latest);
        OneProbe {
            reads,
            step: Step::Inside(earlier),
            request: Some(self),
        }
    }

    fn keep(&self, probed: Probed) {
        if let Ok(mut latest) = self.0.lock() {
            *latest = Some(Probed {
                inherited: true,
                ..probed
            });
        }
    }
}

#[cfg(feature = "sqlite")]
thread_local! {
    static STEP: std::cell::Cell<Step> = const { std::cell::Cell::new(Step::Outside) };
}

/// Runs `reads` (one step: reads only, none of a row it writes) with at
/// most one `PRAGMA data_version` probe per file, on its own (a request's
/// steps run in [`RequestProbe::step`]): see the module docs.
#[cfg(all(feature = "sqlite", test))]
pub(crate) fn one_probe<F: std::future::Future>(reads: F) -> OneProbe<'static, F> {
    OneProbe {
        reads,
        step: Step::Inside(None),
        request: None,
    }
}

/// Runs `work` outside any step, also when called from inside one: its
/// cached reads each ask for the file's version afresh. For a write made
/// during a step that reads again (the session touch, which reloads the
/// record when another request changed it first).
#[cfg(feature = "sqlite")]
pub(crate) fn without_step<F: std::future::Future>(work: F) -> OneProbe<'static, F> {
    OneProbe {
        reads: work,
        step: Step::Outside,
        request: None,
    }
}

#[cfg(feature = "sqlite")]
pin_project_lite::pin_project! {
    /// The future of a step. The step's state is carried here and
    /// lent to the thread for each poll (the inline reads run inside a
    /// poll, on its thread), so it follows the task across threads.
    pub(crate) struct OneProbe<'a, F> {
        #[pin]
        reads: F,
        step: Step,
        // Given the step's probe when it is done.
        request: Option<&'a RequestProbe>,
    }
}

#[cfg(feature = "sqlite")]
impl<F: std::future::Future> std::future::Future for OneProbe<'_, F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        /// Gives the thread its outer step back, also if `reads` panics.
        struct Restore(Step);
        impl Drop for Restore {
            fn drop(&mut self) {
                STEP.set(self.0);
            }
        }
        let this = self.project();
        let _restore = Restore(STEP.replace(*this.step));
        let poll = this.reads.poll(cx);
        *this.step = STEP.get();
        if poll.is_ready()
            && let (Some(request), Step::Inside(Some(probed))) = (this.request, *this.step)
        {
            request.keep(probed);
        }
        poll
    }
}

/// The readers in use, by file (device and inode: a file deleted and made
/// again at the same path is another file, and gets its own reader).
#[cfg(all(feature = "sqlite", unix))]
type FileId = (u64, u64);

#[cfg(all(feature = "sqlite", unix))]
static READERS: Mutex<Vec<(FileId, Weak<InlineReader>)>> = Mutex::new(Vec::new());

#[cfg(all(feature = "sqlite", unix))]
fn file_id(path: &Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.dev(), metadata.ino()))
}

#[cfg(feature = "postgres")]
impl InlinePool for sqlx::PgPool {
    async fn inline(&self) -> Inline {
        Inline::default()
    }
}

/// After a connection could not be opened (e.g. out of file descriptors),
/// reads go through sqlx for this long before trying again.
#[cfg(feature = "sqlite")]
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Read-only connections to one SQLite file, for reads on the calling
/// thread.
#[cfg(feature = "sqlite")]
#[derive(Debug)]
pub(crate) struct InlineReader {
    /// Absolute: the file sqlx has open, whatever the working folder.
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// Idle connections kept: one per thread that may read at once.
    max_idle: usize,
    epoch: Instant,
    /// Milliseconds after `epoch` before which no connection is opened.
    retry_at: AtomicU64,
    /// Reads answered inline, and reads declined (then asked of sqlx).
    pub(crate) hits: AtomicU64,
    pub(crate) declined: AtomicU64,
    /// The connection that asks `PRAGMA data_version`, and what lets most
    /// probes go without asking it (see [`Probe`]).
    probe: Mutex<Probe>,
    /// Probes asked ([`data_version`](Self::data_version) calls).
    pub(crate) probes: AtomicU64,
    /// Probes answered by the probe connection (`PRAGMA data_version`),
    /// not from an unchanged WAL index header.
    pub(crate) pragmas: AtomicU64,
    /// Statements of the stores on this file that have finished (or were
    /// given up; sqlx's, through `sql_deadline`): every write of ours
    /// moves it on after its commit.
    statements: AtomicU64,
    cache: Mutex<Cache>,
    /// Cached reads answered from the cache.
    pub(crate) cache_hits: AtomicU64,
}

/// The probe's state.
///
/// `PRAGMA data_version` runs a read transaction: on Linux two `fcntl`
/// calls (the WAL index's read lock, taken and released) and SQLite's
/// read-transaction machinery, most of what a cached read costs. Every
/// commit to a file in WAL mode, by any connection of any process,
/// rewrites the header of the file's WAL index (the `-shm` file; format:
/// <https://www.sqlite.org/walformat.html>, section 2.1), and so does a
/// recovery or a restart of the WAL: SQLite's own readers compare that
/// header with their copy to learn whether the file changed (its
/// `iChange` counter moves on every commit). So a probe first reads the
/// header (one `pread`): if it is the very header read just before the
/// last `PRAGMA data_version`, nothing has committed since, and that
/// answer still holds. Anything else (the header changed, or is being
/// written: its two copies differ; a format this code does not know; no
/// `-shm` file) asks the pragma, as before.
///
/// Why the header cannot miss a commit: a connection that keeps its WAL
/// index in its heap instead of `-shm` (one that opened the file with
/// `locking_mode=EXCLUSIVE`) must first take the file's exclusive lock,
/// and the probe connection, like every connection to a file in WAL
/// mode, holds a shared lock on it for as long as it is open
/// (`pager_unlock` keeps it in WAL mode): such a connection cannot open
/// the file while the probe is open (test:
/// `the_wal_index_header_answers_until_a_commit`). The `-shm` file
/// is opened after the probe connection has read: while the probe holds
/// it mapped, SQLite neither deletes nor truncates it. Its descriptor is
/// never closed ([`wal_index`]): closing any descriptor of a file drops
/// every `fcntl` lock the process holds on it, SQLite's own included.
#[cfg(feature = "sqlite")]
#[derive(Debug, Default)]
struct Probe {
    /// Asks `PRAGMA data_version` (never used for anything else: its
    /// answer only compares with its own earlier ones). `None` until
    /// first used, and again after it failed.
    connection: Option<Connection>,
    /// How many probe connections were opened before this one.
    opened: u64,
    /// The file's WAL index (`-shm`), looked up once the probe connection
    /// has read (so it is the one SQLite maps; see [`wal_index`]); `None`
    /// with the connection.
    index: Option<&'static std::fs::File>,
    /// The WAL index header read just before the last pragma, and the
    /// version that pragma answered.
    last: Option<(WalHeader, u64)>,
}

/// Descriptors of the WAL index files this process opened for [`Probe`],
/// by file: never closed. POSIX `fcntl` locks belong to the process, and
/// closing any descriptor of a file releases every lock the process
/// holds on it, SQLite's own on `-shm` included (its "in use" lock, read
/// marks, the write lock: another process could then take the file for
/// unused and truncate it, or write beside our writer; "How To Corrupt An
/// SQLite Database File", 2.2). So a descriptor opened here lives as long
/// as the process (leaked on purpose), and is reused for the same file.
#[cfg(all(feature = "sqlite", unix))]
static WAL_INDEXES: Mutex<Vec<(FileId, &'static std::fs::File)>> = Mutex::new(Vec::new());

/// How many WAL index files [`WAL_INDEXES`] keeps open at most (one per
/// `-shm` file met while the process ran: a file made again after every
/// connection to it closed is another); past that, probes ask the
/// pragma.
#[cfg(all(feature = "sqlite", unix))]
const MAX_WAL_INDEXES: usize = 64;

/// The WAL index (`-shm` file) of the database at `database`, opened once
/// per process and never closed (see [`WAL_INDEXES`]). `None` when there
/// is none, or it could not be opened.
#[cfg(all(feature = "sqlite", unix))]
fn wal_index(database: &Path) -> Option<&'static std::fs::File> {
    use std::os::unix::fs::MetadataExt;
    let mut path = database.as_os_str().to_owned();
    path.push("-shm");
    let path = PathBuf::from(path);
    let id = file_id(&path)?;
    let mut open = WAL_INDEXES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, file)) = open.iter().find(|(known, _)| *known == id) {
        return Some(file);
    }
    if open.len() >= MAX_WAL_INDEXES {
        return None;
    }
    let file: &'static std::fs::File = Box::leak(Box::new(std::fs::File::open(&path).ok()?));
    let metadata = file.metadata().ok()?;
    let opened = (metadata.dev(), metadata.ino());
    open.push((opened, file));
    // Made again between the look and the open: kept, not used.
    (opened == id).then_some(file)
}

/// Without `pread`, every probe asks the pragma.
#[cfg(all(feature = "sqlite", not(unix)))]
fn wal_index(_database: &Path) -> Option<&'static std::fs::File> {
    None
}

/// A WAL index header, both of its copies (96 bytes from the start of the
/// `-shm` file).
#[cfg(feature = "sqlite")]
type WalHeader = [u8; 96];

/// The WAL index header in `index`, if it is whole and of the format this
/// code knows: `iVersion` 3007000 (native byte order), initialised
/// (`isInit`), and both copies the same (a writer writes the second copy,
/// then the first: copies that differ are being written).
#[cfg(all(feature = "sqlite", unix))]
fn wal_header(index: &std::fs::File) -> Option<WalHeader> {
    use std::os::unix::fs::FileExt;
    let mut header = [0; 96];
    index.read_exact_at(&mut header, 0).ok()?;
    let (first, second) = header.split_at(48);
    let version = u32::from_ne_bytes([first[0], first[1], first[2], first[3]]);
    (first == second && version == 3_007_000 && first[12] == 1).then_some(header)
}

/// Without `pread`, every probe asks the pragma.
#[cfg(all(feature = "sqlite", not(unix)))]
fn wal_header(_index: &std::fs::File) -> Option<WalHeader> {
    None
}

/// One query's decoded rows, by key.
// foldhash (seeded at random per map), not SipHash: the keys are the app's
// user ids, our family ids and digests of session keys (an unknown key is
// never cached), not text a client sends, and a cache holds at most
// `MAX_CACHED` entries.
#[cfg(feature = "sqlite")]
type Rows = HashMap<Box<[u8]>, Arc<dyn Any + Send + Sync>, foldhash::fast::RandomState>;

/// Decoded rows, valid while the probe's data version is `version`.
#[cfg(feature = "sqlite")]
#[derive(Default)]
struct Cache {
    version: u64,
    /// By query (`kind`), then key.
    entries: HashMap<&'static str, Rows, foldhash::fast::RandomState>,
    len: usize,
}

#[cfg(feature = "sqlite")]
impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the rows (they hold password hashes and session data).
        f.debug_struct("Cache")
            .field("version", &self.version)
            .field("len", &self.len)
            .finish()
    }
}

/// Entries a reader's cache holds at most; when full it starts again empty
/// (every write empties it anyway).
#[cfg(feature = "sqlite")]
const MAX_CACHED: usize = 16_384;

/// The longest key the cache keeps (a session key is 32 bytes, a user id a
/// few dozen).
#[cfg(feature = "sqlite")]
const MAX_CACHED_KEY: usize = 256;

#[cfg(feature = "sqlite")]
impl InlineReader {
    /// A reader for the file behind `pool`, if the pool is a plain file
    /// (no memory mode, `vfs` or `immutable` option) in WAL mode that a
    /// plain connection can read. The path is the one SQLite itself reports
    /// for the pool's main database, so it is absolute.
    pub(crate) async fn for_pool(pool: &sqlx::SqlitePool) -> Option<Arc<Self>> {
        // sqlx offers no getters for these options (and its URL form
        // panics for in-memory pools): read its `Debug` form, never printed
        // (it may hold a `key` pragma). Should the form change, the answer
        // is "not plain": reads go through sqlx, and a unit test notices.
        let options = format!("{:?}", pool.connect_options());
        let plain = options.contains("in_memory: false")
            && options.contains("immutable: false")
            && options.contains("vfs: None");
        if !plain {
            return None;
        }
        let file: Option<String> =
            sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
                .fetch_optional(pool)
                .await
                .ok()
                .flatten();
        Self::shared(Path::new(&file.filter(|f| !f.is_empty())?))
    }

    /// The reader of the file at `path`: the one already open for it, if
    /// any (so every store on the file shares one probe and one cache),
    /// else a new one.
    fn shared(path: &Path) -> Option<Arc<Self>> {
        #[cfg(unix)]
        {
            let id = file_id(path)?;
            let mut readers = READERS
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            readers.retain(|(_, reader)| reader.strong_count() > 0);
            if let Some(reader) = readers
                .iter()
                .filter(|(file, _)| *file == id)
                .find_map(|(_, reader)| reader.upgrade())
            {
                return Some(reader);
            }
            let reader = Arc::new(Self::for_path(path)?);
            // The file it opened is the one it is filed under.
            if file_id(path) == Some(id) {
                readers.push((id, Arc::downgrade(&reader)));
            }
            Some(reader)
        }
        #[cfg(not(unix))]
        {
            Self::for_path(path).map(Arc::new)
        }
    }

    fn for_path(path: &Path) -> Option<Self> {
        if !path.is_file() {
            return None;
        }
        let reader = Self {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
            max_idle: std::thread::available_parallelism().map_or(8, |n| n.get().max(8)),
            epoch: Instant::now(),
            retry_at: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            declined: AtomicU64::new(0),
            probe: Mutex::new(Probe::default()),
            probes: AtomicU64::new(0),
            pragmas: AtomicU64::new(0),
            statements: AtomicU64::new(0),
            cache: Mutex::new(Cache::default()),
            cache_hits: AtomicU64::new(0),
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
        // Not created if missing, never written: `query_only`. A private
        // page cache whatever the process-wide default: a cache shared
        // with sqlx's connections would make their commits this
        // connection's own, and `data_version` would not move for them.
        let connection = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_PRIVATE_CACHE,
        )?;
        connection.pragma_update(None, "query_only", true)?;
        connection.busy_timeout(Duration::ZERO)?;
        Ok(connection)
    }

    fn put(&self, connection: Connection) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.max_idle
        {
            idle.push(connection);
        }
    }

    fn millis(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn decline(&self) {
        self.declined.fetch_add(1, Ordering::Relaxed);
    }

    /// A generation of the file: changed whenever another connection
    /// committed since the last answer, and never smaller than an earlier
    /// answer (the probe's `PRAGMA data_version`, above the count of probe
    /// connections opened: a new probe starts its own count; the last
    /// answer again while the WAL index header is unchanged, see
    /// [`Probe`]). `None` when it cannot tell (the probe is then opened
    /// again next time).
    fn data_version(&self) -> Option<u64> {
        self.probes.fetch_add(1, Ordering::Relaxed);
        let mut guard = self.probe.lock().ok()?;
        let probe = &mut *guard;
        if let (Some(index), Some((seen, version))) = (&probe.index, &probe.last)
            && wal_header(index).as_ref() == Some(seen)
        {
            return Some(*version);
        }
        if probe.connection.is_none() {
            probe.connection = Some(self.open().ok()?);
            probe.opened += 1;
        }
        self.pragmas.fetch_add(1, Ordering::Relaxed);
        // Read before the pragma: the answer is at least as new as the
        // header it is filed under.
        let header = probe.index.and_then(wal_header);
        let answer = probe.connection.as_ref().and_then(|connection| {
            connection
                .prepare_cached("PRAGMA data_version")
                .and_then(|mut statement| statement.query_row([], |row| row.get::<_, i64>(0)))
                .ok()
        });
        match answer.and_then(|version| u64::try_from(version).ok()) {
            Some(version) if version < 1 << 40 => {
                let version = (probe.opened << 40) | version;
                if probe.index.is_none() {
                    probe.index = wal_index(&self.path);
                }
                probe.last = header.map(|header| (header, version));
                Some(version)
            }
            _ => {
                *probe = Probe {
                    opened: probe.opened,
                    ..Probe::default()
                };
                None
            }
        }
    }

    /// The file's generation for a cached read: the current step's answer
    /// if it has one for this reader (see [`RequestProbe::step`]), else a probe's
    /// (kept for the rest of the step).
    fn step_version(&self) -> Option<u64> {
        let me = std::ptr::from_ref(self) as usize;
        let step = STEP.get();
        if let Step::Inside(Some(probed)) = step
            && probed.reader == me
        {
            if !probed.inherited {
                return Some(probed.version);
            }
            // An earlier step's answer: good while no statement of ours on
            // this file has finished since, and young.
            if probed.statements == self.statements.load(Ordering::SeqCst)
                && probed.at.elapsed() < REUSE_FOR
            {
                STEP.set(Step::Inside(Some(Probed {
                    inherited: false,
                    ..probed
                })));
                return Some(probed.version);
            }
        }
        let Step::Inside(_) = step else {
            return self.data_version();
        };
        // Taken before the probe: a write that finishes after this is
        // counted after it, so a later step probes again.
        let statements = self.statements.load(Ordering::SeqCst);
        let at = Instant::now();
        let version = self.data_version()?;
        STEP.set(Step::Inside(Some(Probed {
            reader: me,
            version,
            statements,
            at,
            inherited: false,
        })));
        Some(version)
    }

    /// See [`Inline::cached`].
    pub(crate) fn cached<T: Send + Sync + 'static>(
        &self,
        kind: &'static str,
        key: &[u8],
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
        keep: impl FnOnce(&T) -> bool,
    ) -> Option<Arc<T>> {
        let Some(version) = self.step_version() else {
            return self.read(read).map(Arc::new);
        };
        // A key longer than any the stores make (an id an app passed from
        // a URL, say) is read, never kept: the cache's size stays bounded
        // by its entry count.
        if key.len() > MAX_CACHED_KEY {
            return self.read(read).map(Arc::new);
        }
        let mut cacheable = false;
        if let Ok(mut cache) = self.cache.lock() {
            if version > cache.version {
                cache.entries.clear();
                cache.len = 0;
                cache.version = version;
            }
            // An older answer than the cache's (a probe that raced a
            // newer one): read, but do not cache.
            cacheable = version == cache.version;
            if cacheable
                && let Some(hit) = cache.entries.get(kind).and_then(|rows| rows.get(key))
                && let Ok(hit) = Arc::clone(hit).downcast::<T>()
            {
                self.cache_hits.fetch_add(1, Ordering::Relaxed);
                return Some(hit);
            }
        }
        // Read after the version was taken: the row is at least as new as
        // the version it is filed under.
        let value = Arc::new(self.read(read)?);
        if cacheable
            && keep(&value)
            && let Ok(mut cache) = self.cache.lock()
            && cache.version == version
        {
            if cache.len >= MAX_CACHED {
                cache.entries.clear();
                cache.len = 0;
            }
            let previous = cache
                .entries
                .entry(kind)
                .or_default()
                .insert(key.into(), Arc::clone(&value) as Arc<dyn Any + Send + Sync>);
            if previous.is_none() {
                cache.len += 1;
            }
        }
        Some(value)
    }

    /// Runs `read` on an idle connection (opening one when none is idle).
    /// `None` when it could not answer at once: the caller asks sqlx.
    pub(crate) fn read<T>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Option<T> {
        let idle = match self.idle.lock() {
            Ok(mut idle) => idle.pop(),
            Err(_) => None,
        };
        let connection = match idle {
            Some(connection) => connection,
            None if self.millis() < self.retry_at.load(Ordering::Relaxed) => {
                self.decline();
                return None;
            }
            None => match self.open() {
                Ok(connection) => connection,
                Err(error) => {
                    tracing::warn!(%error, "sqlite: inline reads paused, reads go through sqlx");
                    let pause = u64::try_from(RETRY_AFTER.as_millis()).unwrap_or(u64::MAX);
                    self.retry_at
                        .store(self.millis().saturating_add(pause), Ordering::Relaxed);
                    self.decline();
                    return None;
                }
            },
        };
        match read(&connection) {
            Ok(value) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                self.put(connection);
                Some(value)
            }
            Err(error) => {
                // Busy, or something odd: this read goes through sqlx, and
                // the connection is not reused.
                tracing::debug!(%error, "sqlite: inline read declined");
                self.decline();
                None
            }
        }
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;
    use crate::session::{SessionKey, SessionStore, SqliteStore};
    use crate::user::{NewUser, SqliteUserStore, UserStore};

    /// The stores read a SQLite file inline, and see what sqlx wrote at
    /// once (a revocation, a disabled user); an in-memory database never
    /// reads inline (another connection would see another database).
    #[tokio::test]
    async fn file_stores_read_inline_and_see_every_write() {
        let dir = scratch("store");
        let (sessions, users, user) = stores_with_user(&dir.join("stores.db"), "Alice").await;
        assert!(sessions.inline.reader.is_some(), "a file in WAL mode");
        assert!(users.inline.reader.is_some());

        let read = users.find_by_id(&user.id).await.unwrap().unwrap();
        assert_eq!((read.login.as_str(), read.disabled), ("alice", false));
        users.set_disabled(&user.id, true).await.unwrap();
        assert!(users.find_by_id(&user.id).await.unwrap().unwrap().disabled);
        assert!(
            users
                .find_by_id(&"nobody".to_owned())
                .await
                .unwrap()
                .is_none()
        );

        let key = SessionKey::from_bytes([7; 32]);
        let (record, now) = live_record(&user.id);
        sessions.create(&key, &record).await.unwrap();
        assert!(sessions.load(&key).await.unwrap().is_some());
        assert!(sessions.delete(&key).await.unwrap());
        assert!(
            sessions.load(&key).await.unwrap().is_none(),
            "revoked at once"
        );

        // The account store: a TOTP enrolment written through sqlx is read
        // inline at once, pending and then confirmed.
        let accounts = crate::account::SqliteAccountStore::from_pool(sessions.pool().clone())
            .await
            .unwrap();
        use crate::account::AccountStore;
        assert!(accounts.totp(&user.id).await.unwrap().is_none());
        assert!(accounts.set_pending_totp(&user.id, "sealed").await.unwrap());
        let pending = accounts.totp(&user.id).await.unwrap().unwrap();
        assert!(!pending.confirmed && pending.sealed_secret == "sealed");
        assert!(
            accounts
                .confirm_totp(&user.id, "sealed", 7, &[])
                .await
                .unwrap()
        );
        let confirmed = accounts.totp(&user.id).await.unwrap().unwrap();
        assert_eq!((confirmed.confirmed, confirmed.last_step), (true, Some(7)));

        // Every read above was answered inline: none fell back to sqlx
        // (which would hide a broken inline path from every other test).
        for reader in [&sessions.inline, &users.inline, &accounts.inline] {
            let reader = reader.reader.as_ref().unwrap();
            assert!(reader.hits.load(Ordering::Relaxed) > 0);
            assert_eq!(reader.declined.load(Ordering::Relaxed), 0);
        }

        // Between writes, a read is answered from the cache, decoded once;
        // a write through sqlx (ours) ends that at once.
        let cache_hits = |store: &Inline| {
            store
                .reader
                .as_ref()
                .unwrap()
                .cache_hits
                .load(Ordering::Relaxed)
        };
        sessions.create(&key, &record).await.unwrap();
        let first = sessions.load(&key).await.unwrap().unwrap();
        let before = cache_hits(&sessions.inline);
        let second = sessions.load(&key).await.unwrap().unwrap();
        assert_eq!(cache_hits(&sessions.inline), before + 1, "a cache hit");
        assert!(Arc::ptr_eq(&first, &second), "the same decoded record");
        let before = cache_hits(&users.inline);
        assert!(users.find_by_id(&user.id).await.unwrap().unwrap().disabled);
        assert!(users.find_by_id(&user.id).await.unwrap().unwrap().disabled);
        assert_eq!(cache_hits(&users.inline), before + 1);
        users.set_disabled(&user.id, false).await.unwrap();
        assert!(!users.find_by_id(&user.id).await.unwrap().unwrap().disabled);
        sessions.delete(&key).await.unwrap();
        assert!(
            sessions.load(&key).await.unwrap().is_none(),
            "revoked at once"
        );
        // A key that was never there is not cached (anyone can send one).
        let unknown = SessionKey::from_bytes([8; 32]);
        let before = cache_hits(&sessions.inline);
        assert!(sessions.load(&unknown).await.unwrap().is_none());
        assert!(sessions.load(&unknown).await.unwrap().is_none());
        assert_eq!(cache_hits(&sessions.inline), before);
        // Nor is an id longer than any the stores make (an app passing one
        // from a URL): the cache stays bounded by its entry count.
        let long = "x".repeat(MAX_CACHED_KEY + 1);
        let before = cache_hits(&users.inline);
        assert!(users.find_by_id(&long).await.unwrap().is_none());
        assert!(users.find_by_id(&long).await.unwrap().is_none());
        assert_eq!(cache_hits(&users.inline), before);
        // A cached record that expires is not served: the store compares
        // the time at every read.
        let soon = crate::session::SessionRecord {
            idle_expires_at: now.saturating_add(Duration::from_millis(300)),
            absolute_expires_at: now.saturating_add(Duration::from_millis(300)),
            ..record.clone()
        };
        sessions.create(&key, &soon).await.unwrap();
        assert!(sessions.load(&key).await.unwrap().is_some());
        assert!(sessions.load(&key).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(sessions.load(&key).await.unwrap().is_none(), "expired");

        let memory = SqliteStore::connect("sqlite::memory:").await.unwrap();
        assert!(memory.inline.reader.is_none());
        // A relative path works from anywhere: the reader holds SQLite's
        // absolute name for the file.
        assert!(sessions.inline.reader.as_ref().unwrap().path.is_absolute());
        // A memory-mode URL naming a real WAL file never reads that file.
        let named = format!("sqlite://{}?mode=memory", dir.join("stores.db").display());
        let named = SqliteStore::connect(&named).await.unwrap();
        assert!(named.inline.reader.is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Every store on a file shares its reader; in one step their cached
    /// reads ask for the file's version once (outside a step, once per
    /// read), and a write between two steps is seen by the second. A file
    /// made again at the same path gets a reader of its own.
    #[tokio::test]
    async fn one_step_probes_once_for_all_its_reads() {
        let dir = scratch("step");
        let (sessions, users, user) = stores_with_user(&dir.join("step.db"), "bob").await;
        let reader = Arc::clone(sessions.inline.reader.as_ref().unwrap());
        assert!(Arc::ptr_eq(&reader, users.inline.reader.as_ref().unwrap()));
        let key = live_session(&sessions, &user.id, 9).await;
        let probes = || reader.probes.load(Ordering::Relaxed);
        let both = || async {
            assert!(sessions.load(&key).await.unwrap().is_some());
            users.find_by_id(&user.id).await.unwrap().unwrap().disabled
        };

        let before = probes();
        assert!(!both().await);
        assert_eq!(probes(), before + 2, "outside a step: one probe per read");
        let before = probes();
        assert!(!one_probe(both()).await);
        assert_eq!(probes(), before + 1, "one step: one probe");
        let hits = reader.cache_hits.load(Ordering::Relaxed);
        assert!(!one_probe(both()).await);
        assert_eq!(reader.cache_hits.load(Ordering::Relaxed), hits + 2);

        users.set_disabled(&user.id, true).await.unwrap();
        assert!(one_probe(both()).await, "the next step sees the write");
        let before = probes();
        assert!(both().await);
        assert_eq!(probes(), before + 2, "after a step, outside again");

        // A step that panics gives the thread back outside any step.
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            let mut step = std::pin::pin!(one_probe(async {
                assert!(matches!(STEP.get(), Step::Inside(None)));
                panic!("a step that fails");
            }));
            let _ = std::future::Future::poll(step.as_mut(), &mut cx);
        }));
        assert!(panicked.is_err());
        assert!(matches!(STEP.get(), Step::Outside));

        // Inside a step a cached read keeps the step's version, even after
        // a write; work run `without_step` (a write that reads again) asks
        // afresh and sees it.
        assert!(users.find_by_id(&user.id).await.unwrap().unwrap().disabled);
        let (inside, outside) = one_probe(async {
            assert!(users.find_by_id(&user.id).await.unwrap().unwrap().disabled);
            users.set_disabled(&user.id, false).await.unwrap();
            let inside = users.find_by_id(&user.id).await.unwrap().unwrap().disabled;
            let outside =
                without_step(async { users.find_by_id(&user.id).await.unwrap().unwrap().disabled })
                    .await;
            (inside, outside)
        })
        .await;
        assert!(inside, "the step's version");
        assert!(!outside, "a fresh probe sees the write");

        // The same path, another file: never the old file's reader.
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("step.db").display());
        let again = SqliteStore::connect(&url).await.unwrap();
        let new_reader = again.inline.reader.as_ref().unwrap();
        assert!(!Arc::ptr_eq(&reader, new_reader));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A request's later steps reuse its latest probe while no statement
    /// of the stores on the file has finished since and it is young: a
    /// write of this process (the request's own included) is seen by the
    /// next step, an old probe is asked again, a new request probes
    /// afresh.
    #[tokio::test]
    async fn a_request_probes_again_only_after_a_write_or_a_while() {
        let dir = scratch("request");
        let (sessions, users, user) = stores_with_user(&dir.join("request.db"), "carol").await;
        let reader = Arc::clone(sessions.inline.reader.as_ref().unwrap());
        let key = live_session(&sessions, &user.id, 7).await;
        let probes = || reader.probes.load(Ordering::Relaxed);
        let disabled = || async { users.find_by_id(&user.id).await.unwrap().unwrap().disabled };

        let request = RequestProbe::default();
        let before = probes();
        assert!(
            request
                .step(async { sessions.load(&key).await.unwrap().is_some() })
                .await
        );
        assert!(!request.step(disabled()).await);
        assert!(!request.step(disabled()).await);
        assert_eq!(probes(), before + 1, "one probe for three steps");

        // The request's own write (sqlx, through the user store) is seen
        // by its next step, which probes again.
        users.set_disabled(&user.id, true).await.unwrap();
        let before = probes();
        assert!(request.step(disabled()).await, "its own write");
        assert!(request.step(disabled()).await);
        assert_eq!(probes(), before + 1);

        // So is a write through another store on the same file (the
        // session store's pool is the user store's).
        sessions.delete(&key).await.unwrap();
        let before = probes();
        assert!(
            request
                .step(async { sessions.load(&key).await.unwrap().is_none() })
                .await,
            "deleted"
        );
        assert_eq!(probes(), before + 1);

        // A probe older than the reuse window is asked again.
        let before = probes();
        tokio::time::sleep(REUSE_FOR + Duration::from_millis(20)).await;
        assert!(request.step(disabled()).await);
        assert_eq!(probes(), before + 1, "too old");

        // Another request starts with a probe of its own.
        let before = probes();
        assert!(RequestProbe::default().step(disabled()).await);
        assert_eq!(probes(), before + 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A new folder for one test's files.
    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "auth-inline-{name}-{}-{}",
            std::process::id(),
            crate::session::SessionId::generate()
                .map(|id| id.encode()[..8].to_owned())
                .unwrap_or_default()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The session and user stores on the SQLite file `file` (one pool),
    /// and a user `login` created in it.
    async fn stores_with_user(
        file: &Path,
        login: &str,
    ) -> (SqliteStore, SqliteUserStore, crate::user::User) {
        let url = format!("sqlite://{}", file.display());
        let sessions = SqliteStore::connect(&url).await.unwrap();
        let users = SqliteUserStore::from_pool(sessions.pool().clone())
            .await
            .unwrap();
        let user = users
            .create(NewUser {
                login: crate::user::LoginName::parse(login).unwrap(),
                password_hash: crate::password::HashedPassword::new("$argon2id$x".to_owned()),
            })
            .await
            .unwrap();
        (sessions, users, user)
    }

    /// A session of `user` live for ten minutes, under the key of 32
    /// `byte`s.
    async fn live_session(sessions: &SqliteStore, user: &str, byte: u8) -> SessionKey {
        let key = SessionKey::from_bytes([byte; 32]);
        sessions.create(&key, &live_record(user).0).await.unwrap();
        key
    }

    /// A session record of `user` live for ten minutes, and the time now.
    fn live_record(user: &str) -> (crate::session::SessionRecord, crate::clock::Timestamp) {
        let now = crate::clock::Clock::now(&crate::clock::SystemClock);
        let later = now.saturating_add(Duration::from_secs(600));
        let record = crate::session::SessionRecord {
            user_id: Some(user.to_owned()),
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
        (record, now)
    }

    /// The file another process writes to, for
    /// [`a_write_by_another_process_is_seen_at_the_next_read`].
    const CHILD_DB: &str = "AUTH_INLINE_CHILD_DB";

    /// Run as a child process by the test below (with `--ignored`): writes
    /// to the file that test names, as another app instance would.
    #[test]
    #[ignore = "a child process of a_write_by_another_process_is_seen_at_the_next_read"]
    fn child_process_writes() {
        let Some(path) = std::env::var_os(CHILD_DB) else {
            return;
        };
        let c = Connection::open(path).unwrap();
        c.busy_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(c.execute("DELETE FROM auth_sessions", []).unwrap(), 1);
        assert_eq!(
            c.execute("UPDATE auth_users SET disabled = 1", []).unwrap(),
            1
        );
    }

    /// A revocation committed by another process (another instance of the
    /// app on the same file) is seen by this one's next read, though the
    /// record was cached.
    #[tokio::test]
    async fn a_write_by_another_process_is_seen_at_the_next_read() {
        let dir = scratch("process");
        let file = dir.join("shared.db");
        let (sessions, users, user) = stores_with_user(&file, "Bob").await;
        let key = SessionKey::from_bytes([9; 32]);
        let (record, _) = live_record(&user.id);
        sessions.create(&key, &record).await.unwrap();
        for _ in 0..2 {
            assert!(sessions.load(&key).await.unwrap().is_some());
            assert!(!users.find_by_id(&user.id).await.unwrap().unwrap().disabled);
        }
        let cached = |store: &Inline| {
            store
                .reader
                .as_ref()
                .unwrap()
                .cache_hits
                .load(Ordering::Relaxed)
        };
        assert!(
            cached(&sessions.inline) > 0 && cached(&users.inline) > 0,
            "cached"
        );

        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sqlite_inline::tests::child_process_writes",
                "--ignored",
            ])
            .env(CHILD_DB, &file)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&child.stdout);
        assert!(
            child.status.success() && said.contains("1 passed"),
            "the child process wrote: {said}"
        );

        assert!(
            sessions.load(&key).await.unwrap().is_none(),
            "revoked elsewhere"
        );
        assert!(users.find_by_id(&user.id).await.unwrap().unwrap().disabled);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A probe reads the WAL index header and asks SQLite only when it
    /// changed: between commits no pragma runs, and a commit by any other
    /// connection (here one of this process that no store knows of, so
    /// only the header can tell) is seen by the next cached read. A
    /// connection that would keep its WAL index out of `-shm` cannot open
    /// the file while the probe is open.
    #[cfg(unix)]
    #[test]
    fn the_wal_index_header_answers_until_a_commit() {
        let dir = scratch("header");
        let file = dir.join("header.db");
        let c = Connection::open(&file).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (1);",
        )
        .unwrap();
        let reader = InlineReader::for_path(&file).unwrap();
        let cached = || {
            *reader
                .cached(
                    "t",
                    b"v",
                    |c| c.query_row("SELECT v FROM t", [], |row| row.get::<_, i64>(0)),
                    |_| true,
                )
                .unwrap()
        };
        let pragmas = || reader.pragmas.load(Ordering::Relaxed);
        // The first probes open the connection and the index.
        assert_eq!(cached(), 1);
        assert_eq!(cached(), 1);
        let (before, hits) = (pragmas(), reader.cache_hits.load(Ordering::Relaxed));
        for _ in 0..3 {
            assert_eq!(cached(), 1);
        }
        assert_eq!(pragmas(), before, "an unchanged header: no pragma");
        assert_eq!(reader.cache_hits.load(Ordering::Relaxed), hits + 3);

        for v in 2..5 {
            c.execute("UPDATE t SET v = ?1", [v]).unwrap();
            assert_eq!(cached(), v, "a commit is seen at the next read");
        }
        // Each of those commits asked SQLite once.
        let before = pragmas();
        c.execute("INSERT INTO t VALUES (0)", []).unwrap();
        assert_eq!(cached(), 4);
        assert_eq!(cached(), 4);
        assert_eq!(pragmas(), before + 1);
        // A checkpoint that restarts the WAL, then a commit into the new
        // one.
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        c.execute("UPDATE t SET v = 5", []).unwrap();
        assert_eq!(cached(), 5);

        // A connection that asks for an exclusive lock before its first
        // read (its WAL index would be in its heap, its commits invisible
        // in `-shm`) cannot open the file while the probe is open, also
        // when no other connection is: the probe's own shared lock keeps
        // it out.
        drop(c);
        reader.idle.lock().unwrap().clear();
        let exclusive = Connection::open(&file).unwrap();
        exclusive.busy_timeout(Duration::ZERO).unwrap();
        exclusive
            .query_row("PRAGMA locking_mode = EXCLUSIVE", [], |_| Ok(()))
            .unwrap();
        let write = exclusive.execute("UPDATE t SET v = 6", []);
        assert!(write.is_err(), "refused while the probe is open");
        drop(exclusive);
        assert_eq!(cached(), 5, "never a stale answer");
        // The index's descriptor is the process's one for the file, kept
        // open (closing it would drop SQLite's locks on it).
        let index = reader.probe.lock().unwrap().index.unwrap();
        assert!(std::ptr::eq(index, wal_index(&file).unwrap()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Only a whole header of the format this code knows is compared; a
    /// torn, uninitialised or unknown one asks SQLite.
    #[cfg(unix)]
    #[test]
    fn only_a_whole_known_header_is_trusted() {
        let dir = scratch("torn");
        let path = dir.join("index");
        let mut header = [0_u8; 96];
        header[..4].copy_from_slice(&3_007_000_u32.to_ne_bytes());
        header[12] = 1;
        header[16] = 9;
        header.copy_within(..48, 48);
        let check = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            wal_header(&std::fs::File::open(&path).unwrap())
        };
        assert_eq!(check(&header), Some(header));
        let mut torn = header;
        torn[64] = 10;
        assert_eq!(check(&torn), None, "copies differ");
        let mut fresh = header;
        fresh[12] = 0;
        fresh[60] = 0;
        assert_eq!(check(&fresh), None, "not initialised");
        let mut other = header;
        other[0] ^= 1;
        other[48] ^= 1;
        assert_eq!(check(&other), None, "another format");
        assert_eq!(check(&header[..95]), None, "short");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_files_in_wal_mode_are_read_inline() {
        let dir = scratch("wal");
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
