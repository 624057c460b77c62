use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use subtle::ConstantTimeEq;

use super::{LoginName, NewUser, User, UserStore, UserStoreError};
use crate::password::HashedPassword;

/// Users of the ready [`User`] type in process memory: for tests, examples
/// and prototypes. Ids are `1`, `2`, ...
#[derive(Debug, Default)]
pub struct MemoryUserStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    /// Ids are ours (assigned here), never a client's text: a seeded fast
    /// hash.
    by_id: HashMap<String, Arc<User>, foldhash::fast::RandomState>,
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

    fn with_user<T>(&self, id: &str, f: impl FnOnce(&mut User) -> T) -> Result<T, UserStoreError> {
        let mut inner = self.lock();
        let user = inner.by_id.get_mut(id).ok_or(UserStoreError::NotFound)?;
        Ok(f(Arc::make_mut(user)))
    }

    /// Replaces a user's hash unconditionally (tests and imports).
    pub fn force_password_hash(
        &self,
        id: &str,
        hash: HashedPassword,
    ) -> Result<(), UserStoreError> {
        self.with_user(id, |user| user.password_hash = hash)
    }

    /// Disables or re-enables a user: a disabled user cannot log in, and
    /// its sessions end at their next request (its refresh tokens at their
    /// next use). To end them all at once, and for good should the user be
    /// enabled again, call
    /// [`Authenticator::sign_out_user`](crate::Authenticator::sign_out_user)
    /// after disabling.
    pub fn set_disabled(&self, id: &str, disabled: bool) -> Result<(), UserStoreError> {
        self.with_user(id, |user| user.disabled = disabled)
    }
}

impl UserStore for MemoryUserStore {
    type User = User;

    async fn find_by_login(&self, login: &LoginName) -> Result<Option<User>, UserStoreError> {
        let inner = self.lock();
        Ok(inner
            .by_login
            .get(login.normalized())
            .and_then(|id| inner.by_id.get(id))
            .map(|user| User::clone(user)))
    }

    async fn find_by_id(&self, id: &String) -> Result<Option<User>, UserStoreError> {
        Ok(self.lock().by_id.get(id).map(|user| User::clone(user)))
    }

    async fn find_by_id_shared(&self, id: &String) -> Result<Option<Arc<User>>, UserStoreError> {
        Ok(self.lock().by_id.get(id).cloned())
    }

    async fn set_password_hash(
        &self,
        id: &String,
        current: &str,
        new: &str,
    ) -> Result<bool, UserStoreError> {
        let mut inner = self.lock();
        match inner.by_id.get_mut(id) {
            Some(user)
                if bool::from(
                    user.password_hash
                        .as_str()
                        .as_bytes()
                        .ct_eq(current.as_bytes()),
                ) =>
            {
                Arc::make_mut(user).password_hash = HashedPassword::new(new);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn create(&self, new: NewUser) -> Result<User, UserStoreError> {
        let mut inner = self.lock();
        let login = new.login.normalized().to_owned();
        if inner.by_login.contains_key(&login) {
            return Err(UserStoreError::LoginTaken);
        }
        inner.next_id += 1;
        let user = User {
            id: inner.next_id.to_string(),
            display_name: new.login.as_typed().to_owned(),
            login,
            password_hash: new.password_hash,
            disabled: false,
        };
        inner.by_login.insert(user.login.clone(), user.id.clone());
        inner.by_id.insert(user.id.clone(), Arc::new(user.clone()));
        Ok(user)
    }
}
