//! What the toolkit keeps per account, in tables of its own: the TOTP
//! enrolment, the recovery codes and the revocation epoch. The app's user
//! table is never asked to change: an [`AccountStore`] is keyed by the
//! user's id as text.
//!
//! Every check-and-record is one atomic operation of the store (of two
//! concurrent uses of one code, exactly one succeeds): the shared store
//! suite (feature `testing`) holds every implementation to that.
//!
//! It also keeps users' email addresses (for account recovery), unless the
//! app's own user type provides one ([`AuthUser::email`](crate::AuthUser::email)):
//! an address is stored unverified, and only a verified address finds its
//! user or receives a password reset. Addresses are unique among verified
//! ones (an unverified claim on an address never blocks its owner).
//!
//! Ready stores: [`MemoryAccountStore`] (the default), and with features
//! `sqlite` / `postgres` [`SqliteAccountStore`] / [`PostgresAccountStore`]
//! (tables `auth_totp`, `auth_recovery_codes`, `auth_account_epochs`,
//! `auth_emails`, created or migrated on open).

mod memory;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod sql;

pub use memory::MemoryAccountStore;
#[cfg(feature = "postgres")]
pub use sql::PostgresAccountStore;
#[cfg(feature = "sqlite")]
pub use sql::SqliteAccountStore;

use std::fmt;

use async_trait::async_trait;

use crate::session::Factor;
use crate::user::UserStoreError;

/// A user's stored TOTP enrolment.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredTotp {
    /// The secret, encrypted (`v1.<kid>.<base64url>`, see
    /// [`MfaKeys`](crate::mfa::MfaKeys)). Never plain text.
    pub sealed_secret: String,
    /// Whether a first valid code confirmed it. Only a confirmed secret is
    /// a second factor.
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

/// A user's email address as the toolkit keeps it.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredEmail {
    /// The address, normalised ([`normalize_email`]).
    pub address: String,
    /// Whether a link sent to it was followed.
    pub verified: bool,
    /// A new address waiting for its link to be followed (a change of a
    /// verified address: the old one stays in effect until then).
    pub pending: Option<String>,
}

/// An address is personal data: `Debug` shows its domain only.
impl fmt::Debug for StoredEmail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let domain = self.address.rsplit_once('@').map_or("", |(_, d)| d);
        f.debug_struct("StoredEmail")
            .field("address", &format_args!("[REDACTED]@{domain}"))
            .field("verified", &self.verified)
            .field("pending", &self.pending.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

/// An email address the toolkit does not take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid email address")]
pub struct InvalidEmail;

/// The normal form of an email address: trimmed and lowercased (the
/// toolkit treats addresses as case-insensitive, as nearly every provider
/// does). ASCII only: `local@domain`, at most 254 characters, a local part
/// of 1 to 64 printable characters without spaces, quotes or a second `@`,
/// a domain of dot-separated letters, digits and hyphens with at least one
/// dot.
///
/// ```
/// use auth_core::account::normalize_email;
///
/// assert_eq!(normalize_email(" Alice@Example.COM ").unwrap(), "alice@example.com");
/// assert!(normalize_email("alice").is_err());
/// assert!(normalize_email("a@b@example.com").is_err());
/// assert!(normalize_email("alice@localhost").is_err());
/// ```
pub fn normalize_email(address: &str) -> Result<String, InvalidEmail> {
    let address = address.trim_matches([' ', '\t']);
    if address.len() > 254 || !address.is_ascii() {
        return Err(InvalidEmail);
    }
    let (local, domain) = address.split_once('@').ok_or(InvalidEmail)?;
    let local_ok = (1..=64).contains(&local.len())
        && local.bytes().all(|b| {
            b.is_ascii_graphic()
                && !matches!(
                    b,
                    b'@' | b'"'
                        | b'('
                        | b')'
                        | b','
                        | b':'
                        | b';'
                        | b'<'
                        | b'>'
                        | b'['
                        | b'\\'
                        | b']'
                )
        })
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..");
    let domain_ok = domain.contains('.')
        && domain.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !local_ok || !domain_ok {
        return Err(InvalidEmail);
    }
    Ok(address.to_ascii_lowercase())
}

/// The toolkit's per-account state. `user` is always the id of the app's
/// user as text ([`AuthUser::id`](crate::AuthUser::id) through `Display`).
#[async_trait]
pub trait AccountStore: Send + Sync + fmt::Debug + 'static {
    /// The user's TOTP enrolment, pending or confirmed.
    async fn totp(&self, user: &str) -> Result<Option<StoredTotp>, UserStoreError>;

    /// Stores a pending (unconfirmed) TOTP secret, replacing any earlier
    /// pending one. Returns `false`, changing nothing, if the user has a
    /// confirmed TOTP secret. A pending secret is not a second factor.
    async fn set_pending_totp(
        &self,
        user: &str,
        sealed_secret: &str,
    ) -> Result<bool, UserStoreError>;

    /// Atomically confirms the pending secret, if it is still
    /// `sealed_secret` and unconfirmed: marks it confirmed, records `step`
    /// as the last accepted step and replaces the recovery codes with
    /// `recovery_hashes`. Returns whether it did.
    async fn confirm_totp(
        &self,
        user: &str,
        sealed_secret: &str,
        step: i64,
        recovery_hashes: &[String],
    ) -> Result<bool, UserStoreError>;

    /// Atomically records `step` as the last accepted TOTP step if the
    /// user's TOTP is confirmed and `step` is greater than the last one
    /// recorded. Of two concurrent calls with one step, exactly one gets
    /// `true` (SQL: `UPDATE ... SET last_step = $2 WHERE user_id = $1 AND
    /// confirmed AND (last_step IS NULL OR last_step < $2)`).
    async fn record_totp_step(&self, user: &str, step: i64) -> Result<bool, UserStoreError>;

    /// Replaces the user's *confirmed* TOTP secret `old_sealed` with
    /// `new_sealed` (the same secret sealed under the current MFA key), if
    /// it is still `old_sealed`; the rest of the enrolment stays. Returns
    /// whether it did: a concurrent removal or re-enrolment wins (SQL:
    /// `UPDATE ... SET sealed_secret = $3 WHERE user_id = $1 AND
    /// sealed_secret = $2 AND confirmed`). What lets an old MFA key leave
    /// the key ring. The default fails with [`UserStoreError::Unsupported`]
    /// (a store written before this method: secrets stay under the key
    /// that sealed them, which must then stay in the ring; a login logs a
    /// warning, `reseal_totp_secret` answers the error).
    async fn reseal_totp(
        &self,
        user: &str,
        old_sealed: &str,
        new_sealed: &str,
    ) -> Result<bool, UserStoreError> {
        let _ = (user, old_sealed, new_sealed);
        Err(UserStoreError::Unsupported)
    }

    /// Removes the TOTP secret (pending or confirmed). The recovery codes
    /// stay: they may serve another second factor (a passkey); the flow
    /// clears them with [`replace_recovery_codes`](Self::replace_recovery_codes)
    /// when no factor is left.
    async fn remove_totp(&self, user: &str) -> Result<(), UserStoreError>;

    /// Replaces the user's recovery codes with `hashes`.
    async fn replace_recovery_codes(
        &self,
        user: &str,
        hashes: &[String],
    ) -> Result<(), UserStoreError>;

    /// Atomically removes the recovery code with this hash. Returns whether
    /// it existed: of two concurrent calls, exactly one gets `true`.
    async fn consume_recovery_code(&self, user: &str, hash: &str) -> Result<bool, UserStoreError>;

    /// How many unused recovery codes the user has.
    async fn recovery_codes_left(&self, user: &str) -> Result<u64, UserStoreError>;

    /// The user's revocation epoch (0 until first raised). Sessions record
    /// it; raising it ends them on session stores that cannot revoke by
    /// user.
    async fn epoch(&self, user: &str) -> Result<u64, UserStoreError>;

    /// Raises the epoch by one and returns the new value.
    async fn raise_epoch(&self, user: &str) -> Result<u64, UserStoreError>;

    /// The user's email address, if the toolkit keeps one. The default
    /// (for stores written before addresses existed): none.
    async fn email(&self, _user: &str) -> Result<Option<StoredEmail>, UserStoreError> {
        Ok(None)
    }

    /// Sets the user's address (normalised), unverified, replacing any
    /// earlier one.
    async fn set_email(&self, _user: &str, _address: &str) -> Result<(), UserStoreError> {
        Err(UserStoreError::Unsupported)
    }

    /// A change of address: with a verified address, `address` waits as
    /// pending (the verified one stays in effect until the new one is
    /// verified; a newer pending one replaces it); without one, as
    /// [`set_email`](Self::set_email).
    async fn set_pending_email(&self, _user: &str, _address: &str) -> Result<(), UserStoreError> {
        Err(UserStoreError::Unsupported)
    }

    /// Marks `address` verified, if it is still the user's pending address
    /// (which then replaces the old one) or its unverified address.
    /// Returns `false`, changing nothing, when it is neither, or when
    /// another user has verified the same address meanwhile.
    async fn verify_email(&self, _user: &str, _address: &str) -> Result<bool, UserStoreError> {
        Err(UserStoreError::Unsupported)
    }

    /// The user whose *verified* address is `address` (normalised).
    async fn find_by_email(&self, _address: &str) -> Result<Option<String>, UserStoreError> {
        Ok(None)
    }

    /// The user's confirmed second factors (TOTP when confirmed). A user
    /// with any needs a second step after the password.
    async fn second_factors(&self, user: &str) -> Result<Vec<Factor>, UserStoreError> {
        Ok(match self.totp(user).await? {
            Some(totp) if totp.confirmed => vec![Factor::Totp],
            _ => Vec::new(),
        })
    }
}
