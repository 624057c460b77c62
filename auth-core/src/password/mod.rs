//! Password hashing, verification, upgrades and policy.
//!
//! * [`PasswordHasher`]: the synchronous engine. Argon2id in PHC strings
//!   (defaults m=19456 KiB, t=2, p=1, the OWASP minimum), optional pepper
//!   (the Argon2 secret input) with a key id for rotation, legacy bcrypt and
//!   PBKDF2-SHA256 verifiers behind the `bcrypt` and `pbkdf2` features, and
//!   upgrade detection ([`Verification::Match`] carries an [`UpgradeReason`]).
//! * [`PasswordPolicy`]: what a new password must satisfy, with the reason
//!   returned on rejection ([`PolicyViolation`]). No composition rules.
//! * [`PasswordService`]: the async front an app uses. It runs every hash on
//!   worker threads of its own (at a lower CPU priority on Linux) with
//!   bounded concurrency and a bounded wait for a slot, past which it
//!   answers [`PasswordError::Busy`] instead of queueing without bound.
//!
//! Every password is NFKC-normalised before it is measured, checked or
//! hashed, so precomposed and decomposed forms of the same text are one
//! password. Inputs over [`MAX_PASSWORD_BYTES`] are refused before any
//! normalisation or hashing.
//!
//! Passwords travel in [`Password`] and stored hashes in [`HashedPassword`];
//! neither prints its content through `Debug`, and no error carries either.

mod error;
mod hasher;
#[cfg(any(feature = "bcrypt", feature = "pbkdf2"))]
mod legacy;
mod policy;
mod service;

pub use error::{CryptoError, PasswordError};
pub use hasher::{Argon2Params, PasswordHasher, PasswordHasherBuilder, Pepper};
pub use policy::{PasswordPolicy, PasswordPolicyBuilder, PolicyContext, PolicyViolation};
pub use service::{HashSlot, PasswordService, PasswordServiceBuilder};

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroizing;

/// Inputs longer than this many bytes (4 KiB) are refused before any
/// normalisation, policy check or hashing, so an attacker cannot make the
/// server spend work on an absurd password. The check looks at the length
/// only and so takes the same time whatever the content.
pub const MAX_PASSWORD_BYTES: usize = 4096;

/// A password as typed by a user.
///
/// The text is held in a [`secrecy::SecretString`]: it is zeroed on drop and
/// its `Debug` output is redacted.
///
/// ```
/// use auth_core::password::Password;
/// let password = Password::from("hunter2 hunter2");
/// assert_eq!(format!("{password:?}"), "Password([REDACTED])");
/// ```
#[derive(Clone)]
pub struct Password(SecretString);

impl Password {
    /// Wraps the given text.
    pub fn new(password: impl Into<String>) -> Self {
        Self(SecretString::from(password.into()))
    }

    /// The raw text, exactly as sent. Use with care.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// The NFKC-normalised bytes that are measured, checked and hashed.
    ///
    /// Fails with [`PasswordError::TooLong`] when the raw input is over
    /// [`MAX_PASSWORD_BYTES`], before any normalisation happens.
    pub(crate) fn normalized(&self) -> Result<Zeroizing<String>, PasswordError> {
        let raw = self.expose();
        if raw.len() > MAX_PASSWORD_BYTES {
            return Err(PasswordError::TooLong);
        }
        // Sized first, so the string never grows: a reallocation would
        // leave a copy of the password's start in freed memory, unzeroed.
        let len = raw.nfkc().map(char::len_utf8).sum();
        let mut normalized = Zeroizing::new(String::with_capacity(len));
        normalized.extend(raw.nfkc());
        Ok(normalized)
    }
}

impl From<String> for Password {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl From<&str> for Password {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([REDACTED])")
    }
}

/// A request body can hold a `Password` field directly (`#[derive(Deserialize)]
/// struct Form { email: String, password: Password }`): the text goes
/// straight into the zeroizing wrapper, and the form's `Debug` stays
/// redacted. There is deliberately no `Serialize`.
impl<'de> serde::Deserialize<'de> for Password {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::new)
    }
}

/// A stored password hash: a PHC string such as
/// `$argon2id$v=19$m=19456,t=2,p=1$...`, or a legacy bcrypt / PBKDF2 hash
/// loaded from an older system.
///
/// Its `Debug` output is redacted: a hash is offline-crackable material and
/// never belongs in a log.
#[derive(Clone)]
pub struct HashedPassword(String);

/// In constant time (the length aside): a hash is a secret.
impl PartialEq for HashedPassword {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for HashedPassword {}

impl HashedPassword {
    /// Wraps a hash loaded from storage. Its format is checked when it is
    /// verified, not here.
    pub fn new(hash: impl Into<String>) -> Self {
        Self(hash.into())
    }

    /// The hash as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hash as stored, by value.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl From<String> for HashedPassword {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Debug for HashedPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashedPassword([REDACTED])")
    }
}

/// The outcome of verifying a password against a stored hash.
#[must_use = "a verification result must be checked"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The password is wrong.
    Mismatch,
    /// The password is right. When `upgrade` is set, the stored hash is
    /// weaker than the current configuration: hash the password again (it
    /// was just proven correct) and store the new hash.
    Match {
        /// Why the stored hash should be replaced, if it should.
        upgrade: Option<UpgradeReason>,
    },
}

impl Verification {
    /// Whether the password was right.
    pub fn is_match(&self) -> bool {
        matches!(self, Self::Match { .. })
    }

    /// Whether the password was right *and* the stored hash should be
    /// replaced by a new one.
    pub fn needs_rehash(&self) -> bool {
        matches!(self, Self::Match { upgrade: Some(_) })
    }
}

/// Why a stored hash should be replaced after a successful login.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeReason {
    /// Another algorithm: Argon2i, Argon2d, bcrypt or PBKDF2.
    Algorithm,
    /// An older Argon2 version (0x10).
    Version,
    /// Weaker Argon2 parameters than configured: lower memory or time cost,
    /// a shorter output or salt.
    Params,
    /// Hashed without the configured pepper, or with an older pepper key.
    Pepper,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_equal_only_when_identical() {
        let hash = HashedPassword::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA");
        assert_eq!(hash, hash.clone());
        for other in [
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaB",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFza",
            "",
        ] {
            assert_ne!(hash, HashedPassword::new(other), "{other}");
        }
    }

    #[test]
    fn a_password_deserializes_from_a_string_and_stays_redacted() {
        let password: Password = serde_json::from_str(r#""hunter2 but long""#).unwrap();
        assert_eq!(password.expose(), "hunter2 but long");
        assert_eq!(format!("{password:?}"), "Password([REDACTED])");
        assert!(serde_json::from_str::<Password>("42").is_err());
    }

    #[test]
    fn debug_output_is_redacted() {
        let password = Password::from("s3cr3t-value");
        let hash = HashedPassword::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA");
        let printed = format!("{password:?} {hash:?}");
        assert!(!printed.contains("s3cr3t"));
        assert!(!printed.contains("argon2id"));
        assert_eq!(printed, "Password([REDACTED]) HashedPassword([REDACTED])");
    }

    #[test]
    fn nfkc_forms_normalise_to_the_same_bytes() {
        let precomposed = Password::from("Caf\u{e9} \u{212b}ngstr\u{f6}m \u{fb01}");
        let decomposed = Password::from("Cafe\u{301} A\u{30a}ngstro\u{308}m fi");
        assert_eq!(
            precomposed.normalized().unwrap().as_str(),
            decomposed.normalized().unwrap().as_str()
        );
    }

    #[test]
    fn oversized_input_is_refused_before_normalisation() {
        let at_limit = Password::from("a".repeat(MAX_PASSWORD_BYTES));
        assert!(at_limit.normalized().is_ok());
        let over = Password::from("a".repeat(MAX_PASSWORD_BYTES + 1));
        assert!(matches!(over.normalized(), Err(PasswordError::TooLong)));
    }
}
