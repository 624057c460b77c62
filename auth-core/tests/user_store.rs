//! The user-store contract (`auth_core::testing::user_store`), run against
//! the memory, SQLite and PostgreSQL user stores (PostgreSQL reads
//! `AUTH_TEST_POSTGRES_URL`). Each case is its own test per store
//! (`sqlite::duplicate_login_is_taken`, ...).
#![cfg(feature = "testing")]

use std::sync::{Arc, Mutex};

use auth_core::user_store_tests;
use auth_core::{AuthUser, LoginName, MemoryUserStore, NewUser, UserStore, UserStoreError};

#[cfg(feature = "postgres")]
mod common;

user_store_tests!(memory, { Some(Arc::new(MemoryUserStore::new())) });

#[cfg(feature = "sqlite")]
user_store_tests!(sqlite, {
    // Cargo's scratch folder for integration tests (under `target/`).
    let id = auth_core::session::SessionId::generate().unwrap().key();
    let dir =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("users-db-{}", id.to_hex()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("users.db").display());
    let sessions = auth_core::session::SqliteStore::connect(&url)
        .await
        .unwrap();
    let users = auth_core::user::SqliteUserStore::from_pool(sessions.pool().clone())
        .await
        .unwrap();
    Some(Arc::new(users))
});

#[cfg(feature = "postgres")]
user_store_tests!(postgres, {
    let url = crate::common::service_url("AUTH_TEST_POSTGRES_URL")?;
    let sessions = auth_core::session::PostgresStore::connect(&url)
        .await
        .unwrap();
    let users = auth_core::user::PostgresUserStore::from_pool(sessions.pool().clone())
        .await
        .unwrap();
    Some(Arc::new(users))
});

/// A user store over an app's own table, as the `testing` module docs
/// write one: `i64` ids, names stored in normal form.
#[derive(Default)]
struct AppUsers(Mutex<Vec<AppUser>>);

#[derive(Clone)]
struct AppUser {
    id: i64,
    email: String,
    password_hash: String,
}

impl AuthUser for AppUser {
    type Id = i64;
    fn id(&self) -> i64 {
        self.id
    }
    fn login(&self) -> &str {
        &self.email
    }
    fn password_hash(&self) -> &str {
        &self.password_hash
    }
}

impl AppUsers {
    /// The lookup this store uses: `typed` compares the name as typed
    /// (case-sensitively), the mistake [`LoginName`] exists to prevent.
    fn find(&self, login: &LoginName, typed: bool) -> Option<AppUser> {
        let key = if typed {
            login.as_typed()
        } else {
            login.normalized()
        };
        let users = self.0.lock().unwrap();
        users.iter().find(|u| u.email == key).cloned()
    }

    fn insert(&self, new: NewUser, typed: bool) -> Result<AppUser, UserStoreError> {
        let mut users = self.0.lock().unwrap();
        if users
            .iter()
            .any(|u| u.email == new.login.normalized() || u.email == new.login.as_typed())
        {
            return Err(UserStoreError::LoginTaken);
        }
        let user = AppUser {
            id: users.len() as i64 + 1,
            email: if typed {
                new.login.as_typed()
            } else {
                new.login.normalized()
            }
            .to_owned(),
            password_hash: new.password_hash.into_string(),
        };
        users.push(user.clone());
        Ok(user)
    }

    fn find_id(&self, id: i64) -> Option<AppUser> {
        self.0.lock().unwrap().iter().find(|u| u.id == id).cloned()
    }

    fn cas(&self, id: i64, current: &str, new: &str) -> bool {
        let mut users = self.0.lock().unwrap();
        match users
            .iter_mut()
            .find(|u| u.id == id && u.password_hash == current)
        {
            Some(user) => {
                user.password_hash = new.to_owned();
                true
            }
            None => false,
        }
    }
}

impl UserStore for AppUsers {
    type User = AppUser;

    async fn find_by_login(&self, login: &LoginName) -> Result<Option<AppUser>, UserStoreError> {
        Ok(self.find(login, false))
    }

    async fn find_by_id(&self, id: &i64) -> Result<Option<AppUser>, UserStoreError> {
        Ok(self.find_id(*id))
    }

    async fn set_password_hash(
        &self,
        id: &i64,
        current: &str,
        new: &str,
    ) -> Result<bool, UserStoreError> {
        Ok(self.cas(*id, current, new))
    }

    async fn create(&self, new: NewUser) -> Result<AppUser, UserStoreError> {
        self.insert(new, false)
    }
}

// An app's own store with integer ids keeps the contract too (and the
// unknown-id check runs with `i64` ids).
user_store_tests!(app_table, { Some(Arc::new(AppUsers::default())) });

/// The one-call form runs every case too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_one_call_suite_passes_for_the_memory_store() {
    auth_core::testing::user_store_suite(Arc::new(MemoryUserStore::new())).await;
}

/// The same table, but stored and looked up as typed: `Alice` is not found
/// as `alice`. The suite must catch it.
#[derive(Default)]
struct TypedLogins(AppUsers);

impl UserStore for TypedLogins {
    type User = AppUser;

    async fn find_by_login(&self, login: &LoginName) -> Result<Option<AppUser>, UserStoreError> {
        Ok(self.0.find(login, true))
    }

    async fn find_by_id(&self, id: &i64) -> Result<Option<AppUser>, UserStoreError> {
        Ok(self.0.find_id(*id))
    }

    async fn set_password_hash(
        &self,
        id: &i64,
        current: &str,
        new: &str,
    ) -> Result<bool, UserStoreError> {
        Ok(self.0.cas(*id, current, new))
    }

    async fn create(&self, new: NewUser) -> Result<AppUser, UserStoreError> {
        self.0.insert(new, true)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "case `logins_compare_in_normal_form` failed")]
async fn the_suite_catches_logins_compared_as_typed() {
    auth_core::testing::user_store_suite(Arc::new(TypedLogins::default())).await;
}

/// A password update that is a plain write (no compare-and-set): the
/// suite must catch it.
#[derive(Default)]
struct BlindWrites(AppUsers);

impl UserStore for BlindWrites {
    type User = AppUser;

    async fn find_by_login(&self, login: &LoginName) -> Result<Option<AppUser>, UserStoreError> {
        Ok(self.0.find(login, false))
    }

    async fn find_by_id(&self, id: &i64) -> Result<Option<AppUser>, UserStoreError> {
        Ok(self.0.find_id(*id))
    }

    async fn set_password_hash(
        &self,
        id: &i64,
        _current: &str,
        new: &str,
    ) -> Result<bool, UserStoreError> {
        let Some(user) = self.0.find_id(*id) else {
            return Ok(false);
        };
        Ok(self.0.cas(*id, &user.password_hash, new))
    }

    async fn create(&self, new: NewUser) -> Result<AppUser, UserStoreError> {
        self.0.insert(new, false)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "case `set_password_hash_is_compare_and_set` failed")]
async fn the_suite_catches_a_password_write_that_is_no_compare_and_set() {
    auth_core::testing::user_store_suite(Arc::new(BlindWrites::default())).await;
}
