use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use subtle::ConstantTimeEq;

use super::{NewUser, StoredTotp, User, UserStore, UserStoreError};
use crate::password::HashedPassword;
use crate::session::Factor;

/// Users in process memory: for tests, examples and prototypes.
#[derive(Debug, Default)]
pub struct MemoryUserStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    by_id: HashMap<String, User>,
    by_login: HashMap<String, String>,
    totp: HashMap<String, StoredTotp>,
    recovery: HashMap<String, Vec<String>>,
}

impl MemoryUserStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets the user's enrolled second factors (until the MFA module stores
    /// its own).
    pub fn set_second_factors(&self, id: &str, factors: Vec<Factor>) -> Result<(), UserStoreError> {
        let mut inner = self.lock();
        let user = inner.by_id.get_mut(id).ok_or(UserStoreError::NotFound)?;
        user.second_factors = factors;
        Ok(())
    }

    /// Replaces a user's hash unconditionally (tests and imports).
    pub fn force_password_hash(
        &self,
        id: &str,
        hash: HashedPassword,
    ) -> Result<(), UserStoreError> {
        let mut inner = self.lock();
        let user = inner.by_id.get_mut(id).ok_or(UserStoreError::NotFound)?;
        user.password_hash = hash;
        Ok(())
    }
}

#[async_trait]
impl UserStore for MemoryUserStore {
    async fn find_by_login(&self, login: &str) -> Result<Option<User>, UserStoreError> {
        let inner = self.lock();
        Ok(inner
            .by_login
            .get(login)
            .and_then(|id| inner.by_id.get(id))
            .cloned())
    }

    async fn find_by_id(&self, id: &str) -> Result<Option<User>, UserStoreError> {
        Ok(self.lock().by_id.get(id).cloned())
    }

    async fn create(&self, new: NewUser) -> Result<User, UserStoreError> {
        let mut inner = self.lock();
        if inner.by_login.contains_key(&new.login) {
            return Err(UserStoreError::LoginTaken);
        }
        inner.next_id += 1;
        let user = User {
            id: inner.next_id.to_string(),
            login: new.login,
            display_name: new.display_name,
            password_hash: new.password_hash,
            security_stamp: new.security_stamp,
            disabled: false,
            second_factors: Vec::new(),
        };
        inner.by_login.insert(user.login.clone(), user.id.clone());
        inner.by_id.insert(user.id.clone(), user.clone());
        Ok(user)
    }

    async fn replace_password_hash(
        &self,
        id: &str,
        current: &HashedPassword,
        new: &HashedPassword,
    ) -> Result<bool, UserStoreError> {
        let mut inner = self.lock();
        let user = inner.by_id.get_mut(id).ok_or(UserStoreError::NotFound)?;
        if user.password_hash != *current {
            return Ok(false);
        }
        user.password_hash = new.clone();
        Ok(true)
    }

    async fn change_password(
        &self,
        id: &str,
        current: &HashedPassword,
        new: &HashedPassword,
        new_stamp: &str,
    ) -> Result<bool, UserStoreError> {
        let mut inner = self.lock();
        let user = inner.by_id.get_mut(id).ok_or(UserStoreError::NotFound)?;
        if user.password_hash != *current {
            return Ok(false);
        }
        user.password_hash = new.clone();
        new_stamp.clone_into(&mut user.security_stamp);
        Ok(true)
    }

    async fn set_security_stamp(&self, id: &str, stamp: &str) -> Result<(), UserStoreError> {
        let mut inner = self.lock();
        let user = inner.by_id.get_mut(id).ok_or(UserStoreError::NotFound)?;
        stamp.clone_into(&mut user.security_stamp);
        Ok(())
    }

    async fn set_disabled(&self, id: &str, disabled: bool) -> Result<(), UserStoreError> {
        let mut inner = self.lock();
        let user = inner.by_id.get_mut(id).ok_or(UserStoreError::NotFound)?;
        user.disabled = disabled;
        Ok(())
    }

    async fn totp(&self, id: &str) -> Result<Option<StoredTotp>, UserStoreError> {
        Ok(self.lock().totp.get(id).cloned())
    }

    async fn set_pending_totp(
        &self,
        id: &str,
        sealed_secret: &str,
    ) -> Result<bool, UserStoreError> {
        let mut inner = self.lock();
        if !inner.by_id.contains_key(id) || inner.totp.get(id).is_some_and(|t| t.confirmed) {
            return Ok(false);
        }
        inner.totp.insert(
            id.to_owned(),
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
        id: &str,
        sealed_secret: &str,
        step: i64,
        recovery_hashes: &[String],
    ) -> Result<bool, UserStoreError> {
        let mut inner = self.lock();
        let Inner {
            by_id,
            totp,
            recovery,
            ..
        } = &mut *inner;
        let (Some(user), Some(entry)) = (by_id.get_mut(id), totp.get_mut(id)) else {
            return Ok(false);
        };
        if entry.confirmed || entry.sealed_secret != sealed_secret {
            return Ok(false);
        }
        entry.confirmed = true;
        entry.last_step = Some(step);
        if !user.second_factors.contains(&Factor::Totp) {
            user.second_factors.push(Factor::Totp);
        }
        recovery.insert(id.to_owned(), recovery_hashes.to_vec());
        Ok(true)
    }

    async fn record_totp_step(&self, id: &str, step: i64) -> Result<bool, UserStoreError> {
        let mut inner = self.lock();
        match inner.totp.get_mut(id) {
            Some(entry) if entry.confirmed && entry.last_step.is_none_or(|last| last < step) => {
                entry.last_step = Some(step);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn replace_recovery_codes(
        &self,
        id: &str,
        hashes: &[String],
    ) -> Result<(), UserStoreError> {
        let mut inner = self.lock();
        if !inner.by_id.contains_key(id) {
            return Err(UserStoreError::NotFound);
        }
        inner.recovery.insert(id.to_owned(), hashes.to_vec());
        Ok(())
    }

    async fn consume_recovery_code(&self, id: &str, hash: &str) -> Result<bool, UserStoreError> {
        let mut inner = self.lock();
        let Some(codes) = inner.recovery.get_mut(id) else {
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

    async fn recovery_codes_left(&self, id: &str) -> Result<u64, UserStoreError> {
        Ok(self
            .lock()
            .recovery
            .get(id)
            .map_or(0, |codes| codes.len() as u64))
    }

    async fn remove_totp(&self, id: &str) -> Result<(), UserStoreError> {
        let mut inner = self.lock();
        let user = inner.by_id.get_mut(id).ok_or(UserStoreError::NotFound)?;
        user.second_factors.retain(|f| *f != Factor::Totp);
        inner.totp.remove(id);
        inner.recovery.remove(id);
        Ok(())
    }
}
