//! Single-use tokens in process memory.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::{Purpose, TokenKey, TokenRecord, TokenStore, TokenStoreError};
use crate::clock::Timestamp;

/// Tokens in process memory: for tests and single-process apps (tokens are
/// lost when the process exits).
///
/// Bounded: at most `capacity` tokens (default 100,000). An insert into a
/// full store first drops the expired tokens (by the latest `now` the store
/// was given, in [`consume`](TokenStore::consume) or
/// [`delete_expired`](TokenStore::delete_expired)), then, if it is still
/// full, the tokens issued earliest (their expiry less their purpose's
/// lifetime; a tenth of the capacity at a time). A flood of token requests
/// can therefore void older links, never grow the process, and never the
/// link just mailed (a fresh reset link expires sooner than a day-old
/// verification link, but was issued later). `Debug` shows counts only.
pub struct MemoryTokenStore {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Default)]
struct Inner {
    tokens: HashMap<TokenKey, TokenRecord>,
    /// The keys of each user's tokens, per purpose.
    by_user: HashMap<(Purpose, String), HashSet<TokenKey>>,
    /// The latest `now` a caller passed: what "expired" means when an
    /// insert makes room (an insert is given no time).
    latest_now: Option<Timestamp>,
}

impl Default for MemoryTokenStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryTokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("MemoryTokenStore")
            .field("tokens", &inner.tokens.len())
            .field("users", &inner.by_user.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl MemoryTokenStore {
    /// Default capacity.
    pub const DEFAULT_CAPACITY: usize = 100_000;

    /// An empty store with the default capacity.
    pub fn new() -> Self {
        Self {
            inner: Mutex::default(),
            capacity: Self::DEFAULT_CAPACITY,
        }
    }

    /// Sets the capacity (at least 1).
    #[must_use]
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// How many tokens are held, live or expired.
    pub fn len(&self) -> usize {
        self.lock().tokens.len()
    }

    /// Whether the store holds no token.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps inconsistent
        // in a way that matters more than losing the store: keep serving.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Inner {
    fn saw(&mut self, now: Timestamp) {
        self.latest_now = self.latest_now.max(Some(now));
    }

    fn remove(&mut self, key: &TokenKey) -> Option<TokenRecord> {
        let record = self.tokens.remove(key)?;
        let index = (record.purpose, record.user_id.clone());
        if let Some(keys) = self.by_user.get_mut(&index) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_user.remove(&index);
            }
        }
        Some(record)
    }

    fn purge_expired(&mut self, now: Timestamp) -> u64 {
        let expired: Vec<TokenKey> = self
            .tokens
            .iter()
            .filter(|(_, r)| r.expires_at <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in &expired {
            self.remove(key);
        }
        expired.len() as u64
    }

    /// Drops the `count` tokens issued earliest.
    fn evict_oldest(&mut self, count: usize) {
        let mut by_issue: Vec<(Timestamp, TokenKey)> = self
            .tokens
            .iter()
            .map(|(k, r)| (r.expires_at.saturating_sub(r.purpose.lifetime()), *k))
            .collect();
        let count = count.min(by_issue.len());
        if count == 0 {
            return;
        }
        by_issue.select_nth_unstable_by_key(count - 1, |(issued_at, _)| *issued_at);
        for (_, key) in by_issue.into_iter().take(count) {
            self.remove(&key);
        }
    }
}

#[async_trait]
impl TokenStore for MemoryTokenStore {
    async fn insert(&self, key: &TokenKey, record: &TokenRecord) -> Result<(), TokenStoreError> {
        let mut inner = self.lock();
        if inner.tokens.contains_key(key) {
            return Err(TokenStoreError::Collision);
        }
        if inner.tokens.len() >= self.capacity {
            if let Some(now) = inner.latest_now {
                inner.purge_expired(now);
            }
            if inner.tokens.len() >= self.capacity {
                // A tenth of the capacity at a time: the sort is amortised.
                inner.evict_oldest((self.capacity / 10).max(1));
            }
        }
        inner
            .by_user
            .entry((record.purpose, record.user_id.clone()))
            .or_default()
            .insert(*key);
        inner.tokens.insert(*key, record.clone());
        Ok(())
    }

    async fn consume(
        &self,
        key: &TokenKey,
        purpose: Purpose,
        now: Timestamp,
    ) -> Result<Option<TokenRecord>, TokenStoreError> {
        let mut inner = self.lock();
        inner.saw(now);
        // Taken whatever it is for: a token shown for another purpose was
        // exposed, and an expired one is of no use.
        Ok(inner.remove(key).and_then(|r| r.usable(purpose, now)))
    }

    async fn peek(
        &self,
        key: &TokenKey,
        purpose: Purpose,
        now: Timestamp,
    ) -> Result<Option<TokenRecord>, TokenStoreError> {
        let inner = self.lock();
        Ok(inner
            .tokens
            .get(key)
            .cloned()
            .and_then(|r| r.usable(purpose, now)))
    }

    async fn delete_for_user(
        &self,
        user_id: &str,
        purpose: Purpose,
    ) -> Result<u64, TokenStoreError> {
        let mut inner = self.lock();
        let Some(keys) = inner.by_user.remove(&(purpose, user_id.to_owned())) else {
            return Ok(0);
        };
        for key in &keys {
            inner.tokens.remove(key);
        }
        Ok(keys.len() as u64)
    }

    async fn delete_expired(&self, now: Timestamp) -> Result<u64, TokenStoreError> {
        let mut inner = self.lock();
        inner.saw(now);
        Ok(inner.purge_expired(now))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn key(n: u32) -> TokenKey {
        let mut bytes = [0u8; 32];
        bytes[..4].copy_from_slice(&n.to_be_bytes());
        TokenKey::from_bytes(bytes)
    }

    fn record(user: &str, expires_at: Timestamp) -> TokenRecord {
        TokenRecord {
            purpose: Purpose::PasswordReset,
            user_id: user.to_owned(),
            binding: "alice@example.org".to_owned(),
            expires_at,
        }
    }

    const T0: Timestamp = Timestamp::from_unix_millis(1_700_000_000_000);

    fn at(secs: u64) -> Timestamp {
        T0.saturating_add(Duration::from_secs(secs))
    }

    /// A full store makes room with the tokens issued earliest, not those
    /// that expire soonest: a reset link just mailed (30 minutes) outlives
    /// a store full of day-long verification links issued before it.
    #[tokio::test]
    async fn a_full_store_keeps_the_link_just_mailed() {
        let store = MemoryTokenStore::new().capacity(10);
        let issued = |purpose: Purpose, secs: u64| TokenRecord {
            purpose,
            user_id: "u".to_owned(),
            binding: String::new(),
            expires_at: at(secs).saturating_add(purpose.lifetime()),
        };
        for n in 0..10 {
            store
                .insert(&key(n), &issued(Purpose::EmailVerification, u64::from(n)))
                .await
                .unwrap();
        }
        store
            .insert(&key(10), &issued(Purpose::PasswordReset, 60))
            .await
            .unwrap();
        store
            .insert(&key(11), &issued(Purpose::EmailVerification, 120))
            .await
            .unwrap();
        assert!(store.len() <= 10);
        let reset = store
            .consume(&key(10), Purpose::PasswordReset, at(61))
            .await
            .unwrap();
        assert!(reset.is_some(), "the reset link just mailed was evicted");
    }

    /// A full store drops the expired tokens first (by the latest `now` it
    /// saw), then the tenth issued earliest, and never holds more than its
    /// capacity.
    #[tokio::test]
    async fn a_full_store_drops_expired_then_oldest() {
        let store = MemoryTokenStore::new().capacity(20);
        // 5 tokens expiring at 1..=5 s, 15 expiring at 100..=114 s.
        for n in 0..5 {
            store
                .insert(&key(n), &record("a", at(u64::from(n) + 1)))
                .await
                .unwrap();
        }
        for n in 5..20 {
            store
                .insert(&key(n), &record("b", at(u64::from(n) + 95)))
                .await
                .unwrap();
        }
        assert_eq!(store.len(), 20);
        // The store has seen t = 3 s: tokens 0, 1, 2 are expired.
        assert_eq!(
            store
                .consume(&key(99), Purpose::PasswordReset, at(3))
                .await
                .unwrap(),
            None
        );
        store.insert(&key(20), &record("c", at(200))).await.unwrap();
        assert_eq!(store.len(), 18, "the three expired ones went");
        for n in 0..3 {
            assert!(!store.lock().tokens.contains_key(&key(n)));
        }
        // Still room: nothing else goes.
        store.insert(&key(21), &record("c", at(201))).await.unwrap();
        store.insert(&key(22), &record("c", at(202))).await.unwrap();
        assert_eq!(store.len(), 20);
        // Full with live tokens: the two issued earliest (a tenth) go.
        store.insert(&key(23), &record("c", at(203))).await.unwrap();
        assert_eq!(store.len(), 19);
        assert!(!store.lock().tokens.contains_key(&key(3)));
        assert!(!store.lock().tokens.contains_key(&key(4)));
        assert!(store.lock().tokens.contains_key(&key(5)));
        // The per-user index follows: user `a` has nothing left.
        assert_eq!(
            store
                .delete_for_user("a", Purpose::PasswordReset)
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            store
                .delete_for_user("b", Purpose::PasswordReset)
                .await
                .unwrap(),
            15
        );
        assert_eq!(store.len(), 4);

        for n in 100..1_000 {
            store.insert(&key(n), &record("d", at(300))).await.unwrap();
            assert!(store.len() <= 20);
        }
    }

    /// `Debug` shows counts, never a user id or binding.
    #[tokio::test]
    async fn debug_shows_counts_only() {
        let store = MemoryTokenStore::new();
        store
            .insert(&key(1), &record("user-secret-id", at(10)))
            .await
            .unwrap();
        let debug = format!("{store:?}");
        assert!(debug.contains("tokens: 1"), "{debug}");
        assert!(!debug.contains("user-secret-id") && !debug.contains("example.org"));
    }
}
