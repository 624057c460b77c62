//! Verifiers for hashes made by older systems, so their users keep their
//! passwords: every match is flagged for upgrade to Argon2id.

use super::PasswordError;

/// Bcrypt only ever reads the first 72 bytes of a password.
#[cfg(feature = "bcrypt")]
const BCRYPT_MAX_BYTES: usize = 72;

/// Stored PBKDF2 hashes asking for more iterations than this (five times
/// OWASP's 600,000) are refused as malformed instead of being allowed to
/// stall a hashing slot.
#[cfg(feature = "pbkdf2")]
const MAX_PBKDF2_ITERATIONS: u32 = 3_000_000;

/// Stored bcrypt hashes with a higher cost than this are refused as
/// malformed (each step doubles the work; OWASP asks for 10).
#[cfg(feature = "bcrypt")]
const MAX_BCRYPT_COST: u32 = 16;

/// A legacy hash format this build can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LegacyKind {
    /// `$2a$`, `$2b$`, `$2y$` (OpenBSD, Rails' bcrypt-ruby, PHP, Python).
    #[cfg(feature = "bcrypt")]
    Bcrypt,
    /// `$pbkdf2-sha256$i=...,l=...$salt$hash` (PHC, RustCrypto) and
    /// `$pbkdf2-sha512$...`.
    #[cfg(feature = "pbkdf2")]
    Pbkdf2Phc,
    /// Django's `pbkdf2_sha256$iterations$salt$base64(hash)`.
    #[cfg(feature = "pbkdf2")]
    Pbkdf2Django,
}

impl LegacyKind {
    pub(super) fn detect(stored: &str) -> Option<Self> {
        #[cfg(feature = "bcrypt")]
        if ["$2a$", "$2b$", "$2y$"]
            .iter()
            .any(|p| stored.starts_with(p))
        {
            return Some(Self::Bcrypt);
        }
        #[cfg(feature = "pbkdf2")]
        if stored.starts_with("$pbkdf2-sha256$") || stored.starts_with("$pbkdf2-sha512$") {
            return Some(Self::Pbkdf2Phc);
        }
        #[cfg(feature = "pbkdf2")]
        if stored.starts_with("pbkdf2_sha256$") {
            return Some(Self::Pbkdf2Django);
        }
        let _ = stored;
        None
    }

    /// Whether `candidate` matches `stored`. `count` is called once per key
    /// derivation actually run.
    pub(super) fn verify(
        self,
        candidate: &[u8],
        stored: &str,
        count: impl FnOnce(),
    ) -> Result<bool, PasswordError> {
        match self {
            #[cfg(feature = "bcrypt")]
            Self::Bcrypt => {
                let cost = stored
                    .get(4..6)
                    .and_then(|c| c.parse::<u32>().ok())
                    .ok_or(PasswordError::MalformedHash)?;
                if cost > MAX_BCRYPT_COST {
                    return Err(PasswordError::MalformedHash);
                }
                count();
                // Never truncate: bcrypt ignores everything past byte 72, so a
                // longer password cannot be proven to match. The hash still
                // runs (on the first 72 bytes, result discarded) so the answer
                // takes as long as for any other wrong password.
                let too_long = candidate.len() > BCRYPT_MAX_BYTES;
                let input = &candidate[..candidate.len().min(BCRYPT_MAX_BYTES)];
                let matched =
                    bcrypt::verify(input, stored).map_err(|_| PasswordError::MalformedHash)?;
                Ok(matched && !too_long)
            }
            #[cfg(feature = "pbkdf2")]
            Self::Pbkdf2Phc => {
                use pbkdf2::password_hash::{Error, PasswordVerifier, phc::PasswordHash};
                let phc = PasswordHash::new(stored).map_err(|_| PasswordError::MalformedHash)?;
                let params =
                    pbkdf2::Params::try_from(&phc).map_err(|_| PasswordError::MalformedHash)?;
                if params.rounds() > MAX_PBKDF2_ITERATIONS {
                    return Err(PasswordError::MalformedHash);
                }
                count();
                match pbkdf2::Pbkdf2::default().verify_password(candidate, &phc) {
                    Ok(()) => Ok(true),
                    Err(Error::PasswordInvalid) => Ok(false),
                    Err(_) => Err(PasswordError::MalformedHash),
                }
            }
            #[cfg(feature = "pbkdf2")]
            Self::Pbkdf2Django => verify_django_pbkdf2(candidate, stored, count),
        }
    }
}

#[cfg(feature = "pbkdf2")]
fn verify_django_pbkdf2(
    candidate: &[u8],
    stored: &str,
    count: impl FnOnce(),
) -> Result<bool, PasswordError> {
    use base64ct::{Base64, Encoding};
    use subtle::ConstantTimeEq;
    use zeroize::Zeroizing;

    let mut parts = stored.split('$');
    let (Some("pbkdf2_sha256"), Some(iterations), Some(salt), Some(hash), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(PasswordError::MalformedHash);
    };
    let iterations: u32 = iterations
        .parse()
        .map_err(|_| PasswordError::MalformedHash)?;
    if iterations == 0 || iterations > MAX_PBKDF2_ITERATIONS || salt.is_empty() {
        return Err(PasswordError::MalformedHash);
    }
    let expected = Base64::decode_vec(hash).map_err(|_| PasswordError::MalformedHash)?;
    if expected.is_empty() || expected.len() > 64 {
        return Err(PasswordError::MalformedHash);
    }
    let mut derived = Zeroizing::new(vec![0u8; expected.len()]);
    count();
    pbkdf2::pbkdf2_hmac::<pbkdf2::sha2::Sha256>(
        candidate,
        salt.as_bytes(),
        iterations,
        &mut derived,
    );
    Ok(derived.as_slice().ct_eq(&expected).into())
}
