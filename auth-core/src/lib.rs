//! # auth-core
//!
//! The framework-agnostic security core of the auth toolkit. Every security
//! decision lives here; the framework adapters (`auth-axum`, `auth-actix`,
//! `auth-rocket`) only translate requests and responses.
//!
//! This release contains the [`password`] module: Argon2id hashing with
//! transparent upgrades, optional pepper with key rotation, legacy bcrypt and
//! PBKDF2 verification (features `bcrypt` and `pbkdf2`), a NIST-style password
//! policy and an async service that never hashes on an async worker thread.
//!
//! ```
//! use auth_core::password::{Password, PasswordService, PolicyContext, Verification};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), auth_core::password::PasswordError> {
//! // OWASP defaults: Argon2id, m=19456 KiB, t=2, p=1; blocklist; NFKC.
//! let passwords = PasswordService::builder().build()?;
//!
//! // Registration: the policy runs first, then the hash (off the runtime).
//! let context = PolicyContext::new().with_word("alice").with_word("Example App");
//! let stored = passwords
//!     .hash_new_password(&Password::from("correct horse battery staple"), &context)
//!     .await?;
//! assert!(stored.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
//!
//! // Login: verify, and re-hash only after a correct password when flagged.
//! match passwords
//!     .verify(&Password::from("correct horse battery staple"), &stored)
//!     .await?
//! {
//!     Verification::Match { upgrade: None } => {}
//!     Verification::Match { upgrade: Some(_) } => { /* store a new hash */ }
//!     Verification::Mismatch => unreachable!("the password is right"),
//! }
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod clock;
pub mod cookie;
pub mod csrf;
pub mod event;
pub mod flow;
pub mod mfa;
pub mod password;
pub mod rate_limit;
pub mod session;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sqlite_inline;
pub mod user;
pub mod web;
