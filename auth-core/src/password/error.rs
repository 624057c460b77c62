use super::PolicyViolation;

/// What can go wrong while hashing or verifying a password.
///
/// No variant carries a password, a hash or a pepper; `Display` is safe to
/// log and to show.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The new password breaks the policy; the violation says which rule.
    #[error("password rejected by policy: {0}")]
    Policy(#[from] PolicyViolation),

    /// The input is over [`MAX_PASSWORD_BYTES`](super::MAX_PASSWORD_BYTES)
    /// and was refused before any work.
    #[error("password input too long")]
    TooLong,

    /// Every hashing slot stayed busy for longer than the configured queue
    /// timeout. Callers should answer 503 (or 429) with `Retry-After`.
    #[error("password hashing is busy, try again later")]
    Busy,

    /// The stored hash is not in a recognised format, or its parameters are
    /// invalid.
    #[error("stored password hash is malformed")]
    MalformedHash,

    /// The stored hash uses an algorithm this build cannot verify (for
    /// example bcrypt without the `bcrypt` feature).
    #[error("stored password hash uses an unsupported algorithm")]
    UnsupportedAlgorithm,

    /// The stored hash was made with a pepper key id that is not configured.
    #[error("stored password hash needs a pepper key that is not configured")]
    UnknownPepperKey,

    /// The configuration is invalid; the message names the setting.
    #[error("invalid password configuration: {0}")]
    Config(&'static str),

    /// The hashing primitive failed (for example the OS random number
    /// generator was unavailable).
    #[error("password hashing failed")]
    Crypto(#[source] CryptoError),

    /// The worker thread running the hash failed (the derivation
    /// panicked, or the workers are gone).
    #[error("password hashing task failed")]
    Task,
}

/// The source of a [`PasswordError::Crypto`]: the underlying crate's error,
/// kept so the cause is not lost.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// From the `argon2` crate.
    #[error(transparent)]
    Argon2(#[from] argon2::Error),
    /// From the `password-hash` / `phc` crates.
    #[error(transparent)]
    PasswordHash(#[from] argon2::password_hash::Error),
    /// From the `phc` string encoder.
    #[error(transparent)]
    Phc(#[from] argon2::password_hash::phc::Error),
    /// From the operating system's random number generator.
    #[error("random number generator failed: {0}")]
    Rng(getrandom::Error),
}
