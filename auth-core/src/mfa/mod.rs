//! Second factors: TOTP (RFC 6238) authenticator apps and single-use
//! recovery codes.
//!
//! * [`TotpParams`] is the verifier: HOTP/TOTP with SHA-1 (the default, what
//!   authenticator apps support), SHA-256 or SHA-512, 6 to 8 digits, 30 s
//!   steps, accepting the steps T-1, T and T+1 only and comparing codes in
//!   constant time. It returns the matched step; the flow records it per
//!   user with an atomic "only if greater" write, so a code (or any code of
//!   an earlier or equal step) works once.
//! * [`TotpSecret`]: 160 bits from the OS CSPRNG, zeroed on drop, never
//!   printed. [`otpauth_uri`] and [`qr_svg`] show it to the user once, at
//!   enrolment.
//! * [`MfaKeys`]: the application key ring that encrypts secrets at rest
//!   (XChaCha20-Poly1305, random nonce, the user id as associated data, the
//!   key id in the stored form `v1.<kid>.<base64url>`), so a copy of the
//!   database alone reveals no secret. One current key encrypts; older keys
//!   still decrypt, so keys rotate.
//! * [`RecoveryCodes`]: 10 codes of 120 bits each (`XXXX-XXXX-XXXX-XXXX-XXXX-XXXX`,
//!   base32), shown once, stored only as salted SHA-256 hashes, each
//!   consumed atomically.
//!
//! The flows live on [`Authenticator`](crate::flow::Authenticator):
//! `begin_totp_enrollment`, `confirm_totp`, `login_totp`, `login_recovery`,
//! `disable_totp`, `regenerate_recovery_codes` and
//! `reauthenticate_with_code`.
//!
//! ```
//! use auth_core::mfa::{MfaKeys, TotpParams, TotpSecret};
//!
//! # fn main() -> Result<(), auth_core::mfa::MfaError> {
//! // In production the key comes from configuration (32 bytes, base64):
//! // MfaKeys::from_base64("2026-01", &std::env::var("MFA_KEY")?)
//! let keys = MfaKeys::generate("k1")?;
//! let secret = TotpSecret::generate()?;
//! let sealed = keys.seal("user-42", &secret)?;
//! assert!(sealed.starts_with("v1.k1."));
//! let opened = keys.open("user-42", &sealed)?;
//! assert!(keys.open("user-43", &sealed).is_err());
//!
//! let totp = TotpParams::default();
//! let code = totp.code_at(&opened, 1_700_000_000)?;
//! assert_eq!(totp.verify(&secret, &code, 1_700_000_000), Some(1_700_000_000 / 30));
//! # Ok(())
//! # }
//! ```

mod base32;
mod keys;
mod recovery;
mod totp;

pub use keys::MfaKeys;
pub use recovery::{
    RECOVERY_CODE_COUNT, RecoveryCodes, hash_recovery_code, normalize_recovery_code,
};
pub use totp::{Enrollment, TotpAlgorithm, TotpParams, TotpSecret, otpauth_uri, qr_svg, totp_step};

/// What the MFA building blocks can fail with. No variant carries a secret,
/// a code or a key.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum MfaError {
    /// No [`MfaKeys`] configured: TOTP cannot be used (secrets are never
    /// stored in plain text).
    #[error("no MFA encryption key is configured")]
    NoKey,
    /// A key or key id is malformed.
    #[error("invalid MFA key: {0}")]
    InvalidKey(&'static str),
    /// The stored secret names a key id the key ring does not hold.
    #[error("the stored TOTP secret was encrypted with an unknown key id")]
    UnknownKeyId,
    /// The stored secret does not decrypt: wrong key, another user's
    /// record, or corruption.
    #[error("the stored TOTP secret cannot be decrypted")]
    Decrypt,
    /// The stored secret is not in the `v1.<kid>.<base64url>` form.
    #[error("the stored TOTP secret is malformed")]
    Malformed,
    /// Invalid TOTP parameters or secret.
    #[error("invalid TOTP parameters: {0}")]
    InvalidParams(&'static str),
    /// The OS random number generator failed.
    #[error("random number generator failed")]
    Rng,
    /// The QR code could not be rendered.
    #[error("the QR code could not be rendered")]
    Qr,
}
