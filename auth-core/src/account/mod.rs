//! What the toolkit keeps per account, in tables of its own: the TOTP
//! enrolment, the recovery codes and the revocation epoch. The app's user
//! table is never asked to change: an [`AccountStore`] is keyed by the
//! user's id as text.
//!
//! Every check-and-record is one atomic operation of the store (of two
//! concurrent uses of one code, exactly one succeeds): the shared store
//! suite (feature `testing`) holds every implementation to that.
//!
//! Ready stores: [`MemoryAccountStore`] (the default), and with features
//! `sqlite` / `postgres` [`SqliteAccountStore`] / [`PostgresAccountStore`]
//! (tables `auth_totp`, `auth_recovery_codes`, `auth_account_epochs`,
//! created or migrated on open).

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

    /// Removes the TOTP secret (pending or confirmed) and the recovery
    /// codes together.
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

    /// The user's confirmed second factors (TOTP when confirmed). A user
    /// with any needs a second step after the password.
    async fn second_factors(&self, user: &str) -> Result<Vec<Factor>, UserStoreError> {
        Ok(match self.totp(user).await? {
            Some(totp) if totp.confirmed => vec![Factor::Totp],
            _ => Vec::new(),
        })
    }
}
