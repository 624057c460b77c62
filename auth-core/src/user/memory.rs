use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::{NewUser, User, UserStore, UserStoreError};
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
}
