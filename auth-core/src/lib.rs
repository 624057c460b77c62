//! # auth-core
//!
//! The framework-agnostic security core of the auth toolkit. Every security
//! decision lives here; the framework adapters (`auth-axum`, `auth-actix`,
//! `auth-rocket`) only translate requests and responses, and re-export
//! this crate, so an app depends on one adapter only.
//!
//! What an app writes: [`AuthUser`] for its own user type, a [`UserStore`]
//! over its own table (find by login, find by id, compare-and-set the
//! password hash), and one [`Auth::builder`] call. Everything else the
//! toolkit keeps (sessions, throttles, second factors) lives in stores of
//! its own, with secure defaults.
//!
//! ```
//! use auth_core::{Auth, MemoryUserStore, Password};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Defaults: memory sessions and throttle, Argon2id (m=19456 KiB, t=2,
//! // p=1), the `__Host-` cookie, the system clock.
//! let auth = Auth::builder(MemoryUserStore::new()).app_name("Example").build()?;
//!
//! // The framework-free API (adapters give each request a handle instead).
//! let flows = auth.authenticator();
//! let client = auth_core::flow::Client::new([127, 0, 0, 1].into());
//! let password = Password::from("correct horse battery staple");
//! let alice = flows.register("Alice", &password, &client).await?;
//! let outcome = flows.login("alice", &password, &client, None).await?;
//! assert_eq!(outcome.session().authenticated_user(), Some(alice.id()));
//! # Ok(())
//! # }
//! ```
//!
//! Modules, one concern each: [`password`] (Argon2id, policy, upgrades),
//! [`session`] (server-side sessions and their stores), [`user`] (the app's
//! users), [`account`] (the toolkit's per-account state), [`mfa`] (TOTP,
//! recovery codes), [`rate_limit`] (throttles, client IP), [`csrf`],
//! [`cookie`], [`flow`] (the framework-free API and [`AuthBuilder`]),
//! [`web`] (the per-request pipeline every adapter runs), [`event`]
//! (audit), [`clock`].
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod account;
pub mod clock;
pub mod cookie;
pub mod csrf;
mod deadline;
pub mod event;
pub mod flow;
pub mod mail;
pub mod mfa;
#[cfg(feature = "passkeys")]
pub mod passkey;
pub mod password;
pub mod rate_limit;
#[cfg(feature = "redis")]
mod redis_conn;
mod secret_key;
pub mod session;
pub mod single_use;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql_deadline;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql_migration;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sqlite_inline;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "jwt")]
pub mod token;
pub mod user;
pub mod web;

pub use account::{AccountStore, MemoryAccountStore};
pub use flow::{AuthBuilder, AuthError, Authenticator, BuildError, FactorProof, LoginOutcome};
pub use password::Password;
pub use single_use::{MemoryTokenStore, TokenStore};
pub use user::{
    AnyUser, AuthUser, LoginName, MemoryUserStore, NewUser, User, UserStore, UserStoreError,
};
pub use web::{Auth, Guard, Reply, RequestAuth};

#[cfg(feature = "postgres")]
pub use account::PostgresAccountStore;
#[cfg(feature = "sqlite")]
pub use account::SqliteAccountStore;
#[cfg(feature = "postgres")]
pub use session::PostgresStore;
#[cfg(feature = "redis")]
pub use session::RedisStore;
#[cfg(feature = "sqlite")]
pub use session::SqliteStore;
#[cfg(feature = "postgres")]
pub use single_use::PostgresTokenStore;
#[cfg(feature = "redis")]
pub use single_use::RedisTokenStore;
#[cfg(feature = "sqlite")]
pub use single_use::SqliteTokenStore;
#[cfg(feature = "postgres")]
pub use user::PostgresUserStore;
#[cfg(feature = "sqlite")]
pub use user::SqliteUserStore;
