use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use super::{
    AuthState, SaveOutcome, SessionHandle, SessionId, SessionKey, SessionRecord, SessionStore,
    StoreError,
};
use crate::clock::{Clock, SystemClock, Timestamp};

/// How often a compare-and-set write is retried after a conflict before
/// giving up with [`SessionError::Contended`].
const MAX_CAS_ATTEMPTS: usize = 16;
/// How often a fresh ID is drawn after a key collision (2^-256 odds each).
const MAX_ID_ATTEMPTS: usize = 3;

/// Session timeouts, validated by [`SessionConfigBuilder::build`].
#[derive(Debug, Clone)]
pub struct SessionConfig {
    idle_timeout: Duration,
    absolute_timeout: Duration,
    persistent_idle_timeout: Duration,
    persistent_absolute_timeout: Duration,
    touch_interval: Duration,
    mfa_pending_timeout: Duration,
    anonymous_idle_timeout: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_timeout: Duration::from_secs(12 * 60 * 60),
            persistent_idle_timeout: Duration::from_secs(7 * 24 * 60 * 60),
            persistent_absolute_timeout: Duration::from_secs(30 * 24 * 60 * 60),
            touch_interval: Duration::from_secs(60),
            mfa_pending_timeout: Duration::from_secs(5 * 60),
            anonymous_idle_timeout: Duration::from_secs(10 * 60),
        }
    }
}

impl SessionConfig {
    /// A builder starting from the defaults: idle 30 min (10 min for
    /// anonymous sessions), absolute 12 h; for a signed-in session created
    /// with [`NewSession::persistent`] ("remember me"), idle 7 days and
    /// absolute 30 days; last-seen written at most once a minute,
    /// MFA-pending state valid 5 min.
    pub fn builder() -> SessionConfigBuilder {
        SessionConfigBuilder(Self::default())
    }

    /// Idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// Absolute lifetime of a browser-session session.
    pub fn absolute_timeout(&self) -> Duration {
        self.absolute_timeout
    }

    /// Idle timeout of a signed-in persistent ("remember me") session.
    pub fn persistent_idle_timeout(&self) -> Duration {
        self.persistent_idle_timeout
    }

    /// Absolute lifetime of a persistent ("remember me") session; also the
    /// cookie's `Max-Age`.
    pub fn persistent_absolute_timeout(&self) -> Duration {
        self.persistent_absolute_timeout
    }

    /// How long an MFA-pending state lasts.
    pub fn mfa_pending_timeout(&self) -> Duration {
        self.mfa_pending_timeout
    }

    /// Idle timeout of an anonymous session (one with no user: app data
    /// stored for a visitor). Anyone can make one, so it is short.
    pub fn anonymous_idle_timeout(&self) -> Duration {
        self.anonymous_idle_timeout
    }

    /// The idle timeout of `record`: the persistent one only once it is
    /// signed in (an anonymous or MFA-pending record keeps its short one).
    fn idle_of(&self, record: &SessionRecord) -> Duration {
        if record.user_id.is_none() {
            self.anonymous_idle_timeout.min(self.idle_timeout)
        } else if record.persistent && record.authenticated_user().is_some() {
            self.persistent_idle_timeout
        } else {
            self.idle_timeout
        }
    }
}

/// Builds a [`SessionConfig`].
#[derive(Debug)]
#[must_use]
pub struct SessionConfigBuilder(SessionConfig);

impl SessionConfigBuilder {
    /// Idle timeout (default 30 min).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.0.idle_timeout = timeout;
        self
    }

    /// Absolute lifetime (default 12 h).
    pub fn absolute_timeout(mut self, timeout: Duration) -> Self {
        self.0.absolute_timeout = timeout;
        self
    }

    /// Idle timeout of signed-in persistent sessions, created with
    /// [`NewSession::persistent`] (default 7 days; at most the persistent
    /// absolute timeout).
    pub fn persistent_idle_timeout(mut self, timeout: Duration) -> Self {
        self.0.persistent_idle_timeout = timeout;
        self
    }

    /// Absolute lifetime of persistent sessions, created with
    /// [`NewSession::persistent`] (default 30 days).
    pub fn persistent_absolute_timeout(mut self, timeout: Duration) -> Self {
        self.0.persistent_absolute_timeout = timeout;
        self
    }

    /// Minimum time between two last-seen writes (default 60 s).
    pub fn touch_interval(mut self, interval: Duration) -> Self {
        self.0.touch_interval = interval;
        self
    }

    /// Lifetime of the MFA-pending state (default 5 min).
    pub fn mfa_pending_timeout(mut self, timeout: Duration) -> Self {
        self.0.mfa_pending_timeout = timeout;
        self
    }

    /// Idle timeout of anonymous sessions (default 10 min; the idle
    /// timeout if that is shorter).
    pub fn anonymous_idle_timeout(mut self, timeout: Duration) -> Self {
        self.0.anonymous_idle_timeout = timeout;
        self
    }

    /// Validates: all timeouts positive, idle <= absolute <= persistent
    /// absolute, touch interval shorter than the idle timeouts. A
    /// persistent idle timeout past the persistent absolute timeout is
    /// brought down to it.
    pub fn build(self) -> Result<SessionConfig, SessionError> {
        let c = self.0;
        let positive = [
            c.idle_timeout,
            c.absolute_timeout,
            c.persistent_idle_timeout,
            c.persistent_absolute_timeout,
            c.mfa_pending_timeout,
        ]
        .iter()
        .all(|d| !d.is_zero());
        if !positive {
            return Err(SessionError::Config("session timeouts must be positive"));
        }
        if c.idle_timeout > c.absolute_timeout || c.absolute_timeout > c.persistent_absolute_timeout
        {
            return Err(SessionError::Config(
                "idle timeout <= absolute timeout <= persistent absolute timeout",
            ));
        }
        // The persistent idle timeout is at most the persistent lifetime (a
        // shorter persistent lifetime set alone keeps working: the idle
        // deadline never passes the absolute one). A shorter one than the
        // idle timeout is the app's to choose, and is kept.
        let mut c = c;
        c.persistent_idle_timeout = c.persistent_idle_timeout.min(c.persistent_absolute_timeout);
        if c.touch_interval >= c.persistent_idle_timeout {
            return Err(SessionError::Config(
                "touch interval must be shorter than the idle timeouts",
            ));
        }
        if c.anonymous_idle_timeout.is_zero() {
            return Err(SessionError::Config("session timeouts must be positive"));
        }
        if c.touch_interval >= c.anonymous_idle_timeout.min(c.idle_timeout) {
            return Err(SessionError::Config(
                "touch interval must be shorter than the idle timeouts",
            ));
        }
        Ok(c)
    }
}

/// Where the manager reads a user's current security stamp. When the stamp
/// differs from the one recorded at login (a password change, "sign out
/// everywhere"), or the user is gone or disabled (`None`), the session ends.
#[async_trait]
pub trait StampSource: Send + Sync + fmt::Debug + 'static {
    /// The user's current stamp; `None` when the user no longer exists or is
    /// disabled.
    async fn current_stamp(&self, user_id: &str) -> Result<Option<String>, StoreError>;
}

/// Who a new session belongs to, as far as the request tells.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// Client IP, as determined by the trusted-proxy logic.
    pub ip: Option<String>,
    /// The `User-Agent` header.
    pub user_agent: Option<String>,
}

/// Parameters of [`SessionManager::create`].
#[derive(Debug, Clone, Default)]
pub struct NewSession {
    /// The client.
    pub client: ClientInfo,
    /// "Remember me": a persistent cookie, and once signed in the longer
    /// idle timeout and absolute lifetime. The logins of
    /// [`Authenticator`](crate::flow::Authenticator) set it when the client
    /// asks ([`Client::remember`](crate::flow::Client::remember),
    /// `RequestAuth::remember_me`).
    pub persistent: bool,
}

/// A loaded session. Reading is free; every change goes through the
/// [`SessionManager`], which writes it to the store.
#[derive(Debug, Clone)]
pub struct Session {
    id: SessionId,
    key: SessionKey,
    /// Shared with the store's copy where the store holds one (memory):
    /// loading a session copies nothing.
    record: Arc<SessionRecord>,
    id_changed: bool,
}

impl Session {
    /// A session that exists only for one request and is never stored (a
    /// bearer token's stand-in for the guards): its ID is all zeros, and
    /// the web pipeline never sends it.
    #[cfg(feature = "jwt")]
    pub(crate) fn detached(record: SessionRecord) -> Self {
        Self {
            id: SessionId([0; 32]),
            key: SessionKey::from_bytes([0; 32]),
            record: Arc::new(record),
            id_changed: false,
        }
    }

    /// Whether this is a bearer token's stand-in ([`Session::detached`]):
    /// never stored, its user checked with its token's family instead.
    pub(crate) fn is_detached(&self) -> bool {
        self.key == SessionKey::from_bytes([0; 32])
    }

    /// The session ID (the cookie value). Handle with care.
    pub fn id(&self) -> &SessionId {
        &self.id
    }

    /// The store key.
    pub fn key(&self) -> &SessionKey {
        &self.key
    }

    /// The public handle of this session.
    pub fn handle(&self) -> SessionHandle {
        self.key.handle()
    }

    /// The record as stored.
    pub fn record(&self) -> &SessionRecord {
        &self.record
    }

    /// Whether this session was created or got a new ID during this
    /// request, so the response must carry a new cookie.
    pub fn id_changed(&self) -> bool {
        self.id_changed
    }

    /// The user, once a first factor succeeded (also while MFA is pending).
    pub fn user_id(&self) -> Option<&str> {
        self.record.user_id.as_deref()
    }

    /// The user id when fully authenticated.
    pub fn authenticated_user(&self) -> Option<&str> {
        self.record.authenticated_user()
    }

    /// The authentication state.
    pub fn auth_state(&self) -> &AuthState {
        &self.record.auth
    }

    /// Whether the last authentication happened within `within` of `now`.
    pub fn authenticated_within(&self, now: Timestamp, within: Duration) -> bool {
        match self.record.auth {
            AuthState::Authenticated { at, .. } => now.duration_since(at) <= within && at <= now,
            _ => false,
        }
    }

    /// A typed value from the app data map.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        self.record
            .data
            .get(key)
            .map(|value| T::deserialize(value).map_err(SessionError::Data))
            .transpose()
    }
}

/// One entry of "your active sessions". `handle` identifies it for
/// revocation; it is not the session ID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionInfo {
    /// Public handle.
    pub handle: SessionHandle,
    /// Whether this is the session making the request.
    pub current: bool,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last use (to within the touch interval).
    pub last_seen_at: Timestamp,
    /// Client IP at creation.
    pub ip: Option<String>,
    /// User agent at creation.
    pub user_agent: Option<String>,
}

/// Session failures. None carries a session ID.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The session was destroyed, expired or rotated away meanwhile.
    #[error("session no longer exists")]
    Gone,
    /// Too many concurrent writers on one session.
    #[error("session is being modified concurrently, try again")]
    Contended,
    /// An app data value could not be (de)serialised.
    #[error("session data could not be (de)serialised")]
    Data(#[source] serde_json::Error),
    /// The configuration is invalid.
    #[error("invalid session configuration: {0}")]
    Config(&'static str),
}

/// Work outside the SQLite stores' per-step version check (see
/// `sqlite_inline::without_step`); without SQLite, the work as it is.
#[cfg(feature = "sqlite")]
use crate::sqlite_inline::without_step;

#[cfg(not(feature = "sqlite"))]
fn without_step<F>(work: F) -> F {
    work
}

/// How long a session load (with its user read and touch) may take.
const LOAD_DEADLINE: Duration = Duration::from_secs(5);

/// `load`, or a store error whose source is the timeout after
/// [`LOAD_DEADLINE`] of waiting (no timer for a load that answers at once:
/// see `crate::deadline`).
async fn bounded<T>(
    load: impl Future<Output = Result<T, SessionError>>,
) -> Result<T, SessionError> {
    crate::deadline::within(Some(LOAD_DEADLINE), load)
        .await
        .map_err(|passed| SessionError::Store(StoreError::Backend(Box::new(passed))))?
}

/// Creates, loads, changes and ends sessions on a [`SessionStore`], judging
/// every deadline by its [`Clock`].
///
/// Load costs one store read; last-seen is written at most once per touch
/// interval. Every change is a compare-and-set that, on conflict, reloads
/// and re-applies the change, so concurrent requests never lose a write and
/// never resurrect a destroyed session.
#[derive(Clone)]
pub struct SessionManager {
    store: Arc<dyn SessionStore>,
    clock: Arc<dyn Clock>,
    config: SessionConfig,
    stamps: Option<Arc<dyn StampSource>>,
}

impl fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionManager")
            .field("store", &self.store)
            .field("clock", &self.clock)
            .field("config", &self.config)
            .field("stamps", &self.stamps.is_some())
            .finish()
    }
}

impl SessionManager {
    /// A manager on `store` with the system clock.
    pub fn new(store: Arc<dyn SessionStore>, config: SessionConfig) -> Self {
        Self {
            store,
            clock: Arc::new(SystemClock),
            config,
            stamps: None,
        }
    }

    /// Uses `clock` for every deadline.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Checks each loaded session's security stamp against `stamps`.
    #[must_use]
    pub fn with_stamp_source(mut self, stamps: Arc<dyn StampSource>) -> Self {
        self.stamps = Some(stamps);
        self
    }

    /// Whether loads check security stamps.
    pub fn has_stamp_source(&self) -> bool {
        self.stamps.is_some()
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    /// Creates and stores a new anonymous session with a fresh ID.
    pub async fn create(&self, new: NewSession) -> Result<Session, SessionError> {
        self.create_as(new, |_| {}).await
    }

    /// Creates and stores a new session with a fresh ID, in the state
    /// `change` gives the anonymous record (a login's session is stored
    /// authenticated from its first write: the store never sees it as
    /// anonymous).
    pub async fn create_as<F: FnOnce(&mut SessionRecord)>(
        &self,
        new: NewSession,
        change: F,
    ) -> Result<Session, SessionError> {
        let now = self.clock.now();
        let lifetime = if new.persistent {
            self.config.persistent_absolute_timeout
        } else {
            self.config.absolute_timeout
        };
        let mut record = SessionRecord {
            user_id: None,
            auth: AuthState::Anonymous,
            created_at: now,
            last_seen_at: now,
            idle_expires_at: now,
            absolute_expires_at: now.saturating_add(lifetime),
            persistent: new.persistent,
            ip: new.client.ip,
            user_agent: new.client.user_agent,
            security_stamp: None,
            data: BTreeMap::new(),
            version: 0,
        };
        change(&mut record);
        record.idle_expires_at = now
            .saturating_add(self.config.idle_of(&record))
            .min(record.absolute_expires_at);
        for _ in 0..MAX_ID_ATTEMPTS {
            let id = SessionId::generate()?;
            let key = id.key();
            match self.store.create(&key, &record).await {
                Ok(()) => {
                    return Ok(Session {
                        id,
                        key,
                        record: Arc::new(record),
                        id_changed: true,
                    });
                }
                Err(StoreError::Collision) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Err(StoreError::Collision.into())
    }

    /// Loads the session a cookie value names. `Ok(None)` for a malformed
    /// value, an unknown or expired session, a void MFA-pending state, or a
    /// security stamp that no longer matches (those sessions are deleted).
    pub async fn load(&self, cookie_value: &str) -> Result<Option<Session>, SessionError> {
        let Some(id) = SessionId::parse(cookie_value) else {
            return Ok(None);
        };
        self.load_id(id).await
    }

    /// [`load`](Self::load) for an already parsed ID.
    ///
    /// Bounded, as [`load_id_with`](Self::load_id_with): a store that has
    /// not answered in 5 s fails the load with a [`StoreError::Backend`]
    /// whose source is the timeout (the flows answer it 503).
    pub async fn load_id(&self, id: SessionId) -> Result<Option<Session>, SessionError> {
        bounded(self.load_id_unbounded(id)).await
    }

    async fn load_id_unbounded(&self, id: SessionId) -> Result<Option<Session>, SessionError> {
        let key = id.key();
        let Some(record) = self.store.load(&key).await? else {
            return Ok(None);
        };
        let now = self.clock.now();
        if !self.still_valid(&record, now).await? {
            self.store.delete(&key).await?;
            return Ok(None);
        }
        self.finish_load(id, key, record, now).await
    }

    /// [`load_id`](Self::load_id) that also fetches the session's user in
    /// the same read as its security stamp: `fetch(user_id)` answers the
    /// user's current stamp and whatever the caller wants of the user
    /// (`None` when the user is gone or disabled). The stamp is checked as
    /// in `load_id` (when a stamp source is configured); the fetched value
    /// comes back with the session, so a request reads its user once.
    ///
    /// Bounded: when the reads (and the touch) have not finished in 5 s (a
    /// store that stopped answering mid-query, whose driver has no timeout
    /// of its own), the load fails with a [`StoreError::Backend`] whose
    /// source is the timeout: the flows answer it 503 with `Retry-After`,
    /// never hang and never admit the request.
    pub async fn load_id_with<T, K, F, Fut>(
        &self,
        id: SessionId,
        fetch: F,
    ) -> Result<Option<(Session, Option<T>)>, SessionError>
    where
        F: FnOnce(String) -> Fut + Send,
        Fut: Future<Output = Result<Option<(K, T)>, StoreError>> + Send,
        K: AsRef<str> + Send,
        T: Send,
    {
        bounded(self.load_id_with_unbounded(id, fetch)).await
    }

    async fn load_id_with_unbounded<T, K, F, Fut>(
        &self,
        id: SessionId,
        fetch: F,
    ) -> Result<Option<(Session, Option<T>)>, SessionError>
    where
        F: FnOnce(String) -> Fut + Send,
        Fut: Future<Output = Result<Option<(K, T)>, StoreError>> + Send,
        K: AsRef<str> + Send,
        T: Send,
    {
        let key = id.key();
        let Some(record) = self.store.load(&key).await? else {
            return Ok(None);
        };
        let now = self.clock.now();
        let mut fetched = None;
        let mut valid = Self::within_deadlines(&record, now);
        if valid && let Some(user) = &record.user_id {
            match fetch(user.clone()).await? {
                Some((stamp, value)) => {
                    if self.stamps.is_some() {
                        valid = Self::stamp_matches(Some(stamp.as_ref()), &record);
                    }
                    fetched = Some(value);
                }
                None => valid = self.stamps.is_none(),
            }
        }
        if !valid {
            self.store.delete(&key).await?;
            return Ok(None);
        }
        let session = self.finish_load(id, key, record, now).await?;
        Ok(session.map(|session| (session, fetched)))
    }

    /// Touches a loaded record when due and wraps it.
    async fn finish_load(
        &self,
        id: SessionId,
        key: SessionKey,
        record: Arc<SessionRecord>,
        now: Timestamp,
    ) -> Result<Option<Session>, SessionError> {
        let mut session = Session {
            id,
            key,
            record,
            id_changed: false,
        };
        if now.duration_since(session.record.last_seen_at) >= self.config.touch_interval {
            // Boxed: a touch is due at most once per touch interval, and
            // inline its future (a whole record held across the write)
            // would be carried by every load. Outside the load's step of
            // reads: on a conflict it reloads the record, which must be
            // the file's current one.
            match Box::pin(without_step(self.update(&mut session, |_| {}))).await {
                Ok(()) | Err(SessionError::Contended) => {}
                Err(SessionError::Gone) => return Ok(None),
                Err(error) => return Err(error),
            }
        }
        Ok(Some(session))
    }

    fn within_deadlines(record: &SessionRecord, now: Timestamp) -> bool {
        if record.expires_at() <= now {
            return false;
        }
        !matches!(record.auth, AuthState::MfaPending { expires_at, .. } if expires_at <= now)
    }

    fn stamp_matches(current: Option<&str>, record: &SessionRecord) -> bool {
        match (current, &record.security_stamp) {
            // Every request: `constant_time_eq` compares word by word,
            // `subtle` byte by byte behind a barrier each (~10x the cost).
            (Some(current), Some(recorded)) => {
                constant_time_eq::constant_time_eq(current.as_bytes(), recorded.as_bytes())
            }
            _ => false,
        }
    }

    async fn still_valid(
        &self,
        record: &SessionRecord,
        now: Timestamp,
    ) -> Result<bool, SessionError> {
        if !Self::within_deadlines(record, now) {
            return Ok(false);
        }
        if let (Some(stamps), Some(user)) = (&self.stamps, &record.user_id) {
            let current = stamps.current_stamp(user).await?;
            if !Self::stamp_matches(current.as_deref(), record) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Applies `change` to the record and stores it (compare-and-set). On a
    /// conflict the record is reloaded and `change` applied again, so no
    /// concurrent write is lost. Also refreshes last-seen and the idle
    /// deadline. Fails with [`SessionError::Gone`] when the session no
    /// longer exists: it is never re-created.
    pub async fn update<F>(&self, session: &mut Session, mut change: F) -> Result<(), SessionError>
    where
        F: FnMut(&mut SessionRecord) + Send,
    {
        for _ in 0..MAX_CAS_ATTEMPTS {
            let next = self.next_record(&session.record, &mut change);
            match self
                .store
                .save(&session.key, &next, session.record.version)
                .await?
            {
                SaveOutcome::Saved => {
                    let mut next = next;
                    next.version += 1;
                    session.record = Arc::new(next);
                    return Ok(());
                }
                SaveOutcome::Conflict => {
                    session.record = self
                        .store
                        .load(&session.key)
                        .await?
                        .ok_or(SessionError::Gone)?;
                }
                SaveOutcome::Missing => return Err(SessionError::Gone),
            }
        }
        Err(SessionError::Contended)
    }

    /// Gives the session a new ID, keeping its record; the old ID is dead
    /// as soon as this returns.
    pub async fn rotate(&self, session: &mut Session) -> Result<(), SessionError> {
        self.rotate_with(session, |_| {}).await
    }

    /// Gives the session a new ID and applies `change` in the same atomic
    /// store operation: what login, step-up and privilege changes use, so no
    /// moment exists where the new state is reachable with the old ID.
    pub async fn rotate_with<F>(
        &self,
        session: &mut Session,
        mut change: F,
    ) -> Result<(), SessionError>
    where
        F: FnMut(&mut SessionRecord) + Send,
    {
        let mut id_attempts = 0;
        let mut new_id = SessionId::generate()?;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let next = self.next_record(&session.record, &mut change);
            let new_key = new_id.key();
            match self
                .store
                .rotate(&session.key, &new_key, &next, session.record.version)
                .await
            {
                Ok(SaveOutcome::Saved) => {
                    session.id = new_id;
                    session.key = new_key;
                    let mut next = next;
                    next.version += 1;
                    session.record = Arc::new(next);
                    session.id_changed = true;
                    return Ok(());
                }
                Ok(SaveOutcome::Conflict) => {
                    session.record = self
                        .store
                        .load(&session.key)
                        .await?
                        .ok_or(SessionError::Gone)?;
                }
                Ok(SaveOutcome::Missing) => return Err(SessionError::Gone),
                Err(StoreError::Collision) if id_attempts < MAX_ID_ATTEMPTS => {
                    id_attempts += 1;
                    new_id = SessionId::generate()?;
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(SessionError::Contended)
    }

    fn next_record<F: FnMut(&mut SessionRecord)>(
        &self,
        current: &SessionRecord,
        change: &mut F,
    ) -> SessionRecord {
        let now = self.clock.now();
        let mut next = current.clone();
        change(&mut next);
        next.last_seen_at = now;
        next.idle_expires_at = now
            .saturating_add(self.config.idle_of(&next))
            .min(next.absolute_expires_at);
        next
    }

    /// Stores `value` under `key` in the app data map.
    pub async fn insert<T: Serialize + ?Sized>(
        &self,
        session: &mut Session,
        key: &str,
        value: &T,
    ) -> Result<(), SessionError> {
        let value = serde_json::to_value(value).map_err(SessionError::Data)?;
        self.update(session, |record| {
            record.data.insert(key.to_owned(), value.clone());
        })
        .await
    }

    /// Removes `key` from the app data map.
    pub async fn remove(&self, session: &mut Session, key: &str) -> Result<(), SessionError> {
        self.update(session, |record| {
            record.data.remove(key);
        })
        .await
    }

    /// Ends the session server-side. Replaying its cookie afterwards finds
    /// nothing.
    pub async fn destroy(&self, session: Session) -> Result<(), SessionError> {
        self.store.delete(&session.key).await?;
        Ok(())
    }

    /// Ends every session of `user_id`, except `keep` if given. Returns how
    /// many ended.
    pub async fn destroy_all_for_user(
        &self,
        user_id: &str,
        keep: Option<&Session>,
    ) -> Result<u64, SessionError> {
        Ok(self
            .store
            .delete_by_user(user_id, keep.map(|s| &s.key))
            .await?)
    }

    /// The live sessions of `user_id`, most recently used first, marking
    /// `current`.
    pub async fn list_for_user(
        &self,
        user_id: &str,
        current: Option<&Session>,
    ) -> Result<Vec<SessionInfo>, SessionError> {
        let now = self.clock.now();
        let mut out = Vec::new();
        for (key, record) in self.store.list_by_user(user_id).await? {
            if !self.still_valid(&record, now).await? {
                continue;
            }
            out.push(SessionInfo {
                handle: key.handle(),
                current: current.is_some_and(|s| s.key == key),
                created_at: record.created_at,
                last_seen_at: record.last_seen_at,
                ip: record.ip,
                user_agent: record.user_agent,
            });
        }
        out.sort_by_key(|info| std::cmp::Reverse(info.last_seen_at));
        Ok(out)
    }

    /// Ends the session of `user_id` that has `handle`. Returns whether one
    /// was found: a handle of another user's session is simply not found.
    pub async fn destroy_by_handle(
        &self,
        user_id: &str,
        handle: &SessionHandle,
    ) -> Result<bool, SessionError> {
        for (key, _) in self.store.list_by_user(user_id).await? {
            if key
                .handle()
                .as_str()
                .as_bytes()
                .ct_eq(handle.as_str().as_bytes())
                .into()
            {
                return Ok(self.store.delete(&key).await?);
            }
        }
        Ok(false)
    }

    /// Deletes expired records (for stores without native expiry; run it
    /// periodically).
    pub async fn delete_expired(&self) -> Result<u64, SessionError> {
        Ok(self.store.delete_expired(self.clock.now()).await?)
    }
}
