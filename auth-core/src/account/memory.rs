use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use subtle::ConstantTimeEq;

use super::{AccountStore, StoredEmail, StoredTotp};
use crate::user::UserStoreError;

/// Account state in process memory: the default, for tests and single
/// processes whose users live in memory too. `Debug` shows counts only
/// (the state holds recovery-code hashes and sealed secrets).
#[derive(Default)]
pub struct MemoryAccountStore {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for MemoryAccountStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("MemoryAccountStore")
            .field("totp_enrolments", &inner.totp.len())
            .field("recovery_code_sets", &inner.recovery.len())
            .field("emails", &inner.emails.len())
            .finish_non_exhaustive()
    }
}

/// Keyed by the app's user ids (a seeded fast hash: no client chooses
/// them), but verified addresses (text a client sends) by SipHash.
#[derive(Default)]
struct Inner {
    totp: HashMap<String, StoredTotp, foldhash::fast::RandomState>,
    recovery: HashMap<String, Vec<String>, foldhash::fast::RandomState>,
    epochs: HashMap<String, u64, foldhash::fast::RandomState>,
    emails: HashMap<String, StoredEmail, foldhash::fast::RandomState>,
    /// Verified address -> user.
    verified: HashMap<String, String>,
}

impl Inner {
    /// `address` as the user's unverified address (a verified one it
    /// replaces stops being theirs).
    fn set_email(&mut self, user: &str, address: &str) {
        if let Some(old) = self.emails.get(user).filter(|e| e.verified).cloned() {
            self.verified.remove(&old.address);
        }
        self.emails.insert(
            user.to_owned(),
            StoredEmail {
                address: address.to_owned(),
                verified: false,
                pending: None,
            },
        );
    }
}

impl MemoryAccountStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl AccountStore for MemoryAccountStore {
    async fn totp(&self, user: &str) -> Result<Option<StoredTotp>, UserStoreError> {
        Ok(self.lock().totp.get(user).cloned())
    }

    async fn set_pending_totp(
        &self,
        user: &str,
        sealed_secret: &str,
    ) -> Result<bool, UserStoreError> {
        let mut inner = self.lock();
        if inner.totp.get(user).is_some_and(|t| t.confirmed) {
            return Ok(false);
        }
        inner.totp.insert(
            user.to_owned(),
            StoredTotp {
                sealed_secret: sealed_secret.to_owned(),
                confirmed: false,
                last_step: None,
            },
        );
        Ok(true)
    }

    async fn confirm_totp(
        &self,
        user: &str,
        sealed_secret: &str,
        step: i64,
        recovery_hashes: &[String],
    ) -> Result<bool, UserStoreError> {
        let mut inner = self.lock();
        let Inner { totp, recovery, .. } = &mut *inner;
        let Some(entry) = totp.get_mut(user) else {
            return Ok(false);
        };
        if entry.confirmed || entry.sealed_secret != sealed_secret {
            return Ok(false);
        }
        entry.confirmed = true;
        entry.last_step = Some(step);
        recovery.insert(user.to_owned(), recovery_hashes.to_vec());
        Ok(true)
    }

    async fn record_totp_step(&self, user: &str, step: i64) -> Result<bool, UserStoreError> {
        let mut inner = self.lock();
        match inner.totp.get_mut(user) {
            Some(entry) if entry.confirmed && entry.last_step.is_none_or(|last| last < step) => {
                entry.last_step = Some(step);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn reseal_totp(
        &self,
        user: &str,
        old_sealed: &str,
        new_sealed: &str,
    ) -> Result<bool, UserStoreError> {
        let mut inner = self.lock();
        match inner.totp.get_mut(user) {
            Some(entry) if entry.confirmed && entry.sealed_secret == old_sealed => {
                new_sealed.clone_into(&mut entry.sealed_secret);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn remove_totp(&self, user: &str) -> Result<(), UserStoreError> {
        self.lock().totp.remove(user);
        Ok(())
    }

    async fn replace_recovery_codes(
        &self,
        user: &str,
        hashes: &[String],
    ) -> Result<(), UserStoreError> {
        self.lock()
            .recovery
            .insert(user.to_owned(), hashes.to_vec());
        Ok(())
    }

    async fn consume_recovery_code(&self, user: &str, hash: &str) -> Result<bool, UserStoreError> {
        let mut inner = self.lock();
        let Some(codes) = inner.recovery.get_mut(user) else {
            return Ok(false);
        };
        // Look at every entry, comparing in constant time.
        let mut found = None;
        for (index, stored) in codes.iter().enumerate() {
            if bool::from(stored.as_bytes().ct_eq(hash.as_bytes())) {
                found = Some(index);
            }
        }
        match found {
            Some(index) => {
                codes.swap_remove(index);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn recovery_codes_left(&self, user: &str) -> Result<u64, UserStoreError> {
        Ok(self
            .lock()
            .recovery
            .get(user)
            .map_or(0, |codes| codes.len() as u64))
    }

    async fn epoch(&self, user: &str) -> Result<u64, UserStoreError> {
        Ok(self.lock().epochs.get(user).copied().unwrap_or(0))
    }

    async fn raise_epoch(&self, user: &str) -> Result<u64, UserStoreError> {
        let mut inner = self.lock();
        let epoch = inner.epochs.entry(user.to_owned()).or_insert(0);
        *epoch += 1;
        Ok(*epoch)
    }

    async fn email(&self, user: &str) -> Result<Option<StoredEmail>, UserStoreError> {
        Ok(self.lock().emails.get(user).cloned())
    }

    async fn set_email(&self, user: &str, address: &str) -> Result<(), UserStoreError> {
        self.lock().set_email(user, address);
        Ok(())
    }

    async fn set_pending_email(&self, user: &str, address: &str) -> Result<(), UserStoreError> {
        // The check and the write under one lock: a verification landing
        // between them must not be overwritten.
        let mut inner = self.lock();
        if let Some(email) = inner.emails.get_mut(user).filter(|e| e.verified) {
            email.pending = Some(address.to_owned());
        } else {
            inner.set_email(user, address);
        }
        Ok(())
    }

    async fn verify_email(&self, user: &str, address: &str) -> Result<bool, UserStoreError> {
        let mut inner = self.lock();
        let taken = inner
            .verified
            .get(address)
            .is_some_and(|other| other != user);
        let Some(email) = inner.emails.get_mut(user).filter(|_| !taken) else {
            return Ok(false);
        };
        let old = if email.pending.as_deref() == Some(address) {
            let old = email.verified.then(|| email.address.clone());
            email.address = address.to_owned();
            email.pending = None;
            old
        } else if email.address == address && !email.verified {
            None
        } else {
            return Ok(false);
        };
        email.verified = true;
        if let Some(old) = old {
            inner.verified.remove(&old);
        }
        inner.verified.insert(address.to_owned(), user.to_owned());
        Ok(true)
    }

    async fn find_by_email(&self, address: &str) -> Result<Option<String>, UserStoreError> {
        Ok(self.lock().verified.get(address).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn debug_shows_no_hash() {
        let store = MemoryAccountStore::new();
        store
            .set_pending_totp("u1", "sealed-secret-text")
            .await
            .unwrap();
        store
            .confirm_totp(
                "u1",
                "sealed-secret-text",
                1,
                &["recovery-hash-text".to_owned()],
            )
            .await
            .unwrap();
        let printed = format!("{store:?}");
        assert!(!printed.contains("recovery-hash-text") && !printed.contains("sealed-secret"));
        assert!(printed.contains("totp_enrolments: 1"), "{printed}");
    }
}
