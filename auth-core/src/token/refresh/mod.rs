//! Refresh-token families (RFC 9700 section 4.14.2): opaque tokens, stored
//! hashed, rotated on every use, with reuse detection.
//!
//! * A sign-in starts a [`Family`]; its first token is current. A token is
//!   384 bits from the OS CSPRNG, handed out once as 64 base64url
//!   characters ([`RefreshToken`]): a family secret that every token of the
//!   family shares, and 256 bits of its own. Stores keep only the family's
//!   id (a one-way function of the secret) and the SHA-256 of its current
//!   token ([`RefreshKey`]).
//! * [`RefreshStore::rotate`] spends the current token and makes the
//!   caller's new one current, atomically: of any number of concurrent
//!   rotations of one token, exactly one answers [`Rotation::Rotated`], so a
//!   family never branches.
//! * A token names its family, so a store keeps one record per family,
//!   however often it rotates. A token of a live family that is not its
//!   current one was spent (only the holders of the family's tokens know
//!   its secret): presenting it is *reuse*. One of the two holders is an
//!   attacker, so the whole family is revoked ([`Rotation::Reused`]), and
//!   both must sign in again.
//! * An optional grace period forgives a client that retries a refresh
//!   whose answer it lost: the token spent by the latest rotation, shown
//!   again within `grace`, answers [`Rotation::Grace`] with the successor
//!   handed out then (sealed by the caller), never a new one.
//! * A family dies at its absolute `expires_at`, after `idle_timeout`
//!   without a rotation, or when revoked (by token, by id, or every family
//!   of a user). [`RefreshStore::is_live`] is the per-request check of the
//!   access tokens a family issued.
//!
//! Every store judges time by the `now` its caller passes. A revoked family
//! is deleted, so its tokens answer [`Rotation::Invalid`] afterwards.
//!
//! Ready stores run one shared suite (feature `testing`,
//! `auth_core::testing::refresh_store_suite`): [`MemoryRefreshStore`], and
//! with features `sqlite` / `postgres` / `redis` `SqliteRefreshStore` /
//! `PostgresRefreshStore` / `RedisRefreshStore`.

mod memory;
#[cfg(feature = "redis")]
mod redis_store;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;

pub use memory::MemoryRefreshStore;
#[cfg(feature = "redis")]
pub use redis_store::RedisRefreshStore;
#[cfg(feature = "postgres")]
pub use sql::PostgresRefreshStore;
#[cfg(feature = "sqlite")]
pub use sql::SqliteRefreshStore;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use base64ct::{Base64UrlUnpadded, Encoding};

use sha2::{Digest, Sha256};

use crate::clock::Timestamp;

/// The bytes of a refresh token: a family secret, then the token's own
/// random part.
const FAMILY_SECRET_BYTES: usize = 16;
const OWN_BYTES: usize = 32;
const TOKEN_BYTES: usize = FAMILY_SECRET_BYTES + OWN_BYTES;
/// Base64url, unpadded, of [`TOKEN_BYTES`].
const TOKEN_CHARS: usize = 64;

/// A refresh token as the client gets it: 384 bits from the OS CSPRNG, 64
/// base64url characters. The first 128 bits are the *family secret*, the
/// same in every token of one sign-in; the other 256 are the token's own.
/// `Debug` is redacted; stores keep only its [`RefreshKey`].
///
/// The family's id is a one-way function of the family secret
/// ([`RefreshKey::family_id`]): a token names its family, so a store keeps
/// one record per family however often it rotates (no record per spent
/// token), and a token of a live family that is not its current one is a
/// spent one, since only the holder of one of the family's tokens knows
/// the secret. The id that access tokens carry (`sid`) reveals nothing of
/// the secret.
#[derive(Clone)]
pub struct RefreshToken([u8; TOKEN_BYTES]);

impl RefreshToken {
    /// The first token of a new family, from the OS CSPRNG.
    pub fn generate() -> Result<Self, RefreshStoreError> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes).map_err(|_| RefreshStoreError::Rng)?;
        Ok(Self(bytes))
    }

    /// A successor of this token in its family: the same family secret, a
    /// fresh random part.
    pub fn successor(&self) -> Result<Self, RefreshStoreError> {
        let mut bytes = self.0;
        getrandom::fill(&mut bytes[FAMILY_SECRET_BYTES..]).map_err(|_| RefreshStoreError::Rng)?;
        Ok(Self(bytes))
    }

    /// Strict parse of the 64-character base64url form; `None` for
    /// anything else (the 43-character tokens of earlier versions too).
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != TOKEN_CHARS {
            return None;
        }
        let mut bytes = [0u8; TOKEN_BYTES];
        let decoded = Base64UrlUnpadded::decode(text, &mut bytes).ok()?;
        (decoded.len() == TOKEN_BYTES).then_some(Self(bytes))
    }

    /// The 64-character base64url form, for the client.
    pub fn encode(&self) -> String {
        Base64UrlUnpadded::encode_string(&self.0)
    }

    /// The key the store keeps: the family's id and the token's SHA-256.
    pub fn key(&self) -> RefreshKey {
        let mut family = Sha256::new();
        family.update(b"auth-core refresh family v1\0");
        family.update(&self.0[..FAMILY_SECRET_BYTES]);
        let family: [u8; 32] = family.finalize().into();
        let mut id = [0u8; FAMILY_ID_BYTES];
        id.copy_from_slice(&family[..FAMILY_ID_BYTES]);
        RefreshKey {
            family: id,
            digest: Sha256::digest(self.0).into(),
        }
    }
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken([REDACTED])")
    }
}

/// Bytes of a family id (22 base64url characters).
const FAMILY_ID_BYTES: usize = 16;

/// The stored key of a refresh token: its family's id and its SHA-256.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RefreshKey {
    family: [u8; FAMILY_ID_BYTES],
    digest: [u8; 32],
}

impl RefreshKey {
    /// The key of a token of family `family_id` whose SHA-256 is `digest`
    /// (for a store's tests); `None` unless `family_id` is a family id (22
    /// base64url characters).
    pub fn new(family_id: &str, digest: [u8; 32]) -> Option<Self> {
        let mut family = [0u8; FAMILY_ID_BYTES];
        let decoded = Base64UrlUnpadded::decode(family_id, &mut family).ok()?;
        (decoded.len() == FAMILY_ID_BYTES && family_id.len() == 22)
            .then_some(Self { family, digest })
    }

    /// The id of the token's family (22 base64url characters): what
    /// [`Family::id`] and the access tokens' `sid` hold.
    pub fn family_id(&self) -> String {
        Base64UrlUnpadded::encode_string(&self.family)
    }

    /// The token's SHA-256.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.digest
    }

    /// The SHA-256 in lowercase hex (64 characters), as SQL and Redis
    /// records hold it.
    pub fn to_hex(&self) -> String {
        crate::session::hex_digest(&self.digest)
    }
}

/// A digest of a token is no secret, but a prefix is all a log needs.
impl fmt::Debug for RefreshKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RefreshKey({}, {}..)",
            self.family_id(),
            &self.to_hex()[..8]
        )
    }
}

/// A random id: 128 bits as 22 base64url characters (an access token's
/// `jti`).
pub(crate) fn random_id() -> Result<String, RefreshStoreError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|_| RefreshStoreError::Rng)?;
    Ok(Base64UrlUnpadded::encode_string(&bytes))
}

/// A family: the chain of refresh tokens of one sign-in. `Debug` leaves
/// out the stamp (a fingerprint of the password hash).
#[derive(Clone, PartialEq, Eq)]
pub struct Family {
    /// The family's id, from its first token ([`RefreshKey::family_id`]);
    /// access tokens carry it so [`RefreshStore::is_live`] can check them.
    pub id: String,
    /// The user (the app's user id as text).
    pub user_id: String,
    /// How the sign-in authenticated; copied into every access token.
    pub amr: Vec<String>,
    /// The user's session stamp when the family began (a fingerprint of
    /// the password hash and, where used, the account epoch): a refresh
    /// with another current stamp revokes the family, so a password change
    /// through any path, the app's own included, ends the sign-in.
    pub stamp: String,
    /// When the sign-in happened.
    pub created_at: Timestamp,
    /// The absolute end of the family, whatever its use.
    pub expires_at: Timestamp,
    /// A family whose current token goes unused this long dies (stores
    /// keep it to the millisecond).
    pub idle_timeout: Duration,
    /// The latest rotation (the sign-in, at first).
    pub last_used_at: Timestamp,
}

impl std::fmt::Debug for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Family")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("amr", &self.amr)
            .field("stamp", &"[REDACTED]")
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("idle_timeout", &self.idle_timeout)
            .field("last_used_at", &self.last_used_at)
            .finish()
    }
}

impl Family {
    /// Whether the family is alive at `now` as far as time goes: before
    /// its `expires_at` and less than `idle_timeout` after its
    /// `last_used_at` (revocation is the store's to know).
    pub fn is_live_at(&self, now: Timestamp) -> bool {
        now < self.expires_at && now < self.last_used_at.saturating_add(self.idle_timeout)
    }
}

/// What [`RefreshStore::rotate`] did. `Debug` shows the sealed successor's
/// length only.
#[derive(Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The presented token was current: it is now spent, the new one is
    /// current, and the family's `last_used_at` is `now`.
    Rotated(Family),
    /// The presented token was spent by the family's latest rotation, less
    /// than `grace` ago: nothing changed. The caller hands out the
    /// successor of that rotation again (unsealing `sealed_successor`),
    /// never a new one.
    Grace {
        /// The family, as it is.
        family: Family,
        /// The blob passed to the rotation that spent the token.
        sealed_successor: Vec<u8>,
    },
    /// The presented token is of a live family but is not its current one
    /// (spent outside the grace period, or not by the latest rotation):
    /// the whole family is now revoked. The flow reports it.
    Reused {
        /// The revoked family.
        family_id: String,
        /// Its user.
        user_id: String,
    },
    /// A token of an unknown family, or of one that is revoked, past its
    /// `expires_at`, or idle for `idle_timeout` or longer.
    Invalid,
}

impl std::fmt::Debug for Rotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rotated(family) => f.debug_tuple("Rotated").field(family).finish(),
            Self::Grace {
                family,
                sealed_successor,
            } => f
                .debug_struct("Grace")
                .field("family", family)
                .field(
                    "sealed_successor",
                    &format_args!("[{} bytes]", sealed_successor.len()),
                )
                .finish(),
            Self::Reused { family_id, user_id } => f
                .debug_struct("Reused")
                .field("family_id", family_id)
                .field("user_id", user_id)
                .finish(),
            Self::Invalid => f.write_str("Invalid"),
        }
    }
}

/// Refresh store failures. Messages hold no token or key.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum RefreshStoreError {
    /// The family id exists already.
    #[error("refresh family already exists")]
    Collision,
    /// The OS random number generator failed.
    #[error("random number generator failed")]
    Rng,
    /// A stored record could not be read.
    #[error("stored refresh family is invalid")]
    Corrupt,
    /// The backend failed (its own error is the source).
    #[error("refresh store error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl RefreshStoreError {
    /// Wraps a backend's error.
    pub fn backend(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend(Box::new(error))
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl From<sqlx::Error> for RefreshStoreError {
    fn from(error: sqlx::Error) -> Self {
        Self::backend(error)
    }
}

#[cfg(feature = "redis")]
impl From<redis::RedisError> for RefreshStoreError {
    fn from(error: redis::RedisError) -> Self {
        Self::backend(error)
    }
}

/// A duration in whole milliseconds (saturating), as the SQL and Redis
/// stores keep idle timeouts and grace periods.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres", feature = "redis")),
    allow(dead_code)
)]
pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Where refresh-token families live: one record per family, found by the
/// family id that every [`RefreshKey`] carries. Implementations run the
/// shared suite (`auth_core::testing::refresh_store_suite`, feature
/// `testing`).
#[async_trait]
pub trait RefreshStore: Send + Sync + fmt::Debug {
    /// Starts a family whose first (current) token is `first`, a key of
    /// the family (`first.family_id() == family.id`);
    /// [`RefreshStoreError::Collision`] if the id exists.
    async fn create(&self, family: &Family, first: RefreshKey) -> Result<(), RefreshStoreError>;

    /// Rotates `presented` to `next` (a key of the same family), atomically
    /// (see [`Rotation`]): in family `presented.family_id()`, the current
    /// token rotates; the one spent by the latest rotation, within `grace`,
    /// answers [`Rotation::Grace`]; any other key of a live family is
    /// reuse and revokes it.
    /// `sealed_successor` is an opaque blob (the caller's encryption of the
    /// new token under a key derived from the presented one), kept with the
    /// spent token for the grace period. `grace`: `None` for no grace
    /// period (the flows' default).
    async fn rotate(
        &self,
        presented: RefreshKey,
        next: RefreshKey,
        sealed_successor: &[u8],
        now: Timestamp,
        grace: Option<Duration>,
    ) -> Result<Rotation, RefreshStoreError>;

    /// Revokes the family of `token` (`token.family_id()`: any token of
    /// the family, current or spent; RFC 7009 revocation, logout). Returns
    /// the family's `(id, user_id)` if it had not been revoked already.
    async fn revoke_by_token(
        &self,
        token: RefreshKey,
    ) -> Result<Option<(String, String)>, RefreshStoreError>;

    /// Revokes one family. Returns whether it existed unrevoked.
    async fn revoke_family(&self, family_id: &str) -> Result<bool, RefreshStoreError>;

    /// Revokes every family of a user (password change, sign out
    /// everywhere, disabled user, factor change). Returns how many.
    async fn revoke_user(&self, user_id: &str) -> Result<u64, RefreshStoreError>;

    /// Whether the family is live at `now`: not revoked, before its
    /// `expires_at`, used less than `idle_timeout` ago. One cheap read: the
    /// per-request check of access tokens.
    async fn is_live(&self, family_id: &str, now: Timestamp) -> Result<bool, RefreshStoreError>;

    /// Whether [`family`](Self::family) reads families (the default: no,
    /// for a store written before it).
    fn reads_families(&self) -> bool {
        false
    }

    /// Family `family_id` as stored (live or not), if it exists: what a
    /// flow run on a bearer token checks before it changes the account (the
    /// token's user and the stamp of its sign-in). Not on the per-request
    /// path. The default answers `None`; a store that implements it also
    /// answers `true` from [`reads_families`](Self::reads_families).
    async fn family(&self, family_id: &str) -> Result<Option<Family>, RefreshStoreError> {
        let _ = family_id;
        Ok(None)
    }

    /// Deletes the families dead at `now` (expired or idle); returns how many families (stores with native expiry may
    /// answer 0).
    async fn purge(&self, now: Timestamp) -> Result<u64, RefreshStoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_strictly_and_debug_is_redacted() {
        let token = RefreshToken::generate().unwrap();
        let text = token.encode();
        assert_eq!(text.len(), 64);
        assert_eq!(RefreshToken::parse(&text).unwrap().key(), token.key());
        assert_ne!(RefreshToken::generate().unwrap().key(), token.key());
        for bad in [
            "",
            "x",
            &text[..63],
            &text[..43],
            &format!("{text}A"),
            &format!("+{}", &text[1..]),
            &format!("{}=", &text[..63]),
        ] {
            assert!(RefreshToken::parse(bad).is_none(), "{bad}");
        }
        assert!(!format!("{token:?}").contains(&text));
        let key = token.key();
        assert_eq!(
            RefreshKey::new(&key.family_id(), *key.as_bytes()),
            Some(key)
        );
        assert_eq!(RefreshKey::new("family-id", *key.as_bytes()), None);
        assert_eq!(key.to_hex().len(), 64);
        assert!(!format!("{key:?}").contains(&key.to_hex()));
        let id = random_id().unwrap();
        assert_eq!(id.len(), 22);
        assert_ne!(random_id().unwrap(), id);
    }

    /// A successor keeps the family (its id) and nothing else; another
    /// first token starts another family. The id reveals no byte of the
    /// family secret (it is a digest of it).
    #[test]
    fn successors_share_the_family_and_nothing_else() {
        let first = RefreshToken::generate().unwrap();
        let second = first.successor().unwrap();
        let third = second.successor().unwrap();
        let id = first.key().family_id();
        assert_eq!(id.len(), 22);
        assert_eq!(second.key().family_id(), id);
        assert_eq!(third.key().family_id(), id);
        assert_ne!(second.key(), first.key());
        assert_ne!(third.key(), second.key());
        assert_ne!(second.encode()[22..], first.encode()[22..]);
        assert_ne!(RefreshToken::generate().unwrap().key().family_id(), id);
        let secret = Base64UrlUnpadded::encode_string(&first.0[..FAMILY_SECRET_BYTES]);
        assert_ne!(id, secret);
        // A known answer: the derivation is part of the stored format.
        let fixed = RefreshToken([7; TOKEN_BYTES]);
        let mut expected = Sha256::new();
        expected.update(b"auth-core refresh family v1\0");
        expected.update([7u8; FAMILY_SECRET_BYTES]);
        let expected: [u8; 32] = expected.finalize().into();
        assert_eq!(
            fixed.key().family_id(),
            Base64UrlUnpadded::encode_string(&expected[..16])
        );
        assert_eq!(
            *fixed.key().as_bytes(),
            <[u8; 32]>::from(Sha256::digest([7u8; TOKEN_BYTES]))
        );
    }

    /// A family begun at `t0`: 100 s to live, 10 s idle.
    fn family(t0: Timestamp) -> Family {
        Family {
            id: "family-id".into(),
            user_id: "u".into(),
            amr: vec!["pwd".into()],
            stamp: "stamp-secret".into(),
            created_at: t0,
            expires_at: t0.saturating_add(Duration::from_secs(100)),
            idle_timeout: Duration::from_secs(10),
            last_used_at: t0,
        }
    }

    #[test]
    fn a_family_lives_until_its_expiry_or_idle_deadline() {
        let t0 = Timestamp::from_unix_millis(1_700_000_000_000);
        let family = Family {
            last_used_at: t0.saturating_add(Duration::from_secs(85)),
            ..family(t0)
        };
        let at = |ms: u64| t0.saturating_add(Duration::from_millis(ms));
        assert!(family.is_live_at(at(94_999)));
        assert!(!family.is_live_at(at(95_000)), "idle");
        let fresh = Family {
            last_used_at: at(95_000),
            ..family
        };
        assert!(fresh.is_live_at(at(99_999)));
        assert!(!fresh.is_live_at(at(100_000)), "expired");
    }

    /// A family's stamp and a sealed successor stay out of `Debug`.
    #[test]
    fn debug_shows_no_stamp_and_no_sealed_successor() {
        let family = family(Timestamp::from_unix_millis(1_700_000_000_000));
        let sealed = b"sealed-secret".to_vec();
        let printed = [
            format!("{family:?}"),
            format!("{:?}", Rotation::Rotated(family.clone())),
            format!(
                "{:?}",
                Rotation::Grace {
                    family,
                    sealed_successor: sealed.clone(),
                }
            ),
        ];
        for text in &printed {
            assert!(text.contains("family-id"), "{text}");
            assert!(!text.contains("stamp-secret"), "{text}");
            assert!(!text.contains("115, 101, 97"), "{text}");
        }
        assert!(printed[2].contains("[13 bytes]"), "{}", printed[2]);
    }
}
