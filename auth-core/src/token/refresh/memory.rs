//! Refresh-token families in process memory.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use super::{Family, RefreshKey, RefreshStore, RefreshStoreError, Rotation};
use crate::clock::Timestamp;

/// Families in process memory: for tests and single-process apps (every
/// client must sign in again when the process restarts).
///
/// A family is a sign-in, one entry however often it rotates. Bounded:
/// one user holds at most `per_user_capacity` families (default 64; a new
/// sign-in ends that user's least recently used one, as the memory
/// session store does with sessions), and the store at most `capacity`
/// (default 100,000; when full, a new family first drops the dead ones,
/// then the least recently used tenth). A family so ended answers its
/// next refresh as an unknown token: its client signs in again.
/// [`purge`](RefreshStore::purge) removes the expired and idle families;
/// call it periodically. Revoked families go at once. `Debug` shows
/// counts only.
pub struct MemoryRefreshStore {
    inner: Mutex<Inner>,
    capacity: usize,
    per_user_capacity: usize,
}

/// Keyed by family ids (digests of a client's secret) and the app's user
/// ids: a seeded fast hash.
#[derive(Default)]
struct Inner {
    families: HashMap<Arc<str>, Entry, foldhash::fast::RandomState>,
    /// Each user's families.
    by_user: HashMap<String, HashSet<Arc<str>>, foldhash::fast::RandomState>,
}

struct Entry {
    family: Family,
    current: RefreshKey,
    /// The token spent by the latest rotation.
    previous: Option<Spent>,
}

struct Spent {
    key: RefreshKey,
    at: Timestamp,
    sealed_successor: Vec<u8>,
}

/// What a rotation is to do, decided from a read of the state. Split from
/// its application only so a test can build a racy store from them.
enum Decision {
    Invalid,
    Rotate(Arc<str>),
    Answer(Rotation),
    Revoke(Arc<str>),
}

impl Default for MemoryRefreshStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryRefreshStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("MemoryRefreshStore")
            .field("families", &inner.families.len())
            .finish()
    }
}

impl MemoryRefreshStore {
    /// Default capacity.
    pub const DEFAULT_CAPACITY: usize = 100_000;
    /// Default cap on one user's families.
    pub const DEFAULT_PER_USER_CAPACITY: usize = 64;

    /// An empty store with the default capacities.
    pub fn new() -> Self {
        Self {
            inner: Mutex::default(),
            capacity: Self::DEFAULT_CAPACITY,
            per_user_capacity: Self::DEFAULT_PER_USER_CAPACITY,
        }
    }

    /// Sets the capacity (at least 1).
    #[must_use]
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Sets the cap on one user's families (at least 1).
    #[must_use]
    pub fn per_user_capacity(mut self, capacity: usize) -> Self {
        self.per_user_capacity = capacity.max(1);
        self
    }

    /// How many families are held, live or not.
    pub fn len(&self) -> usize {
        self.lock().families.len()
    }

    /// Whether the store holds no family.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every change below is completed before the lock is released (no
        // panic can interrupt one halfway that matters more than losing
        // the store): keep serving.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Inner {
    fn decide(&self, presented: RefreshKey, now: Timestamp, grace: Option<Duration>) -> Decision {
        let Some((id, entry)) = self.families.get_key_value(presented.family_id().as_str()) else {
            return Decision::Invalid;
        };
        if !entry.family.is_live_at(now) {
            return Decision::Invalid;
        }
        if entry.current == presented {
            return Decision::Rotate(Arc::clone(id));
        }
        if let (Some(grace), Some(previous)) = (grace, &entry.previous)
            && previous.key == presented
            && now.duration_since(previous.at) < grace
        {
            return Decision::Answer(Rotation::Grace {
                family: entry.family.clone(),
                sealed_successor: previous.sealed_successor.clone(),
            });
        }
        Decision::Revoke(Arc::clone(id))
    }

    fn apply(
        &mut self,
        decision: Decision,
        presented: RefreshKey,
        next: RefreshKey,
        sealed_successor: &[u8],
        now: Timestamp,
    ) -> Result<Rotation, RefreshStoreError> {
        match decision {
            Decision::Invalid => Ok(Rotation::Invalid),
            Decision::Answer(rotation) => Ok(rotation),
            Decision::Revoke(id) => Ok(match self.remove(&id) {
                Some(entry) => Rotation::Reused {
                    family_id: entry.family.id,
                    user_id: entry.family.user_id,
                },
                None => Rotation::Invalid,
            }),
            Decision::Rotate(id) => {
                let Some(entry) = self.families.get_mut(&id) else {
                    return Ok(Rotation::Invalid);
                };
                entry.previous = Some(Spent {
                    key: presented,
                    at: now,
                    sealed_successor: sealed_successor.to_vec(),
                });
                entry.current = next;
                entry.family.last_used_at = now;
                Ok(Rotation::Rotated(entry.family.clone()))
            }
        }
    }

    /// Makes room for a new family of `user` at `now`: ends the user's
    /// least recently used family while the user holds `per_user` or more,
    /// and when the store holds `capacity` or more, drops the dead
    /// families, then (still full) the least recently used tenth.
    fn make_room(&mut self, user: &str, now: Timestamp, capacity: usize, per_user: usize) {
        while let Some(ids) = self.by_user.get(user)
            && ids.len() >= per_user
        {
            let oldest = ids
                .iter()
                .filter_map(|id| Some((self.families.get(id)?.family.last_used_at, id)))
                .min()
                .map(|(_, id)| Arc::clone(id));
            match oldest {
                Some(id) => {
                    self.remove(&id);
                }
                None => break,
            }
        }
        if self.families.len() < capacity {
            return;
        }
        self.purge(now);
        if self.families.len() < capacity {
            return;
        }
        let mut by_use: Vec<(Timestamp, Arc<str>)> = self
            .families
            .iter()
            .map(|(id, entry)| (entry.family.last_used_at, Arc::clone(id)))
            .collect();
        by_use.sort_unstable();
        let excess = self.families.len() + 1 - capacity;
        for (_, id) in by_use.iter().take(excess.max(capacity / 10)) {
            self.remove(id);
        }
    }

    /// Forgets the families dead at `now`; returns how many.
    fn purge(&mut self, now: Timestamp) -> usize {
        let dead: Vec<Arc<str>> = self
            .families
            .iter()
            .filter(|(_, entry)| !entry.family.is_live_at(now))
            .map(|(id, _)| Arc::clone(id))
            .collect();
        for id in &dead {
            self.remove(id);
        }
        dead.len()
    }

    /// Forgets a family.
    fn remove(&mut self, id: &str) -> Option<Entry> {
        let entry = self.families.remove(id)?;
        if let Some(ids) = self.by_user.get_mut(entry.family.user_id.as_str()) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_user.remove(entry.family.user_id.as_str());
            }
        }
        Some(entry)
    }
}

#[async_trait]
impl RefreshStore for MemoryRefreshStore {
    async fn create(&self, family: &Family, first: RefreshKey) -> Result<(), RefreshStoreError> {
        debug_assert_eq!(first.family_id(), family.id, "a key of another family");
        let mut inner = self.lock();
        if inner.families.contains_key(family.id.as_str()) {
            return Err(RefreshStoreError::Collision);
        }
        inner.make_room(
            &family.user_id,
            family.created_at,
            self.capacity,
            self.per_user_capacity,
        );
        let id: Arc<str> = Arc::from(family.id.as_str());
        inner
            .by_user
            .entry(family.user_id.clone())
            .or_default()
            .insert(Arc::clone(&id));
        inner.families.insert(
            id,
            Entry {
                family: family.clone(),
                current: first,
                previous: None,
            },
        );
        Ok(())
    }

    async fn rotate(
        &self,
        presented: RefreshKey,
        next: RefreshKey,
        sealed_successor: &[u8],
        now: Timestamp,
        grace: Option<Duration>,
    ) -> Result<Rotation, RefreshStoreError> {
        debug_assert_eq!(
            next.family_id(),
            presented.family_id(),
            "a successor of another family"
        );
        // One lock for the read and the write: atomic.
        let mut inner = self.lock();
        let decision = inner.decide(presented, now, grace);
        inner.apply(decision, presented, next, sealed_successor, now)
    }

    async fn revoke_by_token(
        &self,
        token: RefreshKey,
    ) -> Result<Option<(String, String)>, RefreshStoreError> {
        Ok(self
            .lock()
            .remove(&token.family_id())
            .map(|entry| (entry.family.id, entry.family.user_id)))
    }

    async fn revoke_family(&self, family_id: &str) -> Result<bool, RefreshStoreError> {
        Ok(self.lock().remove(family_id).is_some())
    }

    async fn revoke_user(&self, user_id: &str) -> Result<u64, RefreshStoreError> {
        let mut inner = self.lock();
        let Some(ids) = inner.by_user.remove(user_id) else {
            return Ok(0);
        };
        let mut revoked = 0;
        for id in ids {
            revoked += u64::from(inner.remove(&id).is_some());
        }
        Ok(revoked)
    }

    async fn is_live(&self, family_id: &str, now: Timestamp) -> Result<bool, RefreshStoreError> {
        Ok(self
            .lock()
            .families
            .get(family_id)
            .is_some_and(|entry| entry.family.is_live_at(now)))
    }

    fn reads_families(&self) -> bool {
        true
    }

    async fn family(&self, family_id: &str) -> Result<Option<Family>, RefreshStoreError> {
        Ok(self
            .lock()
            .families
            .get(family_id)
            .map(|entry| entry.family.clone()))
    }

    async fn purge(&self, now: Timestamp) -> Result<u64, RefreshStoreError> {
        Ok(self.lock().purge(now) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::refresh::RefreshToken;

    const T0: Timestamp = Timestamp::from_unix_millis(1_700_000_000_000);

    fn family(first: &RefreshToken, user: &str) -> Family {
        Family {
            id: first.key().family_id(),
            user_id: user.into(),
            amr: vec!["pwd".into()],
            stamp: "stamp".into(),
            created_at: T0,
            expires_at: T0.saturating_add(Duration::from_secs(3_600)),
            idle_timeout: Duration::from_secs(600),
            last_used_at: T0,
        }
    }

    /// A family holds one entry however often it rotates; revocation and
    /// purge forget it and the user's index; `Debug` shows counts only.
    #[tokio::test]
    async fn nothing_is_left_behind() {
        let store = MemoryRefreshStore::new();
        let mut current = RefreshToken::generate().unwrap();
        store
            .create(&family(&current, "user-secret-id"), current.key())
            .await
            .unwrap();
        for n in 1..=3 {
            let next = current.successor().unwrap();
            let now = T0.saturating_add(Duration::from_secs(n));
            let rotated = store
                .rotate(current.key(), next.key(), b"s", now, None)
                .await
                .unwrap();
            assert!(matches!(rotated, Rotation::Rotated(_)));
            current = next;
        }
        let other = RefreshToken::generate().unwrap();
        store
            .create(&family(&other, "other"), other.key())
            .await
            .unwrap();
        let debug = format!("{store:?}");
        assert!(debug.contains("families: 2"), "{debug}");
        assert!(!debug.contains("user-secret-id"));

        assert_eq!(store.revoke_user("user-secret-id").await.unwrap(), 1);
        assert!(!store.lock().by_user.contains_key("user-secret-id"));
        let idle = T0.saturating_add(Duration::from_secs(600));
        assert_eq!(store.purge(idle).await.unwrap(), 1);
        let inner = store.lock();
        assert!(inner.families.is_empty() && inner.by_user.is_empty());
    }

    /// One user holds at most `per_user_capacity` families: a new sign-in
    /// ends the least recently used one, never a recently refreshed one;
    /// the store holds at most `capacity`, dead families going first.
    #[tokio::test]
    async fn families_are_bounded_per_user_and_in_all() {
        let store = MemoryRefreshStore::new().per_user_capacity(3);
        let mut tokens = Vec::new();
        for n in 0..3_u64 {
            let token = RefreshToken::generate().unwrap();
            let mut f = family(&token, "alice");
            f.last_used_at = T0.saturating_add(Duration::from_secs(n));
            store.create(&f, token.key()).await.unwrap();
            tokens.push(token);
        }
        // The first family is refreshed: the second is now the least
        // recently used.
        let next = tokens[0].successor().unwrap();
        let at = T0.saturating_add(Duration::from_secs(10));
        assert!(matches!(
            store
                .rotate(tokens[0].key(), next.key(), b"", at, None)
                .await
                .unwrap(),
            Rotation::Rotated(_)
        ));
        let fourth = RefreshToken::generate().unwrap();
        store
            .create(&family(&fourth, "alice"), fourth.key())
            .await
            .unwrap();
        assert_eq!(store.len(), 3);
        let live = |token: &RefreshToken| {
            store
                .lock()
                .families
                .contains_key(token.key().family_id().as_str())
        };
        assert!(live(&next) && live(&tokens[2]) && live(&fourth));
        assert!(!live(&tokens[1]), "the least recently used one ended");
        // Another user is not touched by alice's cap.
        let bob = RefreshToken::generate().unwrap();
        store.create(&family(&bob, "bob"), bob.key()).await.unwrap();
        assert_eq!(store.len(), 4);

        // In all: a full store drops dead families first, then the least
        // recently used.
        let store = MemoryRefreshStore::new().capacity(4);
        let mut users = Vec::new();
        for n in 0..4_u64 {
            let token = RefreshToken::generate().unwrap();
            let mut f = family(&token, &format!("user-{n}"));
            f.last_used_at = T0.saturating_add(Duration::from_secs(n));
            if n == 2 {
                f.expires_at = T0;
            }
            store.create(&f, token.key()).await.unwrap();
            users.push(token);
        }
        let fifth = RefreshToken::generate().unwrap();
        let mut f = family(&fifth, "user-4");
        f.created_at = T0.saturating_add(Duration::from_secs(5));
        f.last_used_at = f.created_at;
        store.create(&f, fifth.key()).await.unwrap();
        let live = |token: &RefreshToken| {
            store
                .lock()
                .families
                .contains_key(token.key().family_id().as_str())
        };
        assert!(!live(&users[2]), "the dead one went first");
        assert!(users.iter().enumerate().all(|(n, t)| n == 2 || live(t)));
        let sixth = RefreshToken::generate().unwrap();
        store
            .create(&family(&sixth, "user-5"), sixth.key())
            .await
            .unwrap();
        assert!(!live(&users[0]), "then the least recently used");
        assert!(live(&fifth) && live(&sixth) && store.len() <= 4);
    }

    /// A store whose rotation reads, then writes in a second step: right
    /// one call at a time, wrong under concurrency (two rotations of one
    /// token both win). The suite must catch it.
    #[cfg(feature = "testing")]
    #[derive(Debug, Default)]
    struct RacyRotate(MemoryRefreshStore);

    #[cfg(feature = "testing")]
    #[async_trait]
    impl RefreshStore for RacyRotate {
        async fn create(
            &self,
            family: &Family,
            first: RefreshKey,
        ) -> Result<(), RefreshStoreError> {
            self.0.create(family, first).await
        }

        async fn rotate(
            &self,
            presented: RefreshKey,
            next: RefreshKey,
            sealed_successor: &[u8],
            now: Timestamp,
            grace: Option<Duration>,
        ) -> Result<Rotation, RefreshStoreError> {
            let decision = self.0.lock().decide(presented, now, grace);
            // A round trip to the database between the read and the write.
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.0
                .lock()
                .apply(decision, presented, next, sealed_successor, now)
        }

        async fn revoke_by_token(
            &self,
            token: RefreshKey,
        ) -> Result<Option<(String, String)>, RefreshStoreError> {
            self.0.revoke_by_token(token).await
        }

        async fn revoke_family(&self, family_id: &str) -> Result<bool, RefreshStoreError> {
            self.0.revoke_family(family_id).await
        }

        async fn revoke_user(&self, user_id: &str) -> Result<u64, RefreshStoreError> {
            self.0.revoke_user(user_id).await
        }

        async fn is_live(
            &self,
            family_id: &str,
            now: Timestamp,
        ) -> Result<bool, RefreshStoreError> {
            self.0.is_live(family_id, now).await
        }

        async fn purge(&self, now: Timestamp) -> Result<u64, RefreshStoreError> {
            self.0.purge(now).await
        }
    }

    /// The suite passes the memory store.
    #[cfg(feature = "testing")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_suite_passes_the_memory_store() {
        crate::testing::refresh_store_suite(
            Arc::new(MemoryRefreshStore::new()),
            crate::testing::RefreshStoreCaps::default(),
        )
        .await;
    }

    /// The suite fails a store whose rotation is read-then-write.
    #[cfg(feature = "testing")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[should_panic(expected = "case `concurrent_rotations_one_wins` failed")]
    async fn the_suite_catches_a_racy_rotation() {
        crate::testing::refresh_store_suite(
            Arc::new(RacyRotate::default()),
            crate::testing::RefreshStoreCaps::default(),
        )
        .await;
    }

    /// The racy store also branches with a grace period on: the grace case
    /// of the suite catches that on its own.
    #[cfg(feature = "testing")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[should_panic(expected = "never two")]
    async fn the_grace_case_catches_a_racy_rotation() {
        crate::testing::refresh_store::concurrent_rotations_with_grace(
            Arc::new(RacyRotate::default()),
            crate::testing::RefreshStoreCaps::default(),
        )
        .await;
    }
}
