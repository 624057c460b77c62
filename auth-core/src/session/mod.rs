//! Revocable server-side sessions.
//!
//! * [`SessionId`]: 256 bits from the OS CSPRNG, base64url in the cookie,
//!   parsed strictly, never printed.
//! * [`SessionKey`]: SHA-256 of the ID. Stores are keyed by it, never by the
//!   ID, so a leaked store or backup cannot be replayed as cookies.
//! * [`SessionRecord`]: what the store keeps: user, authentication state,
//!   times and deadlines, client IP and user agent, the user's security
//!   stamp at login, and an app data map.
//! * [`SessionManager`]: load (with idle, absolute and security-stamp
//!   checks), create, update without lost writes, rotate, destroy, revoke a
//!   user's sessions, list them by [`SessionHandle`].
//! * [`SessionStore`]: the storage trait, with a memory store and, behind
//!   features, SQLite, PostgreSQL and Redis stores. One test suite runs
//!   against all of them.

mod manager;
mod memory;
#[cfg(feature = "redis")]
mod redis_store;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
mod store;
#[cfg(feature = "tower-sessions")]
mod tower;

pub use manager::{
    ClientInfo, NewSession, Session, SessionConfig, SessionConfigBuilder, SessionError,
    SessionInfo, SessionManager, StampSource,
};
pub use memory::MemoryStore;
#[cfg(feature = "redis")]
pub use redis_store::RedisStore;
#[cfg(feature = "postgres")]
pub use sql::PostgresStore;
#[cfg(feature = "sqlite")]
pub use sql::SqliteStore;
pub use store::{SaveOutcome, SessionStore, StoreError};
#[cfg(feature = "tower-sessions")]
pub use tower::TowerSessionsStore;

use std::collections::BTreeMap;
use std::fmt;

use base64ct::{Base64UrlUnpadded, Encoding};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::clock::Timestamp;

/// Length of a session ID in bytes (256 bits).
const ID_BYTES: usize = 32;
/// Length of an encoded session ID: 32 bytes in unpadded base64url.
const ENCODED_ID_LEN: usize = 43;

/// A session ID: the bearer secret in the cookie.
///
/// It has no public field, cannot be constructed except from the CSPRNG or
/// by strict parsing, and its `Debug` output is redacted.
#[derive(Clone)]
pub struct SessionId([u8; ID_BYTES]);

impl SessionId {
    /// A fresh ID: 256 bits from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, StoreError> {
        let mut bytes = [0u8; ID_BYTES];
        getrandom::fill(&mut bytes).map_err(|_| StoreError::Rng)?;
        Ok(Self(bytes))
    }

    /// Parses a cookie value. Anything but exactly 43 characters of
    /// canonical unpadded base64url is `None`: simply "no session".
    pub fn parse(value: &str) -> Option<Self> {
        if value.len() != ENCODED_ID_LEN {
            return None;
        }
        let mut bytes = [0u8; ID_BYTES];
        let decoded = Base64UrlUnpadded::decode(value, &mut bytes).ok()?;
        (decoded.len() == ID_BYTES).then_some(Self(bytes))
    }

    /// The cookie value (unpadded base64url, 43 characters).
    pub fn encode(&self) -> String {
        Base64UrlUnpadded::encode_string(&self.0)
    }

    /// The store key: SHA-256 of the ID.
    pub fn key(&self) -> SessionKey {
        SessionKey(Sha256::digest(self.0).into())
    }
}

impl PartialEq for SessionId {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for SessionId {}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId([REDACTED])")
    }
}

/// Lower-case hex of a 32-byte digest, in constant time (a digest of a
/// secret: its encoding should not leak it through timing either).
pub(crate) fn hex_digest(digest: &[u8; 32]) -> String {
    let mut buf = [0u8; 64];
    // 64 bytes always hold 32 bytes' hex: the error cannot happen.
    base16ct::lower::encode_str(digest, &mut buf)
        .unwrap_or_default()
        .to_owned()
}

/// The key a store files a session under: SHA-256 of the [`SessionId`].
/// Knowing it does not let anyone present the session.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey([u8; 32]);

impl SessionKey {
    /// The raw 32 bytes, for binary columns.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// From raw bytes read back from a store.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Lower-case hex, for text keys (Redis).
    pub fn to_hex(&self) -> String {
        hex_digest(&self.0)
    }

    /// Parses [`to_hex`](Self::to_hex) output.
    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 64 || !hex.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Self(bytes))
    }

    /// The public handle shown to the user when listing sessions.
    pub fn handle(&self) -> SessionHandle {
        let digest = Sha256::new()
            .chain_update(b"auth-core session handle v1")
            .chain_update(self.0)
            .finalize();
        SessionHandle(Base64UrlUnpadded::encode_string(&digest[..12]))
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not a bearer secret, but no reason to print it whole.
        write!(f, "SessionKey({}..)", &self.to_hex()[..8])
    }
}

/// A public identifier of a session, for "your active sessions" lists and
/// revoking one of them. Derived one-way from the store key, so it is
/// neither the cookie value nor the store key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionHandle(String);

impl SessionHandle {
    /// The handle as text (16 characters of base64url).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wraps a handle received from a client (e.g. a URL path segment).
    pub fn new(handle: impl Into<String>) -> Self {
        Self(handle.into())
    }
}

impl fmt::Display for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An authentication factor.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Factor {
    /// A password.
    Password,
    /// A TOTP code.
    Totp,
    /// A single-use recovery code.
    RecoveryCode,
    /// A passkey (WebAuthn).
    Passkey,
    /// A single-use link mailed to the user's verified address (a magic
    /// link): one factor, never a second one.
    EmailLink,
}

impl Factor {
    fn password() -> Self {
        Self::Password
    }

    /// Whether it counts as a second factor for
    /// [`require_mfa`](crate::Authenticator::require_mfa): a TOTP code, a
    /// recovery code or a passkey (not a password, not a mailed link).
    pub fn is_strong(&self) -> bool {
        matches!(self, Self::Totp | Self::RecoveryCode | Self::Passkey)
    }

    /// A stable code: `password`, `totp`, `recovery_code`, `passkey`,
    /// `email_link`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Password => "password",
            Self::Totp => "totp",
            Self::RecoveryCode => "recovery_code",
            Self::Passkey => "passkey",
            Self::EmailLink => "email_link",
        }
    }
}

/// Where a session stands.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AuthState {
    /// Nobody has logged in.
    Anonymous,
    /// The first factor succeeded; a second is required before `expires_at`.
    MfaPending {
        /// The factors the user may complete the login with.
        methods: Vec<Factor>,
        /// The factor that started the login (records written before it
        /// existed: a password).
        #[serde(default = "Factor::password")]
        first: Factor,
        /// After this, the pending state is void.
        expires_at: Timestamp,
    },
    /// Fully authenticated.
    Authenticated {
        /// The factors used.
        factors: Vec<Factor>,
        /// When the last factor succeeded (for "recent login" checks).
        at: Timestamp,
    },
}

/// What a store keeps for one session. It never contains the session ID.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The user, once a first factor succeeded.
    pub user_id: Option<String>,
    /// The authentication state.
    pub auth: AuthState,
    /// When the session was created.
    pub created_at: Timestamp,
    /// When a request last used it (written at most once per touch interval).
    pub last_seen_at: Timestamp,
    /// Idle deadline: `last_seen_at` + idle timeout.
    pub idle_expires_at: Timestamp,
    /// Absolute deadline: `created_at` + absolute lifetime. Never extended.
    pub absolute_expires_at: Timestamp,
    /// Whether the cookie persists across browser restarts ("remember me").
    pub persistent: bool,
    /// Client IP when created (as the trusted-proxy logic determined it).
    pub ip: Option<String>,
    /// Client user agent when created.
    pub user_agent: Option<String>,
    /// The user's security stamp at login; a different current stamp (a
    /// password change, "sign out everywhere") ends the session.
    pub security_stamp: Option<String>,
    /// Application data, as JSON values.
    pub data: BTreeMap<String, serde_json::Value>,
    /// Optimistic-concurrency version, bumped by every save.
    pub version: u64,
}

impl SessionRecord {
    /// The earlier of the idle and absolute deadlines: when a store may
    /// forget the record.
    pub fn expires_at(&self) -> Timestamp {
        self.idle_expires_at.min(self.absolute_expires_at)
    }

    /// The user id when fully authenticated.
    pub fn authenticated_user(&self) -> Option<&str> {
        match self.auth {
            AuthState::Authenticated { .. } => self.user_id.as_deref(),
            _ => None,
        }
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
impl SessionRecord {
    /// The JSON form stores keep (the version travels beside it).
    pub(crate) fn to_json(&self) -> Result<String, StoreError> {
        serde_json::to_string(self).map_err(StoreError::Corrupt)
    }

    /// Reads the JSON form back, with the version from the store's own
    /// column or field.
    pub(crate) fn from_json(json: &str, version: u64) -> Result<Self, StoreError> {
        let mut record: Self = serde_json::from_str(json).map_err(StoreError::Corrupt)?;
        record.version = version;
        Ok(record)
    }
}

impl fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionRecord")
            .field("user_id", &self.user_id)
            .field("auth", &self.auth)
            .field("created_at", &self.created_at)
            .field("last_seen_at", &self.last_seen_at)
            .field("idle_expires_at", &self.idle_expires_at)
            .field("absolute_expires_at", &self.absolute_expires_at)
            .field("persistent", &self.persistent)
            .field("ip", &self.ip)
            .field("user_agent", &self.user_agent)
            .field(
                "security_stamp",
                &self.security_stamp.as_ref().map(|_| "[REDACTED]"),
            )
            .field("data_keys", &self.data.keys().collect::<Vec<_>>())
            .field("version", &self.version)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_256_bits_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let id = SessionId::generate().unwrap();
            let encoded = id.encode();
            assert_eq!(encoded.len(), 43);
            assert!(
                encoded
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
            assert_eq!(SessionId::parse(&encoded), Some(id.clone()));
            assert!(seen.insert(encoded));
        }
    }

    #[test]
    fn parsing_is_strict() {
        let good = SessionId::generate().unwrap().encode();
        assert!(SessionId::parse(&good).is_some());
        let cases = [
            String::new(),
            good[..42].to_owned(),
            format!("{good}A"),
            format!("{good}="),
            good.replacen(&good[..1], "+", 1),
            good.replacen(&good[..1], "/", 1),
            good.replacen(&good[..1], "%", 1),
            "é".repeat(21) + "a",
            // Non-canonical trailing bits: decodes to the same bytes in a
            // lax decoder, refused here.
            format!(
                "{}{}",
                &good[..42],
                if &good[42..] == "B" { "C" } else { "B" }
            ),
        ];
        for case in cases {
            if case == good {
                continue;
            }
            let parsed = SessionId::parse(&case);
            assert!(
                parsed.is_none() || parsed.unwrap().encode() == case,
                "{case:?}"
            );
        }
    }

    #[test]
    fn key_is_a_one_way_hash_and_handle_is_neither() {
        let id = SessionId::generate().unwrap();
        let key = id.key();
        let encoded = id.encode();
        assert_ne!(key.as_bytes(), &id.0);
        assert_eq!(SessionKey::from_hex(&key.to_hex()), Some(key));
        let handle = key.handle();
        assert_eq!(handle.as_str().len(), 16);
        assert!(!encoded.contains(handle.as_str()));
        assert!(!key.to_hex().contains(handle.as_str()));
        assert_eq!(format!("{id:?}"), "SessionId([REDACTED])");
        assert!(!format!("{key:?}").contains(&key.to_hex()));
    }

    /// The hex form is the stored one (Redis keys, SQL columns): fixed.
    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::try_from(i).unwrap().wrapping_mul(0x1f) ^ 0xa0;
        }
        let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let key = SessionKey::from_bytes(bytes);
        assert_eq!(key.to_hex(), expected);
        assert_eq!(SessionKey::from_bytes([0xff; 32]).to_hex(), "f".repeat(64));
        assert_eq!(
            crate::single_use::TokenKey::from_bytes(bytes).to_hex(),
            expected,
            "single-use token keys too"
        );
        #[cfg(feature = "jwt")]
        assert_eq!(
            crate::token::refresh::RefreshKey::new("AAAAAAAAAAAAAAAAAAAAAA", bytes)
                .unwrap()
                .to_hex(),
            expected,
            "refresh keys are encoded the same way"
        );
    }
}
