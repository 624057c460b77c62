use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use super::{AuthState, SaveOutcome, SessionKey, SessionRecord, SessionStore, StoreError};
use crate::clock::{Clock, SystemClock, Timestamp};

/// An in-process store: for tests and single-process apps.
///
/// Bounded: at most `capacity` sessions (default 100,000), of which at
/// most `anonymous_capacity` (default 10,000) anonymous ones (no user: app
/// data for a visitor, which anyone can make). A new anonymous session
/// beyond its cap, or any new session in a full store, first makes room by
/// dropping expired records and then anonymous sessions (a tenth of their
/// cap at a time): first those of the client networks (an IPv4 address,
/// an IPv6 /64 or /48) that hold the most, the soonest to expire first,
/// so a flood from one network ends its own sessions, not other visitors';
/// anonymous sessions never block a login. One user holds at most `per_user_capacity` sessions
/// (default 64) and at most 8 waiting for their second factor: a new one
/// beyond that ends that user's session of the same kind that expires
/// soonest, so no account (an attacker's own, logging in again and again)
/// can fill the store for everybody else, and whoever has only the
/// password (whose logins wait for the second factor) never ends a
/// signed-in session (only other pending logins, the owner's included). Only when the store
/// is full of users' sessions does `create` fail with
/// [`StoreError::Full`], rather than evict someone's login. Sessions are
/// lost when the process exits.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    clock: Arc<dyn Clock>,
    capacity: usize,
    anonymous_capacity: usize,
    per_user_capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    // foldhash (seeded), not SipHash: a key is a digest of a session key,
    // which no client can choose.
    records: HashMap<SessionKey, Arc<SessionRecord>, foldhash::fast::RandomState>,
    by_user: HashMap<String, HashSet<SessionKey>>,
    anonymous: HashSet<SessionKey>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// Default capacity.
    pub const DEFAULT_CAPACITY: usize = 100_000;

    /// Default cap on anonymous sessions.
    pub const DEFAULT_ANONYMOUS_CAPACITY: usize = 10_000;

    /// Default cap on one user's sessions.
    pub const DEFAULT_PER_USER_CAPACITY: usize = 64;

    /// Cap on one user's sessions that wait for their second factor.
    pub const PENDING_PER_USER: usize = 8;

    /// An empty store with the default capacity and the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty store judging expiry by `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Arc::default(),
            clock,
            capacity: Self::DEFAULT_CAPACITY,
            anonymous_capacity: Self::DEFAULT_ANONYMOUS_CAPACITY,
            per_user_capacity: Self::DEFAULT_PER_USER_CAPACITY,
        }
    }

    /// Sets the capacity (at least 1).
    #[must_use]
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Sets the cap on anonymous sessions (at least 1; at most the
    /// capacity).
    #[must_use]
    pub fn anonymous_capacity(mut self, capacity: usize) -> Self {
        self.anonymous_capacity = capacity.max(1);
        self
    }

    /// Sets the cap on one user's sessions (at least 1): a new session of
    /// a user who holds that many ends the one that expires soonest.
    #[must_use]
    pub fn per_user_capacity(mut self, capacity: usize) -> Self {
        self.per_user_capacity = capacity.max(1);
        self
    }

    /// How many anonymous records are held, live or expired.
    pub fn anonymous_len(&self) -> usize {
        self.lock().anonymous.len()
    }

    /// How many records are held, live or expired.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether the store holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps inconsistent
        // in a way that matters more than losing the store, so keep serving.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Whether `record` waits for its second factor.
fn is_pending(record: &SessionRecord) -> bool {
    matches!(record.auth, AuthState::MfaPending { .. })
}

impl Inner {
    fn live(&self, key: &SessionKey, now: Timestamp) -> Option<&Arc<SessionRecord>> {
        self.records.get(key).filter(|r| r.expires_at() > now)
    }

    /// Stores `record` under `key` (not held), first making room among
    /// its user's sessions (at most `per_user` of them).
    fn insert(&mut self, key: SessionKey, record: SessionRecord, per_user: usize, now: Timestamp) {
        match &record.user_id {
            Some(user) => {
                self.make_room_for(user, is_pending(&record), per_user, now);
                self.by_user.entry(user.clone()).or_default().insert(key);
            }
            None => {
                self.anonymous.insert(key);
            }
        }
        self.records.insert(key, Arc::new(record));
    }

    /// Makes room for a new session of `user` (`pending`: one waiting for
    /// its second factor): drops the user's expired sessions, then, while
    /// the user holds `cap` sessions of that kind (pending ones: at most
    /// [`MemoryStore::PENDING_PER_USER`]), the one of that kind that expires
    /// soonest. Only sessions of the same kind compete.
    fn make_room_for(&mut self, user: &str, pending: bool, cap: usize, now: Timestamp) {
        let cap = if pending {
            cap.min(MemoryStore::PENDING_PER_USER)
        } else {
            cap
        };
        let Some(keys) = self.by_user.get(user) else {
            return;
        };
        if keys.len() < cap {
            return;
        }
        let mut expired = Vec::new();
        let mut same_kind = Vec::new();
        for key in keys {
            let Some(record) = self.records.get(key) else {
                continue;
            };
            if record.expires_at() <= now {
                expired.push(*key);
            } else if is_pending(record) == pending {
                same_kind.push((record.expires_at(), *key));
            }
        }
        for key in &expired {
            self.remove(key);
        }
        if same_kind.len() < cap {
            return;
        }
        same_kind.sort_unstable();
        let over = same_kind.len() + 1 - cap;
        for (_, key) in same_kind.into_iter().take(over) {
            self.remove(&key);
        }
    }

    /// Drops `count` anonymous sessions: those of the client networks
    /// holding the most go first (an IPv4 address; for IPv6 the larger of
    /// its /64's count and its /48's, so a flood spread over the /64s of
    /// one site counts as one), the soonest to expire first within one
    /// rank. So a flood of anonymous sessions from one network ends its
    /// own, not other visitors' (a passkey sign-in under way, say).
    fn evict_anonymous(&mut self, count: usize) {
        use crate::rate_limit::IpBucket;
        let networks = |record: &SessionRecord| {
            let ip: Option<std::net::IpAddr> = record.ip.as_deref().and_then(|ip| ip.parse().ok());
            [ip.map(IpBucket::of), ip.map(|ip| IpBucket::within(ip, 48))]
        };
        let mut held = HashMap::<_, usize, foldhash::fast::RandomState>::default();
        for key in &self.anonymous {
            if let Some(record) = self.records.get(key) {
                let [narrow, wide] = networks(record);
                *held.entry(narrow).or_default() += 1;
                // An IPv4 address is its own /48: counted once.
                if wide != narrow {
                    *held.entry(wide).or_default() += 1;
                }
            }
        }
        let mut order: Vec<(std::cmp::Reverse<usize>, Timestamp, SessionKey)> = self
            .anonymous
            .iter()
            .filter_map(|key| {
                let record = self.records.get(key)?;
                let many = networks(record)
                    .iter()
                    .map(|network| held.get(network).copied().unwrap_or(0))
                    .max()
                    .unwrap_or(0);
                Some((std::cmp::Reverse(many), record.expires_at(), *key))
            })
            .collect();
        let count = count.min(order.len());
        if count == 0 {
            return;
        }
        order.select_nth_unstable(count - 1);
        for (_, _, key) in order.into_iter().take(count) {
            self.remove(&key);
        }
    }

    fn remove(&mut self, key: &SessionKey) -> Option<Arc<SessionRecord>> {
        let record = self.records.remove(key)?;
        if record.user_id.is_none() {
            self.anonymous.remove(key);
        }
        if let Some(user) = &record.user_id
            && let Some(keys) = self.by_user.get_mut(user)
        {
            keys.remove(key);
            if keys.is_empty() {
                self.by_user.remove(user);
            }
        }
        Some(record)
    }

    fn purge_expired(&mut self, now: Timestamp) -> u64 {
        let expired: Vec<SessionKey> = self
            .records
            .iter()
            .filter(|(_, r)| r.expires_at() <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in &expired {
            self.remove(key);
        }
        expired.len() as u64
    }

    /// The CAS check shared by save and rotate.
    fn check(&mut self, key: &SessionKey, expected: u64, now: Timestamp) -> Option<SaveOutcome> {
        match self.live(key, now) {
            None => {
                self.remove(key);
                Some(SaveOutcome::Missing)
            }
            Some(current) if current.version != expected => Some(SaveOutcome::Conflict),
            Some(_) => None,
        }
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create(&self, key: &SessionKey, record: &SessionRecord) -> Result<(), StoreError> {
        let now = self.clock.now();
        let mut inner = self.lock();
        if inner.live(key, now).is_some() {
            return Err(StoreError::Collision);
        }
        inner.remove(key);
        let anonymous_cap = self.anonymous_capacity.min(self.capacity);
        // A tenth of the anonymous cap at a time: the sort is amortised.
        let batch = (anonymous_cap / 10).max(1);
        let anonymous_full = record.user_id.is_none() && inner.anonymous.len() >= anonymous_cap;
        if anonymous_full || inner.records.len() >= self.capacity {
            inner.purge_expired(now);
        }
        if record.user_id.is_none() && inner.anonymous.len() >= anonymous_cap {
            inner.evict_anonymous(batch);
        }
        if inner.records.len() >= self.capacity {
            inner.evict_anonymous(batch);
            if inner.records.len() >= self.capacity {
                return Err(StoreError::Full);
            }
        }
        inner.insert(*key, record.clone(), self.per_user_capacity, now);
        Ok(())
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        let now = self.clock.now();
        Ok(self.lock().live(key, now).map(Arc::clone))
    }

    async fn save(
        &self,
        key: &SessionKey,
        record: &SessionRecord,
        expected_version: u64,
    ) -> Result<SaveOutcome, StoreError> {
        let now = self.clock.now();
        let mut inner = self.lock();
        if let Some(outcome) = inner.check(key, expected_version, now) {
            return Ok(outcome);
        }
        inner.remove(key);
        let mut record = record.clone();
        record.version = expected_version + 1;
        inner.insert(*key, record, self.per_user_capacity, now);
        Ok(SaveOutcome::Saved)
    }

    async fn rotate(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        record: &SessionRecord,
        expected_version: u64,
    ) -> Result<SaveOutcome, StoreError> {
        let now = self.clock.now();
        let mut inner = self.lock();
        if let Some(outcome) = inner.check(old, expected_version, now) {
            return Ok(outcome);
        }
        if inner.live(new, now).is_some() {
            return Err(StoreError::Collision);
        }
        inner.remove(old);
        inner.remove(new);
        let mut record = record.clone();
        record.version = expected_version + 1;
        inner.insert(*new, record, self.per_user_capacity, now);
        Ok(SaveOutcome::Saved)
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool, StoreError> {
        Ok(self.lock().remove(key).is_some())
    }

    async fn delete_by_user(
        &self,
        user_id: &str,
        keep: Option<&SessionKey>,
    ) -> Result<u64, StoreError> {
        let now = self.clock.now();
        let mut inner = self.lock();
        let keys: Vec<SessionKey> = inner
            .by_user
            .get(user_id)
            .map(|keys| keys.iter().filter(|k| Some(*k) != keep).copied().collect())
            .unwrap_or_default();
        // Every key goes; only live sessions count as ended (as in the
        // other stores).
        let ended = keys
            .iter()
            .filter_map(|key| inner.remove(key))
            .filter(|record| record.expires_at() > now)
            .count();
        Ok(ended as u64)
    }

    async fn list_by_user(
        &self,
        user_id: &str,
    ) -> Result<Vec<(SessionKey, SessionRecord)>, StoreError> {
        let now = self.clock.now();
        let inner = self.lock();
        Ok(inner
            .by_user
            .get(user_id)
            .into_iter()
            .flatten()
            .filter_map(|key| {
                inner
                    .live(key, now)
                    .map(|r| (*key, SessionRecord::clone(r)))
            })
            .collect())
    }

    async fn delete_expired(&self, now: Timestamp) -> Result<u64, StoreError> {
        Ok(self.lock().purge_expired(now))
    }
}
