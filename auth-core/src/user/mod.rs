//! Users: the small [`UserStore`] trait an app implements for its own user
//! table, a [`MemoryUserStore`], and (features `sqlite` / `postgres`) a
//! ready SQL implementation.
//!
//! Login names are normalised with [`normalize_login`] (NFKC, trimmed,
//! lower-cased), so `Alice` and `alice` are one account.

mod memory;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;

pub use memory::MemoryUserStore;
#[cfg(feature = "postgres")]
pub use sql::PostgresUserStore;
#[cfg(feature = "sqlite")]
pub use sql::SqliteUserStore;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use base64ct::{Base64UrlUnpadded, Encoding};
use unicode_normalization::UnicodeNormalization;

use crate::password::HashedPassword;
use crate::session::{Factor, StampSource, StoreError};

/// Longest accepted login name, in characters.
pub const MAX_LOGIN_CHARS: usize = 254;

/// A login name that cannot be used.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoginNameError {
    /// Empty after trimming.
    #[error("login name is empty")]
    Empty,
    /// Longer than [`MAX_LOGIN_CHARS`].
    #[error("login name is too long")]
    TooLong,
    /// Contains control or invisible formatting characters.
    #[error("login name contains control or invisible characters")]
    Control,
}

/// The lookup form of a login name: NFKC, trimmed, lower-cased.
pub fn normalize_login(name: &str) -> Result<String, LoginNameError> {
    if name.len() > MAX_LOGIN_CHARS * 4 {
        return Err(LoginNameError::TooLong);
    }
    let normalized: String = name.nfkc().collect::<String>().trim().to_lowercase();
    if normalized.is_empty() {
        return Err(LoginNameError::Empty);
    }
    if normalized.chars().count() > MAX_LOGIN_CHARS {
        return Err(LoginNameError::TooLong);
    }
    if normalized
        .chars()
        .any(|c| c.is_control() || is_invisible_format(c))
    {
        return Err(LoginNameError::Control);
    }
    Ok(normalized)
}

/// Invisible formatting characters (Unicode category Cf) that would make
/// two names look alike: zero-width spaces and joiners, direction marks and
/// overrides, word joiners, the BOM, soft hyphens.
fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}'
    )
}

/// A fresh security stamp: 128 random bits, base64url.
pub fn new_security_stamp() -> Result<String, UserStoreError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|_| UserStoreError::Rng)?;
    Ok(Base64UrlUnpadded::encode_string(&bytes))
}

/// A user as the flows need it.
#[derive(Clone)]
pub struct User {
    /// Stable id (the store's primary key, as text).
    pub id: String,
    /// The normalised login name.
    pub login: String,
    /// The login name as the user typed it at registration.
    pub display_name: String,
    /// The password hash.
    pub password_hash: HashedPassword,
    /// Changes whenever the user's sessions must end (password change, "sign
    /// out everywhere"). Secret-ish: never logged.
    pub security_stamp: String,
    /// A disabled user cannot log in and has no live session.
    pub disabled: bool,
    /// Enrolled second factors; non-empty means a password alone only
    /// yields an MFA-pending session.
    pub second_factors: Vec<Factor>,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("login", &self.login)
            .field("disabled", &self.disabled)
            .field("second_factors", &self.second_factors)
            .finish_non_exhaustive()
    }
}

/// What [`UserStore::create`] needs.
#[derive(Clone)]
pub struct NewUser {
    /// The normalised login name.
    pub login: String,
    /// As typed.
    pub display_name: String,
    /// The password hash.
    pub password_hash: HashedPassword,
    /// The initial security stamp.
    pub security_stamp: String,
}

impl fmt::Debug for NewUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewUser")
            .field("login", &self.login)
            .finish_non_exhaustive()
    }
}

/// A user's stored TOTP enrolment.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredTotp {
    /// The secret, encrypted (`v1.<kid>.<base64url>`, see
    /// [`MfaKeys`](crate::mfa::MfaKeys)). Never plain text.
    pub sealed_secret: String,
    /// Whether a first valid code confirmed it. Only a confirmed secret is
    /// a second factor (listed in [`User::second_factors`]).
    pub confirmed: bool,
    /// The last TOTP step accepted for this user: codes of this step or an
    /// earlier one are refused.
    pub last_step: Option<i64>,
}

impl fmt::Debug for StoredTotp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredTotp")
            .field("sealed_secret", &"[REDACTED]")
            .field("confirmed", &self.confirmed)
            .field("last_step", &self.last_step)
            .finish()
    }
}

/// User store failures.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum UserStoreError {
    /// The login name is taken.
    #[error("login name already taken")]
    LoginTaken,
    /// No such user.
    #[error("no such user")]
    NotFound,
    /// The OS random number generator failed.
    #[error("random number generator failed")]
    Rng,
    /// The store does not implement this (optional) operation, e.g. a
    /// custom store without second-factor support.
    #[error("operation not supported by this user store")]
    Unsupported,
    /// The database failed.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    #[error("user database error")]
    Sql(#[from] sqlx::Error),
    /// Another backend's error.
    #[error("user store error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The app's user table, as the flows need it. Every method is keyed by the
/// normalised login name or the user id.
#[async_trait]
pub trait UserStore: Send + Sync + fmt::Debug + 'static {
    /// The user with this normalised login name.
    async fn find_by_login(&self, login: &str) -> Result<Option<User>, UserStoreError>;

    /// The user with this id.
    async fn find_by_id(&self, id: &str) -> Result<Option<User>, UserStoreError>;

    /// Creates a user; [`UserStoreError::LoginTaken`] if the login exists.
    async fn create(&self, user: NewUser) -> Result<User, UserStoreError>;

    /// Replaces the password hash only if it is still `current`
    /// (compare-and-swap). Returns whether it was replaced. Used for
    /// re-hash on login: a login racing a password change never restores
    /// the old password.
    async fn replace_password_hash(
        &self,
        id: &str,
        current: &HashedPassword,
        new: &HashedPassword,
    ) -> Result<bool, UserStoreError>;

    /// Sets a new password hash and a new security stamp together, if the
    /// hash is still `current`. Returns whether it was changed.
    async fn change_password(
        &self,
        id: &str,
        current: &HashedPassword,
        new: &HashedPassword,
        new_stamp: &str,
    ) -> Result<bool, UserStoreError>;

    /// Sets a new security stamp (ending every session made before).
    async fn set_security_stamp(&self, id: &str, stamp: &str) -> Result<(), UserStoreError>;

    /// Disables or re-enables a user.
    async fn set_disabled(&self, id: &str, disabled: bool) -> Result<(), UserStoreError>;

    // Second factors. The defaults fail with `Unsupported`: a store without
    // them still works for password logins, and MFA fails closed.

    /// The user's TOTP enrolment, pending or confirmed.
    async fn totp(&self, id: &str) -> Result<Option<StoredTotp>, UserStoreError> {
        let _ = id;
        Err(UserStoreError::Unsupported)
    }

    /// Stores a pending (unconfirmed) TOTP secret, replacing any earlier
    /// pending one. Returns `false`, changing nothing, if the user has a
    /// confirmed TOTP secret (or does not exist). A pending secret is not
    /// a second factor.
    async fn set_pending_totp(
        &self,
        id: &str,
        sealed_secret: &str,
    ) -> Result<bool, UserStoreError> {
        let _ = (id, sealed_secret);
        Err(UserStoreError::Unsupported)
    }

    /// Atomically confirms the pending secret, if it is still
    /// `sealed_secret` and unconfirmed: marks it confirmed, records
    /// `step` as the last accepted step, adds [`Factor::Totp`] to the
    /// user's second factors and replaces the recovery codes with
    /// `recovery_hashes`. Returns whether it did.
    async fn confirm_totp(
        &self,
        id: &str,
        sealed_secret: &str,
        step: i64,
        recovery_hashes: &[String],
    ) -> Result<bool, UserStoreError> {
        let _ = (id, sealed_secret, step, recovery_hashes);
        Err(UserStoreError::Unsupported)
    }

    /// Atomically records `step` as the last accepted TOTP step if the
    /// user's TOTP is confirmed and `step` is greater than the last one
    /// recorded. Returns whether it did: of two concurrent calls with one
    /// step, exactly one gets `true`. (SQL: `UPDATE ... SET totp_last_step
    /// = $2 WHERE id = $1 AND (totp_last_step IS NULL OR totp_last_step <
    /// $2)`, then count affected rows.)
    async fn record_totp_step(&self, id: &str, step: i64) -> Result<bool, UserStoreError> {
        let _ = (id, step);
        Err(UserStoreError::Unsupported)
    }

    /// Replaces the user's recovery codes with `hashes`.
    async fn replace_recovery_codes(
        &self,
        id: &str,
        hashes: &[String],
    ) -> Result<(), UserStoreError> {
        let _ = (id, hashes);
        Err(UserStoreError::Unsupported)
    }

    /// Atomically removes the recovery code with this hash. Returns whether
    /// it existed: of two concurrent calls, exactly one gets `true`.
    async fn consume_recovery_code(&self, id: &str, hash: &str) -> Result<bool, UserStoreError> {
        let _ = (id, hash);
        Err(UserStoreError::Unsupported)
    }

    /// How many unused recovery codes the user has.
    async fn recovery_codes_left(&self, id: &str) -> Result<u64, UserStoreError> {
        let _ = id;
        Err(UserStoreError::Unsupported)
    }

    /// Removes the TOTP secret (pending or confirmed), its last step, the
    /// recovery codes and [`Factor::Totp`] from the second factors.
    async fn remove_totp(&self, id: &str) -> Result<(), UserStoreError> {
        let _ = id;
        Err(UserStoreError::Unsupported)
    }
}

/// A [`StampSource`] over a [`UserStore`]: a disabled or missing user has no
/// stamp, so all their sessions end.
#[derive(Debug, Clone)]
pub struct UserStamps(pub Arc<dyn UserStore>);

#[async_trait]
impl StampSource for UserStamps {
    async fn current_stamp(&self, user_id: &str) -> Result<Option<String>, StoreError> {
        let user = self
            .0
            .find_by_id(user_id)
            .await
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        Ok(user.filter(|u| !u.disabled).map(|u| u.security_stamp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_names_are_normalised() {
        assert_eq!(normalize_login("  Alice ").unwrap(), "alice");
        assert_eq!(normalize_login("ＡＬＩＣＥ").unwrap(), "alice");
        assert_eq!(
            normalize_login("Jose\u{301}").unwrap(),
            normalize_login("Jos\u{e9}").unwrap()
        );
        assert_eq!(normalize_login("   "), Err(LoginNameError::Empty));
        assert_eq!(normalize_login("a\u{0}b"), Err(LoginNameError::Control));
        assert_eq!(
            normalize_login("al\u{200b}ice"),
            Err(LoginNameError::Control)
        );
        assert_eq!(
            normalize_login("alice\u{202e}"),
            Err(LoginNameError::Control)
        );
        assert_eq!(
            normalize_login(&"a".repeat(255)),
            Err(LoginNameError::TooLong)
        );
        assert!(normalize_login(&"a".repeat(254)).is_ok());
    }

    #[test]
    fn stamps_are_random_and_user_debug_is_redacted() {
        let a = new_security_stamp().unwrap();
        assert_ne!(a, new_security_stamp().unwrap());
        assert_eq!(a.len(), 22);
        let user = User {
            id: "1".into(),
            login: "alice".into(),
            display_name: "Alice".into(),
            password_hash: HashedPassword::new("$argon2id$secret-hash"),
            security_stamp: a.clone(),
            disabled: false,
            second_factors: vec![],
        };
        let printed = format!("{user:?}");
        assert!(!printed.contains(&a) && !printed.contains("secret-hash"));
    }
}
