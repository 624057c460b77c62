//! The error model of every flow: one [`AuthError`], whose status,
//! `Retry-After` and reason every adapter uses as they are.

use std::time::Duration;

use crate::mfa::MfaError;
use crate::password::{PasswordError, PolicyViolation};
use crate::rate_limit::ThrottleError;
use crate::session::SessionError;
use crate::user::UserStoreError;

/// What a flow can answer instead of success. [`status`](Self::status) and
/// [`retry_after_secs`](Self::retry_after_secs) are what an adapter puts on
/// the response; `Display` is safe to show.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unknown user, wrong password or disabled user: one answer for all.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// Too many attempts.
    #[error("too many attempts, try again later")]
    Throttled {
        /// When to try again.
        retry_after: Duration,
    },
    /// Hashing capacity or the shared throttle is unavailable; try again.
    #[error("service busy, try again later")]
    Busy,
    /// The new password breaks the policy.
    #[error("{0}")]
    Policy(PolicyViolation),
    /// The login name is malformed.
    #[error("invalid login name")]
    InvalidLogin,
    /// The login name is taken.
    #[error("login name already taken")]
    LoginTaken,
    /// No authenticated session.
    #[error("authentication required")]
    NotAuthenticated,
    /// The operation needs a recent login.
    #[error("please confirm your password")]
    ReauthenticationRequired,
    /// The route needs a completed second factor.
    #[error("a second factor is required")]
    SecondFactorRequired,
    /// A change of second factors came without a code although the account
    /// has a second factor: its [`FactorProof`](super::FactorProof) needs
    /// the password *and* a current TOTP or recovery code (403, like the
    /// other "authenticate more" answers). Nothing was checked or counted.
    #[error("a code from your authenticator app or a recovery code is required")]
    CodeRequired,
    /// A form's CSRF token is missing or does not belong to this session.
    #[error("invalid or missing form token, reload the page")]
    CsrfToken,
    /// A TOTP or recovery code is wrong, expired or already used (401).
    #[error("invalid or expired code")]
    InvalidCode,
    /// TOTP is already on for this user (409); disable it first.
    #[error("two-factor authentication is already enabled")]
    TotpAlreadyEnabled,
    /// The user has no (pending, for a confirmation) TOTP enrolment (409).
    #[error("two-factor authentication is not set up")]
    TotpNotEnabled,
    /// The server has no MFA encryption key configured (501): TOTP cannot
    /// be used.
    #[error("two-factor authentication is not available on this server")]
    MfaUnavailable,
    /// A link's token is malformed, unknown, expired, used, or no longer
    /// matches what it was issued against (400; one answer for all).
    #[error("invalid or expired link")]
    InvalidToken,
    /// The app requires a verified email address to sign in, and the
    /// account has none yet (403; the credentials were right).
    #[error("please confirm your email address first")]
    EmailNotVerified,
    /// An email address the toolkit does not take (400).
    #[error("invalid email address")]
    InvalidEmail,
    /// No mailer is configured (501): account-recovery mail cannot be sent.
    #[error("email is not available on this server")]
    MailUnavailable,
    /// The app's store does not offer this operation (501), e.g.
    /// registration with a [`UserStore`](crate::UserStore) without
    /// `create`.
    #[error("not supported by this server")]
    Unsupported,
    /// A refresh token is malformed, unknown, spent, revoked or expired,
    /// or its user is gone or disabled (401; one answer for all).
    #[error("invalid or expired token")]
    InvalidGrant,
    /// No token service is configured (501): API tokens cannot be issued.
    #[error("API tokens are not available on this server")]
    TokensUnavailable,
    /// The operation spans several requests and needs a browser session;
    /// a bearer token cannot carry its state (400).
    #[error("this needs a browser session")]
    SessionRequired,
    /// No passkey service is configured (501).
    #[error("passkeys are not available on this server")]
    PasskeysUnavailable,
    /// The passkey is already registered (409).
    #[error("this passkey is already registered")]
    PasskeyTaken,
    /// No passkey ceremony is in progress on this session, or it expired
    /// (5 minutes) or was answered already (400): start again.
    #[error("no passkey request in progress, start again")]
    PasskeyCeremony,
    /// The passkey answer was refused (401): unknown or removed credential,
    /// another user's, wrong origin or challenge, bad signature, or a
    /// signature counter that went backwards.
    #[error("passkey not accepted")]
    PasskeyRefused,
    /// The user has no passkey for a passkey second step (409).
    #[error("no passkey is registered for this account")]
    NoPasskey,
    /// A passkey name that is too long (over 64 characters) or has control
    /// characters (400).
    #[error("invalid passkey name")]
    InvalidPasskeyName,
    /// Storage or another internal failure (details in the source, never
    /// shown).
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl AuthError {
    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            Self::InvalidCredentials
            | Self::NotAuthenticated
            | Self::InvalidCode
            | Self::InvalidGrant
            | Self::PasskeyRefused => 401,
            Self::TotpAlreadyEnabled
            | Self::TotpNotEnabled
            | Self::LoginTaken
            | Self::PasskeyTaken
            | Self::NoPasskey => 409,
            Self::MfaUnavailable
            | Self::Unsupported
            | Self::MailUnavailable
            | Self::TokensUnavailable
            | Self::PasskeysUnavailable => 501,
            Self::ReauthenticationRequired
            | Self::CsrfToken
            | Self::SecondFactorRequired
            | Self::CodeRequired
            | Self::EmailNotVerified => 403,
            Self::Throttled { .. } => 429,
            Self::Busy => 503,
            Self::Policy(_)
            | Self::InvalidLogin
            | Self::InvalidToken
            | Self::InvalidEmail
            | Self::SessionRequired
            | Self::PasskeyCeremony
            | Self::InvalidPasskeyName => 400,
            Self::Internal(_) => 500,
        }
    }

    /// `Retry-After` in whole seconds, when the client should retry.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::Throttled { retry_after } => {
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                Some(secs.max(1))
            }
            Self::Busy => Some(1),
            _ => None,
        }
    }

    /// A stable machine-readable reason where one helps the client (the
    /// policy rule that failed).
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            Self::Policy(violation) => Some(violation.code()),
            _ => None,
        }
    }

    /// An internal error with its cause (logged by
    /// [`Reply::error`](crate::web::Reply::error), never shown).
    pub fn internal(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal(error.into())
    }
}

impl From<crate::single_use::TokenStoreError> for AuthError {
    fn from(error: crate::single_use::TokenStoreError) -> Self {
        Self::internal(error)
    }
}

impl From<SessionError> for AuthError {
    fn from(error: SessionError) -> Self {
        match error {
            SessionError::Gone => Self::NotAuthenticated,
            // Listing or revoking by user on a store that cannot.
            SessionError::Store(crate::session::StoreError::Unsupported) => Self::Unsupported,
            other => Self::internal(other),
        }
    }
}

impl From<UserStoreError> for AuthError {
    fn from(error: UserStoreError) -> Self {
        match error {
            UserStoreError::LoginTaken => Self::LoginTaken,
            UserStoreError::Unsupported => Self::Unsupported,
            other => Self::internal(other),
        }
    }
}

impl From<ThrottleError> for AuthError {
    fn from(error: ThrottleError) -> Self {
        match error {
            ThrottleError::Unavailable(_) => Self::Busy,
            other => Self::internal(other),
        }
    }
}

impl From<MfaError> for AuthError {
    fn from(error: MfaError) -> Self {
        match error {
            MfaError::NoKey => Self::MfaUnavailable,
            other => Self::internal(other),
        }
    }
}

impl From<PasswordError> for AuthError {
    fn from(error: PasswordError) -> Self {
        match error {
            PasswordError::Busy => Self::Busy,
            PasswordError::Policy(violation) => Self::Policy(violation),
            // Oversized input: the same answer as a wrong password.
            PasswordError::TooLong => Self::InvalidCredentials,
            other => Self::internal(other),
        }
    }
}
