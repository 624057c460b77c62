//! Purpose-bound single-use tokens: the one primitive behind password
//! reset, email verification and magic-link sign-in (ASVS 5.0 V6.4).
//!
//! * A token is 256 bits from the OS CSPRNG, handed out once as 43
//!   base64url characters ([`SingleUseToken`]); the store keeps only its
//!   SHA-256 ([`TokenKey`]), so a leaked table cannot be replayed.
//! * Each token is for one [`Purpose`], with that purpose's lifetime
//!   (password reset 30 minutes, email verification 24 hours, magic link 15
//!   minutes).
//! * It is consumed atomically ([`TokenStore::consume`]): of two concurrent
//!   uses, exactly one gets the record, in every store.
//! * It carries a *binding*: what it was issued against (a fingerprint of
//!   the password hash for a reset, the address for a verification). The
//!   flow that consumes it compares the binding with the current value, so
//!   a reset token dies when the password changes by any path, and a
//!   verification token when the address changes.
//!
//! Ready stores run one shared suite (feature `testing`):
//! [`MemoryTokenStore`], and with features `sqlite` / `postgres` / `redis`
//! [`SqliteTokenStore`] / [`PostgresTokenStore`] / [`RedisTokenStore`].

mod memory;
#[cfg(feature = "redis")]
mod redis_store;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;

pub use memory::MemoryTokenStore;
#[cfg(feature = "redis")]
pub use redis_store::RedisTokenStore;
#[cfg(feature = "postgres")]
pub use sql::PostgresTokenStore;
#[cfg(feature = "sqlite")]
pub use sql::SqliteTokenStore;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use base64ct::{Base64UrlUnpadded, Encoding};
use sha2::{Digest, Sha256};

use crate::clock::Timestamp;

/// What a token is for. A token of one purpose never serves another.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// Set a new password (30 minutes).
    PasswordReset,
    /// Prove an email address (24 hours).
    EmailVerification,
    /// Sign in with a link (15 minutes; one factor only).
    MagicLink,
}

impl Purpose {
    /// Every purpose.
    pub const ALL: [Purpose; 3] = [
        Purpose::PasswordReset,
        Purpose::EmailVerification,
        Purpose::MagicLink,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PasswordReset => "password_reset",
            Self::EmailVerification => "email_verification",
            Self::MagicLink => "magic_link",
        }
    }

    /// The purpose a stored name names.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }

    /// How long a token of this purpose lives.
    pub fn lifetime(self) -> Duration {
        match self {
            Self::PasswordReset => Duration::from_secs(30 * 60),
            Self::EmailVerification => Duration::from_secs(24 * 60 * 60),
            Self::MagicLink => Duration::from_secs(15 * 60),
        }
    }
}

/// Bytes in a token.
const TOKEN_BYTES: usize = 32;

/// A token as the user gets it (in a link): 256 random bits. `Debug` is
/// redacted; it is never stored, only its [`TokenKey`].
#[derive(Clone)]
pub struct SingleUseToken([u8; TOKEN_BYTES]);

impl SingleUseToken {
    /// A fresh token from the OS CSPRNG.
    pub fn generate() -> Result<Self, TokenStoreError> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes).map_err(|_| TokenStoreError::Rng)?;
        Ok(Self(bytes))
    }

    /// Strict parse of the 43-character base64url form; `None` for
    /// anything else.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 43 {
            return None;
        }
        let mut bytes = [0u8; TOKEN_BYTES];
        let decoded = Base64UrlUnpadded::decode(text, &mut bytes).ok()?;
        (decoded.len() == TOKEN_BYTES).then_some(Self(bytes))
    }

    /// The 43-character base64url form, for a link.
    pub fn encode(&self) -> String {
        Base64UrlUnpadded::encode_string(&self.0)
    }

    /// The key the store keeps: SHA-256 of the token.
    pub fn key(&self) -> TokenKey {
        TokenKey(Sha256::digest(self.0).into())
    }
}

impl fmt::Debug for SingleUseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SingleUseToken([REDACTED])")
    }
}

/// The stored key of a token: its SHA-256.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenKey([u8; 32]);

impl TokenKey {
    /// The digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// From a stored digest.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Lowercase hex (64 characters), as SQL and Redis keys hold it.
    pub fn to_hex(&self) -> String {
        crate::session::hex_digest(&self.0)
    }
}

/// A digest of a token is no secret, but a prefix is all a log needs.
impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenKey({}..)", &self.to_hex()[..8])
    }
}

/// What the store keeps of a token.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// What it is for.
    pub purpose: Purpose,
    /// The user it was issued to (the app's user id as text).
    pub user_id: String,
    /// What it was issued against (see the module docs); compared by the
    /// flow that consumes it.
    pub binding: String,
    /// When it stops working.
    pub expires_at: Timestamp,
}

/// The binding can be an email address: `Debug` shows its length only.
impl fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRecord")
            .field("purpose", &self.purpose)
            .field("user_id", &self.user_id)
            .field("binding", &format_args!("[{} bytes]", self.binding.len()))
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Token store failures.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum TokenStoreError {
    /// The key exists already (2^-256 odds: draw another token).
    #[error("token key already exists")]
    Collision,
    /// The OS random number generator failed.
    #[error("random number generator failed")]
    Rng,
    /// A stored record could not be read.
    #[error("stored token record is invalid")]
    Corrupt,
    /// The backend failed (its own error is the source).
    #[error("token store error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl TokenStoreError {
    /// Wraps a backend's error.
    pub fn backend(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend(Box::new(error))
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl From<sqlx::Error> for TokenStoreError {
    fn from(error: sqlx::Error) -> Self {
        Self::backend(error)
    }
}

#[cfg(feature = "redis")]
impl From<redis::RedisError> for TokenStoreError {
    fn from(error: redis::RedisError) -> Self {
        Self::backend(error)
    }
}

impl TokenRecord {
    /// What [`TokenStore::consume`] answers for a record it took: the
    /// record if it is for `purpose` and has not expired at `now` (it
    /// expires at `expires_at`), else `None`. Every store decides by this,
    /// on the caller's clock.
    pub(crate) fn usable(self, purpose: Purpose, now: Timestamp) -> Option<Self> {
        (self.purpose == purpose && now < self.expires_at).then_some(self)
    }
}

/// Where single-use tokens live. Implementations run the shared suite
/// (`auth_core::testing::token_store_suite`, feature `testing`).
#[async_trait]
pub trait TokenStore: Send + Sync + fmt::Debug + 'static {
    /// Stores a new token ([`TokenStoreError::Collision`] if `key` exists).
    async fn insert(&self, key: &TokenKey, record: &TokenRecord) -> Result<(), TokenStoreError>;

    /// Takes the token atomically: if `key` exists, is for `purpose` and
    /// has not expired at `now`, deletes it and returns its record. Of two
    /// concurrent calls, at most one gets it. A token presented for another
    /// purpose is deleted too (it was exposed) and answers `None`.
    async fn consume(
        &self,
        key: &TokenKey,
        purpose: Purpose,
        now: Timestamp,
    ) -> Result<Option<TokenRecord>, TokenStoreError>;

    /// The token's record without taking it: if `key` exists, is for
    /// `purpose` and has not expired at `now`; else `None`, and nothing is
    /// deleted. For a page that names the account a link is for before it
    /// is used. A store that cannot look without taking keeps the default,
    /// `None` (the page then names no account).
    async fn peek(
        &self,
        key: &TokenKey,
        purpose: Purpose,
        now: Timestamp,
    ) -> Result<Option<TokenRecord>, TokenStoreError> {
        let _ = (key, purpose, now);
        Ok(None)
    }

    /// Deletes every token of `user_id` for `purpose` (a new request voids
    /// the older links; a used one voids its siblings). Returns how many.
    async fn delete_for_user(
        &self,
        user_id: &str,
        purpose: Purpose,
    ) -> Result<u64, TokenStoreError>;

    /// Deletes every token that expired at or before `now`; returns how
    /// many (stores with native expiry may answer 0).
    async fn delete_expired(&self, now: Timestamp) -> Result<u64, TokenStoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_strictly_and_debug_is_redacted() {
        let token = SingleUseToken::generate().unwrap();
        let text = token.encode();
        assert_eq!(text.len(), 43);
        assert_eq!(SingleUseToken::parse(&text).unwrap().key(), token.key());
        assert_ne!(SingleUseToken::generate().unwrap().key(), token.key());
        for bad in [
            "",
            "x",
            &text[..42],
            &format!("{text}A"),
            &text.replace(&text[..1], "+"),
        ] {
            assert!(SingleUseToken::parse(bad).is_none(), "{bad}");
        }
        assert!(!format!("{token:?}").contains(&text));
        assert_eq!(token.key().to_hex().len(), 64);
        for purpose in Purpose::ALL {
            assert_eq!(Purpose::parse(purpose.as_str()), Some(purpose));
        }
        assert_eq!(Purpose::parse("other"), None);
    }
}
