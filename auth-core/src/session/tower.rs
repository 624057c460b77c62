//! Any `tower_sessions_core::SessionStore` (0.15) as a [`SessionStore`], so
//! the stores written for tower-sessions (DynamoDB, MongoDB, ...) work with
//! every framework adapter.
//!
//! Limits, inherent to the tower-sessions trait (load, save, delete by id):
//!
//! * It cannot list or delete by user: [`SessionStore::list_by_user`] and
//!   [`SessionStore::delete_by_user`] answer [`StoreError::Unsupported`].
//!   "Sign out everywhere", factor changes and password changes still end
//!   every other session through the session stamp, which includes the
//!   account's revocation epoch for this store
//!   ([`SessionStore::revokes_by_user`] is `false`); the
//!   [`Auth`](crate::Auth) builder configures that.
//! * It has no compare-and-set and its save is an upsert. This adapter
//!   serialises writes to one session within the process (striped locks),
//!   so in **one instance** concurrent requests never lose a write nor
//!   resurrect a destroyed session. Across several instances, a write racing
//!   a logout on another instance can re-create the session, and a rotation
//!   whose final delete fails leaves the old ID valid: this bridge is for
//!   single-instance deployments. Use the PostgreSQL or Redis store when
//!   several instances share sessions.
//! * Expired records are removed by the tower-sessions store itself (its
//!   `ExpiredDeletion`), so [`SessionStore::delete_expired`] returns 0.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{Mutex, MutexGuard};
use tower_sessions_core::session::{Id, Record};

use super::{SaveOutcome, SessionKey, SessionRecord, SessionStore, StoreError};
use crate::clock::{Clock, SystemClock, Timestamp};

/// The data-map entry holding our record inside a tower-sessions record.
const FIELD: &str = "auth_core_session";
/// Number of lock stripes serialising writes per session key.
const STRIPES: usize = 64;

/// Adapts a tower-sessions store; see the module docs for its limits.
/// `Debug` names the wrapped store's type only: a store's own `Debug` may
/// print its records (tower-sessions' `MemoryStore` does), and ours hold
/// stamps and app data.
pub struct TowerSessionsStore<S> {
    inner: S,
    clock: Arc<dyn Clock>,
    stripes: Vec<Mutex<()>>,
}

impl<S> std::fmt::Debug for TowerSessionsStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TowerSessionsStore")
            .field("inner", &std::any::type_name::<S>())
            .finish_non_exhaustive()
    }
}

impl<S: tower_sessions_core::SessionStore> TowerSessionsStore<S> {
    /// Wraps `store`.
    pub fn new(store: S) -> Self {
        Self {
            inner: store,
            clock: Arc::new(SystemClock),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    /// Judges expiry by `clock` instead of the system clock.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn stripe(key: &SessionKey) -> usize {
        usize::from(key.as_bytes()[0]) % STRIPES
    }

    async fn lock(&self, key: &SessionKey) -> MutexGuard<'_, ()> {
        self.stripes[Self::stripe(key)].lock().await
    }

    /// Locks the stripes of two keys in a fixed order (no deadlock).
    async fn lock_two(
        &self,
        a: &SessionKey,
        b: &SessionKey,
    ) -> (MutexGuard<'_, ()>, Option<MutexGuard<'_, ()>>) {
        let (sa, sb) = (Self::stripe(a), Self::stripe(b));
        if sa == sb {
            return (self.stripes[sa].lock().await, None);
        }
        let (first, second) = if sa < sb { (sa, sb) } else { (sb, sa) };
        let first = self.stripes[first].lock().await;
        let second = self.stripes[second].lock().await;
        (first, Some(second))
    }

    /// The live record under `key`, by this adapter's clock.
    async fn get(&self, key: &SessionKey) -> Result<Option<SessionRecord>, StoreError> {
        let Some(stored) = self.inner.load(&id(key)).await.map_err(backend)? else {
            return Ok(None);
        };
        let Some(value) = stored.data.get(FIELD) else {
            return Ok(None);
        };
        let record: SessionRecord =
            serde_json::from_value(value.clone()).map_err(StoreError::Corrupt)?;
        Ok((record.expires_at() > self.clock.now()).then_some(record))
    }

    async fn put(&self, key: &SessionKey, record: &SessionRecord) -> Result<(), StoreError> {
        let value = serde_json::to_value(record).map_err(StoreError::Corrupt)?;
        let expiry = time::OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(record.expires_at().as_unix_millis()) * 1_000_000,
        )
        .map_err(|e| StoreError::Backend(Box::new(e)))?;
        let stored = Record {
            id: id(key),
            data: [(FIELD.to_owned(), value)].into_iter().collect(),
            expiry_date: expiry,
        };
        self.inner.save(&stored).await.map_err(backend)
    }
}

/// Our key, truncated to the 128 bits of a tower-sessions id.
fn id(key: &SessionKey) -> Id {
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&key.as_bytes()[..16]);
    Id(i128::from_be_bytes(bytes))
}

fn backend(error: tower_sessions_core::session_store::Error) -> StoreError {
    StoreError::Backend(Box::new(error))
}

#[async_trait]
impl<S: tower_sessions_core::SessionStore> SessionStore for TowerSessionsStore<S> {
    async fn create(&self, key: &SessionKey, record: &SessionRecord) -> Result<(), StoreError> {
        let _guard = self.lock(key).await;
        if self.get(key).await?.is_some() {
            return Err(StoreError::Collision);
        }
        self.put(key, record).await
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        Ok(self.get(key).await?.map(Arc::new))
    }

    async fn save(
        &self,
        key: &SessionKey,
        record: &SessionRecord,
        expected_version: u64,
    ) -> Result<SaveOutcome, StoreError> {
        let _guard = self.lock(key).await;
        match self.get(key).await? {
            None => Ok(SaveOutcome::Missing),
            Some(current) if current.version != expected_version => Ok(SaveOutcome::Conflict),
            Some(_) => {
                let mut next = record.clone();
                next.version = expected_version.wrapping_add(1);
                self.put(key, &next).await?;
                Ok(SaveOutcome::Saved)
            }
        }
    }

    async fn rotate(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        record: &SessionRecord,
        expected_version: u64,
    ) -> Result<SaveOutcome, StoreError> {
        let _guards = self.lock_two(old, new).await;
        match self.get(old).await? {
            None => return Ok(SaveOutcome::Missing),
            Some(current) if current.version != expected_version => {
                return Ok(SaveOutcome::Conflict);
            }
            Some(_) => {}
        }
        if self.get(new).await?.is_some() {
            return Err(StoreError::Collision);
        }
        let mut next = record.clone();
        next.version = expected_version.wrapping_add(1);
        self.put(new, &next).await?;
        self.inner.delete(&id(old)).await.map_err(backend)?;
        Ok(SaveOutcome::Saved)
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool, StoreError> {
        let _guard = self.lock(key).await;
        let existed = self.get(key).await?.is_some();
        self.inner.delete(&id(key)).await.map_err(backend)?;
        Ok(existed)
    }

    async fn delete_by_user(
        &self,
        _user_id: &str,
        _keep: Option<&SessionKey>,
    ) -> Result<u64, StoreError> {
        Err(StoreError::Unsupported)
    }

    async fn list_by_user(
        &self,
        _user_id: &str,
    ) -> Result<Vec<(SessionKey, SessionRecord)>, StoreError> {
        Err(StoreError::Unsupported)
    }

    async fn delete_expired(&self, _now: Timestamp) -> Result<u64, StoreError> {
        Ok(0)
    }

    fn revokes_by_user(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store whose `Debug` prints everything it holds, as tower-sessions'
    /// `MemoryStore` does.
    #[derive(Debug, Clone)]
    struct Chatty(String);

    #[test]
    fn debug_does_not_print_the_wrapped_store() {
        let store = TowerSessionsStore {
            inner: Chatty("stamp-secret".into()),
            clock: Arc::new(SystemClock),
            stripes: Vec::new(),
        };
        assert!(format!("{:?}", store.inner).contains(&store.inner.0));
        let printed = format!("{store:?}");
        assert!(printed.contains("Chatty"), "{printed}");
        assert!(!printed.contains("stamp-secret"), "{printed}");
    }
}
