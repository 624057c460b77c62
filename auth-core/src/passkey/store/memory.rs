//! Passkeys in process memory.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::{PasskeyStore, PasskeyStoreError, StoredPasskey};
use crate::clock::Timestamp;

/// Passkeys in process memory: for tests and demos only, since passkeys
/// are durable account data (a restart forgets every registered passkey).
///
/// Not capped: each passkey a user adds takes a [`FactorProof`](crate::FactorProof)
/// (the password, and a code once a second factor is on).
/// `Debug` shows counts only.
pub struct MemoryPasskeyStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    passkeys: HashMap<Vec<u8>, StoredPasskey>,
    /// Each user's credential ids, by the app's user id (a seeded fast
    /// hash: no client chooses those).
    by_user: HashMap<String, HashSet<Vec<u8>>, foldhash::fast::RandomState>,
}

impl Default for MemoryPasskeyStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryPasskeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("MemoryPasskeyStore")
            .field("passkeys", &inner.passkeys.len())
            .field("users", &inner.by_user.len())
            .finish()
    }
}

impl MemoryPasskeyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            inner: Mutex::default(),
        }
    }

    /// How many passkeys are held, of all users.
    pub fn len(&self) -> usize {
        self.lock().passkeys.len()
    }

    /// Whether the store holds no passkey.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every change below completes before the lock is released: keep
        // serving after a panic elsewhere.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Inner {
    /// The user's passkey with this id, if it is the user's.
    fn owned_mut(&mut self, user_id: &str, credential_id: &[u8]) -> Option<&mut StoredPasskey> {
        self.passkeys
            .get_mut(credential_id)
            .filter(|passkey| passkey.user_id == user_id)
    }

    /// The compare-and-set of [`PasskeyStore::record_use`].
    fn record_use(
        &mut self,
        credential_id: &[u8],
        expected: &str,
        credential: &str,
        backed_up: bool,
        used_at: Timestamp,
    ) -> bool {
        match self.passkeys.get_mut(credential_id) {
            Some(passkey) if passkey.credential == expected => {
                passkey.credential = credential.to_owned();
                passkey.backed_up = backed_up;
                passkey.last_used_at = Some(used_at);
                true
            }
            _ => false,
        }
    }

    /// Forgets a passkey and its entry in the user's index.
    fn remove(&mut self, credential_id: &[u8]) -> Option<StoredPasskey> {
        let passkey = self.passkeys.remove(credential_id)?;
        if let Some(ids) = self.by_user.get_mut(passkey.user_id.as_str()) {
            ids.remove(credential_id);
            if ids.is_empty() {
                self.by_user.remove(passkey.user_id.as_str());
            }
        }
        Some(passkey)
    }
}

#[async_trait]
impl PasskeyStore for MemoryPasskeyStore {
    async fn insert(&self, passkey: &StoredPasskey) -> Result<(), PasskeyStoreError> {
        let mut inner = self.lock();
        if inner.passkeys.contains_key(&passkey.credential_id) {
            return Err(PasskeyStoreError::CredentialTaken);
        }
        inner
            .by_user
            .entry(passkey.user_id.clone())
            .or_default()
            .insert(passkey.credential_id.clone());
        inner
            .passkeys
            .insert(passkey.credential_id.clone(), passkey.clone());
        Ok(())
    }

    async fn list(&self, user_id: &str) -> Result<Vec<StoredPasskey>, PasskeyStoreError> {
        let inner = self.lock();
        let mut passkeys: Vec<StoredPasskey> = inner
            .by_user
            .get(user_id)
            .into_iter()
            .flatten()
            .filter_map(|id| inner.passkeys.get(id).cloned())
            .collect();
        drop(inner);
        passkeys.sort_by(|a, b| {
            (a.created_at, &a.credential_id).cmp(&(b.created_at, &b.credential_id))
        });
        Ok(passkeys)
    }

    async fn find(&self, credential_id: &[u8]) -> Result<Option<StoredPasskey>, PasskeyStoreError> {
        Ok(self.lock().passkeys.get(credential_id).cloned())
    }

    async fn record_use(
        &self,
        credential_id: &[u8],
        expected: &str,
        credential: &str,
        backed_up: bool,
        used_at: Timestamp,
    ) -> Result<bool, PasskeyStoreError> {
        // One lock for the comparison and the write: atomic.
        Ok(self
            .lock()
            .record_use(credential_id, expected, credential, backed_up, used_at))
    }

    async fn rename(
        &self,
        user_id: &str,
        credential_id: &[u8],
        name: &str,
    ) -> Result<bool, PasskeyStoreError> {
        let mut inner = self.lock();
        Ok(match inner.owned_mut(user_id, credential_id) {
            Some(passkey) => {
                passkey.name = name.to_owned();
                true
            }
            None => false,
        })
    }

    async fn delete(&self, user_id: &str, credential_id: &[u8]) -> Result<bool, PasskeyStoreError> {
        let mut inner = self.lock();
        if inner.owned_mut(user_id, credential_id).is_none() {
            return Ok(false);
        }
        Ok(inner.remove(credential_id).is_some())
    }

    async fn count(&self, user_id: &str) -> Result<u64, PasskeyStoreError> {
        Ok(self
            .lock()
            .by_user
            .get(user_id)
            .map_or(0, |ids| ids.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_unix_millis(1_700_000_000_000);

    fn passkey(id: u8, user: &str) -> StoredPasskey {
        StoredPasskey {
            credential_id: vec![id; 16],
            user_id: user.into(),
            name: "Phone".into(),
            credential: "{}".into(),
            created_at: T0,
            last_used_at: None,
            backup_eligible: false,
            backed_up: false,
        }
    }

    /// Deletion forgets the user's index entry; `Debug` shows counts only.
    #[tokio::test]
    async fn nothing_is_left_behind() {
        let store = MemoryPasskeyStore::new();
        store.insert(&passkey(1, "user-secret-id")).await.unwrap();
        store.insert(&passkey(2, "user-secret-id")).await.unwrap();
        store.insert(&passkey(3, "other")).await.unwrap();
        let debug = format!("{store:?}");
        assert!(
            debug.contains("passkeys: 3") && debug.contains("users: 2"),
            "{debug}"
        );
        assert!(!debug.contains("user-secret-id"));
        assert_eq!(store.len(), 3);
        for id in [1, 2] {
            assert!(store.delete("user-secret-id", &[id; 16]).await.unwrap());
        }
        assert!(!store.lock().by_user.contains_key("user-secret-id"));
        assert!(store.delete("other", &[3; 16]).await.unwrap());
        assert!(store.is_empty() && store.lock().by_user.is_empty());
    }

    /// What a deliberately broken store gets wrong.
    #[cfg(feature = "testing")]
    #[derive(Debug, Clone, Copy)]
    enum Flaw {
        /// `record_use` writes whatever `expected` says.
        IgnoresExpected,
        /// `record_use` compares, then writes in a second step: right one
        /// call at a time, wrong under concurrency.
        RacyRecordUse,
        /// `insert` overwrites an existing credential id.
        OverwritesOnInsert,
        /// `rename` renames whoever owns the id.
        RenameIgnoresUser,
        /// `delete` deletes whoever owns the id.
        DeleteIgnoresUser,
    }

    /// The memory store with one flaw. The suite must catch each.
    #[cfg(feature = "testing")]
    #[derive(Debug)]
    struct Broken(MemoryPasskeyStore, Flaw);

    #[cfg(feature = "testing")]
    #[async_trait]
    impl PasskeyStore for Broken {
        async fn insert(&self, passkey: &StoredPasskey) -> Result<(), PasskeyStoreError> {
            if let Flaw::OverwritesOnInsert = self.1 {
                self.0.lock().remove(&passkey.credential_id);
            }
            self.0.insert(passkey).await
        }

        async fn list(&self, user_id: &str) -> Result<Vec<StoredPasskey>, PasskeyStoreError> {
            self.0.list(user_id).await
        }

        async fn find(
            &self,
            credential_id: &[u8],
        ) -> Result<Option<StoredPasskey>, PasskeyStoreError> {
            self.0.find(credential_id).await
        }

        async fn record_use(
            &self,
            credential_id: &[u8],
            expected: &str,
            credential: &str,
            backed_up: bool,
            used_at: Timestamp,
        ) -> Result<bool, PasskeyStoreError> {
            match self.1 {
                Flaw::IgnoresExpected => {
                    let current = self.0.find(credential_id).await?;
                    let Some(current) = current else {
                        return Ok(false);
                    };
                    Ok(self.0.lock().record_use(
                        credential_id,
                        &current.credential,
                        credential,
                        backed_up,
                        used_at,
                    ))
                }
                Flaw::RacyRecordUse => {
                    let matches = self
                        .0
                        .find(credential_id)
                        .await?
                        .is_some_and(|passkey| passkey.credential == expected);
                    if !matches {
                        return Ok(false);
                    }
                    // A round trip to the database between the read and
                    // the write.
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    let mut inner = self.0.lock();
                    let current = inner
                        .passkeys
                        .get(credential_id)
                        .map(|p| p.credential.clone());
                    Ok(current.is_some_and(|current| {
                        inner.record_use(credential_id, &current, credential, backed_up, used_at)
                    }))
                }
                _ => {
                    self.0
                        .record_use(credential_id, expected, credential, backed_up, used_at)
                        .await
                }
            }
        }

        async fn rename(
            &self,
            user_id: &str,
            credential_id: &[u8],
            name: &str,
        ) -> Result<bool, PasskeyStoreError> {
            if let Flaw::RenameIgnoresUser = self.1 {
                let mut inner = self.0.lock();
                return Ok(match inner.passkeys.get_mut(credential_id) {
                    Some(passkey) => {
                        passkey.name = name.to_owned();
                        true
                    }
                    None => false,
                });
            }
            self.0.rename(user_id, credential_id, name).await
        }

        async fn delete(
            &self,
            user_id: &str,
            credential_id: &[u8],
        ) -> Result<bool, PasskeyStoreError> {
            if let Flaw::DeleteIgnoresUser = self.1 {
                return Ok(self.0.lock().remove(credential_id).is_some());
            }
            self.0.delete(user_id, credential_id).await
        }

        async fn count(&self, user_id: &str) -> Result<u64, PasskeyStoreError> {
            self.0.count(user_id).await
        }
    }

    #[cfg(feature = "testing")]
    async fn suite(flaw: Flaw) {
        crate::testing::passkey_store_suite(std::sync::Arc::new(Broken(
            MemoryPasskeyStore::new(),
            flaw,
        )))
        .await;
    }

    /// The suite passes the memory store.
    #[cfg(feature = "testing")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_suite_passes_the_memory_store() {
        crate::testing::passkey_store_suite(std::sync::Arc::new(MemoryPasskeyStore::new())).await;
    }

    /// The suite fails a store whose `record_use` ignores `expected`.
    #[cfg(feature = "testing")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[should_panic(expected = "case `record_use_is_compare_and_set` failed")]
    async fn the_suite_catches_a_record_use_that_ignores_expected() {
        suite(Flaw::IgnoresExpected).await;
    }

    /// The suite fails a store whose `record_use` is read-then-write.
    #[cfg(feature = "testing")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[should_panic(expected = "case `concurrent_uses_one_wins` failed")]
    async fn the_suite_catches_a_racy_record_use() {
        suite(Flaw::RacyRecordUse).await;
    }

    /// The suite fails a store whose `insert` overwrites.
    #[cfg(feature = "testing")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[should_panic(expected = "case `a_credential_is_one_users` failed")]
    async fn the_suite_catches_an_insert_that_overwrites() {
        suite(Flaw::OverwritesOnInsert).await;
    }

    /// The suite fails a store whose `rename` ignores the user.
    #[cfg(feature = "testing")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[should_panic(expected = "case `rename_is_scoped_to_the_owner` failed")]
    async fn the_suite_catches_a_rename_that_ignores_the_user() {
        suite(Flaw::RenameIgnoresUser).await;
    }

    /// The suite fails a store whose `delete` ignores the user.
    #[cfg(feature = "testing")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[should_panic(expected = "case `delete_is_scoped_to_the_owner` failed")]
    async fn the_suite_catches_a_delete_that_ignores_the_user() {
        suite(Flaw::DeleteIgnoresUser).await;
    }
}
