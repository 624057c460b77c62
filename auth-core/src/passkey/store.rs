//! Where passkeys live: [`StoredPasskey`], the [`PasskeyStore`] trait and
//! its error, and the ready stores ([`MemoryPasskeyStore`]; with features
//! `sqlite` / `postgres`, `SqlitePasskeyStore` / `PostgresPasskeyStore`).

mod memory;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;

pub use memory::MemoryPasskeyStore;
#[cfg(feature = "postgres")]
pub use sql::PostgresPasskeyStore;
#[cfg(feature = "sqlite")]
pub use sql::SqlitePasskeyStore;

use std::fmt;

use async_trait::async_trait;
use base64ct::{Base64UrlUnpadded, Encoding};

use crate::clock::Timestamp;

/// The longest credential id WebAuthn allows, in bytes (a credential id is
/// 16 to 1023 bytes; shorter ones are accepted here, never longer).
pub const MAX_CREDENTIAL_ID_BYTES: usize = 1023;

/// One registered passkey of a user.
///
/// `Debug` shows every field but `credential`, of which it shows the length
/// only (the credential id as its [`id`](Self::id)).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredPasskey {
    /// The WebAuthn credential ID (raw bytes). Unique across all users: a
    /// credential belongs to one user only.
    pub credential_id: Vec<u8>,
    /// The user (the app's user id as text).
    pub user_id: String,
    /// The user's name for it ("YubiKey", "Phone"), at most 64 chars (the
    /// flow checks; the store just stores).
    pub name: String,
    /// The credential as the WebAuthn library serialises it (JSON; public
    /// key, counter, backup flags...). Opaque here.
    pub credential: String,
    /// When it was registered.
    pub created_at: Timestamp,
    /// Its latest successful use, if any.
    pub last_used_at: Option<Timestamp>,
    /// Backup eligible (a passkey that can be synced): shown in the list.
    pub backup_eligible: bool,
    /// Backed up (synced, as of its latest use): shown in the list.
    pub backed_up: bool,
}

impl StoredPasskey {
    /// The public handle in URLs: base64url of the credential id, without
    /// padding. [`decode_id`](Self::decode_id) turns it back.
    pub fn id(&self) -> String {
        Base64UrlUnpadded::encode_string(&self.credential_id)
    }

    /// The credential id of a handle made by [`id`](Self::id): strict
    /// unpadded base64url of 1 to [`MAX_CREDENTIAL_ID_BYTES`] bytes; `None`
    /// for anything else.
    pub fn decode_id(id: &str) -> Option<Vec<u8>> {
        // 1023 bytes are 1364 characters.
        if id.is_empty() || id.len() > MAX_CREDENTIAL_ID_BYTES.div_ceil(3) * 4 {
            return None;
        }
        let bytes = Base64UrlUnpadded::decode_vec(id).ok()?;
        (!bytes.is_empty() && bytes.len() <= MAX_CREDENTIAL_ID_BYTES).then_some(bytes)
    }
}

impl fmt::Debug for StoredPasskey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredPasskey")
            .field("id", &self.id())
            .field("user_id", &self.user_id)
            .field("name", &self.name)
            .field(
                "credential",
                &format_args!("[{} bytes]", self.credential.len()),
            )
            .field("created_at", &self.created_at)
            .field("last_used_at", &self.last_used_at)
            .field("backup_eligible", &self.backup_eligible)
            .field("backed_up", &self.backed_up)
            .finish()
    }
}

/// Passkey store failures. Messages hold no credential material.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum PasskeyStoreError {
    /// The credential id is stored already (for this user or another).
    #[error("passkey credential id is already registered")]
    CredentialTaken,
    /// A stored record could not be read.
    #[error("stored passkey is invalid")]
    Corrupt,
    /// The backend failed (its own error is the source).
    #[error("passkey store error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl PasskeyStoreError {
    /// Wraps a backend's error.
    pub fn backend(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend(Box::new(error))
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl From<sqlx::Error> for PasskeyStoreError {
    fn from(error: sqlx::Error) -> Self {
        Self::backend(error)
    }
}

/// Where passkeys live. Every method is one atomic step; implementations
/// run the shared suite (`auth_core::testing::passkey_store_suite`,
/// features `passkeys` and `testing`).
#[async_trait]
pub trait PasskeyStore: Send + Sync + fmt::Debug {
    /// Stores a new passkey. [`PasskeyStoreError::CredentialTaken`] if the
    /// credential id is already stored (for any user): never overwrites.
    async fn insert(&self, passkey: &StoredPasskey) -> Result<(), PasskeyStoreError>;

    /// The user's passkeys, oldest first (`created_at`; equal times by
    /// credential id, bytewise).
    async fn list(&self, user_id: &str) -> Result<Vec<StoredPasskey>, PasskeyStoreError>;

    /// The passkey with this credential id, whoever owns it.
    async fn find(&self, credential_id: &[u8]) -> Result<Option<StoredPasskey>, PasskeyStoreError>;

    /// After a successful use: compare-and-set. Replaces `credential` (new
    /// counter / flags), sets `last_used_at` and `backed_up`, only if the
    /// stored credential string still equals `expected` (the one the
    /// verification read); returns whether it did. So two concurrent uses
    /// that change the credential never both write, and a stale counter
    /// never overwrites a newer one. (A synced passkey's credential often
    /// does not change from use to use, counter 0: then both may write.
    /// What refuses a replayed assertion is the single-use ceremony
    /// challenge, not this store.)
    async fn record_use(
        &self,
        credential_id: &[u8],
        expected: &str,
        credential: &str,
        backed_up: bool,
        used_at: Timestamp,
    ) -> Result<bool, PasskeyStoreError>;

    /// Renames one of the user's passkeys; `false` if the user has no such
    /// passkey (another user's id is "no such passkey").
    async fn rename(
        &self,
        user_id: &str,
        credential_id: &[u8],
        name: &str,
    ) -> Result<bool, PasskeyStoreError>;

    /// Deletes one of the user's passkeys; `false` if none (another user's
    /// is untouched).
    async fn delete(&self, user_id: &str, credential_id: &[u8]) -> Result<bool, PasskeyStoreError>;

    /// How many passkeys the user has (one cheap query).
    async fn count(&self, user_id: &str) -> Result<u64, PasskeyStoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passkey(credential_id: Vec<u8>) -> StoredPasskey {
        StoredPasskey {
            credential_id,
            user_id: "u1".into(),
            name: "YubiKey".into(),
            credential: r#"{"cred":{"counter":7,"key":"secret-public-key"}}"#.into(),
            created_at: Timestamp::from_unix_millis(1_700_000_000_000),
            last_used_at: None,
            backup_eligible: true,
            backed_up: false,
        }
    }

    #[test]
    fn the_id_is_unpadded_base64url_and_decodes_strictly() {
        let key = passkey(vec![0xfb, 0xff, 0x01, 0x02]);
        assert_eq!(key.id(), "-_8BAg");
        assert_eq!(
            StoredPasskey::decode_id(&key.id()),
            Some(key.credential_id.clone())
        );
        let longest = passkey(vec![0xa5; MAX_CREDENTIAL_ID_BYTES]);
        assert_eq!(longest.id().len(), 1364);
        assert_eq!(
            StoredPasskey::decode_id(&longest.id()),
            Some(longest.credential_id.clone())
        );
        let too_long = passkey(vec![0xa5; MAX_CREDENTIAL_ID_BYTES + 1]);
        assert_eq!(StoredPasskey::decode_id(&too_long.id()), None);
        // Padding, the standard alphabet, stray characters, non-canonical
        // trailing bits, empty.
        for bad in ["-_8BAg==", "+/8BAg", "-_8B Ag", "-_8BAh", "", "A"] {
            assert_eq!(StoredPasskey::decode_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn debug_shows_the_credential_length_only() {
        let key = passkey(vec![1, 2, 3]);
        let debug = format!("{key:?}");
        assert!(!debug.contains("secret-public-key"), "{debug}");
        assert!(debug.contains(&format!("[{} bytes]", key.credential.len())));
        assert!(debug.contains("YubiKey") && debug.contains("u1") && debug.contains(&key.id()));
    }
}
