use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use super::{SessionKey, SessionRecord};
use crate::clock::Timestamp;

/// The outcome of a compare-and-set write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveOutcome {
    /// Written; the stored version is now `expected + 1`.
    Saved,
    /// Someone else wrote first: the stored version is not the expected one.
    /// Reload, re-apply the change, try again.
    Conflict,
    /// The session no longer exists (destroyed, expired or rotated away).
    /// It is never re-created by a save.
    Missing,
}

/// Storage for session records, keyed by [`SessionKey`] (a hash of the
/// session ID, never the ID).
///
/// Every implementation must pass the shared store suite
/// (`auth_core::testing::session_store_suite`, feature `testing`). The
/// rules it checks:
///
/// * `load` and `list_by_user` never return a record whose
///   [`expires_at`](SessionRecord::expires_at) has passed.
/// * `create` never overwrites: an existing key is
///   [`StoreError::Collision`].
/// * `save` and `rotate` are compare-and-set on
///   [`version`](SessionRecord::version): they write only when the stored
///   version equals `expected_version`, store `expected_version + 1`, and
///   never resurrect a missing record.
/// * `rotate` moves a record to a new key atomically: afterwards the old key
///   is gone.
#[async_trait]
pub trait SessionStore: Send + Sync + fmt::Debug + 'static {
    /// Stores a new record under `key` (its `version` as given).
    async fn create(&self, key: &SessionKey, record: &SessionRecord) -> Result<(), StoreError>;

    /// The live record under `key`, if any. Shared: a store that holds
    /// records in memory hands out the one it holds, without a copy (this
    /// is every authenticated request's read).
    async fn load(&self, key: &SessionKey) -> Result<Option<Arc<SessionRecord>>, StoreError>;

    /// Compare-and-set write of `record` (whose `version` is ignored; the
    /// store writes `expected_version + 1`).
    async fn save(
        &self,
        key: &SessionKey,
        record: &SessionRecord,
        expected_version: u64,
    ) -> Result<SaveOutcome, StoreError>;

    /// Moves the record at `old` to `new`, writing `record`, if the stored
    /// version is `expected_version`. `new` already taken is a
    /// [`StoreError::Collision`] and changes nothing.
    async fn rotate(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        record: &SessionRecord,
        expected_version: u64,
    ) -> Result<SaveOutcome, StoreError>;

    /// Deletes one record. Returns whether it existed.
    async fn delete(&self, key: &SessionKey) -> Result<bool, StoreError>;

    /// Deletes every record of `user_id`, except `keep` if given. Returns how
    /// many live sessions ended (expired records it deletes are not
    /// counted).
    async fn delete_by_user(
        &self,
        user_id: &str,
        keep: Option<&SessionKey>,
    ) -> Result<u64, StoreError>;

    /// The live records of `user_id`.
    async fn list_by_user(
        &self,
        user_id: &str,
    ) -> Result<Vec<(SessionKey, SessionRecord)>, StoreError>;

    /// Deletes every record that expired at or before `now`. Returns how
    /// many were deleted (stores with native expiry may return 0).
    async fn delete_expired(&self, now: Timestamp) -> Result<u64, StoreError>;

    /// Whether [`delete_by_user`](Self::delete_by_user) and
    /// [`list_by_user`](Self::list_by_user) work. A store that cannot
    /// (answering [`StoreError::Unsupported`]) says `false`: the toolkit
    /// then also checks the account's revocation epoch on every load, so
    /// "sign out everywhere" still ends every session.
    fn revokes_by_user(&self) -> bool {
        true
    }
}

/// A store failure. The source error is kept, never flattened to text; no
/// variant carries a session ID.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `create` or `rotate` hit an existing key.
    #[error("session key already exists")]
    Collision,
    /// A bounded store is full of live sessions.
    #[error("session store is full")]
    Full,
    /// A stored record could not be decoded.
    #[error("stored session record is invalid")]
    Corrupt(#[source] serde_json::Error),
    /// The OS random number generator failed.
    #[error("random number generator failed")]
    Rng,
    /// The database failed.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    #[error("session database error")]
    Sql(#[from] sqlx::Error),
    /// Redis failed.
    #[cfg(feature = "redis")]
    #[error("session redis error")]
    Redis(#[from] redis::RedisError),
    /// The store cannot do this (e.g. list a user's sessions on a
    /// tower-sessions store); revoke-all then works through the security
    /// stamp.
    #[error("operation not supported by this session store")]
    Unsupported,
    /// Another backend's error.
    #[error("session store error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}
