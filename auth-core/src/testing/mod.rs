//! A test kit for store authors (feature `testing`): the contract every
//! store of the toolkit is held to, as suites that check a store of your
//! own in one call.
//!
//! * [`session_store`]: a [`SessionStore`](crate::session::SessionStore)
//!   (compare-and-set saves, rotation, expiry, revocation by user).
//! * [`user_store`]: a [`UserStore`](crate::UserStore) whose
//!   [`create`](crate::UserStore::create) works (normalised login names,
//!   compare-and-set password hashes).
//! * [`account_store`]: an [`AccountStore`](crate::AccountStore) (TOTP
//!   enrolment, single-use recovery codes, the revocation epoch).
//! * [`token_store`]: a [`TokenStore`](crate::TokenStore) (single-use
//!   tokens: taken once, for their purpose, before they expire).
//! * `refresh_store` (feature `jwt`): a
//!   `RefreshStore` (refresh-token families: one winner per rotation,
//!   reuse revokes the family, grace, expiry, revocation), with
//!   `refresh_store_suite` and `refresh_store_tests!`.
//! * `passkey_store` (feature `passkeys`): a `PasskeyStore` (a credential
//!   id is one user's, compare-and-set uses, rename and delete scoped to
//!   the owner), with `passkey_store_suite` and `passkey_store_tests!`.
//!
//! Each suite runs every case of its contract: [`session_store_suite`],
//! [`user_store_suite`], [`account_store_suite`] and [`token_store_suite`]
//! in one call (a failure panics with the name of the case), or one
//! `#[test]` per case with
//! [`session_store_tests!`](crate::session_store_tests),
//! [`user_store_tests!`](crate::user_store_tests),
//! [`account_store_tests!`](crate::account_store_tests) and
//! [`token_store_tests!`](crate::token_store_tests), so the test
//! report names the case. Every case is also a public `async fn` of its
//! module. The concurrency cases start 16 tasks at once: run the suites on
//! a multi-threaded runtime.
//!
//! The cases make their own users and sessions, with random ids and login
//! names, and never delete what others made: the suites can share one
//! database with each other, with earlier runs and with parallel tests.
//!
//! # Checking a store of your own
//!
//! In `Cargo.toml`:
//!
//! ```toml
//! [dev-dependencies]
//! auth-core = { version = "0.1", features = ["testing"] }
//! tokio = { version = "1", features = ["macros", "rt-multi-thread"] }
//! ```
//!
//! A user store over the app's own table (here a vector, ids `i64`),
//! checked in one call:
//!
//! ```
//! use std::sync::{Arc, Mutex};
//!
//! use auth_core::{AuthUser, LoginName, NewUser, UserStore, UserStoreError};
//!
//! #[derive(Clone)]
//! struct MyUser { id: i64, email: String, password_hash: String }
//!
//! impl AuthUser for MyUser {
//!     type Id = i64;
//!     fn id(&self) -> i64 { self.id }
//!     fn login(&self) -> &str { &self.email }
//!     fn password_hash(&self) -> &str { &self.password_hash }
//! }
//!
//! #[derive(Default)]
//! struct MyUsers(Mutex<Vec<MyUser>>);
//!
//! impl UserStore for MyUsers {
//!     type User = MyUser;
//!
//!     async fn find_by_login(&self, login: &LoginName) -> Result<Option<MyUser>, UserStoreError> {
//!         let users = self.0.lock().unwrap();
//!         Ok(users.iter().find(|u| u.email == login.normalized()).cloned())
//!     }
//!
//!     async fn find_by_id(&self, id: &i64) -> Result<Option<MyUser>, UserStoreError> {
//!         Ok(self.0.lock().unwrap().iter().find(|u| u.id == *id).cloned())
//!     }
//!
//!     async fn set_password_hash(&self, id: &i64, current: &str, new: &str) -> Result<bool, UserStoreError> {
//!         let mut users = self.0.lock().unwrap();
//!         match users.iter_mut().find(|u| u.id == *id && u.password_hash == current) {
//!             Some(user) => { user.password_hash = new.to_owned(); Ok(true) }
//!             None => Ok(false),
//!         }
//!     }
//!
//!     async fn create(&self, new: NewUser) -> Result<MyUser, UserStoreError> {
//!         let mut users = self.0.lock().unwrap();
//!         if users.iter().any(|u| u.email == new.login.normalized()) {
//!             return Err(UserStoreError::LoginTaken);
//!         }
//!         let user = MyUser {
//!             id: users.len() as i64 + 1,
//!             email: new.login.normalized().to_owned(),
//!             password_hash: new.password_hash.into_string(),
//!         };
//!         users.push(user.clone());
//!         Ok(user)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() {
//! // In a test: `#[tokio::test(flavor = "multi_thread")] async fn ...`.
//! auth_core::testing::user_store_suite(Arc::new(MyUsers::default())).await;
//! # }
//! ```
//!
//! The session and account suites take a trait object; the session suite
//! takes a factory, as each of its cases gets a fresh store:
//!
//! ```
//! use std::sync::Arc;
//!
//! use auth_core::session::{MemoryStore, SessionStore};
//! use auth_core::testing::{self, SessionStoreCaps};
//! use auth_core::{AccountStore, MemoryAccountStore};
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() {
//! testing::session_store_suite(
//!     || async { Arc::new(MemoryStore::new()) as Arc<dyn SessionStore> },
//!     SessionStoreCaps::default(),
//! )
//! .await;
//! testing::account_store_suite(Arc::new(MemoryAccountStore::new()) as Arc<dyn AccountStore>)
//!     .await;
//! # }
//! ```
//!
//! One test per case, e.g. in `tests/store_contract.rs` (a store that needs
//! a server can return `None` to skip, here when its URL is not set):
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use auth_core::session::SessionStore;
//! use auth_core::testing::SessionStoreCaps;
//! # mod my_backend {
//! #     pub async fn connect(_: &str) -> auth_core::session::MemoryStore {
//! #         auth_core::session::MemoryStore::new()
//! #     }
//! # }
//!
//! // Tests `my_store::round_trip`, `my_store::save_is_compare_and_set`, ...
//! auth_core::session_store_tests!(my_store, SessionStoreCaps::default(), {
//!     let url = std::env::var("DATABASE_URL").ok()?;
//!     Some(Arc::new(my_backend::connect(&url).await) as Arc<dyn SessionStore>)
//! });
//! # fn main() {}
//! ```

pub mod account_store;
#[cfg(feature = "passkeys")]
pub mod passkey_store;
#[cfg(feature = "jwt")]
pub mod refresh_store;
pub mod session_store;
pub mod token_store;
pub mod user_store;

pub use account_store::account_store_suite;
#[cfg(feature = "passkeys")]
pub use passkey_store::passkey_store_suite;
#[cfg(feature = "jwt")]
pub use refresh_store::{RefreshStoreCaps, refresh_store_suite};
pub use session_store::{SessionStoreCaps, session_store_suite};
pub use token_store::{TokenStoreCaps, token_store_suite};
pub use user_store::user_store_suite;

use std::future::Future;
use std::sync::Arc;

/// What the exported macros use, so the crates that call them need no
/// dependency of their own. Not part of the API.
#[doc(hidden)]
pub mod __private {
    /// The runtime of one generated test: the one
    /// `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]` builds.
    pub fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("the test runtime starts")
    }
}

/// `tag-` and 128 random bits in hex: unique ids and names per call, so
/// suites can share a database.
pub(crate) fn unique(tag: &str) -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random number generator works");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{tag}-{hex}")
}

/// Runs one case of a suite as its own task; a failure panics naming the
/// suite and the case.
pub(crate) async fn run_case<Fut>(suite: &str, case: &str, future: Fut)
where
    Fut: Future<Output = ()> + Send + 'static,
{
    if let Err(error) = tokio::spawn(future).await {
        let reason = match error.try_into_panic() {
            Ok(payload) => payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panicked".to_owned()),
            Err(error) => error.to_string(),
        };
        panic!("{suite} contract, case `{case}` failed: {reason}");
    }
}

/// Runs `n` copies of an operation at once (as tasks, released together)
/// and returns their results in order.
pub(crate) async fn concurrently<T, F, Fut>(n: usize, op: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let barrier = Arc::clone(&barrier);
            let future = op(i);
            tokio::spawn(async move {
                barrier.wait().await;
                future.await
            })
        })
        .collect();
    let mut results = Vec::with_capacity(n);
    for task in tasks {
        match task.await {
            Ok(result) => results.push(result),
            Err(error) => match error.try_into_panic() {
                Ok(payload) => std::panic::resume_unwind(payload),
                Err(error) => panic!("a concurrent task failed: {error}"),
            },
        }
    }
    results
}
